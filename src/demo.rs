//! The built-in demo: a sample application database with a live writer, walked through the
//! migration journey against the given target, or a private PostgreSQL started for the demo.
//! Today the journey is `check` (with a verified backup taken while the writer writes), then
//! `snapshot --validate`; each later stage joins it as it lands.

use std::path::PathBuf;
use std::time::Instant;

use crate::check::{render_text, run_check, CheckOptions};
use crate::cli::show_progress;
use crate::config::{create_private_dir, Config};
use crate::error::{Error, Result};
use crate::private_pg::{ClusterOptions, PrivateCluster};
use crate::sample_app::{generate, GenerateOptions, LiveWriter, WriterOptions};
use crate::snapshot::{render_summary, run_snapshot, SnapshotOptions, DEFAULT_RANGE_ROWS};
use crate::target::connect::TargetUrl;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub scale: f64,
    pub rate: f64,
    pub dir: Option<PathBuf>,
    pub keep: bool,
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
    let opts = SnapshotOptions {
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
    };
    let snapshot = run_snapshot(&demo_config, &opts, &show_progress)?;
    print!("{}", render_summary(&snapshot));
    let stats = writer.stop()?;
    step(&format!(
        "6. live writer stopped: {} transactions ({} inserts, {} updates, {} deletes)",
        stats.transactions, stats.inserts, stats.updates, stats.deletes
    ));
    Ok(report.exit_code().max(snapshot.exit_code()))
}

fn step(what: &str) {
    println!("\n== {what}");
}
