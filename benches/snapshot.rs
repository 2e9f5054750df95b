//! End-to-end snapshot benchmark: `cargo bench --bench snapshot [-- --scale 0.2] [--no-record]`.
//!
//! Generates the sample app database (scale 1 = 10k users, 1M jobs, 2M job history rows), starts
//! one private PostgreSQL cluster and measures, in one run, on that one server:
//! - **sqlite2pg**: the release binary's `snapshot --jobs 2` as a child process with its defaults
//!   (the live source read through one read view — a WAL source, no `--validate` — COPY BINARY,
//!   keys, indexes, foreign keys, ANALYZE): wall time, peak RSS, and its phases (from its state
//!   files and JSON log);
//! - **raw COPY FROM**: PostgreSQL's own ingest of the same rows, indexes and foreign keys
//!   included. Untimed, the tables sqlite2pg created are dumped to server-side text files (large
//!   tables in chunks of `DEFAULT_RANGE_ROWS` rows, like our rowid ranges) with their DDL from
//!   `pg_dump`; timed: pre-data DDL, `COPY t FROM 'file'` over 2 connections, post-data (keys,
//!   indexes, foreign keys, one connection like ours), ANALYZE;
//! - **pgloader** (when on PATH), on an untouched copy of the SQLite file: keeping DATETIME as
//!   text (see `PgloaderRun`) in every round beside ours, and once with its defaults, each with
//!   its exit status and its row counts against the source.
//!
//! The machine is shared and noisy, so the verdicts are ratios of times measured in the same run
//! on the same server (raw/ours ≥ 0.8, pgloader/ours ≥ 3), not absolute times. The results are
//! printed and replace the `snapshot` section of BENCHMARKS.md (unless `--no-record`); the
//! server's slow statements of each timed run go to stderr, to show where the time goes.
//! `SQLITE2PG_BENCH_BIN=path` measures another sqlite2pg build.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use sqlite2pg::private_pg::{ClusterOptions, PrivateCluster, PG_BIN_ENV};
use sqlite2pg::sample_app::{generate, GenerateOptions};
use sqlite2pg::snapshot::DEFAULT_RANGE_ROWS;

/// Copy workers for sqlite2pg and COPY connections for the baseline: one per core of the 2-core
/// bench machine, the same for both so the ratio compares work, not parallelism.
const JOBS: usize = 2;
/// Environment variable naming the sqlite2pg binary to measure instead of this build's.
const BIN_ENV: &str = "SQLITE2PG_BENCH_BIN";
/// The sample database's seed: the same rows in every run.
const SEED: u64 = 42;
/// Throughput of sqlite2pg relative to raw COPY FROM (raw seconds / our seconds) we aim for.
const TARGET_VS_RAW: f64 = 0.8;
/// How many times faster than pgloader we aim to be.
const TARGET_VS_PGLOADER: f64 = 3.0;
/// Peak resident memory of the snapshot we aim to stay under, in MB.
const TARGET_RSS_MB: f64 = 500.0;
/// pgloader is slow on big tables and sometimes hangs; an hour is far beyond a healthy run.
const PGLOADER_TIMEOUT: Duration = Duration::from_secs(3600);
/// Server statements at least this slow are logged and listed on stderr after each timed run
/// (where the time goes inside the server); a few lines per run, so the cost is nil.
const SLOW_STATEMENT_MS: u32 = 200;
/// Sizes are in MB = 10^6 bytes, like the snapshot summary's MB/s.
const MB: f64 = 1_000_000.0;
const SECTION_BEGIN: &str = "<!-- snapshot:begin -->";
const SECTION_END: &str = "<!-- snapshot:end -->";
const BENCHMARKS_INTRO: &str = "# Benchmarks\n\nRatios are measured in one run on the same \
    server because the machine is shared and noisy: absolute times move from run to run, the \
    ratios between tools measured side by side move much less.\n";

fn main() {
    let settings = Settings::from_args();
    if let Some(path) = &settings.generate_into {
        return generate_into(path, settings.scale);
    }
    let work = tempfile::Builder::new()
        .prefix("sqlite2pg-bench-")
        .tempdir()
        .expect("create the bench work directory");
    let source = generate_source(work.path(), settings.scale);
    let cluster =
        PrivateCluster::start(&ClusterOptions::default()).expect("start a private PostgreSQL");
    let pg = Pg::new(&cluster);
    let slow = format!("ALTER SYSTEM SET log_min_duration_statement = {SLOW_STATEMENT_MS}");
    pg.sql("postgres", &slow);
    pg.sql("postgres", "SELECT pg_reload_conf()");
    let pgloader_program = on_path("pgloader");
    if pgloader_program.is_none() {
        eprintln!("pgloader is not on PATH: skipping its rows (apt-get install pgloader)");
    }
    let mut rounds = Vec::new();
    // pgloader (every row loaded) in each round too: its time is as exposed to the shared
    // machine's load as ours, so the ratio is taken within a round.
    let mut pgloader_rounds: Vec<(Measured, f64)> = Vec::new();
    let mut pgloader_failed: Vec<usize> = Vec::new();
    let mut raw_input = None;
    for round in 1..=settings.rounds {
        let from = pg.server_log_len();
        let ours = run_ours(&pg, &source, work.path(), round);
        print_slow_statements(&pg, from, "sqlite2pg");
        let input = raw_input.get_or_insert_with(|| prepare_raw(&pg, &source));
        let from = pg.server_log_len();
        let raw = run_raw(&pg, input, round);
        print_slow_statements(&pg, from, "raw COPY FROM");
        eprintln!(
            "round {round}: ours {:.1} s, raw {:.1} s, raw/ours {:.2}",
            ours.seconds,
            raw.seconds,
            raw.seconds / ours.seconds
        );
        if let Some(program) = &pgloader_program {
            let run = PgloaderRun::DatetimeAsText;
            let m = run_pgloader(&pg, program, &source, work.path(), run, round);
            let vs = m.seconds / ours.seconds;
            eprintln!(
                "round {round}: {} {:.1} s, its/ours {vs:.2}",
                run.label(),
                m.seconds
            );
            // A run that did not load every row is no time to compare with (pgloader once
            // exited after 0.3 s): it is reported and left out of the median.
            match m.counts_match() {
                true => pgloader_rounds.push((m, vs)),
                false => {
                    eprintln!(
                        "round {round}: {} failed ({}, {} of {} rows): not counted; its first \
                         errors: {:?}",
                        run.label(),
                        m.status,
                        m.rows_loaded(&source),
                        source.rows(),
                        m.errors
                    );
                    pgloader_failed.push(round);
                }
            }
        }
        rounds.push((ours, raw));
    }
    // The round with the median ratio is shown; every round's ratio is listed beside it.
    rounds.sort_by(|a, b| (a.1.seconds / a.0.seconds).total_cmp(&(b.1.seconds / b.0.seconds)));
    let ratios: Vec<f64> = rounds.iter().map(|(o, r)| r.seconds / o.seconds).collect();
    let (ours, raw) = rounds.swap_remove(rounds.len() / 2);
    let mut pgloader = Vec::new();
    if let Some(program) = &pgloader_program {
        let run = PgloaderRun::Defaults;
        let m = run_pgloader(&pg, program, &source, work.path(), run, 1);
        pgloader.push((run, m, Vec::new()));
        pgloader_rounds.sort_by(|a, b| a.1.total_cmp(&b.1));
        let listed: Vec<f64> = pgloader_rounds.iter().map(|(_, vs)| *vs).collect();
        if !pgloader_rounds.is_empty() {
            let (m, _) = pgloader_rounds.swap_remove(pgloader_rounds.len() / 2);
            pgloader.push((PgloaderRun::DatetimeAsText, m, listed));
        }
    }
    let section = render(
        &settings,
        &pg,
        &source,
        &ours,
        &raw,
        &ratios,
        &pgloader,
        &pgloader_failed,
    );
    println!("\n{section}");
    if settings.record {
        record(&section);
    }
}

struct Settings {
    scale: f64,
    /// sqlite2pg and raw COPY FROM run alternately this many times, each into a fresh database.
    rounds: usize,
    /// Write the results into BENCHMARKS.md.
    record: bool,
    /// Internal: generate the sample database at this path, print its counts and exit (see
    /// `generate_source`).
    generate_into: Option<PathBuf>,
}

impl Settings {
    fn from_args() -> Settings {
        let mut settings = Settings {
            scale: 1.0,
            rounds: 3,
            record: true,
            generate_into: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--scale" => {
                    let value = args.next().and_then(|v| v.parse().ok());
                    settings.scale = value.expect("--scale needs a number, e.g. --scale 0.2");
                }
                "--no-record" => settings.record = false,
                "--rounds" => {
                    let value = args.next().and_then(|v| v.parse().ok());
                    settings.rounds = value.expect("--rounds needs a count, e.g. --rounds 3");
                    assert!(settings.rounds >= 1, "--rounds must be at least 1");
                }
                "--generate-into" => settings.generate_into = args.next().map(PathBuf::from),
                // cargo passes --bench; no other harness flag applies to this bench.
                _ => {}
            }
        }
        settings
    }
}

/// The generated SQLite database and its row counts (the truth every tool is checked against).
struct Source {
    path: PathBuf,
    /// An untouched copy for pgloader: the snapshot installs change capture in the source
    /// (`_sqlite2pg_*` tables and triggers, for sync), which pgloader would try to migrate too.
    pristine: PathBuf,
    bytes: u64,
    counts: Vec<(String, u64)>,
}

impl Source {
    fn rows(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }
}

/// Generates the sample database in a child process (this bench with `--generate-into`): the
/// generator's 128 MB page cache must not count in the peak RSS that a spawned tool inherits
/// from this process (Linux's `ru_maxrss` of a child starts at its parent's high-water mark).
fn generate_source(dir: &Path, scale: f64) -> Source {
    let (path, pristine) = (dir.join("app.db"), dir.join("app-pristine.db"));
    let this = std::env::current_exe().expect("locate the bench executable");
    let mut cmd = Command::new(this);
    cmd.arg("--generate-into").arg(&path);
    cmd.args(["--scale", &scale.to_string()]);
    let out = output_of(cmd, "the sample database generator");
    let counts = out.lines().filter_map(|line| {
        let (table, rows) = line.split_once('\t')?;
        Some((table.to_string(), rows.parse().ok()?))
    });
    fs::copy(&path, &pristine).expect("copy the sample database for pgloader");
    let bytes = fs::metadata(&path).expect("stat the sample database").len();
    let counts: Vec<(String, u64)> = counts.collect();
    let rows: u64 = counts.iter().map(|(_, n)| n).sum();
    eprintln!("generated {rows} rows, {:.1} MB", bytes as f64 / MB);
    Source {
        path,
        pristine,
        bytes,
        counts,
    }
}

/// The `--generate-into` child: generates, prints `table<TAB>rows` lines on stdout.
fn generate_into(path: &Path, scale: f64) {
    let options = GenerateOptions { scale, seed: SEED };
    let summary = generate(path, &options).expect("generate the sample app database");
    for t in &summary.tables {
        println!("{}\t{}", t.table, t.rows);
    }
    let seconds = summary.elapsed.as_secs_f64();
    eprintln!("generated {} rows in {seconds:.1} s", summary.total_rows());
}

/// The private cluster as the client tools see it.
struct Pg {
    bin: PathBuf,
    port: u16,
    password: String,
    /// Server-side files go here: a directory inside the cluster's root, owned by the server user.
    files: PathBuf,
    server_log: PathBuf,
}

impl Pg {
    fn new(cluster: &PrivateCluster) -> Pg {
        let root = cluster.root_dir();
        let owner = fs::metadata(root).expect("stat the cluster directory");
        let files = root.join("bench-files");
        fs::create_dir(&files).expect("create the server-side file directory");
        std::os::unix::fs::chown(&files, Some(owner.uid()), Some(owner.gid()))
            .expect("hand the server-side file directory to the server user");
        Pg {
            bin: pg_bin_dir(),
            server_log: cluster.log_path(),
            port: cluster.port(),
            password: cluster.password().to_string(),
            files,
        }
    }

    fn url(&self, db: &str) -> String {
        let (password, port) = (&self.password, self.port);
        format!("postgresql://postgres:{password}@127.0.0.1:{port}/{db}")
    }

    /// A PostgreSQL client tool connected to `db` as the superuser.
    fn tool(&self, name: &str, db: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-d", db])
            .args(["-p", &self.port.to_string()])
            .env("PGPASSWORD", &self.password)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs one SQL command; returns its unaligned output.
    fn sql(&self, db: &str, sql: &str) -> String {
        let mut cmd = self.tool("psql", db);
        cmd.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        output_of(cmd, &format!("psql -c {sql:?}"))
    }

    /// Starts psql on a script file (stopping at the first error).
    fn spawn_script(&self, db: &str, script: &Path) -> Child {
        let mut cmd = self.tool("psql", db);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(script)
            .stdout(Stdio::null());
        cmd.spawn().expect("start psql on a script")
    }

    fn run_script(&self, db: &str, script: &Path) {
        let child = self.spawn_script(db, script);
        finish(child, &format!("psql -f {}", script.display()));
    }

    fn server_log_len(&self) -> u64 {
        fs::metadata(&self.server_log).map_or(0, |m| m.len())
    }

    /// Flushes what earlier steps left dirty, so no timed step pays for another's writes.
    fn checkpoint(&self) {
        self.sql("postgres", "CHECKPOINT");
    }

    /// The schema-qualified name of `table` in `db`, wherever the tool put it.
    fn find_table(&self, db: &str, table: &str) -> Option<String> {
        let sql = format!(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' \
             AND c.relname = {} AND n.nspname NOT IN ('pg_catalog', 'information_schema', \
             'sqlite2pg') ORDER BY n.nspname = 'public' DESC LIMIT 1",
            quote_literal(table)
        );
        Some(self.sql(db, &sql).trim().to_string()).filter(|s| !s.is_empty())
    }

    /// Rows per source table in `db` (`None`: the table is not there).
    fn counts(&self, db: &str, source: &Source) -> Vec<(String, u64, Option<u64>)> {
        let count = |qualified: String| {
            let n = self.sql(db, &format!("SELECT count(*) FROM {qualified}"));
            n.trim().parse::<u64>().expect("count(*) is a number")
        };
        let tables = source.counts.iter();
        tables
            .map(|(t, n)| (t.clone(), *n, self.find_table(db, t).map(count)))
            .collect()
    }
}

/// Prints, slowest first, the statements the server logged as slow since byte `from` of its log.
fn print_slow_statements(pg: &Pg, from: u64, run: &str) {
    let mut file = File::open(&pg.server_log).expect("open the server log");
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from)).expect("seek the server log");
    let text = std::io::read_to_string(file).unwrap_or_default();
    let mut slow: Vec<(f64, String)> = text
        .lines()
        .filter_map(|line| {
            let (ms, statement) = line.split_once("duration: ")?.1.split_once(" ms")?;
            let statement: String = statement.trim().chars().take(110).collect();
            Some((ms.parse().ok()?, statement))
        })
        .collect();
    slow.sort_by(|a, b| b.0.total_cmp(&a.0));
    eprintln!("server statements ≥ {SLOW_STATEMENT_MS} ms during {run}:");
    for (ms, statement) in slow {
        eprintln!("  {:>8.2} s  {statement}", ms / 1000.0);
    }
}

/// `$SQLITE2PG_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin` — where the private cluster
/// finds its server, so the client tools match the server's version — else `PATH`.
fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        return dir.into();
    }
    let versions = fs::read_dir("/usr/lib/postgresql").into_iter().flatten();
    let newest = versions
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<f64>().ok()?, e.path())))
        .filter(|(_, dir)| dir.join("bin/psql").is_file())
        .max_by(|a, b| a.0.total_cmp(&b.0));
    newest.map(|(_, dir)| dir.join("bin")).unwrap_or_default()
}

fn output_of(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {what}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}): {stderr}",
        out.status
    );
    String::from_utf8(out.stdout).expect("client tool output is UTF-8")
}

fn finish(child: Child, what: &str) {
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {what}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}): {stderr}",
        out.status
    );
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// One timed run of one tool.
struct Measured {
    seconds: f64,
    /// Exit status as text ("0", "3", "timed out").
    status: String,
    /// Rows per table: (table, source rows, rows in the target if the table is there).
    counts: Vec<(String, u64, Option<u64>)>,
    /// Where the time went, in order.
    phases: Vec<(&'static str, f64)>,
    peak_rss_kib: Option<u64>,
    /// The first errors the tool logged.
    errors: Vec<String>,
}

impl Measured {
    fn counts_match(&self) -> bool {
        self.counts.iter().all(|(_, n, got)| *got == Some(*n))
    }

    /// Rows that arrived (the source's rows when the tool's counts are not taken).
    fn rows_loaded(&self, source: &Source) -> u64 {
        match self.counts.is_empty() {
            true => source.rows(),
            false => self.counts.iter().filter_map(|(_, _, got)| *got).sum(),
        }
    }
}

/// Runs `sqlite2pg snapshot --jobs 2` into `ours_db` (`ours_db_<round>` after the first round;
/// the raw baseline exports `ours_db`); panics unless every source row arrived.
fn run_ours(pg: &Pg, source: &Source, work: &Path, round: usize) -> Measured {
    let db = round_db("ours_db", round);
    pg.sql("postgres", &format!("CREATE DATABASE {db}"));
    pg.checkpoint();
    let (state, log) = (
        work.join(format!("state-{round}")),
        work.join(format!("sqlite2pg-{round}.log")),
    );
    let mut cmd = Command::new(sqlite2pg_binary());
    cmd.arg("--source")
        .arg(&source.path)
        .args(["--target", &pg.url(&db)])
        .arg("--state-dir")
        .arg(&state)
        .args(["-v", "--log-format", "json", "snapshot"])
        .args(["--jobs", &JOBS.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&log).expect("create the sqlite2pg log"));
    eprintln!("running sqlite2pg snapshot --jobs {JOBS}");
    let (t0, started) = (SystemTime::now(), Instant::now());
    // Reaped by wait4 in `reap`, which std's `wait` cannot replace (it drops the rusage).
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().expect("start sqlite2pg");
    let summary = std::io::read_to_string(child.stdout.take().expect("piped stdout"))
        .expect("read the snapshot summary");
    let (status, peak_rss_kib) = reap(&mut child, None).expect("no limit, so never killed");
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("{summary}");
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success() || status.code() == Some(3),
        "sqlite2pg snapshot failed ({status}); its log:\n{log_text}"
    );
    let counts = pg.counts(&db, source);
    assert_counts_match(&counts);
    Measured {
        seconds,
        status: status_text(status),
        counts,
        phases: ours_phases(&state, &log_text, t0, seconds),
        peak_rss_kib: Some(peak_rss_kib),
        errors: Vec::new(),
    }
}

fn assert_counts_match(counts: &[(String, u64, Option<u64>)]) {
    let wrong: Vec<String> = counts
        .iter()
        .filter(|(_, n, got)| *got != Some(*n))
        .map(|(t, n, got)| format!("{t}: source {n}, ours_db {got:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "sqlite2pg snapshot lost or added rows:\n{}",
        wrong.join("\n")
    );
}

/// `$SQLITE2PG_BENCH_BIN` (to measure a given build), else the release binary cargo built for
/// this bench, else `target/release/sqlite2pg`, (re)built.
fn sqlite2pg_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(BIN_ENV) {
        return path.into();
    }
    if let Some(path) = option_env!("CARGO_BIN_EXE_sqlite2pg") {
        return path.into();
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(manifest_dir)
        .args(["build", "--release", "--bin", "sqlite2pg"]);
    let status = cmd.status().expect("run cargo build --release");
    assert!(status.success(), "cargo build --release failed ({status})");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from);
    let target = target.unwrap_or_else(|| manifest_dir.join("target"));
    target.join("release/sqlite2pg")
}

/// Reaps `child` with wait4, which also reports its peak resident set size (KiB on Linux).
/// With a `limit`, polls and kills the child once the limit has passed (`None` then).
fn reap(child: &mut Child, limit: Option<Duration>) -> Option<(ExitStatus, u64)> {
    let deadline = limit.map(|l| Instant::now() + l);
    let flags = if deadline.is_some() { libc::WNOHANG } else { 0 };
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid out-parameter for wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our unreaped child; both pointers are valid for the call.
        let rc = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if rc == pid {
            return Some((ExitStatus::from_raw(status), usage.ru_maxrss as u64));
        }
        if rc == 0 && deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        if rc == 0 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let e = std::io::Error::last_os_error();
        assert!(
            e.kind() == std::io::ErrorKind::Interrupted,
            "wait4 on PID {pid}: {e}"
        );
    }
}

fn status_text(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => code.to_string(),
        None => status.to_string(),
    }
}

/// Our snapshot's phases, from the state files and the JSON log: capture and the read view (or
/// with `--from-backup` the backup: copy, then its record), planning and DDL until the first COPY
/// starts, the COPY, then keys, indexes, ANALYZE, foreign keys and views (a backup's blake3 and
/// quick_check run beside the last two at low priority). Boundaries are ±a few ms (process
/// start, log timestamps).
fn ours_phases(state: &Path, log: &str, t0: SystemTime, wall: f64) -> Vec<(&'static str, f64)> {
    let since_t0 = |t: SystemTime| t.duration_since(t0).map_or(0.0, |d| d.as_secs_f64());
    let record = read_json(&state.join("snapshot.json"));
    let report = read_json(&state.join("snapshot-report.json"));
    let live = record["view"] == "live";
    let verified = record["started_at"].as_str().map(parse_time);
    let verified = since_t0(verified.expect("snapshot.json has started_at"));
    // The record is written the instant the read view opened, or once the backup was taken.
    let mut phases = match live {
        true => vec![("capture, open the live source's read view", verified)],
        false => {
            let backup = record["backup"]
                .as_str()
                .expect("snapshot.json names its backup");
            let written = fs::metadata(backup).and_then(|m| m.modified());
            let written = since_t0(written.expect("stat the snapshot's backup"));
            vec![
                ("backup: backup API copy", written),
                ("backup: close it, write snapshot.json", verified - written),
            ]
        }
    };
    let copy_start = first_copy_start(log).map_or(verified, since_t0);
    let load = report["load_seconds"]
        .as_f64()
        .expect("report has load_seconds");
    let total = report["total_seconds"]
        .as_f64()
        .expect("report has total_seconds");
    phases.extend([
        ("plan + schema + DDL", copy_start - verified),
        ("COPY BINARY (2 workers)", load - copy_start),
        ("keys, indexes, FKs, views, ANALYZE", total - load),
        ("process start and exit", wall - total),
    ]);
    phases
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn parse_time(text: &str) -> SystemTime {
    let time = chrono::DateTime::parse_from_rfc3339(text);
    time.unwrap_or_else(|e| panic!("parse the time {text:?}: {e}"))
        .into()
}

/// When the first range copy started: min over "range copied" log lines of (time - seconds).
fn first_copy_start(log: &str) -> Option<SystemTime> {
    let events = log.lines().filter_map(|line| {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = &event["fields"];
        (fields["message"] == "range copied").then_some(())?;
        let at = parse_time(event["timestamp"].as_str()?);
        let took = Duration::from_secs_f64(fields["seconds"].as_f64()?);
        Some(at - took)
    });
    events.min()
}

/// The baseline's inputs: DDL before and after the data, and one COPY script per connection.
struct RawInput {
    pre_data: PathBuf,
    post_data: PathBuf,
    scripts: Vec<PathBuf>,
    tables: Vec<String>,
}

/// A server-side COPY file: part (or all) of one table's rows.
struct Chunk {
    table: String,
    path: PathBuf,
    rows: u64,
}

/// Untimed: dumps ours_db's tables to server-side text files and its DDL with pg_dump.
fn prepare_raw(pg: &Pg, source: &Source) -> RawInput {
    eprintln!("exporting ours_db for the raw COPY FROM baseline (untimed)");
    let (pre_data, post_data) = (pg.files.join("pre.sql"), pg.files.join("post.sql"));
    dump_section(pg, "pre-data", &pre_data);
    dump_section(pg, "post-data", &post_data);
    let mut chunks = Vec::new();
    let mut tables = Vec::new();
    for (table, _) in &source.counts {
        let qualified = format!("public.{}", quote_ident(table));
        let file = pg.files.join(format!("{table}.copy"));
        let sql = format!("COPY {qualified} TO {}", quote_literal(&path_text(&file)));
        pg.sql("ours_db", &sql);
        chunks.extend(split_copy_file(&qualified, &file));
        tables.push(qualified);
    }
    // Autovacuum off while loading and building, as sqlite2pg does: a worker vacuuming a freshly
    // loaded table makes the key and index builds wait up to deadlock_timeout (1 s), in some
    // rounds and not others. Without it both sides are measured without that noise.
    let mut pre = fs::read_to_string(&pre_data).expect("read the pre-data DDL");
    for table in &tables {
        pre.push_str(&format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = false, toast.autovacuum_enabled = false);\n"
        ));
    }
    fs::write(&pre_data, pre).expect("write the pre-data DDL");
    RawInput {
        pre_data,
        post_data,
        scripts: write_copy_scripts(&pg.files, chunks),
        tables,
    }
}

fn dump_section(pg: &Pg, section: &str, out: &Path) {
    let mut cmd = pg.tool("pg_dump", "ours_db");
    cmd.args([
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        "--schema=public",
    ])
    .arg(format!("--section={section}"))
    .arg("--file")
    .arg(out);
    output_of(cmd, &format!("pg_dump --section={section}"));
    // pg_dump --schema=public also emits CREATE SCHEMA public, which a new database already has.
    let text = fs::read_to_string(out).expect("read the pg_dump output");
    let text = text.replace("CREATE SCHEMA public;", "");
    fs::write(out, text).expect("rewrite the pg_dump output");
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("bench paths are UTF-8").to_string()
}

/// Splits a text COPY file (one row per line) into files of at most `DEFAULT_RANGE_ROWS` rows,
/// as sqlite2pg splits large tables into rowid ranges.
fn split_copy_file(table: &str, file: &Path) -> Vec<Chunk> {
    let reader = BufReader::new(File::open(file).expect("open an exported COPY file"));
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut out: Option<BufWriter<File>> = None;
    for line in reader.split(b'\n') {
        let line = line.expect("read an exported COPY file");
        let full = chunks.last().is_none_or(|c| c.rows == DEFAULT_RANGE_ROWS);
        if full {
            let path = file.with_extension(format!("{}.copy", chunks.len()));
            let writer = File::create(&path).expect("create a COPY chunk file");
            out = Some(BufWriter::new(writer));
            let table = table.to_string();
            chunks.push(Chunk {
                table,
                path,
                rows: 0,
            });
        }
        let writer = out.as_mut().expect("a chunk file is open");
        writer.write_all(&line).expect("write a COPY chunk file");
        writer.write_all(b"\n").expect("write a COPY chunk file");
        chunks.last_mut().expect("a chunk is open").rows += 1;
    }
    drop(out);
    fs::remove_file(file).expect("remove the exported COPY file");
    chunks
}

/// One script of `COPY … FROM 'file'` per connection, balanced by rows (largest chunks first,
/// each to the connection with the fewest rows so far).
fn write_copy_scripts(dir: &Path, mut chunks: Vec<Chunk>) -> Vec<PathBuf> {
    chunks.sort_by_key(|c| std::cmp::Reverse(c.rows));
    let mut scripts = vec![(0u64, String::new()); JOBS];
    for chunk in &chunks {
        let (rows, sql) = scripts
            .iter_mut()
            .min_by_key(|(rows, _)| *rows)
            .expect("JOBS > 0");
        let file = quote_literal(&path_text(&chunk.path));
        sql.push_str(&format!("COPY {} FROM {file};\n", chunk.table));
        *rows += chunk.rows;
    }
    let scripts = scripts.into_iter().enumerate();
    scripts
        .map(|(i, (_, sql))| {
            let path = dir.join(format!("copy-{i}.sql"));
            fs::write(&path, sql).expect("write a COPY script");
            path
        })
        .collect()
}

/// Timed: pre-data, parallel COPY FROM, post-data, ANALYZE into a fresh `raw_db`.
fn run_raw(pg: &Pg, input: &RawInput, round: usize) -> Measured {
    let db = round_db("raw_db", round);
    pg.sql("postgres", &format!("CREATE DATABASE {db}"));
    pg.checkpoint();
    eprintln!("running raw COPY FROM with {JOBS} connections");
    let started = Instant::now();
    let pre = timed(|| pg.run_script(&db, &input.pre_data));
    let copy = timed(|| {
        let children: Vec<Child> = input
            .scripts
            .iter()
            .map(|s| pg.spawn_script(&db, s))
            .collect();
        children.into_iter().for_each(|c| finish(c, "COPY FROM"));
    });
    let post = timed(|| pg.run_script(&db, &input.post_data));
    let analyze_sql = format!("ANALYZE {}", input.tables.join(", "));
    let reset: Vec<String> = (input.tables.iter())
        .map(|t| format!("ALTER TABLE {t} RESET (autovacuum_enabled, toast.autovacuum_enabled)"))
        .collect();
    let analyze_sql = format!("{analyze_sql}; {}", reset.join("; "));
    let analyze = timed(|| drop(pg.sql(&db, &analyze_sql)));
    Measured {
        seconds: started.elapsed().as_secs_f64(),
        status: "0".into(),
        counts: Vec::new(),
        phases: vec![
            ("pre-data DDL", pre),
            ("COPY FROM (2 connections)", copy),
            ("post-data: keys, indexes, FKs", post),
            ("ANALYZE", analyze),
        ],
        peak_rss_kib: None,
        errors: Vec::new(),
    }
}

/// `base` in the first round, `base_<round>` after it.
fn round_db(base: &str, round: usize) -> String {
    match round {
        1 => base.to_string(),
        n => format!("{base}_{n}"),
    }
}

fn timed(f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64()
}

/// A pgloader run, and its time over ours in each round when it ran in every round.
type PgloaderResult = (PgloaderRun, Measured, Vec<f64>);

/// How pgloader is run. With its defaults it casts SQLite DATETIME to timestamptz through
/// `sqlite-timestamp-to-timestamp`, which turns epoch integers into values like
/// "1684502175-01-01" that PostgreSQL refuses, and then loads none of that table; keeping
/// DATETIME as text lets it load every row, so its speed can be compared with ours.
#[derive(Debug, Clone, Copy)]
enum PgloaderRun {
    Defaults,
    DatetimeAsText,
}

impl PgloaderRun {
    fn label(self) -> &'static str {
        match self {
            PgloaderRun::Defaults => "pgloader (defaults)",
            PgloaderRun::DatetimeAsText => "pgloader (DATETIME cast to text)",
        }
    }

    fn database(self) -> &'static str {
        match self {
            PgloaderRun::Defaults => "pgl_db",
            PgloaderRun::DatetimeAsText => "pgl_text_db",
        }
    }
}

fn run_pgloader(
    pg: &Pg,
    program: &Path,
    source: &Source,
    work: &Path,
    run: PgloaderRun,
    round: usize,
) -> Measured {
    let db = &round_db(run.database(), round);
    pg.sql("postgres", &format!("CREATE DATABASE {db}"));
    pg.checkpoint();
    let log_path = work.join(format!("{db}.log"));
    let log = File::create(&log_path).expect("create the pgloader log");
    let mut cmd = Command::new(program);
    cmd.arg("--root-dir").arg(work.join("pgloader"));
    match run {
        PgloaderRun::Defaults => cmd
            .arg(format!("sqlite://{}", path_text(&source.pristine)))
            .arg(pg.url(db)),
        PgloaderRun::DatetimeAsText => cmd.arg(write_load_file(pg, source, work, db)),
    };
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().expect("share the pgloader log"))
        .stderr(log);
    eprintln!("running {}", run.label());
    let started = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped by `reap`
    let mut child = cmd.spawn().expect("start pgloader");
    let outcome = reap(&mut child, Some(PGLOADER_TIMEOUT));
    let seconds = started.elapsed().as_secs_f64();
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    Measured {
        seconds,
        status: outcome.map_or("timed out".into(), |(s, _)| status_text(s)),
        counts: pg.counts(db, source),
        phases: Vec::new(),
        peak_rss_kib: outcome.map(|(_, rss)| rss),
        errors: pgloader_errors(&log),
    }
}

fn write_load_file(pg: &Pg, source: &Source, work: &Path, db: &str) -> PathBuf {
    let path = work.join(format!("{db}.load"));
    let text = format!(
        "LOAD DATABASE\n  FROM sqlite://{}\n  INTO {}\n  \
         CAST type datetime to text drop typemod using nil;\n",
        path_text(&source.pristine),
        pg.url(db)
    );
    fs::write(&path, text).expect("write the pgloader command file");
    path
}

/// The first few errors pgloader logged, without their timestamps.
fn pgloader_errors(log: &str) -> Vec<String> {
    let errors = log
        .lines()
        .filter_map(|l| l.split_once(" ERROR ").map(|(_, e)| e));
    errors.take(3).map(str::to_string).collect()
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let dirs = std::env::split_paths(&path);
    dirs.map(|d| d.join(program)).find(|p| p.is_file())
}

/// The BENCHMARKS.md section: the table, the ratios against their targets, the phases.
#[allow(clippy::too_many_arguments)]
fn render(
    settings: &Settings,
    pg: &Pg,
    source: &Source,
    ours: &Measured,
    raw: &Measured,
    round_ratios: &[f64],
    pgloader: &[PgloaderResult],
    pgloader_failed: &[usize],
) -> String {
    let mut out = format!(
        "## Snapshot, end to end\n\n{} UTC · scale {} · {} rows · SQLite file {:.1} MB · \
         PostgreSQL {} (private cluster, fsync off) · 2 cores, shared and noisy\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        settings.scale,
        source.rows(),
        source.bytes as f64 / MB,
        pg.sql("postgres", "SHOW server_version").trim(),
    );
    out.push_str(&results_table(source, ours, raw, pgloader));
    out.push_str(&ratios(
        source,
        ours,
        raw,
        round_ratios,
        pgloader,
        pgloader_failed,
    ));
    out.push_str(&phases_table(ours, raw));
    for (run, m, _) in pgloader.iter().filter(|(_, m, _)| !m.counts_match()) {
        out.push_str(&pgloader_counts(*run, m));
    }
    out.push_str(&method_note(!pgloader.is_empty()));
    out
}

fn results_table(
    source: &Source,
    ours: &Measured,
    raw: &Measured,
    pgloader: &[PgloaderResult],
) -> String {
    let mut out = String::from(
        "| | seconds | rows/s | MB/s | exit | rows = source | peak RSS |\n\
         |---|---:|---:|---:|---:|---|---:|\n",
    );
    let mut row = |name: &str, m: &Measured| {
        let rss = m
            .peak_rss_kib
            .map_or("–".into(), |k| format!("{:.0} MB", mb_of_kib(k)));
        let loaded = m.rows_loaded(source);
        let same = match m.counts_match() {
            true => "yes".to_string(),
            false => format!("**no**: {loaded} of {}", source.rows()),
        };
        out.push_str(&format!(
            "| {name} | {:.1} | {:.0} | {:.1} | {} | {same} | {rss} |\n",
            m.seconds,
            loaded as f64 / m.seconds,
            source.bytes as f64 / MB / m.seconds,
            m.status,
        ));
    };
    row(&format!("sqlite2pg snapshot --jobs {JOBS}"), ours);
    row("raw COPY FROM", raw);
    for (run, m, _) in pgloader {
        row(run.label(), m);
    }
    if pgloader.is_empty() {
        out.push_str("| pgloader | not on PATH: skipped | | | | | |\n");
    }
    out.push('\n');
    out
}

/// This process's peak resident set size (KiB, `VmHWM`): a spawned child's ru_maxrss starts
/// from it. Not getrusage's ru_maxrss, which itself includes what cargo peaked at.
fn own_peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:"));
    let kib = hwm.and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    kib.expect("/proc/self/status has VmHWM in kB")
}

fn mb_of_kib(kib: u64) -> f64 {
    kib as f64 * 1024.0 / MB
}

fn ratios(
    source: &Source,
    ours: &Measured,
    raw: &Measured,
    round_ratios: &[f64],
    pgloader: &[PgloaderResult],
    pgloader_failed: &[usize],
) -> String {
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let vs_raw = raw.seconds / ours.seconds;
    let listed: Vec<String> = round_ratios.iter().map(|r| format!("{r:.2}")).collect();
    let mut out = format!(
        "- vs raw COPY FROM, throughput (raw s / ours s): **{vs_raw:.2}** (median of {} \
         alternating rounds: {}) — target ≥ {TARGET_VS_RAW}: {}\n",
        round_ratios.len(),
        listed.join(", "),
        verdict(vs_raw >= TARGET_VS_RAW)
    );
    for (run, m, per_round) in pgloader {
        // Run in every round: the median of its time over ours in the same round.
        let vs = match per_round.len() {
            0 => m.seconds / ours.seconds,
            n => per_round[n / 2],
        };
        let rounds = match per_round.len() {
            0 => String::new(),
            n => {
                let listed: Vec<String> = per_round.iter().map(|r| format!("{r:.2}")).collect();
                let failed = match pgloader_failed {
                    [] => String::new(),
                    f => format!(
                        "; left out: round {} where pgloader did not load every row",
                        f.iter()
                            .map(usize::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                format!(
                    " (median of {n} rounds, each against ours in the same round: {}{failed})",
                    listed.join(", ")
                )
            }
        };
        let outcome = match m.counts_match() {
            true => verdict(vs >= TARGET_VS_PGLOADER).to_string(),
            false => format!(
                "not comparable, it loaded {} of {} rows",
                m.rows_loaded(source),
                source.rows()
            ),
        };
        out.push_str(&format!(
            "- vs {}, its s / ours s: **{vs:.2}**{rounds} — target ≥ {TARGET_VS_PGLOADER}: \
             {outcome}\n",
            run.label()
        ));
    }
    let rss = mb_of_kib(ours.peak_rss_kib.unwrap_or(0));
    out.push_str(&format!(
        "- peak RSS of sqlite2pg: **{rss:.0} MB** — target < {TARGET_RSS_MB} MB: {} \
         (wait4's ru_maxrss of the client process, which includes up to the {:.0} MB this bench \
         itself peaked at; the server's memory is not counted for any tool)\n\n",
        verdict(rss < TARGET_RSS_MB),
        mb_of_kib(own_peak_rss_kib()),
    ));
    out
}

fn phases_table(ours: &Measured, raw: &Measured) -> String {
    let mut out =
        String::from("| sqlite2pg phase | s | raw COPY FROM phase | s |\n|---|---:|---|---:|\n");
    let rows = ours.phases.len().max(raw.phases.len());
    for i in 0..rows {
        let cell = |p: Option<&(&str, f64)>| {
            p.map_or(" | ".to_string(), |(name, s)| format!("{name} | {s:.1}"))
        };
        let (a, b) = (cell(ours.phases.get(i)), cell(raw.phases.get(i)));
        out.push_str(&format!("| {a} | {b} |\n"));
    }
    out.push('\n');
    out
}

fn pgloader_counts(run: PgloaderRun, m: &Measured) -> String {
    let mut out = format!("{} rows per table (source → loaded):\n\n", run.label());
    for (table, n, got) in &m.counts {
        let got = got.map_or("missing".into(), |g| g.to_string());
        out.push_str(&format!("- {table}: {n} → {got}\n"));
    }
    if !m.errors.is_empty() {
        out.push_str("\nIts first errors:\n\n");
        for e in &m.errors {
            out.push_str(&format!("- `{}`\n", e.replace('`', "'")));
        }
    }
    out.push('\n');
    out
}

fn method_note(has_pgloader: bool) -> String {
    let mut out = format!(
        "sqlite2pg runs with its defaults (plus `-v --log-format json` for its phases): the \
         sample app's database is in WAL mode, so the copy reads it live through one read view \
         and no backup is written (`--from-backup` would write and read a verified backup \
         first). \
         Raw COPY FROM is PostgreSQL's own ingest of the rows sqlite2pg loaded: text files read \
         by the server (`COPY t FROM 'file'`, tables over {DEFAULT_RANGE_ROWS} rows in chunks of \
         that size) over {JOBS} connections, then `pg_dump --section=post-data` (keys, indexes, \
         foreign keys) and ANALYZE on one connection, autovacuum off on its tables until then as \
         sqlite2pg does. Every database is created before its clock \
         starts, after a CHECKPOINT. sqlite2pg and raw COPY FROM run alternately (`--rounds`, \
         default 3), so a burst of load from other work on this shared machine hits both; the \
         round with the median ratio is shown. MB = 10^6 bytes; MB/s = SQLite file size / \
         seconds.\n"
    );
    if has_pgloader {
        out.push_str(
            "pgloader runs from a command file that adds `CAST type datetime to text drop \
             typemod using nil` (its default DATETIME cast turns epoch integers into dates \
             PostgreSQL refuses and it then skips the whole table) in every round, right after \
             ours and raw COPY FROM, and its ratio is its time over ours in the same round, the \
             median of the rounds shown; and once with its defaults (`pgloader \
             sqlite:///path/app.db postgresql://…/pgl_db`) after the rounds.\n",
        );
    }
    out.push_str(
        "\nReproduce: `cargo bench --bench snapshot -- --scale 1` (needs the PostgreSQL server \
         binaries; pgloader is optional: `apt-get install pgloader`).\n",
    );
    out
}

/// Replaces the section between the markers in BENCHMARKS.md (creating the file if missing).
fn record(section: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BENCHMARKS_INTRO.to_string(),
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    let block = format!("{SECTION_BEGIN}\n{section}{SECTION_END}\n");
    let span = old.find(SECTION_BEGIN).zip(old.find(SECTION_END));
    let new = match span.filter(|(begin, end)| begin < end) {
        Some((begin, end)) => {
            let rest = old[end + SECTION_END.len()..].trim_start_matches('\n');
            format!("{}{block}{rest}", &old[..begin])
        }
        None => format!("{}\n\n{block}", old.trim_end()),
    };
    fs::write(&path, new).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    eprintln!("wrote {}", path.display());
}
