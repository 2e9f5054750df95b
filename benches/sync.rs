//! Sync benchmark: `cargo bench --bench sync [-- --scale 0.1] [--seconds 20] [--no-record]`.
//!
//! Generates the sample app database (scale 1 = 10k users, 1M jobs, 2M job history rows; default
//! scale 0.1), starts one private PostgreSQL cluster and measures, in one run:
//! 1. **trigger overhead**: the sample app's [`LiveWriter`], unthrottled, on a copy of the
//!    database without change capture and on a copy with the capture triggers installed, in
//!    alternating rounds (A B B A, so drift of the shared machine hits both alike); the verdict
//!    is the ratio of their transactions per second (target ≥ 0.6);
//! 2. **sustained apply rate**: a snapshot (with capture) into a fresh database, then a backlog
//!    (the unthrottled writer for a few seconds, then one bulk UPDATE of every `jobs` row and one
//!    of every `job_history` row, each in one transaction), then `run_sync` with `catch_up`:
//!    changes applied per second of its wall time (target ≥ 50k/s);
//! 3. **end-to-end lag** at 1k and 5k writer transactions/s: sync runs in-process on a thread;
//!    every 20 ms a probe transaction writes a counter into `app_state` (key `bench-probe`) and
//!    notes the instant its commit returned; PostgreSQL is polled every 5 ms for the counter and
//!    each probe's lag is the instant it was first seen minus its commit instant (target p99 <
//!    250 ms at 1k/s);
//! 4. **RSS over time**: this process's VmRSS (sync runs in it, with the shipped binary's
//!    allocator, mimalloc) every second during the lag runs;
//! 5. **sign-off cost**: after the lag runs and a catch-up, `diff --changed` (the rows changed
//!    since the full diff taken right after the snapshot) against a full `diff` of the same
//!    data; both must find the sides identical.
//!
//! The machine is shared and noisy: the trigger verdict is a ratio measured side by side; the
//! apply rate and lags are absolute and move from run to run. The results are printed and
//! replace the `sync` section of BENCHMARKS.md (unless `--no-record`; `--apply-only` runs only
//! part 2 and prints it, for profiling apply). `-v` (or `RUST_LOG`)
//! prints sqlite2pg's log (with `-v`: its debug lines, e.g. "batch applied") on stderr.

// `sqlite2pg::Error` is large on purpose (see lib.rs); closures here return it as is.
#![allow(clippy::result_large_err)]

mod support;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// The allocator the shipped binary uses (src/main.rs): sync runs in this process, so its RSS is
/// measured as users would see it (glibc's arenas behave differently).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use sqlite2pg::config::Config;
use sqlite2pg::diff::{run_diff, DiffOptions};
use sqlite2pg::pipeline::{run_sync, SyncOptions, SyncStatus};
use sqlite2pg::private_pg::{ClusterOptions, PrivateCluster};
use sqlite2pg::sample_app::{LiveWriter, WriterOptions, WriterStats};
use sqlite2pg::source::capture;
use sqlite2pg::source::introspect::read_schema;
use sqlite2pg::target::connect::TargetUrl;
use support::{
    generate_source, generator_child, init_logging, percentile, record, snapshot, sync_config,
    verdict, Pg, Source, MB,
};

/// "Unthrottled": the highest rate `WriterOptions` accepts (one transaction per microsecond),
/// far above what one SQLite writer on this machine reaches.
const UNTHROTTLED: f64 = 1_000_000.0;
/// Timed rounds per variant in the trigger overhead comparison (even: blocks of A B B A).
const OVERHEAD_ROUNDS: usize = 4;
/// Untimed writer seconds on each copy before the trigger overhead rounds.
const WARM_UP_SECONDS: f64 = 1.0;
/// Writer throughput with capture triggers relative to without, that we aim for.
const TARGET_TRIGGER_RATIO: f64 = 0.6;
/// Changes applied per second during a catch-up, that we aim for.
const TARGET_APPLY_RATE: f64 = 50_000.0;
/// The rate whose p99 lag has a target, and that target.
const TARGET_LAG_RATE: f64 = 1000.0;
const TARGET_P99_MS: f64 = 250.0;
/// Server statements at least this slow are logged during the catch-up, to show how much of it
/// PostgreSQL's own work takes.
const SLOW_STATEMENT_MS: u32 = 100;
/// Probe transactions: one every 20 ms; PostgreSQL polled every 5 ms (the lag's resolution).
const PROBE_EVERY: Duration = Duration::from_millis(20);
const POLL_EVERY: Duration = Duration::from_millis(5);
const RSS_EVERY: Duration = Duration::from_secs(1);
const PROBE_KEY: &str = "bench-probe";
/// How many of a lag run's slowest probes are printed with their times.
const SLOWEST_PROBES: usize = 12;
/// How long the last probe may take to show up once the writers stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// A run's RSS is called flat when the highest sample of its second half is at most this many
/// MB (or `FLAT_FRACTION` of it, whichever is more) above the highest of its first half: warm-up
/// growth (caches filling) happens early; a leak keeps raising the high-water mark.
const FLAT_MB: f64 = 2.0;
const FLAT_FRACTION: f64 = 0.05;

fn main() {
    if generator_child() {
        return;
    }
    let settings = Settings::from_args();
    init_logging(settings.verbose);
    let work = tempfile::Builder::new()
        .prefix("sqlite2pg-bench-sync-")
        .tempdir()
        .expect("create the bench work directory");
    let source = generate_source(work.path(), settings.scale);
    let cluster =
        PrivateCluster::start(&ClusterOptions::default()).expect("start a private PostgreSQL");
    let admin = TargetUrl::parse(&cluster.url("postgres")).expect("the cluster's URL parses");
    let pg = Pg::connect(&admin);
    let server_version = pg.text("SHOW server_version");

    pg.execute("CREATE DATABASE sync_db");
    if settings.verbose {
        // With -v the server log also says when checkpoints and autovacuum ran, to match
        // against lag spikes.
        pg.execute("ALTER SYSTEM SET log_checkpoints = on");
        pg.execute("ALTER SYSTEM SET log_autovacuum_min_duration = 0");
        pg.execute("SELECT pg_reload_conf()");
    }
    let config = sync_config(&source.path, &admin.with_dbname("sync_db"));
    if settings.apply_only {
        let snapshot_seconds = snapshot(&config);
        let apply = measure_apply(
            &settings,
            &config,
            &source.path,
            snapshot_seconds,
            &cluster.log_path(),
        );
        println!("\n{}", apply_table(&apply));
        keep_server_log(&settings, &cluster.log_path());
        return;
    }
    let overhead = measure_trigger_overhead(&settings, &source, work.path());
    let snapshot_seconds = snapshot(&config);
    // The baseline the sign-off builds on (what `snapshot --validate` would do).
    let baseline = run_diff(&config, &DiffOptions::default()).expect("diff after the snapshot");
    assert!(baseline.identical, "the snapshot differs from its source");
    // The lag runs come before the large catch-up: the allocator keeps most of what a catch-up
    // peaked at, which would hide how the steady state's RSS moves.
    let target = Pg::connect(&admin.with_dbname("sync_db"));
    let mut lags = Vec::new();
    for (i, &rate) in settings.rates.iter().enumerate() {
        lags.push(measure_lag(
            &settings,
            &config,
            &target,
            rate,
            100 + i as u64,
        ));
    }
    let signoff = measure_signoff(&config);
    let slow = format!("ALTER SYSTEM SET log_min_duration_statement = {SLOW_STATEMENT_MS}");
    pg.execute(&slow);
    pg.execute("SELECT pg_reload_conf()");
    let apply = measure_apply(
        &settings,
        &config,
        &source.path,
        snapshot_seconds,
        &cluster.log_path(),
    );
    let check = final_check(&config);

    let section = render(
        &settings,
        &source,
        &server_version,
        &overhead,
        &apply,
        &lags,
        &signoff,
        &check,
    );
    println!("\n{section}");
    if settings.record {
        record("sync", &section);
    }
    keep_server_log(&settings, &cluster.log_path());
}

/// With -v, copies the private server's log out of the work directory (removed at exit).
fn keep_server_log(settings: &Settings, log: &Path) {
    if !settings.verbose {
        return;
    }
    let kept = std::env::temp_dir().join("sqlite2pg-bench-sync-server.log");
    match fs::copy(log, &kept) {
        Ok(_) => eprintln!("server log kept in {}", kept.display()),
        Err(e) => eprintln!("could not keep the server log: {e}"),
    }
}

struct Settings {
    scale: f64,
    /// Seconds of each lag run (one per rate).
    seconds: f64,
    /// Seconds of each variant in the trigger overhead comparison (split into two rounds).
    overhead_seconds: f64,
    /// Seconds the unthrottled writer builds the backlog before the bulk UPDATEs.
    backlog_seconds: f64,
    /// Writer transactions per second of the lag runs.
    rates: Vec<f64>,
    record: bool,
    verbose: bool,
    /// Only the catch-up (apply rate), printed and not recorded: for profiling apply.
    apply_only: bool,
}

impl Settings {
    fn from_args() -> Settings {
        let mut settings = Settings {
            scale: 0.1,
            seconds: 20.0,
            overhead_seconds: 10.0,
            backlog_seconds: 10.0,
            rates: vec![1000.0, 5000.0],
            record: true,
            verbose: false,
            apply_only: false,
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
                "--seconds" => settings.seconds = number(args.next(), "--seconds"),
                "--overhead-seconds" => {
                    settings.overhead_seconds = number(args.next(), "--overhead-seconds")
                }
                "--backlog-seconds" => {
                    settings.backlog_seconds = number(args.next(), "--backlog-seconds")
                }
                "--rates" => {
                    let list = args.next().expect("--rates needs a list, e.g. 1000,5000");
                    settings.rates = list
                        .split(',')
                        .map(|r| number(Some(r.to_string()), "--rates"))
                        .collect();
                }
                "--no-record" => settings.record = false,
                "--apply-only" => {
                    settings.apply_only = true;
                    settings.record = false;
                }
                "-v" | "--verbose" => settings.verbose = true,
                // cargo passes --bench; no other harness flag applies to this bench.
                _ => {}
            }
        }
        settings
    }

    /// The command that reproduces this run.
    fn command(&self) -> String {
        let mut cmd = String::from("cargo bench --bench sync");
        let mut extra = Vec::new();
        if self.scale != 0.1 {
            extra.push(format!("--scale {}", self.scale));
        }
        if self.seconds != 20.0 {
            extra.push(format!("--seconds {}", self.seconds));
        }
        if self.overhead_seconds != 10.0 {
            extra.push(format!("--overhead-seconds {}", self.overhead_seconds));
        }
        if self.backlog_seconds != 10.0 {
            extra.push(format!("--backlog-seconds {}", self.backlog_seconds));
        }
        if self.rates != [1000.0, 5000.0] {
            let rates: Vec<String> = self.rates.iter().map(|r| r.to_string()).collect();
            extra.push(format!("--rates {}", rates.join(",")));
        }
        if !extra.is_empty() {
            cmd.push_str(" -- ");
            cmd.push_str(&extra.join(" "));
        }
        cmd
    }
}

/// The probe counter PostgreSQL has, if the probe row is there.
fn probe(pg: &Pg) -> Option<u64> {
    let sql = "SELECT value::text FROM public.app_state WHERE key = $1";
    let row = pg
        .runtime
        .block_on(pg.client.query_opt(sql, &[&PROBE_KEY]))
        .unwrap_or_else(|e| panic!("poll the probe row: {e}"))?;
    let value: Option<String> = row.get(0);
    let json: serde_json::Value = serde_json::from_str(&value?).ok()?;
    json.get("n")?.as_u64()
}

// ---------------------------------------------------------------------------------------------
// 1. Trigger overhead

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    Plain,
    Captured,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Plain => "without capture",
            Variant::Captured => "with capture triggers",
        }
    }
}

struct Round {
    variant: Variant,
    seconds: f64,
    stats: WriterStats,
}

struct Overhead {
    rounds: Vec<Round>,
    /// Rows the capture triggers logged in `_sqlite2pg_changes` during the captured rounds.
    logged_changes: u64,
}

impl Overhead {
    /// (transactions, row changes named by statements, seconds) of one variant's rounds.
    fn totals(&self, variant: Variant) -> (u64, u64, f64) {
        let rounds = self.rounds.iter().filter(|r| r.variant == variant);
        rounds.fold((0, 0, 0.0), |(t, c, s), r| {
            (
                t + r.stats.transactions,
                c + row_changes(&r.stats),
                s + r.seconds,
            )
        })
    }

    fn tps(&self, variant: Variant) -> f64 {
        let (t, _, s) = self.totals(variant);
        t as f64 / s
    }

    fn ratio(&self) -> f64 {
        self.tps(Variant::Captured) / self.tps(Variant::Plain)
    }

    /// The with/without ratio of each A B B A block: their spread shows the noise.
    fn block_ratios(&self) -> Vec<f64> {
        let rate = |r: &Round| r.stats.transactions as f64 / r.seconds;
        self.rounds
            .chunks(4)
            .filter(|b| b.len() == 4)
            .map(|b| (rate(&b[1]) + rate(&b[2])) / (rate(&b[0]) + rate(&b[3])))
            .collect()
    }
}

/// Sync's problem counters (quarantined values, retried batches, verification mismatches, as
/// far as this version's `SyncStatus` has them), read by name so the bench does not depend on
/// the exact struct.
fn problems(status: &SyncStatus) -> String {
    let value = serde_json::to_value(status).unwrap_or_default();
    let names = [
        ("quarantined", "quarantined"),
        ("retries", "retries"),
        ("verification_mismatches", "verify mismatches"),
    ];
    let parts: Vec<String> = names
        .iter()
        .filter_map(|(field, label)| {
            let n = value.get(field)?.as_u64()?;
            Some(if n > 0 {
                format!("**{n} {label}**")
            } else {
                format!("{n} {label}")
            })
        })
        .collect();
    parts.join(", ")
}

fn row_changes(s: &WriterStats) -> u64 {
    s.inserts + s.updates + s.deletes
}

/// The unthrottled writer on two copies of the source, A B B A, half the seconds per round.
fn measure_trigger_overhead(settings: &Settings, source: &Source, work: &Path) -> Overhead {
    let plain = work.join("plain.db");
    let captured = work.join("captured.db");
    fs::copy(&source.path, &plain).expect("copy the sample database");
    fs::copy(&source.path, &captured).expect("copy the sample database");
    let conn = Connection::open(&captured).expect("open the captured copy");
    let schema = read_schema(&conn, &captured).expect("read the sample schema");
    capture::install(&conn, &captured, &schema.tables).expect("install change capture");
    // Untimed warm-up on each copy: the first seconds on a fresh copy pay for cold caches and
    // the first WAL growth.
    for path in [&plain, &captured] {
        run_writer(path, UNTHROTTLED, 99, WARM_UP_SECONDS);
    }
    let logged_before = changes_logged(&conn);
    let round_seconds = settings.overhead_seconds / OVERHEAD_ROUNDS as f64;
    // A B B A, repeated: each block cancels a linear drift of the machine's speed.
    let plan = (0..OVERHEAD_ROUNDS * 2).map(|i| {
        let variant = match i % 4 {
            0 | 3 => Variant::Plain,
            _ => Variant::Captured,
        };
        (variant, 1 + i as u64 / 2)
    });
    let mut rounds = Vec::new();
    for (variant, seed) in plan {
        let path = match variant {
            Variant::Plain => &plain,
            Variant::Captured => &captured,
        };
        let (stats, seconds) = run_writer(path, UNTHROTTLED, seed, round_seconds);
        eprintln!(
            "trigger overhead: {} round {seed}: {} transactions in {seconds:.1} s ({:.0}/s)",
            variant.label(),
            stats.transactions,
            stats.transactions as f64 / seconds
        );
        rounds.push(Round {
            variant,
            seconds,
            stats,
        });
    }
    Overhead {
        rounds,
        logged_changes: changes_logged(&conn) - logged_before,
    }
}

fn max_seq(conn: &Connection) -> i64 {
    let sql = "SELECT coalesce(max(seq), 0) FROM _sqlite2pg_changes";
    conn.query_row(sql, [], |r| r.get(0))
        .expect("read the highest change seq")
}

/// Change rows logged after seq `after`, and the distinct (table, key) among them.
fn logged_after(conn: &Connection, after: i64) -> (u64, u64) {
    let sql = "SELECT count(*), count(DISTINCT tbl || ':' || key) FROM _sqlite2pg_changes \
               WHERE seq > ?1";
    let (rows, keys): (i64, i64) = conn
        .query_row(sql, [after], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("count the backlog's change rows");
    (rows as u64, keys as u64)
}

fn changes_logged(conn: &Connection) -> u64 {
    let sql = "SELECT count(*) FROM _sqlite2pg_changes";
    conn.query_row(sql, [], |r| r.get::<_, i64>(0))
        .expect("count the change rows") as u64
}

/// Runs a live writer for `seconds`; its counters at that moment and the exact seconds elapsed.
fn run_writer(path: &Path, rate: f64, seed: u64, seconds: f64) -> (WriterStats, f64) {
    let writer = LiveWriter::start(
        path,
        WriterOptions {
            rate_per_sec: rate,
            seed,
        },
    )
    .expect("start the live writer");
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (stats, elapsed) = (writer.stats(), started.elapsed().as_secs_f64());
    writer.stop().expect("the live writer ran without errors");
    (stats, elapsed)
}

// ---------------------------------------------------------------------------------------------
// 2. Sustained apply rate

struct Apply {
    snapshot_seconds: f64,
    writer: WriterStats,
    writer_seconds: f64,
    jobs_updated: u64,
    history_updated: u64,
    /// Change rows the triggers logged for the backlog, and distinct (table, key) among them.
    logged: u64,
    distinct: u64,
    seconds: f64,
    status: SyncStatus,
    peak_rss_kib: u64,
    /// The server's statements of at least `SLOW_STATEMENT_MS` during the catch-up: (ms, text).
    slow: Vec<(f64, String)>,
}

impl Apply {
    fn rate(&self) -> f64 {
        self.status.changes_applied as f64 / self.seconds
    }
}

/// Builds a backlog in the source, then times `run_sync --catch-up` on it.
fn measure_apply(
    settings: &Settings,
    config: &Config,
    source: &Path,
    snapshot_seconds: f64,
    server_log: &Path,
) -> Apply {
    let conn = Connection::open(source).expect("open the source");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("set a busy timeout");
    let before = max_seq(&conn);
    let (writer, writer_seconds) = run_writer(source, UNTHROTTLED, 7, settings.backlog_seconds);
    eprintln!(
        "backlog: writer {} transactions in {writer_seconds:.1} s",
        writer.transactions
    );
    let bulk = |sql: &str| -> u64 {
        let tx = conn.unchecked_transaction().expect("begin the bulk update");
        let n = tx.execute(sql, []).expect("bulk update") as u64;
        tx.commit().expect("commit the bulk update");
        n
    };
    let jobs_updated = bulk("UPDATE jobs SET attempts = attempts + 1");
    let history_updated = bulk("UPDATE job_history SET note = 'bench backlog'");
    let (logged, distinct) = logged_after(&conn, before);
    drop(conn);
    eprintln!("backlog: {logged} change rows, {distinct} distinct keys; catching up");
    let rss_before = current_rss_kib();
    let log_from = fs::metadata(server_log).map_or(0, |m| m.len());
    let stop = AtomicBool::new(false);
    let opts = SyncOptions {
        catch_up: true,
        ..SyncOptions::default()
    };
    let started = Instant::now();
    let (status, peak) = with_rss_sampler(|| {
        run_sync(config, &opts, &stop, &|s| {
            eprintln!(
                "catch-up: captured {} applied {} ({} changes, {} batches)",
                s.captured_seq, s.applied_seq, s.changes_applied, s.batches
            )
        })
    });
    let seconds = started.elapsed().as_secs_f64();
    let status = status.expect("sync --catch-up");
    eprintln!(
        "catch-up: {} changes in {} batches, {seconds:.1} s (RSS {:.0} → peak {:.0} MB)",
        status.changes_applied,
        status.batches,
        mb_of_kib(rss_before),
        mb_of_kib(peak)
    );
    let slow = slow_statements(server_log, log_from);
    for (ms, text) in &slow {
        eprintln!("catch-up: server statement {ms:.0} ms: {text}");
    }
    Apply {
        slow,
        snapshot_seconds,
        writer,
        writer_seconds,
        jobs_updated,
        history_updated,
        logged,
        distinct,
        seconds,
        status,
        peak_rss_kib: peak,
    }
}

/// The `duration:` lines the server logged after byte `from`: (milliseconds, statement).
fn slow_statements(log: &Path, from: u64) -> Vec<(f64, String)> {
    let text = fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned();
    text.lines()
        .filter_map(|line| {
            let rest = line.split_once("duration: ")?.1;
            let (ms, statement) = rest.split_once(" ms")?;
            let statement = statement.trim_start_matches([' ', ':']).trim();
            let short: String = statement.chars().take(100).collect();
            Some((ms.parse().ok()?, short))
        })
        .collect()
}

/// Runs `f` while a thread samples this process's RSS every 100 ms; returns `f`'s result and
/// the highest RSS seen.
fn with_rss_sampler<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = current_rss_kib();
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                peak = peak.max(current_rss_kib());
            }
            peak
        });
        let out = f();
        done.store(true, Ordering::SeqCst);
        let peak = sampler.join().expect("the RSS sampler panicked");
        (out, peak.max(current_rss_kib()))
    })
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. End-to-end lag and RSS over time

struct Lag {
    rate: f64,
    seconds: f64,
    writer: WriterStats,
    probes: usize,
    /// Lag of every probe, in seconds, sorted.
    lags: Vec<f64>,
    /// The highest `lag_seconds` sync's status callback reported.
    status_lag_max: f64,
    /// Seconds after the writers stopped until the last probe was visible.
    drain_seconds: f64,
    /// (seconds since the run started, VmRSS KiB)
    rss: Vec<(f64, u64)>,
    status: SyncStatus,
}

impl Lag {
    fn percentile_ms(&self, q: f64) -> f64 {
        percentile(&self.lags, q) * 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.lags.last().copied().unwrap_or(f64::NAN) * 1000.0
    }

    fn tps(&self) -> f64 {
        self.writer.transactions as f64 / self.seconds
    }

    /// How much higher the RSS went in the second half of the timed run than in its first half
    /// (MB), and whether that is within noise.
    fn rss_second_half_growth(&self) -> (f64, bool) {
        let half = self.seconds / 2.0;
        let timed = self.rss.iter().filter(|s| s.0 <= self.seconds + 0.5);
        let (mut first, mut second) = (0u64, 0u64);
        for &(t, kib) in timed {
            if t <= half {
                first = first.max(kib);
            } else {
                second = second.max(kib);
            }
        }
        let growth = mb_of_kib(second) - mb_of_kib(first);
        let allowed = FLAT_MB.max(mb_of_kib(first) * FLAT_FRACTION);
        (growth, growth <= allowed)
    }

    fn rss_flat(&self) -> bool {
        self.rss_second_half_growth().1
    }

    fn rss_start(&self) -> u64 {
        self.rss.first().map_or(0, |s| s.1)
    }

    fn rss_end(&self) -> u64 {
        self.rss.last().map_or(0, |s| s.1)
    }

    fn rss_max(&self) -> u64 {
        self.rss.iter().map(|s| s.1).max().unwrap_or(0)
    }
}

/// The probe transactions' connection to the source.
struct Prober {
    conn: Connection,
}

impl Prober {
    fn open(path: &Path) -> Prober {
        let conn = Connection::open(path).expect("open the source for probes");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("set a busy timeout");
        Prober { conn }
    }

    /// Writes probe `n`; returns the instant its commit returned. SQLite's busy handler is not
    /// fair: on a shared 2-core machine, with the writer at 5k transactions/s, a probe can wait
    /// past its 5 s busy timeout; it then tries again (a few times) instead of ending the run.
    fn write(&self, n: u64) -> Instant {
        let value = format!("{{\"n\": {n}}}");
        for attempt in 1.. {
            let written = self.conn.execute(
                "INSERT OR REPLACE INTO app_state (key, value) VALUES (?1, ?2)",
                (PROBE_KEY, &value),
            );
            match written {
                Ok(_) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && attempt < 5 =>
                {
                    eprintln!(
                        "probe {n}: SQLite stayed locked past the busy timeout; trying again"
                    );
                }
                Err(e) => panic!("write probe {n}: {e}"),
            }
        }
        Instant::now()
    }
}

fn measure_lag(settings: &Settings, config: &Config, pg: &Pg, rate: f64, seed: u64) -> Lag {
    let path = config.require_source().expect("a source").to_path_buf();
    let stop = AtomicBool::new(false);
    let status_lag_max = Mutex::new(0.0f64);
    let on_status = |s: &SyncStatus| {
        let mut max = status_lag_max.lock().unwrap();
        *max = max.max(s.lag_seconds);
    };
    let commits: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    let probing = AtomicBool::new(true);
    std::thread::scope(|s| {
        let sync = s.spawn(|| run_sync(config, &SyncOptions::default(), &stop, &on_status));
        // Warm-up: sync is running and applying once probe `base` is visible.
        let prober = Prober::open(&path);
        let base = probe(pg).unwrap_or(0) + 1;
        prober.write(base);
        let warm = Instant::now();
        while probe(pg) != Some(base) {
            assert!(
                !sync.is_finished(),
                "sync stopped during warm-up: {:?}",
                sync.join()
            );
            assert!(
                warm.elapsed() < DRAIN_TIMEOUT,
                "sync did not start applying"
            );
            std::thread::sleep(POLL_EVERY);
        }
        eprintln!(
            "lag at {rate}/s: sync applying after {:.2} s; running {} s",
            warm.elapsed().as_secs_f64(),
            settings.seconds
        );
        let writer = LiveWriter::start(
            &path,
            WriterOptions {
                rate_per_sec: rate,
                seed,
            },
        )
        .expect("start the live writer");
        let started = Instant::now();
        let (commits_ref, probing_ref) = (&commits, &probing);
        let probe_thread = s.spawn(move || {
            let mut next = Instant::now();
            let mut n = base;
            while probing_ref.load(Ordering::SeqCst) {
                n += 1;
                let at = prober.write(n);
                commits_ref.lock().unwrap().push(at);
                next += PROBE_EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        let mut seen: Vec<Instant> = Vec::new();
        let mut rss = vec![(0.0, current_rss_kib())];
        let mut next_rss = started + RSS_EVERY;
        let mut writer_stats = None;
        let mut seconds = 0.0;
        let mut drained_at = None;
        loop {
            let now = Instant::now();
            if writer_stats.is_none() && now >= started + Duration::from_secs_f64(settings.seconds)
            {
                probing.store(false, Ordering::SeqCst);
                writer_stats = Some(writer.stats());
                seconds = started.elapsed().as_secs_f64();
            }
            if writer_stats.is_some() && probe_thread.is_finished() && drained_at.is_none() {
                let written = commits.lock().unwrap().len();
                if seen.len() >= written {
                    drained_at = Some(Instant::now());
                    break;
                }
            }
            if now >= next_rss {
                rss.push((started.elapsed().as_secs_f64(), current_rss_kib()));
                next_rss += RSS_EVERY;
            }
            if let Some(n) = probe(pg) {
                let at = Instant::now();
                while (base + seen.len() as u64) < n {
                    seen.push(at);
                }
            }
            assert!(
                !sync.is_finished(),
                "sync stopped during the run: {:?}",
                sync.join()
            );
            assert!(
                writer_stats.is_none()
                    || now < started + Duration::from_secs_f64(seconds) + DRAIN_TIMEOUT,
                "the last probe did not reach PostgreSQL within {DRAIN_TIMEOUT:?}"
            );
            std::thread::sleep(POLL_EVERY);
        }
        probe_thread.join().expect("the probe thread panicked");
        let final_writer = writer.stop().expect("the live writer ran without errors");
        let drain_seconds = drained_at
            .map(|d| d.duration_since(started).as_secs_f64() - seconds)
            .unwrap_or(f64::NAN);
        rss.push((started.elapsed().as_secs_f64(), current_rss_kib()));
        stop.store(true, Ordering::SeqCst);
        let status = sync
            .join()
            .expect("the sync thread panicked")
            .expect("sync ran without errors");
        let commits = std::mem::take(&mut *commits.lock().unwrap());
        let mut lags: Vec<f64> = commits
            .iter()
            .zip(&seen)
            .map(|(c, s)| s.saturating_duration_since(*c).as_secs_f64())
            .collect();
        print_slowest_probes(rate, &commits, &seen, started);
        lags.sort_by(f64::total_cmp);
        let writer_stats = writer_stats.unwrap_or(final_writer);
        let lag = Lag {
            rate,
            seconds,
            writer: writer_stats,
            probes: commits.len(),
            lags,
            status_lag_max: *status_lag_max.lock().unwrap(),
            drain_seconds,
            rss,
            status,
        };
        eprintln!(
            "lag at {rate}/s: {:.0} tx/s, {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
             RSS {:.0} → {:.0} MB (max {:.0})",
            lag.tps(),
            lag.probes,
            lag.percentile_ms(0.5),
            lag.percentile_ms(0.99),
            lag.max_ms(),
            mb_of_kib(lag.rss_start()),
            mb_of_kib(lag.rss_end()),
            mb_of_kib(lag.rss_max()),
        );
        lag
    })
}

/// The slowest probes of a lag run with when they committed (seconds since the run started,
/// and UTC), so a spike can be matched with sync's `-v` log and the server log.
fn print_slowest_probes(rate: f64, commits: &[Instant], seen: &[Instant], started: Instant) {
    let now = (Instant::now(), chrono::Utc::now());
    let mut probes: Vec<(f64, Instant)> = commits
        .iter()
        .zip(seen)
        .map(|(c, s)| (s.saturating_duration_since(*c).as_secs_f64(), *c))
        .collect();
    probes.sort_by(|a, b| b.0.total_cmp(&a.0));
    let list: Vec<String> = probes
        .iter()
        .take(SLOWEST_PROBES)
        .map(|(lag, at)| {
            let utc = now.1 - chrono::Duration::from_std(now.0 - *at).unwrap_or_default();
            format!(
                "{:.0} ms at {:.1} s ({})",
                lag * 1000.0,
                at.duration_since(started).as_secs_f64(),
                utc.format("%H:%M:%S%.3f")
            )
        })
        .collect();
    eprintln!("lag at {rate}/s: slowest probes: {}", list.join(", "));
}

/// This process's resident set size (KiB, `VmRSS`).
fn current_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:"));
    let kib = rss.and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    kib.expect("/proc/self/status has VmRSS in kB")
}

fn mb_of_kib(kib: u64) -> f64 {
    kib as f64 * 1024.0 / MB
}

/// The sign-off after the lag runs: `diff --changed` against the full `diff`, both after a
/// catch-up, on the same data.
struct Signoff {
    rows: u64,
    /// Changed rows compared by `diff --changed`, and the tables it compared whole (over 5% of
    /// their rows changed) with their rows.
    checked: u64,
    whole: Vec<(String, u64)>,
    changed_seconds: f64,
    full_seconds: f64,
}

/// `run_sync` with `catch_up`, in this process; `what` names it in a panic.
fn catch_up(config: &Config, what: &str) {
    let stop = AtomicBool::new(false);
    let opts = SyncOptions {
        catch_up: true,
        ..SyncOptions::default()
    };
    run_sync(config, &opts, &stop, &|_| {}).unwrap_or_else(|e| panic!("{what}: {e}"));
}

fn measure_signoff(config: &Config) -> Signoff {
    catch_up(config, "sync --catch-up before the sign-off");
    let changed_opts = DiffOptions {
        changed: true,
        ..DiffOptions::default()
    };
    let started = Instant::now();
    let changed = run_diff(config, &changed_opts).expect("diff --changed");
    let changed_seconds = started.elapsed().as_secs_f64();
    assert!(changed.identical, "diff --changed found differences");
    // Tables where more than 5% of the rows changed are compared whole, by design.
    let whole: Vec<(String, u64)> = changed
        .tables
        .iter()
        .filter(|t| t.mode != "changed")
        .map(|t| (t.table.clone(), t.source_rows))
        .collect();
    let checked = changed
        .tables
        .iter()
        .filter_map(|t| t.changed_since.as_ref())
        .map(|c| c.checked_rows)
        .sum();
    let started = Instant::now();
    let full = run_diff(config, &DiffOptions::default()).expect("diff");
    let full_seconds = started.elapsed().as_secs_f64();
    assert!(full.identical, "the full diff found differences");
    let rows = full.tables.iter().map(|t| t.source_rows).sum();
    eprintln!(
        "sign-off: diff --changed checked {checked} changed rows (and compared {whole:?} whole) \
         in {changed_seconds:.2} s; full diff of {rows} rows {full_seconds:.2} s"
    );
    Signoff {
        rows,
        checked,
        whole,
        changed_seconds,
        full_seconds,
    }
}

fn signoff_table(s: &Signoff) -> String {
    let whole_rows: u64 = s.whole.iter().map(|(_, n)| n).sum();
    let whole = match s.whole.is_empty() {
        true => String::new(),
        false => format!(
            "`diff --changed` compared {} whole (over 5% of their rows changed): {} rows of the \
             {} it read.\n\n",
            s.whole
                .iter()
                .map(|(t, n)| format!("{t} ({n} rows)"))
                .collect::<Vec<_>>()
                .join(", "),
            whole_rows,
            s.checked + whole_rows
        ),
    };
    let table = format!(
        "| sign-off after the lag runs (then `sync --catch-up`) | rows compared | seconds |\n\
         |---|---:|---:|\n\
         | `diff --changed` (the keys changed since the baseline diff after the snapshot) | {} | \
         {:.2} |\n\
         | `diff` (every row) | {} | {:.2} |\n\
         | **`--changed` / full** | {:.3} | **{:.3}** |\n\n",
        s.checked + whole_rows,
        s.changed_seconds,
        s.rows,
        s.full_seconds,
        (s.checked + whole_rows) as f64 / s.rows as f64,
        s.changed_seconds / s.full_seconds
    );
    table + &whole
}

/// After the lag runs: a last catch-up, then `diff` of source and target.
struct FinalCheck {
    identical: bool,
    summary: String,
}

fn final_check(config: &Config) -> FinalCheck {
    catch_up(config, "the final sync --catch-up");
    let report = run_diff(config, &DiffOptions::default()).expect("diff source and target");
    let differing: Vec<String> = report
        .tables
        .iter()
        .filter(|t| t.verdict != "identical")
        .map(|t| {
            format!(
                "{} ({} modified, {} missing, {} extra)",
                t.table, t.modified, t.missing, t.extra
            )
        })
        .collect();
    let summary = match report.identical {
        true => "identical".to_string(),
        false => format!("**differences** in {}", differing.join(", ")),
    };
    eprintln!("final diff: {summary}");
    FinalCheck {
        identical: report.identical,
        summary,
    }
}

// ---------------------------------------------------------------------------------------------
// The BENCHMARKS.md section

#[allow(clippy::too_many_arguments)]
fn render(
    settings: &Settings,
    source: &Source,
    server_version: &str,
    overhead: &Overhead,
    apply: &Apply,
    lags: &[Lag],
    signoff: &Signoff,
    check: &FinalCheck,
) -> String {
    let mut out = format!(
        "## Sync: trigger overhead, apply rate, lag, memory\n\n{} UTC · scale {} · {} rows · \
         SQLite file {:.1} MB · PostgreSQL {server_version} (private cluster, fsync off) · \
         2 cores, shared and noisy · lag runs of {} s per rate\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        settings.scale,
        source.rows,
        source.bytes as f64 / MB,
        settings.seconds,
    );
    out.push_str(&verdicts(overhead, apply, lags));
    out.push_str(&overhead_table(overhead));
    out.push_str(&apply_table(apply));
    out.push_str(&lag_table(lags));
    out.push_str(&signoff_table(signoff));
    out.push_str(&format!(
        "After the lag runs, a last `sync --catch-up` and `diff` of the whole database: {} \
         ({}).\n\n",
        check.summary,
        if check.identical {
            "no change lost or duplicated"
        } else {
            "see `sqlite2pg diff`"
        }
    ));
    out.push_str(&method_note(settings));
    out
}

fn verdicts(overhead: &Overhead, apply: &Apply, lags: &[Lag]) -> String {
    let ratio = overhead.ratio();
    let mut out = format!(
        "- application write throughput with / without capture triggers: **{ratio:.2}** \
         ({:.0} vs {:.0} transactions/s) — target ≥ {TARGET_TRIGGER_RATIO}: {}\n",
        overhead.tps(Variant::Captured),
        overhead.tps(Variant::Plain),
        verdict(ratio >= TARGET_TRIGGER_RATIO)
    );
    let rate = apply.rate();
    out.push_str(&format!(
        "- sustained apply rate (catch-up of {} changes): **{rate:.0} changes/s** — target ≥ \
         {TARGET_APPLY_RATE:.0}: {}\n",
        apply.status.changes_applied,
        verdict(rate >= TARGET_APPLY_RATE)
    ));
    for lag in lags {
        let p99 = lag.percentile_ms(0.99);
        let target = if lag.rate == TARGET_LAG_RATE {
            format!(
                " — target p99 < {TARGET_P99_MS:.0} ms: {}",
                verdict(p99 < TARGET_P99_MS)
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "- end-to-end lag at {:.0} transactions/s: p50 **{:.1} ms**, p99 **{p99:.1} ms**, \
             max {:.1} ms{target}\n",
            lag.rate,
            lag.percentile_ms(0.5),
            lag.max_ms(),
        ));
    }
    let flat = lags.iter().all(Lag::rss_flat);
    let max = lags.iter().map(Lag::rss_max).max().unwrap_or(0);
    out.push_str(&format!(
        "- RSS of the process running sync during the lag runs: max **{:.0} MB**, {} (per run \
         below)\n\n",
        mb_of_kib(max),
        if flat { "flat" } else { "**growing**" },
    ));
    out
}

fn overhead_table(o: &Overhead) -> String {
    let mut out = String::from(
        "| trigger overhead round | seconds | transactions | transactions/s | row changes/s | \
         busy retries |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (i, r) in o.rounds.iter().enumerate() {
        out.push_str(&format!(
            "| {}. {} | {:.1} | {} | {:.0} | {:.0} | {} |\n",
            i + 1,
            r.variant.label(),
            r.seconds,
            r.stats.transactions,
            r.stats.transactions as f64 / r.seconds,
            row_changes(&r.stats) as f64 / r.seconds,
            r.stats.busy_retries,
        ));
    }
    let (tx, _, _) = o.totals(Variant::Captured);
    let blocks: Vec<String> = o.block_ratios().iter().map(|r| format!("{r:.2}")).collect();
    out.push_str(&format!(
        "\nWith / without per A B B A block: {}.\n",
        blocks.join(", ")
    ));
    out.push_str(&format!(
        "With triggers, each transaction logged {:.2} change rows on average ({} in all; \
         nothing consumed them during these rounds, as if sync were stopped).\n\n",
        o.logged_changes as f64 / tx.max(1) as f64,
        o.logged_changes,
    ));
    out
}

fn apply_table(a: &Apply) -> String {
    let s = &a.status;
    format!(
        "| catch-up | |\n|---|---:|\n\
         | snapshot with capture (before the backlog) | {:.1} s |\n\
         | backlog: unthrottled writer | {} transactions in {:.1} s |\n\
         | backlog: `UPDATE jobs …` (one transaction) | {} rows |\n\
         | backlog: `UPDATE job_history …` (one transaction) | {} rows |\n\
         | change rows logged by the triggers | {} |\n\
         | distinct changed keys | {} |\n\
         | changes applied (after coalescing per key) | {} |\n\
         | batches | {} |\n\
         | `run_sync --catch-up` wall time | {:.1} s |\n\
         | **changes applied / s** | **{:.0}** |\n\
         | sync's own changes_per_second (apply loop only) | {:.0} |\n\
         | sync's problem counters | {} |\n\
         | peak RSS during the catch-up | {:.0} MB |\n\
         | PostgreSQL statements ≥ {SLOW_STATEMENT_MS} ms during the catch-up | {} |\n\n",
        a.snapshot_seconds,
        a.writer.transactions,
        a.writer_seconds,
        a.jobs_updated,
        a.history_updated,
        a.logged,
        a.distinct,
        s.changes_applied,
        s.batches,
        a.seconds,
        a.rate(),
        s.changes_per_second,
        problems(s),
        mb_of_kib(a.peak_rss_kib),
        slow_summary(&a.slow),
    )
}

fn slow_summary(slow: &[(f64, String)]) -> String {
    if slow.is_empty() {
        return "none".into();
    }
    let total: f64 = slow.iter().map(|s| s.0).sum();
    let mut sorted: Vec<&(f64, String)> = slow.iter().collect();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let top: Vec<String> = sorted
        .iter()
        .take(3)
        .map(|(ms, text)| {
            let text = text.replace('`', "'").replace('|', "\\|");
            let words: Vec<&str> = text.split_whitespace().take(8).collect();
            format!("{:.1} s `{}…`", ms / 1000.0, words.join(" "))
        })
        .collect();
    format!(
        "{} statements, {:.1} s in all; largest: {}",
        slow.len(),
        total / 1000.0,
        top.join(", ")
    )
}

fn lag_table(lags: &[Lag]) -> String {
    let mut out = String::from(
        "| writer target tx/s | achieved tx/s | row changes/s | probes | lag p50 | lag p99 | \
         lag max | sync's max lag_seconds | drain after stop | changes applied | batches | \
         sync's problem counters | RSS start → end (max) | RSS trend |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|\n",
    );
    for l in lags {
        out.push_str(&format!(
            "| {:.0} | {:.0} | {:.0} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} s | {:.2} s | \
             {} | {} | {} | {:.0} → {:.0} ({:.0}) MB | second half {:+.0} MB: {} |\n",
            l.rate,
            l.tps(),
            row_changes(&l.writer) as f64 / l.seconds,
            l.probes,
            l.percentile_ms(0.5),
            l.percentile_ms(0.99),
            l.max_ms(),
            l.status_lag_max,
            l.drain_seconds,
            l.status.changes_applied,
            l.status.batches,
            problems(&l.status),
            mb_of_kib(l.rss_start()),
            mb_of_kib(l.rss_end()),
            mb_of_kib(l.rss_max()),
            l.rss_second_half_growth().0,
            if l.rss_flat() { "flat" } else { "**growing**" },
        ));
    }
    out.push_str("\nRSS samples (MB, one per second):\n\n");
    for l in lags {
        let samples: Vec<String> = l
            .rss
            .iter()
            .map(|&(_, kib)| format!("{:.0}", mb_of_kib(kib)))
            .collect();
        out.push_str(&format!("- {:.0}/s: {}\n", l.rate, samples.join(" ")));
    }
    out.push('\n');
    out
}

fn method_note(settings: &Settings) -> String {
    format!(
        "Trigger overhead: the sample app's `LiveWriter` unthrottled (its highest rate, \
         1,000,000 transactions/s) on two copies of the database, one with sqlite2pg's capture \
         triggers installed and one without, each warmed up for {WARM_UP_SECONDS} s untimed, then \
         in rounds of {:.1} s ordered A B B A A B B A (the ratio is total transactions over \
         total seconds of each side). Its unit is \
         the transaction (`BEGIN IMMEDIATE` … `COMMIT`, WAL, synchronous=NORMAL), each naming 1–2 \
         rows (cascaded deletes not counted). Catch-up: `run_sync` with `catch_up` in this \
         process, timed from the call to its return (connect, capture into the change log and \
         apply). Lag: sync (not catch-up) on a thread of this process while the writer runs at \
         the given rate; a probe transaction every {} ms upserts `app_state` key `{PROBE_KEY}` \
         with a counter and notes when its COMMIT returned; PostgreSQL is polled every {} ms and \
         a probe's lag is when its counter (or a later one) was first seen minus its commit, so \
         it includes up to one poll interval. Writer, probes, sync, the poller and the server \
         share the 2 cores. RSS is this process's VmRSS (sync, writer and poller together); the \
         issue asks for 10-minute runs, this run used {} s per rate (`--seconds 600` for the \
         full length); \"flat\" = the highest sample of the run's second half is at most \
         {FLAT_MB:.0} MB or {:.0}% above the highest of its first half (caches fill early; a \
         leak keeps raising the high-water mark). The last sample is taken after the writers \
         stopped and the last probe arrived.\n\n\
         Reproduce: `{}` (needs the PostgreSQL server binaries; `-v` shows sqlite2pg's debug \
         log).\n",
        settings.overhead_seconds / OVERHEAD_ROUNDS as f64,
        PROBE_EVERY.as_millis(),
        POLL_EVERY.as_millis(),
        settings.seconds,
        FLAT_FRACTION * 100.0,
        settings.command(),
    )
}
