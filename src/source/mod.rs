//! The SQLite side: opening the application's database without disturbing it, reading its
//! schema, profiling the values actually stored, ordering tables by foreign keys and taking a
//! verified online backup. Keeps promise 4 ("the source is respected"): everything here reads;
//! connections use a busy timeout so the application never fails on a lock we hold.

pub mod backup;
pub mod capture;
pub mod introspect;
pub mod order;
pub mod profile;
pub mod schema_change;
pub mod view;
pub mod watcher;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// How long a sqlite2pg connection waits for the application's locks before giving up. Five
/// seconds: longer than any sane application transaction, short enough to report a stuck writer.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The 16 bytes every SQLite 3 database file starts with.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Opens the application's database read-only, after checking that it exists and is a SQLite
/// file (a clear error beats SQLite's "file is not a database" at the first query).
pub fn open_read_only(path: &Path) -> Result<Connection> {
    check_header(path)?;
    let conn = open_with(path, OpenFlags::SQLITE_OPEN_READ_ONLY, "open")?;
    // Fail here, with a precise message, if the header is fine but the schema is unreadable.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|source| classify_open_error(path, source))?;
    Ok(conn)
}

fn check_header(path: &Path) -> Result<()> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        op: "read the source database",
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Err(Error::SourceNotSqlite {
            path: path.to_path_buf(),
            detail: "it is a directory".into(),
        });
    }
    let mut header = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(|source| Error::Io {
        op: "open the source database",
        path: path.to_path_buf(),
        source,
    })?;
    let read = file.read(&mut header).map_err(|source| Error::Io {
        op: "read the source database",
        path: path.to_path_buf(),
        source,
    })?;
    if read == 0 {
        return Err(Error::SourceNotSqlite {
            path: path.to_path_buf(),
            detail: "the file is empty".into(),
        });
    }
    if read < 16 || &header != SQLITE_HEADER {
        return Err(Error::SourceNotSqlite {
            path: path.to_path_buf(),
            detail: "it does not start with the SQLite 3 header".into(),
        });
    }
    Ok(())
}

/// Opens the application's database for sqlite2pg's own objects (capture triggers, its change
/// table): never used to write the application's tables.
pub fn open_read_write(path: &Path) -> Result<Connection> {
    check_header(path)?;
    open_with(path, OpenFlags::SQLITE_OPEN_READ_WRITE, "open for writing")
}

/// The `-wal` file beside a database (it exists only in WAL mode, while connections are open
/// or a checkpoint has not truncated it).
pub fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_os_string();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Opens `path` with `flags` (no mutex: every connection stays on one thread) and the busy
/// timeout every sqlite2pg connection uses.
pub(crate) fn open_with(path: &Path, flags: OpenFlags, op: &'static str) -> Result<Connection> {
    let err = |op| {
        move |source| Error::Source {
            op,
            path: path.to_path_buf(),
            table: None,
            source,
        }
    };
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(err(op))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(err("set busy timeout"))?;
    Ok(conn)
}

/// Turns SQLite's codes for damaged files into the error that says so.
pub(crate) fn classify_open_error(path: &Path, source: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt) => Error::SourceCorrupt {
            path: path.to_path_buf(),
            detail: source.to_string(),
        },
        Some(ErrorCode::NotADatabase) => Error::SourceNotSqlite {
            path: path.to_path_buf(),
            detail: source.to_string(),
        },
        _ => Error::Source {
            op: "read the schema",
            path: path.to_path_buf(),
            table: None,
            source,
        },
    }
}

/// Quotes an identifier for SQLite (double quotes, embedded quotes doubled).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
