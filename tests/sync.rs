//! `sqlite2pg sync` end to end: the snapshot-to-sync handoff under a live writer (no gap, no
//! duplicate), every capture hole named in the sync issue, exactly-once apply across crashes at
//! each fault point and at random moments, and rollback leaving the source as the app knew it.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use sqlite2pg::config::{Config, GlobalFlags};
use sqlite2pg::diff::{render_text, run_diff, DiffOptions};
use sqlite2pg::pipeline::{run_sync, SyncOptions, SyncStatus};
use sqlite2pg::sample_app::{generate, GenerateOptions, LiveWriter, WriterOptions};

use crate::snapshot::{options, query, snapshot};
use crate::support::pg::TestDb;
use crate::support::{temp_dir, wait_until};

/// The config every sync-side test uses: this source, the test's database as the target.
pub fn config(source: &Path, db: &TestDb) -> Config {
    let flags = GlobalFlags {
        source: Some(source.to_path_buf()),
        target: Some(db.url_string()),
        ..GlobalFlags::default()
    };
    Config::resolve(&flags).unwrap()
}

/// `sync --catch-up` in this process.
pub fn try_catch_up(source: &Path, db: &TestDb) -> sqlite2pg::Result<SyncStatus> {
    let stop = AtomicBool::new(false);
    let opts = SyncOptions {
        catch_up: true,
        ..SyncOptions::default()
    };
    run_sync(&config(source, db), &opts, &stop, &|_| {})
}

pub fn catch_up(source: &Path, db: &TestDb) -> SyncStatus {
    try_catch_up(source, db).expect("sync --catch-up")
}

pub fn assert_identical(source: &Path, db: &TestDb) {
    let report = run_diff(&config(source, db), &DiffOptions::default()).expect("diff");
    assert!(report.identical, "{}", render_text(&report));
}

fn sample(dir: &Path, scale: f64) -> std::path::PathBuf {
    let path = dir.join("app.db");
    generate(&path, &GenerateOptions { scale, seed: 11 }).unwrap();
    path
}

/// The snapshot reads a verified backup (`--validate` needs one).
#[test]
fn handoff_from_a_backup_under_a_live_writer_loses_and_duplicates_nothing() {
    handoff_under_a_live_writer(&options(), "backup");
}

/// The snapshot reads the live source through one read view shared by its workers (the
/// default for a WAL source without `--validate`). Ranges of 700 rows give each worker many
/// jobs while the writer commits: a worker that read a different state would leave a
/// foreign-key violation (the writer adds history to new jobs and deletes old ones) or, for an
/// earlier state, a change that sync never replays.
#[test]
fn handoff_from_the_live_source_under_a_live_writer_loses_and_duplicates_nothing() {
    let opts = sqlite2pg::snapshot::SnapshotOptions {
        validate: false,
        ..options()
    };
    handoff_under_a_live_writer(&opts, "live");
}

fn handoff_under_a_live_writer(opts: &sqlite2pg::snapshot::SnapshotOptions, view: &str) {
    let dir = temp_dir();
    let src = sample(dir.path(), 0.003);
    let db = TestDb::new();
    let writer = LiveWriter::start(
        &src,
        WriterOptions {
            rate_per_sec: 300.0,
            seed: 5,
        },
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the writer is writing", || {
        writer.stats().transactions > 30
    });
    let report = snapshot(&src, &db, opts).expect("snapshot while the writer writes");
    assert!(
        report.post_load.fk_violations.is_empty(),
        "{:#?}",
        report.post_load.fk_violations
    );
    let state_dir = config(&src, &db).state_dir().unwrap();
    let record = sqlite2pg::snapshot::read_snapshot_record(&state_dir)
        .unwrap()
        .unwrap();
    assert_eq!(record.view, view);
    let before = writer.stats().transactions;
    wait_until(
        Duration::from_secs(10),
        "more writes after the snapshot",
        || writer.stats().transactions > before + 200,
    );
    let stats = writer.stop().unwrap();
    assert!(
        stats.deletes > 0 && stats.updates > 0 && stats.inserts > 0,
        "{stats:?}"
    );
    let status = catch_up(&src, &db);
    assert!(status.changes_applied > 0);
    assert_eq!(status.lag_changes, 0, "lag is 0 when the source is idle");
    assert_identical(&src, &db);
    // The consumed change rows left the source (the deleter's last pass runs as capture ends),
    // all but the newest, which keeps seqs from going back.
    assert_eq!(
        count_sqlite(&src, "SELECT count(*) FROM _sqlite2pg_changes"),
        1
    );
    assert_eq!(
        count_sqlite(&src, "SELECT max(seq) FROM _sqlite2pg_changes"),
        newest_change(&src)
    );
}

/// The keyed tables of the capture-hole tests: a rowid key with a UNIQUE column, a foreign key,
/// a WITHOUT ROWID text key, a composite key.
const KEYED_TABLES: &str = "
    CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT);
    CREATE TABLE items (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), label TEXT);
    CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
    CREATE TABLE pairs (a TEXT, b INTEGER, note TEXT, PRIMARY KEY (a, b));";

/// `dir/name`, a WAL database made by `sql`, snapshotted with `opts`; returns its path.
fn snapshotted_db(
    dir: &Path,
    db: &TestDb,
    name: &str,
    sql: &str,
    opts: &sqlite2pg::snapshot::SnapshotOptions,
) -> std::path::PathBuf {
    let src = dir.join(name);
    let conn = Connection::open(&src).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    snapshot(&src, db, opts).expect("snapshot");
    src
}

/// A database with one table per capture hole, snapshotted; returns its path.
fn holes_db(dir: &Path, db: &TestDb) -> std::path::PathBuf {
    let sql = format!(
        "{KEYED_TABLES}
         CREATE TABLE logs (line TEXT);
         INSERT INTO users VALUES (1, 'a@x', 'A'), (2, 'b@x', 'B'), (3, 'c@x', 'C');
         INSERT INTO items VALUES (1, 1, 'one'), (2, 2, 'two');
         INSERT INTO kv VALUES ('k1', x'01'), ('k,2''', x'02');
         INSERT INTO pairs VALUES ('x', 1, 'n1'), ('x,y', 2, 'n2');
         INSERT INTO logs VALUES ('first');"
    );
    let opts = sqlite2pg::snapshot::SnapshotOptions {
        allow_rowid_key: true,
        ..options()
    };
    snapshotted_db(dir, db, "holes.db", &sql, &opts)
}

#[test]
fn every_capture_hole_is_replicated() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = holes_db(dir.path(), &db);
    let app = Connection::open(&src).unwrap();
    app.execute_batch(
        "DELETE FROM items WHERE id = 2;
         INSERT OR REPLACE INTO users (id, email, name) VALUES (4, 'b@x', 'evicts 2');  -- UNIQUE eviction, no delete trigger
         DELETE FROM users WHERE id = 3;
         INSERT INTO users (email, name) VALUES ('reused@x', 'rowid reuse');            -- takes rowid 5? or 3
         INSERT INTO kv VALUES ('k1', x'ff') ON CONFLICT (k) DO UPDATE SET v = excluded.v; -- UPSERT
         UPDATE pairs SET a = 'moved' WHERE a = 'x';                                       -- key change
         INSERT INTO logs VALUES ('second');
         BEGIN; INSERT INTO users VALUES (10, 't@x', 'multi'); INSERT INTO items VALUES (10, 10, 'multi'); UPDATE kv SET v = x'00' WHERE k = 'k,2'''; COMMIT;",
    )
    .unwrap();
    catch_up(&src, &db);
    assert_identical(&src, &db);
    let evicted: i64 = query(&db, "SELECT count(*) FROM users WHERE id = 2")[0].get(0);
    assert_eq!(
        evicted, 0,
        "the row INSERT OR REPLACE evicted is gone from PostgreSQL too"
    );
    // Rowid reuse: delete the largest rowid, insert again: same rowid, new row.
    // A whole-table delete first (items reference the users about to go).
    app.execute_batch("DELETE FROM items;").unwrap();
    app.execute_batch("DELETE FROM users WHERE id = (SELECT max(id) FROM users); INSERT INTO users (email, name) VALUES ('again@x', 'same rowid');").unwrap();
    // Then a 100k-row transaction.
    app.execute_batch("BEGIN;").unwrap();
    {
        let mut ins = app.prepare("INSERT INTO logs (line) VALUES (?1)").unwrap();
        for i in 0..100_000 {
            ins.execute([format!("bulk line {i}")]).unwrap();
        }
    }
    app.execute_batch("COMMIT;").unwrap();
    let status = catch_up(&src, &db);
    assert!(status.changes_applied >= 100_000);
    assert_identical(&src, &db);
    let items: i64 = query(&db, "SELECT count(*) FROM items")[0].get(0);
    assert_eq!(items, 0);
}

fn diff_changed(src: &Path, db: &TestDb) -> sqlite2pg::diff::DiffReport {
    let opts = DiffOptions {
        changed: true,
        ..DiffOptions::default()
    };
    run_diff(&config(src, db), &opts).expect("diff --changed")
}

fn table<'r>(
    report: &'r sqlite2pg::diff::DiffReport,
    name: &str,
) -> &'r sqlite2pg::diff::report::TableDiff {
    report.tables.iter().find(|t| t.table == name).unwrap()
}

/// `(mode, rows checked by --changed)` of one table in a report.
fn checked(report: &sqlite2pg::diff::DiffReport, name: &str) -> (&'static str, Option<u64>) {
    let t = table(report, name);
    (t.mode, t.changed_since.as_ref().map(|c| c.checked_rows))
}

/// 100 users, 100 items, 40 kv rows and 40 pairs, snapshotted (with --validate) and captured.
fn hundred_rows_db(dir: &Path, db: &TestDb) -> std::path::PathBuf {
    hundred_rows_db_with(dir, db, &options())
}

fn hundred_rows_db_with(
    dir: &Path,
    db: &TestDb,
    opts: &sqlite2pg::snapshot::SnapshotOptions,
) -> std::path::PathBuf {
    let sql = format!(
        "{KEYED_TABLES}
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO users SELECT i, 'u' || i || '@x', 'user ' || i FROM n;
         INSERT INTO items SELECT id, id, 'item ' || id FROM users;
         INSERT INTO kv SELECT 'k' || id, randomblob(8) FROM users WHERE id <= 40;
         INSERT INTO pairs SELECT 'x' || (id % 2), id, 'n' || id FROM users WHERE id <= 40;"
    );
    snapshotted_db(dir, db, "hundred.db", &sql, opts)
}

/// A diff baseline belongs to one snapshot: a snapshot that read the live source has no backup
/// blake3, and its run id must still tell it from the next one, or `diff --changed` after a new
/// snapshot would trust the comparisons made against the old one.
#[test]
fn a_new_live_snapshot_voids_the_diff_baselines_of_the_previous_one() {
    let dir = temp_dir();
    let db = TestDb::new();
    let live = sqlite2pg::snapshot::SnapshotOptions {
        validate: false,
        ..options()
    };
    let src = hundred_rows_db_with(dir.path(), &db, &live);
    let full = run_diff(&config(&src, &db), &DiffOptions::default()).expect("diff");
    assert!(full.identical, "{}", render_text(&full));
    assert_eq!(
        checked(&diff_changed(&src, &db), "users"),
        ("changed", Some(0))
    );
    snapshot(&src, &db, &live).expect("a second snapshot");
    let after = diff_changed(&src, &db);
    assert!(after.identical, "{}", render_text(&after));
    for t in ["users", "items", "kv", "pairs"] {
        assert_ne!(
            checked(&after, t).0,
            "changed",
            "{t}: the old baseline was used"
        );
    }
}

#[test]
fn diff_changed_compares_only_the_changed_rows_and_finds_what_sync_did_not_write() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = hundred_rows_db(dir.path(), &db);
    // The snapshot's --validate found every table identical at its handoff seq: that is the
    // baseline, so with nothing changed since there is nothing to check.
    let first = diff_changed(&src, &db);
    assert!(first.identical, "{}", render_text(&first));
    for t in ["users", "items", "kv", "pairs"] {
        assert_eq!(checked(&first, t), ("changed", Some(0)), "{t}");
    }
    let app = Connection::open(&src).unwrap();
    app.execute_batch(
        "DELETE FROM items WHERE id = 2;
         UPDATE users SET name = 'A2' WHERE id = 1;
         INSERT OR REPLACE INTO users (id, email, name) VALUES (1000, 'u2@x', 'evicts 2');
         UPDATE pairs SET a = 'moved' WHERE a = 'x1' AND b = 1;",
    )
    .unwrap();
    catch_up(&src, &db);
    let second = diff_changed(&src, &db);
    assert!(second.identical, "{}", render_text(&second));
    // Keys 1 and 1000 changed; 2 was evicted without a trigger (the counts cover it).
    assert_eq!(checked(&second, "users"), ("changed", Some(2)));
    let users = table(&second, "users");
    assert_eq!((users.source_rows, users.target_rows), (100, 100));
    assert_eq!(checked(&second, "items"), ("changed", Some(1)));
    // A key change logs the old key and the new one.
    assert_eq!(checked(&second, "pairs"), ("changed", Some(2)));
    assert_eq!(checked(&second, "kv"), ("changed", Some(0)));
    let text = render_text(&second);
    assert!(text.contains("changed rows only: 2 checked"), "{text}");

    // The identical comparison is the new baseline: nothing changed since, nothing to check.
    let third = diff_changed(&src, &db);
    assert_eq!(checked(&third, "users"), ("changed", Some(0)));

    // What sync did not write is found: a changed row altered in PostgreSQL, a change sync has
    // not captured yet (the writer went on after sync stopped), and a row someone else deleted
    // in PostgreSQL that no change touched (by the row counts).
    app.execute_batch(
        "UPDATE users SET name = 'late' WHERE id = 1000; INSERT INTO kv VALUES ('k0', x'03');",
    )
    .unwrap();
    query(&db, "UPDATE items SET label = 'forged' WHERE id = 1");
    query(&db, "DELETE FROM pairs WHERE a = 'x0' AND b = 2");
    app.execute_batch("UPDATE items SET label = 'item 1' WHERE id = 1;")
        .unwrap();
    let fourth = diff_changed(&src, &db);
    assert!(!fourth.identical);
    use sqlite2pg::diff::report::DiffKind::{Missing, Modified};
    let kinds: Vec<_> = fourth
        .differences
        .iter()
        .map(|d| (d.table.as_str(), d.kind, d.key.join(",")))
        .collect();
    assert!(
        kinds.contains(&("users", Modified, "1000".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("kv", Missing, "\"k0\"".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("items", Modified, "1".into())),
        "{kinds:?}"
    );
    let pairs = table(&fourth, "pairs");
    assert_eq!(pairs.verdict, "different");
    assert!(
        pairs.problems[0].contains("SQLite has 40 rows and PostgreSQL 39"),
        "{:?}",
        pairs.problems
    );

    // A table that differed lost its baseline: it is compared whole, and so is one where more
    // than 5% of the rows changed; the others still by their changed rows.
    catch_up(&src, &db);
    app.execute_batch("UPDATE kv SET v = x'00' WHERE k IN ('k1', 'k2', 'k3');")
        .unwrap();
    catch_up(&src, &db);
    let fifth = diff_changed(&src, &db);
    assert_eq!(checked(&fifth, "pairs"), ("full", None));
    assert_eq!(table(&fifth, "pairs").missing, 1);
    assert_eq!(checked(&fifth, "users"), ("full", None));
    assert_eq!(
        checked(&fifth, "kv"),
        ("full", None),
        "4 of 41 rows changed"
    );
    assert!(table(&fifth, "kv").is_identical());
    assert_eq!(
        checked(&fifth, "items"),
        ("full", None),
        "items differed too"
    );
    let sixth = diff_changed(&src, &db);
    assert!(!sixth.identical, "pairs still lacks its row");
    assert_eq!(checked(&sixth, "users"), ("changed", Some(0)));
}

#[test]
fn a_column_dropped_while_sync_was_stopped_stops_it_naming_table_and_column() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = holes_db(dir.path(), &db);
    let app = Connection::open(&src).unwrap();
    app.execute_batch("INSERT INTO logs VALUES ('before'); ALTER TABLE users DROP COLUMN name;")
        .unwrap();
    let err = try_catch_up(&src, &db).unwrap_err().to_string();
    assert!(
        err.contains("table \"users\", column \"name\": the column was dropped"),
        "{err}"
    );
}

#[test]
fn a_table_rebuilt_with_the_same_columns_stops_sync_naming_it() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = holes_db(dir.path(), &db);
    app_connection(&src)
        .execute_batch(
            "BEGIN; CREATE TABLE kv_new (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
             INSERT INTO kv_new SELECT * FROM kv; DROP TABLE kv; ALTER TABLE kv_new RENAME TO kv;
             COMMIT;",
        )
        .unwrap();
    let err = try_catch_up(&src, &db).unwrap_err().to_string();
    assert!(
        err.contains("table \"kv\": its capture triggers are gone"),
        "{err}"
    );
}

#[test]
fn sync_refuses_a_snapshot_without_capture() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = dir.path().join("plain.db");
    Connection::open(&src)
        .unwrap()
        .execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');",
        )
        .unwrap();
    let opts = sqlite2pg::snapshot::SnapshotOptions {
        capture: false,
        ..options()
    };
    snapshot(&src, &db, &opts).unwrap();
    let err = try_catch_up(&src, &db).unwrap_err();
    assert!(err.to_string().contains("without change capture"), "{err}");
}

#[test]
fn rollback_leaves_the_source_as_the_application_knew_it() {
    let dir = temp_dir();
    let src = dir.path().join("app.db");
    Connection::open(&src).unwrap().execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t (v); INSERT INTO t VALUES (1, 'a');").unwrap();
    let schema_sql = |p: &Path| -> Vec<String> {
        let c = Connection::open(p).unwrap();
        let mut s = c
            .prepare("SELECT coalesce(sql, name) FROM sqlite_schema ORDER BY name")
            .unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let before = schema_sql(&src);
    let db = TestDb::new();
    snapshot(&src, &db, &options()).unwrap();
    assert_ne!(schema_sql(&src), before, "capture is installed");
    let out = Command::new(env!("CARGO_BIN_EXE_sqlite2pg"))
        .args(["--source", src.to_str().unwrap(), "rollback"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after: Vec<String> = schema_sql(&src)
        .into_iter()
        .filter(|s| !s.contains("sqlite_sequence"))
        .collect();
    assert_eq!(after, before);
}

fn cli_sync(src: &Path, db: &TestDb, fault: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sqlite2pg"));
    cmd.args([
        "--source",
        src.to_str().unwrap(),
        "sync",
        "--catch-up",
        "--batch-size",
        "200",
    ]);
    cmd.env("SQLITE2PG_TARGET", db.url_string())
        .env_remove("DATABASE_URL");
    if let Some(f) = fault {
        cmd.env(sqlite2pg::fault::FAULT_ENV, f);
    }
    cmd.output().expect("run sqlite2pg sync")
}

fn applied(db: &TestDb) -> i64 {
    query(
        db,
        "SELECT coalesce((SELECT applied_seq FROM sqlite2pg.sync_state), 0)",
    )[0]
    .get(0)
}

/// Crashes per fault point; `SQLITE2PG_CRASH_ITERATIONS` raises it for the long soak.
fn iterations() -> usize {
    std::env::var("SQLITE2PG_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

#[test]
fn crashes_at_every_fault_point_under_a_live_writer_lose_and_duplicate_nothing() {
    let dir = temp_dir();
    let src = sample(dir.path(), 0.002);
    let db = TestDb::new();
    snapshot(&src, &db, &options()).unwrap();
    let writer = LiveWriter::start(
        &src,
        WriterOptions {
            rate_per_sec: 400.0,
            seed: 9,
        },
    )
    .unwrap();
    let mut last = applied(&db);
    let points = [
        // The first hit of each point: every run has new writes to capture and apply, so each
        // is reached before --catch-up can finish (a later hit might not be).
        "sync.after_log_flush@1",
        "sync.mid_apply@1",
        "sync.after_apply_commit@1",
        "changelog.before_boundary@1",
        "capture.before_delete_commit@1",
    ];
    for round in 0..iterations() {
        for point in points {
            let before = writer.stats().transactions;
            wait_until(Duration::from_secs(10), "new writes", || {
                writer.stats().transactions > before + 20
            });
            let out = cli_sync(&src, &db, Some(point));
            assert_ne!(
                out.status.code(),
                Some(0),
                "round {round}: {point} must crash the run: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let now = applied(&db);
            assert!(
                now >= last,
                "round {round}: {point}: the applied position went backwards ({last} → {now})"
            );
            last = now;
        }
        // A SIGKILL at a random moment.
        let mut child = Command::new(env!("CARGO_BIN_EXE_sqlite2pg"))
            .args(["--source", src.to_str().unwrap(), "sync"])
            .env("SQLITE2PG_TARGET", db.url_string())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + 97 * round as u64 % 400));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    writer.stop().unwrap();
    let out = cli_sync(&src, &db, None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(applied(&db) >= last);
    assert_identical(&src, &db);
}

#[test]
fn a_postgres_restart_mid_run_is_retried_and_loses_nothing() {
    let mut cluster = sqlite2pg::private_pg::PrivateCluster::start(&Default::default()).unwrap();
    let url = cluster.url("postgres");
    let dir = temp_dir();
    let src = sample(dir.path(), 0.002);
    let flags = GlobalFlags {
        source: Some(src.clone()),
        target: Some(url.clone()),
        ..GlobalFlags::default()
    };
    let config = Config::resolve(&flags).unwrap();
    sqlite2pg::snapshot::run_snapshot(&config, &options(), &|_, _| {}).unwrap();
    let target = config.target.clone().unwrap();
    let applied = || -> i64 {
        crate::snapshot::block_on(async {
            match target.connect().await {
                Ok(c) => c
                    .query_one("SELECT applied_seq FROM sqlite2pg.sync_state", &[])
                    .await
                    .map_or(-1, |r| r.get(0)),
                Err(_) => -1,
            }
        })
    };
    let writer = LiveWriter::start(
        &src,
        WriterOptions {
            rate_per_sec: 300.0,
            seed: 21,
        },
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let status = std::thread::scope(|s| {
        let sync = s.spawn(|| run_sync(&config, &SyncOptions::default(), &stop, &|_| {}));
        let record = sqlite2pg::snapshot::read_snapshot_record(&config.state_dir().unwrap())
            .unwrap()
            .unwrap();
        let start = record.change_seq.unwrap();
        wait_until(Duration::from_secs(20), "sync applies batches", || {
            applied() > start
        });
        cluster.restart().expect("restart PostgreSQL");
        let before = writer.stats().transactions;
        wait_until(Duration::from_secs(20), "writes after the restart", || {
            writer.stats().transactions > before + 100
        });
        writer.stop().unwrap();
        let last =
            sqlite2pg::source::capture::max_seq(&Connection::open(&src).unwrap()).unwrap() as i64;
        wait_until(
            Duration::from_secs(30),
            "sync catches up after the restart",
            || applied() >= last || sync.is_finished(),
        );
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        sync.join().unwrap()
    })
    .expect("sync survives a PostgreSQL restart");
    assert!(
        status.retries >= 1,
        "the restart was noticed and retried: {status:?}"
    );
    let report = run_diff(&config, &DiffOptions::default()).unwrap();
    assert!(report.identical, "{}", render_text(&report));
}

/// `sync` (not `--catch-up`) on a thread of its own, until `stop`.
struct BackgroundSync {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<sqlite2pg::Result<SyncStatus>>,
}

impl BackgroundSync {
    fn start(source: &Path, db: &TestDb) -> BackgroundSync {
        let config = config(source, db);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread =
            std::thread::spawn(move || run_sync(&config, &SyncOptions::default(), &flag, &|_| {}));
        BackgroundSync { stop, thread }
    }

    fn stop(self) -> sqlite2pg::Result<SyncStatus> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the sync thread panicked")
    }
}

/// The application's own connection: it waits on sqlite2pg's locks like a real application.
fn app_connection(src: &Path) -> Connection {
    let conn = Connection::open(src).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

fn newest_change(src: &Path) -> i64 {
    sqlite2pg::source::capture::max_seq(&Connection::open(src).unwrap()).unwrap() as i64
}

fn count_sqlite(src: &Path, sql: &str) -> i64 {
    Connection::open(src)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

fn count_pg(db: &TestDb, sql: &str) -> i64 {
    query(db, sql)[0].get(0)
}

#[test]
fn columns_added_while_a_writer_writes_arrive_with_their_values_and_defaults() {
    let dir = temp_dir();
    let src = sample(dir.path(), 0.002);
    let db = TestDb::new();
    snapshot(&src, &db, &options()).unwrap();
    let sync = BackgroundSync::start(&src, &db);
    let writer = LiveWriter::start(
        &src,
        WriterOptions {
            rate_per_sec: 300.0,
            seed: 31,
        },
    )
    .unwrap();
    let start = applied(&db);
    wait_until(Duration::from_secs(20), "sync applies writes", || {
        applied(&db) > start
    });
    let app = app_connection(&src);
    app.execute_batch(
        "ALTER TABLE jobs ADD COLUMN retries_left INTEGER NOT NULL DEFAULT 3;
         ALTER TABLE users ADD COLUMN nickname TEXT DEFAULT 'n/a';
         ALTER TABLE users ADD COLUMN verified BOOLEAN NOT NULL DEFAULT 0;
         ALTER TABLE users ADD COLUMN score REAL;",
    )
    .unwrap();
    app.execute_batch(
        "UPDATE users SET nickname = 'nick ' || id, verified = 1, score = id / 4.0 WHERE id % 3 = 0;
         UPDATE jobs SET retries_left = id % 7 WHERE id % 5 = 0;",
    )
    .unwrap();
    let before = writer.stats().transactions;
    wait_until(Duration::from_secs(20), "writes after the ALTERs", || {
        writer.stats().transactions > before + 100
    });
    writer.stop().unwrap();
    let last = newest_change(&src);
    wait_until(Duration::from_secs(60), "sync applies everything", || {
        applied(&db) >= last
    });
    sync.stop().expect("sync follows added columns");
    assert_identical(&src, &db);
    let types: Vec<(String, String)> = query(
        &db,
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND column_name IN ('retries_left', 'nickname', 'verified', 'score') \
         ORDER BY 1",
    )
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let expected = [
        ("nickname", "text"),
        ("retries_left", "bigint"),
        ("score", "double precision"),
        ("verified", "boolean"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(c, t)| (c.to_string(), t.to_string()))
        .collect();
    assert_eq!(types, expected, "the snapshot's ladder picked the types");
    let untouched = "SELECT count(*) FROM users WHERE id % 3 <> 0 AND nickname = 'n/a' AND NOT verified AND score IS NULL";
    assert!(count_pg(&db, untouched) > 0);
    assert_eq!(
        count_pg(&db, untouched),
        count_sqlite(&src, &untouched.replace("NOT verified", "verified = 0")),
        "rows that predate the columns hold their DEFAULTs"
    );
    assert!(count_pg(&db, "SELECT count(*) FROM jobs WHERE retries_left = 3") > 0);
}

#[test]
fn a_table_created_and_filled_during_sync_arrives_exactly_once() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = holes_db(dir.path(), &db);
    let sync = BackgroundSync::start(&src, &db);
    let app = app_connection(&src);
    app.execute_batch(
        "BEGIN;
         CREATE TABLE notes (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id),
                             body TEXT NOT NULL, n INTEGER DEFAULT 0, at DATETIME);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 500)
         INSERT INTO notes (id, user_id, body, at) SELECT i, 1, 'before ' || i, '2024-05-01 10:00:00' FROM s;
         COMMIT;",
    )
    .unwrap();
    // Keep writing while sync creates the table and installs its triggers, then some more.
    let pg_has_notes = || {
        count_pg(
            &db,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'notes'",
        ) == 1
    };
    let (mut i, mut after_create) = (0, 0);
    while after_create < 200 {
        i += 1;
        app.execute(
            "INSERT INTO notes (body, n) VALUES (?1, ?2)",
            rusqlite::params![format!("after {i}"), i],
        )
        .unwrap();
        if i % 3 == 0 {
            app.execute(
                "UPDATE notes SET n = n + 1, body = body || '!' WHERE id = ?1",
                [i * 7 % 500 + 1],
            )
            .unwrap();
        }
        if i % 5 == 0 {
            app.execute("DELETE FROM notes WHERE id = ?1", [i * 11 % 500 + 1])
                .unwrap();
        }
        if after_create > 0 || (i % 20 == 0 && pg_has_notes()) {
            after_create += 1;
        }
        assert!(i < 100_000, "sync never created the table in PostgreSQL");
    }
    let rows = count_sqlite(&src, "SELECT count(*) FROM notes");
    let last = newest_change(&src);
    wait_until(
        Duration::from_secs(60),
        "sync applies every row of notes",
        || applied(&db) >= last && count_pg(&db, "SELECT count(*) FROM notes") == rows,
    );
    sync.stop().expect("sync follows a new table");
    assert_identical(&src, &db);
    assert_eq!(
        count_pg(&db, "SELECT count(*) FROM sqlite2pg.quarantine"),
        0
    );
    // A table created while sync is stopped is picked up by the next run, --catch-up included.
    app.execute_batch(
        "CREATE TABLE tags (name TEXT PRIMARY KEY, uses INTEGER NOT NULL) WITHOUT ROWID;
         INSERT INTO tags VALUES ('a', 1), ('b', 2), ('c''s', 3);",
    )
    .unwrap();
    catch_up(&src, &db);
    assert_identical(&src, &db);
    assert_eq!(count_pg(&db, "SELECT count(*) FROM tags"), 3);
    // rollback removes the triggers sync installed on the new tables too.
    let out = Command::new(env!("CARGO_BIN_EXE_sqlite2pg"))
        .args(["--source", src.to_str().unwrap(), "rollback"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = count_sqlite(
        &src,
        "SELECT count(*) FROM sqlite_schema WHERE name GLOB '_sqlite2pg_*'",
    );
    assert_eq!(left, 0, "nothing sqlite2pg installed is left");
    assert_eq!(count_sqlite(&src, "SELECT count(*) FROM notes"), rows);
}

#[test]
fn a_column_renamed_during_sync_stops_it_after_what_was_captured_before() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = holes_db(dir.path(), &db);
    let sync = BackgroundSync::start(&src, &db);
    let app = app_connection(&src);
    app.execute_batch("INSERT INTO users VALUES (50, 'z@x', 'Z');")
        .unwrap();
    wait_until(Duration::from_secs(20), "user 50 arrives", || {
        count_pg(&db, "SELECT count(*) FROM users WHERE id = 50") == 1
    });
    app.execute_batch(
        "ALTER TABLE users RENAME COLUMN name TO full_name; INSERT INTO logs VALUES ('after');",
    )
    .unwrap();
    wait_until(Duration::from_secs(20), "sync stops", || {
        sync.thread.is_finished()
    });
    let err = sync.stop().unwrap_err().to_string();
    let precise = "table \"users\", column \"name\": the column was renamed to \"full_name\"";
    assert!(err.contains(precise), "{err}");
    let position = applied(&db);
    assert!(position <= newest_change(&src));
    assert_eq!(
        count_pg(&db, "SELECT count(*) FROM logs WHERE line = 'after'"),
        0
    );
    // A new run finds the same change before it captures anything, and says the same.
    let err = try_catch_up(&src, &db).unwrap_err().to_string();
    assert!(err.contains(precise), "{err}");
    assert_eq!(
        applied(&db),
        position,
        "the position stays where it stopped"
    );
}

#[test]
fn crashes_around_a_schema_step_lose_and_duplicate_nothing() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = holes_db(dir.path(), &db);
    let app = app_connection(&src);
    for (round, point) in ["sync.mid_schema_step", "sync.after_schema_step"]
        .iter()
        .enumerate()
    {
        app.execute_batch(&format!(
            "ALTER TABLE items ADD COLUMN qty{round} INTEGER DEFAULT {round};
             UPDATE items SET qty{round} = id * 10 WHERE id = 1;
             CREATE TABLE t{round} (id INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO t{round} VALUES (1, 'one'), (2, 'two');
             INSERT INTO users VALUES ({}, 'r{round}@x', 'round');",
            60 + round
        ))
        .unwrap();
        let out = cli_sync(&src, &db, Some(point));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() != Some(0) && stderr.contains(&format!("fault point {point} hit")),
            "{point} must crash the run: {stderr}"
        );
        app.execute_batch(&format!(
            "INSERT INTO t{round} VALUES (3, 'three'); UPDATE t{round} SET v = 'uno' WHERE id = 1;
             INSERT INTO items (id, user_id, label) VALUES ({}, 1, 'later');",
            20 + round
        ))
        .unwrap();
    }
    let out = cli_sync(&src, &db, None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_identical(&src, &db);
    assert_eq!(count_pg(&db, "SELECT count(*) FROM t0"), 3);
    let defaults = "SELECT count(*) FROM items WHERE qty0 = 0 AND qty1 = 1";
    assert!(count_pg(&db, defaults) > 0);
    assert_eq!(count_pg(&db, defaults), count_sqlite(&src, defaults));
}
