//! The command line: clap definitions (their doc comments are the `--help` text) and the
//! dispatch from a parsed command to the library. Progress output lives here only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::check::{render_text, run_check, CheckOptions};
use crate::config::{Config, GlobalFlags, LogFormat};
use crate::cutover::handover::{run_sync_handing_over, SyncEnd};
use crate::demo::{run_demo, DemoOptions};
use crate::diff::{render_html, render_text as diff_text, run_diff, DiffOptions};
use crate::error::{Error, Result, EXIT_OK};
use crate::pipeline::{SyncOptions, SyncStatus};
use crate::sample_app;
use crate::snapshot::{render_summary, run_snapshot, LoadProgress, SnapshotOptions};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicBool, Ordering};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (the message says what failed and what to do)
  2  usage error (a flag, the config file or a value in it is wrong)
  3  finished, but the data needs attention (values that would be quarantined, differences found)

The target URL may also come from SQLITE2PG_TARGET or DATABASE_URL (prefer these to --target so
the password stays out of the process list). TLS follows libpq: sslmode=disable|prefer|require|
verify-ca|verify-full and sslrootcert=PATH in the URL.";

/// Move a live application from SQLite to PostgreSQL with a write pause measured in milliseconds.
#[derive(Debug, Parser)]
#[command(name = "sqlite2pg", version, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command shares.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The application's SQLite database file.
    #[arg(long, global = true, value_name = "PATH")]
    pub source: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user:password@host:port/db?sslmode=...); also read from
    /// SQLITE2PG_TARGET or DATABASE_URL.
    #[arg(long, global = true, value_name = "URL")]
    pub target: Option<String>,
    /// PostgreSQL schema the tables go to [default: public].
    #[arg(long, global = true, value_name = "NAME")]
    pub schema: Option<String>,
    /// Where sqlite2pg keeps its state, backups and reports (created 0700)
    /// [default: <source>.sqlite2pg/ beside the source].
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// TOML file with the same keys as these options, plus [columns] type overrides; flags win.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Less log output (errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
}

impl GlobalArgs {
    pub fn flags(&self) -> GlobalFlags {
        GlobalFlags {
            source: self.source.clone(),
            target: self.target.clone(),
            schema: self.schema.clone(),
            state_dir: self.state_dir.clone(),
            config: self.config.clone(),
            log_format: self.log_format,
        }
    }

    /// The tracing filter these flags ask for (RUST_LOG wins when set).
    pub fn log_level(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (q, _) if q > 0 => "error",
            (_, 0) => "warn",
            (_, 1) => "info",
            (_, 2) => "debug",
            _ => "trace",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pre-migration checks of the source and the target, as one report.
    Check(CheckArgs),
    /// Translate the schema and bulk-copy every table into PostgreSQL (COPY BINARY), then keys,
    /// indexes, foreign keys, identities, views. Re-running resumes an unfinished snapshot.
    Snapshot(SnapshotArgs),
    /// Compare both sides row by row (blake3 hashes of one canonical encoding); report as text,
    /// JSON or a self-contained HTML sign-off page. Exit 0 when identical, 3 when not.
    Diff(DiffArgs),
    /// Follow every committed SQLite change into PostgreSQL, exactly once, until stopped
    /// (SIGINT/SIGTERM: finish the batch, exit 0), with --catch-up until caught up, or until a
    /// cutover completes (it pauses for a cutover, and resumes when that one aborts).
    Sync(SyncArgs),
    /// The switch: pause a running sync (if one runs), drain, freeze SQLite writers (BEGIN
    /// IMMEDIATE), drain the last changes, verify counts, move identities, fence SQLite so later
    /// writes fail loudly, release; prints the pause in milliseconds. A running sync then exits
    /// (or resumes when the cutover aborted).
    Cutover(CutoverArgs),
    /// Where every stage stands (snapshot, sync, apply, verification, quarantine, cutover), from
    /// durable state: works while sync runs elsewhere and after it died.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove everything sqlite2pg installed in the source (capture triggers, its change table):
    /// SQLite is exactly as the application knew it.
    Rollback,
    /// Run the built-in demo: a sample app database with a live writer, migrated end to end
    /// (against a private PostgreSQL started for the demo when no --target is given).
    Demo(DemoArgs),
    /// Create the demo's sample application database, or run its live writer against one.
    #[command(subcommand)]
    SampleApp(SampleAppCommand),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Take a verified online backup into the state directory (works while the app writes).
    #[arg(long)]
    pub backup: bool,
    /// Only these tables (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "T1,T2")]
    pub tables: Option<Vec<String>>,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Only these tables (comma-separated); refused if a foreign key would point outside them.
    #[arg(long, value_delimiter = ',', value_name = "T1,T2")]
    pub tables: Option<Vec<String>>,
    /// Parallel copy workers (tables and rowid ranges of large tables), and connections sharing
    /// the post-load's steps (at most 4) [default: CPU cores].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Rows per COPY chunk sent to PostgreSQL.
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: usize,
    /// Keep identifiers' exact case instead of folding ASCII letters to lower case.
    #[arg(long)]
    pub keep_case: bool,
    /// Copy tables without a primary key, keyed by their SQLite rowid in a `sqlite_rowid` column.
    #[arg(long)]
    pub allow_rowid_key: bool,
    /// Drop target tables of the same names that sqlite2pg did not create.
    #[arg(long)]
    pub drop_existing: bool,
    /// Start afresh even if an unfinished snapshot could be resumed from its backup.
    #[arg(long)]
    pub fresh: bool,
    /// Copy from a verified backup of the source (written to the state directory first) instead
    /// of reading the live source directly. By default a source in WAL mode is read live, in
    /// one read view that every copy worker shares: no copy of the file to write, but a re-run
    /// after a failure starts over, and the source's -wal file grows until the copy ends. With
    /// a backup, a re-run resumes where the failed one stopped. Sources not in WAL mode,
    /// --validate and --check-backup always use a backup.
    #[arg(long)]
    pub from_backup: bool,
    /// Do not install change capture in the source (a one-shot copy; `sync` will refuse).
    #[arg(long)]
    pub no_capture: bool,
    /// Compare per-table row counts after the copy (source rows = target rows + quarantined).
    #[arg(long)]
    pub validate: bool,
    /// Tables with more rows are split into rowid ranges of about this many rows, copied in parallel.
    #[arg(long, default_value_t = crate::snapshot::DEFAULT_RANGE_ROWS, hide = true)]
    pub range_rows: u64,
    /// Also run SQLite's `PRAGMA quick_check` on the snapshot's backup, beside the copy. Off by
    /// default: the copy reads every table whole and stops, naming the table, on any corrupt
    /// page; a structure check adds only pages that are not migrated (indexes, free list).
    /// `sqlite2pg check` runs the full integrity_check on the source.
    #[arg(long)]
    pub check_backup: bool,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Exit once everything committed in SQLite when sync started is applied.
    #[arg(long)]
    pub catch_up: bool,
    /// Most changes applied in one PostgreSQL transaction.
    #[arg(long, default_value_t = crate::pipeline::DEFAULT_BATCH_CHANGES)]
    pub batch_size: usize,
    /// Serve Prometheus metrics (/metrics) and a health check (/healthz) on this address.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// /healthz fails when the lag is over this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub health_max_lag: f64,
}

#[derive(Debug, Args)]
pub struct CutoverArgs {
    /// Hard bound on the freeze: past it, writers are released and cutover aborts, SQLite untouched.
    #[arg(long, default_value_t = crate::cutover::DEFAULT_MAX_PAUSE.as_millis() as u64)]
    pub max_pause_ms: u64,
    /// Refuse to freeze when more changes than this are not yet applied.
    #[arg(long, default_value_t = crate::cutover::DEFAULT_MAX_LAG)]
    pub max_lag: u64,
    /// While writers are frozen, also diff every row of every table (the HTML sign-off report
    /// goes to the state directory); any difference aborts. Raise --max-pause-ms to cover it.
    #[arg(long)]
    pub full_verify: bool,
    /// While writers are frozen, diff only the rows changed since each table's last identical
    /// diff (`diff --changed`; tables without one are diffed whole): the sign-off in time
    /// proportional to the changes. Any difference aborts.
    #[arg(long, conflicts_with = "full_verify")]
    pub verify_changed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Html,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Only these tables (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "T1,T2")]
    pub tables: Option<Vec<String>>,
    /// Report format: text on the terminal, JSON (stable schema, see README), or HTML.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Write the report to this file [default: stdout for text and JSON,
    /// <state-dir>/diff-report.html for HTML].
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// List at most this many differing rows; the report says when it is partial.
    #[arg(long, default_value_t = crate::diff::DEFAULT_MAX_DIFFERENCES)]
    pub max_differences: usize,
    /// Compare only this fraction of rows, chosen by key hash (the same rows on both sides).
    #[arg(long, value_name = "P")]
    pub sample: Option<f64>,
    /// Compare only keys in a range: TABLE=LO..HI (single integer keys; repeatable).
    #[arg(long, value_name = "TABLE=LO..HI")]
    pub key_range: Vec<String>,
    /// Compare only the rows changed since the last diff that found each table identical (the
    /// sign-off after sync: time in proportion to the changes); tables without such a diff are
    /// compared whole. Reads sync's change log, so run it with sync stopped.
    #[arg(long, conflicts_with_all = ["sample", "key_range"])]
    pub changed: bool,
    /// Target names keep the source's exact case (as snapshot --keep-case created them).
    #[arg(long)]
    pub keep_case: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Sample app size: 1.0 = 10k users, 1M jobs, 2M job history rows.
    #[arg(long, default_value_t = 0.02)]
    pub scale: f64,
    /// Live writer transactions per second while the demo runs.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Work directory for the sample database and state [default: a new temporary directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the work directory when the demo ends.
    #[arg(long)]
    pub keep: bool,
    /// Seconds sync follows the live writer (lag on screen) before the writer stops.
    #[arg(long, default_value_t = 6.0)]
    pub sync_seconds: f64,
}

#[derive(Debug, Subcommand)]
pub enum SampleAppCommand {
    /// Create the sample app database at --source.
    Generate {
        /// 1.0 = 10k users, 1M jobs, 2M job history rows.
        #[arg(long, default_value_t = 0.01)]
        scale: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Write to the sample app database at --source like the real app would, until the time is up.
    Write {
        /// Transactions per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// How long to write, in seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 2)]
        seed: u64,
    },
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let config = Config::resolve(&cli.global.flags())?;
    match cli.command {
        Command::Check(args) => check(&config, args),
        Command::Snapshot(args) => snapshot(&config, args),
        Command::Diff(args) => diff(&config, args),
        Command::Sync(args) => sync(&config, args),
        Command::Cutover(args) => cutover(&config, args),
        Command::Rollback => rollback(&config),
        Command::Status { json } => {
            let status = crate::status::read_status(&config)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).expect("a status always serialises")
                );
            } else {
                print!("{}", crate::status::render_status(&status));
            }
            Ok(EXIT_OK)
        }
        Command::Demo(args) => run_demo(
            &config,
            &DemoOptions {
                scale: args.scale,
                rate: args.rate,
                dir: args.dir,
                keep: args.keep,
                sync_seconds: args.sync_seconds,
            },
        ),
        Command::SampleApp(cmd) => sample_app_command(&config, cmd),
    }
}

fn check(config: &Config, args: CheckArgs) -> Result<i32> {
    let report = run_check(
        config,
        &CheckOptions {
            backup: args.backup,
            tables: args.tables,
        },
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a check report always serialises")
        );
    } else {
        print!("{}", render_text(&report));
    }
    Ok(report.exit_code())
}

fn snapshot(config: &Config, args: SnapshotArgs) -> Result<i32> {
    let opts = SnapshotOptions {
        tables: args.tables,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        batch_size: args.batch_size,
        keep_case: args.keep_case,
        allow_rowid_key: args.allow_rowid_key,
        drop_existing: args.drop_existing,
        fresh: args.fresh,
        validate: args.validate,
        capture: !args.no_capture,
        range_rows: args.range_rows,
        check_backup: args.check_backup,
        from_backup: args.from_backup,
    };
    let report = run_snapshot(config, &opts, &show_progress)?;
    print!("{}", render_summary(&report));
    Ok(report.exit_code())
}

/// Per-table progress bars on a terminal; a log line every few seconds otherwise.
pub fn show_progress(progress: &LoadProgress, done: &AtomicBool) {
    use std::io::IsTerminal;
    let tick = std::time::Duration::from_millis(200);
    if !std::io::stderr().is_terminal() {
        let mut last = std::time::Instant::now();
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            if last.elapsed().as_secs() >= 5 {
                last = std::time::Instant::now();
                let tables = progress.tables.iter();
                let done: u64 = tables.clone().map(|t| t.2.load(Ordering::Relaxed)).sum();
                let total: u64 = tables.map(|t| t.1.load(Ordering::Relaxed)).sum();
                tracing::info!(done, total, unit = progress.unit, "snapshot progress");
            }
        }
        return;
    }
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template(&format!(
        "{{prefix:>24}} {{wide_bar}} {{pos}}/{{len}} {} {{per_sec}} eta {{eta}}",
        progress.unit
    ))
    .expect("a valid progress template");
    let bars: Vec<ProgressBar> = progress
        .tables
        .iter()
        .map(|(name, total, _)| {
            multi.add(
                ProgressBar::new(total.load(Ordering::Relaxed))
                    .with_style(style.clone())
                    .with_prefix(name.clone()),
            )
        })
        .collect();
    while !done.load(Ordering::Relaxed) {
        for (bar, (_, total, count)) in bars.iter().zip(&progress.tables) {
            bar.set_length(total.load(Ordering::Relaxed));
            bar.set_position(count.load(Ordering::Relaxed));
        }
        std::thread::sleep(tick);
    }
    for bar in bars {
        bar.finish();
    }
}

fn diff(config: &Config, args: DiffArgs) -> Result<i32> {
    let opts = DiffOptions {
        tables: args.tables,
        keep_case: args.keep_case,
        max_differences: args.max_differences,
        sample: args.sample,
        key_ranges: args.key_range,
        changed: args.changed,
    };
    let report = run_diff(config, &opts)?;
    let (text, default_file) = match args.format {
        ReportFormat::Text => (diff_text(&report), None),
        ReportFormat::Json => (
            serde_json::to_string_pretty(&report).expect("a diff report always serialises"),
            None,
        ),
        ReportFormat::Html => (
            render_html(&report),
            Some(config.ensure_state_dir()?.join("diff-report.html")),
        ),
    };
    match args.output.or(default_file) {
        Some(path) => {
            std::fs::write(&path, text).map_err(|source| Error::Io {
                op: "write the report to",
                path: path.clone(),
                source,
            })?;
            println!("{}", diff_text(&report));
            println!("report written to {}", path.display());
        }
        None => println!("{text}"),
    }
    Ok(report.exit_code())
}

/// Set by SIGINT/SIGTERM: the running command finishes what it is doing and exits cleanly.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to [`STOP`] (the handler only stores an atomic: async-signal-safe).
pub fn install_stop_handler() {
    let handler = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only stores to a static atomic is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn sync(config: &Config, args: SyncArgs) -> Result<i32> {
    install_stop_handler();
    let metrics = args
        .metrics_addr
        .as_ref()
        .map(|_| std::sync::Arc::new(crate::metrics::Metrics::new(args.health_max_lag)));
    let server_stop = std::sync::Arc::new(AtomicBool::new(false));
    let server = match (&args.metrics_addr, &metrics) {
        (Some(addr), Some(m)) => Some(crate::metrics::serve(addr, m.clone(), server_stop.clone())?),
        _ => None,
    };
    let opts = SyncOptions {
        metrics,
        catch_up: args.catch_up,
        batch_changes: args.batch_size.max(1),
        ..SyncOptions::default()
    };
    let ended = run_sync_handing_over(config, &opts, &STOP, &|s: &SyncStatus| {
        eprintln!(
            "sync: applied seq {} · lag {} changes / {:.2} s · {} changes in {} batches ({:.0}/s) · {} quarantined",
            s.applied_seq, s.lag_changes, s.lag_seconds, s.changes_applied, s.batches, s.changes_per_second, s.quarantined
        );
    });
    server_stop.store(true, Ordering::SeqCst);
    if let Some(server) = server {
        let _ = server.join();
    }
    let status = match ended? {
        SyncEnd::Stopped(status) => status,
        SyncEnd::CutOver { status, reported } => {
            if reported {
                eprintln!("cutover completed; sync stopped");
            } else {
                eprintln!("SQLite was fenced by a cutover that did not finish its report: run `sqlite2pg cutover` again to finish it; sync stopped");
            }
            status
        }
    };
    println!(
        "{}",
        serde_json::to_string(&status).expect("sync status always serialises")
    );
    Ok(if status.quarantined > 0 {
        crate::error::EXIT_ATTENTION
    } else {
        EXIT_OK
    })
}

fn cutover(config: &Config, args: CutoverArgs) -> Result<i32> {
    let opts = crate::cutover::CutoverOptions {
        max_pause: std::time::Duration::from_millis(args.max_pause_ms),
        max_lag: args.max_lag,
        full_verify: args.full_verify,
        verify_changed: args.verify_changed,
    };
    let report = crate::cutover::run_cutover(config, &opts)?;
    for t in &report.tables {
        println!("{:<32} {:>12} rows", t.table, t.rows);
    }
    match report.pause_ms {
        Some(pause) => println!(
            "cutover done: writers paused {pause:.1} ms; {} changes drained before and {} during the freeze; final change {}; SQLite fenced at {}",
            report.changes_before_freeze, report.changes_during_freeze, report.final_seq, report.fenced_at
        ),
        None => println!(
            "cutover done: completed after an interrupted run that had fenced SQLite at {} (final change {}, checked against PostgreSQL); that run's pause was not recorded",
            report.fenced_at, report.final_seq
        ),
    }
    if let Some(full) = &report.full_diff {
        println!(
            "full diff while frozen: identical (fingerprint {}); sign-off report: {}",
            full.fingerprint,
            full.html.display()
        );
    }
    Ok(EXIT_OK)
}

fn rollback(config: &Config) -> Result<i32> {
    let path = config.require_source()?;
    // The report first: a rollback interrupted after it still converges when run again, and
    // nothing says "cut over" once SQLite is the system of record again.
    let state_dir = config.state_dir()?;
    // Writes PostgreSQL received after the switch are not in SQLite: list them before SQLite
    // becomes the system of record again, so nothing is lost silently.
    if let Some(report) = crate::cutover::read_report(&state_dir)? {
        let writes = crate::cutover::writes_after_cutover(config, &report, 20)
            .unwrap_or_else(|e| {
                println!("could not read PostgreSQL's writes after the cutover ({e}): compare it with SQLite before relying on SQLite alone");
                Vec::new()
            });
        for w in &writes {
            println!(
                "PostgreSQL received writes after the cutover in {}: {} row(s) inserted or updated; {} rows at the cutover, {} now",
                w.table, w.written, w.rows_at_cutover, w.rows_now
            );
            for row in &w.examples {
                println!("  {row}");
            }
        }
        if !writes.is_empty() {
            println!("these writes are in PostgreSQL only: SQLite does not have them after this rollback");
        }
    }
    if crate::cutover::remove_report(&state_dir)? {
        println!(
            "removed {} (the cutover is undone)",
            state_dir.join(crate::cutover::REPORT_FILE).display()
        );
    }
    let conn = crate::source::open_read_write(path)?;
    let removed = crate::source::capture::uninstall(&conn, path)?;
    if removed.is_empty() {
        println!(
            "nothing to remove: sqlite2pg has nothing installed in {}",
            path.display()
        );
    }
    for name in removed {
        println!("removed {name}");
    }
    Ok(EXIT_OK)
}

fn sample_app_command(config: &Config, cmd: SampleAppCommand) -> Result<i32> {
    let path = config.require_source()?;
    match cmd {
        SampleAppCommand::Generate { scale, seed } => {
            let summary = sample_app::generate(path, &sample_app::GenerateOptions { scale, seed })?;
            for t in &summary.tables {
                println!("{:<14} {:>10} rows", t.table, t.rows);
            }
            println!(
                "created {} in {:.1} s",
                path.display(),
                summary.elapsed.as_secs_f64()
            );
        }
        SampleAppCommand::Write {
            rate,
            seconds,
            seed,
        } => {
            if !(seconds.is_finite() && seconds > 0.0) {
                return Err(Error::Config {
                    field: "--seconds".into(),
                    reason: "must be a positive number".into(),
                });
            }
            let writer = sample_app::LiveWriter::start(
                path,
                sample_app::WriterOptions {
                    rate_per_sec: rate,
                    seed,
                },
            )?;
            std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
            let stats = writer.stop()?;
            println!(
                "{}",
                serde_json::to_string(&stats).expect("writer stats always serialise")
            );
        }
    }
    Ok(EXIT_OK)
}
