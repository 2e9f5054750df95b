//! `sqlite2pg snapshot`: the schema translated and every table bulk-copied into PostgreSQL from
//! one consistent view of the source (the live file through one read view, or a verified online
//! backup), then keys, indexes, foreign keys, identities, views and statistics after the load.
//! Re-running resumes from what the target recorded (same backup; a live read starts over) and
//! never touches a table sqlite2pg did not create, unless told to. Keeps promise 3: a value that
//! does not fit is quarantined and counted, never dropped.

pub mod copy;
pub mod plan;
pub(crate) mod post_load;
mod report;
mod state_file;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::Client;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::source::backup::StructureCheck;
use crate::source::introspect::{read_schema, Schema, Table};
use crate::source::order::migration_order;
use crate::source::profile::{declared_profile, is_overridden, profile_table};
use crate::target::ddl::{create_table, qualified};
use crate::target::state::{
    ensure_state, finish_load, ranges_done, snapshot_misfit_columns, start_table, table_state,
    TableStatus,
};
use copy::{run_jobs, CopyJob, CopySettings};
use plan::{check_table_names, plan_table, TablePlan};
pub use report::{render_summary, SnapshotReport, TableSummary};
use state_file::SnapshotSource;
pub use state_file::{read_snapshot_record, SnapshotRecord};

/// Rows per rowid range when a large table is split for parallel copy: big enough that the
/// per-COPY overhead vanishes, small enough that two workers share a 1M-row table evenly.
pub const DEFAULT_RANGE_ROWS: u64 = 250_000;

const TARGET_TABLE_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relname = $2)";

#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    pub tables: Option<Vec<String>>,
    pub jobs: usize,
    pub batch_size: usize,
    pub keep_case: bool,
    pub allow_rowid_key: bool,
    pub drop_existing: bool,
    /// Ignore an unfinished earlier snapshot and start from a new backup.
    pub fresh: bool,
    pub validate: bool,
    /// Install change capture (triggers + change table) before the snapshot reads, so sync can
    /// follow every later change; off for a one-shot copy.
    pub capture: bool,
    /// Tables with more rows are split into rowid ranges of about this many rows.
    pub range_rows: u64,
    /// Also run `PRAGMA quick_check` on the backup (see `StructureCheck::None` for why it is off
    /// by default).
    pub check_backup: bool,
    /// Copy from a verified backup even when the live source could be read directly (see
    /// [`SnapshotOptions::reads_live`]).
    pub from_backup: bool,
}

impl SnapshotOptions {
    /// True when the copy may read the live source through one read view instead of a backup:
    /// no `--from-backup`, `--validate` or `--check-backup` (they need the copied state as a
    /// file; `--validate` compares it with the target after the load), and the source in WAL
    /// mode (checked when it opens). It saves writing a copy of the whole file first (0.5 to
    /// 1.4 s of a 6 to 9 s snapshot of the 389 MB sample app in the bench), at two costs: a
    /// re-run after a failure starts over instead of resuming, and the source's `-wal` file
    /// grows until the copy ends.
    pub fn reads_live(&self) -> bool {
        !(self.from_backup || self.validate || self.check_backup)
    }
}

/// Live counters the command line turns into progress bars: rows per table during the copy,
/// then the post-load's steps.
#[derive(Debug, Clone)]
pub struct LoadProgress {
    /// What is counted: `rows`, `steps`.
    pub unit: &'static str,
    /// (table or phase, how many in all, how many done so far); the post-load learns its
    /// number of steps once it has planned them.
    pub tables: Vec<(String, Arc<AtomicU64>, Arc<AtomicU64>)>,
}

/// Runs the snapshot. `watch` is called once when the copy starts and once when the post-load
/// starts, each time on its own thread, with the counters and a flag that turns true when that
/// phase ends.
pub fn run_snapshot(
    config: &Config,
    opts: &SnapshotOptions,
    watch: &(dyn Fn(&LoadProgress, &std::sync::atomic::AtomicBool) + Sync),
) -> Result<SnapshotReport> {
    let started = Instant::now();
    let target = config.require_target()?.clone();
    if opts.capture {
        install_capture(config, opts)?;
    }
    let workers = opts.jobs.max(1);
    let (mut source, mut view) = SnapshotSource::prepare(
        config,
        opts.fresh,
        opts.capture,
        opts.tables.as_deref(),
        match opts.check_backup {
            true => StructureCheck::Quick,
            false => StructureCheck::None,
        },
        opts.reads_live().then_some(workers + 1),
    )?;
    let (conn, readers) = match view.pop() {
        Some(conn) => (conn, copy::Readers::of_view(source.file.clone(), view)),
        None => (
            copy::open_snapshot(&source.file)?,
            copy::Readers::of_file(source.file.clone()),
        ),
    };
    if source.is_live() {
        tracing::info!(source = %source.file.display(), "copying from the live source through one read view (no backup)");
    }
    let schema = read_schema(&conn, &source.file)?;
    let tables = select_tables(&schema, opts.tables.as_deref())?;
    let mut plans = declared_plans(config, opts, &source, &conn, &tables)?;
    check_table_names(&plans)?;
    let runtime = crate::target::connect::client_runtime()?;
    let mut client = runtime.block_on(target.connect())?;
    runtime.block_on(prepare_target(
        &client, config, opts, &conn, &source, &tables, &mut plans,
    ))?;
    let jobs = runtime.block_on(build_jobs(
        &client,
        &conn,
        &source,
        &config.schema,
        &plans,
        opts.range_rows,
    ))?;
    let progress = LoadProgress {
        unit: "rows",
        tables: plans
            .iter()
            .map(|p| {
                let rows = Arc::new(AtomicU64::new(p.rows));
                (p.source.clone(), rows, Arc::new(AtomicU64::new(0)))
            })
            .collect(),
    };
    let settings = CopySettings {
        snapshot_file: source.file.clone(),
        readers: Arc::new(readers),
        target: target.clone(),
        schema: config.schema.clone(),
        batch_rows: opts.batch_size.max(1),
        convert: config.convert,
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let outcomes = std::thread::scope(|s| {
        s.spawn(|| watch(&progress, &done));
        let result = run_jobs(&settings, progress.attach(jobs), workers).and_then(|outcomes| {
            let load = Load {
                runtime: &runtime,
                client: &client,
                conn: &conn,
                source: &source,
                settings: &settings,
                progress: &progress,
            };
            confirm_plans(&load, config, opts, &tables, &mut plans, outcomes)
        });
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        settings.readers.close();
        result
    })?;
    let load_seconds = started.elapsed().as_secs_f64();
    for p in &plans {
        runtime.block_on(finish_load(&client, &config.schema, &p.target))?;
    }
    crate::fault::hit(crate::fault::SNAPSHOT_BEFORE_POST_LOAD);
    let connections = opts.jobs.clamp(1, post_load::MAX_POST_LOAD_CONNECTIONS);
    let mut others = (1..connections)
        .map(|_| runtime.block_on(target.connect()))
        .collect::<Result<Vec<_>>>()?;
    let steps = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let post_progress = LoadProgress {
        unit: "steps",
        tables: vec![(
            "keys, indexes, foreign keys".into(),
            steps.0.clone(),
            steps.1.clone(),
        )],
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let post = std::thread::scope(|s| {
        s.spawn(|| watch(&post_progress, &done));
        let post = runtime.block_on(post_load::run(
            &mut client,
            &mut others,
            &conn,
            &source.file,
            config,
            opts,
            &schema,
            &plans,
            (&steps.0, &steps.1),
        ));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        post
    })?;
    source.verified()?;
    let mut report = runtime.block_on(report::build(
        &client,
        config,
        opts,
        &source,
        &plans,
        &outcomes,
        post,
        load_seconds,
        started,
    ))?;
    if opts.validate {
        report.diff = Some(validate(config, opts, &source, &plans)?);
    }
    source.complete(&report)?;
    Ok(report)
}

/// Plans every table from its declared types (the config's overrides first), without reading
/// a value: the copy converts every value anyway, so it is the copy that confirms the plan
/// ([`confirm_plans`]). Row counts come from `count(*)`.
fn declared_plans(
    config: &Config,
    opts: &SnapshotOptions,
    source: &SnapshotSource,
    conn: &rusqlite::Connection,
    tables: &[Table],
) -> Result<Vec<TablePlan>> {
    tables
        .iter()
        .map(|table| {
            let rows = crate::source::introspect::row_count(conn, &table.name).map_err(|e| {
                Error::Source {
                    op: "count rows",
                    path: source.file.clone(),
                    table: Some(table.name.clone()),
                    source: e,
                }
            })?;
            plan_of(
                config,
                opts,
                table,
                &declared_profile(table, &config.columns, rows),
            )
        })
        .collect()
}

fn plan_of(
    config: &Config,
    opts: &SnapshotOptions,
    table: &Table,
    profile: &crate::source::profile::TableProfile,
) -> Result<TablePlan> {
    plan_table(
        table,
        profile,
        opts.keep_case,
        opts.allow_rowid_key,
        config.convert,
    )
}

/// The plan of a table from the profile of its stored values (the ladder's first type every
/// value fits), as `check` shows it.
fn profiled_plan(
    config: &Config,
    opts: &SnapshotOptions,
    source: &SnapshotSource,
    conn: &rusqlite::Connection,
    table: &Table,
) -> Result<TablePlan> {
    let profile = profile_table(conn, &source.file, table, &config.columns, config.convert)?;
    plan_of(config, opts, table, &profile)
}

/// What a copy needs besides the plans.
struct Load<'a> {
    runtime: &'a tokio::runtime::Runtime,
    client: &'a Client,
    conn: &'a rusqlite::Connection,
    source: &'a SnapshotSource,
    settings: &'a CopySettings,
    progress: &'a LoadProgress,
}

/// After the copy: a table where some value did not fit a type assumed from its declaration is
/// profiled for real. When that profile plans other types (the column widens, nothing is lost),
/// the table is created again and copied again with them; when it plans the same types (no
/// faithful type fits every value), the misfits stay quarantined, exactly as the profile says.
/// Clean tables — nearly all — are read once. Returns the outcomes of the final copies.
fn confirm_plans(
    load: &Load<'_>,
    config: &Config,
    opts: &SnapshotOptions,
    tables: &[Table],
    plans: &mut [TablePlan],
    mut outcomes: Vec<copy::CopyOutcome>,
) -> Result<Vec<copy::CopyOutcome>> {
    for (table, plan) in tables.iter().zip(plans.iter_mut()) {
        // The quarantine, not this run's outcomes: a range committed by an interrupted earlier
        // run counts too.
        let misfits = load
            .runtime
            .block_on(snapshot_misfit_columns(load.client, &plan.source))?;
        let widens = misfits.iter().any(|name| {
            plan.copied().any(|c| {
                &c.source == name
                    && !c.identity
                    && !is_overridden(&config.columns, &plan.source, &c.source)
            })
        });
        if !widens {
            continue;
        }
        let mut full = profiled_plan(config, opts, load.source, load.conn, table)?;
        if same_types(&full, plan) {
            continue;
        }
        tracing::warn!(table = %plan.source, "some values do not fit the declared types: the table is created again with the widened types and copied again");
        let schema = &config.schema;
        load.runtime.block_on(async {
            create(load.client, schema, &mut full).await?;
            start_table(
                load.client,
                schema,
                &full.target,
                &full.source,
                &load.source.fingerprint,
            )
            .await
        })?;
        let jobs = load.runtime.block_on(build_jobs(
            load.client,
            load.conn,
            load.source,
            schema,
            std::slice::from_ref(&full),
            opts.range_rows,
        ))?;
        if let Some(t) = load.progress.tables.iter().find(|t| t.0 == full.source) {
            t.2.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        outcomes.retain(|o| o.table != full.source);
        outcomes.extend(run_jobs(
            load.settings,
            load.progress.attach(jobs),
            opts.jobs,
        )?);
        *plan = full;
    }
    Ok(outcomes)
}

/// True when two plans of one table give every column the same type.
fn same_types(a: &TablePlan, b: &TablePlan) -> bool {
    a.columns.len() == b.columns.len()
        && a.columns.iter().zip(&b.columns).all(|(x, y)| x.ty == y.ty)
}

/// True when the target table holds every planned column with its planned type.
async fn matches_target(
    client: &Client,
    schema: &str,
    table: &Table,
    plan: &TablePlan,
    keep_case: bool,
) -> Result<bool> {
    let Some(map) = crate::target::mapping::map_table(client, schema, table, keep_case).await?
    else {
        return Ok(false);
    };
    Ok(plan.columns.iter().all(|c| {
        map.columns
            .iter()
            .any(|m| m.target == c.target && m.ty == c.ty)
    }))
}

impl LoadProgress {
    /// Gives each job its table's counter.
    fn attach(&self, jobs: Vec<CopyJob>) -> Vec<CopyJob> {
        jobs.into_iter()
            .map(|mut j| {
                j.progress = self
                    .tables
                    .iter()
                    .find(|t| t.0 == j.plan.source)
                    .map(|t| t.2.clone())
                    .unwrap_or_default();
                j
            })
            .collect()
    }
}

/// Installs change capture on the selected tables of the live source, before the snapshot's
/// read transaction opens (promise 1: no gap between the snapshot and sync).
fn install_capture(config: &Config, opts: &SnapshotOptions) -> Result<()> {
    let path = config.require_source()?;
    let live = crate::source::open_read_only(path)?;
    let schema = read_schema(&live, path)?;
    drop(live);
    let tables = select_tables(&schema, opts.tables.as_deref())?;
    if !opts.allow_rowid_key {
        if let Some(t) = tables
            .iter()
            .find(|t| t.primary_key == crate::source::introspect::PrimaryKey::None)
        {
            return Err(Error::Config {
                field: format!("table {:?}", t.name),
                reason: "it has no primary key, so its rows have no stable identity (VACUUM may renumber rowids); add a primary key in SQLite, leave it out with --tables, or pass --allow-rowid-key".into(),
            });
        }
    }
    let conn = crate::source::open_read_write(path)?;
    crate::source::capture::install(&conn, path, &tables)
}

/// `--validate`: the row-by-row diff of the snapshot file (what was copied) against the target.
fn validate(
    config: &Config,
    opts: &SnapshotOptions,
    source: &SnapshotSource,
    plans: &[TablePlan],
) -> Result<crate::diff::DiffReport> {
    let diff_config = config.with_paths(
        source.file.clone(),
        config.state_dir()?,
        config.target.clone(),
    );
    let diff_opts = crate::diff::DiffOptions {
        tables: Some(plans.iter().map(|p| p.source.clone()).collect()),
        keep_case: opts.keep_case,
        ..crate::diff::DiffOptions::default()
    };
    crate::diff::run_diff(&diff_config, &diff_opts)
}

/// The selected tables in migration order; refuses a selection that leaves a foreign key
/// pointing at a table that is not copied.
fn select_tables(schema: &Schema, names: Option<&[String]>) -> Result<Vec<Table>> {
    let order = migration_order(schema);
    let wanted: Option<BTreeSet<String>> =
        names.map(|n| n.iter().map(|s| s.to_lowercase()).collect());
    if let Some(w) = &wanted {
        if let Some(missing) = w.iter().find(|n| schema.table(n).is_none()) {
            return Err(Error::Config {
                field: "--tables".into(),
                reason: format!("no table {missing:?} in the source"),
            });
        }
    }
    let chosen: Vec<Table> = order
        .tables
        .iter()
        .filter_map(|n| schema.table(n))
        .filter(|t| {
            wanted
                .as_ref()
                .is_none_or(|w| w.contains(&t.name.to_lowercase()))
        })
        .cloned()
        .collect();
    let names: BTreeSet<String> = chosen.iter().map(|t| t.name.to_lowercase()).collect();
    for t in &chosen {
        if let Some(fk) = t
            .foreign_keys
            .iter()
            .find(|fk| !names.contains(&fk.parent_table.to_lowercase()))
        {
            return Err(Error::Config {
                field: "--tables".into(),
                reason: format!(
                    "table {:?} has a foreign key to {:?}, which is not selected: add it to --tables so the key has something to point to",
                    t.name, fk.parent_table
                ),
            });
        }
    }
    Ok(chosen)
}

/// Creates the state schema and every target table that is not already loading from this same
/// source snapshot; refuses tables sqlite2pg did not create unless `--drop-existing`.
///
/// A table this same source snapshot already created is kept (its loaded ranges too) when it
/// holds the planned types; when it does not (an earlier run widened it after values did not fit
/// their declared types), the table is planned from its values, which gives those types again.
async fn prepare_target(
    client: &Client,
    config: &Config,
    opts: &SnapshotOptions,
    conn: &rusqlite::Connection,
    source: &SnapshotSource,
    tables: &[Table],
    plans: &mut [TablePlan],
) -> Result<()> {
    let fingerprint = &source.fingerprint;
    ensure_state(client).await?;
    let schema = &config.schema;
    let err = |op, table: &str| {
        let table = Some(table.to_string());
        move |source| Error::Target { op, table, source }
    };
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            crate::translate::quote_pg(schema)
        ))
        .await
        .map_err(err("create the target schema", schema))?;
    for (table, plan) in tables.iter().zip(plans.iter_mut()) {
        let exists: bool = client
            .query_one(TARGET_TABLE_EXISTS, &[schema, &plan.target])
            .await
            .map_err(err("look for the table", &plan.source))?
            .get(0);
        let ours = table_state(client, schema, &plan.target).await?;
        match (exists, &ours) {
            (true, Some((fp, _))) if fp == fingerprint => {
                if matches_target(client, schema, table, plan, opts.keep_case).await? {
                    continue;
                }
                *plan = profiled_plan(config, opts, source, conn, table)?;
                if matches_target(client, schema, table, plan, opts.keep_case).await? {
                    continue;
                }
            }
            (true, None) if !opts.drop_existing => {
                return Err(Error::Config {
                    field: "--schema".into(),
                    reason: format!(
                        "{} already exists and sqlite2pg did not create it: use another --schema, drop it, or pass --drop-existing",
                        qualified(schema, &plan.target)
                    ),
                })
            }
            _ => {}
        }
        create(client, schema, plan).await?;
        start_table(client, schema, &plan.target, &plan.source, fingerprint).await?;
    }
    Ok(())
}

/// Drops and creates one table; when PostgreSQL refuses a generated column's expression, the
/// generated columns become plain columns holding SQLite's values (noted in the report).
async fn create(client: &Client, schema: &str, plan: &mut TablePlan) -> Result<()> {
    // Autovacuum stays off until the post-load has analysed the table: a worker vacuuming a
    // freshly loaded table holds a lock the post-load's key, foreign key and index steps wait
    // on until PostgreSQL cancels the worker after deadlock_timeout (1 s each, seen in 1 of 3
    // runs at scale 1), and the vacuum's work is thrown away.
    let sql = |plan: &TablePlan| {
        let table = qualified(schema, &plan.target);
        format!(
            "DROP TABLE IF EXISTS {table} CASCADE;\n{};\n\
             ALTER TABLE {table} SET (autovacuum_enabled = false, toast.autovacuum_enabled = false);",
            create_table(schema, plan)
        )
    };
    match client.batch_execute(&sql(plan)).await {
        Err(e) if plan.has_generated() => {
            let reason = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string());
            plan.demote_generated(&reason);
            client.batch_execute(&sql(plan)).await
        }
        other => other,
    }
    .map_err(|source| Error::Target {
        op: "create the table",
        table: Some(plan.source.clone()),
        source,
    })
}

/// The copy jobs still to run: whole tables, or rowid ranges of large rowid tables, skipping
/// ranges a previous run committed. Largest first, so the long ones start early.
async fn build_jobs(
    client: &Client,
    conn: &rusqlite::Connection,
    source: &SnapshotSource,
    schema: &str,
    plans: &[TablePlan],
    range_rows: u64,
) -> Result<Vec<CopyJob>> {
    let mut jobs = Vec::new();
    for plan in plans {
        match table_state(client, schema, &plan.target).await? {
            Some((_, TableStatus::Loading)) => {}
            _ => continue,
        }
        let done = ranges_done(client, schema, &plan.target).await?;
        let plan = Arc::new(plan.clone());
        for range in ranges(conn, source, &plan, range_rows)? {
            let job = CopyJob {
                plan: plan.clone(),
                range,
                progress: Arc::default(),
            };
            if !done.contains(&job.range_start()) {
                jobs.push(job);
            }
        }
    }
    jobs.sort_by_key(|j| {
        std::cmp::Reverse(j.range.map_or(j.plan.rows, |(lo, hi)| (hi - lo) as u64))
    });
    Ok(jobs)
}

/// Splits a large rowid table into rowid ranges of about `range_rows` rows.
fn ranges(
    conn: &rusqlite::Connection,
    source: &SnapshotSource,
    plan: &TablePlan,
    range_rows: u64,
) -> Result<Vec<Option<(i64, i64)>>> {
    if !plan.has_rowid || plan.rows <= range_rows {
        return Ok(vec![None]);
    }
    // Two subqueries: SQLite answers a lone min() or max() of the rowid from the b-tree's edge,
    // but `SELECT min(rowid), max(rowid)` scans the whole table.
    let table = crate::source::quote_ident(&plan.source);
    let sql = format!("SELECT (SELECT min(rowid) FROM {table}), (SELECT max(rowid) FROM {table})");
    let path = source.file.clone();
    let (lo, hi): (i64, i64) = conn
        .query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(|e| Error::Source {
            op: "find the rowid range",
            path,
            table: Some(plan.source.clone()),
            source: e,
        })?;
    let parts = plan.rows.div_ceil(range_rows.max(1)).max(1) as i128;
    let width = ((i128::from(hi) - i128::from(lo) + 1) / parts).max(1);
    let mut out = Vec::new();
    let mut start = i128::from(lo);
    while start <= i128::from(hi) {
        let end = (start + width - 1).min(i128::from(hi));
        let end = if out.len() as i128 == parts - 1 {
            i128::from(hi)
        } else {
            end
        };
        out.push(Some((start as i64, end as i64)));
        start = end + 1;
    }
    Ok(out)
}
