//! After the load: per table, in one transaction, the primary key, unique constraints, indexes,
//! CHECK constraints and the identity restart, then ANALYZE; then foreign keys (added NOT VALID
//! and validated, so violations are reported by key instead of failing the run); then views.
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

/// `maintenance_work_mem` of the two post-load sessions, when the server's is lower: index and
/// key builds of a few million rows then sort in memory instead of on disk (15-25% faster at
/// scale 1). Two sessions: at most 512 MB of the server's memory, for the post-load only.
const POST_LOAD_MAINTENANCE_KB: i64 = 256 * 1024;

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
/// connections at once (index builds are the longest step and PostgreSQL runs them per table),
/// each table analysed as soon as its indexes exist; then foreign keys are added NOT VALID in one
/// short transaction and validated table by table, again on both connections.
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
    raise_maintenance_memory(client).await?;
    raise_maintenance_memory(second).await?;
    let (a, b) = split_by_rows(plans);
    let (first, other) = tokio::join!(
        index_tables(client, conn, file, config, opts, schema, &a),
        index_tables(second, conn, file, config, opts, schema, &b)
    );
    let (mut out, mut analyzed) = first?;
    let (other, other_analyzed) = other?;
    out.merge(other);
    analyzed.extend(other_analyzed);
    let mut pending = Vec::new();
    for plan in plans {
        if status(client, config, plan).await? == Some(TableStatus::Indexed) {
            pending.push(plan);
        }
    }
    let checks = add_foreign_keys(client, config, opts, schema, &pending, plans, &mut out).await?;
    let next = std::cell::Cell::new(0usize);
    let (first, other) = tokio::join!(
        validate_tables(client, config, opts, &checks, &next),
        validate_tables(second, config, opts, &checks, &next)
    );
    out.merge(first?);
    out.merge(other?);
    out.fk_violations
        .sort_by_key(|v| plans.iter().position(|p| p.source == v.table));
    let mut tx = client
        .transaction()
        .await
        .map_err(pg_err("begin creating views", "views"))?;
    views(&mut tx, config, opts, schema, &mut out).await?;
    tx.commit().await.map_err(pg_err("commit views", "views"))?;
    for plan in plans.iter().filter(|p| !analyzed.contains(&p.target)) {
        analyze(client, config, plan).await?;
    }
    Ok(out)
}

/// Raises the session's `maintenance_work_mem` to [`POST_LOAD_MAINTENANCE_KB`] unless the
/// server already gives more.
async fn raise_maintenance_memory(client: &Client) -> Result<()> {
    let err = pg_err("set maintenance_work_mem", "post-load");
    let kb: i64 = client
        .query_one(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'maintenance_work_mem'",
            &[],
        )
        .await
        .map_err(pg_err("read maintenance_work_mem", "post-load"))?
        .get(0);
    if kb >= POST_LOAD_MAINTENANCE_KB {
        return Ok(());
    }
    client
        .batch_execute(&format!(
            "SET maintenance_work_mem = '{POST_LOAD_MAINTENANCE_KB}kB'"
        ))
        .await
        .map_err(err)
}

impl PostLoad {
    fn merge(&mut self, other: PostLoad) {
        self.notes.extend(other.notes);
        self.fk_violations.extend(other.fk_violations);
        self.indexes_created += other.indexes_created;
        self.views_created.extend(other.views_created);
    }
}

async fn analyze(client: &Client, config: &Config, plan: &TablePlan) -> Result<()> {
    client
        .batch_execute(&format!(
            "ANALYZE {}",
            qualified(&config.schema, &plan.target)
        ))
        .await
        .map_err(pg_err("ANALYZE", &plan.source))
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

/// Keys, indexes, CHECKs, defaults and identities of `plans`, each table in one transaction,
/// then ANALYZE (statistics also give the foreign-key validation a good plan). Returns the
/// target names of the tables it analysed.
async fn index_tables(
    client: &mut Client,
    conn: &Connection,
    file: &Path,
    config: &Config,
    opts: &SnapshotOptions,
    schema: &Schema,
    plans: &[&TablePlan],
) -> Result<(PostLoad, Vec<String>)> {
    let mut out = PostLoad::default();
    let mut analyzed = Vec::new();
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
            analyze(client, config, plan).await?;
            analyzed.push(plan.target.clone());
        }
    }
    Ok((out, analyzed))
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

/// A foreign key that exists (NOT VALID) and waits for validation.
struct FkCheck<'a> {
    fk: &'a crate::source::introspect::ForeignKey,
    name: String,
    parent: &'a TablePlan,
}

/// Adds the foreign keys of `tables` NOT VALID (deferrable) in one transaction: adding takes
/// locks on child and parent that would make two connections wait on each other, but it reads
/// no rows. A key left by an interrupted run is kept. Returns, per table, the keys to validate.
#[allow(clippy::too_many_arguments)]
async fn add_foreign_keys<'a>(
    client: &mut Client,
    config: &Config,
    opts: &SnapshotOptions,
    schema: &'a Schema,
    tables: &[&'a TablePlan],
    plans: &'a [TablePlan],
    out: &mut PostLoad,
) -> Result<Vec<(&'a TablePlan, Vec<FkCheck<'a>>)>> {
    let mut tx = client
        .transaction()
        .await
        .map_err(pg_err("begin adding foreign keys", "foreign keys"))?;
    let mut checks = Vec::new();
    for &plan in tables {
        let table = schema
            .table(&plan.source)
            .expect("plans come from the schema");
        let existing: Vec<String> = tx
            .query(
                "SELECT conname::text FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'f'",
                &[&qualified(&config.schema, &plan.target)],
            )
            .await
            .map_err(pg_err("look for foreign keys", &plan.source))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut table_checks = Vec::new();
        for (i, fk) in table.foreign_keys.iter().enumerate() {
            let Some(parent) = plans
                .iter()
                .find(|p| p.source.eq_ignore_ascii_case(&fk.parent_table))
            else {
                continue;
            };
            let name = fk_name(plan, i);
            if !existing.contains(&name) {
                let sql = add_foreign_key(&config.schema, plan, i, fk, parent, opts.keep_case);
                let what = format!("foreign key to {:?}", fk.parent_table);
                if !attempt(&mut tx, &sql, &plan.source, &what, out).await? {
                    continue;
                }
            }
            table_checks.push(FkCheck { fk, name, parent });
        }
        checks.push((plan, table_checks));
    }
    tx.commit()
        .await
        .map_err(pg_err("commit foreign keys", "foreign keys"))?;
    checks.sort_by_key(|(p, _)| std::cmp::Reverse(p.rows));
    Ok(checks)
}

/// Validates the foreign keys of the tables in `checks`, taking the next table from `next` until
/// none is left (two of these run at once: validation locks only its own table against other
/// validations). Violations are listed by key; each table becomes `done` with its keys.
async fn validate_tables(
    client: &mut Client,
    config: &Config,
    opts: &SnapshotOptions,
    checks: &[(&TablePlan, Vec<FkCheck<'_>>)],
    next: &std::cell::Cell<usize>,
) -> Result<PostLoad> {
    let mut out = PostLoad::default();
    let schema = &config.schema;
    loop {
        let i = next.get();
        let Some((plan, fks)) = checks.get(i) else {
            return Ok(out);
        };
        next.set(i + 1);
        let mut tx = client
            .transaction()
            .await
            .map_err(pg_err("begin validating foreign keys", &plan.source))?;
        for check in fks {
            let validate = format!(
                "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                qualified(schema, &plan.target),
                quote_pg(&check.name)
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
                    let (count, keys) = fk_violations(
                        &mut tx,
                        schema,
                        plan,
                        check.fk,
                        check.parent,
                        opts.keep_case,
                    )
                    .await?;
                    out.fk_violations.push(FkViolation {
                        table: plan.source.clone(),
                        constraint: check.name.clone(),
                        parent: check.parent.source.clone(),
                        keys,
                        count,
                    });
                }
            }
        }
        set_status(&tx, schema, &plan.target, TableStatus::Done).await?;
        tx.commit()
            .await
            .map_err(pg_err("commit foreign keys", &plan.source))?;
    }
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
