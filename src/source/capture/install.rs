//! Installing change capture in the application's database and removing it (promise 4): the
//! change table, the meta table and the triggers, each change in one `BEGIN IMMEDIATE`
//! transaction that waits on the application's locks with [`BUSY_TIMEOUT`]; adopting a table
//! created while sync runs; reading back what is installed.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::triggers::{enqueue_every_row, table_triggers};
use super::{connection_path, max_seq, source_error, SCHEMA_VERSION};
use crate::error::{Error, Result};
use crate::source::introspect::Table;
use crate::source::{quote_ident, BUSY_TIMEOUT};

/// The change log. `seq` is the rowid *without* AUTOINCREMENT: AUTOINCREMENT would create
/// `sqlite_sequence`, which SQLite never lets anyone drop, so `uninstall` could not restore the
/// schema. Seqs still never go back: SQLite hands out max(rowid)+1 and
/// [`Capturer::delete_through`] always keeps the newest row.
const CREATE_CHANGES: &str = "CREATE TABLE _sqlite2pg_changes (seq INTEGER PRIMARY KEY, \
     tbl TEXT NOT NULL, op TEXT NOT NULL, key TEXT NOT NULL, \
     at REAL NOT NULL DEFAULT (julianday('now')))";
const CREATE_META: &str = "CREATE TABLE _sqlite2pg_meta (key TEXT PRIMARY KEY, value TEXT)";
const CHANGES_TABLE: &str = "_sqlite2pg_changes";
const META_TABLE: &str = "_sqlite2pg_meta";
/// Every object sqlite2pg installs (GLOB, because `_` is a wildcard for LIKE).
const OWN_OBJECTS: &str =
    "SELECT type, name, sql FROM sqlite_schema WHERE name GLOB '_sqlite2pg_*' ORDER BY rowid";
const META_EXISTS: &str =
    "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = '_sqlite2pg_meta'";
const META_GET: &str = "SELECT value FROM _sqlite2pg_meta WHERE key = ?1";
const META_SET: &str = "INSERT OR REPLACE INTO _sqlite2pg_meta (key, value) VALUES (?1, ?2)";
const META_SET_ONCE: &str = "INSERT OR IGNORE INTO _sqlite2pg_meta (key, value) \
     VALUES ('installed_at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))";
const META_CLEAR_CUTOVER: &str = "DELETE FROM _sqlite2pg_meta WHERE key = ?1";

/// Installs (idempotently) the change table, the meta table and three triggers on each table, in
/// one `BEGIN IMMEDIATE` transaction. Triggers already installed with the same SQL are left
/// alone; stale ones (other tables, older SQL, a cutover's fence) are replaced, and a cutover
/// record is cleared. Sets [`BUSY_TIMEOUT`] on `conn`.
pub fn install(conn: &Connection, path: &Path, tables: &[Table]) -> Result<()> {
    const OP: &str = "install change capture";
    let mut wanted = Vec::with_capacity(tables.len() * 3);
    for table in tables {
        wanted.extend(table_triggers(table)?);
    }
    let fail = |e| source_error(OP, path, None, e);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(fail)?;
    let existing = own_objects(&tx).map_err(fail)?;
    for (name, sql) in [(CHANGES_TABLE, CREATE_CHANGES), (META_TABLE, CREATE_META)] {
        if !existing.iter().any(|o| o.name == name) {
            tx.execute_batch(sql).map_err(fail)?;
        }
    }
    for old in existing.iter().filter(|o| o.kind == "trigger") {
        if !wanted
            .iter()
            .any(|t| t.name == old.name && t.sql == old.sql)
        {
            let drop = format!("DROP TRIGGER {}", quote_ident(&old.name));
            tx.execute_batch(&drop).map_err(fail)?;
        }
    }
    for trigger in &wanted {
        let present = existing
            .iter()
            .any(|o| o.name == trigger.name && o.sql == trigger.sql);
        if !present {
            tx.execute_batch(&trigger.sql)
                .map_err(|e| source_error(OP, path, Some(&trigger.table), e))?;
        }
    }
    record_install(&tx, tables).map_err(fail)?;
    tx.commit().map_err(fail)
}

/// Starts capturing `added` tables while sync runs, in one `BEGIN IMMEDIATE` transaction: checks
/// that the schema is still at `expected` (the version `added` was read at), installs their
/// triggers, records `all` (every captured table, `added` included) as the captured tables, and
/// logs a change row (op `R`) for every row `added` hold. Because the triggers and those rows
/// commit together, every row is in the change stream exactly once from here on: the ones there
/// now through their `R` row, every later write through a trigger (promise 1 for a table created
/// during sync). Idempotent: triggers already there are kept; a row logged twice is read twice
/// and applied once. Returns `None` (nothing done) when the schema moved since `expected`.
pub fn adopt(
    conn: &Connection,
    path: &Path,
    all: &[Table],
    added: &[Table],
    expected: i64,
) -> Result<Option<Adopted>> {
    const OP: &str = "start capturing a new table";
    let fail = |e| source_error(OP, path, None, e);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(fail)?;
    let version: i64 = tx
        .query_row(SCHEMA_VERSION, [], |r| r.get(0))
        .map_err(fail)?;
    if version != expected {
        return Ok(None);
    }
    let existing = own_objects(&tx).map_err(fail)?;
    for table in added {
        let table_fail = |e| source_error(OP, path, Some(&table.name), e);
        for trigger in table_triggers(table)? {
            if !existing
                .iter()
                .any(|o| o.name == trigger.name && o.sql == trigger.sql)
            {
                tx.execute_batch(&trigger.sql).map_err(table_fail)?;
            }
        }
        tx.execute_batch(&enqueue_every_row(table)?)
            .map_err(table_fail)?;
    }
    record_install(&tx, all).map_err(fail)?;
    let adopted = Adopted {
        schema_version: tx
            .query_row(SCHEMA_VERSION, [], |r| r.get(0))
            .map_err(fail)?,
        last_seq: max_seq(&tx)?,
    };
    tx.commit().map_err(fail)?;
    Ok(Some(adopted))
}

/// The tables among `tables` whose capture triggers are not all there with the SQL this version
/// installs (a table dropped and created again loses them, and its changes would be missed).
pub fn tables_without_triggers(conn: &Connection, tables: &[Table]) -> Result<Vec<String>> {
    let path = connection_path(conn);
    let existing = own_objects(conn)
        .map_err(|e| source_error("check the capture triggers", &path, None, e))?;
    let mut missing = Vec::new();
    for table in tables {
        let intact = table_triggers(table)?.iter().all(|t| {
            existing
                .iter()
                .any(|o| o.kind == "trigger" && o.name == t.name && o.sql == t.sql)
        });
        if !intact {
            missing.push(table.name.clone());
        }
    }
    Ok(missing)
}

/// Where [`adopt`] left the source.
#[derive(Debug, Clone, Copy)]
pub struct Adopted {
    /// The schema version with the new triggers: the definitions read before are still current.
    pub schema_version: i64,
    /// The newest change seq, past every row logged for the adopted tables.
    pub last_seq: u64,
}

fn record_install(conn: &Connection, tables: &[Table]) -> rusqlite::Result<()> {
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let names = serde_json::to_string(&names).expect("a list of strings serializes");
    conn.execute(META_SET, ["tables", &names])?;
    conn.execute(META_SET, ["sqlite2pg_version", env!("CARGO_PKG_VERSION")])?;
    conn.execute(META_SET_ONCE, [])?;
    // Capture (re)installed means SQLite is the system of record: install dropped any fence
    // trigger, so a cutover record left from an earlier cutover would claim a fence that is gone.
    conn.execute(META_CLEAR_CUTOVER, [super::CUTOVER_RECORD_KEY])?;
    let version: i64 = conn.query_row(SCHEMA_VERSION, [], |r| r.get(0))?;
    conn.execute(META_SET, ["schema_version", &version.to_string()])?;
    Ok(())
}

/// Drops every `_sqlite2pg_…` trigger and table (triggers first) in one `BEGIN IMMEDIATE`
/// transaction and returns their names. Afterwards `sqlite_schema` holds exactly what the
/// application had. Unread changes are dropped with the change table: SQLite stays the system
/// of record.
pub fn uninstall(conn: &Connection, path: &Path) -> Result<Vec<String>> {
    let fail = |e| source_error("uninstall change capture", path, None, e);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(fail)?;
    let mut objects = own_objects(&tx).map_err(fail)?;
    objects.retain(|o| o.kind == "trigger" || o.kind == "table");
    objects.sort_by_key(|o| o.kind != "trigger");
    for object in &objects {
        let kind = if object.kind == "trigger" {
            "TRIGGER"
        } else {
            "TABLE"
        };
        let drop = format!("DROP {kind} IF EXISTS {}", quote_ident(&object.name));
        tx.execute_batch(&drop).map_err(fail)?;
    }
    tx.commit().map_err(fail)?;
    Ok(objects.into_iter().map(|o| o.name).collect())
}

/// The tables capture was installed for, or `None` when it is not installed.
pub fn installed_tables(conn: &Connection) -> Result<Option<Vec<String>>> {
    let path = connection_path(conn);
    let fail = |e| source_error("read the capture metadata", &path, None, e);
    let installed: bool = conn
        .query_row(META_EXISTS, [], |r| r.get(0))
        .map_err(fail)?;
    if !installed {
        return Ok(None);
    }
    let value: Option<String> = conn
        .query_row(META_GET, ["tables"], |r| r.get(0))
        .optional()
        .map_err(fail)?
        .flatten();
    let broken = |reason: String| Error::Data {
        table: META_TABLE.into(),
        reason,
    };
    let value = value.ok_or_else(|| broken("no table list recorded: run install again".into()))?;
    serde_json::from_str(&value)
        .map(Some)
        .map_err(|e| broken(format!("unreadable table list: {e}")))
}

/// An object sqlite2pg installed, as `sqlite_schema` lists it.
pub(super) struct OwnObject {
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) sql: String,
}

pub(super) fn own_objects(conn: &Connection) -> rusqlite::Result<Vec<OwnObject>> {
    let mut stmt = conn.prepare(OWN_OBJECTS)?;
    let rows = stmt.query_map([], |r| {
        Ok(OwnObject {
            kind: r.get(0)?,
            name: r.get(1)?,
            sql: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        })
    })?;
    rows.collect()
}
