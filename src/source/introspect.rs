//! Reads the application's schema: tables with their columns, primary key kind, foreign keys and
//! indexes, plus the objects that do not migrate as plain tables (views, triggers, virtual tables
//! and their shadow tables). Plain data out; nothing here decides PostgreSQL types.

use std::path::Path;

use rusqlite::Connection;
use serde::Serialize;

use super::quote_ident;
use crate::error::{Error, Result};

/// Tables SQLite itself and sqlite2pg own; never migrated.
const INTERNAL_PREFIXES: &[&str] = &["sqlite_", "_sqlite2pg_"];

const TABLE_LIST: &str =
    "SELECT name, type, wr, strict FROM pragma_table_list WHERE schema = 'main'";
const SCHEMA_OBJECTS: &str =
    "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema ORDER BY rowid";
const TABLE_XINFO: &str =
    "SELECT name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo(?1)";
const FOREIGN_KEYS: &str = "SELECT id, seq, \"table\", \"from\", \"to\", on_update, on_delete \
     FROM pragma_foreign_key_list(?1) ORDER BY id, seq";
const INDEX_LIST: &str = "SELECT name, \"unique\", origin, partial FROM pragma_index_list(?1)";

/// How a table's rows are identified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PrimaryKey {
    /// `INTEGER PRIMARY KEY`: the column is the rowid.
    IntegerPrimaryKey { column: String },
    /// A declared primary key on a rowid table (composite or not an INTEGER column).
    Declared { columns: Vec<String> },
    /// A `WITHOUT ROWID` table: the primary key is the storage key.
    WithoutRowid { columns: Vec<String> },
    /// No declared primary key: rows only have a rowid, which VACUUM may renumber.
    None,
}

impl PrimaryKey {
    pub fn columns(&self) -> Vec<String> {
        match self {
            PrimaryKey::IntegerPrimaryKey { column } => vec![column.clone()],
            PrimaryKey::Declared { columns } | PrimaryKey::WithoutRowid { columns } => {
                columns.clone()
            }
            PrimaryKey::None => Vec::new(),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            PrimaryKey::IntegerPrimaryKey { .. } => "INTEGER PRIMARY KEY",
            PrimaryKey::Declared { .. } => "PRIMARY KEY",
            PrimaryKey::WithoutRowid { .. } => "WITHOUT ROWID",
            PrimaryKey::None => "none (rowid only)",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub name: String,
    /// The declared type exactly as written (may be empty).
    pub declared_type: String,
    pub not_null: bool,
    pub default: Option<String>,
    /// 1-based position in the primary key, 0 when not part of it.
    pub pk_position: u32,
    /// Generated column: `Some("VIRTUAL")` or `Some("STORED")`.
    pub generated: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub parent_table: String,
    /// Empty when the FK refers to the parent's primary key implicitly.
    pub parent_columns: Vec<String>,
    pub on_update: String,
    pub on_delete: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Index {
    pub name: String,
    pub unique: bool,
    /// `c` = CREATE INDEX, `u` = UNIQUE constraint, `pk` = PRIMARY KEY.
    pub origin: String,
    pub partial: bool,
    pub sql: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    pub primary_key: PrimaryKey,
    pub strict: bool,
    pub autoincrement: bool,
    pub foreign_keys: Vec<ForeignKey>,
    pub indexes: Vec<Index>,
    pub sql: String,
}

impl Table {
    /// True when rows are keyed by the rowid (no WITHOUT ROWID).
    pub fn has_rowid(&self) -> bool {
        !matches!(self.primary_key, PrimaryKey::WithoutRowid { .. })
    }
}

/// A schema object that is not a plain table: what it is and what sqlite2pg will do with it.
#[derive(Debug, Clone, Serialize)]
pub struct OtherObject {
    /// `view`, `trigger`, `virtual table` or `shadow table`.
    pub kind: &'static str,
    pub name: String,
    /// The table it belongs to (triggers, shadow tables).
    pub table: Option<String>,
    pub sql: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Schema {
    pub tables: Vec<Table>,
    pub others: Vec<OtherObject>,
}

impl Schema {
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }
}

/// Reads the whole schema of the `main` database.
pub fn read_schema(conn: &Connection, path: &Path) -> Result<Schema> {
    let err = |op: &'static str, table: Option<&str>| {
        let table = table.map(str::to_string);
        let path = path.to_path_buf();
        move |source| Error::Source {
            op,
            path,
            table,
            source,
        }
    };
    let listed = list_tables(conn).map_err(err("list tables", None))?;
    let objects = list_objects(conn).map_err(err("read sqlite_schema", None))?;
    let mut schema = Schema::default();
    for (name, kind, without_rowid, strict) in listed {
        if INTERNAL_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let sql = objects
            .iter()
            .find(|o| o.1 == name)
            .map(|o| o.3.clone())
            .unwrap_or_default();
        match kind.as_str() {
            "table" => {
                let table = read_table(conn, &name, without_rowid, strict, sql)
                    .map_err(err("read table definition", Some(&name)))?;
                schema.tables.push(table);
            }
            "virtual" => schema.others.push(other("virtual table", name, None, sql)),
            "shadow" => {
                let owner = owner_of_shadow(&name, &objects);
                schema.others.push(other("shadow table", name, owner, sql));
            }
            _ => {}
        }
    }
    for (kind, name, table, sql) in &objects {
        match kind.as_str() {
            "view" => schema
                .others
                .push(other("view", name.clone(), None, sql.clone())),
            "trigger" if !name.starts_with("_sqlite2pg_") => schema.others.push(other(
                "trigger",
                name.clone(),
                Some(table.clone()),
                sql.clone(),
            )),
            _ => {}
        }
    }
    Ok(schema)
}

/// Runs `read` inside one read transaction on `conn` and returns its result with
/// `PRAGMA schema_version` as of that transaction, so what `read` saw (the schema, the values it
/// profiled) belongs to exactly that version.
pub fn at_schema_version<T>(
    conn: &Connection,
    path: &Path,
    read: impl FnOnce(&Connection) -> Result<T>,
) -> Result<(T, i64)> {
    let fail = |op: &'static str| {
        let path = path.to_path_buf();
        move |source| Error::Source {
            op,
            path,
            table: None,
            source,
        }
    };
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Deferred)
        .map_err(fail("begin a schema read"))?;
    let version: i64 = tx
        .query_row("PRAGMA schema_version", [], |r| r.get(0))
        .map_err(fail("read the schema version"))?;
    let out = read(&tx)?;
    tx.commit().map_err(fail("end a schema read"))?;
    Ok((out, version))
}

fn other(kind: &'static str, name: String, table: Option<String>, sql: String) -> OtherObject {
    OtherObject {
        kind,
        name,
        table,
        sql,
    }
}

/// A shadow table is named `<virtual table>_<suffix>`; the longest matching virtual table owns it.
fn owner_of_shadow(name: &str, objects: &[(String, String, String, String)]) -> Option<String> {
    objects
        .iter()
        .filter(|o| o.0 == "table" && o.3.to_ascii_uppercase().starts_with("CREATE VIRTUAL"))
        .map(|o| &o.1)
        .filter(|vt| {
            name.len() > vt.len()
                && name.starts_with(vt.as_str())
                && name.as_bytes()[vt.len()] == b'_'
        })
        .max_by_key(|vt| vt.len())
        .cloned()
}

fn list_tables(conn: &Connection) -> rusqlite::Result<Vec<(String, String, bool, bool)>> {
    let mut stmt = conn.prepare(TABLE_LIST)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    let mut out: Vec<(String, String, bool, bool)> = rows.collect::<rusqlite::Result<_>>()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn list_objects(conn: &Connection) -> rusqlite::Result<Vec<(String, String, String, String)>> {
    let mut stmt = conn.prepare(SCHEMA_OBJECTS)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    rows.collect()
}

fn read_table(
    conn: &Connection,
    name: &str,
    without_rowid: bool,
    strict: bool,
    sql: String,
) -> rusqlite::Result<Table> {
    let columns = read_columns(conn, name)?;
    let mut pk: Vec<&Column> = columns.iter().filter(|c| c.pk_position > 0).collect();
    pk.sort_by_key(|c| c.pk_position);
    let pk_names: Vec<String> = pk.iter().map(|c| c.name.clone()).collect();
    let primary_key = if without_rowid {
        PrimaryKey::WithoutRowid { columns: pk_names }
    } else if pk.len() == 1 && pk[0].declared_type.eq_ignore_ascii_case("INTEGER") {
        PrimaryKey::IntegerPrimaryKey {
            column: pk_names[0].clone(),
        }
    } else if pk.is_empty() {
        PrimaryKey::None
    } else {
        PrimaryKey::Declared { columns: pk_names }
    };
    Ok(Table {
        name: name.to_string(),
        foreign_keys: read_foreign_keys(conn, name)?,
        indexes: read_indexes(conn, name)?,
        autoincrement: sql.to_ascii_uppercase().contains("AUTOINCREMENT"),
        columns,
        primary_key,
        strict,
        sql,
    })
}

fn read_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<Column>> {
    let mut stmt = conn.prepare_cached(TABLE_XINFO)?;
    let rows = stmt.query_map([table], |r| {
        let hidden: i64 = r.get(5)?;
        Ok((
            hidden,
            Column {
                name: r.get(0)?,
                declared_type: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                not_null: r.get(2)?,
                default: r.get(3)?,
                pk_position: r.get(4)?,
                generated: match hidden {
                    2 => Some("VIRTUAL"),
                    3 => Some("STORED"),
                    _ => None,
                },
            },
        ))
    })?;
    // hidden = 1 marks hidden columns of virtual tables; they are not data.
    Ok(rows
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .filter(|(hidden, _)| *hidden != 1)
        .map(|(_, c)| c)
        .collect())
}

fn read_foreign_keys(conn: &Connection, table: &str) -> rusqlite::Result<Vec<ForeignKey>> {
    let mut stmt = conn.prepare_cached(FOREIGN_KEYS)?;
    let mut rows = stmt.query([table])?;
    let mut out: Vec<(i64, ForeignKey)> = Vec::new();
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let from: String = r.get(3)?;
        let to: Option<String> = r.get(4)?;
        if out.last().map(|(last, _)| *last) != Some(id) {
            out.push((
                id,
                ForeignKey {
                    columns: Vec::new(),
                    parent_table: r.get(2)?,
                    parent_columns: Vec::new(),
                    on_update: r.get(5)?,
                    on_delete: r.get(6)?,
                },
            ));
        }
        let fk = &mut out.last_mut().expect("pushed above").1;
        fk.columns.push(from);
        if let Some(to) = to {
            fk.parent_columns.push(to);
        }
    }
    Ok(out.into_iter().map(|(_, fk)| fk).collect())
}

fn read_indexes(conn: &Connection, table: &str) -> rusqlite::Result<Vec<Index>> {
    let mut stmt = conn.prepare_cached(INDEX_LIST)?;
    let rows = stmt.query_map([table], |r| {
        Ok(Index {
            name: r.get(0)?,
            unique: r.get(1)?,
            origin: r.get(2)?,
            partial: r.get(3)?,
            sql: None,
        })
    })?;
    let mut indexes: Vec<Index> = rows.collect::<rusqlite::Result<_>>()?;
    for index in &mut indexes {
        index.sql = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = ?1",
                [&index.name],
                |r| r.get(0),
            )
            .unwrap_or(None);
    }
    indexes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(indexes)
}

/// `SELECT count(*)` of one table.
pub fn row_count(conn: &Connection, table: &str) -> rusqlite::Result<u64> {
    conn.query_row(
        &format!("SELECT count(*) FROM {}", quote_ident(table)),
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
}
