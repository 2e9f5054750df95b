//! Change capture from the live application database. [`install`] puts key-only triggers on the
//! captured tables; they log `(table, op, key)` into `_sqlite2pg_changes`, in the application's
//! own transactions. A [`Capturer`] reads that log together with the *current* row images inside
//! one read transaction, so every cycle ends on a consistent source state (promise 2), and
//! [`max_seq`] read inside the snapshot's transaction is the exact handoff point (promise 1).
//!
//! Promise 4: everything installed is named `_sqlite2pg_…` and [`uninstall`] removes it, leaving
//! `sqlite_schema` exactly as the application had it. Writes here wait on the application's locks
//! with [`BUSY_TIMEOUT`]; capture reads never block a WAL writer (in rollback-journal mode a read
//! holds a shared lock while it runs, as any reader does); nothing here changes the journal mode
//! or checkpoints. The trigger SQL only uses what SQLite 3.24 already had, because the
//! application's SQLite runs it.
//!
//! What capture cannot see, so the apply side must handle it:
//! - `INSERT OR REPLACE` (or `REPLACE`) evicting a row through a UNIQUE conflict on a column other
//!   than the key fires no delete trigger (SQLite fires them only under `recursive_triggers`):
//!   capture sees the insert only, and apply must evict the conflicting row itself.
//! - `quote()` cuts text at a NUL byte, so a text key containing NUL is logged truncated.
//! - `quote()` does not print every double exactly: old SQLite printed 15 significant digits, and
//!   the bundled 3.50 prints digits that are off for some magnitudes beyond about 1e±100
//!   (`3.333333333333333e149`). A REAL key with such a value is not found again and is captured
//!   as deleted; `diff` reports the row. Keys of realistic magnitude round-trip (tested).

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use super::introspect::Table;
use super::{quote_ident, BUSY_TIMEOUT};
use crate::change::{Boundary, Change, RawValue};
use crate::error::{Error, Result};
use crate::fault;

mod install;
mod key;
mod triggers;

use install::own_objects;
pub use install::{adopt, install, installed_tables, tables_without_triggers, uninstall, Adopted};
pub use key::parse_key;
use key::parse_key_bytes;
use triggers::{key_columns, table_triggers, KeyColumn, TriggerDef};

/// The `_sqlite2pg_meta` key of the cutover record, written with the fence (see `cutover`).
pub(crate) const CUTOVER_RECORD_KEY: &str = "cutover";
const SCHEMA_VERSION: &str = "PRAGMA schema_version";
const MAX_SEQ: &str = "SELECT coalesce(max(seq), 0) FROM _sqlite2pg_changes";
/// Where a cycle ends and when its newest change was written.
const CYCLE_END: &str = "SELECT max(seq), max(at) FROM _sqlite2pg_changes WHERE seq > ?1";
/// The cycle's change rows coalesced per (table, key) to the last seq, in seq order. SQLite
/// groups and sorts with its sorter, which spills to temporary files past the connection's
/// cache size, so a cycle of any size takes bounded memory here.
const READ_CHANGES: &str = "SELECT max(seq) AS last, tbl, key FROM _sqlite2pg_changes \
     WHERE seq > ?1 AND seq <= ?2 GROUP BY tbl, key ORDER BY last";
/// Keeps the newest row so the next seq stays above every seq ever handed out.
const DELETE_THROUGH: &str = "DELETE FROM _sqlite2pg_changes WHERE seq <= ?1 \
     AND seq < (SELECT max(seq) FROM _sqlite2pg_changes)";

/// Changes handed to the sink at once. A thousand row images keep memory flat for a
/// 100k-row application transaction while making the per-call cost of the sink negligible.
pub const CHUNK_ROWS: usize = 1000;

/// Julian day of the Unix epoch.
const UNIX_EPOCH_JULIAN_DAY: f64 = 2_440_587.5;

/// The highest change seq visible to `conn`'s current transaction; 0 when nothing was logged.
/// Read inside the snapshot's read transaction, it is the snapshot's handoff point S.
pub fn max_seq(conn: &Connection) -> Result<u64> {
    conn.query_row(MAX_SEQ, [], |r| r.get::<_, i64>(0))
        .map(|seq| seq as u64)
        .map_err(|e| {
            source_error(
                "read the highest change seq",
                &connection_path(conn),
                None,
                e,
            )
        })
}

/// The highest change seq visible to `conn`'s current transaction, `None` when capture is not
/// installed (there is no change table): a read of application rows in the same transaction
/// reflects exactly the changes up to it.
pub fn visible_seq(conn: &Connection) -> Result<Option<u64>> {
    let installed: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = '_sqlite2pg_changes'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| source_error("look for the change table", &connection_path(conn), None, e))?;
    if !installed {
        return Ok(None);
    }
    max_seq(conn).map(Some)
}

/// The keys of change rows with seq > `after` still in the source's change table (changes no
/// capture has consumed yet), one per (table, key), as `(table, key)`.
pub fn logged_keys_after(conn: &Connection, after: u64) -> Result<Vec<(String, Vec<RawValue>)>> {
    let path = connection_path(conn);
    let fail = |e| source_error("read the change table", &path, None, e);
    let mut stmt = conn
        .prepare("SELECT DISTINCT tbl, key FROM _sqlite2pg_changes WHERE seq > ?1")
        .map_err(fail)?;
    let mut rows = stmt.query([seq_param(after)]).map_err(fail)?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next().map_err(fail)? {
        let table =
            String::from_utf8_lossy(row.get_ref(0).map_err(fail)?.as_bytes().unwrap_or_default())
                .into_owned();
        let text = row.get_ref(1).map_err(fail)?.as_bytes().unwrap_or_default();
        let key = parse_key_bytes(text).map_err(|reason| Error::Data {
            table: table.clone(),
            reason: format!(
                "a change row's key {} cannot be read: {reason}",
                String::from_utf8_lossy(text)
            ),
        })?;
        keys.push((table, key));
    }
    Ok(keys)
}

/// Reads a table's current rows by key, exactly as capture reads its row images (the incremental
/// diff uses it, so both agree on what "the row of this key" is).
pub struct ImageLookup(CapturedTable);

impl ImageLookup {
    pub fn new(table: &Table) -> Result<ImageLookup> {
        CapturedTable::new(table).map(ImageLookup)
    }

    /// The row whose key is exactly `key`, if it exists, in `conn`'s current transaction.
    pub fn image(&self, conn: &Connection, key: &[RawValue]) -> Result<Option<Vec<RawValue>>> {
        self.0.read_image(conn, key).map_err(|e| {
            source_error(
                "read a row by key",
                &connection_path(conn),
                Some(&self.0.name),
                e,
            )
        })
    }
}

/// Reads change rows and current row images from the application's database; see the module
/// docs. Holds its own read-write connection; a read transaction lives only inside one
/// [`Capturer::capture`] call.
pub struct Capturer {
    conn: Connection,
    path: PathBuf,
    tables: Vec<CapturedTable>,
    by_name: HashMap<String, usize>,
    /// The schema version at which the triggers were last verified intact.
    verified_schema: Cell<Option<i64>>,
    /// The schema version `tables` were read at, when the caller pinned it: a capture that
    /// finds another version reads nothing (its images would not match the definitions).
    pinned_schema: Option<i64>,
}

/// How one captured table's rows are read back.
struct CapturedTable {
    name: String,
    /// `SELECT <every column> FROM t WHERE k1 IS ?1 AND …`
    image_sql: String,
    width: usize,
    /// For each key column its position in the image; `None` for the rowid.
    key_in_image: Vec<Option<usize>>,
    triggers: Vec<TriggerDef>,
}

/// One change row still to be turned into a [`Change`]: the last seq of its key in this cycle.
struct PendingKey {
    seq: u64,
    table: usize,
    key: Vec<u8>,
}

impl Capturer {
    /// Opens the database read-write (it must exist) with [`BUSY_TIMEOUT`], automatic
    /// checkpoints off and no checkpoint on close, and checks that capture is installed, with
    /// this version's triggers, on every table in `tables`.
    pub fn open(path: &Path, tables: &[Table]) -> Result<Capturer> {
        let conn = open_read_write(path)?;
        conn.set_prepared_statement_cache_capacity(tables.len() + 8);
        let captured = tables
            .iter()
            .map(CapturedTable::new)
            .collect::<Result<Vec<_>>>()?;
        let by_name = captured
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let capturer = Capturer {
            conn,
            path: path.to_path_buf(),
            tables: captured,
            by_name,
            verified_schema: Cell::new(None),
            pinned_schema: None,
        };
        let version = capturer.read_schema_version(&capturer.conn)?;
        capturer.verify_triggers(&capturer.conn, version)?;
        Ok(capturer)
    }

    /// Pins the schema version the tables given to [`Capturer::open`] were read at: from now on
    /// [`Capturer::capture`] reads nothing at any other version and fails with
    /// [`Error::SchemaMoved`], so no row image is ever read with stale column lists.
    pub fn pin_schema(&mut self, version: i64) {
        self.pinned_schema = Some(version);
    }

    /// Sets how long writes (`delete_through`) wait for the application's locks.
    pub fn set_busy_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.conn
            .busy_timeout(timeout)
            .map_err(|e| self.source_error("set busy timeout", None, e))
    }

    /// Captures every change after seq `after`, in one read transaction: change rows are
    /// coalesced per key (keeping the last seq), and each key's current row image is read from
    /// the same snapshot. Changes reach `sink` in seq order, in chunks of at most
    /// [`CHUNK_ROWS`]. `Ok(Some(b))` guarantees every change with `after < seq <= b.end_seq` was
    /// sunk and the images are one consistent state; `Ok(None)`: nothing new. On `Err` some
    /// chunks may have been sunk: the caller discards everything past its last boundary.
    /// Fails naming the table when a change row is for a table not captured here, or when the
    /// capture triggers were changed or dropped since they were verified; fails with
    /// [`Error::SchemaMoved`], having read nothing, when the schema is not at the pinned version.
    pub fn capture(
        &mut self,
        after: u64,
        sink: &mut dyn FnMut(&[Change]) -> Result<()>,
    ) -> Result<Option<Boundary>> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred)
            .map_err(|e| self.source_error("begin the capture read", None, e))?;
        let version = self.read_schema_version(&tx)?;
        if let Some(pinned) = self.pinned_schema.filter(|&p| p != version) {
            return Err(Error::SchemaMoved {
                path: self.path.clone(),
                from: pinned,
                to: version,
            });
        }
        self.verify_triggers(&tx, version)?;
        let Some((end_seq, max_at)) = self.cycle_end(&tx, after)? else {
            return Ok(None);
        };
        let changes = self.emit(&tx, after, end_seq, sink)?;
        tx.commit()
            .map_err(|e| self.source_error("end the capture read", None, e))?;
        Ok(Some(Boundary {
            end_seq,
            committed_at: (max_at - UNIX_EPOCH_JULIAN_DAY) * 86_400.0,
            changes,
        }))
    }

    /// Deletes change rows with `seq <= through` in one `BEGIN IMMEDIATE` transaction (waiting
    /// on the application's lock up to the busy timeout; a busy error is transient) and returns
    /// how many went. The newest row is always kept so seqs never go back. Call it only once
    /// the change log flushed everything through `through`.
    pub fn delete_through(&mut self, through: u64) -> Result<u64> {
        delete_through(&self.conn, &self.path, through)
    }

    fn read_schema_version(&self, conn: &Connection) -> Result<i64> {
        conn.query_row(SCHEMA_VERSION, [], |r| r.get(0))
            .map_err(|e| super::classify_open_error(&self.path, e))
    }

    /// Checks, when the schema changed since the last check, that every capture trigger is
    /// still there with the SQL this version installs: a rebuilt or altered table loses or
    /// changes its triggers, and its changes would be missed silently.
    fn verify_triggers(&self, conn: &Connection, version: i64) -> Result<()> {
        let fail = |e| self.source_error("check the capture triggers", None, e);
        let first = self.verified_schema.get().is_none();
        if self.verified_schema.get() == Some(version) {
            return Ok(());
        }
        let existing = own_objects(conn).map_err(fail)?;
        for table in &self.tables {
            let intact = table.triggers.iter().all(|t| {
                existing
                    .iter()
                    .any(|o| o.kind == "trigger" && o.name == t.name && o.sql == t.sql)
            });
            if !intact {
                let reason = if first {
                    "change capture is not installed on this table (or by another sqlite2pg \
                     version): install it before the snapshot"
                } else {
                    "its capture triggers were dropped or changed (did the application alter or \
                     rebuild the table?): changes may have been missed; install again and take \
                     a new snapshot"
                };
                return Err(Error::Data {
                    table: table.name.clone(),
                    reason: format!("{reason} ({})", self.path.display()),
                });
            }
        }
        self.verified_schema.set(Some(version));
        Ok(())
    }

    /// The newest change seq after `after` and the newest commit time (Julian day) among
    /// them; `None` when nothing was logged after `after`.
    fn cycle_end(&self, conn: &Connection, after: u64) -> Result<Option<(u64, f64)>> {
        let fail = |e| self.source_error("read the change log", None, e);
        let mut stmt = conn.prepare_cached(CYCLE_END).map_err(fail)?;
        let (end, at) = stmt
            .query_row([seq_param(after)], |r| {
                Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<f64>>(1)?))
            })
            .map_err(fail)?;
        Ok(end.map(|end| (end as u64, at.unwrap_or(f64::MIN))))
    }

    fn table_index(&self, seq: u64, tbl: &[u8]) -> Result<usize> {
        let name = String::from_utf8_lossy(tbl);
        self.by_name.get(name.as_ref()).copied().ok_or_else(|| {
            let captured: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
            Error::Data {
                table: name.into_owned(),
                reason: format!(
                    "change seq {seq} in {} is for a table this capture does not read \
                     (captured: {captured:?}); its changes would be lost",
                    self.path.display()
                ),
            }
        })
    }

    /// Streams the cycle `after < seq <= end_seq`, coalesced per key (by SQLite, see
    /// [`READ_CHANGES`]), into changes with their current images, sinking a chunk of at most
    /// [`CHUNK_ROWS`] at a time: memory does not grow with the cycle. Returns how many.
    fn emit(
        &self,
        conn: &Connection,
        after: u64,
        end_seq: u64,
        sink: &mut dyn FnMut(&[Change]) -> Result<()>,
    ) -> Result<u64> {
        let fail = |e| self.source_error("read the change log", None, e);
        let mut stmt = conn.prepare_cached(READ_CHANGES).map_err(fail)?;
        let mut rows = stmt
            .query([seq_param(after), seq_param(end_seq)])
            .map_err(fail)?;
        let mut sunk = 0u64;
        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
        while let Some(row) = rows.next().map_err(fail)? {
            let seq = row.get::<_, i64>(0).map_err(fail)? as u64;
            let tbl = row.get_ref(1).map_err(fail)?;
            let table = self.table_index(seq, tbl.as_bytes().unwrap_or_default())?;
            let key = row.get_ref(2).map_err(fail)?.as_bytes().unwrap_or_default();
            let pending = PendingKey {
                seq,
                table,
                key: key.to_vec(),
            };
            chunk.push(self.current_change(conn, &pending)?);
            if chunk.len() >= CHUNK_ROWS {
                sunk += self.sink_chunk(&mut chunk, sink)?;
            }
        }
        if !chunk.is_empty() {
            sunk += self.sink_chunk(&mut chunk, sink)?;
        }
        Ok(sunk)
    }

    fn sink_chunk(
        &self,
        chunk: &mut Vec<Change>,
        sink: &mut dyn FnMut(&[Change]) -> Result<()>,
    ) -> Result<u64> {
        sink(chunk)?;
        let n = chunk.len() as u64;
        chunk.clear();
        fault::hit(fault::CAPTURE_AFTER_CHUNK);
        Ok(n)
    }

    fn current_change(&self, conn: &Connection, pending: &PendingKey) -> Result<Change> {
        let table = &self.tables[pending.table];
        let bad_key = |reason: String| Error::Data {
            table: table.name.clone(),
            reason: format!(
                "change seq {}: key {} cannot be read: {reason}",
                pending.seq,
                String::from_utf8_lossy(&pending.key)
            ),
        };
        let key = parse_key_bytes(&pending.key).map_err(bad_key)?;
        if key.len() != table.key_in_image.len() {
            let expected = table.key_in_image.len();
            return Err(bad_key(format!("the table's key has {expected} columns")));
        }
        let image = table
            .read_image(conn, &key)
            .map_err(|e| self.source_error("read the current row", Some(&table.name), e))?;
        Ok(Change {
            seq: pending.seq,
            table: table.name.clone(),
            key,
            image,
        })
    }

    fn source_error(&self, op: &'static str, table: Option<&str>, e: rusqlite::Error) -> Error {
        source_error(op, &self.path, table, e)
    }
}

impl CapturedTable {
    fn new(table: &Table) -> Result<CapturedTable> {
        let key = key_columns(table)?;
        let columns: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let filter: Vec<String> = key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} IS ?{}", k.sql(), i + 1))
            .collect();
        let key_in_image = key
            .iter()
            .map(|k| match k {
                KeyColumn::Named(name) => table.columns.iter().position(|c| &c.name == name),
                KeyColumn::Rowid(_) => None,
            })
            .collect();
        Ok(CapturedTable {
            name: table.name.clone(),
            image_sql: format!(
                "SELECT {} FROM {} WHERE {}",
                columns.join(", "),
                quote_ident(&table.name),
                filter.join(" AND ")
            ),
            width: columns.len(),
            key_in_image,
            triggers: table_triggers(table)?,
        })
    }

    /// The row whose key is exactly `key`, if it exists. The lookup uses the key's collation
    /// (so an index serves it); a row matching only under NOCASE or numeric equality (1 vs
    /// 1.0) is another key's row, so it does not count.
    fn read_image(
        &self,
        conn: &Connection,
        key: &[RawValue],
    ) -> rusqlite::Result<Option<Vec<RawValue>>> {
        let mut stmt = conn.prepare_cached(&self.image_sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(
            key.iter().map(|v| ToSqlOutput::Borrowed(v.as_ref())),
        ))?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let image = (0..self.width)
            .map(|i| row.get_ref(i).map(RawValue::from_ref))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let exact = self
            .key_in_image
            .iter()
            .zip(key)
            .all(|(position, value)| position.is_none_or(|p| image[p] == *value));
        Ok(exact.then_some(image))
    }
}

/// Deletes consumed change rows on a connection of its own, so that waiting for the
/// application's write lock (SQLite's busy handler sleeps up to 100 ms between tries) never
/// holds up capture: sync runs it on a thread beside the capture loop.
pub struct ChangeRowDeleter {
    conn: Connection,
    path: PathBuf,
}

impl ChangeRowDeleter {
    /// Opens the database read-write like [`Capturer::open`] does.
    pub fn open(path: &Path) -> Result<ChangeRowDeleter> {
        Ok(ChangeRowDeleter {
            conn: open_read_write(path)?,
            path: path.to_path_buf(),
        })
    }

    /// As [`Capturer::delete_through`].
    pub fn delete_through(&mut self, through: u64) -> Result<u64> {
        delete_through(&self.conn, &self.path, through)
    }
}

fn delete_through(conn: &Connection, path: &Path, through: u64) -> Result<u64> {
    let fail = |e| source_error("delete flushed changes", path, None, e);
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(fail)?;
    let deleted = tx
        .execute(DELETE_THROUGH, [seq_param(through)])
        .map_err(fail)?;
    fault::hit(fault::CAPTURE_BEFORE_DELETE_COMMIT);
    tx.commit().map_err(fail)?;
    Ok(deleted as u64)
}

fn open_read_write(path: &Path) -> Result<Connection> {
    let fail = |op| move |e| source_error(op, path, None, e);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(fail("open"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(fail("set busy timeout"))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(fail("turn off checkpoint on close"))?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(fail("turn off automatic checkpoints"))?;
    Ok(conn)
}

/// Seqs are SQLite rowids: never above `i64::MAX`.
fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn connection_path(conn: &Connection) -> PathBuf {
    conn.path().map(PathBuf::from).unwrap_or_default()
}

fn source_error(
    op: &'static str,
    path: &Path,
    table: Option<&str>,
    source: rusqlite::Error,
) -> Error {
    Error::Source {
        op,
        path: path.to_path_buf(),
        table: table.map(str::to_string),
        source,
    }
}

#[cfg(test)]
mod tests;
