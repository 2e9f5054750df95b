//! The built-in demo: a sample application database with a live writer, walked through the
//! migration journey against the given target, or a private PostgreSQL started for the demo.
//! The journey today: `check` (with a verified backup taken while the writer writes),
//! `snapshot --validate`, `sync` following the writer with its lag on screen, then `diff` with the
//! HTML sign-off report, then `cutover` (pause printed), a write the fenced SQLite refuses and
//! the same write landing in PostgreSQL.

use std::path::PathBuf;
use std::time::Instant;

use crate::check::{render_text, run_check, CheckOptions};
use crate::cli::show_progress;
use crate::config::{create_private_dir, Config};
use crate::cutover::{run_cutover, CutoverOptions, DEFAULT_MAX_LAG, DEFAULT_MAX_PAUSE};
use crate::diff::{render_html, render_text as diff_text, run_diff, DiffOptions};
use crate::error::{Error, Result};
use crate::pipeline::{run_sync, SyncOptions, SyncStatus};
use crate::private_pg::{ClusterOptions, PrivateCluster};
use crate::sample_app::{generate, GenerateOptions, LiveWriter, WriterOptions};
use crate::snapshot::{render_summary, run_snapshot, SnapshotOptions, DEFAULT_RANGE_ROWS};
use crate::target::connect::TargetUrl;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub scale: f64,
    pub rate: f64,
    pub dir: Option<PathBuf>,
    pub keep: bool,
    /// Seconds sync follows the live writer before the writer stops.
    pub sync_seconds: f64,
}

/// Runs the demo; returns the exit code of the journey's verdict.
pub fn run_demo(config: &Config, opts: &DemoOptions) -> Result<i32> {
    let started = Instant::now();
    let (dir, temporary) = match &opts.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("sqlite2pg-demo-{}", std::process::id())),
            true,
        ),
    };
    create_private_dir(&dir)?;
    let result = journey(config, opts, &dir);
    if temporary && !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("work directory kept: {}", dir.display());
    }
    println!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    result
}

fn journey(config: &Config, opts: &DemoOptions, dir: &std::path::Path) -> Result<i32> {
    let source = dir.join("app.db");
    if source.exists() {
        return Err(Error::Config {
            field: "--dir".into(),
            reason: format!(
                "{} already exists; pick an empty directory",
                source.display()
            ),
        });
    }
    step(&format!(
        "1. creating the sample app database (scale {})",
        opts.scale
    ));
    let summary = generate(
        &source,
        &GenerateOptions {
            scale: opts.scale,
            seed: 1,
        },
    )?;
    for t in &summary.tables {
        println!("   {:<14} {:>9} rows", t.table, t.rows);
    }
    step(&format!(
        "2. starting the live writer ({} transactions/s)",
        opts.rate
    ));
    let writer = LiveWriter::start(
        &source,
        WriterOptions {
            rate_per_sec: opts.rate,
            seed: 2,
        },
    )?;
    let (_cluster, target) = match &config.target {
        Some(url) => (None, url.clone()),
        None => {
            step("3. starting a private PostgreSQL (no --target given)");
            let cluster = PrivateCluster::start(&ClusterOptions::default())?;
            let url = TargetUrl::parse(&cluster.url("postgres"))?;
            println!(
                "   listening on 127.0.0.1:{} (pid {})",
                cluster.port(),
                cluster.pid()
            );
            (Some(cluster), url)
        }
    };
    let demo_config = config.with_paths(source.clone(), dir.join("state"), Some(target));
    step("4. sqlite2pg check --backup (while the writer writes)");
    let report = run_check(
        &demo_config,
        &CheckOptions {
            backup: true,
            tables: None,
        },
    )?;
    print!("{}", render_text(&report));
    step("5. sqlite2pg snapshot --validate (while the writer writes)");
    let snap_opts = SnapshotOptions {
        tables: None,
        jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        batch_size: 10_000,
        keep_case: false,
        allow_rowid_key: false,
        drop_existing: false,
        fresh: false,
        validate: true,
        capture: true,
        range_rows: DEFAULT_RANGE_ROWS,
        check_backup: false,
        from_backup: false,
    };
    let snapshot = run_snapshot(&demo_config, &snap_opts, &show_progress)?;
    print!("{}", render_summary(&snapshot));
    let lag = sync_while_writing(
        &demo_config,
        std::time::Duration::from_secs_f64(opts.sync_seconds),
    )?;
    let stats = writer.stop()?;
    step(&format!(
        "7. live writer stopped: {} transactions ({} inserts, {} updates, {} deletes); sync catches up",
        stats.transactions, stats.inserts, stats.updates, stats.deletes
    ));
    let stop = AtomicBool::new(false);
    let caught_up = run_sync(
        &demo_config,
        &SyncOptions {
            catch_up: true,
            ..SyncOptions::default()
        },
        &stop,
        &print_status,
    )?;
    print_status(&caught_up);
    step("8. sqlite2pg diff --format html (the live SQLite file against PostgreSQL)");
    let diff = run_diff(&demo_config, &DiffOptions::default())?;
    print!("{}", diff_text(&diff));
    let html = demo_config.ensure_state_dir()?.join("diff-report.html");
    std::fs::write(&html, render_html(&diff)).map_err(|source| Error::Io {
        op: "write the report to",
        path: html.clone(),
        source,
    })?;
    println!("\nsign-off report: {}", html.display());
    println!("largest lag seen while the writer wrote: {lag:.3} s");
    step("9. sqlite2pg cutover");
    let opts = CutoverOptions {
        max_pause: DEFAULT_MAX_PAUSE,
        max_lag: DEFAULT_MAX_LAG,
        full_verify: false,
        verify_changed: false,
    };
    let cut = run_cutover(&demo_config, &opts)?;
    println!(
        "   writers paused {}; final change {}; identities moved: {}",
        cut.pause_ms.map_or(
            "(not recorded: an interrupted cutover was completed)".into(),
            |ms| format!("{ms:.1} ms")
        ),
        cut.final_seq,
        cut.identities.len()
    );
    step("10. the application's next write");
    late_write(&demo_config, &source)?;
    println!("\nsign-off report: {}", html.display());
    Ok(report
        .exit_code()
        .max(snapshot.exit_code())
        .max(diff.exit_code()))
}

/// The same write against the old SQLite file (the fence refuses it) and PostgreSQL (it lands).
fn late_write(config: &Config, source: &std::path::Path) -> Result<()> {
    const LATE_WRITE: &str =
        "INSERT INTO app_state (key, value) VALUES ('after-cutover', '{\"ok\": true}')";
    let conn = rusqlite::Connection::open(source).map_err(|e| Error::Source {
        op: "open",
        path: source.to_path_buf(),
        table: None,
        source: e,
    })?;
    match conn.execute(LATE_WRITE, []) {
        Ok(_) => {
            return Err(Error::Data {
                table: "app_state".into(),
                reason: "the fenced SQLite accepted a write".into(),
            })
        }
        Err(e) => println!("   SQLite:     {e}"),
    }
    let runtime = crate::target::connect::client_runtime()?;
    let url = config.require_target()?;
    runtime.block_on(async {
        let client = url.connect().await?;
        client
            .execute(LATE_WRITE, &[])
            .await
            .map_err(|source| Error::Target {
                op: "write after cutover",
                table: Some("app_state".into()),
                source,
            })
    })?;
    println!("   PostgreSQL: the same INSERT succeeded");
    Ok(())
}

/// Runs sync beside the live writer for `duration`, printing its status line; returns the
/// largest lag (seconds) it reported.
fn sync_while_writing(config: &Config, duration: std::time::Duration) -> Result<f64> {
    step(&format!(
        "6. sqlite2pg sync (while the writer writes, {} s)",
        duration.as_secs()
    ));
    let stop = AtomicBool::new(false);
    let worst = std::sync::Mutex::new(0.0f64);
    let status = |s: &SyncStatus| {
        let mut w = worst.lock().expect("not poisoned");
        *w = w.max(s.lag_seconds);
        print_status(s);
    };
    std::thread::scope(|scope| {
        let runner = scope.spawn(|| run_sync(config, &SyncOptions::default(), &stop, &status));
        let deadline = std::time::Instant::now() + duration;
        while std::time::Instant::now() < deadline && !runner.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        stop.store(true, Ordering::SeqCst);
        runner.join().expect("the sync thread panicked")
    })?;
    let worst = *worst.lock().expect("not poisoned");
    Ok(worst)
}

fn print_status(s: &SyncStatus) {
    println!(
        "   sync: applied seq {:>8} · lag {:>5} changes / {:>6.3} s · {} changes applied in {} batches",
        s.applied_seq, s.lag_changes, s.lag_seconds, s.changes_applied, s.batches
    );
}

fn step(what: &str) {
    println!("\n== {what}");
}
