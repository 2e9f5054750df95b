//! After the load: per table the primary key, CHECK constraints, DEFAULTs and the identity
//! restart, then each index, the foreign keys (added NOT VALID and validated, so violations are
//! reported by key instead of failing the run) and ANALYZE, on two connections; then views.
//! Each fallible statement runs under a savepoint: what PostgreSQL refuses becomes a note in the
//! report with PostgreSQL's own error, and the rest goes on. Each step commits on its own and
//! finds what an interrupted run committed, and a table's status moves forward only when every
//! step before it committed, so a re-run redoes exactly the unfinished steps.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// `maintenance_work_mem` of the post-load sessions together, when the server gives each less
/// than its share: index and key builds of a few million rows then sort in memory instead of on
/// disk (15-25% faster at scale 1 with two sessions of 256 MB). At most this much of the
/// server's memory, for the post-load only.
const POST_LOAD_MAINTENANCE_KB: i64 = 512 * 1024;

/// The most connections the post-load uses (`--jobs`, default = cores, up to this): index
/// builds are CPU-bound on the server, and each connection holds its share of
/// [`POST_LOAD_MAINTENANCE_KB`].
pub const MAX_POST_LOAD_CONNECTIONS: usize = 4;

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

/// Everything after the load, as small steps shared by the connections (see [`Step`]): each
/// table's primary key, CHECKs, DEFAULTs and identity in one transaction; then every foreign
/// key NOT VALID in one short transaction; then each index in its own transaction, the tables'
/// foreign-key validations and ANALYZE, the step heading the longest chain of work first.
/// A connection takes the next step as soon as it is free, so all stay busy until the end
/// (building one table's indexes per connection left one idle for a second or more). Steps are
/// idempotent — what an interrupted run committed is found and kept — and a table's status
/// moves forward only when all of its steps before it committed. Views come last.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: &mut Client,
    others: &mut [Client],
    conn: &Connection,
    file: &Path,
    config: &Config,
    opts: &SnapshotOptions,
    schema: &Schema,
    plans: &[TablePlan],
    (total, done): (&AtomicU64, &AtomicU64),
) -> Result<PostLoad> {
    let share = POST_LOAD_MAINTENANCE_KB / (1 + others.len() as i64);
    raise_maintenance_memory(client, share).await?;
    for other in others.iter() {
        raise_maintenance_memory(other, share).await?;
    }
    let mut statuses = Vec::with_capacity(plans.len());
    for plan in plans {
        statuses.push(status(client, config, plan).await?);
    }
    let ctx = StepContext {
        conn,
        file,
        config,
        opts,
        schema,
        plans,
        checks: RefCell::new(Vec::new()),
    };
    let mut out = PostLoad::default();
    let steps = plan_steps(&ctx, &statuses, &mut out)?;
    total.store(steps.len() as u64, Ordering::Relaxed);
    let queue = RefCell::new(StepQueue::new(steps, |s| step_cost(s, &ctx)));
    let wake = tokio::sync::Notify::new();
    let workers = std::iter::once(&mut *client)
        .chain(others.iter_mut())
        .map(|c| step_worker(c, &ctx, &queue, &wake, done));
    for worker_out in futures_util::future::try_join_all(workers).await? {
        out.merge(worker_out);
    }
    out.fk_violations
        .sort_by_key(|v| plans.iter().position(|p| p.source == v.table));
    let mut tx = client
        .transaction()
        .await
        .map_err(pg_err("begin creating views", "views"))?;
    views(&mut tx, config, opts, schema, &mut out).await?;
    tx.commit().await.map_err(pg_err("commit views", "views"))?;
    Ok(out)
}

/// One step of the post-load, on one table (`usize`: its index in the plans).
#[derive(Debug, Clone)]
enum Step {
    /// In one transaction: with `keys`, the primary key, DEFAULTs, CHECKs and identity; then
    /// `indexes`. The keys step of a table also builds the unique indexes a foreign key refers
    /// to; every other index is a step of its own (builds on one table run side by side).
    Build {
        table: usize,
        keys: bool,
        indexes: Vec<IndexStatement>,
    },
    /// Every foreign key of these (unfinished) tables, NOT VALID: after every keys step (a
    /// key needs its parent's unique index) and before any index build (adding a key locks
    /// child and parent against index builds; validation, later, does not lock the parent).
    ForeignKeys(Vec<usize>),
    /// Every index of the table exists: status `indexed`.
    Indexed(usize),
    /// The table's foreign keys validated (violations listed by key): status `done`.
    Validate(usize),
    /// ANALYZE and autovacuum back on (also after a resumed run: statistics are cheap and must
    /// not be missing).
    Analyze(usize),
}

/// A translated secondary index.
#[derive(Debug, Clone)]
pub(crate) struct IndexStatement {
    /// Its SQLite name.
    source_name: String,
    /// Its PostgreSQL name (in the table's schema), to find one an interrupted run built.
    name: String,
    sql: String,
    /// `index "name"` for notes.
    what: String,
}

/// What the steps share besides the connections.
struct StepContext<'a> {
    conn: &'a Connection,
    file: &'a Path,
    config: &'a Config,
    opts: &'a SnapshotOptions,
    schema: &'a Schema,
    plans: &'a [TablePlan],
    /// Per table, the foreign keys [`Step::ForeignKeys`] left to validate.
    checks: RefCell<Vec<(usize, Vec<FkCheck<'a>>)>>,
}

impl StepContext<'_> {
    fn table(&self, i: usize) -> &Table {
        self.schema
            .table(&self.plans[i].source)
            .expect("plans come from the schema")
    }
}

/// The steps and what each waits for: every table not yet `done` gets its keys (when only
/// `loaded`), indexes, validation and ANALYZE; a `done` table only ANALYZE.
fn plan_steps(
    ctx: &StepContext<'_>,
    statuses: &[Option<TableStatus>],
    out: &mut PostLoad,
) -> Result<Vec<(Step, Vec<usize>)>> {
    // Per loaded table: its keys step and its other indexes.
    let mut loaded = Vec::new();
    let mut steps: Vec<(Step, Vec<usize>)> = Vec::new();
    for (t, status) in statuses.iter().enumerate() {
        if *status != Some(TableStatus::Loaded) {
            continue;
        }
        let source = TableSource {
            conn: ctx.conn,
            file: ctx.file,
            table: ctx.table(t),
        };
        let plan = &ctx.plans[t];
        let early = early_indexes(ctx.schema, plan, source.table);
        let (early, later): (Vec<_>, Vec<_>) =
            index_statements(&source, &ctx.config.schema, ctx.opts.keep_case, plan, out)?
                .into_iter()
                .partition(|i| early.contains(&i.source_name));
        loaded.push((t, steps.len(), later));
        let keys = Step::Build {
            table: t,
            keys: true,
            indexes: early,
        };
        steps.push((keys, Vec::new()));
    }
    let fks = steps.len();
    let unfinished = (0..statuses.len())
        .filter(|&t| statuses[t] != Some(TableStatus::Done))
        .collect();
    steps.push((Step::ForeignKeys(unfinished), (0..fks).collect()));
    let mut loaded = loaded.into_iter().peekable();
    for (t, status) in statuses.iter().enumerate() {
        let mut before = vec![fks];
        if let Some((_, keys, later)) = loaded.next_if(|(l, _, _)| *l == t) {
            let mut built = vec![fks];
            for index in later {
                built.push(steps.len());
                let build = Step::Build {
                    table: t,
                    keys: false,
                    indexes: vec![index],
                };
                steps.push((build, vec![keys, fks]));
            }
            before = vec![steps.len()];
            steps.push((Step::Indexed(t), built));
        }
        if *status != Some(TableStatus::Done) {
            let validate = steps.len();
            steps.push((Step::Validate(t), before));
            before = vec![validate];
        }
        steps.push((Step::Analyze(t), before));
    }
    Ok(steps)
}

/// Unique indexes built with the primary key, before the foreign keys are added: those of a
/// table some foreign key refers to by columns other than its primary key (the key needs a
/// unique index on them to exist). Returns their SQLite names.
fn early_indexes(schema: &Schema, plan: &TablePlan, table: &Table) -> Vec<String> {
    let referenced = schema.tables.iter().any(|t| {
        t.foreign_keys.iter().any(|fk| {
            fk.parent_table.eq_ignore_ascii_case(&plan.source) && !fk.parent_columns.is_empty()
        })
    });
    if !referenced {
        return Vec::new();
    }
    table
        .indexes
        .iter()
        .filter(|i| i.origin != "pk" && i.unique && !i.partial)
        .map(|i| i.name.clone())
        .collect()
}

/// The steps, what each waits for, and which may run next.
struct StepQueue {
    steps: Vec<(Step, Vec<usize>)>,
    state: Vec<StepState>,
    /// Estimated work (in rows read) of each step plus that of the longest chain of steps that
    /// wait for it: the post-load ends when its longest chain does, so that chain goes first.
    chain: Vec<u64>,
    failed: bool,
}

/// Estimated work of a step, in rows read.
fn step_cost(step: &Step, ctx: &StepContext<'_>) -> u64 {
    let rows = |t: usize| ctx.plans[t].rows;
    match step {
        Step::Build { table, .. } => rows(*table) + 1,
        // Validation joins the table with each parent.
        Step::Validate(t) => {
            let parents: u64 = ctx
                .table(*t)
                .foreign_keys
                .iter()
                .filter_map(|fk| {
                    ctx.plans
                        .iter()
                        .find(|p| p.source.eq_ignore_ascii_case(&fk.parent_table))
                })
                .map(|p| p.rows + rows(*t))
                .sum();
            parents + 1
        }
        // ANALYZE reads a sample of 30,000 rows.
        Step::Analyze(t) => rows(*t).min(30_000) + 1,
        Step::ForeignKeys(_) | Step::Indexed(_) => 1,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepState {
    Waiting,
    Running,
    Finished,
}

enum Next {
    Run(usize, Step),
    Wait,
    Stop,
}

impl StepQueue {
    /// `steps` in an order where every step comes after those it waits for, with their costs.
    fn new(steps: Vec<(Step, Vec<usize>)>, cost: impl Fn(&Step) -> u64) -> StepQueue {
        let mut chain: Vec<u64> = steps.iter().map(|(s, _)| cost(s)).collect();
        for i in (0..steps.len()).rev() {
            let longest_after = (i + 1..steps.len())
                .filter(|&j| steps[j].1.contains(&i))
                .map(|j| chain[j])
                .max()
                .unwrap_or(0);
            chain[i] += longest_after;
        }
        StepQueue {
            state: vec![StepState::Waiting; steps.len()],
            steps,
            chain,
            failed: false,
        }
    }

    /// The ready step heading the longest chain of work, else wait for a running step, else
    /// stop.
    fn next(&mut self) -> Next {
        if self.failed {
            return Next::Stop;
        }
        let ready = (0..self.steps.len())
            .filter(|&i| {
                self.state[i] == StepState::Waiting
                    && self.steps[i]
                        .1
                        .iter()
                        .all(|&d| self.state[d] == StepState::Finished)
            })
            .max_by_key(|&i| (self.chain[i], std::cmp::Reverse(i)));
        match ready {
            Some(i) => {
                self.state[i] = StepState::Running;
                Next::Run(i, self.steps[i].0.clone())
            }
            None if self.state.contains(&StepState::Running)
                || self.state.contains(&StepState::Waiting) =>
            {
                Next::Wait
            }
            None => Next::Stop,
        }
    }

    fn finish(&mut self, i: usize, ok: bool) {
        self.state[i] = StepState::Finished;
        self.failed |= !ok;
    }
}

impl Step {
    /// What the step did, for the log.
    fn describe(&self, ctx: &StepContext<'_>) -> String {
        let table = |t: &usize| &ctx.plans[*t].source;
        match self {
            Step::Build {
                table: t,
                keys: true,
                ..
            } => format!(
                "primary key, CHECKs, DEFAULTs and identity of {:?}",
                table(t)
            ),
            Step::Build {
                table: t, indexes, ..
            } => {
                let names: Vec<&str> = indexes.iter().map(|i| i.name.as_str()).collect();
                format!("index {} on {:?}", names.join(", "), table(t))
            }
            Step::ForeignKeys(_) => "foreign keys added NOT VALID".into(),
            Step::Indexed(t) => format!("every index of {:?} built", table(t)),
            Step::Validate(t) => format!("foreign keys of {:?} validated", table(t)),
            Step::Analyze(t) => format!("ANALYZE {:?}", table(t)),
        }
    }
}

/// Runs steps on one connection until none is left (or the other connection failed).
async fn step_worker(
    client: &mut Client,
    ctx: &StepContext<'_>,
    queue: &RefCell<StepQueue>,
    wake: &tokio::sync::Notify,
    done: &AtomicU64,
) -> Result<PostLoad> {
    let mut out = PostLoad::default();
    loop {
        // Created before looking, so a step finishing in between still wakes this worker.
        let finished_elsewhere = wake.notified();
        let next = queue.borrow_mut().next();
        match next {
            Next::Run(i, step) => {
                let started = std::time::Instant::now();
                let result = run_step(client, ctx, &step, &mut out).await;
                queue.borrow_mut().finish(i, result.is_ok());
                wake.notify_waiters();
                result?;
                done.fetch_add(1, Ordering::Relaxed);
                tracing::info!(step = %step.describe(ctx), seconds = started.elapsed().as_secs_f64(), "post-load step done");
                crate::fault::hit(crate::fault::SNAPSHOT_AFTER_POST_LOAD_STEP);
            }
            Next::Wait => finished_elsewhere.await,
            Next::Stop => return Ok(out),
        }
    }
}

async fn run_step(
    client: &mut Client,
    ctx: &StepContext<'_>,
    step: &Step,
    out: &mut PostLoad,
) -> Result<()> {
    let config = ctx.config;
    match step {
        Step::Build {
            table,
            keys,
            indexes,
        } => {
            let plan = &ctx.plans[*table];
            let mut tx = client
                .transaction()
                .await
                .map_err(pg_err("begin post-load", &plan.source))?;
            if *keys {
                let source = TableSource {
                    conn: ctx.conn,
                    file: ctx.file,
                    table: ctx.table(*table),
                };
                let keep_case = ctx.opts.keep_case;
                table_keys(&mut tx, &source, &config.schema, keep_case, plan, out).await?;
            }
            for index in indexes {
                create_index(&mut tx, &config.schema, plan, index, out).await?;
            }
            tx.commit()
                .await
                .map_err(pg_err("commit post-load", &plan.source))
        }
        Step::ForeignKeys(tables) => {
            let checks = add_foreign_keys(client, ctx, tables, out).await?;
            *ctx.checks.borrow_mut() = checks;
            Ok(())
        }
        Step::Indexed(t) => {
            set_status(
                client,
                &config.schema,
                &ctx.plans[*t].target,
                TableStatus::Indexed,
            )
            .await
        }
        Step::Validate(t) => {
            let fks = ctx
                .checks
                .borrow_mut()
                .iter_mut()
                .find(|(i, _)| i == t)
                .map(|(_, c)| std::mem::take(c))
                .unwrap_or_default();
            validate_table(client, ctx, *t, &fks, out).await
        }
        Step::Analyze(t) => analyze(client, config, &ctx.plans[*t]).await,
    }
}

const RELATION_EXISTS: &str = "SELECT to_regclass($1) IS NOT NULL";
const HAS_PRIMARY_KEY: &str = "SELECT EXISTS (SELECT 1 FROM pg_constraint \
     WHERE conrelid = to_regclass($1) AND contype = 'p')";

/// What `sql` (one boolean from one text parameter, `name`) answers: whether something an
/// interrupted run may have created exists.
async fn found(
    tx: &Transaction<'_>,
    sql: &str,
    name: &str,
    op: &'static str,
    subject: &str,
) -> Result<bool> {
    Ok(tx
        .query_one(sql, &[&name])
        .await
        .map_err(pg_err(op, subject))?
        .get(0))
}

/// CREATE INDEX unless an interrupted run built it; PostgreSQL's refusal becomes a note.
async fn create_index(
    tx: &mut Transaction<'_>,
    schema: &str,
    plan: &TablePlan,
    index: &IndexStatement,
    out: &mut PostLoad,
) -> Result<()> {
    let name = qualified(schema, &index.name);
    let exists = found(
        tx,
        RELATION_EXISTS,
        &name,
        "look for an index",
        &plan.source,
    )
    .await?;
    if !exists && attempt(tx, &index.sql, &plan.source, &index.what, out).await? {
        out.indexes_created += 1;
    }
    Ok(())
}

/// Raises the session's `maintenance_work_mem` to `kb` unless the server already gives more.
async fn raise_maintenance_memory(client: &Client, kb: i64) -> Result<()> {
    let err = pg_err("set maintenance_work_mem", "post-load");
    let current: i64 = client
        .query_one(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'maintenance_work_mem'",
            &[],
        )
        .await
        .map_err(pg_err("read maintenance_work_mem", "post-load"))?
        .get(0);
    if current >= kb {
        return Ok(());
    }
    client
        .batch_execute(&format!("SET maintenance_work_mem = '{kb}kB'"))
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

/// ANALYZE, then autovacuum back on (the snapshot keeps it off while it loads and builds; a
/// run interrupted before this step leaves it off until the re-run gets here).
async fn analyze(client: &Client, config: &Config, plan: &TablePlan) -> Result<()> {
    let table = qualified(&config.schema, &plan.target);
    client
        .batch_execute(&format!(
            "ANALYZE {table};\n\
             ALTER TABLE {table} RESET (autovacuum_enabled, toast.autovacuum_enabled);"
        ))
        .await
        .map_err(pg_err("ANALYZE", &plan.source))
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
    table_keys(tx, source, schema, keep_case, plan, out).await?;
    for index in index_statements(source, schema, keep_case, plan, out)? {
        create_index(tx, schema, plan, &index, out).await?;
    }
    Ok(())
}

/// The primary key (refused: an error; kept when an interrupted run added it), DEFAULTs, CHECKs
/// and identity restart of one table, inside `tx`.
async fn table_keys(
    tx: &mut Transaction<'_>,
    source: &TableSource<'_>,
    schema: &str,
    keep_case: bool,
    plan: &TablePlan,
    out: &mut PostLoad,
) -> Result<()> {
    let TableSource { conn, file, table } = *source;
    if let Some(sql) = add_primary_key(schema, plan) {
        let table = qualified(schema, &plan.target);
        let exists = found(
            tx,
            HAS_PRIMARY_KEY,
            &table,
            "look for the primary key",
            &plan.source,
        )
        .await?;
        if !exists && !attempt(tx, &sql, &plan.source, "the primary key", out).await? {
            return Err(Error::Config {
                field: format!("table {:?}", plan.source),
                reason: format!(
                    "PostgreSQL refused its primary key: {}",
                    out.notes.last().map_or("", |n| n.message.as_str())
                ),
            });
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

/// The CREATE INDEX of every secondary index of the table; an index that does not translate
/// becomes a note.
fn index_statements(
    source: &TableSource<'_>,
    schema: &str,
    keep_case: bool,
    plan: &TablePlan,
    out: &mut PostLoad,
) -> Result<Vec<IndexStatement>> {
    let TableSource { conn, file, table } = *source;
    let mut statements = Vec::new();
    for (n, index) in table
        .indexes
        .iter()
        .filter(|i| i.origin != "pk")
        .enumerate()
    {
        match index_sql(conn, file, table, plan, index, n, schema, keep_case)? {
            Ok((name, sql)) => statements.push(IndexStatement {
                source_name: index.name.clone(),
                name,
                sql,
                what: format!("index {:?}", index.name),
            }),
            Err(reason) => out.notes.push(Note {
                subject: plan.source.clone(),
                message: format!("index {:?} was not translated: {reason}", index.name),
            }),
        }
    }
    Ok(statements)
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
) -> Result<std::result::Result<(String, String), String>> {
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
    Ok(translate_index(&parsed, schema, keep_case)
        .map(|sql| (target_name(&parsed.name, keep_case), sql)))
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
        // An interrupted run may have added (and validated) it already.
        let existing: Option<bool> = tx
            .query_opt(
                "SELECT convalidated FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2",
                &[&table_sql, &name],
            )
            .await
            .map_err(pg_err("look for a CHECK constraint", &plan.source))?
            .map(|r| r.get(0));
        if existing == Some(true) {
            continue;
        }
        let sql = format!(
            "ALTER TABLE {table_sql} ADD CONSTRAINT {} CHECK ({expr}) NOT VALID",
            quote_pg(&name)
        );
        if existing.is_some()
            || attempt(
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
async fn add_foreign_keys<'a>(
    client: &mut Client,
    ctx: &StepContext<'a>,
    tables: &[usize],
    out: &mut PostLoad,
) -> Result<Vec<(usize, Vec<FkCheck<'a>>)>> {
    let (config, opts, plans) = (ctx.config, ctx.opts, ctx.plans);
    let mut tx = client
        .transaction()
        .await
        .map_err(pg_err("begin adding foreign keys", "foreign keys"))?;
    let mut checks = Vec::new();
    for &t in tables {
        let plan = &plans[t];
        let table = ctx
            .schema
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
        checks.push((t, table_checks));
    }
    tx.commit()
        .await
        .map_err(pg_err("commit foreign keys", "foreign keys"))?;
    Ok(checks)
}

/// Validates the foreign keys of one table (validation locks only its own table against other
/// validations and index builds; the parent stays free). Violations are listed by key; the
/// table becomes `done`.
async fn validate_table(
    client: &mut Client,
    ctx: &StepContext<'_>,
    t: usize,
    fks: &[FkCheck<'_>],
    out: &mut PostLoad,
) -> Result<()> {
    let schema = &ctx.config.schema;
    let plan = &ctx.plans[t];
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
                    ctx.opts.keep_case,
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
        .map_err(pg_err("commit foreign keys", &plan.source))
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
        let qualified_name = qualified(&config.schema, &name);
        if found(
            tx,
            RELATION_EXISTS,
            &qualified_name,
            "look for a view",
            &view.name,
        )
        .await?
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps of table `t` cost `t`'s weight; `ForeignKeys` and `Indexed` cost 1.
    fn queue(steps: Vec<(Step, Vec<usize>)>, weights: &[u64]) -> StepQueue {
        StepQueue::new(steps, |s| match s {
            Step::Build { table, .. } | Step::Validate(table) | Step::Analyze(table) => {
                weights[*table]
            }
            Step::ForeignKeys(_) | Step::Indexed(_) => 1,
        })
    }

    fn build(table: usize) -> Step {
        Step::Build {
            table,
            keys: false,
            indexes: Vec::new(),
        }
    }

    fn run(q: &mut StepQueue) -> usize {
        match q.next() {
            Next::Run(i, _) => i,
            Next::Wait => panic!("waits"),
            Next::Stop => panic!("stops"),
        }
    }

    #[test]
    fn the_step_heading_the_longest_chain_goes_first_and_waits_are_kept() {
        // 0: a build of table 0 (weight 10); 1: a build of table 1 (weight 3), then 2 and 3
        // after it (weight 3 each): chain 1-2-3 weighs 9 against 0's 10, so 0 first, then 1.
        let steps = vec![
            (build(0), vec![]),
            (build(1), vec![]),
            (Step::Validate(1), vec![1]),
            (Step::Analyze(1), vec![2]),
        ];
        let mut q = queue(steps, &[10, 3]);
        assert_eq!(run(&mut q), 0);
        assert_eq!(run(&mut q), 1);
        assert!(matches!(q.next(), Next::Wait), "2 waits for 1");
        q.finish(1, true);
        assert_eq!(run(&mut q), 2);
        q.finish(0, true);
        assert!(matches!(q.next(), Next::Wait), "3 waits for 2");
        q.finish(2, true);
        assert_eq!(run(&mut q), 3);
        q.finish(3, true);
        assert!(matches!(q.next(), Next::Stop));
    }

    #[test]
    fn a_longer_chain_behind_a_cheap_step_beats_a_costly_lone_step() {
        // Step 1 is cheap (weight 1) but 2 waits for it with weight 50.
        let steps = vec![
            (build(0), vec![]),
            (build(1), vec![]),
            (Step::Validate(2), vec![1]),
        ];
        let mut q = queue(steps, &[10, 1, 50]);
        assert_eq!(run(&mut q), 1);
    }

    #[test]
    fn a_failed_step_stops_every_worker() {
        let steps = vec![(build(0), vec![]), (build(1), vec![])];
        let mut q = queue(steps, &[1, 1]);
        let first = run(&mut q);
        q.finish(first, false);
        assert!(matches!(q.next(), Next::Stop));
    }
}
