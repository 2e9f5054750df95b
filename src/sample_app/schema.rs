//! The sample application's schema: seven tables with foreign keys (some cascading), a CHECK
//! constraint, an AUTOINCREMENT key, a text key in a WITHOUT ROWID table, and indexes of the
//! kinds a migrator must carry over (composite, partial, COLLATE NOCASE, unique). Declared types
//! are the loose ones real apps use (DATETIME, BOOLEAN, JSON, NUMERIC), so the migrator has to
//! profile the values to pick PostgreSQL types.

/// The tables, created in this order (FK dependency order: parents first).
pub(crate) const CREATE_TABLES: &str = "
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    display_name TEXT,
    created_at DATETIME NOT NULL,
    is_admin BOOLEAN NOT NULL DEFAULT 0,
    locale TEXT DEFAULT 'en',
    last_login_at DATETIME
);
CREATE TABLE tool_configs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    config JSON NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT 1,
    updated_at DATETIME,
    UNIQUE (user_id, name)
);
CREATE TABLE oauth_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    provider TEXT NOT NULL,
    access_token TEXT NOT NULL,
    refresh_token TEXT,
    expires_at INTEGER,
    scopes TEXT,
    created_at DATETIME NOT NULL
);
CREATE TABLE rate_limits (
    key TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    reset_at DATETIME NOT NULL
) WITHOUT ROWID;
CREATE TABLE app_state (
    key TEXT PRIMARY KEY,
    value JSON
);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    user_id INTEGER REFERENCES users(id),
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    payload JSON,
    scheduled_at DATETIME,
    attempts INTEGER NOT NULL DEFAULT 0,
    priority NUMERIC,
    result BLOB,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE job_history (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    at DATETIME NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    note TEXT
);
";

/// Secondary indexes, created after the bulk load (faster than maintaining them row by row).
pub(crate) const CREATE_INDEXES: &str = "
CREATE INDEX users_email_nocase ON users(email COLLATE NOCASE);
CREATE INDEX oauth_tokens_user ON oauth_tokens(user_id);
CREATE INDEX jobs_status_scheduled ON jobs(status, scheduled_at);
CREATE INDEX jobs_user ON jobs(user_id);
CREATE INDEX jobs_queued ON jobs(scheduled_at) WHERE status = 'queued';
CREATE INDEX job_history_job ON job_history(job_id);
";

pub(crate) const INSERT_USER: &str = "INSERT INTO users \
    (id, email, display_name, created_at, is_admin, locale, last_login_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

pub(crate) const INSERT_TOOL_CONFIG: &str = "INSERT INTO tool_configs \
    (user_id, name, config, enabled, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)";

pub(crate) const INSERT_TOKEN: &str = "INSERT INTO oauth_tokens \
    (user_id, provider, access_token, refresh_token, expires_at, scopes, created_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

pub(crate) const INSERT_RATE_LIMIT: &str =
    "INSERT INTO rate_limits (key, tokens, reset_at) VALUES (?1, ?2, ?3)";

pub(crate) const INSERT_APP_STATE: &str = "INSERT INTO app_state (key, value) VALUES (?1, ?2)";

pub(crate) const INSERT_JOB: &str = "INSERT INTO jobs \
    (id, user_id, kind, status, payload, scheduled_at, attempts, priority, result, created_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

pub(crate) const INSERT_HISTORY: &str = "INSERT INTO job_history \
    (job_id, at, from_status, to_status, note) VALUES (?1, ?2, ?3, ?4, ?5)";

/// `app_state` keys every generated database has; the live writer updates these.
pub(crate) const WELL_KNOWN_STATE_KEYS: &[&str] = &[
    "feature_flags",
    "maintenance_mode",
    "schema_version",
    "stats:daily",
    "cron:last_run:cleanup",
];
