//! Wakes the capture stage when the application writes: a file-system watch (notify) on the
//! database's directory reports writes to the database, its `-wal` or its `-journal` file, with a
//! poll interval as the fallback, so sync's lag stays low without a busy loop when idle. The
//! `-shm` file is ignored: every reader, capture included, touches it, and watching it would
//! wake capture on its own reads. A wake-up is only a hint: capture reads the change table,
//! which is the truth (promise 1 does not depend on a notification arriving).

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use notify::event::ModifyKind;
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::error::{Error, Result};

/// Wakes the capture stage when the database or its -wal file changes (notify), with a poll
/// interval as fallback; no busy loop when idle.
pub struct Watcher {
    signals: Receiver<()>,
    sender: Sender<()>,
    poll: Duration,
    /// `None` when the platform watch could not start: the watcher then only polls.
    _watch: Option<RecommendedWatcher>,
}

/// Wakes a [`Watcher::wait`] from another thread (to stop promptly, or after a manual trigger).
#[derive(Clone)]
pub struct Waker {
    sender: Sender<()>,
}

impl Waker {
    pub fn wake(&self) {
        signal(&self.sender);
    }
}

impl Watcher {
    /// Starts watching `db_path`'s directory (the -wal file may not exist yet). When the
    /// platform watch cannot start (no inotify instances left, an unsupported file system), it
    /// falls back to polling every `poll` and says so in a warning; see
    /// [`Watcher::is_notifying`].
    pub fn start(db_path: &Path, poll: Duration) -> Result<Watcher> {
        let file_name = db_path.file_name().ok_or_else(|| Error::Io {
            op: "watch the source database",
            path: db_path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        })?;
        let names: HashSet<OsString> = ["", "-wal", "-journal"]
            .iter()
            .map(|suffix| {
                let mut name = file_name.to_os_string();
                name.push(suffix);
                name
            })
            .collect();
        let dir = match db_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        };
        let (sender, signals) = crossbeam_channel::bounded(1);
        let events = sender.clone();
        let handler = move |event: notify::Result<Event>| {
            // A watch error may hide a write: wake up and let capture look.
            if event.map_or(true, |e| is_write_to(&e, &names)) {
                signal(&events);
            }
        };
        let watch = notify::recommended_watcher(handler)
            .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
        let watch = match watch {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, poll_ms = poll.as_millis() as u64,
                    "cannot watch the source database's directory; polling instead");
                None
            }
        };
        Ok(Watcher {
            signals,
            sender,
            poll,
            _watch: watch,
        })
    }

    /// Blocks until a change is signalled or `timeout` (at most the poll interval) elapses;
    /// returns true if signalled. Drains the signals that arrived meanwhile, so a burst of
    /// writes wakes the caller once.
    pub fn wait(&self, timeout: Duration) -> bool {
        let notified = self.signals.recv_timeout(timeout.min(self.poll)).is_ok();
        while self.signals.try_recv().is_ok() {}
        notified
    }

    /// A handle that wakes `wait` from another thread.
    pub fn waker(&self) -> Waker {
        Waker {
            sender: self.sender.clone(),
        }
    }

    /// False when the watcher fell back to polling only.
    pub fn is_notifying(&self) -> bool {
        self._watch.is_some()
    }
}

/// A pending signal is enough: dropping more while one waits is the coalescing.
fn signal(sender: &Sender<()>) {
    match sender.try_send(()) {
        Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
    }
}

/// True for an event that may carry a write to one of `names`. Opens, closes and metadata
/// changes are not writes: every connection opening the -wal file closes it "for write", and
/// SQLite running as root chowns it on open; a real write also shows as a data modification.
fn is_write_to(event: &Event, names: &HashSet<OsString>) -> bool {
    let write = match event.kind {
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    };
    write
        && event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rusqlite::Connection;

    use super::*;

    fn app_db(dir: &Path) -> (std::path::PathBuf, Connection) {
        let path = dir.join("app.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v);",
        )
        .unwrap();
        (path, conn)
    }

    #[test]
    fn write_through_another_connection_wakes_wait_before_the_poll_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (path, app) = app_db(dir.path());
        let watcher = Watcher::start(&path, Duration::from_secs(5)).unwrap();
        assert!(watcher.is_notifying());
        // Settle: the set-up writes may still be queued as events.
        while watcher.wait(Duration::from_millis(200)) {}
        let writer = std::thread::spawn(move || {
            app.execute("INSERT INTO t (v) VALUES ('x')", []).unwrap();
        });
        let started = Instant::now();
        assert!(
            watcher.wait(Duration::from_secs(5)),
            "the write did not wake wait"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "woke after {:?}",
            started.elapsed()
        );
        writer.join().unwrap();
    }

    #[test]
    fn idle_wait_returns_false_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _app) = app_db(dir.path());
        let watcher = Watcher::start(&path, Duration::from_secs(5)).unwrap();
        while watcher.wait(Duration::from_millis(200)) {}
        let started = Instant::now();
        assert!(!watcher.wait(Duration::from_millis(300)));
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn reads_and_other_files_do_not_wake_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (path, app) = app_db(dir.path());
        let watcher = Watcher::start(&path, Duration::from_secs(5)).unwrap();
        while watcher.wait(Duration::from_millis(200)) {}
        let reader = Connection::open(&path).unwrap();
        let _: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        std::fs::write(dir.path().join("other.db-wal"), b"not ours").unwrap();
        assert!(!watcher.wait(Duration::from_millis(300)));
        drop(app);
    }

    #[test]
    fn poll_interval_bounds_the_wait_and_the_waker_wakes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _app) = app_db(dir.path());
        let watcher = Watcher::start(&path, Duration::from_millis(100)).unwrap();
        while watcher.wait(Duration::from_millis(200)) {}
        let started = Instant::now();
        assert!(!watcher.wait(Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(2));
        let waker = watcher.waker();
        waker.wake();
        waker.wake();
        assert!(watcher.wait(Duration::from_secs(10)));
        assert!(
            !watcher.wait(Duration::from_millis(50)),
            "a burst wakes once"
        );
    }
}
