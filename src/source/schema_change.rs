//! Classifying a change of the source schema during sync (`PRAGMA schema_version` moved): the
//! tables sync replicates, as it knows them, against the schema SQLite has now. Two kinds of
//! change are additive and followed on the fly — columns appended to a replicated table
//! (`ALTER TABLE … ADD COLUMN`) and a new table with a primary key; everything else that
//! changes what a row holds or how it is identified (a table or column dropped or renamed, a
//! declared type, NOT NULL, DEFAULT, key or generated expression changed, a UNIQUE index created
//! or dropped) is refused with an [`Error::SchemaChange`] naming the table, the column and what
//! changed. Plain (non-unique) indexes, views and the application's own triggers do not change
//! any row, so they are ignored. Pure comparison: reads nothing, decides nothing about
//! PostgreSQL.

use super::introspect::{Column, PrimaryKey, Schema, Table};
use crate::error::{Error, Result};

/// What the current schema adds to the replicated one.
#[derive(Debug, Clone, Default)]
pub struct Additions {
    /// Replicated tables that gained columns at their end: the table as SQLite has it now, and
    /// how many of its columns were there before.
    pub columns: Vec<(Table, usize)>,
    /// Tables to replicate from now on, in the order SQLite lists them.
    pub tables: Vec<Table>,
    /// Every replicated table as SQLite has it now, in the replicated order.
    pub replicated: Vec<Table>,
}

impl Additions {
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty() && self.tables.is_empty()
    }

    /// One line for the log: `users(+2 columns), new table notes`.
    pub fn summary(&self) -> String {
        let columns = self
            .columns
            .iter()
            .map(|(t, before)| format!("{}(+{} columns)", t.name, t.columns.len() - before));
        let tables = self.tables.iter().map(|t| format!("new table {}", t.name));
        columns.chain(tables).collect::<Vec<_>>().join(", ")
    }
}

/// Which tables absent from the replicated set count as new ones to follow.
pub enum NewTables<'a> {
    /// Every table (the snapshot copied every table).
    All,
    /// Only these (the snapshot was limited with `--tables`: tables the user left out, and
    /// tables created later, stay out).
    Only(&'a [String]),
}

/// Compares `replicated` (what sync replicates) with `current` (the schema now). `Ok` lists the
/// additions (possibly none); a change sync cannot follow is an [`Error::SchemaChange`].
pub fn compare(
    replicated: &[Table],
    current: &Schema,
    new_tables: NewTables<'_>,
) -> Result<Additions> {
    let mut additions = Additions::default();
    for old in replicated {
        let Some(now) = current.tables.iter().find(|t| t.name == old.name) else {
            return Err(table_gone(old, replicated, current));
        };
        let added = compare_table(old, now)?;
        if added > 0 {
            additions.columns.push((now.clone(), old.columns.len()));
        }
        additions.replicated.push(now.clone());
    }
    for table in &current.tables {
        let followed = match &new_tables {
            NewTables::All => true,
            NewTables::Only(names) => names.iter().any(|n| n.eq_ignore_ascii_case(&table.name)),
        };
        if followed && !replicated.iter().any(|r| r.name == table.name) {
            if table.primary_key == PrimaryKey::None {
                return Err(change(
                    table,
                    None,
                    "the table was created without a primary key, so its rows have no stable \
                     identity to replicate by (VACUUM may renumber rowids): give it a primary key"
                        .into(),
                ));
            }
            additions.tables.push(table.clone());
        }
    }
    Ok(additions)
}

fn change(table: &Table, column: Option<&str>, what: String) -> Error {
    Error::SchemaChange {
        table: table.name.clone(),
        column: column.map(str::to_string),
        change: what,
    }
}

/// A replicated table missing now: renamed when exactly one unreplicated table has its
/// columns, else dropped.
fn table_gone(old: &Table, replicated: &[Table], current: &Schema) -> Error {
    let names = |t: &Table| t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let candidates: Vec<&Table> = current
        .tables
        .iter()
        .filter(|t| !replicated.iter().any(|r| r.name == t.name))
        .filter(|t| names(t).starts_with(&names(old)))
        .collect();
    let what = match candidates.as_slice() {
        [renamed] => format!("the table was renamed to {:?}", renamed.name),
        _ => "the table was dropped (or renamed)".to_string(),
    };
    change(old, None, what)
}

/// Checks `now` against `old` and returns how many columns were appended.
fn compare_table(old: &Table, now: &Table) -> Result<usize> {
    for (i, was) in old.columns.iter().enumerate() {
        let Some(is) = now.columns.get(i).filter(|c| c.name == was.name) else {
            return Err(column_gone(old, now, i));
        };
        if let Some(what) = column_difference(was, is) {
            return Err(change(now, Some(&was.name), what));
        }
    }
    if old.primary_key != now.primary_key {
        let what = format!(
            "the primary key changed from {} {:?} to {} {:?}",
            old.primary_key.label(),
            old.primary_key.columns(),
            now.primary_key.label(),
            now.primary_key.columns()
        );
        return Err(change(now, None, what));
    }
    compare_unique_indexes(old, now)?;
    Ok(now.columns.len() - old.columns.len())
}

/// Column `i` of `old` is not where it was: moved (the table was rebuilt), renamed (another
/// new name took its place) or dropped.
fn column_gone(old: &Table, now: &Table, i: usize) -> Error {
    let was = &old.columns[i];
    let what = if let Some(j) = now.columns.iter().position(|c| c.name == was.name) {
        format!(
            "the column moved from position {} to {} (the table was rebuilt)",
            i + 1,
            j + 1
        )
    } else {
        match now.columns.get(i) {
            Some(other) if !old.columns.iter().any(|c| c.name == other.name) => {
                format!("the column was renamed to {:?}", other.name)
            }
            _ => "the column was dropped".to_string(),
        }
    };
    change(now, Some(&was.name), what)
}

/// What changed in a column that kept its name and position, if anything that matters to the
/// rows changed.
fn column_difference(was: &Column, is: &Column) -> Option<String> {
    if was.declared_type != is.declared_type {
        return Some(format!(
            "its declared type changed from {:?} to {:?}",
            was.declared_type, is.declared_type
        ));
    }
    if was.not_null != is.not_null {
        let verb = if is.not_null { "added" } else { "removed" };
        return Some(format!("NOT NULL was {verb}"));
    }
    if was.default != is.default {
        let show = |d: &Option<String>| d.clone().unwrap_or_else(|| "none".into());
        return Some(format!(
            "its DEFAULT changed from {} to {}",
            show(&was.default),
            show(&is.default)
        ));
    }
    if was.generated != is.generated {
        let show =
            |g: Option<&str>| g.map_or("a stored value".to_string(), |k| format!("{k} generated"));
        return Some(format!(
            "it changed from {} to {}",
            show(was.generated),
            show(is.generated)
        ));
    }
    None
}

/// A UNIQUE index created or dropped changes which rows `INSERT OR REPLACE` evicts (created) or
/// what PostgreSQL refuses (dropped): neither can be replayed.
fn compare_unique_indexes(old: &Table, now: &Table) -> Result<()> {
    let unique = |t: &Table| {
        let mut names: Vec<String> = t
            .indexes
            .iter()
            .filter(|i| i.unique && i.origin != "pk")
            .map(|i| i.name.clone())
            .collect();
        names.sort();
        names
    };
    let (was, is) = (unique(old), unique(now));
    if let Some(created) = is.iter().find(|n| !was.contains(n)) {
        let what = format!(
            "UNIQUE index {created:?} was created (INSERT OR REPLACE would evict rows through it, \
             which the target cannot replay)"
        );
        return Err(change(now, None, what));
    }
    if let Some(dropped) = was.iter().find(|n| !is.contains(n)) {
        let what = format!("UNIQUE index {dropped:?} was dropped (PostgreSQL still enforces it)");
        return Err(change(now, None, what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::introspect::read_schema;
    use rusqlite::Connection;

    const BASE: &str =
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT);
         CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;";

    fn schema(conn: &Connection) -> Schema {
        read_schema(conn, std::path::Path::new(":memory:")).unwrap()
    }

    /// The replicated tables of BASE, and the outcome after `ddl`.
    fn after(ddl: &str) -> Result<Additions> {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(BASE).unwrap();
        let replicated = schema(&conn).tables;
        conn.execute_batch(ddl).unwrap();
        compare(&replicated, &schema(&conn), NewTables::All)
    }

    fn refused(ddl: &str) -> (String, Option<String>, String) {
        match after(ddl) {
            Err(Error::SchemaChange {
                table,
                column,
                change,
            }) => (table, column, change),
            other => panic!("{ddl}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn appended_columns_and_new_tables_are_additions() {
        let a = after(
            "ALTER TABLE users ADD COLUMN nick TEXT DEFAULT 'x';
             ALTER TABLE users ADD COLUMN n INTEGER NOT NULL DEFAULT 0;
             CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);",
        )
        .unwrap();
        assert_eq!(a.columns.len(), 1);
        assert_eq!(a.columns[0].0.name, "users");
        assert_eq!(a.columns[0].1, 3, "three columns were there before");
        assert_eq!(a.tables.len(), 1);
        assert_eq!(a.tables[0].name, "notes");
        assert_eq!(a.replicated.len(), 2);
        assert_eq!(a.summary(), "users(+2 columns), new table notes");
    }

    #[test]
    fn plain_indexes_views_and_triggers_change_nothing() {
        let a = after(
            "CREATE INDEX users_name ON users (name);
             CREATE VIEW v AS SELECT * FROM users;
             CREATE TRIGGER app_t AFTER INSERT ON users BEGIN SELECT 1; END;",
        )
        .unwrap();
        assert!(a.is_empty(), "{a:?}");
    }

    #[test]
    fn dropped_and_renamed_columns_are_refused_by_name() {
        let (table, column, what) = refused("ALTER TABLE users DROP COLUMN name;");
        assert_eq!((table.as_str(), column.as_deref()), ("users", Some("name")));
        assert_eq!(what, "the column was dropped");
        let (_, column, what) = refused("ALTER TABLE users RENAME COLUMN name TO full_name;");
        assert_eq!(column.as_deref(), Some("name"));
        assert_eq!(what, "the column was renamed to \"full_name\"");
        let (_, column, what) = refused("ALTER TABLE users RENAME COLUMN id TO user_id;");
        assert_eq!(column.as_deref(), Some("id"));
        assert!(what.contains("renamed to \"user_id\""), "{what}");
    }

    #[test]
    fn dropped_and_renamed_tables_are_refused() {
        let (table, column, what) = refused("DROP TABLE kv;");
        assert_eq!((table.as_str(), column), ("kv", None));
        assert_eq!(what, "the table was dropped (or renamed)");
        let (table, _, what) = refused("ALTER TABLE kv RENAME TO store;");
        assert_eq!(table, "kv");
        assert_eq!(what, "the table was renamed to \"store\"");
    }

    #[test]
    fn a_rebuilt_table_names_what_changed() {
        let (table, column, what) = refused(
            "CREATE TABLE users_new (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name INTEGER);
             INSERT INTO users_new SELECT * FROM users; DROP TABLE users;
             ALTER TABLE users_new RENAME TO users;",
        );
        assert_eq!((table.as_str(), column.as_deref()), ("users", Some("name")));
        assert_eq!(
            what,
            "its declared type changed from \"TEXT\" to \"INTEGER\""
        );
        let (_, column, what) = refused(
            "CREATE TABLE kv2 (k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID; DROP TABLE kv;
             ALTER TABLE kv2 RENAME TO kv;",
        );
        assert_eq!(column.as_deref(), Some("v"));
        assert_eq!(what, "NOT NULL was added");
        let (_, column, what) = refused(
            "CREATE TABLE kv2 (v BLOB, k TEXT PRIMARY KEY) WITHOUT ROWID; DROP TABLE kv;
             ALTER TABLE kv2 RENAME TO kv;",
        );
        assert_eq!(column.as_deref(), Some("k"));
        assert_eq!(
            what,
            "the column moved from position 1 to 2 (the table was rebuilt)"
        );
    }

    #[test]
    fn unique_indexes_and_keyless_tables_are_refused() {
        let (table, column, what) = refused("CREATE UNIQUE INDEX users_name ON users (name);");
        assert_eq!((table.as_str(), column), ("users", None));
        assert!(
            what.starts_with("UNIQUE index \"users_name\" was created"),
            "{what}"
        );
        let (table, _, what) = refused("CREATE TABLE logs (line TEXT);");
        assert_eq!(table, "logs");
        assert!(what.contains("without a primary key"), "{what}");
    }

    #[test]
    fn tables_outside_a_limited_snapshot_are_not_followed() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(BASE).unwrap();
        let replicated: Vec<Table> = schema(&conn)
            .tables
            .into_iter()
            .filter(|t| t.name == "users")
            .collect();
        conn.execute_batch(
            "CREATE TABLE logs (line TEXT); CREATE TABLE t (id INTEGER PRIMARY KEY);",
        )
        .unwrap();
        let only = ["users".to_string()];
        let a = compare(&replicated, &schema(&conn), NewTables::Only(&only)).unwrap();
        assert!(a.is_empty(), "{a:?}");
    }
}
