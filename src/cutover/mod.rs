//! `sqlite2pg cutover`: the switch. A running sync is first asked to pause and close the change
//! log (`handover`); then, as with sync stopped, it drains what is pending, then freezes
//! the application's writers by taking SQLite's write lock (`BEGIN IMMEDIATE`; writers wait on
//! their busy timeout instead of writing), drains the last changes, proves from PostgreSQL's
//! committed position that everything up to the final change is applied, checks row counts,
//! moves every identity past the largest id SQLite handed out, replaces the capture triggers
//! with fence triggers that make every later write to SQLite fail loudly (see `fence`), and
//! releases the lock. The freeze has a hard bound (`max_pause`): past it, the transaction rolls
//! back — SQLite is untouched, nothing is fenced — and the cutover aborts.
//!
//! Each step is safe to repeat, and a crash at any step leaves a state that `cutover` (again) or
//! `rollback` completes: before the fence commits, SQLite rolls the frozen transaction back and
//! a re-run starts over (PostgreSQL only holds applied changes and moved identities, both
//! redone idempotently); once it committed, the cutover record written with the fence proves
//! the rest finished, and a re-run only checks PostgreSQL's position and writes the report. The
//! report file is removed before a new freeze and by `rollback`, so it never says "done" for a
//! cutover that is not. Each boundary has a fault point (`fault::CUTOVER_*`) and a crash test.

mod fence;
pub mod handover;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::diff::compare::counts_agree;
use crate::error::{Error, Result};
use crate::fault;
use crate::pipeline::{drain, prepare, SyncSetup};
use crate::source::capture::{max_seq, Capturer};
use crate::source::{open_read_only, open_read_write, quote_ident};
use crate::target::ddl::qualified;
use crate::target::state::sync_position;
use crate::translate::target_name;

/// The default bound on the freeze: long enough for a drain of a few thousand changes and the
/// checks, far below the busy timeouts applications use, so no writer fails while it waits.
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(5);
/// The default lag (changes) above which cutover refuses to freeze: a larger backlog would make
/// the pause long; run sync until it is small.
pub const DEFAULT_MAX_LAG: u64 = 100_000;
/// The report in the state directory; `status` reads it.
pub const REPORT_FILE: &str = "cutover-report.json";

#[derive(Debug, Clone)]
pub struct CutoverOptions {
    pub max_pause: Duration,
    pub max_lag: u64,
    /// Diff every row of every table while frozen (`--full-verify`); any difference aborts.
    pub full_verify: bool,
    /// Diff the rows changed since each table's diff baseline while frozen, the others whole
    /// (`--verify-changed`, see `diff::changed`); any difference aborts.
    pub verify_changed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableCount {
    pub table: String,
    pub rows: u64,
}

/// Milliseconds from the start of the freeze (before the lock is requested) to the end of one
/// step, to show where a pause goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FreezeStep {
    pub step: String,
    pub ms: f64,
}

/// What `--full-verify` (every row) or `--verify-changed` compared, found identical.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FullDiff {
    /// The diff's whole-database fingerprint.
    pub fingerprint: String,
    /// The HTML sign-off report.
    pub html: PathBuf,
    /// `--verify-changed`: the changed rows compared, in the tables compared that way (the
    /// report says which tables were compared whole).
    #[serde(default)]
    pub changed_rows_checked: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CutoverReport {
    /// How long application writers were held, in milliseconds; `None` when a re-run completed
    /// a cutover whose process died after releasing them (its pause was never recorded).
    pub pause_ms: Option<f64>,
    /// The last change sequence applied; PostgreSQL's committed position proves it.
    pub final_seq: u64,
    pub changes_before_freeze: u64,
    pub changes_during_freeze: u64,
    pub tables: Vec<TableCount>,
    /// Identities moved: (table, next id).
    pub identities: Vec<(String, i64)>,
    pub fenced_at: String,
    /// Where the pause went, step by step (`lock taken`, `drained`, `verified`,
    /// `identities moved`, `fenced`, `released`); a resumed report has the steps the
    /// interrupted run recorded before its fence.
    pub freeze_steps: Vec<FreezeStep>,
    /// True when this run completed a cutover interrupted after SQLite was fenced.
    pub resumed: bool,
    /// `--full-verify`'s diff, when asked for.
    #[serde(default)]
    pub full_diff: Option<FullDiff>,
    /// A PostgreSQL transaction id taken at the switch: rows with a newer `xmin` were written
    /// after it (rollback lists them).
    #[serde(default)]
    pub target_xid: Option<i64>,
}

fn data_err(reason: impl Into<String>) -> Error {
    Error::Data {
        table: "(cutover)".into(),
        reason: reason.into(),
    }
}

fn source_err<'p>(path: &'p Path, op: &'static str) -> impl Fn(rusqlite::Error) -> Error + 'p {
    move |source| Error::Source {
        op,
        path: path.to_path_buf(),
        table: None,
        source,
    }
}

/// Runs the cutover. A running sync is asked to pause first (see `handover`); it stops or
/// resumes when this returns, after the change log is closed (`_paused` is dropped last).
pub fn run_cutover(config: &Config, opts: &CutoverOptions) -> Result<CutoverReport> {
    let state_dir = config.ensure_state_dir()?;
    let _paused = handover::pause_running_sync(&state_dir)?;
    let mut setup = prepare(config).map_err(|e| match e {
        Error::ChangeLog { op: "open", .. } => data_err(format!("the change log is held by a process with no live sync heartbeat in {}: stop it and run cutover, which drains itself", state_dir.display())),
        other => other,
    })?;
    let fenced = fence::read_fence(&open_read_only(&setup.path)?, &setup.path)?;
    if let Some(record) = fenced {
        return finish_fenced(&mut setup, opts, &state_dir, record);
    }
    // Not fenced: a report left by an earlier cutover (rolled back since) must not say done.
    remove_report(&state_dir)?;
    crate::pipeline::check_schema_applied(&setup)?;
    let mut capturer = Capturer::open(&setup.path, &setup.tables)?;
    capturer.pin_schema(setup.schema_version);
    let before = drain_backlog(&mut setup, &mut capturer, config, opts)?;
    fault::hit(fault::CUTOVER_AFTER_BACKLOG);
    let report = freeze_and_fence(&mut setup, &mut capturer, config, opts, before)?;
    fault::hit(fault::CUTOVER_AFTER_RELEASE);
    write_report(&state_dir, &report)?;
    Ok(report)
}

/// Refuses a backlog over `max_lag`, then applies it before the freeze; returns how many
/// changes that was.
fn drain_backlog(
    setup: &mut SyncSetup,
    capturer: &mut Capturer,
    config: &Config,
    opts: &CutoverOptions,
) -> Result<u64> {
    let applied = setup
        .runtime
        .block_on(sync_position(&setup.client))?
        .unwrap_or(0) as u64;
    let now_seq = max_seq(&open_read_only(&setup.path)?)?;
    let pending = now_seq.saturating_sub(applied);
    if pending > opts.max_lag {
        return Err(data_err(format!("{pending} changes are not applied yet (more than --max-lag {}): run sync until the lag is small", opts.max_lag)));
    }
    let (_, before) = drain(setup, capturer, config, now_seq, None)?;
    Ok(before)
}

/// Freezes writers, runs the frozen steps and commits the fence (releasing writers); on any
/// error or past the bound, rolls back instead: writers released, SQLite untouched.
fn freeze_and_fence(
    setup: &mut SyncSetup,
    capturer: &mut Capturer,
    config: &Config,
    opts: &CutoverOptions,
    before: u64,
) -> Result<CutoverReport> {
    let conn = open_read_write(&setup.path)?;
    conn.busy_timeout(opts.max_pause)
        .map_err(source_err(&setup.path, "set busy timeout"))?;
    // Each PostgreSQL statement of the freeze is bounded too: a lock held in the target (DDL,
    // VACUUM FULL, a long transaction's row locks) aborts the cutover at the bound instead of
    // holding writers until it is released. The connection ends with the cutover.
    let bound = format!(
        "SET statement_timeout = {}",
        opts.max_pause.as_millis().max(1)
    );
    setup
        .runtime
        .block_on(setup.client.batch_execute(&bound))
        .map_err(|source| Error::Target {
            op: "bound PostgreSQL statements by the pause",
            table: None,
            source,
        })?;
    let started = Instant::now();
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(source_err(&setup.path, "freeze writers (BEGIN IMMEDIATE)"))?;
    let frozen = Freeze {
        conn: &conn,
        started,
        deadline: started + opts.max_pause,
    };
    let committed =
        frozen_steps(setup, capturer, &frozen, config, opts, before).and_then(|report| {
            conn.execute_batch("COMMIT")
                .map_err(source_err(&setup.path, "release the freeze (COMMIT)"))?;
            Ok(report)
        });
    match committed {
        Ok(mut report) => {
            let released = frozen.step("released");
            report.pause_ms = Some(released.ms);
            report.freeze_steps.push(released);
            Ok(report)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(data_err(format!(
                "cutover aborted after {:.0} ms, writers released, SQLite untouched: {e}",
                frozen.elapsed_ms()
            )))
        }
    }
}

/// The frozen write transaction and its clock.
struct Freeze<'c> {
    conn: &'c Connection,
    started: Instant,
    deadline: Instant,
}

impl Freeze<'_> {
    fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    fn step(&self, step: &str) -> FreezeStep {
        FreezeStep {
            step: step.to_string(),
            ms: self.elapsed_ms(),
        }
    }
}

/// Everything done while writers are held; any error (or the deadline) aborts the cutover.
/// Returns the report as the fence record holds it (no pause yet).
fn frozen_steps(
    setup: &mut SyncSetup,
    capturer: &mut Capturer,
    frozen: &Freeze<'_>,
    config: &Config,
    opts: &CutoverOptions,
    before: u64,
) -> Result<CutoverReport> {
    let mut steps = vec![frozen.step("lock taken")];
    let final_seq = max_seq(frozen.conn)?;
    let (applied, during) = drain(setup, capturer, config, final_seq, Some(frozen.deadline))?;
    let committed = setup
        .runtime
        .block_on(sync_position(&setup.client))?
        .unwrap_or(0) as u64;
    if committed < final_seq || applied < final_seq {
        return Err(data_err(format!(
            "PostgreSQL committed position {committed} is behind the final change {final_seq}"
        )));
    }
    steps.push(frozen.step("drained"));
    fault::hit(fault::CUTOVER_AFTER_DRAIN);
    let tables = compare_counts(setup, frozen.conn, config)?;
    let target_xid: i64 = setup
        .runtime
        .block_on(setup.client.query_one("SELECT txid_current()::bigint", &[]))
        .map_err(|source| Error::Target {
            op: "read the switch's transaction id",
            table: None,
            source,
        })?
        .get(0);
    let full_diff = if opts.full_verify || opts.verify_changed {
        Some(full_diff(
            config,
            opts.verify_changed.then_some(&setup.log),
        )?)
    } else {
        None
    };
    steps.push(frozen.step("verified"));
    fault::hit(fault::CUTOVER_AFTER_VERIFY);
    let identities = move_identities(setup, frozen.conn, config)?;
    steps.push(frozen.step("identities moved"));
    fault::hit(fault::CUTOVER_AFTER_SEQUENCES);
    let mut report = CutoverReport {
        pause_ms: None,
        final_seq,
        changes_before_freeze: before,
        changes_during_freeze: during,
        tables,
        identities,
        fenced_at: chrono::Utc::now().to_rfc3339(),
        freeze_steps: steps,
        resumed: false,
        full_diff,
        target_xid: Some(target_xid),
    };
    fence::write_fence(frozen.conn, &setup.tables, &report, &setup.path)?;
    report.freeze_steps.push(frozen.step("fenced"));
    fault::hit(fault::CUTOVER_AFTER_FENCE);
    if Instant::now() > frozen.deadline {
        return Err(data_err("the pause bound was reached before the fence"));
    }
    Ok(report)
}

/// What PostgreSQL received after the switch, per table: rows written (inserted or updated)
/// since the cutover's transaction id, up to `listed` of them as JSON, and the row count then
/// and now (a lower count means deletes). For `rollback`: SQLite becomes the system of record
/// again, and these writes are not in it.
pub fn writes_after_cutover(
    config: &Config,
    report: &CutoverReport,
    listed: i64,
) -> Result<Vec<WritesAfter>> {
    let (Some(xid), Ok(target)) = (report.target_xid, config.require_target()) else {
        return Ok(Vec::new());
    };
    let runtime = crate::target::connect::client_runtime()?;
    runtime.block_on(async {
        let client = target.connect().await?;
        let mut out = Vec::new();
        for t in &report.tables {
            let table = qualified(&config.schema, &target_name(&t.table, false));
            let err = |op| {
                let table = Some(t.table.clone());
                move |source| Error::Target { op, table, source }
            };
            // age(xmin) counts from the next transaction id: a row is newer than the switch
            // exactly when its age is below the distance from the switch to now.
            let newer =
                "age(t.xmin) < (pg_snapshot_xmax(pg_current_snapshot())::text::bigint - $1)::int";
            let row = client
                .query_one(
                    &format!("SELECT count(*) FILTER (WHERE {newer}), count(*) FROM {table} t"),
                    &[&xid],
                )
                .await
                .map_err(err("count writes after the cutover"))?;
            let (written, now): (i64, i64) = (row.get(0), row.get(1));
            if written == 0 && now == t.rows as i64 {
                continue;
            }
            let rows = client
                .query(
                    &format!("SELECT to_jsonb(t)::text FROM {table} t WHERE {newer} LIMIT $2"),
                    &[&xid, &listed],
                )
                .await
                .map_err(err("list writes after the cutover"))?;
            out.push(WritesAfter {
                table: t.table.clone(),
                written,
                rows_at_cutover: t.rows,
                rows_now: now as u64,
                examples: rows.iter().map(|r| r.get(0)).collect(),
            });
        }
        Ok(out)
    })
}

/// One table's writes after the switch (see [`writes_after_cutover`]).
#[derive(Debug, Clone, Serialize)]
pub struct WritesAfter {
    pub table: String,
    /// Rows inserted or updated since the switch.
    pub written: i64,
    pub rows_at_cutover: u64,
    pub rows_now: u64,
    /// Some of those rows, as JSON.
    pub examples: Vec<String>,
}

/// `--full-verify`: the diff of every row of every table, taken while writers are frozen (it
/// reads SQLite beside the freeze's write lock); with `changed_in` (`--verify-changed`, the
/// change log this cutover holds) only the rows changed since each table's baseline. Its HTML
/// report is the sign-off document; any difference is an error, which aborts the cutover.
fn full_diff(
    config: &Config,
    changed_in: Option<&crate::changelog::FaultyChangeLog<crate::changelog::SledChangeLog>>,
) -> Result<FullDiff> {
    let opts = crate::diff::DiffOptions {
        changed: changed_in.is_some(),
        ..crate::diff::DiffOptions::default()
    };
    let log = changed_in.map(|l| l as &dyn crate::changelog::ChangeLog);
    let report = crate::diff::run_diff_with_log(config, &opts, log)?;
    let html = config.ensure_state_dir()?.join("cutover-diff.html");
    std::fs::write(&html, crate::diff::render_html(&report)).map_err(|source| Error::Io {
        op: "write the sign-off report",
        path: html.clone(),
        source,
    })?;
    if !report.identical {
        return Err(data_err(format!(
            "the {} found differences (see {}): PostgreSQL does not hold what SQLite holds",
            match changed_in {
                Some(_) => "diff of the changed rows",
                None => "full diff",
            },
            html.display()
        )));
    }
    let changed_rows_checked = changed_in.map(|_| {
        report
            .tables
            .iter()
            .filter_map(|t| t.changed_since.as_ref())
            .map(|c| c.checked_rows)
            .sum()
    });
    Ok(FullDiff {
        fingerprint: report.fingerprint,
        html,
        changed_rows_checked,
    })
}

/// Completes a cutover whose process died after the fence committed: the record written with
/// the fence proves the drain, the counts and the identities finished before it. Checks that
/// PostgreSQL's committed position reaches the record's final change and that nothing was
/// logged after it, re-asserts the fence (repairing a trigger someone dropped) and writes the
/// report. A cutover already reported is returned as recorded, without touching anything.
fn finish_fenced(
    setup: &mut SyncSetup,
    opts: &CutoverOptions,
    state_dir: &Path,
    mut record: CutoverReport,
) -> Result<CutoverReport> {
    let reported = read_report(state_dir)?
        .filter(|r| r.fenced_at == record.fenced_at && r.final_seq == record.final_seq);
    if let Some(done) = reported {
        tracing::info!(fenced_at = %done.fenced_at, "SQLite is already fenced and the cutover reported");
        return Ok(done);
    }
    let committed = setup
        .runtime
        .block_on(sync_position(&setup.client))?
        .unwrap_or(0) as u64;
    let conn = open_read_write(&setup.path)?;
    conn.busy_timeout(opts.max_pause)
        .map_err(source_err(&setup.path, "set busy timeout"))?;
    let tx = rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
        .map_err(source_err(&setup.path, "lock the fenced database"))?;
    let logged = max_seq(&tx)?;
    if committed < record.final_seq || logged > record.final_seq {
        return Err(data_err(format!(
            "SQLite was fenced after change {} but PostgreSQL committed up to {committed} and SQLite logged up to {logged}: the two may differ; run `sqlite2pg rollback` (SQLite stays the system of record) and start again from a snapshot",
            record.final_seq
        )));
    }
    fence::write_fence(&tx, &setup.tables, &record, &setup.path)?;
    tx.commit()
        .map_err(source_err(&setup.path, "commit the fence"))?;
    record.resumed = true;
    write_report(state_dir, &record)?;
    Ok(record)
}

/// The cutover record of a fenced source (`conn` open on `path`), or `None` when it is not
/// fenced; `status` uses it to tell a cutover that died after the fence from one not done.
pub fn fence_record(conn: &Connection, path: &Path) -> Result<Option<CutoverReport>> {
    fence::read_fence(conn, path)
}

/// Writes the report atomically (temporary file, then rename).
fn write_report(state_dir: &Path, report: &CutoverReport) -> Result<()> {
    let path = state_dir.join(REPORT_FILE);
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(report).expect("a cutover report always serialises");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            op: "write",
            path,
            source,
        }
    };
    std::fs::write(&tmp, json).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// The report of the last cutover, if one is recorded (an unreadable one counts as none).
pub(crate) fn read_report(state_dir: &Path) -> Result<Option<CutoverReport>> {
    let path = state_dir.join(REPORT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            op: "read",
            path,
            source,
        }),
    }
}

/// Removes the cutover report from `state_dir`, so nothing says a cutover is done; true when
/// there was one. `rollback` calls it: after a rollback SQLite is the system of record again.
pub fn remove_report(state_dir: &Path) -> Result<bool> {
    let path = state_dir.join(REPORT_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Io {
            op: "remove",
            path,
            source,
        }),
    }
}

/// Row counts of every replicated table, SQLite (frozen) against PostgreSQL: PostgreSQL must not
/// hold more rows, nor lack more than the table's distinct quarantined keys; otherwise abort.
fn compare_counts(
    setup: &mut SyncSetup,
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
        if !counts_agree(source as u64, target as u64, quarantined as u64) {
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

/// Sets an identity column's sequence so its next value is $3. `setval` locks only the
/// sequence: `ALTER TABLE … RESTART` would take an ACCESS EXCLUSIVE lock on the table and wait,
/// writers frozen, behind anything holding one (an autovacuum is only cancelled after
/// `deadlock_timeout`, 1 s by default, which the cutover bench measured in its pauses).
const SET_IDENTITY: &str = "SELECT setval(pg_get_serial_sequence($1, $2), $3, false)";

/// Moves each identity past the largest id SQLite ever handed out (max(id), sqlite_sequence).
fn move_identities(
    setup: &mut SyncSetup,
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
        let table = qualified(&config.schema, &target_name(&t.name, false));
        let column = target_name(column, false);
        let set: Option<i64> = setup
            .runtime
            .block_on(
                setup
                    .client
                    .query_one(SET_IDENTITY, &[&table, &column, &next]),
            )
            .map_err(|source| Error::Target {
                op: "move the identity",
                table: Some(t.name.clone()),
                source,
            })?
            .get(0);
        if set != Some(next) {
            return Err(Error::Data {
                table: t.name.clone(),
                reason: format!("column {column} has no identity sequence in the target to move past SQLite's ids"),
            });
        }
        out.push((t.name.clone(), next));
    }
    Ok(out)
}
