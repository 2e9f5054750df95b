//! `sqlite2pg cutover`: the switch. With sync stopped, it drains what is pending, then freezes
//! the application's writers by taking SQLite's write lock (`BEGIN IMMEDIATE`; writers wait on
//! their busy timeout instead of writing), drains the last changes, proves from PostgreSQL's
//! committed position that everything up to the final change is applied, checks row counts,
//! moves every identity past the largest id SQLite handed out, replaces the capture triggers
//! with fence triggers that make every later write to SQLite fail loudly, and releases the lock.
//! The freeze has a hard bound (`max_pause`): past it, the transaction rolls back — SQLite is
//! untouched, nothing is fenced — and the cutover aborts. Each step is safe to repeat.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pipeline::{drain, prepare};
use crate::source::capture::Capturer;
use crate::source::{open_read_write, quote_ident};
use crate::target::ddl::{qualified, restart_identity};
use crate::translate::target_name;

/// The default bound on the freeze: long enough for a drain of a few thousand changes and the
/// checks, far below the busy timeouts applications use, so no writer fails while it waits.
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(5);
/// The default lag (changes) above which cutover refuses to freeze: a larger backlog would make
/// the pause long; run sync until it is small.
pub const DEFAULT_MAX_LAG: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct CutoverOptions {
    pub max_pause: Duration,
    pub max_lag: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableCount {
    pub table: String,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CutoverReport {
    /// How long application writers were held, in milliseconds.
    pub pause_ms: f64,
    /// The last change sequence applied; PostgreSQL's committed position proves it.
    pub final_seq: u64,
    pub changes_before_freeze: u64,
    pub changes_during_freeze: u64,
    pub tables: Vec<TableCount>,
    /// Identities moved: (table, next id).
    pub identities: Vec<(String, i64)>,
    pub fenced_at: String,
}

fn data_err(reason: impl Into<String>) -> Error {
    Error::Data {
        table: "(cutover)".into(),
        reason: reason.into(),
    }
}

pub fn run_cutover(config: &Config, opts: &CutoverOptions) -> Result<CutoverReport> {
    let mut setup = prepare(config).map_err(|e| match e {
        Error::ChangeLog { op: "open", .. } => data_err("sync is running (it holds the change log): stop it (SIGTERM) and run cutover, which drains itself"),
        other => other,
    })?;
    crate::pipeline::check_schema_applied(&setup)?;
    let mut capturer = Capturer::open(&setup.path, &setup.tables)?;
    capturer.pin_schema(setup.schema_version);
    let applied = setup
        .runtime
        .block_on(crate::target::state::sync_position(&setup.client))?
        .unwrap_or(0) as u64;
    let now_seq = crate::source::capture::max_seq(&crate::source::open_read_only(&setup.path)?)?;
    let pending = now_seq.saturating_sub(applied);
    if pending > opts.max_lag {
        return Err(data_err(format!("{pending} changes are not applied yet (more than --max-lag {}): run sync until the lag is small", opts.max_lag)));
    }
    let (_, before) = drain(&mut setup, &mut capturer, config, now_seq, None)?;
    let conn = open_read_write(&setup.path)?;
    conn.busy_timeout(opts.max_pause)
        .map_err(|source| Error::Source {
            op: "set busy timeout",
            path: setup.path.clone(),
            table: None,
            source,
        })?;
    let started = Instant::now();
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|source| Error::Source {
            op: "freeze writers (BEGIN IMMEDIATE)",
            path: setup.path.clone(),
            table: None,
            source,
        })?;
    let frozen = frozen_steps(
        &mut setup,
        &mut capturer,
        &conn,
        config,
        started + opts.max_pause,
    );
    let report = match frozen {
        Ok(mut report) => {
            conn.execute_batch("COMMIT")
                .map_err(|source| Error::Source {
                    op: "release the freeze",
                    path: setup.path.clone(),
                    table: None,
                    source,
                })?;
            report.pause_ms = started.elapsed().as_secs_f64() * 1000.0;
            report.changes_before_freeze = before;
            report
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(data_err(format!(
                "cutover aborted after {:.0} ms, writers released, SQLite untouched: {e}",
                started.elapsed().as_secs_f64() * 1000.0
            )));
        }
    };
    let state_dir = config.ensure_state_dir()?;
    let path = state_dir.join("cutover-report.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&report).expect("a cutover report always serialises"),
    )
    .map_err(|source| Error::Io {
        op: "write",
        path,
        source,
    })?;
    Ok(report)
}

/// Everything done while writers are held; any error (or the deadline) aborts the cutover.
fn frozen_steps(
    setup: &mut crate::pipeline::SyncSetup,
    capturer: &mut Capturer,
    conn: &rusqlite::Connection,
    config: &Config,
    deadline: Instant,
) -> Result<CutoverReport> {
    let final_seq = crate::source::capture::max_seq(conn)?;
    let (applied, during) = drain(setup, capturer, config, final_seq, Some(deadline))?;
    let committed = setup
        .runtime
        .block_on(crate::target::state::sync_position(&setup.client))?
        .unwrap_or(0) as u64;
    if committed < final_seq || applied < final_seq {
        return Err(data_err(format!(
            "PostgreSQL committed position {committed} is behind the final change {final_seq}"
        )));
    }
    crate::fault::hit(crate::fault::CUTOVER_FROZEN);
    let tables = compare_counts(setup, conn, config)?;
    let identities = move_identities(setup, conn, config)?;
    let fenced_at = chrono::Utc::now().to_rfc3339();
    fence(conn, &setup.tables, &fenced_at, &setup.path)?;
    if Instant::now() > deadline {
        return Err(data_err("the pause bound was reached before the fence"));
    }
    Ok(CutoverReport {
        pause_ms: 0.0,
        final_seq,
        changes_before_freeze: 0,
        changes_during_freeze: during,
        tables,
        identities,
        fenced_at,
    })
}

/// Row counts of every replicated table, SQLite (frozen) against PostgreSQL; any difference
/// aborts (quarantined rows accounted for).
fn compare_counts(
    setup: &mut crate::pipeline::SyncSetup,
    conn: &rusqlite::Connection,
    config: &Config,
) -> Result<Vec<TableCount>> {
    let mut out = Vec::new();
    for t in &setup.tables {
        let source: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {}", quote_ident(&t.name)),
                [],
                |r| r.get(0),
            )
            .map_err(|source| Error::Source {
                op: "count rows",
                path: setup.path.clone(),
                table: Some(t.name.clone()),
                source,
            })?;
        let target_sql = format!(
            "SELECT count(*) FROM {}",
            qualified(&config.schema, &target_name(&t.name, false))
        );
        let pg_err = |source| Error::Target {
            op: "count rows",
            table: Some(t.name.clone()),
            source,
        };
        let target: i64 = setup
            .runtime
            .block_on(setup.client.query_one(&target_sql, &[]))
            .map_err(pg_err)?
            .get(0);
        let quarantined: i64 = setup
            .runtime
            .block_on(setup.client.query_one(
                "SELECT count(DISTINCT row_key) FROM sqlite2pg.quarantine WHERE table_name = $1",
                &[&t.name],
            ))
            .map_err(|source| Error::Target {
                op: "count quarantined rows",
                table: Some(t.name.clone()),
                source,
            })?
            .get(0);
        if target + quarantined != source {
            return Err(Error::Data {
                table: t.name.clone(),
                reason: format!(
                    "SQLite holds {source} rows, PostgreSQL {target} (+{quarantined} quarantined)"
                ),
            });
        }
        out.push(TableCount {
            table: t.name.clone(),
            rows: source as u64,
        });
    }
    Ok(out)
}

/// Moves each identity past the largest id SQLite ever handed out (max(id), sqlite_sequence).
fn move_identities(
    setup: &mut crate::pipeline::SyncSetup,
    conn: &rusqlite::Connection,
    config: &Config,
) -> Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    let has_sequence: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'",
            [],
            |r| r.get(0),
        )
        .map_err(|source| Error::Source {
            op: "look for sqlite_sequence",
            path: setup.path.clone(),
            table: None,
            source,
        })?;
    for t in &setup.tables {
        let crate::source::introspect::PrimaryKey::IntegerPrimaryKey { column } = &t.primary_key
        else {
            continue;
        };
        let read_err = |source| Error::Source {
            op: "read the largest id",
            path: setup.path.clone(),
            table: Some(t.name.clone()),
            source,
        };
        let max_sql = format!(
            "SELECT max({}) FROM {}",
            quote_ident(column),
            quote_ident(&t.name)
        );
        let max_id: Option<i64> = conn
            .query_row(&max_sql, [], |r| r.get(0))
            .map_err(read_err)?;
        let seq: Option<i64> = if has_sequence {
            conn.query_row(
                "SELECT max(seq) FROM sqlite_sequence WHERE name = ?1",
                [&t.name],
                |r| r.get(0),
            )
            .map_err(read_err)?
        } else {
            None
        };
        let next = max_id.unwrap_or(0).max(seq.unwrap_or(0)).saturating_add(1);
        let sql = restart_identity(
            &config.schema,
            &target_name(&t.name, false),
            &target_name(column, false),
            next,
        );
        setup
            .runtime
            .block_on(setup.client.batch_execute(&sql))
            .map_err(|source| Error::Target {
                op: "move the identity",
                table: Some(t.name.clone()),
                source,
            })?;
        out.push((t.name.clone(), next));
    }
    Ok(out)
}

/// Replaces the capture triggers with triggers that refuse every write, in the frozen
/// transaction: once it commits, a forgotten writer fails loudly instead of writing into the void.
fn fence(
    conn: &rusqlite::Connection,
    tables: &[crate::source::introspect::Table],
    at: &str,
    path: &std::path::Path,
) -> Result<()> {
    let err = |op| {
        move |source| Error::Source {
            op,
            path: path.to_path_buf(),
            table: None,
            source,
        }
    };
    let capture_triggers: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name GLOB '_sqlite2pg_*' AND name NOT GLOB '_sqlite2pg_fence_*'")
            .map_err(err("list capture triggers"))?;
        let names = stmt
            .query_map([], |r| r.get(0))
            .map_err(err("list capture triggers"))?;
        names
            .collect::<rusqlite::Result<_>>()
            .map_err(err("list capture triggers"))?
    };
    for name in capture_triggers {
        conn.execute_batch(&format!("DROP TRIGGER {}", quote_ident(&name)))
            .map_err(err("drop a capture trigger"))?;
    }
    let message = format!(
        "sqlite2pg: this database was migrated to PostgreSQL at {at}; write to PostgreSQL instead"
    )
    .replace('\'', "''");
    for t in tables {
        for (op, event) in [("ins", "INSERT"), ("upd", "UPDATE"), ("del", "DELETE")] {
            let name = quote_ident(&format!("_sqlite2pg_fence_{op}_{}", t.name));
            let sql = format!("CREATE TRIGGER IF NOT EXISTS {name} BEFORE {event} ON {} BEGIN SELECT RAISE(ABORT, '{message}'); END", quote_ident(&t.name));
            conn.execute_batch(&sql)
                .map_err(err("create a fence trigger"))?;
        }
    }
    Ok(())
}
