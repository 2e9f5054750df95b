//! The one error type of sqlite2pg. Every variant names what the operator needs to act on: the
//! operation, the file or (redacted) target, and where it applies the table, row key and column.
//! `kind()` classifies an error (transient, fatal) and `hint()` says what to do about it. Keeps
//! promise 3 ("nothing lost") honest: errors are returned, never logged and skipped.

use std::path::PathBuf;

/// Exit code: the command did what was asked.
pub const EXIT_OK: i32 = 0;
/// Exit code: the command failed; the message says why and what to do.
pub const EXIT_ERROR: i32 = 1;
/// Exit code: the command line or the config file is wrong.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the command finished, but the data needs attention (problems found by `check`,
/// quarantined rows, differences).
pub const EXIT_ATTENTION: i32 = 3;

/// Boxed cause for errors whose source type varies (TLS, certificate parsing).
pub type BoxedCause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {field}: {reason}")]
    Config { field: String, reason: String },

    #[error("cannot {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is not a SQLite database ({detail})", path.display())]
    SourceNotSqlite { path: PathBuf, detail: String },

    #[error("SQLite database {} is corrupt: {detail}", path.display())]
    SourceCorrupt { path: PathBuf, detail: String },

    #[error("SQLite {op} failed on {}{}", path.display(), table.as_deref().map(|t| format!(" (table {t:?})")).unwrap_or_default())]
    Source {
        op: &'static str,
        path: PathBuf,
        table: Option<String>,
        #[source]
        source: rusqlite::Error,
    },

    #[error("invalid PostgreSQL target {target}: {reason}")]
    TargetUrl { target: String, reason: String },

    #[error("cannot connect to PostgreSQL at {target}")]
    TargetConnect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("PostgreSQL {op} failed{}", table.as_deref().map(|t| format!(" (table {t:?})")).unwrap_or_default())]
    Target {
        op: &'static str,
        table: Option<String>,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("TLS setup for PostgreSQL failed: {reason}")]
    Tls {
        reason: String,
        #[source]
        source: Option<BoxedCause>,
    },

    /// The data itself is not what the operation needs (a row stream out of key order, a
    /// malformed COPY stream); names the table.
    #[error("table {table:?}: {reason}")]
    Data { table: String, reason: String },

    /// The source schema changed in a way sync cannot replay (anything but a column added at the
    /// end of a replicated table or a new table with a primary key): names the table, the
    /// column when there is one, and what changed.
    #[error("the source schema changed in a way sync cannot follow: table {table:?}{}: {change}", column.as_deref().map(|c| format!(", column {c:?}")).unwrap_or_default())]
    SchemaChange {
        table: String,
        column: Option<String>,
        change: String,
    },

    /// The schema moved while changes were being read with the definitions of an earlier
    /// version (their row images would not match): nothing of that read was kept.
    #[error("the schema of {} changed (schema_version {from} to {to}) while its changes were being read", path.display())]
    SchemaMoved { path: PathBuf, from: i64, to: i64 },

    #[error("private PostgreSQL cluster: {op} failed: {detail}")]
    Cluster { op: &'static str, detail: String },

    #[error("sample application: {op} failed on {}", path.display())]
    SampleApp {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("change log {op} failed on {}", path.display())]
    ChangeLog {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: sled::Error,
    },

    /// The change log's store of changed keys (a SQLite file of the tool's own).
    #[error("changed-key store: {op} failed on {}", path.display())]
    ChangedKeys {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// A change-log record that does not decode: names the file, the tree and the seq.
    #[error("change log {}: {tree} record{} is corrupt: {reason}", path.display(), seq.map(|s| format!(" at seq {s}")).unwrap_or_default())]
    ChangeLogCorrupt {
        path: PathBuf,
        tree: &'static str,
        seq: Option<u64>,
        reason: String,
    },
}

/// How the caller should treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Retrying later may succeed (network, server restart, lock held by the application).
    Transient,
    /// Retrying will not help until the operator changes something.
    Fatal,
    /// The user's input (flags, config) is wrong.
    Usage,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } | Error::TargetUrl { .. } => ErrorKind::Usage,
            Error::TargetConnect { source, .. } | Error::Target { source, .. }
                if transient_pg(source) =>
            {
                ErrorKind::Transient
            }
            Error::Source { source, .. } if is_sqlite_busy(source) => ErrorKind::Transient,
            _ => ErrorKind::Fatal,
        }
    }

    /// True when retrying after a pause may succeed (see [`ErrorKind::Transient`]).
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self.kind() {
            ErrorKind::Usage => EXIT_USAGE,
            _ => EXIT_ERROR,
        }
    }

    /// What the operator can do about it, in one sentence.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            Error::Config { .. } => "fix the flag or the key in the config file and run again",
            Error::SourceNotSqlite { .. } => {
                "check --source: it must name the application's SQLite database file"
            }
            Error::SourceCorrupt { .. } => {
                "the source fails SQLite's integrity check: restore it from a backup or repair it \
                 (sqlite3 db '.recover') before migrating; copying a corrupt file would copy the damage"
            }
            Error::Source { source, .. } if is_sqlite_busy(source) => {
                "the application holds a lock; sqlite2pg waited its busy timeout — try again"
            }
            Error::TargetUrl { .. } => {
                "pass --target postgres://USER:PASSWORD@HOST:PORT/DBNAME (or SQLITE2PG_TARGET / DATABASE_URL)"
            }
            Error::TargetConnect { source, .. } => return Some(connect_hint(source)),
            Error::Tls { .. } => {
                "check sslmode and sslrootcert in the target URL; sslmode=verify-full needs the server's CA \
                 certificate and a host name matching the server certificate"
            }
            Error::SchemaChange { .. } => {
                "sync applied every change captured before this one and stopped (it follows ADD \
                 COLUMN and new tables with a primary key by itself): undo the change in SQLite \
                 and run sync again, or take a new snapshot with `sqlite2pg snapshot --fresh`"
            }
            Error::SchemaMoved { .. } => {
                "run `sqlite2pg sync` (it applies additive schema changes), then run this again"
            }
            Error::Cluster { .. } => {
                "install the PostgreSQL server binaries (bin/set-up does) or pass --target"
            }
            Error::ChangeLog { .. } | Error::ChangedKeys { .. } => {
                "check the state directory (free space, permissions); only one sqlite2pg sync may use \
                 its change log at a time"
            }
            Error::ChangeLogCorrupt { .. } => {
                "the change log is damaged and its changes cannot be replayed: run `sqlite2pg diff` to \
                 find what differs, or start again with `sqlite2pg snapshot`"
            }
            _ => return None,
        };
        Some(hint.to_string())
    }
}

/// The server restarted or went away, the connection dropped, or a serialization failure or
/// deadlock rolled the transaction back: retrying after a pause may succeed.
fn transient_pg(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|c| c.is::<std::io::Error>())
        }
        Some(code) => {
            let c = code.code();
            c.starts_with("08")
                || c.starts_with("57P")
                || c == "40001"
                || c == "40P01"
                || c == "53300"
        }
    }
}

fn is_sqlite_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn connect_hint(source: &tokio_postgres::Error) -> String {
    use tokio_postgres::error::SqlState;
    match source.as_db_error().map(|d| d.code().clone()) {
        Some(c) if c == SqlState::INVALID_PASSWORD || c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            "PostgreSQL refused the user name or password in the target URL: check them (the password is not shown here)".into()
        }
        Some(c) if c == SqlState::INVALID_CATALOG_NAME => {
            "the database in the target URL does not exist: create it (createdb NAME) or name another".into()
        }
        Some(_) => "PostgreSQL refused the connection: see the cause above".into(),
        None => "is the server running and reachable at that host and port? (check the URL, the firewall and pg_hba.conf)".into(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
