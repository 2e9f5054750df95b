//! The snapshot's live read view: several read-only connections to the application's database
//! that all read one committed state, without copying the file first.
//!
//! In WAL mode a read transaction sees the database as of its first read, and keeps seeing it
//! while writers commit. The view holds the write lock (`BEGIN IMMEDIATE`, which waits for the
//! application's writer like any writer would) for the few milliseconds it takes to start a read
//! transaction on every connection, so no commit can land between two of those starts: they all
//! see the newest committed state at that moment. The application's readers are never blocked,
//! its writers wait no longer than those milliseconds, and nothing is written.
//!
//! While the view is open, SQLite cannot checkpoint past it: the `-wal` file grows by what the
//! application writes meanwhile, and shrinks at the first checkpoint after the view closes.

use std::path::Path;

use rusqlite::Connection;

use super::{open_read_only, open_read_write};
use crate::error::{Error, Result};

/// True when the database at `path` is in WAL mode, the only mode where a long read does not
/// block the application's writers.
pub fn is_wal(path: &Path) -> Result<bool> {
    let conn = open_read_only(path)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(|source| Error::Source {
            op: "read the journal mode of",
            path: path.to_path_buf(),
            table: None,
            source,
        })?;
    Ok(mode.eq_ignore_ascii_case("wal"))
}

/// Opens `readers` read-only connections to the WAL-mode database at `path`, each inside a read
/// transaction, all at the same committed state; with `position_sql`, also returns its answer
/// (an `Option<i64>`, `None` read as 0) in that state. The read transactions stay open until
/// the connections are dropped or commit.
pub fn open_live_view(
    path: &Path,
    readers: usize,
    position_sql: Option<&str>,
) -> Result<(Vec<Connection>, Option<i64>)> {
    let err = |op: &'static str| {
        move |source| Error::Source {
            op,
            path: path.to_path_buf(),
            table: None,
            source,
        }
    };
    let mut conns = Vec::with_capacity(readers);
    for _ in 0..readers.max(1) {
        conns.push(open_read_only(path)?);
    }
    let lock = open_read_write(path)?;
    lock.execute_batch("BEGIN IMMEDIATE").map_err(err(
        "hold the write lock (to open the snapshot's read view) of",
    ))?;
    let opened = (|| {
        for conn in &conns {
            conn.execute_batch("BEGIN")?;
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })?;
        }
        match position_sql {
            Some(sql) => conns[0]
                .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
                .map(|p| Some(p.unwrap_or(0))),
            None => Ok(None),
        }
    })();
    // Released whatever happened: the readers' transactions are open (or the error is returned).
    let released = lock.execute_batch("ROLLBACK");
    let position = opened.map_err(err("open the snapshot's read view of"))?;
    released.map_err(err("release the write lock of"))?;
    Ok((conns, position))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wal_db(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("app.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        path
    }

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn every_reader_of_a_view_sees_the_state_it_opened_at_while_the_app_writes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = wal_db(dir.path());
        assert!(is_wal(&path).unwrap());
        let (readers, position) = open_live_view(&path, 3, Some("SELECT max(id) FROM t")).unwrap();
        assert_eq!((readers.len(), position), (3, Some(1)));
        let app = Connection::open(&path).unwrap();
        app.execute_batch("INSERT INTO t VALUES (2); INSERT INTO t VALUES (3);")
            .unwrap();
        assert_eq!(count(&app), 3, "the application's writes are not blocked");
        for r in &readers {
            assert_eq!(
                count(r),
                1,
                "a reader of the view sees the state it opened at"
            );
        }
    }

    #[test]
    fn a_view_opens_after_the_writer_in_progress_commits_and_sees_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = wal_db(dir.path());
        let app = Connection::open(&path).unwrap();
        app.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (2);")
            .unwrap();
        let opener = {
            let path = path.clone();
            std::thread::spawn(move || open_live_view(&path, 2, None).unwrap())
        };
        std::thread::sleep(Duration::from_millis(200));
        app.execute_batch("INSERT INTO t VALUES (3); COMMIT;")
            .unwrap();
        let (readers, position) = opener.join().unwrap();
        assert_eq!(position, None);
        for r in &readers {
            assert_eq!(count(r), 3, "the whole transaction, in every reader");
        }
        app.execute_batch("INSERT INTO t VALUES (4);").unwrap();
        assert!(readers.iter().all(|r| count(r) == 3));
    }

    #[test]
    fn a_rollback_journal_database_is_not_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY);")
            .unwrap();
        assert!(!is_wal(&path).unwrap());
    }
}
