//! Cutover benchmark: `cargo bench --bench cutover [-- --scale 1] [--runs 10] [--rate 1000]
//! [--sync-seconds 5] [--no-record]`.
//!
//! Measures the write pause of `cutover` (issue 6: p50/p95 over 10 runs on the sample app at
//! scale 1 under a 1k transactions/s writer; target p95 under 1 s). Generates the sample app
//! database once and starts one private PostgreSQL cluster; then each run is a whole, real
//! migration on fresh copies: the pristine database copied, `snapshot` (with capture) into a new
//! PostgreSQL database, the sample app's [`LiveWriter`] started at `--rate`, `sync` following it
//! for `--sync-seconds` (in this process, on a thread), sync stopped as SIGTERM stops it, and at
//! once `cutover` with the writer still writing. The pause and the time of each frozen step come
//! from the cutover's report; the run then checks that the writer's next write was refused by
//! the fence and that `diff` finds PostgreSQL identical to the fenced SQLite, and drops both
//! copies. The results are printed and replace the `cutover` section of BENCHMARKS.md (unless
//! `--no-record`); `-v` (or `RUST_LOG`) prints sqlite2pg's log on stderr.

// `sqlite2pg::Error` is large on purpose (see lib.rs); closures here return it as is.
#![allow(clippy::result_large_err)]

mod support;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlite2pg::cutover::{
    run_cutover, CutoverOptions, CutoverReport, DEFAULT_MAX_LAG, DEFAULT_MAX_PAUSE,
};
use sqlite2pg::diff::{run_diff, DiffOptions};
use sqlite2pg::pipeline::{run_sync, SyncOptions, SyncStatus};
use sqlite2pg::private_pg::{ClusterOptions, PrivateCluster};
use sqlite2pg::sample_app::{LiveWriter, WriterOptions};
use sqlite2pg::target::connect::TargetUrl;
use support::{
    generate_source, generator_child, init_logging, percentile, record, snapshot, sync_config,
    verdict, Pg, Source, MB,
};

/// The pause's p95 that we aim for.
const TARGET_P95_MS: f64 = 1000.0;
/// How long the writer may go on after cutover returns before its next write must have met the
/// fence: at 1k transactions/s, dozens of attempts.
const FENCE_GRACE: Duration = Duration::from_millis(100);
/// What the fence's error says.
const FENCED: &str = "migrated to PostgreSQL";
/// The frozen steps as the report names them (each ends at its time), and their labels here.
const STEPS: [(&str, &str); 6] = [
    ("lock taken", "lock"),
    ("drained", "drain"),
    ("verified", "row counts"),
    ("identities moved", "identities"),
    ("fenced", "fence"),
    ("released", "commit"),
];

fn main() {
    if generator_child() {
        return;
    }
    let settings = Settings::from_args();
    init_logging(settings.verbose);
    let work = tempfile::Builder::new()
        .prefix("sqlite2pg-bench-cutover-")
        .tempdir()
        .expect("create the bench work directory");
    let source = generate_source(work.path(), settings.scale);
    let cluster =
        PrivateCluster::start(&ClusterOptions::default()).expect("start a private PostgreSQL");
    let admin = TargetUrl::parse(&cluster.url("postgres")).expect("the cluster's URL parses");
    let pg = Pg::connect(&admin);
    let server_version = pg.text("SHOW server_version");
    let runs: Vec<Run> = (0..settings.runs)
        .map(|i| run_once(&settings, &source, &admin, &pg, work.path(), i))
        .collect();
    let section = render(&settings, &source, &server_version, &runs);
    println!("\n{section}");
    if settings.record {
        record("cutover", &section);
    }
}

struct Settings {
    scale: f64,
    runs: usize,
    /// Writer transactions per second.
    rate: f64,
    /// Seconds sync follows the writer before the cutover.
    sync_seconds: f64,
    record: bool,
    verbose: bool,
}

impl Settings {
    fn from_args() -> Settings {
        let mut settings = Settings {
            scale: 1.0,
            runs: 10,
            rate: 1000.0,
            sync_seconds: 5.0,
            record: true,
            verbose: false,
        };
        let mut args = std::env::args().skip(1);
        let number = |value: Option<String>, flag: &str| -> f64 {
            let n = value.and_then(|v| v.parse::<f64>().ok());
            n.filter(|n| *n > 0.0)
                .unwrap_or_else(|| panic!("{flag} needs a positive number"))
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--scale" => settings.scale = number(args.next(), "--scale"),
                "--runs" => settings.runs = number(args.next(), "--runs") as usize,
                "--rate" => settings.rate = number(args.next(), "--rate"),
                "--sync-seconds" => settings.sync_seconds = number(args.next(), "--sync-seconds"),
                "--no-record" => settings.record = false,
                "-v" | "--verbose" => settings.verbose = true,
                // cargo passes --bench; no other harness flag applies to this bench.
                _ => {}
            }
        }
        settings
    }

    /// The command that reproduces this run.
    fn command(&self) -> String {
        let mut extra = Vec::new();
        if self.scale != 1.0 {
            extra.push(format!("--scale {}", self.scale));
        }
        if self.runs != 10 {
            extra.push(format!("--runs {}", self.runs));
        }
        if self.rate != 1000.0 {
            extra.push(format!("--rate {}", self.rate));
        }
        if self.sync_seconds != 5.0 {
            extra.push(format!("--sync-seconds {}", self.sync_seconds));
        }
        match extra.is_empty() {
            true => "cargo bench --bench cutover".to_string(),
            false => format!("cargo bench --bench cutover -- {}", extra.join(" ")),
        }
    }
}

/// One migration ending in a cutover.
struct Run {
    snapshot_seconds: f64,
    /// Writer transactions per second while sync followed it.
    writer_tps: f64,
    sync: SyncStatus,
    report: CutoverReport,
    /// The writer's next write after the cutover failed on the fence.
    fenced: bool,
    identical: bool,
}

impl Run {
    fn pause_ms(&self) -> f64 {
        self.report
            .pause_ms
            .expect("a cutover that froze reports its pause")
    }

    /// Milliseconds spent in each step of `STEPS` (0 when the report lacks one).
    fn step_ms(&self) -> Vec<f64> {
        let mut previous = 0.0;
        STEPS
            .iter()
            .map(|(name, _)| {
                let end = self.report.freeze_steps.iter().find(|s| s.step == *name);
                let end = end.map_or(previous, |s| s.ms);
                let spent = end - previous;
                previous = end;
                spent
            })
            .collect()
    }
}

/// Fresh copies (SQLite file, PostgreSQL database), snapshot, writer, sync, cutover, checks.
fn run_once(
    settings: &Settings,
    source: &Source,
    admin: &TargetUrl,
    pg: &Pg,
    work: &Path,
    i: usize,
) -> Run {
    let dir = work.join(format!("run-{i}"));
    fs::create_dir_all(&dir).expect("create the run directory");
    let path = dir.join("app.db");
    fs::copy(&source.path, &path).expect("copy the pristine sample database");
    let db = format!("cutover_{i}");
    pg.execute(&format!("CREATE DATABASE {db}"));
    let config = sync_config(&path, &admin.with_dbname(&db));
    let snapshot_seconds = snapshot(&config);
    let writer = LiveWriter::start(
        &path,
        WriterOptions {
            rate_per_sec: settings.rate,
            seed: 100 + i as u64,
        },
    )
    .expect("start the live writer");
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let sync = std::thread::scope(|s| {
        let sync = s.spawn(|| run_sync(&config, &SyncOptions::default(), &stop, &|_| {}));
        std::thread::sleep(Duration::from_secs_f64(settings.sync_seconds));
        stop.store(true, Ordering::SeqCst);
        sync.join().expect("the sync thread panicked")
    });
    let sync = sync.expect("sync ran without errors");
    let writer_tps = writer.stats().transactions as f64 / started.elapsed().as_secs_f64();
    let opts = CutoverOptions {
        max_pause: DEFAULT_MAX_PAUSE,
        max_lag: DEFAULT_MAX_LAG,
        full_verify: false,
        verify_changed: false,
    };
    let report = run_cutover(&config, &opts).expect("cutover");
    std::thread::sleep(FENCE_GRACE);
    let fenced = matches!(writer.stop(), Err(e) if format!("{e:?}").contains(FENCED));
    let identical = run_diff(&config, &DiffOptions::default())
        .expect("diff after the cutover")
        .identical;
    let run = Run {
        snapshot_seconds,
        writer_tps,
        sync,
        report,
        fenced,
        identical,
    };
    eprintln!(
        "run {}: pause {:.1} ms (steps {:?}), {} changes before and {} during the freeze; \
         fenced {fenced}, identical {identical}",
        i + 1,
        run.pause_ms(),
        run.step_ms(),
        run.report.changes_before_freeze,
        run.report.changes_during_freeze,
    );
    pg.execute(&format!("DROP DATABASE {db} WITH (FORCE)"));
    fs::remove_dir_all(&dir).expect("remove the run directory");
    run
}

fn render(settings: &Settings, source: &Source, server_version: &str, runs: &[Run]) -> String {
    let mut pauses: Vec<f64> = runs.iter().map(Run::pause_ms).collect();
    pauses.sort_by(f64::total_cmp);
    let (p50, p95) = (percentile(&pauses, 0.5), percentile(&pauses, 0.95));
    let max = pauses.last().copied().unwrap_or(f64::NAN);
    let mut out = format!(
        "## Cutover: the write pause\n\n{} UTC · scale {} · {} rows · SQLite file {:.1} MB · \
         PostgreSQL {server_version} (private cluster, fsync off) · 2 cores, shared and noisy · \
         {} runs · writer at {} transactions/s\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        settings.scale,
        source.rows,
        source.bytes as f64 / MB,
        runs.len(),
        settings.rate,
    );
    out.push_str(&format!(
        "- pause over {} runs: p50 **{p50:.1} ms**, p95 **{p95:.1} ms**, max {max:.1} ms — target \
         p95 < {TARGET_P95_MS:.0} ms: {}\n",
        runs.len(),
        verdict(p95 < TARGET_P95_MS)
    ));
    let count = |f: fn(&Run) -> bool| runs.iter().filter(|r| f(r)).count();
    out.push_str(&format!(
        "- every cutover real: the writer's next write refused by the fence in {} of {} runs; \
         `diff` after the cutover identical in {} of {}\n",
        count(|r| r.fenced),
        runs.len(),
        count(|r| r.identical),
        runs.len()
    ));
    out.push_str(&format!(
        "- where the pause goes (median ms per step): {}\n\n",
        median_steps(runs)
    ));
    out.push_str(&runs_table(runs));
    out.push_str(&method_note(settings));
    out
}

/// "lock 1.0, drain 2.0, …": the median of each step over the runs.
fn median_steps(runs: &[Run]) -> String {
    let steps: Vec<Vec<f64>> = runs.iter().map(Run::step_ms).collect();
    let parts: Vec<String> = STEPS
        .iter()
        .enumerate()
        .map(|(k, (_, label))| {
            let mut column: Vec<f64> = steps.iter().map(|s| s[k]).collect();
            column.sort_by(f64::total_cmp);
            format!("{label} {:.1}", percentile(&column, 0.5))
        })
        .collect();
    parts.join(", ")
}

fn runs_table(runs: &[Run]) -> String {
    let labels: Vec<&str> = STEPS.iter().map(|(_, label)| *label).collect();
    let mut out = format!(
        "| run | pause ms | {} ms | changes before / during the freeze | writer tx/s | sync \
         applied | snapshot s | fenced | diff |\n|---:|---:|{}---:|---:|---:|---:|---|---|\n",
        labels.join(" ms | "),
        "---:|".repeat(labels.len())
    );
    for (i, r) in runs.iter().enumerate() {
        let steps: Vec<String> = r.step_ms().iter().map(|ms| format!("{ms:.1}")).collect();
        out.push_str(&format!(
            "| {} | {:.1} | {} | {} / {} | {:.0} | {} changes | {:.1} | {} | {} |\n",
            i + 1,
            r.pause_ms(),
            steps.join(" | "),
            r.report.changes_before_freeze,
            r.report.changes_during_freeze,
            r.writer_tps,
            r.sync.changes_applied,
            r.snapshot_seconds,
            if r.fenced { "yes" } else { "**no**" },
            if r.identical {
                "identical"
            } else {
                "**differs**"
            },
        ));
    }
    out
}

fn method_note(settings: &Settings) -> String {
    format!(
        "\nEach run is a whole migration on fresh copies: the generated database copied \
         (untouched, no capture), `snapshot` with capture into a new PostgreSQL database, the \
         sample app's `LiveWriter` at {} transactions/s (`BEGIN IMMEDIATE`, WAL, 5 s busy \
         timeout; about 1.7 row changes each), `sync` following it for {} s on a thread of this \
         process, sync stopped (its stop flag, as SIGTERM sets it), then at once `run_cutover` \
         with the default `--max-pause-ms` and `--max-lag`, the writer still writing. The pause \
         is the report's `pause_ms`: from asking for SQLite's write lock to the COMMIT that \
         fences SQLite and releases the writers. The steps are the report's `freeze_steps`: \
         waiting for the lock, the last drain (capture and apply up to the final change, proven \
         from PostgreSQL's committed position), row counts of every table on both sides, \
         identities, fence triggers and record, commit. \"Before the freeze\" are the changes \
         the cutover applied before freezing (what sync left and what the writer wrote since \
         sync stopped). After the cutover the writer gets {} ms to meet the fence, then `diff` \
         compares the whole database. With 10 runs the nearest-rank p95 is the largest pause.\n\n\
         Reproduce: `{}` (needs the PostgreSQL server binaries; `-v` shows sqlite2pg's debug \
         log).\n",
        settings.rate,
        settings.sync_seconds,
        FENCE_GRACE.as_millis(),
        settings.command()
    )
}
