//! Full-diff benchmark: `cargo bench --bench diff [-- --scale 0.2] [--no-record]`.
//!
//! Generates the sample app database (scale 1 = 10k users, 1M jobs, 2M job history rows),
//! starts one private PostgreSQL cluster, snapshots the database into it with the release binary
//! (untimed) and measures, in one run, on that one server:
//! - **bare read** (the baseline): every table read to the end on both sides, the way the diff
//!   reads it but doing nothing with the rows — on PostgreSQL `COPY (SELECT <all columns> FROM t
//!   ORDER BY <key>) TO STDOUT (FORMAT binary)` (the diff's own query) read by a tokio-postgres
//!   client that discards the bytes; on SQLite `SELECT * FROM t ORDER BY <key>` with rusqlite,
//!   touching every value. Tables one after another, both sides of a table in parallel threads,
//!   as the diff runs them. Measured before and after the diff (A B A, so drift of the shared
//!   machine hits both alike); each side is also timed alone;
//! - **sqlite2pg diff**: the release binary's `diff --format json --output FILE` as a child
//!   process: wall time, peak RSS (wait4's ru_maxrss), its per-table seconds from the report,
//!   which must say identical;
//! - **row encoding and hashing** on real row sizes: the first `HASH_ROWS` rows of `jobs` and of
//!   `job_history` (98% of the rows) read from a binary COPY kept in memory: encoding the
//!   tuples' fields into canonical rows (what the PostgreSQL reader does; beside it the general
//!   path of decoding values first), then `row_hash_of` and `key_hash_of` + `row_hash_of` (what
//!   the merge computes once per matched pair), projected onto the whole diff.
//!
//! The machine is shared and noisy (2 cores), so the verdict is a ratio of times measured in the
//! same run on the same server: diff seconds / bare-read seconds ≤ 1.5. The results are printed
//! and replace the `diff` section of BENCHMARKS.md (unless `--no-record`).
//! `SQLITE2PG_BENCH_BIN=path` measures another sqlite2pg build.

use std::fs::{self, File};
use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

use futures_util::StreamExt;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use sqlite2pg::convert::PgType;
use sqlite2pg::diff::canonical::{encode_canonical, encode_count, key_hash_of, row_hash_of};
use sqlite2pg::diff::wire::encode_copy_field;
use sqlite2pg::private_pg::{ClusterOptions, PrivateCluster};
use sqlite2pg::sample_app::{generate, GenerateOptions};
use sqlite2pg::target::copy_out::CopyDecoder;
use sqlite2pg::target::mapping::parse_format_type;
use tokio_postgres::{Client, NoTls};

/// Environment variable naming the sqlite2pg binary to measure instead of this build's.
const BIN_ENV: &str = "SQLITE2PG_BENCH_BIN";
/// The sample database's seed: the same rows in every run.
const SEED: u64 = 42;
/// The database the snapshot loads and the diff compares against.
const DB: &str = "diff_db";
/// Diff seconds relative to the bare read of the same tables, that we aim to stay under.
const TARGET_VS_BARE: f64 = 1.5;
/// The tables whose rows the hashing measurement uses, and how many rows of each it keeps in
/// memory.
const HASH_TABLES: [&str; 2] = ["jobs", "job_history"];
const HASH_ROWS: u64 = 200_000;
/// Each hashing step runs this many times; the fastest counts.
const HASH_REPEATS: usize = 3;
/// Sizes are in MB = 10^6 bytes, like the snapshot summary's MB/s.
const MB: f64 = 1_000_000.0;
const SECTION_BEGIN: &str = "<!-- diff:begin -->";
const SECTION_END: &str = "<!-- diff:end -->";
const BENCHMARKS_INTRO: &str = "# Benchmarks\n\nRatios are measured in one run on the same \
    server because the machine is shared and noisy: absolute times move from run to run, the \
    ratios between tools measured side by side move much less.\n";
/// The target's columns in order, with their types as `format_type` prints them.
const TARGET_COLUMNS: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
     FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 \
     AND NOT a.attisdropped ORDER BY a.attnum";
/// The target's primary key columns, in key order.
const TARGET_KEY: &str = "SELECT a.attname::text FROM pg_index i \
     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
     WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY k.ord";

fn main() {
    let settings = Settings::from_args();
    if let Some(path) = &settings.generate_into {
        return generate_into(path, settings.scale);
    }
    let work = tempfile::Builder::new()
        .prefix("sqlite2pg-bench-diff-")
        .tempdir()
        .expect("create the bench work directory");
    let source = generate_source(work.path(), settings.scale);
    let cluster =
        PrivateCluster::start(&ClusterOptions::default()).expect("start a private PostgreSQL");
    let admin = Pg::connect(&cluster.url("postgres"));
    admin.execute(&format!("CREATE DATABASE {DB}"));
    let url = cluster.url(DB);
    let state = work.path().join("state");
    snapshot(&source, &url, &state);
    let pg = Pg::connect(&url);
    let tables = describe_tables(&source, &pg);

    // VACUUM sets the hint bits and visibility map the fresh load lacks, so no autovacuum
    // worker starts during the timed runs; one untimed bare read fills the caches.
    eprintln!("VACUUM and one bare read of both sides (untimed)");
    pg.execute("VACUUM");
    bare_parallel(&source.path, &pg, &tables);
    pg.execute("CHECKPOINT");

    let load_before = load_average();
    eprintln!("bare read, both sides in parallel (before the diff)");
    let before = with_cpu(&pg, || bare_parallel(&source.path, &pg, &tables));
    let bench_peak_kib = own_peak_rss_kib();
    let ours = run_diff(&source, &url, &state, work.path(), &cluster, &pg);
    eprintln!("bare read, both sides in parallel (after the diff)");
    let after = with_cpu(&pg, || bare_parallel(&source.path, &pg, &tables));
    eprintln!("bare read, SQLite alone");
    let sqlite_alone = with_cpu(&pg, || bare_sqlite_alone(&source.path, &tables));
    eprintln!("bare read, PostgreSQL alone");
    let pg_alone = with_cpu(&pg, || bare_pg_alone(&pg, &tables));
    let load_after = load_average();
    let hashing: Vec<Hashing> = HASH_TABLES
        .iter()
        .map(|name| {
            eprintln!("row hashing on {HASH_ROWS} {name} rows");
            let table = tables.iter().find(|t| t.name == *name);
            measure_hashing(&pg, table.unwrap_or_else(|| panic!("no {name} table")))
        })
        .collect();

    let runs = Runs {
        before,
        after,
        sqlite_alone,
        pg_alone,
        ours,
        bench_peak_kib,
        load: (load_before, load_after),
    };
    let version = pg.query_text("SHOW server_version");
    let section = render(&settings, &version, &source, &tables, &runs, &hashing);
    println!("\n{section}");
    if settings.record {
        record(&section);
    }
    drop(pg);
    drop(admin);
    drop(cluster);
}

struct Settings {
    scale: f64,
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
                "--generate-into" => settings.generate_into = args.next().map(PathBuf::from),
                // cargo passes --bench; no other harness flag applies to this bench.
                _ => {}
            }
        }
        settings
    }
}

/// The generated SQLite database and its row counts (the truth the diff is checked against).
struct Source {
    path: PathBuf,
    bytes: u64,
    counts: Vec<(String, u64)>,
}

impl Source {
    fn rows(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }
}

/// Generates the sample database in a child process (this bench with `--generate-into`): the
/// generator's page cache must not count in the peak RSS that the diff child inherits from this
/// process (Linux's `ru_maxrss` of a child starts at its parent's high-water mark).
fn generate_source(dir: &Path, scale: f64) -> Source {
    let path = dir.join("app.db");
    let this = std::env::current_exe().expect("locate the bench executable");
    let mut cmd = Command::new(this);
    cmd.arg("--generate-into").arg(&path);
    cmd.args(["--scale", &scale.to_string()]);
    let out = output_of(cmd, "the sample database generator");
    let counts = out.lines().filter_map(|line| {
        let (table, rows) = line.split_once('\t')?;
        Some((table.to_string(), rows.parse().ok()?))
    });
    let counts: Vec<(String, u64)> = counts.collect();
    let bytes = fs::metadata(&path).expect("stat the sample database").len();
    let rows: u64 = counts.iter().map(|(_, n)| n).sum();
    eprintln!("generated {rows} rows, {:.1} MB", bytes as f64 / MB);
    Source {
        path,
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

/// Untimed: `sqlite2pg snapshot --no-capture` of the source into the target.
fn snapshot(source: &Source, url: &str, state: &Path) {
    eprintln!("snapshotting the sample database (untimed)");
    let mut cmd = Command::new(sqlite2pg_binary());
    cmd.arg("--source")
        .arg(&source.path)
        .args(["--target", url])
        .arg("--state-dir")
        .arg(state)
        .args(["snapshot", "--no-capture"])
        .stdin(Stdio::null());
    let out = cmd.output().expect("run sqlite2pg snapshot");
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(3),
        "sqlite2pg snapshot failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tokio-postgres client on its own single-threaded runtime, usable from one thread at a time.
struct Pg {
    runtime: tokio::runtime::Runtime,
    client: Client,
    /// The server process serving this connection, whose CPU time the bare reads count.
    backend_pid: u32,
}

impl Pg {
    fn connect(url: &str) -> Pg {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("start a tokio runtime");
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, NoTls)
                .await
                .expect("connect to the private PostgreSQL");
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    eprintln!("PostgreSQL connection: {e}");
                }
            });
            client
        });
        let pid = runtime.block_on(client.query_one("SELECT pg_backend_pid()", &[]));
        let backend_pid: i32 = pid.expect("SELECT pg_backend_pid()").get(0);
        Pg {
            runtime,
            client,
            backend_pid: backend_pid as u32,
        }
    }

    fn execute(&self, sql: &str) {
        let done = self.runtime.block_on(self.client.batch_execute(sql));
        done.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn query(&self, sql: &str, param: &str) -> Vec<tokio_postgres::Row> {
        let rows = self.runtime.block_on(self.client.query(sql, &[&param]));
        rows.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn query_text(&self, sql: &str) -> String {
        let row = self.runtime.block_on(self.client.query_one(sql, &[]));
        row.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
    }

    /// Runs a `COPY … TO STDOUT` and hands every chunk to `each`, in order; returns the bytes.
    fn copy_out(&self, sql: &str, mut each: impl FnMut(&[u8])) -> u64 {
        self.runtime.block_on(async {
            let stream = self.client.copy_out(sql).await;
            let stream = stream.unwrap_or_else(|e| panic!("{sql}: {e}"));
            futures_util::pin_mut!(stream);
            let mut bytes = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap_or_else(|e| panic!("read {sql}: {e}"));
                bytes += chunk.len() as u64;
                each(&chunk);
            }
            bytes
        })
    }
}

/// One table as both reads see it.
struct Table {
    name: String,
    rows: u64,
    /// `SELECT * FROM "t" ORDER BY <key>` for SQLite.
    sqlite_sql: String,
    /// The diff's PostgreSQL query: `COPY (SELECT <all columns> FROM public."t" ORDER BY <key>,
    /// text keys COLLATE "C">) TO STDOUT (FORMAT binary)`, without its trailing `) TO …`.
    select: String,
    types: Vec<PgType>,
    /// Positions of the key columns in `types`.
    key: Vec<usize>,
}

impl Table {
    fn copy_sql(&self) -> String {
        format!("COPY ({}) TO STDOUT (FORMAT binary)", self.select)
    }
}

/// Every source table with its key, as it stands in the target (the snapshot keeps the names of
/// the sample app's tables, which are lower case already).
fn describe_tables(source: &Source, pg: &Pg) -> Vec<Table> {
    let conn = open_source(&source.path);
    let tables = source.counts.iter().map(|(name, rows)| {
        let qualified = format!("public.{}", quote_ident(name));
        let columns = pg.query(TARGET_COLUMNS, &qualified);
        assert!(!columns.is_empty(), "the snapshot did not create {name}");
        let names: Vec<String> = columns.iter().map(|r| r.get(0)).collect();
        let types: Vec<PgType> = columns
            .iter()
            .map(|r| r.get::<_, String>(1))
            .map(|t| parse_format_type(&t).unwrap_or_else(|| panic!("{name}: type {t}?")))
            .collect();
        let key_names: Vec<String> = pg
            .query(TARGET_KEY, &qualified)
            .iter()
            .map(|r| r.get(0))
            .collect();
        let key: Vec<usize> = key_names
            .iter()
            .map(|k| names.iter().position(|n| n == k).expect("key column"))
            .collect();
        assert!(!key.is_empty(), "{name} has no primary key in the target");
        let order: Vec<String> = key
            .iter()
            .map(|&i| match types[i] {
                PgType::Text | PgType::Varchar(_) => {
                    format!("{} COLLATE \"C\"", quote_ident(&names[i]))
                }
                _ => quote_ident(&names[i]),
            })
            .collect();
        let cols: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
        let select = format!(
            "SELECT {} FROM {qualified} ORDER BY {}",
            cols.join(", "),
            order.join(", ")
        );
        let sqlite_sql = format!(
            "SELECT * FROM {} ORDER BY {}",
            quote_ident(name),
            sqlite_key(&conn, name).join(", ")
        );
        Table {
            name: name.clone(),
            rows: *rows,
            sqlite_sql,
            select,
            types,
            key,
        }
    });
    tables.collect()
}

/// The primary key columns of a SQLite table, quoted, in key order.
fn sqlite_key(conn: &Connection, table: &str) -> Vec<String> {
    let sql = format!("PRAGMA table_info({})", quote_ident(table));
    let mut stmt = conn.prepare(&sql).expect("prepare PRAGMA table_info");
    let columns = stmt.query_map([], |r| Ok((r.get::<_, i64>(5)?, r.get::<_, String>(1)?)));
    let mut key: Vec<(i64, String)> = columns
        .expect("PRAGMA table_info")
        .map(|c| c.expect("read PRAGMA table_info"))
        .filter(|(pk, _)| *pk > 0)
        .collect();
    key.sort();
    assert!(!key.is_empty(), "{table} has no primary key in SQLite");
    key.into_iter()
        .map(|(_, name)| quote_ident(&name))
        .collect()
}

/// Opened as the diff opens the source: read-only, no mutex.
fn open_source(path: &Path) -> Connection {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags).expect("open the sample database")
}

/// Reads every row of `table` in one read transaction, touching each value; returns the rows.
fn read_sqlite(conn: &Connection, table: &Table) -> u64 {
    conn.execute_batch("BEGIN").expect("begin the read");
    let mut stmt = conn.prepare(&table.sqlite_sql).expect("prepare the read");
    let columns = stmt.column_count();
    let mut rows = stmt.query([]).expect("start the read");
    let (mut count, mut touched) = (0u64, 0u64);
    while let Some(row) = rows.next().expect("read a row") {
        for i in 0..columns {
            touched = touched.wrapping_add(match row.get_ref(i).expect("read a value") {
                ValueRef::Null => 1,
                ValueRef::Integer(v) => v as u64,
                ValueRef::Real(v) => v.to_bits(),
                ValueRef::Text(b) | ValueRef::Blob(b) => b.len() as u64,
            });
        }
        count += 1;
    }
    drop(rows);
    drop(stmt);
    conn.execute_batch("COMMIT").expect("end the read");
    black_box(touched);
    assert_eq!(count, table.rows, "{}: SQLite rows", table.name);
    count
}

/// Reads the table's binary COPY to the end, discarding the bytes; returns the bytes.
fn read_pg(pg: &Pg, table: &Table) -> u64 {
    pg.copy_out(&table.copy_sql(), |chunk| {
        black_box(chunk);
    })
}

/// One bare read: seconds per table (wall, SQLite side, PostgreSQL side) and in all.
struct Bare {
    seconds: f64,
    tables: Vec<BareTable>,
    copy_bytes: u64,
    cpu: Cpu,
}

struct BareTable {
    wall: f64,
    sqlite: f64,
    pg: f64,
}

/// CPU seconds spent by the client process and by the PostgreSQL server processes serving it.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    client: f64,
    server: f64,
}

impl Cpu {
    fn total(&self) -> f64 {
        self.client + self.server
    }
}

/// Runs one bare read and counts its CPU: this process's (every thread, joined ones included)
/// and that of the server process behind `pg`'s connection.
fn with_cpu(pg: &Pg, read: impl FnOnce() -> Bare) -> Bare {
    let (client, server) = (
        own_cpu_seconds(),
        process_cpu_seconds(pg.backend_pid, false),
    );
    let mut bare = read();
    bare.cpu = Cpu {
        client: own_cpu_seconds() - client,
        server: process_cpu_seconds(pg.backend_pid, false) - server,
    };
    bare
}

/// User + system CPU seconds of this process, all its threads included.
fn own_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid out-parameter for getrusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is valid for the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    rusage_cpu_seconds(&usage)
}

fn rusage_cpu_seconds(usage: &libc::rusage) -> f64 {
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// User + system CPU seconds of process `pid` from `/proc/PID/stat` (in clock ticks there);
/// with `children`, of its children that have exited and been reaped instead (`cutime`,
/// `cstime`): for the postmaster, the backends of connections that have ended.
fn process_cpu_seconds(pid: u32, children: bool) -> f64 {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    // Fields after the parenthesised command name, from field 3 (state): utime and stime are
    // fields 14 and 15, cutime and cstime 16 and 17.
    let after = stat.rsplit_once(')').expect("/proc/PID/stat has (comm)").1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let first = if children { 13 } else { 11 };
    let ticks: u64 = fields[first..first + 2]
        .iter()
        .map(|f| f.parse::<u64>().expect("CPU ticks are numbers"))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / per_second as f64
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed().as_secs_f64())
}

/// Tables one after another, both sides of each in parallel threads (as the diff runs them).
fn bare_parallel(source: &Path, pg: &Pg, tables: &[Table]) -> Bare {
    let started = Instant::now();
    let mut per_table = Vec::new();
    let mut copy_bytes = 0;
    for table in tables {
        let ((sqlite, (bytes, pg)), wall) = timed(|| {
            std::thread::scope(|s| {
                // A connection per table, as the diff opens one per table.
                let sqlite = s.spawn(|| timed(|| read_sqlite(&open_source(source), table)).1);
                let pg = s.spawn(|| timed(|| read_pg(pg, table)));
                let sqlite = sqlite.join().expect("the SQLite reader panicked");
                (sqlite, pg.join().expect("the PostgreSQL reader panicked"))
            })
        });
        copy_bytes += bytes;
        per_table.push(BareTable { wall, sqlite, pg });
    }
    Bare {
        seconds: started.elapsed().as_secs_f64(),
        tables: per_table,
        copy_bytes,
        cpu: Cpu::default(),
    }
}

fn bare_sqlite_alone(source: &Path, tables: &[Table]) -> Bare {
    let conn = open_source(source);
    let started = Instant::now();
    let per_table = tables.iter().map(|t| {
        let sqlite = timed(|| read_sqlite(&conn, t)).1;
        BareTable {
            wall: sqlite,
            sqlite,
            pg: 0.0,
        }
    });
    let tables = per_table.collect();
    Bare {
        seconds: started.elapsed().as_secs_f64(),
        tables,
        copy_bytes: 0,
        cpu: Cpu::default(),
    }
}

fn bare_pg_alone(pg: &Pg, tables: &[Table]) -> Bare {
    let started = Instant::now();
    let mut copy_bytes = 0;
    let per_table = tables.iter().map(|t| {
        let (bytes, seconds) = timed(|| read_pg(pg, t));
        copy_bytes += bytes;
        BareTable {
            wall: seconds,
            sqlite: 0.0,
            pg: seconds,
        }
    });
    let tables = per_table.collect();
    Bare {
        seconds: started.elapsed().as_secs_f64(),
        tables,
        copy_bytes,
        cpu: Cpu::default(),
    }
}

/// `sqlite2pg diff` as a child process.
struct DiffRun {
    seconds: f64,
    status: String,
    peak_rss_kib: u64,
    cpu: Cpu,
    identical: bool,
    /// Per table: (table, source rows, seconds), from the JSON report.
    tables: Vec<(String, u64, f64)>,
}

impl DiffRun {
    fn source_rows(&self) -> u64 {
        self.tables.iter().map(|(_, n, _)| n).sum()
    }
}

/// Runs `sqlite2pg diff --format json --output FILE`; panics unless it says identical.
fn run_diff(
    source: &Source,
    url: &str,
    state: &Path,
    work: &Path,
    cluster: &PrivateCluster,
    pg: &Pg,
) -> DiffRun {
    let (report, log) = (work.join("diff.json"), work.join("diff.log"));
    let mut cmd = Command::new(sqlite2pg_binary());
    cmd.arg("--source")
        .arg(&source.path)
        .args(["--target", url])
        .arg("--state-dir")
        .arg(state)
        .args(["diff", "--format", "json", "--output"])
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("create the diff log"));
    eprintln!("running sqlite2pg diff");
    let server_before = process_cpu_seconds(cluster.pid(), true);
    let started = Instant::now();
    // Reaped by wait4 in `reap`, which std's `wait` cannot replace (it drops the rusage).
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().expect("start sqlite2pg diff");
    let (status, usage) = reap(&mut child);
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss_kib = usage.ru_maxrss as u64;
    wait_for_backends_to_exit(pg);
    let cpu = Cpu {
        client: rusage_cpu_seconds(&usage),
        server: process_cpu_seconds(cluster.pid(), true) - server_before,
    };
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success() || status.code() == Some(3),
        "sqlite2pg diff failed ({status}); its log:\n{log_text}"
    );
    let text = fs::read_to_string(&report).expect("read the diff report");
    let json: serde_json::Value = serde_json::from_str(&text).expect("parse the diff report");
    let tables: Vec<(String, u64, f64)> = json["tables"]
        .as_array()
        .expect("the report has tables")
        .iter()
        .map(|t| {
            let name = t["table"].as_str().expect("table name").to_string();
            let rows = t["source_rows"].as_u64().expect("source_rows");
            (name, rows, t["seconds"].as_f64().expect("seconds"))
        })
        .collect();
    let identical = json["identical"].as_bool() == Some(true);
    assert!(
        identical && status.success(),
        "sqlite2pg diff found differences (exit {status}): {}",
        serde_json::to_string_pretty(&json["differences"]).unwrap_or_default()
    );
    let run = DiffRun {
        seconds,
        status: status_text(status),
        peak_rss_kib,
        cpu,
        identical,
        tables,
    };
    assert_eq!(
        run.source_rows(),
        source.rows(),
        "the diff compared a different number of rows than the source has"
    );
    run
}

/// `$SQLITE2PG_BENCH_BIN` (to measure a given build), else the release binary cargo built for
/// this bench.
fn sqlite2pg_binary() -> PathBuf {
    match std::env::var_os(BIN_ENV) {
        Some(path) => path.into(),
        None => env!("CARGO_BIN_EXE_sqlite2pg").into(),
    }
}

/// Waits until the only client backends left are this bench's two connections, then a little
/// more: the postmaster adds a backend's CPU time to its children's once it has reaped it.
fn wait_for_backends_to_exit(pg: &Pg) {
    let sql = "SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'client backend'";
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let row = pg.runtime.block_on(pg.client.query_one(sql, &[]));
        let backends: i32 = row.expect("count client backends").get(0);
        if backends <= 2 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
}

/// Reaps `child` with wait4, which also reports its CPU time and peak resident set size
/// (`ru_maxrss`, KiB on Linux).
fn reap(child: &mut Child) -> (ExitStatus, libc::rusage) {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid out-parameter for wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our unreaped child; both pointers are valid for the call.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            return (ExitStatus::from_raw(status), usage);
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

/// Row hashing on `HASH_ROWS` rows of one table, read from a binary COPY kept in memory.
struct Hashing {
    table: String,
    /// Rows in the whole table (the projection's multiplier).
    table_rows: u64,
    /// Rows measured.
    rows: u64,
    /// Bytes of the binary COPY the rows came from.
    copy_bytes: u64,
    /// Bytes the row hash covers: domain byte, counts, canonical key and columns.
    canonical_bytes: u64,
    /// The PostgreSQL reader's work: COPY tuples → canonical rows (`encode_copy_field`).
    encode: f64,
    /// The general path it replaced, for comparison: COPY tuples → values (`CopyDecoder`), then
    /// `encode_canonical` of key and columns.
    decode_then_encode: f64,
    row_hash: f64,
    /// The merge's work per matched pair: key hash and row hash, once.
    key_and_row_hash: f64,
}

/// Canonical rows back to back as the diff's readers build them: key count, key values,
/// column count, columns; with (start, end of key, end) per row.
struct EncodedRows {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize, usize)>,
}

fn encode_rows(table: &Table, chunks: &[Vec<u8>]) -> EncodedRows {
    let mut decoder = CopyDecoder::new(table.types.clone());
    let mut rows = EncodedRows {
        bytes: Vec::new(),
        spans: Vec::new(),
    };
    for chunk in chunks {
        decoder.feed(chunk);
        while let Some(tuple) = decoder.next_tuple().expect("read a tuple") {
            let start = rows.bytes.len();
            encode_count(&mut rows.bytes, table.key.len());
            for &k in &table.key {
                let field = tuple.field(k);
                encode_copy_field(&mut rows.bytes, &table.types[k], field).expect("encode");
            }
            let key_end = rows.bytes.len();
            encode_count(&mut rows.bytes, table.types.len());
            for (i, ty) in table.types.iter().enumerate() {
                encode_copy_field(&mut rows.bytes, ty, tuple.field(i)).expect("encode");
            }
            rows.spans.push((start, key_end, rows.bytes.len()));
        }
    }
    decoder
        .check_complete()
        .expect("the COPY ended with its trailer");
    rows
}

fn decode_then_encode(table: &Table, chunks: &[Vec<u8>]) -> u64 {
    let mut decoder = CopyDecoder::new(table.types.clone());
    let (mut buf, mut total) = (Vec::with_capacity(1024), 0u64);
    for chunk in chunks {
        decoder.feed(chunk);
        while let Some(row) = decoder.next_row().expect("decode a row") {
            buf.clear();
            encode_count(&mut buf, table.key.len());
            table
                .key
                .iter()
                .for_each(|&k| encode_canonical(&mut buf, &row[k]));
            encode_count(&mut buf, row.len());
            row.iter().for_each(|v| encode_canonical(&mut buf, v));
            total += black_box(&buf).len() as u64;
        }
    }
    total
}

fn measure_hashing(pg: &Pg, table: &Table) -> Hashing {
    let sql = format!(
        "COPY ({} LIMIT {HASH_ROWS}) TO STDOUT (FORMAT binary)",
        table.select
    );
    // One chunk per tuple, as PostgreSQL sends them (a CopyData message per row).
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let copy_bytes = pg.copy_out(&sql, |chunk| chunks.push(chunk.to_vec()));

    let (rows, encode) = best_of(|| encode_rows(table, &chunks));
    let decode_then_encode = best_of(|| decode_then_encode(table, &chunks)).1;
    drop(chunks);
    let each_row = || {
        rows.spans
            .iter()
            .map(|&(s, k, e)| (&rows.bytes[s..k], &rows.bytes[s..e]))
    };
    let row_hash_s = best_of(|| {
        for (_, row) in each_row() {
            black_box(row_hash_of(row));
        }
    })
    .1;
    let key_and_row_hash = best_of(|| {
        for (key, row) in each_row() {
            black_box(key_hash_of(key));
            black_box(row_hash_of(row));
        }
    })
    .1;
    Hashing {
        table: table.name.clone(),
        table_rows: table.rows,
        rows: rows.spans.len() as u64,
        copy_bytes,
        // The domain byte and the row.
        canonical_bytes: rows.spans.len() as u64 + rows.bytes.len() as u64,
        encode,
        decode_then_encode,
        row_hash: row_hash_s,
        key_and_row_hash,
    }
}

/// Runs `f` `HASH_REPEATS` times: its last output and its fastest time (the machine is shared,
/// and the fastest of a few short runs is the one least disturbed).
fn best_of<T>(mut f: impl FnMut() -> T) -> (T, f64) {
    let mut best: Option<(T, f64)> = None;
    for _ in 0..HASH_REPEATS {
        let (out, seconds) = timed(&mut f);
        let fastest = best.as_ref().map_or(seconds, |(_, b)| b.min(seconds));
        best = Some((out, fastest));
    }
    best.expect("HASH_REPEATS > 0")
}

/// The 1-minute load average (`/proc/loadavg`): how busy the shared machine was.
fn load_average() -> f64 {
    let text = fs::read_to_string("/proc/loadavg").expect("read /proc/loadavg");
    let first = text.split_whitespace().next();
    first
        .and_then(|v| v.parse().ok())
        .expect("/proc/loadavg starts with a number")
}

/// This process's peak resident set size (KiB, `VmHWM`): a spawned child's ru_maxrss starts
/// from it.
fn own_peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:"));
    let kib = hwm.and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    kib.expect("/proc/self/status has VmHWM in kB")
}

fn mb_of_kib(kib: u64) -> f64 {
    kib as f64 * 1024.0 / MB
}

/// Everything timed in the run.
struct Runs {
    before: Bare,
    after: Bare,
    sqlite_alone: Bare,
    pg_alone: Bare,
    ours: DiffRun,
    bench_peak_kib: u64,
    /// The machine's 1-minute load average before the first timed read and after the last.
    load: (f64, f64),
}

impl Runs {
    /// The baseline: the mean of the bare parallel reads before and after the diff.
    fn bare_seconds(&self) -> f64 {
        (self.before.seconds + self.after.seconds) / 2.0
    }

    fn bare_table_seconds(&self, i: usize) -> f64 {
        (self.before.tables[i].wall + self.after.tables[i].wall) / 2.0
    }
}

/// The BENCHMARKS.md section: the table, the ratios against their targets, where the time goes.
fn render(
    settings: &Settings,
    version: &str,
    source: &Source,
    tables: &[Table],
    runs: &Runs,
    hashing: &[Hashing],
) -> String {
    let mut out = format!(
        "## Diff, full compare\n\n{} UTC · scale {} · {} rows in {} tables · SQLite file {:.1} \
         MB · {:.1} MB of binary COPY data · PostgreSQL {version} (private cluster, fsync off) · \
         2 cores, shared and noisy: load average {:.2} before the timed runs, {:.2} after\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        settings.scale,
        source.rows(),
        tables.len(),
        source.bytes as f64 / MB,
        runs.pg_alone.copy_bytes as f64 / MB,
        runs.load.0,
        runs.load.1,
    );
    out.push_str(&results_table(source, runs));
    out.push_str(&ratios(runs));
    out.push_str(&tables_table(tables, runs));
    out.push_str(&hashing_table(hashing, runs));
    out.push_str(&method_note());
    out
}

fn results_table(source: &Source, runs: &Runs) -> String {
    let mut out = String::from(
        "| | seconds | rows/s | CPU s: client + server = total | exit | identical | peak RSS \
         |\n|---|---:|---:|---:|---:|---|---:|\n",
    );
    let rows = source.rows() as f64;
    let cpu = |c: Cpu| format!("{:.2} + {:.2} = {:.2}", c.client, c.server, c.total());
    let ours = &runs.ours;
    out.push_str(&format!(
        "| sqlite2pg diff --format json | {:.2} | {:.0} | {} | {} | {} | {:.0} MB |\n",
        ours.seconds,
        rows / ours.seconds,
        cpu(ours.cpu),
        ours.status,
        if ours.identical { "yes" } else { "**no**" },
        mb_of_kib(ours.peak_rss_kib),
    ));
    let bare = [
        (
            "bare read, both sides in parallel (before the diff)",
            &runs.before,
        ),
        (
            "bare read, both sides in parallel (after the diff)",
            &runs.after,
        ),
        ("bare read, SQLite alone", &runs.sqlite_alone),
        ("bare read, PostgreSQL COPY TO alone", &runs.pg_alone),
    ];
    for (name, b) in bare {
        out.push_str(&format!(
            "| {name} | {:.2} | {:.0} | {} | | | |\n",
            b.seconds,
            rows / b.seconds,
            cpu(b.cpu),
        ));
    }
    out.push('\n');
    out
}

fn ratios(runs: &Runs) -> String {
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let vs_bare = runs.ours.seconds / runs.bare_seconds();
    let vs_pg = runs.ours.seconds / runs.pg_alone.seconds;
    let vs_sqlite = runs.ours.seconds / runs.sqlite_alone.seconds;
    let bare_cpu = (runs.before.cpu.total() + runs.after.cpu.total()) / 2.0;
    let bare_client = (runs.before.cpu.client + runs.after.cpu.client) / 2.0;
    format!(
        "- diff / bare read (diff s / mean of the two parallel bare reads, {:.2} s): \
         **{vs_bare:.2}×** — target ≤ {TARGET_VS_BARE}×: {}\n\
         - for context: diff / bare PostgreSQL COPY TO alone **{vs_pg:.2}×**, diff / bare \
         SQLite read alone **{vs_sqlite:.2}×**\n\
         - CPU (client + server), which the machine's other load does not inflate: diff / bare \
         read **{:.2}×**; client side alone **{:.2}×** ({:.2} s against {bare_client:.2} s)\n\
         - peak RSS of sqlite2pg diff: **{:.0} MB** (wait4's ru_maxrss of the child, which \
         includes up to the {:.0} MB this bench had peaked at when it started it)\n\n",
        runs.bare_seconds(),
        verdict(vs_bare <= TARGET_VS_BARE),
        runs.ours.cpu.total() / bare_cpu,
        runs.ours.cpu.client / bare_client,
        runs.ours.cpu.client,
        mb_of_kib(runs.ours.peak_rss_kib),
        mb_of_kib(runs.bench_peak_kib),
    )
}

/// Per table: the diff's seconds (from its report) beside the bare reads'.
fn tables_table(tables: &[Table], runs: &Runs) -> String {
    let mut out = String::from(
        "| table | rows | diff s | bare parallel s | diff / bare | bare SQLite alone s | \
         bare PostgreSQL alone s |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (i, t) in tables.iter().enumerate() {
        let diff = runs.ours.tables.iter().find(|(name, _, _)| *name == t.name);
        let diff = diff.map_or(f64::NAN, |(_, _, s)| *s);
        let bare = runs.bare_table_seconds(i);
        out.push_str(&format!(
            "| {} | {} | {diff:.2} | {bare:.2} | {:.2}× | {:.2} | {:.2} |\n",
            t.name,
            t.rows,
            diff / bare,
            runs.sqlite_alone.tables[i].sqlite,
            runs.pg_alone.tables[i].pg,
        ));
    }
    let in_tables: f64 = runs.ours.tables.iter().map(|(_, _, s)| s).sum();
    out.push_str(&format!(
        "| all (the diff's process outside its tables: {:.2} s) | {} | {in_tables:.2} | {:.2} \
         | {:.2}× | {:.2} | {:.2} |\n\n",
        runs.ours.seconds - in_tables,
        runs.ours.source_rows(),
        runs.bare_seconds(),
        in_tables / runs.bare_seconds(),
        runs.sqlite_alone.seconds,
        runs.pg_alone.seconds,
    ));
    out
}

fn hashing_table(hashing: &[Hashing], runs: &Runs) -> String {
    let mut out = format!(
        "Row encoding and hashing on real row sizes: the first rows of the largest tables, read \
         from a binary COPY kept in memory; one thread, fastest of {HASH_REPEATS} runs of each \
         step. MB/s of the binary COPY for the encoding steps, of the canonical rows for the \
         hashing ones.\n\n\
         | table | rows | COPY / canonical bytes a row | step | seconds | rows/s | MB/s |\n\
         |---|---:|---:|---|---:|---:|---:|\n",
    );
    for h in hashing {
        let rows = h.rows as f64;
        let sizes = format!(
            "{:.0} / {:.0}",
            h.copy_bytes as f64 / rows,
            h.canonical_bytes as f64 / rows
        );
        let steps = [
            (
                "`encode_copy_field`: COPY fields → canonical rows (the PostgreSQL reader)",
                h.encode,
                h.copy_bytes,
            ),
            (
                "for comparison, the general path: `CopyDecoder` values, then `encode_canonical`",
                h.decode_then_encode,
                h.copy_bytes,
            ),
            ("`row_hash_of` (blake3)", h.row_hash, h.canonical_bytes),
            (
                "`key_hash_of` + `row_hash_of` (the merge's, once per matched pair)",
                h.key_and_row_hash,
                h.canonical_bytes,
            ),
        ];
        for (i, (step, seconds, bytes)) in steps.into_iter().enumerate() {
            let (table, n, sizes) = match i {
                0 => (h.table.as_str(), h.rows.to_string(), sizes.as_str()),
                _ => ("", String::new(), ""),
            };
            out.push_str(&format!(
                "| {table} | {n} | {sizes} | {step} | {seconds:.3} | {:.0} | {:.0} |\n",
                rows / seconds,
                bytes as f64 / MB / seconds,
            ));
        }
    }
    let per_row = |h: &Hashing, seconds: f64| seconds / h.rows as f64 * h.table_rows as f64;
    let hashes: f64 = hashing.iter().map(|h| per_row(h, h.key_and_row_hash)).sum();
    let encode: f64 = hashing.iter().map(|h| per_row(h, h.encode)).sum();
    let covered: u64 = hashing.iter().map(|h| h.table_rows).sum();
    out.push_str(&format!(
        "\nProjected onto the whole of {} (their {covered} rows): hashing (once per matched pair) \
         ≈ **{hashes:.2} CPU s**, encoding the PostgreSQL side ≈ **{encode:.2} CPU s**, of the \
         diff's {:.2} client CPU s in all (the bare read's client: {:.2} s).\n\n",
        hashing
            .iter()
            .map(|h| format!("`{}`", h.table))
            .collect::<Vec<_>>()
            .join(" and "),
        runs.ours.cpu.client,
        (runs.before.cpu.client + runs.after.cpu.client) / 2.0,
    ));
    out
}

fn method_note() -> String {
    String::from(
        "The diff is the release binary's `sqlite2pg --source app.db --target URL diff --format \
         json --output FILE` as a child process (wall time from spawn to exit, exit 0 and \
         `identical` checked); rows/s = source rows / seconds. The bare read is the same tables \
         read to the end without hashing or comparing: on PostgreSQL the diff's own query, \
         `COPY (SELECT <all columns> FROM t ORDER BY <key>) TO STDOUT (FORMAT binary)`, read by \
         a tokio-postgres client that discards the bytes; on SQLite `SELECT * FROM t ORDER BY \
         <key>` with rusqlite in one read transaction, touching every value; tables one after \
         another, both sides of each in parallel threads, as the diff runs them. It runs before \
         and after the diff and the ratio uses their mean; VACUUM (hint bits, visibility map, so \
         no autovacuum runs meanwhile), an untimed bare read (caches) and a CHECKPOINT come \
         first. CPU is user + system time: the client's from getrusage (bare reads, in this \
         process) or wait4 (the diff); the server's from /proc: the bare reads' backend, and \
         for the diff the postmaster's reaped children (the diff's backends, once exited). \
         Per-table diff seconds are the report's `tables[].seconds`. MB = 10^6 bytes.\n\n\
         Reproduce: `cargo bench --bench diff -- --scale 1` (needs the PostgreSQL server \
         binaries).\n",
    )
}

/// Replaces the section between the markers in BENCHMARKS.md (appending it when missing).
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
    String::from_utf8(out.stdout).expect("the generator's output is UTF-8")
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
