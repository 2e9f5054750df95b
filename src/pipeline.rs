//! `sqlite2pg sync`: the only module that knows every stage. A capture thread turns committed
//! SQLite changes into change-log entries (durable before the source's change rows are deleted);
//! the apply loop replays them into PostgreSQL in batches that end on capture boundaries, each
//! committed with its position (promise 2). The stages talk through the change log and a wake-up
//! channel; a stop flag (SIGINT/SIGTERM) ends both after the batch in flight. When the source
//! schema moves, `schema` has apply make additive changes in PostgreSQL at exactly the position
//! capture reached, or stops sync there naming what changed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use crate::change::{Boundary, Change};
use crate::changelog::{ChangeLog, FaultyChangeLog, SledChangeLog};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::snapshot::{read_snapshot_record, SnapshotRecord};
use crate::source::capture::{max_seq, Capturer, ChangeRowDeleter};
use crate::source::introspect::{Schema, Table};
use crate::source::open_read_only;
use crate::source::watcher::Watcher;
use crate::target::apply::{apply_chunks, ApplyTable, BatchStats, StagingTables};
use crate::target::state::{ensure_state, init_sync_position, sync_position};
use crate::target::verify::Mismatch;

mod reader;
mod schema;

use reader::{Job, ReadRequest, CHUNKS_IN_FLIGHT};

pub(crate) use schema::check_schema_applied;
use schema::{apply_tables, read_source, replicated_from_target, Follower, SchemaLinks};

/// Most changes one apply transaction takes: large enough for throughput, small enough that a
/// batch commits in well under a second. A single source transaction larger than this is still
/// applied in one transaction (it is one consistent state), streamed from the change log in
/// chunks of this many changes, so this also bounds apply's memory.
pub const DEFAULT_BATCH_CHANGES: usize = 10_000;
/// How often consumed change rows are deleted from the source while it is busy (they are
/// deleted at once when it goes idle).
const DELETE_INTERVAL: Duration = Duration::from_secs(1);

/// The least time from the start of one capture cycle that found changes to the start of the
/// next. Without it a busy source was read in back-to-back cycles of one or two transactions
/// each (1,800 cycles/s under a writer at 5000 transactions/s), and every cycle pays a read
/// transaction, a change-log flush, a boundary and a commit of the changed-key store, so
/// capture's cost followed its cycles, not the changes. The first change after a quiet spell
/// is still read at once; this adds at most this much to the lag of a busy source.
const MIN_CYCLE_INTERVAL: Duration = Duration::from_millis(5);
/// How long the capture stage sleeps when the watcher reports nothing: the fallback for
/// filesystems where notify misses events; no busy loop when idle.
pub const DEFAULT_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Exit once everything committed in SQLite when sync started is applied.
    pub catch_up: bool,
    pub poll: Duration,
    pub batch_changes: usize,
    /// Where to publish live numbers for `/metrics` (see `metrics`).
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            catch_up: false,
            metrics: None,
            poll: DEFAULT_POLL,
            batch_changes: DEFAULT_BATCH_CHANGES,
        }
    }
}

/// Where sync stands, for the status line and `status`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct SyncStatus {
    pub captured_seq: u64,
    pub applied_seq: u64,
    pub lag_changes: u64,
    pub lag_seconds: f64,
    pub batches: u64,
    pub changes_applied: u64,
    pub quarantined: u64,
    pub changes_per_second: f64,
    /// Batches retried after a transient PostgreSQL failure (restart, network).
    pub retries: u64,
    /// Applied rows whose PostgreSQL copy did not match the source image when re-read right
    /// after the batch (each is re-enqueued and applied again).
    pub verification_mismatches: u64,
    /// Rows upserted or deleted in PostgreSQL per source table, since this sync started.
    #[serde(default)]
    pub applied_per_table: std::collections::BTreeMap<String, u64>,
    /// Changes (after coalescing) waiting in the change log, and its size on disk.
    #[serde(default)]
    pub change_log_changes: u64,
    #[serde(default)]
    pub change_log_bytes: u64,
    /// Size of the source's `-wal` file (0 when it has none): a WAL that keeps growing means the
    /// application's checkpoints cannot complete.
    #[serde(default)]
    pub source_wal_bytes: u64,
    /// The last error sync met (a transient one it retried, or the one it stopped on).
    #[serde(default)]
    pub last_error: Option<LastError>,
}

/// An error and when it happened, for `status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LastError {
    pub at: String,
    pub message: String,
}

impl LastError {
    fn now(e: &Error) -> LastError {
        LastError {
            at: chrono::Utc::now().to_rfc3339(),
            message: e.to_string(),
        }
    }
}

/// Records in the heartbeat that this sync stopped on `e` (`status` shows it with its time),
/// keeping this run's counters; never over the heartbeat of another sync that is alive.
fn record_failure(config: &Config, e: &Error) {
    let Ok(state_dir) = config.state_dir() else {
        return;
    };
    let ours = std::process::id();
    let (started_at, mut status) = match crate::status::read_heartbeat(&state_dir) {
        Some(b) if b.pid == ours => (b.started_at, b.status),
        Some(b) if crate::status::process_alive(b.pid) && b.state != "stopped" => return,
        _ => (chrono::Utc::now().to_rfc3339(), SyncStatus::default()),
    };
    status.last_error = Some(LastError::now(e));
    if let Err(write) = crate::status::write_heartbeat(&state_dir, &started_at, "failed", &status) {
        tracing::warn!(error = %write, "could not record the failure in the heartbeat");
    }
}

/// Runs sync until `stop` is set (or, with `catch_up`, until caught up). An error is also
/// recorded in the heartbeat (state `failed`, with the error and its time) for `status`.
pub fn run_sync(
    config: &Config,
    opts: &SyncOptions,
    stop: &AtomicBool,
    on_status: &(dyn Fn(&SyncStatus) + Sync),
) -> Result<SyncStatus> {
    let result = sync_until_stopped(config, opts, stop, on_status);
    if let Err(e) = &result {
        record_failure(config, e);
    }
    result
}

fn sync_until_stopped(
    config: &Config,
    opts: &SyncOptions,
    stop: &AtomicBool,
    on_status: &(dyn Fn(&SyncStatus) + Sync),
) -> Result<SyncStatus> {
    let SyncSetup {
        path,
        start_seq,
        tables,
        runtime,
        mut client,
        apply_tables,
        log,
        snapshot,
        ..
    } = prepare(config)?;
    let catch_up_target = if opts.catch_up {
        Some(max_seq(&open_read_only(&path)?)?)
    } else {
        None
    };
    let links = SchemaLinks::new(catch_up_target);
    let mut follower = Follower {
        path: &path,
        config,
        selection: snapshot.tables.as_deref(),
        replicated: tables,
        links: &links,
    };
    let captured = AtomicU64::new(0);
    let capture_failed = AtomicBool::new(false);
    let (wake_tx, wake_rx) = crossbeam_channel::unbounded::<()>();
    let (read_tx, read_rx) = crossbeam_channel::unbounded::<Job>();
    std::thread::scope(|s| {
        let log_ref: &dyn ChangeLog = &log;
        let failed = &capture_failed;
        let reader = s.spawn(move || {
            reader::serve(
                log_ref,
                &read_rx,
                opts.batch_changes,
                config.convert,
                failed,
            )
        });
        let capture = s.spawn(|| {
            let r = capture_loop(
                &mut follower,
                &log,
                start_seq,
                opts.poll,
                stop,
                &captured,
                &wake_tx,
            );
            if r.is_err() {
                capture_failed.store(true, Ordering::SeqCst);
            }
            drop(wake_tx);
            r
        });
        let ctx = ApplyContext {
            config,
            opts,
            log: &log,
            tables: &apply_tables,
            stop,
            captured: &captured,
            capture_failed: &capture_failed,
            wake: &wake_rx,
            reader: &read_tx,
            schema: &links,
            fingerprint: snapshot.identity(),
            on_status,
        };
        let applied = runtime.block_on(apply_loop(&mut client, &ctx));
        drop(read_tx);
        stop.store(true, Ordering::SeqCst);
        let captured = capture.join().expect("the capture thread panicked");
        let trimmed = reader.join().expect("the reader thread panicked");
        // Capture's error first: apply fails too when capture stopped in the cycle it followed.
        match (trimmed, applied, captured) {
            (_, _, Err(e)) | (Err(e), _, _) | (_, Err(e), _) => Err(e),
            (Ok(()), Ok(status), Ok(())) => Ok(status),
        }
    })
}

/// Everything sync and cutover need before moving a change: the replicated tables (as
/// PostgreSQL holds them, see `schema`), the source schema and its version, a target connection
/// with its state ready, the apply plan per table, and the change log.
pub(crate) struct SyncSetup {
    pub path: std::path::PathBuf,
    pub start_seq: u64,
    pub snapshot: SnapshotRecord,
    pub tables: Vec<Table>,
    /// The source schema, and its `PRAGMA schema_version`, when `tables` were derived.
    pub schema: Schema,
    pub schema_version: i64,
    pub runtime: tokio::runtime::Runtime,
    pub client: tokio_postgres::Client,
    pub apply_tables: Vec<ApplyTable>,
    /// The staging tables of `client`'s session.
    pub staging: StagingTables,
    pub log: FaultyChangeLog<SledChangeLog>,
}

pub(crate) fn prepare(config: &Config) -> Result<SyncSetup> {
    let path = config.require_source()?.to_path_buf();
    let state_dir = config.ensure_state_dir()?;
    let snapshot = snapshot_record(&state_dir)?;
    let start_seq = snapshot.change_seq.unwrap_or(0) as u64;
    let source = read_source(&path)?;
    let runtime = crate::target::connect::client_runtime()?;
    let url = config.require_target()?;
    let client = runtime.block_on(url.connect())?;
    runtime.block_on(ensure_state(&client))?;
    runtime.block_on(init_sync_position(&client, start_seq as i64))?;
    let tables = runtime.block_on(replicated_from_target(&client, &config.schema, &source))?;
    let apply_tables = runtime.block_on(apply_tables(&client, &config.schema, &tables))?;
    let log = FaultyChangeLog::new(SledChangeLog::open(&state_dir.join("changelog"))?);
    Ok(SyncSetup {
        path,
        start_seq,
        snapshot,
        tables,
        schema: source.schema,
        schema_version: source.version,
        runtime,
        client,
        apply_tables,
        staging: StagingTables::default(),
        log,
    })
}

/// Captures everything committed in SQLite up to change `until` and applies it, on the calling
/// thread (writers that keep writing do not make it chase them); `deadline` bounds it
/// (cutover's freeze). Every applied key is verified like sync's continuous verification; a
/// mismatch is an error (cutover must not switch onto it). Returns the position PostgreSQL
/// committed and the changes applied.
pub(crate) fn drain(
    setup: &mut SyncSetup,
    capturer: &mut Capturer,
    config: &Config,
    until: u64,
    deadline: Option<std::time::Instant>,
) -> Result<(u64, u64)> {
    let past = |what: &str| -> Result<()> {
        match deadline {
            Some(d) if std::time::Instant::now() > d => Err(Error::Data {
                table: "(cutover)".into(),
                reason: format!("the pause bound was reached while {what}"),
            }),
            _ => Ok(()),
        }
    };
    let mut pos = setup
        .log
        .last_boundary()?
        .map_or(setup.start_seq, |b| b.end_seq.max(setup.start_seq));
    setup.log.discard_after(pos)?;
    while pos < until {
        let Some(b) = capturer.capture(pos, &mut |chunk: &[Change]| setup.log.append(chunk))?
        else {
            break;
        };
        setup.log.commit_boundary(&b)?;
        pos = b.end_seq;
        past("capturing")?;
    }
    let mut applied = setup
        .runtime
        .block_on(sync_position(&setup.client))?
        .unwrap_or(0) as u64;
    let mut total = 0;
    loop {
        let bounds = setup.log.boundaries_after(applied, 10_000)?;
        if bounds.is_empty() {
            return Ok((applied, total));
        }
        let through = batch_end(&bounds, DEFAULT_BATCH_CHANGES);
        let stats = drain_batch(setup, config, applied, &through)?;
        setup.log.trim_through(through.end_seq)?;
        applied = through.end_seq;
        total += stats.changes;
        let mismatches = stats.mismatches;
        if let Some(m) = mismatches.first() {
            // Before the freeze the keys go back into the source's change table, so the sync
            // that resumes after this refusal repairs them; while frozen, this process holds
            // SQLite's write lock in the transaction the abort rolls back, so the error names
            // them for `diff` instead.
            if deadline.is_none() {
                let path = config.require_source()?;
                let conn = crate::source::open_read_write(path)?;
                for m in &mismatches {
                    requeue(&conn, path, &m.table, &m.key)?;
                }
            }
            return Err(Error::Data {
                table: m.table.clone(),
                reason: format!(
                    "{} applied row(s) do not match their source images (first: key {}: {}); PostgreSQL was changed behind sync's back or apply is wrong, so the cutover stops{}",
                    mismatches.len(),
                    m.key
                        .iter()
                        .map(|v| crate::convert::render(v.as_ref()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    m.detail,
                    if deadline.is_none() {
                        "; the keys were re-enqueued, so a sync repairs them"
                    } else {
                        "; run `sqlite2pg diff` to see them"
                    }
                ),
            });
        }
        past("applying")?;
    }
}

/// Applies one batch of the change log for `drain`, read and prepared on a thread of its own
/// while the transaction applies the chunk before (as sync's reader stage does).
fn drain_batch(
    setup: &mut SyncSetup,
    config: &Config,
    after: u64,
    through: &Boundary,
) -> Result<BatchStats> {
    let (reply, mut chunks) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    let request = ReadRequest {
        after,
        through: Some(*through),
        tables: setup.apply_tables.clone(),
        reply,
    };
    let SyncSetup {
        log,
        runtime,
        client,
        apply_tables,
        staging,
        ..
    } = setup;
    std::thread::scope(|s| {
        let log: &dyn ChangeLog = log;
        // `through` is known, so the reader never waits for capture.
        let capture_failed = AtomicBool::new(false);
        s.spawn(move || {
            reader::read_chunks(
                log,
                &request,
                DEFAULT_BATCH_CHANGES,
                config.convert,
                &capture_failed,
            )
        });
        let applied = runtime.block_on(apply_chunks(
            client,
            staging,
            &config.schema,
            apply_tables,
            after,
            &mut chunks,
        ));
        drop(chunks);
        applied
    })
}

/// The completed snapshot's record: `change_seq` is the change sequence it includes (sync
/// applies exactly what comes after it).
fn snapshot_record(state_dir: &Path) -> Result<SnapshotRecord> {
    let record = read_snapshot_record(state_dir)?.ok_or_else(|| Error::Config {
        field: "--state-dir".into(),
        reason: format!(
            "no snapshot recorded in {}: run `sqlite2pg snapshot` first",
            state_dir.display()
        ),
    })?;
    if record.status != "complete" {
        return Err(Error::Config {
            field: "snapshot".into(),
            reason: "the snapshot did not finish: run `sqlite2pg snapshot` again (it resumes)"
                .into(),
        });
    }
    if record.change_seq.is_none() {
        return Err(Error::Config {
            field: "snapshot".into(),
            reason: "the snapshot ran without change capture (--no-capture), so changes made since are unknown: run `sqlite2pg snapshot --fresh`".into(),
        });
    }
    Ok(record)
}

/// The capture stage. Its capturer reads only at the schema version its definitions were read
/// at; when that moves (and once at start) the follower brings it up to the source schema, at
/// the position captured so far (see `schema`).
fn capture_loop(
    follower: &mut Follower<'_>,
    log: &dyn ChangeLog,
    start_seq: u64,
    poll: Duration,
    stop: &AtomicBool,
    captured: &AtomicU64,
    wake: &Sender<()>,
) -> Result<()> {
    let watcher = Watcher::start(follower.path, poll)?;
    let mut pos = log
        .last_boundary()?
        .map_or(start_seq, |b| b.end_seq.max(start_seq));
    log.discard_after(pos)?;
    captured.store(pos, Ordering::SeqCst);
    let mut deleter = ChangeRowDeleter::open(follower.path)?;
    let (flushed_tx, flushed_rx) = crossbeam_channel::unbounded::<u64>();
    std::thread::scope(|s| {
        s.spawn(move || delete_loop(&mut deleter, &flushed_rx, poll));
        // Owned here, so it is dropped (and the deleter ends) however this closure returns.
        let flushed_tx = flushed_tx;
        // Everything through `pos` is in the change log already (a previous run flushed it).
        let _ = flushed_tx.send(pos);
        let Some(mut capturer) = follower.follow(pos, stop, wake)? else {
            return Ok(());
        };
        while !stop.load(Ordering::SeqCst) {
            let cycle = Instant::now();
            let read = capturer.capture(pos, &mut |chunk: &[Change]| log.append(chunk));
            let read_ms = ms_since(cycle);
            match read {
                Err(Error::SchemaMoved { from, to, .. }) => {
                    tracing::info!(seq = pos, from, to, "the source schema version moved");
                    match follower.follow(pos, stop, wake)? {
                        Some(next) => capturer = next,
                        None => break,
                    }
                }
                Err(e) => return Err(e),
                Ok(Some(b)) => {
                    log.commit_boundary(&b)?;
                    tracing::debug!(
                        seq = b.end_seq,
                        changes = b.changes,
                        read_ms,
                        total_ms = ms_since(cycle),
                        "captured"
                    );
                    crate::fault::hit(crate::fault::SYNC_AFTER_LOG_FLUSH);
                    pos = b.end_seq;
                    captured.store(pos, Ordering::SeqCst);
                    let _ = flushed_tx.send(pos);
                    let _ = wake.send(());
                    std::thread::sleep(MIN_CYCLE_INTERVAL.saturating_sub(cycle.elapsed()));
                }
                Ok(None) => {
                    watcher.wait(poll);
                }
            }
        }
        Ok(())
    })
}

/// Deletes the source's change rows through the newest position the change log flushed (sent
/// by capture after each boundary), on its own connection: its `BEGIN IMMEDIATE` waits behind
/// the application's writers, and capture must not wait with it (a 0.3 s wait there was a 0.3 s
/// lag spike). It takes SQLite's write lock, so it runs when capture has been quiet for a moment
/// or once every [`DELETE_INTERVAL`], not after every cycle, and once more when capture ends.
/// A failed delete (the lock stayed busy) is tried again later; the rows stay until then.
fn delete_loop(deleter: &mut ChangeRowDeleter, flushed: &Receiver<u64>, poll: Duration) {
    let quiet = poll.min(Duration::from_millis(100));
    let mut pending: Option<u64> = None;
    let mut last_delete = Instant::now();
    loop {
        let next = if pending.is_some() {
            flushed.recv_timeout(quiet)
        } else {
            flushed
                .recv()
                .map_err(|_| crossbeam_channel::RecvTimeoutError::Disconnected)
        };
        let ended = match next {
            Ok(seq) => {
                pending = Some(pending.map_or(seq, |p| p.max(seq)));
                if last_delete.elapsed() < DELETE_INTERVAL {
                    continue;
                }
                false
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => false,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => true,
        };
        if let Some(through) = pending {
            let deleting = Instant::now();
            match deleter.delete_through(through) {
                Ok(rows) => {
                    tracing::debug!(
                        seq = through,
                        rows,
                        ms = ms_since(deleting),
                        "consumed change rows deleted"
                    );
                    pending = None;
                }
                Err(e) => {
                    tracing::debug!(seq = through, error = %e, "consumed change rows not deleted yet")
                }
            }
            last_delete = Instant::now();
        }
        if ended {
            return;
        }
    }
}

struct ApplyContext<'a> {
    config: &'a Config,
    opts: &'a SyncOptions,
    log: &'a dyn ChangeLog,
    tables: &'a [ApplyTable],
    stop: &'a AtomicBool,
    captured: &'a AtomicU64,
    capture_failed: &'a AtomicBool,
    wake: &'a Receiver<()>,
    /// Where batches are asked for, read and prepared in chunks (see `reader`).
    reader: &'a Sender<Job>,
    schema: &'a SchemaLinks,
    /// The snapshot's fingerprint, recorded for tables created during sync.
    fingerprint: &'a str,
    on_status: &'a (dyn Fn(&SyncStatus) + Sync),
}

impl ApplyContext<'_> {
    /// Whether apply should start on the capture cycle still being written after `applied`
    /// rather than wait for its boundary: only once capture settled at its position (a resumed
    /// capture first discards what a crash left past its last boundary), and only for a large
    /// cycle (at least a batch of change seqs), so small cycles keep their usual batching.
    fn open_cycle_to_follow(&self, applied: u64) -> Result<bool> {
        if !self.schema.settled.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let newest = self.log.last_change_seq()?.unwrap_or(0);
        Ok(newest >= applied.saturating_add(self.opts.batch_changes as u64))
    }

    /// `--catch-up` ends once everything committed when sync started is applied (even while the
    /// application keeps writing: it must not chase the writer), and capture reads with the
    /// source's current definitions (a schema change made before sync started is applied too).
    fn caught_up(&self, applied: u64) -> bool {
        self.schema
            .catch_up
            .as_ref()
            .is_some_and(|t| applied >= t.load(Ordering::SeqCst))
            && self.schema.settled.load(Ordering::SeqCst)
    }
}

async fn apply_loop(
    client: &mut tokio_postgres::Client,
    ctx: &ApplyContext<'_>,
) -> Result<SyncStatus> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    let state_dir = ctx.config.state_dir()?;
    let mut status = SyncStatus {
        applied_seq: sync_position(&*client).await?.unwrap_or(0) as u64,
        ..SyncStatus::default()
    };
    measure_sizes(&mut status, ctx);
    crate::status::write_heartbeat(&state_dir, &started_at, "running", &status)?;
    let mut last_report = Instant::now();
    let mut tables = ctx.tables.to_vec();
    let mut staging = StagingTables::default();
    let mut step = None;
    loop {
        let bounds = ctx.log.boundaries_after(status.applied_seq, 10_000)?;
        update_lag(&mut status, ctx, &bounds, started);
        if let Some(m) = &ctx.opts.metrics {
            m.publish(&status);
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            measure_sizes(&mut status, ctx);
            (ctx.on_status)(&status);
            crate::status::write_heartbeat(&state_dir, &started_at, "running", &status)?;
            last_report = Instant::now();
        }
        // A schema step runs once every change captured before it is applied (capture waits
        // for it, so nothing captured after it is in the log yet).
        if step.is_none() {
            step = ctx.schema.steps.1.try_recv().ok();
        }
        if let Some(request) = step.as_ref().filter(|_| bounds.is_empty()) {
            match schema::run_step(client, ctx, request).await {
                Ok(next) => {
                    tables = next;
                    step = None;
                    let _ = ctx.schema.acks.0.send(());
                }
                Err(e) if e.is_transient() && !ctx.stop.load(Ordering::SeqCst) => {
                    tracing::warn!(error = %e, seq = status.applied_seq, "schema change failed transiently; reconnecting");
                    status.applied_seq = reconnect(client, ctx).await?;
                    staging = StagingTables::default();
                    status.retries += 1;
                }
                Err(e) => return Err(e),
            }
            continue;
        }
        if ctx.caught_up(status.applied_seq) {
            break;
        }
        let through = if bounds.is_empty() {
            if ctx.capture_failed.load(Ordering::SeqCst) || ctx.stop.load(Ordering::SeqCst) {
                break;
            }
            if !ctx.open_cycle_to_follow(status.applied_seq)? {
                let _ = ctx.wake.recv_timeout(Duration::from_millis(50));
                continue;
            }
            None
        } else {
            Some(batch_end(&bounds, ctx.opts.batch_changes))
        };
        let batch_started = Instant::now();
        let (reply, mut chunks) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let request = ReadRequest {
            after: status.applied_seq,
            through,
            tables: tables.clone(),
            reply,
        };
        if ctx.reader.send(Job::Read(request)).is_err() {
            return Err(Error::Data {
                table: "(sync)".into(),
                reason: "the change-log reader thread ended".into(),
            });
        }
        let applied = apply_chunks(
            client,
            &mut staging,
            &ctx.config.schema,
            &tables,
            status.applied_seq,
            &mut chunks,
        )
        .await;
        drop(chunks);
        let stats = match applied {
            Ok(stats) => stats,
            Err(e) if e.is_transient() && !ctx.stop.load(Ordering::SeqCst) => {
                tracing::warn!(error = %e, seq = status.applied_seq, "apply failed transiently; reconnecting");
                status.last_error = Some(LastError::now(&e));
                status.applied_seq = reconnect(client, ctx).await?;
                staging = StagingTables::default();
                status.retries += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        crate::fault::hit(crate::fault::SYNC_AFTER_APPLY_COMMIT);
        let apply_ms = ms_since(batch_started);
        let through = stats
            .through
            .expect("a committed batch names the boundary it reached");
        // The reader trims before it reads the next batch (after this commit, in order).
        let _ = ctx.reader.send(Job::Trim(through.end_seq));
        status.verification_mismatches += repair(ctx, &stats.mismatches)?;
        status.applied_seq = through.end_seq;
        status.batches += 1;
        status.changes_applied += stats.changes;
        status.quarantined += stats.quarantined;
        for (table, rows) in &stats.per_table {
            *status.applied_per_table.entry(table.clone()).or_default() += rows;
        }
        if let Some(m) = &ctx.opts.metrics {
            m.observe_batch(batch_started.elapsed().as_secs_f64());
            m.publish(&status);
        }
        tracing::debug!(
            seq = through.end_seq,
            followed = bounds.is_empty(),
            changes = stats.changes,
            chunks = stats.chunks,
            upserted = stats.upserted,
            deleted = stats.deleted,
            apply_ms,
            total_ms = ms_since(batch_started),
            "batch applied"
        );
    }
    let bounds = ctx.log.boundaries_after(status.applied_seq, 1)?;
    update_lag(&mut status, ctx, &bounds, started);
    (ctx.on_status)(&status);
    crate::status::write_heartbeat(&state_dir, &started_at, "stopped", &status)?;
    Ok(status)
}

/// Continuous verification's repair: apply re-read every key of the batch inside its
/// transaction and compared it with the applied image (see `target::apply::apply_chunks`); a
/// mismatch (PostgreSQL written behind sync's back, or a bug) is counted, logged by table, and
/// repaired by re-enqueuing the key in the source's change table, so capture sends its current
/// image again. Returns how many there were.
fn repair(ctx: &ApplyContext<'_>, mismatches: &[Mismatch]) -> Result<u64> {
    if mismatches.is_empty() {
        return Ok(0);
    }
    let path = ctx.config.require_source()?;
    let conn = crate::source::open_read_write(path)?;
    for m in mismatches {
        tracing::warn!(table = %m.table, "applied row does not match its source image; re-enqueued");
        requeue(&conn, path, &m.table, &m.key)?;
    }
    Ok(mismatches.len() as u64)
}

/// Adds a change row for `key`, written with SQLite's own `quote()` exactly as the capture
/// triggers write it.
fn requeue(
    conn: &rusqlite::Connection,
    path: &Path,
    table: &str,
    key: &[crate::change::RawValue],
) -> Result<()> {
    use rusqlite::types::Value;
    let parts: Vec<String> = (0..key.len())
        .map(|i| format!("quote(?{})", i + 2))
        .collect();
    let sql = format!(
        "INSERT INTO _sqlite2pg_changes (tbl, op, key) SELECT ?1, 'R', {}",
        parts.join(" || ',' || ")
    );
    let mut params: Vec<Value> = vec![Value::Text(table.to_string())];
    params.extend(key.iter().map(|k| match k {
        crate::change::RawValue::Null => Value::Null,
        crate::change::RawValue::Integer(i) => Value::Integer(*i),
        crate::change::RawValue::Real(f) => Value::Real(*f),
        crate::change::RawValue::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        crate::change::RawValue::Blob(b) => Value::Blob(b.clone()),
    }));
    conn.execute(&sql, rusqlite::params_from_iter(params))
        .map(|_| ())
        .map_err(|source| Error::Source {
            op: "re-enqueue a mismatched row",
            path: path.to_path_buf(),
            table: Some(table.to_string()),
            source,
        })
}

/// Backoff between reconnection attempts: from a blink (a dropped connection) up to a few
/// seconds (a server restarting), never a tight loop.
const RECONNECT_BACKOFF: [u64; 6] = [100, 200, 500, 1000, 2000, 5000];

/// Reconnects after a transient failure (retrying with backoff until it works or sync is
/// stopped) and returns the position PostgreSQL committed: a batch whose COMMIT reached the
/// server before the connection dropped counts as applied, one that did not is redone.
async fn reconnect(client: &mut tokio_postgres::Client, ctx: &ApplyContext<'_>) -> Result<u64> {
    let url = ctx.config.require_target()?;
    for attempt in 0.. {
        tokio::time::sleep(Duration::from_millis(
            RECONNECT_BACKOFF[attempt.min(RECONNECT_BACKOFF.len() - 1)],
        ))
        .await;
        match url.connect().await {
            Ok(c) => {
                *client = c;
                return Ok(sync_position(&*client).await?.unwrap_or(0) as u64);
            }
            Err(e) if e.is_transient() && !ctx.stop.load(Ordering::SeqCst) => {
                tracing::warn!(error = %e, attempt, "PostgreSQL still unreachable");
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop above only ends by returning")
}

/// Milliseconds since `t`, for the per-batch timings of the debug log.
fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// The last boundary that keeps the batch within `max` changes (always at least one boundary,
/// so a huge source transaction is applied whole, as one consistent state).
fn batch_end(bounds: &[Boundary], max: usize) -> Boundary {
    let mut total = 0u64;
    let mut end = bounds[0];
    for b in bounds {
        if total > 0 && total + b.changes > max as u64 {
            break;
        }
        total += b.changes;
        end = *b;
    }
    end
}

/// The change log's and the source WAL's sizes, for status and metrics.
fn measure_sizes(status: &mut SyncStatus, ctx: &ApplyContext<'_>) {
    if let Ok(size) = ctx.log.size() {
        status.change_log_changes = size.changes;
        status.change_log_bytes = size.disk_bytes;
    }
    if let Ok(source) = ctx.config.require_source() {
        let wal = crate::source::wal_path(source);
        status.source_wal_bytes = std::fs::metadata(wal).map_or(0, |m| m.len());
    }
}

fn update_lag(
    status: &mut SyncStatus,
    ctx: &ApplyContext<'_>,
    pending: &[Boundary],
    started: Instant,
) {
    status.captured_seq = ctx.captured.load(Ordering::SeqCst).max(status.applied_seq);
    status.lag_changes = pending.iter().map(|b| b.changes).sum();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    status.lag_seconds = pending
        .first()
        .map_or(0.0, |b| (now - b.committed_at).max(0.0));
    status.changes_per_second =
        status.changes_applied as f64 / started.elapsed().as_secs_f64().max(1e-9);
}
