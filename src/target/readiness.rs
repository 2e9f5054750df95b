//! Whether the PostgreSQL target can receive the migration: it answers, speaks UTF-8, lets us
//! create in the schema, and does not already hold tables of the same names (snapshot would
//! refuse to overwrite them).

use serde::Serialize;

use super::connect::TargetUrl;
use crate::error::{Error, Result};

const SERVER_FACTS: &str = "SELECT version(), current_setting('server_version_num')::int, \
     pg_encoding_to_char(encoding), current_user, current_database() \
     FROM pg_database WHERE datname = current_database()";
const SCHEMA_FACTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
     CASE WHEN EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) \
          THEN has_schema_privilege($1, 'CREATE') ELSE false END, \
     has_database_privilege(current_database(), 'CREATE')";
const EXISTING_TABLES: &str = "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relname = ANY($2) ORDER BY 1";

/// The oldest PostgreSQL sqlite2pg supports: 12 (generated columns, `numeric` infinity from 14 is
/// only needed when the source holds infinite reals).
pub const MIN_SERVER_VERSION_NUM: i32 = 120_000;

#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub version: String,
    pub version_num: i32,
    pub server_encoding: String,
    pub user: String,
    pub database: String,
    pub schema: String,
    pub schema_exists: bool,
    /// Can create tables in the schema (or create the schema when it does not exist).
    pub can_create_tables: bool,
    /// Can create schemas in the database (sqlite2pg keeps its state and quarantine in `sqlite2pg`).
    pub can_create_schema: bool,
    /// Target tables (after name folding) that already exist in the schema.
    pub existing_tables: Vec<String>,
}

impl TargetReport {
    /// Problems that make the target unusable, each a sentence that says what to do.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.version_num < MIN_SERVER_VERSION_NUM {
            out.push(format!(
                "PostgreSQL {} is too old: sqlite2pg needs 12 or newer",
                self.version
            ));
        }
        if self.server_encoding != "UTF8" {
            out.push(format!(
                "database {:?} uses encoding {}: create it with ENCODING 'UTF8' so every SQLite text fits",
                self.database, self.server_encoding
            ));
        }
        if !self.can_create_tables {
            out.push(format!(
                "user {:?} cannot create tables in schema {:?}: GRANT CREATE ON {} TO {}",
                self.user,
                self.schema,
                if self.schema_exists {
                    format!("SCHEMA {}", self.schema)
                } else {
                    format!("DATABASE {}", self.database)
                },
                self.user
            ));
        }
        if !self.existing_tables.is_empty() {
            out.push(format!(
                "schema {:?} already holds {} table(s) with the names the migration will create ({}): \
                 snapshot refuses to overwrite them; use another --schema or drop them",
                self.schema,
                self.existing_tables.len(),
                self.existing_tables.join(", ")
            ));
        }
        out
    }
}

/// Connects and inspects the target. `table_names` are the target names the migration creates.
pub async fn inspect(
    url: &TargetUrl,
    schema: &str,
    table_names: &[String],
) -> Result<TargetReport> {
    let client = url.connect().await?;
    let err = |op| {
        move |source| Error::Target {
            op,
            table: None,
            source,
        }
    };
    let facts = client
        .query_one(SERVER_FACTS, &[])
        .await
        .map_err(err("read server facts"))?;
    let privileges = client
        .query_one(SCHEMA_FACTS, &[&schema])
        .await
        .map_err(err("check privileges"))?;
    let existing = client
        .query(EXISTING_TABLES, &[&schema, &table_names])
        .await
        .map_err(err("list existing tables"))?;
    let schema_exists: bool = privileges.get(0);
    let can_create_schema: bool = privileges.get(2);
    Ok(TargetReport {
        target: url.redacted(),
        version: facts.get(0),
        version_num: facts.get(1),
        server_encoding: facts.get(2),
        user: facts.get(3),
        database: facts.get(4),
        schema: schema.to_string(),
        schema_exists,
        can_create_tables: if schema_exists {
            privileges.get(1)
        } else {
            can_create_schema
        },
        can_create_schema,
        existing_tables: existing.iter().map(|r| r.get(0)).collect(),
    })
}
