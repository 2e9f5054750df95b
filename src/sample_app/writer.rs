//! The live writer: a background thread that writes to the sample app database like the real
//! app does while sqlite2pg migrates it. It owns the thread, the pacing (a steady rate of small
//! `BEGIN IMMEDIATE` transactions), the 5 s busy timeout and the retry of a transaction that
//! found the lock taken beyond it; what each transaction does lives in `workload` (about 50%
//! inserts, 35% updates, 15% deletes, cascades included, foreign keys on). It is the workload
//! that promise 1 (no gap, no duplicate) and the cutover freeze are tested against.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::workload::{self, Delta, Op, ALL_STATEMENTS};
use crate::error::{Error, Result};

/// How the live writer behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriterOptions {
    /// Transactions per second, paced by the wall clock.
    pub rate_per_sec: f64,
    /// The same seed gives the same sequence of operations (not the same rows: timestamps come
    /// from the clock and ids from the database).
    pub seed: u64,
}

/// What the writer has done so far. Row counts are the rows each statement named; rows removed
/// by `ON DELETE CASCADE` are not counted. An upsert counts as an insert or an update depending
/// on whether the key existed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WriterStats {
    /// Committed transactions.
    pub transactions: u64,
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    /// Transactions that found the database locked for longer than the busy timeout and were
    /// retried.
    pub busy_retries: u64,
}

/// What an application typically configures: long enough to ride out another writer's commit
/// or the migrator's brief freeze.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before retrying a transaction SQLite refused with BUSY without waiting (e.g. a stale
/// WAL snapshot), so the retry loop does not spin.
const RETRY_BACKOFF: Duration = Duration::from_millis(2);
/// How far the writer may fall behind its schedule before it gives up catching up: bounds the
/// burst after a stall (a lock held by the migrator) to about 100 ms worth of transactions.
const MAX_BACKLOG: Duration = Duration::from_millis(100);
/// The writer's statements; the cache must hold them all.
const STATEMENT_CACHE: usize = 32;

const WRITER_PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

#[derive(Default)]
struct Counters {
    transactions: AtomicU64,
    inserts: AtomicU64,
    updates: AtomicU64,
    deletes: AtomicU64,
    busy_retries: AtomicU64,
}

impl Counters {
    fn record(&self, delta: Delta) {
        self.inserts.fetch_add(delta.inserts, Ordering::Relaxed);
        self.updates.fetch_add(delta.updates, Ordering::Relaxed);
        self.deletes.fetch_add(delta.deletes, Ordering::Relaxed);
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> WriterStats {
        WriterStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            inserts: self.inserts.load(Ordering::Relaxed),
            updates: self.updates.load(Ordering::Relaxed),
            deletes: self.deletes.load(Ordering::Relaxed),
            busy_retries: self.busy_retries.load(Ordering::Relaxed),
        }
    }
}

/// A live writer thread; see the module doc. Dropping it stops the thread too (and discards
/// its outcome); call [`LiveWriter::stop`] to learn how it ended.
pub struct LiveWriter {
    counters: Arc<Counters>,
    stopping: Arc<AtomicBool>,
    stop_signal: Option<Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl LiveWriter {
    /// Opens a connection to the existing sample app database at `path` (WAL, foreign keys on,
    /// 5 s busy timeout), prepares its statements and starts the writer thread. `Ok` means the
    /// connection is open and the schema is the sample app's.
    pub fn start(path: &Path, opts: WriterOptions) -> Result<LiveWriter> {
        let period = pacing_period(opts.rate_per_sec)?;
        let conn = open_connection(path)?;
        let counters = Arc::new(Counters::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let (stop_signal, stop_rx) = crossbeam_channel::bounded(1);
        let session = Session {
            conn,
            rng: SmallRng::seed_from_u64(opts.seed),
            path: path.to_path_buf(),
            counters: Arc::clone(&counters),
            stopping: Arc::clone(&stopping),
        };
        let thread = std::thread::Builder::new()
            .name("sample-app-writer".into())
            .spawn(move || session.run(period, &stop_rx))
            .map_err(|source| Error::Io {
                op: "start the live writer thread for",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(LiveWriter {
            counters,
            stopping,
            stop_signal: Some(stop_signal),
            thread: Some(thread),
        })
    }

    /// Counters so far (the thread keeps updating them).
    pub fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// Stops the thread (within a few milliseconds: a transaction in flight finishes, a busy
    /// wait is abandoned), joins it and returns the totals, or the error that ended it early.
    pub fn stop(mut self) -> Result<WriterStats> {
        let outcome = match self.signal_stop() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Ok(()),
        };
        outcome.map(|()| self.counters.snapshot())
    }

    fn signal_stop(&mut self) -> Option<JoinHandle<Result<()>>> {
        self.stopping.store(true, Ordering::SeqCst);
        drop(self.stop_signal.take());
        self.thread.take()
    }
}

impl Drop for LiveWriter {
    fn drop(&mut self) {
        if let Some(thread) = self.signal_stop() {
            let _ = thread.join();
        }
    }
}

fn pacing_period(rate_per_sec: f64) -> Result<Duration> {
    if rate_per_sec.is_finite() && (0.01..=1_000_000.0).contains(&rate_per_sec) {
        return Ok(Duration::from_secs_f64(1.0 / rate_per_sec));
    }
    Err(Error::Config {
        field: "rate_per_sec".into(),
        reason: format!(
            "must be between 0.01 and 1000000 transactions per second, got {rate_per_sec}"
        ),
    })
}

fn open_connection(path: &Path) -> Result<Connection> {
    let err = |op| {
        move |source| Error::SampleApp {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(err("open for the live writer"))?;
    conn.busy_handler(Some(wait_while_busy))
        .map_err(err("set the live writer's busy handler"))?;
    conn.execute_batch(WRITER_PRAGMAS)
        .map_err(err("set the live writer's pragmas"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    for sql in ALL_STATEMENTS {
        conn.prepare_cached(sql).map_err(err(
            "prepare the live writer's statements (is this the sample app?)",
        ))?;
    }
    Ok(conn)
}

thread_local! {
    /// The stop flag of the writer running on this thread, read by [`wait_while_busy`].
    static BUSY_STOP: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
    /// When the current busy wait began.
    static BUSY_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The busy handler: SQLite's busy timeout, except that it gives up at once when the writer
/// is stopping, so `stop()` stays prompt while another connection holds the lock. Short sleeps
/// first, so the writer resumes within a millisecond or two of a brief freeze ending.
fn wait_while_busy(attempt: i32) -> bool {
    let now = Instant::now();
    if attempt == 0 {
        BUSY_SINCE.set(Some(now));
    }
    let since = BUSY_SINCE.get().unwrap_or(now);
    let stopping =
        BUSY_STOP.with_borrow(|flag| flag.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)));
    if stopping || now.duration_since(since) >= BUSY_TIMEOUT {
        return false;
    }
    let nap = if attempt < 20 { 1 } else { 5 };
    std::thread::sleep(Duration::from_millis(nap));
    true
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// The writer thread's state.
struct Session {
    conn: Connection,
    rng: SmallRng,
    path: PathBuf,
    counters: Arc<Counters>,
    stopping: Arc<AtomicBool>,
}

impl Session {
    /// Runs one transaction per `period` until the stop signal; returns the first error that is
    /// not a busy timeout.
    fn run(mut self, period: Duration, stop: &Receiver<()>) -> Result<()> {
        BUSY_STOP.set(Some(Arc::clone(&self.stopping)));
        let mut deadline = Instant::now();
        loop {
            match stop.recv_deadline(deadline) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            self.transaction()?;
            deadline = next_deadline(deadline, period, Instant::now());
        }
    }

    /// One application transaction, retried while the database stays locked beyond the busy
    /// timeout (unless the writer is stopping).
    fn transaction(&mut self) -> Result<()> {
        let op = Op::pick(&mut self.rng);
        loop {
            match self.apply(op) {
                Ok(delta) => {
                    self.counters.record(delta);
                    return Ok(());
                }
                Err(e) if is_busy(&e) && self.stopping.load(Ordering::SeqCst) => return Ok(()),
                Err(e) if is_busy(&e) => {
                    self.counters.busy_retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(RETRY_BACKOFF);
                }
                Err(source) => {
                    let path = self.path.clone();
                    return Err(Error::SampleApp {
                        op: op.name(),
                        path,
                        source,
                    });
                }
            }
        }
    }

    fn apply(&mut self, op: Op) -> rusqlite::Result<Delta> {
        let now = Utc::now().timestamp();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let delta = workload::run(&tx, &mut self.rng, op, now)?;
        tx.commit()?;
        Ok(delta)
    }
}

/// The next transaction's start: one period after the last, unless the writer fell more than
/// [`MAX_BACKLOG`] behind, in which case it restarts from now instead of bursting.
fn next_deadline(previous: Instant, period: Duration, now: Instant) -> Instant {
    let next = previous + period;
    if now > next + MAX_BACKLOG {
        now
    } else {
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_does_not_burst_after_a_stall() {
        let start = Instant::now();
        let period = Duration::from_millis(5);
        assert_eq!(next_deadline(start, period, start), start + period);
        let late = start + Duration::from_secs(2);
        assert_eq!(next_deadline(start, period, late), late);
    }

    #[test]
    fn rate_must_be_positive_and_finite() {
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(pacing_period(rate), Err(Error::Config { .. })),
                "{rate}"
            );
        }
        assert_eq!(pacing_period(200.0).ok(), Some(Duration::from_millis(5)));
    }
}
