//! What the end-to-end benches that run sqlite2pg in-process share: the sample database made in
//! a child process, a PostgreSQL connection, the config, a snapshot with capture, percentiles
//! and the BENCHMARKS.md section writer. Each bench uses part of it.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sqlite2pg::config::{Config, GlobalFlags};
use sqlite2pg::sample_app::{generate, GenerateOptions};
use sqlite2pg::snapshot::{run_snapshot, SnapshotOptions, DEFAULT_RANGE_ROWS};
use sqlite2pg::target::connect::TargetUrl;

/// The sample database's seed: the same rows in every run.
pub const SEED: u64 = 42;
pub const MB: f64 = 1_000_000.0;
/// The flag that makes a bench executable the sample database generator (see
/// [`generate_source`]).
const GENERATE_INTO: &str = "--generate-into";
const BENCHMARKS_INTRO: &str = "# Benchmarks\n\nRatios are measured in one run on the same \
    server because the machine is shared and noisy: absolute times move from run to run, the \
    ratios between tools measured side by side move much less.\n";

/// sqlite2pg's log on stderr when asked for (`-v`: its debug lines too).
pub fn init_logging(verbose: bool) {
    let filter = match (verbose, std::env::var("RUST_LOG")) {
        (_, Ok(filter)) => filter,
        (true, Err(_)) => "sqlite2pg=debug".to_string(),
        (false, Err(_)) => return,
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}

/// The generated SQLite database and its row counts.
pub struct Source {
    pub path: PathBuf,
    pub bytes: u64,
    pub rows: u64,
}

/// Generates the sample database at `dir/app.db` in a child process (this bench executable with
/// `--generate-into`, see [`generator_child`]), so the generator's page cache never counts in
/// this process's RSS.
pub fn generate_source(dir: &Path, scale: f64) -> Source {
    let path = dir.join("app.db");
    let this = std::env::current_exe().expect("locate the bench executable");
    let out = Command::new(this)
        .arg(GENERATE_INTO)
        .arg(&path)
        .args(["--scale", &scale.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the sample database generator");
    assert!(out.status.success(), "the generator failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: u64 = text
        .lines()
        .filter_map(|l| l.split_once('\t')?.1.parse::<u64>().ok())
        .sum();
    let bytes = fs::metadata(&path).expect("stat the sample database").len();
    eprintln!("generated {rows} rows, {:.1} MB", bytes as f64 / MB);
    Source { path, bytes, rows }
}

/// When this process is the generator child (`--generate-into PATH --scale S`): generates,
/// prints `table<TAB>rows` lines on stdout and returns true; the bench's `main` then returns.
pub fn generator_child() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == GENERATE_INTO) else {
        return false;
    };
    let path = PathBuf::from(args.get(at + 1).expect("--generate-into needs a path"));
    let scale = args
        .iter()
        .position(|a| a == "--scale")
        .and_then(|i| args.get(i + 1)?.parse::<f64>().ok())
        .expect("--generate-into needs --scale");
    let options = GenerateOptions { scale, seed: SEED };
    let summary = generate(&path, &options).expect("generate the sample app database");
    for t in &summary.tables {
        println!("{}\t{}", t.table, t.rows);
    }
    true
}

/// A PostgreSQL connection on its own single-threaded runtime.
pub struct Pg {
    pub runtime: tokio::runtime::Runtime,
    pub client: tokio_postgres::Client,
}

impl Pg {
    pub fn connect(url: &TargetUrl) -> Pg {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("start a tokio runtime");
        let client = runtime
            .block_on(url.connect())
            .unwrap_or_else(|e| panic!("connect to {}: {e}", url.redacted()));
        Pg { runtime, client }
    }

    pub fn execute(&self, sql: &str) {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The first column of the first row, as text.
    pub fn text(&self, sql: &str) -> String {
        let row = self.runtime.block_on(self.client.query_one(sql, &[]));
        row.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
    }
}

/// sqlite2pg's config for `source` and `target`, everything else default.
pub fn sync_config(source: &Path, target: &TargetUrl) -> Config {
    let flags = GlobalFlags {
        source: Some(source.to_path_buf()),
        target: Some(target.to_connection_string()),
        ..GlobalFlags::default()
    };
    Config::resolve(&flags).expect("a valid sync config")
}

/// Snapshot (with capture) of the source into the config's target; its seconds.
pub fn snapshot(config: &Config) -> f64 {
    let opts = SnapshotOptions {
        tables: None,
        jobs: 2,
        batch_size: 10_000,
        keep_case: false,
        allow_rowid_key: false,
        drop_existing: false,
        fresh: false,
        validate: false,
        capture: true,
        range_rows: DEFAULT_RANGE_ROWS,
        check_backup: false,
        from_backup: false,
    };
    let started = Instant::now();
    let report = run_snapshot(config, &opts, &|_, _| {}).expect("snapshot with capture");
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("snapshot: {} tables in {seconds:.1} s", report.tables.len());
    seconds
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// "met" or a bold "missed".
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// Replaces the section `name` (between `<!-- name:begin -->` and `<!-- name:end -->`) in
/// BENCHMARKS.md, appending it if missing.
pub fn record(name: &str, section: &str) {
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BENCHMARKS_INTRO.to_string(),
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    let block = format!("{begin}\n{section}{end}\n");
    let span = old.find(&begin).zip(old.find(&end));
    let new = match span.filter(|(b, e)| b < e) {
        Some((b, e)) => {
            let rest = old[e + end.len()..].trim_start_matches('\n');
            format!("{}{block}{rest}", &old[..b])
        }
        None => format!("{}\n\n{block}", old.trim_end()),
    };
    fs::write(&path, new).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    eprintln!("wrote {}", path.display());
}
