//! After the load: per table, in one transaction, the primary key, unique constraints, indexes,
//! CHECK constraints and the identity restart; then foreign keys (added NOT VALID and validated,
//! so violations are reported by key instead of failing the run); then views; then ANALYZE.
//! Each fallible statement runs under a savepoint: what PostgreSQL refuses becomes a note in the
//! report with PostgreSQL's own error, and the rest goes on. A table's status moves forward only
//! when its transaction commits, so a re-run redoes exactly the unfinished steps.

use std::path::Path;

use rusqlite::Connection;
use serde::Serialize;
use tokio_postgres::{Client, Transaction};

use super::plan::TablePlan;
use super::SnapshotOptions;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::source::introspect::{Index, Schema, Table};
use crate::target::ddl::{
    add_foreign_key, add_primary_key, constraint_name, fk_name, qualified, restart_identity,
    set_defaults,
};
use crate::target::state::{set_status, table_state, TableStatus};
use crate::translate::{
    parse_create_index, parse_create_table, quote_pg, target_name, translate_expr, translate_index,
    translate_view, IndexSql, IndexedColumn,
};

/// Violating keys listed per foreign key: enough to find and fix them.
const MAX_VIOLATIONS_LISTED: i64 = 20;

#[derive(Debug, Clone, Serialize)]
pub struct Note {
    /// The table or view it is about.
    pub subject: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FkViolation {
    pub table: String,
    pub constraint: String,
    pub parent: String,
    /// Violating rows, as JSON arrays of their foreign-key values.
    pub keys: Vec<serde_json::Value>,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct PostLoad {
    pub notes: Vec<Note>,
    pub fk_violations: Vec<FkViolation>,
    pub indexes_created: usize,
    pub views_created: Vec<String>,
}

fn pg_err(op: &'static str, table: &str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let table = Some(table.to_string());
    move |source| Error::Target { op, table, source }
}

/// Everything after the load. Keys and indexes of different tables are built on two
/// connections at once (index builds are the longest step and PostgreSQL runs them per table).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: &mut Client,
    second: &mut Client,
    conn: &Connection,
    file: &Path,
    config: &Config,
    opts: &SnapshotOptions,
    schema: &Schema,
    plans: &[TablePlan],
) -> Result<PostLoad> {
    let (a, b) = split_by_rows(plans);
    let (first, other) = tokio::join!(
        index_tables(client, conn, file, config, opts, schema, &a),
        index_tables(second, conn, file, config, opts, schema, &b)
    );
    let mut out = first?;
    let other = other?;
    out.notes.extend(other.notes);
    out.indexes_created += other.indexes_created;
    for plan in plans {
        let table = schema
            .table(&plan.source)
            .expect("plans come from the schema");
        if status(client, config, plan).await? == Some(TableStatus::Indexed) {
            let mut tx = client
                .transaction()
                .await
                .map_err(pg_err("begin adding foreign keys", &plan.source))?;
            foreign_keys(&mut tx, config, opts, table, plan, plans, &mut out).await?;
            set_status(&tx, &config.schema, &plan.target, TableStatus::Done).await?;
            tx.commit()
                .await
                .map_err(pg_err("commit foreign keys", &plan.source))?;
        }
    }
    let mut tx = client
        .transaction()
        .await
        .map_err(pg_err("begin creating views", "views"))?;
    views(&mut tx, config, opts, schema, &mut out).await?;
    tx.commit().await.map_err(pg_err("commit views", "views"))?;
    for plan in plans {
        client
            .batch_execute(&format!(
                "ANALYZE {}",
                qualified(&config.schema, &plan.target)
            ))
            .await
            .map_err(pg_err("ANALYZE", &plan.source))?;
    }
    Ok(out)
}

/// Two groups of about equal row counts (largest first, each to the lighter group).
fn split_by_rows(plans: &[TablePlan]) -> (Vec<&TablePlan>, Vec<&TablePlan>) {
    let mut sorted: Vec<&TablePlan> = plans.iter().collect();
    sorted.sort_by_key(|p| std::cmp::Reverse(p.rows));
    let (mut a, mut b, mut rows_a, mut rows_b) = (Vec::new(), Vec::new(), 0u64, 0u64);
    for p in sorted {
        if rows_a <= rows_b {
            rows_a += p.rows;
            a.push(p);
        } else {
            rows_b += p.rows;
            b.push(p);
        }
    }
    (a, b)
}

/// Keys, indexes, CHECKs, defaults and identities of `plans`, each table in one transaction.
async fn index_tables(
    client: &mut Client,
    conn: &Connection,
    file: &Path,
    config: &Config,
    opts: &SnapshotOptions,
    schema: &Schema,
    plans: &[&TablePlan],
) -> Result<PostLoad> {
    let mut out = PostLoad::default();
    for plan in plans {
        let table = schema
            .table(&plan.source)
            .expect("plans come from the schema");
        if status(client, config, plan).await? == Some(TableStatus::Loaded) {
            let mut tx = client
                .transaction()
                .await
                .map_err(pg_err("begin post-load", &plan.source))?;
            let keys = TableSource { conn, file, table };
            keys_and_indexes(
                &mut tx,
                &keys,
                &config.schema,
                opts.keep_case,
                plan,
                &mut out,
            )
            .await?;
            set_status(&tx, &config.schema, &plan.target, TableStatus::Indexed).await?;
            tx.commit()
                .await
                .map_err(pg_err("commit post-load", &plan.source))?;
        }
    }
    Ok(out)
}

async fn status(client: &Client, config: &Config, plan: &TablePlan) -> Result<Option<TableStatus>> {
    Ok(table_state(client, &config.schema, &plan.target)
        .await?
        .map(|(_, s)| s))
}

/// Runs `sql` under a savepoint; PostgreSQL's refusal becomes a note instead of an error.
async fn attempt(
    tx: &mut Transaction<'_>,
    sql: &str,
    subject: &str,
    what: &str,
    out: &mut PostLoad,
) -> Result<bool> {
    let sp = tx
        .savepoint("sqlite2pg_step")
        .await
        .map_err(pg_err("open a savepoint", subject))?;
    match sp.batch_execute(sql).await {
        Ok(()) => {
            sp.commit()
                .await
                .map_err(pg_err("release a savepoint", subject))?;
            Ok(true)
        }
        Err(e) => {
            sp.rollback()
                .await
                .map_err(pg_err("roll back a savepoint", subject))?;
            out.notes.push(Note {
                subject: subject.to_string(),
                message: format!("{what} was not created: {}", db_message(&e)),
            });
            Ok(false)
        }
    }
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string())
}

/// Where a table's keys and indexes are read from: the SQLite connection (the snapshot's file,
/// or the live source for a table sync adopts), its path for messages, and the table.
pub(crate) struct TableSource<'a> {
    pub conn: &'a Connection,
    pub file: &'a Path,
    pub table: &'a Table,
}

/// The primary key (refused: an error), indexes, DEFAULTs, CHECKs and identity restart of one
/// table, inside `tx`; what PostgreSQL refuses besides the key becomes a note in `out`. Used by
/// the snapshot after the load and by sync for a table created during sync.
pub(crate) async fn keys_and_indexes(
    tx: &mut Transaction<'_>,
    source: &TableSource<'_>,
    schema: &str,
    keep_case: bool,
    plan: &TablePlan,
    out: &mut PostLoad,
) -> Result<()> {
    let TableSource { conn, file, table } = *source;
    if let Some(sql) = add_primary_key(schema, plan) {
        if !attempt(tx, &sql, &plan.source, "the primary key", out).await? {
            return Err(Error::Config {
                field: format!("table {:?}", plan.source),
                reason: format!(
                    "PostgreSQL refused its primary key: {}",
                    out.notes.last().map_or("", |n| n.message.as_str())
                ),
            });
        }
    }
    for (n, index) in table
        .indexes
        .iter()
        .filter(|i| i.origin != "pk")
        .enumerate()
    {
        match index_sql(conn, file, table, plan, index, n, schema, keep_case)? {
            Ok(sql) => {
                if attempt(
                    tx,
                    &sql,
                    &plan.source,
                    &format!("index {:?}", index.name),
                    out,
                )
                .await?
                {
                    out.indexes_created += 1;
                }
            }
            Err(reason) => out.notes.push(Note {
                subject: plan.source.clone(),
                message: format!("index {:?} was not translated: {reason}", index.name),
            }),
        }
    }
    for (column, sql) in set_defaults(schema, plan) {
        attempt(
            tx,
            &sql,
            &plan.source,
            &format!("the DEFAULT of {column:?}"),
            out,
        )
        .await?;
    }
    check_constraints(tx, keep_case, table, plan, schema, out).await?;
    restart_identities(tx, conn, file, schema, plan).await
}

/// The PostgreSQL CREATE INDEX of a SQLite index: from its SQL when it has one, else (UNIQUE
/// constraints' automatic indexes) from its columns.
#[allow(clippy::too_many_arguments)]
fn index_sql(
    conn: &Connection,
    file: &Path,
    table: &Table,
    plan: &TablePlan,
    index: &Index,
    n: usize,
    schema: &str,
    keep_case: bool,
) -> Result<std::result::Result<String, String>> {
    let parsed = match &index.sql {
        Some(sql) => match parse_create_index(sql) {
            Ok(mut p) => {
                p.name = target_name(&p.name, keep_case);
                p
            }
            Err(reason) => return Ok(Err(reason)),
        },
        None => IndexSql {
            name: constraint_name(&plan.target, &format!("key{}", n + 1)),
            unique: index.unique,
            table: table.name.clone(),
            columns: index_columns(conn, file, table, index)?,
            where_clause: None,
        },
    };
    Ok(translate_index(&parsed, schema, keep_case))
}

fn index_columns(
    conn: &Connection,
    file: &Path,
    table: &Table,
    index: &Index,
) -> Result<Vec<IndexedColumn>> {
    let sql =
        "SELECT name, \"desc\", coll FROM pragma_index_xinfo(?1) WHERE key = 1 ORDER BY seqno";
    let mut stmt = conn.prepare(sql).map_err(|source| Error::Source {
        op: "read index columns",
        path: file.to_path_buf(),
        table: Some(table.name.clone()),
        source,
    })?;
    let rows = stmt
        .query_map([&index.name], |r| {
            let coll: String = r.get(2)?;
            Ok(IndexedColumn {
                expr: r.get(0)?,
                is_column: true,
                collate: (!coll.eq_ignore_ascii_case("BINARY")).then_some(coll),
                desc: r.get(1)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
    rows.map_err(|source| Error::Source {
        op: "read index columns",
        path: file.to_path_buf(),
        table: Some(table.name.clone()),
        source,
    })
}

/// CHECK constraints, translated and added NOT VALID, then validated: an expression PostgreSQL
/// cannot take, or rows violating it, become notes.
async fn check_constraints(
    tx: &mut Transaction<'_>,
    keep_case: bool,
    table: &Table,
    plan: &TablePlan,
    schema: &str,
    out: &mut PostLoad,
) -> Result<()> {
    let parsed = match parse_create_table(&table.sql) {
        Ok(p) => p,
        Err(reason) => {
            out.notes.push(Note {
                subject: plan.source.clone(),
                message: format!("CHECK constraints were not read: {reason}"),
            });
            return Ok(());
        }
    };
    for (n, check) in parsed.checks.iter().enumerate() {
        let name = check
            .name
            .as_deref()
            .map(|c| target_name(c, keep_case))
            .unwrap_or_else(|| constraint_name(&plan.target, &format!("check{}", n + 1)));
        let expr = match translate_expr(&check.expr, keep_case) {
            Ok(e) => e,
            Err(reason) => {
                out.notes.push(Note {
                    subject: plan.source.clone(),
                    message: format!("CHECK ({}) was not translated: {reason}", check.expr),
                });
                continue;
            }
        };
        let table_sql = qualified(schema, &plan.target);
        let sql = format!(
            "ALTER TABLE {table_sql} ADD CONSTRAINT {} CHECK ({expr}) NOT VALID",
            quote_pg(&name)
        );
        if attempt(
            tx,
            &sql,
            &plan.source,
            &format!("CHECK ({})", check.expr),
            out,
        )
        .await?
        {
            let validate = format!(
                "ALTER TABLE {table_sql} VALIDATE CONSTRAINT {}",
                quote_pg(&name)
            );
            attempt(
                tx,
                &validate,
                &plan.source,
                &format!(
                    "validation of CHECK ({}) (it stays NOT VALID: new rows are checked)",
                    check.expr
                ),
                out,
            )
            .await?;
        }
    }
    Ok(())
}

/// Moves each identity past every id SQLite handed out: `max(id)` and, for AUTOINCREMENT
/// tables, `sqlite_sequence` (AUTOINCREMENT never reuses ids; neither may PostgreSQL).
async fn restart_identities(
    tx: &mut Transaction<'_>,
    conn: &Connection,
    file: &Path,
    schema: &str,
    plan: &TablePlan,
) -> Result<()> {
    let Some(col) = plan.columns.iter().find(|c| c.identity) else {
        return Ok(());
    };
    let read_err = |source| Error::Source {
        op: "read the largest id",
        path: file.to_path_buf(),
        table: Some(plan.source.clone()),
        source,
    };
    let max_sql = format!(
        "SELECT max({}) FROM {}",
        crate::source::quote_ident(&col.source),
        crate::source::quote_ident(&plan.source)
    );
    let max_id: Option<i64> = conn
        .query_row(&max_sql, [], |r| r.get(0))
        .map_err(read_err)?;
    let has_sequence: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'",
            [],
            |r| r.get(0),
        )
        .map_err(read_err)?;
    let seq: Option<i64> = if has_sequence {
        conn.query_row(
            "SELECT max(seq) FROM sqlite_sequence WHERE name = ?1",
            [&plan.source],
            |r| r.get(0),
        )
        .map_err(read_err)?
    } else {
        None
    };
    let max = max_id.unwrap_or(0).max(seq.unwrap_or(0));
    let restart = restart_identity(
        schema,
        &plan.target,
        &col.target,
        max.saturating_add(1).max(1),
    );
    tx.batch_execute(&restart)
        .await
        .map_err(pg_err("set the identity", &plan.source))
}

/// Foreign keys: added NOT VALID (deferrable), then validated; violations are listed by key.
async fn foreign_keys(
    tx: &mut Transaction<'_>,
    config: &Config,
    opts: &SnapshotOptions,
    table: &Table,
    plan: &TablePlan,
    plans: &[TablePlan],
    out: &mut PostLoad,
) -> Result<()> {
    let schema = &config.schema;
    for (i, fk) in table.foreign_keys.iter().enumerate() {
        let Some(parent) = plans
            .iter()
            .find(|p| p.source.eq_ignore_ascii_case(&fk.parent_table))
        else {
            continue;
        };
        let sql = add_foreign_key(schema, plan, i, fk, parent, opts.keep_case);
        let what = format!("foreign key to {:?}", fk.parent_table);
        if !attempt(tx, &sql, &plan.source, &what, out).await? {
            continue;
        }
        let name = fk_name(plan, i);
        let validate = format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {}",
            qualified(schema, &plan.target),
            quote_pg(&name)
        );
        let sp = tx
            .savepoint("sqlite2pg_fk")
            .await
            .map_err(pg_err("open a savepoint", &plan.source))?;
        match sp.batch_execute(&validate).await {
            Ok(()) => sp
                .commit()
                .await
                .map_err(pg_err("release a savepoint", &plan.source))?,
            Err(_) => {
                sp.rollback()
                    .await
                    .map_err(pg_err("roll back a savepoint", &plan.source))?;
                let (count, keys) =
                    fk_violations(tx, schema, plan, fk, parent, opts.keep_case).await?;
                out.fk_violations.push(FkViolation {
                    table: plan.source.clone(),
                    constraint: name,
                    parent: parent.source.clone(),
                    keys,
                    count,
                });
            }
        }
    }
    Ok(())
}

async fn fk_violations(
    tx: &mut Transaction<'_>,
    schema: &str,
    plan: &TablePlan,
    fk: &crate::source::introspect::ForeignKey,
    parent: &TablePlan,
    keep_case: bool,
) -> Result<(i64, Vec<serde_json::Value>)> {
    let cols: Vec<String> = fk
        .columns
        .iter()
        .map(|c| quote_pg(&target_name(c, keep_case)))
        .collect();
    let parent_cols: Vec<String> = if fk.parent_columns.is_empty() {
        parent.primary_key.iter().map(|c| quote_pg(c)).collect()
    } else {
        fk.parent_columns
            .iter()
            .map(|c| quote_pg(&target_name(c, keep_case)))
            .collect()
    };
    let join: Vec<String> = cols
        .iter()
        .zip(&parent_cols)
        .map(|(c, p)| format!("p.{p} = c.{c}"))
        .collect();
    let not_null: Vec<String> = cols.iter().map(|c| format!("c.{c} IS NOT NULL")).collect();
    let list: Vec<String> = cols.iter().map(|c| format!("c.{c}")).collect();
    let sql = format!(
        "SELECT to_jsonb(ARRAY[{}]::text[]), count(*) OVER () FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {}) LIMIT {MAX_VIOLATIONS_LISTED}",
        list.join(", "),
        qualified(schema, &plan.target),
        not_null.join(" AND "),
        qualified(schema, &parent.target),
        join.join(" AND ")
    );
    let rows = tx
        .query(&sql, &[])
        .await
        .map_err(pg_err("list foreign-key violations", &plan.source))?;
    let count = rows.first().map_or(0, |r| r.get(1));
    Ok((count, rows.iter().map(|r| r.get(0)).collect()))
}

/// Views in their SQLite order, translated; PostgreSQL's refusal becomes a note.
async fn views(
    tx: &mut Transaction<'_>,
    config: &Config,
    opts: &SnapshotOptions,
    schema: &Schema,
    out: &mut PostLoad,
) -> Result<()> {
    for view in schema.others.iter().filter(|o| o.kind == "view") {
        let name = target_name(&view.name, opts.keep_case);
        let exists: bool = tx
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&qualified(&config.schema, &name)],
            )
            .await
            .map_err(pg_err("look for a view", &view.name))?
            .get(0);
        if exists {
            continue;
        }
        match translate_view(&view.sql, &config.schema, opts.keep_case) {
            Ok(sql) => {
                if attempt(tx, &sql, &view.name, "the view", out).await? {
                    out.views_created.push(view.name.clone());
                }
            }
            Err(reason) => out.notes.push(Note {
                subject: view.name.clone(),
                message: format!("the view was not translated: {reason}"),
            }),
        }
    }
    Ok(())
}
