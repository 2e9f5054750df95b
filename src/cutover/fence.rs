//! The fence: what cutover leaves in SQLite so that the old database can never silently take a
//! write again. In the frozen transaction, the capture triggers are replaced with BEFORE
//! triggers that abort every write to a replicated table, and the cutover record (the report,
//! without the pause) is written into `_sqlite2pg_meta`. Both commit together or not at all, so
//! a crash leaves either no fence or a whole one with its record; the record is what proves,
//! after a crash, that drain, verification and identities all finished (they run before it is
//! written). `rollback` removes all of it with the rest of what sqlite2pg installed (promise 4).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::{source_err, CutoverReport};
use crate::error::{Error, Result};
use crate::source::capture::CUTOVER_RECORD_KEY;
use crate::source::introspect::Table;
use crate::source::quote_ident;

/// Capture triggers: everything sqlite2pg installed as a trigger that is not a fence trigger.
const CAPTURE_TRIGGERS: &str = "SELECT name FROM sqlite_schema WHERE type = 'trigger' \
     AND name GLOB '_sqlite2pg_*' AND name NOT GLOB '_sqlite2pg_fence_*'";
const META_EXISTS: &str =
    "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = '_sqlite2pg_meta'";
const RECORD_GET: &str = "SELECT value FROM _sqlite2pg_meta WHERE key = ?1";
const RECORD_SET: &str = "INSERT OR REPLACE INTO _sqlite2pg_meta (key, value) VALUES (?1, ?2)";

/// Fences SQLite inside the caller's write transaction: drops the capture triggers, creates the
/// fence triggers that are missing and writes `record` (its `fenced_at` is in every fence
/// message). Idempotent: on a fenced database it only repairs what is missing.
pub(super) fn write_fence(
    conn: &Connection,
    tables: &[Table],
    record: &CutoverReport,
    path: &Path,
) -> Result<()> {
    let capture: Vec<String> = {
        let mut stmt = conn
            .prepare(CAPTURE_TRIGGERS)
            .map_err(source_err(path, "list capture triggers"))?;
        let names = stmt
            .query_map([], |r| r.get(0))
            .map_err(source_err(path, "list capture triggers"))?;
        names
            .collect::<rusqlite::Result<_>>()
            .map_err(source_err(path, "list capture triggers"))?
    };
    for name in capture {
        conn.execute_batch(&format!("DROP TRIGGER {}", quote_ident(&name)))
            .map_err(source_err(path, "drop a capture trigger"))?;
    }
    let message = format!(
        "sqlite2pg: this database was migrated to PostgreSQL at {}; write to PostgreSQL instead",
        record.fenced_at
    )
    .replace('\'', "''");
    for t in tables {
        for (op, event) in [("ins", "INSERT"), ("upd", "UPDATE"), ("del", "DELETE")] {
            let name = quote_ident(&format!("_sqlite2pg_fence_{op}_{}", t.name));
            let sql = format!("CREATE TRIGGER IF NOT EXISTS {name} BEFORE {event} ON {} BEGIN SELECT RAISE(ABORT, '{message}'); END", quote_ident(&t.name));
            conn.execute_batch(&sql).map_err(|source| Error::Source {
                op: "create a fence trigger",
                path: path.to_path_buf(),
                table: Some(t.name.clone()),
                source,
            })?;
        }
    }
    let json = serde_json::to_string(record).expect("a cutover report always serialises");
    conn.execute(RECORD_SET, [CUTOVER_RECORD_KEY, &json])
        .map_err(source_err(path, "write the cutover record"))?;
    Ok(())
}

/// The cutover record of a fenced database, or `None` when SQLite is not fenced (capture may
/// be installed or not). A record that does not parse is an error, never "not fenced".
pub(super) fn read_fence(conn: &Connection, path: &Path) -> Result<Option<CutoverReport>> {
    let has_meta: bool = conn
        .query_row(META_EXISTS, [], |r| r.get(0))
        .map_err(source_err(path, "look for the cutover record"))?;
    if !has_meta {
        return Ok(None);
    }
    let json: Option<String> = conn
        .query_row(RECORD_GET, [CUTOVER_RECORD_KEY], |r| r.get(0))
        .optional()
        .map_err(source_err(path, "read the cutover record"))?;
    json.map(|j| {
        serde_json::from_str(&j).map_err(|e| Error::Data {
            table: "_sqlite2pg_meta".into(),
            reason: format!(
                "the cutover record in {} is unreadable ({e}): run `sqlite2pg rollback` (SQLite stays the system of record), then snapshot, sync and cut over again",
                path.display()
            ),
        })
    })
    .transpose()
}
