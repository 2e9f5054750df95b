//! Facts about the source file as a whole: versions, page layout, journal mode, integrity and
//! foreign-key consistency.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde::Serialize;

use super::{Finding, Severity};
use crate::error::{Error, Result};

/// Problems listed from `integrity_check` / `foreign_key_check`: enough to act on.
const MAX_LISTED: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct ForeignKeyViolation {
    pub table: String,
    pub rowid: Option<i64>,
    pub parent: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceFacts {
    pub path: PathBuf,
    pub file_bytes: u64,
    pub wal_bytes: Option<u64>,
    /// The SQLite version that last wrote the file (from its header).
    pub written_by_sqlite: String,
    /// The SQLite library sqlite2pg reads it with.
    pub library_sqlite: String,
    pub page_size: u64,
    pub page_count: u64,
    pub freelist_pages: u64,
    pub encoding: String,
    pub journal_mode: String,
    pub foreign_keys_declared: bool,
    /// `["ok"]` or the first problems `PRAGMA integrity_check` reports.
    pub integrity: Vec<String>,
    pub foreign_key_violations: u64,
    pub foreign_key_examples: Vec<ForeignKeyViolation>,
}

fn pragma<T: rusqlite::types::FromSql>(conn: &Connection, name: &str) -> rusqlite::Result<T> {
    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
}

impl SourceFacts {
    pub fn read(conn: &Connection, path: &Path) -> Result<SourceFacts> {
        let err = |op| {
            move |source| Error::Source {
                op,
                path: path.to_path_buf(),
                table: None,
                source,
            }
        };
        let file_bytes = std::fs::metadata(path)
            .map_err(|source| Error::Io {
                op: "stat",
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let (violations, examples) =
            foreign_key_violations(conn).map_err(err("foreign_key_check"))?;
        Ok(SourceFacts {
            path: path.to_path_buf(),
            file_bytes,
            wal_bytes: std::fs::metadata(crate::source::wal_path(path))
                .ok()
                .map(|m| m.len()),
            written_by_sqlite: header_version(path).unwrap_or_else(|| "unknown".into()),
            library_sqlite: rusqlite::version().to_string(),
            page_size: pragma(conn, "page_size").map_err(err("read page_size"))?,
            page_count: pragma(conn, "page_count").map_err(err("read page_count"))?,
            freelist_pages: pragma(conn, "freelist_count").map_err(err("read freelist_count"))?,
            encoding: pragma(conn, "encoding").map_err(err("read encoding"))?,
            journal_mode: pragma::<String>(conn, "journal_mode")
                .map_err(err("read journal_mode"))?
                .to_lowercase(),
            foreign_keys_declared: conn
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE sql LIKE '%REFERENCES%'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(err("look for foreign keys"))?
                > 0,
            integrity: integrity_check(conn)
                .map_err(|source| crate::source::classify_open_error(path, source))?,
            foreign_key_violations: violations,
            foreign_key_examples: examples,
        })
    }

    pub fn integrity_ok(&self) -> bool {
        self.integrity == ["ok"]
    }

    pub fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        let source = || "source".to_string();
        if !self.integrity_ok() {
            out.push(Finding {
                severity: Severity::Error,
                subject: source(),
                message: format!(
                    "PRAGMA integrity_check failed ({}): the file is damaged; restore it from a backup or \
                     repair it (sqlite3 db '.recover') before migrating",
                    self.integrity.join("; ")
                ),
            });
        }
        if self.foreign_key_violations > 0 {
            let first = &self.foreign_key_examples[0];
            out.push(Finding {
                severity: Severity::Attention,
                subject: source(),
                message: format!(
                    "{} row(s) violate foreign keys (e.g. {} rowid {:?} → missing {}): PostgreSQL will refuse \
                     those constraints until the rows are fixed",
                    self.foreign_key_violations, first.table, first.rowid, first.parent
                ),
            });
        }
        if self.journal_mode != "wal" {
            out.push(Finding {
                severity: Severity::Warning,
                subject: source(),
                message: format!(
                    "journal mode is {}: WAL is recommended (PRAGMA journal_mode=WAL), because in WAL mode \
                     the snapshot's long read never blocks the application's writers and sync can follow \
                     the -wal file; in {} mode a long read blocks writers",
                    self.journal_mode, self.journal_mode
                ),
            });
        }
        out
    }
}

fn integrity_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA integrity_check({MAX_LISTED})"))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

fn foreign_key_violations(conn: &Connection) -> rusqlite::Result<(u64, Vec<ForeignKeyViolation>)> {
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let mut rows = stmt.query([])?;
    let (mut count, mut examples) = (0u64, Vec::new());
    while let Some(r) = rows.next()? {
        count += 1;
        if examples.len() < MAX_LISTED {
            examples.push(ForeignKeyViolation {
                table: r.get(0)?,
                rowid: r.get(1)?,
                parent: r.get(2)?,
            });
        }
    }
    Ok((count, examples))
}

/// The "SQLite version number" field of the database header (offset 96, big-endian).
fn header_version(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(96)).ok()?;
    let mut b = [0u8; 4];
    f.read_exact(&mut b).ok()?;
    let n = u32::from_be_bytes(b);
    (n > 0).then(|| format!("{}.{}.{}", n / 1_000_000, n / 1000 % 1000, n % 1000))
}
