//! The capture triggers' SQL: key-only AFTER INSERT / UPDATE / DELETE triggers that log
//! `(table, op, key)`, using only what SQLite 3.24 already had (the application's SQLite runs
//! them), with every identifier quoted.

use crate::error::{Error, Result};
use crate::source::introspect::Table;
use crate::source::quote_ident;

/// Names SQLite accepts for the rowid, tried in order for tables without a primary key (a
/// column of the same name hides each one).
const ROWID_ALIASES: [&str; 3] = ["rowid", "_rowid_", "oid"];

/// A column of the logged key: a declared key column, or the rowid under an unhidden alias.
pub(super) enum KeyColumn {
    Named(String),
    Rowid(&'static str),
}

impl KeyColumn {
    pub(super) fn sql(&self) -> String {
        match self {
            KeyColumn::Named(name) => quote_ident(name),
            KeyColumn::Rowid(alias) => (*alias).to_string(),
        }
    }
}

/// What a table's changes are keyed by: its primary key columns, or the rowid.
pub(super) fn key_columns(table: &Table) -> Result<Vec<KeyColumn>> {
    let declared = table.primary_key.columns();
    if !declared.is_empty() {
        return Ok(declared.into_iter().map(KeyColumn::Named).collect());
    }
    let unhidden = ROWID_ALIASES.iter().find(|alias| {
        !table
            .columns
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(alias))
    });
    match unhidden {
        Some(alias) if table.has_rowid() => Ok(vec![KeyColumn::Rowid(alias)]),
        _ => Err(Error::Data {
            table: table.name.clone(),
            reason: "no key to capture changes by: no primary key, and columns named rowid, \
                     _rowid_ and oid hide the rowid"
                .into(),
        }),
    }
}

/// One capture trigger: the table it is on, its name and its exact `CREATE TRIGGER` text (as
/// `sqlite_schema.sql` stores it, so an installed trigger can be compared).
pub(super) struct TriggerDef {
    pub(super) table: String,
    pub(super) name: String,
    pub(super) sql: String,
}

/// `quote(NEW."a") || ',' || quote(NEW."b")`: the key as SQL text.
fn key_expr(row: &str, key: &[KeyColumn]) -> String {
    key.iter()
        .map(|k| format!("quote({row}.{})", k.sql()))
        .collect::<Vec<_>>()
        .join(" || ',' || ")
}

/// The insert, update and delete triggers of one table. The update trigger logs a delete of the
/// old key when the key's text changes (compared as text, so a NOCASE key changing case, or
/// 1 becoming 1.0, still deletes the old key), then the new key.
pub(super) fn table_triggers(table: &Table) -> Result<Vec<TriggerDef>> {
    let key = key_columns(table)?;
    let (new, old) = (key_expr("NEW", &key), key_expr("OLD", &key));
    let tbl = format!("'{}'", table.name.replace('\'', "''"));
    let on = quote_ident(&table.name);
    let log = "INSERT INTO _sqlite2pg_changes (tbl, op, key)";
    let bodies = [
        (
            "ins",
            "INSERT",
            format!("{log} VALUES ({tbl}, 'I', {new});"),
        ),
        (
            "upd",
            "UPDATE",
            format!(
                "{log} SELECT {tbl}, 'D', {old} WHERE ({old}) IS NOT ({new}); \
                 {log} VALUES ({tbl}, 'U', {new});"
            ),
        ),
        (
            "del",
            "DELETE",
            format!("{log} VALUES ({tbl}, 'D', {old});"),
        ),
    ];
    Ok(bodies
        .into_iter()
        .map(|(kind, event, body)| {
            let name = format!("_sqlite2pg_{kind}_{}", table.name);
            let sql = format!(
                "CREATE TRIGGER {} AFTER {event} ON {on} BEGIN {body} END",
                quote_ident(&name)
            );
            TriggerDef {
                table: table.name.clone(),
                name,
                sql,
            }
        })
        .collect())
}

/// `INSERT INTO _sqlite2pg_changes … SELECT` a change row (op `R`, "read again") for every row
/// `table` holds, keyed exactly as its triggers key it: how a table adopted during sync gets
/// its existing rows into the change stream.
pub(super) fn enqueue_every_row(table: &Table) -> Result<String> {
    let key = key_columns(table)?;
    let on = quote_ident(&table.name);
    Ok(format!(
        "INSERT INTO _sqlite2pg_changes (tbl, op, key) SELECT '{}', 'R', {} FROM {on}",
        table.name.replace('\'', "''"),
        key_expr(&on, &key)
    ))
}
