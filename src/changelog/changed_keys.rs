//! The keys capture logged, per table, with the seq of each key's latest change: what
//! `diff --changed` rechecks (see `ChangeLog::changed_keys`). Kept in a SQLite file of the tool's
//! own beside the change log (`<state dir>/changelog.keys.db`), not in sled: the store grows with
//! every distinct key ever changed (trims leave it alone), and sled's memory grows with the keys a
//! tree holds (a 10-minute sync bench at 1000 transactions/s went from 72 to 216 MB of RSS with
//! them in a sled tree), while SQLite's stays within its page cache.
//!
//! Written before the changes themselves (`SledChangeLog::append`), into one transaction that
//! stays open across a capture cycle's appends and commits before the cycle's boundary is written
//! (`SledChangeLog::commit_boundary`), or every [`COMMIT_EVERY_KEYS`] keys: a change that
//! survives a crash (only changes with a boundary do; a resumed capture discards the rest)
//! always has its key here. With a transaction per append (1000 changes) this store made
//! capture's read of ~420k changes take 6.8–7.5 s instead of 3.8–4.1 s; with one per cycle it
//! takes 5.2–5.4 s (6.3–6.7 s per append, in the same alternating runs). The file is
//! in WAL mode with `synchronous = NORMAL`: a committed transaction survives the death of the
//! process, as the change log's flushes do.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::record;
use crate::change::{Change, RawValue};
use crate::error::{Error, Result};

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS changed (
        tbl TEXT NOT NULL,
        key BLOB NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (tbl, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;";
/// `marks` row: the store lists every key changed after this seq (the capture position when the
/// store was created: 0 for a fresh log; a log written by a version without this store vouches
/// only for what it captures from then on).
const FROM: &str = "from";
/// `marks` row prefix, followed by a table name: that table's keys were forgotten through this
/// seq.
const FORGOTTEN: &str = "forgotten:";

/// Keys recorded in the open transaction before it commits without waiting for a boundary: a
/// huge cycle's transaction stays bounded.
const COMMIT_EVERY_KEYS: usize = 100_000;

pub(super) struct ChangedKeys {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Keys recorded in the open transaction.
    pending: AtomicUsize,
}

impl ChangedKeys {
    /// Opens (creating if needed) the store at `path`; a new store vouches from `from()`.
    pub(super) fn open(path: &Path, from: impl FnOnce() -> Result<u64>) -> Result<ChangedKeys> {
        let fail = |op| {
            let path = path.to_path_buf();
            move |source| Error::ChangedKeys { op, path, source }
        };
        let conn = Connection::open(path).map_err(fail("open"))?;
        conn.execute_batch(SCHEMA).map_err(fail("open"))?;
        let keys = ChangedKeys {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            pending: AtomicUsize::new(0),
        };
        if keys.mark(FROM)?.is_none() {
            let from = from()?;
            keys.set_mark(FROM, from)?;
        }
        Ok(keys)
    }

    fn fail(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
        move |source| Error::ChangedKeys {
            op,
            path: self.path.clone(),
            source,
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark(&self, name: &str) -> Result<Option<u64>> {
        self.conn()
            .query_row("SELECT seq FROM marks WHERE name = ?1", [name], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|seq| seq.map(|s| s as u64))
            .map_err(self.fail("read"))
    }

    fn set_mark(&self, name: &str, seq: u64) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO marks (name, seq) VALUES (?1, ?2)",
                params![name, seq as i64],
            )
            .map(drop)
            .map_err(self.fail("write"))
    }

    /// Records each change's key with its seq, in the open transaction (begun if none is):
    /// durable once [`ChangedKeys::commit`] returns.
    pub(super) fn record(&self, changes: &[Change]) -> Result<()> {
        let conn = self.conn();
        let fail = |source| Error::ChangedKeys {
            op: "record",
            path: self.path.clone(),
            source,
        };
        if conn.is_autocommit() {
            conn.execute_batch("BEGIN").map_err(fail)?;
        }
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO changed (tbl, key, seq) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tbl, key) DO UPDATE SET seq = max(seq, excluded.seq)",
            )
            .map_err(fail)?;
        let mut key = Vec::with_capacity(64);
        for change in changes {
            record::encode_key_values(&change.key, &mut key);
            insert
                .execute(params![change.table, key, change.seq as i64])
                .map_err(fail)?;
        }
        drop(insert);
        if self.pending.fetch_add(changes.len(), Ordering::Relaxed) + changes.len()
            >= COMMIT_EVERY_KEYS
        {
            self.commit_open(&conn)?;
        }
        Ok(())
    }

    /// Commits what [`ChangedKeys::record`] recorded so far (nothing to do when nothing is open).
    pub(super) fn commit(&self) -> Result<()> {
        self.commit_open(&self.conn())
    }

    fn commit_open(&self, conn: &Connection) -> Result<()> {
        self.pending.store(0, Ordering::Relaxed);
        if conn.is_autocommit() {
            return Ok(());
        }
        conn.execute_batch("COMMIT").map_err(self.fail("commit"))
    }

    /// Whether the store vouches for every key of `table` changed after `after`.
    fn vouches(&self, table: &str, after: u64) -> Result<bool> {
        let from = self.mark(FROM)?.unwrap_or(u64::MAX);
        let forgotten = self.mark(&format!("{FORGOTTEN}{table}"))?.unwrap_or(0);
        Ok(after >= from && after >= forgotten)
    }

    /// See `ChangeLog::changed_key_count`.
    pub(super) fn count(&self, table: &str, after: u64) -> Result<Option<u64>> {
        if !self.vouches(table, after)? {
            return Ok(None);
        }
        self.conn()
            .query_row(
                "SELECT count(*) FROM changed WHERE tbl = ?1 AND seq > ?2",
                params![table, after as i64],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| Some(n as u64))
            .map_err(self.fail("count"))
    }

    /// See `ChangeLog::changed_keys`.
    pub(super) fn for_each(
        &self,
        table: &str,
        after: u64,
        f: &mut dyn FnMut(Vec<RawValue>, u64) -> Result<()>,
    ) -> Result<bool> {
        if !self.vouches(table, after)? {
            return Ok(false);
        }
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT key, seq FROM changed WHERE tbl = ?1 AND seq > ?2")
            .map_err(self.fail("read"))?;
        let mut rows = stmt
            .query(params![table, after as i64])
            .map_err(self.fail("read"))?;
        while let Some(row) = rows.next().map_err(self.fail("read"))? {
            let seq = row.get::<_, i64>(1).map_err(self.fail("read"))? as u64;
            let bytes = row.get_ref(0).map_err(self.fail("read"))?;
            let key = record::decode_key_values(bytes.as_blob().unwrap_or_default()).map_err(
                |reason| Error::ChangeLogCorrupt {
                    path: self.path.clone(),
                    tree: "changed",
                    seq: Some(seq),
                    reason,
                },
            )?;
            f(key, seq)?;
        }
        Ok(true)
    }

    /// See `ChangeLog::forget_changed_keys`. The mark first: a crash between leaves keys that
    /// are merely rechecked.
    pub(super) fn forget(&self, table: &str, through: u64) -> Result<()> {
        // Its own transactions, not a capture cycle's.
        self.commit()?;
        let name = format!("{FORGOTTEN}{table}");
        if self.mark(&name)?.is_some_and(|f| f >= through) {
            return Ok(());
        }
        self.set_mark(&name, through)?;
        self.conn()
            .execute(
                "DELETE FROM changed WHERE tbl = ?1 AND seq <= ?2",
                params![table, through as i64],
            )
            .map(drop)
            .map_err(self.fail("forget"))
    }

    /// Drops everything recorded (tests: a store written by an older version).
    #[cfg(test)]
    pub(super) fn clear(&self) -> Result<()> {
        self.conn()
            .execute_batch("DELETE FROM changed; DELETE FROM marks;")
            .map_err(self.fail("clear"))
    }
}
