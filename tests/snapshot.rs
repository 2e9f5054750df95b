//! `sqlite2pg snapshot` against a real PostgreSQL: every real database copied with zero silent
//! losses, one test per type rule, constraint kind and bad-value kind, resume after a crash at
//! each fault point, and refusal of tables sqlite2pg did not create.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rusqlite::Connection;
use sqlite2pg::config::{Config, GlobalFlags};
use sqlite2pg::snapshot::{run_snapshot, SnapshotOptions, SnapshotReport};

use crate::check::real_db;
use crate::support::pg::TestDb;
use crate::support::temp_dir;

pub fn options() -> SnapshotOptions {
    SnapshotOptions {
        tables: None,
        jobs: 2,
        batch_size: 1000,
        keep_case: false,
        allow_rowid_key: false,
        drop_existing: false,
        fresh: false,
        validate: true,
        capture: true,
        range_rows: 700,
        check_backup: false,
        from_backup: false,
    }
}

pub fn snapshot(
    source: &Path,
    db: &TestDb,
    opts: &SnapshotOptions,
) -> sqlite2pg::Result<SnapshotReport> {
    let flags = GlobalFlags {
        source: Some(source.to_path_buf()),
        target: Some(db.url_string()),
        ..GlobalFlags::default()
    };
    let config = Config::resolve(&flags).expect("valid config");
    run_snapshot(&config, opts, &|_, _| {})
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs SQL statements (several allowed) on the test database, panicking with the SQL on error.
pub fn execute(db: &TestDb, sql: &str) {
    block_on(async {
        db.client()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    })
}

/// Runs one query and returns its rows.
pub fn query(db: &TestDb, sql: &str) -> Vec<tokio_postgres::Row> {
    block_on(async {
        db.client()
            .await
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    })
}

fn scalar<T: for<'a> tokio_postgres::types::FromSql<'a>>(db: &TestDb, sql: &str) -> T {
    query(db, sql)[0].get(0)
}

fn sqlite_scalar<T: rusqlite::types::FromSql>(path: &Path, sql: &str) -> T {
    Connection::open(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

fn assert_complete(r: &SnapshotReport) {
    assert_eq!(r.quarantined(), 0, "nothing quarantined: {:#?}", r.tables);
    assert!(r.count_mismatches().is_empty(), "{:#?}", r.tables);
    for t in &r.tables {
        assert_eq!(t.rows, t.source_rows, "{}", t.table);
    }
}

#[test]
fn chinook_copies_every_row_and_value() {
    let (_dir, src) = real_db("chinook__Chinook_Sqlite_AutoIncrementPKs.sqlite");
    let db = TestDb::new();
    let r = snapshot(&src, &db, &options()).unwrap();
    assert_complete(&r);
    assert_eq!(r.exit_code(), 0, "{:#?}", r.post_load);
    assert!(r.post_load.fk_violations.is_empty());
    let total: String = scalar(&db, "SELECT sum(total)::text FROM invoice");
    let sqlite_total: String =
        sqlite_scalar(&src, "SELECT printf('%.2f', sum(Total)) FROM Invoice");
    assert_eq!(total, sqlite_total);
    let name: String = scalar(&db, "SELECT name FROM track WHERE trackid = 1");
    assert_eq!(
        name,
        sqlite_scalar::<String>(&src, "SELECT Name FROM Track WHERE TrackId = 1")
    );
    let birth: String = scalar(&db, "SELECT to_char(birthdate AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM employee WHERE employeeid = 1");
    assert_eq!(
        birth,
        sqlite_scalar::<String>(&src, "SELECT BirthDate FROM Employee WHERE EmployeeId = 1")
    );
    let fks: i64 = scalar(
        &db,
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated",
    );
    assert_eq!(fks, 11);
    // AUTOINCREMENT: the next id continues after the largest ever handed out.
    let seq: i64 = sqlite_scalar(
        &src,
        "SELECT seq FROM sqlite_sequence WHERE name = 'Artist'",
    );
    let next: i64 = scalar(
        &db,
        "INSERT INTO artist (name) VALUES ('new') RETURNING artistid",
    );
    assert_eq!(next, seq + 1);
}

#[test]
fn northwind_views_prices_and_names_with_spaces() {
    let (_dir, src) = real_db("northwind__northwind.db");
    let db = TestDb::new();
    let r = snapshot(&src, &db, &options()).unwrap();
    assert_complete(&r);
    let sum: String = scalar(
        &db,
        "SELECT sum(unitprice * quantity)::text FROM \"order details\"",
    );
    let expected: f64 = sqlite_scalar(
        &src,
        "SELECT sum(UnitPrice * Quantity) FROM \"Order Details\"",
    );
    assert!(
        (sum.parse::<f64>().unwrap() - expected).abs() < 1e-6,
        "{sum} vs {expected}"
    );
    let mixed: i64 = scalar(
        &db,
        "SELECT count(*) FROM products WHERE unitprice <> round(unitprice)",
    );
    assert!(mixed > 0, "real prices keep their fractions");
    assert!(
        r.post_load.views_created.len() >= 10,
        "views: {:?}\nnotes: {:#?}",
        r.post_load.views_created,
        r.post_load.notes
    );
}

#[test]
fn pgloader_storage_blob_text_arrives_byte_for_byte() {
    let (_dir, src) = real_db("pgloader__storage.sqlite");
    let db = TestDb::new();
    let r = snapshot(&src, &db, &options()).unwrap();
    assert_complete(&r);
    let conn = Connection::open(&src).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, CAST(file_data AS BLOB) FROM files ORDER BY id")
        .unwrap();
    let source: Vec<(i64, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let target: Vec<(i64, Vec<u8>)> = query(&db, "SELECT id, file_data FROM files ORDER BY id")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(source, target);
    let cascade: i64 = scalar(
        &db,
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND confdeltype = 'c'",
    );
    assert!(cascade > 0, "ON DELETE CASCADE is kept");
}

#[test]
fn geopackage_needs_the_rowid_fallback_for_tables_without_a_key() {
    let (_dir, src) = real_db("geopackage__gdal_sample.gpkg");
    let db = TestDb::new();
    let err = snapshot(&src, &db, &options()).unwrap_err().to_string();
    assert!(
        err.contains("gpkg_extensions") && err.contains("primary key"),
        "{err}"
    );
    let r = snapshot(
        &src,
        &db,
        &SnapshotOptions {
            allow_rowid_key: true,
            ..options()
        },
    )
    .unwrap();
    assert_complete(&r);
    let geom: Vec<u8> = scalar(
        &db,
        "SELECT geom FROM point2d WHERE geom IS NOT NULL LIMIT 1",
    );
    let expected: Vec<u8> = sqlite_scalar(
        &src,
        "SELECT geom FROM point2d WHERE geom IS NOT NULL LIMIT 1",
    );
    assert_eq!(geom, expected);
    let rowids: i64 = scalar(
        &db,
        "SELECT count(DISTINCT sqlite_rowid) FROM gpkg_extensions",
    );
    assert_eq!(rowids, 15);
}

/// A database exercising every type rule, constraint kind and bad-value kind.
fn rules_db(dir: &Path) -> PathBuf {
    let path = dir.join("rules.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        r#"
        CREATE TABLE parent (id INTEGER PRIMARY KEY AUTOINCREMENT, code TEXT NOT NULL UNIQUE COLLATE NOCASE);
        CREATE TABLE typed (
            id INTEGER PRIMARY KEY,
            flag BOOLEAN NOT NULL DEFAULT 0,
            created DATETIME DEFAULT CURRENT_TIMESTAMP,
            day DATE,
            price NUMERIC(8,2) CHECK (price >= 0),
            ratio REAL,
            big REAL,
            doc JSON,
            name VARCHAR(10),
            raw BLOB,
            anything,
            status TEXT DEFAULT 'new',
            parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE,
            total INTEGER GENERATED ALWAYS AS (id * 2) STORED
        );
        CREATE INDEX typed_status_created ON typed (status, created DESC);
        CREATE INDEX typed_open ON typed (day) WHERE status = 'open';
        CREATE INDEX typed_lower_name ON typed (lower(name));
        INSERT INTO parent (id, code) VALUES (1, 'a'), (2, 'b');
        DELETE FROM parent WHERE id = 2;
        INSERT INTO parent (id, code) VALUES (5, 'c');
        DELETE FROM parent WHERE id = 5;
        INSERT INTO typed (id, flag, created, day, price, ratio, big, doc, name, raw, anything, status, parent_id) VALUES
          (1, 1, '2024-03-01 12:34:56', '2024-03-01', 12.5, 0.1, 1e300, '{"b": [1, 2], "a": "ü"}', 'zürich', x'00ff', 42, 'open', 1),
          (2, 0, 1709296496, '1999-12-31', 7, -0.0, 9007199254740993, '[]', 'it''s', x'', 'text', 'done', NULL),
          (3, 0, 2460371.0242592593, NULL, NULL, NULL, NULL, 'null', NULL, NULL, NULL, 'new', 1);
        "#,
    )
    .unwrap();
    path
}

#[test]
fn every_type_rule_and_constraint_kind() {
    let dir = temp_dir();
    let src = rules_db(dir.path());
    let db = TestDb::new();
    let r = snapshot(&src, &db, &options()).unwrap();
    assert_complete(&r);
    let types: Vec<(String, String)> = query(&db, "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_name = 'typed' ORDER BY ordinal_position")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let ty = |c: &str| {
        types
            .iter()
            .find(|t| t.0 == c)
            .unwrap_or_else(|| panic!("{c} in {types:?}"))
            .1
            .clone()
    };
    assert_eq!(ty("flag"), "boolean");
    assert_eq!(ty("created"), "timestamp with time zone");
    assert_eq!(ty("day"), "date");
    assert_eq!(ty("price"), "numeric");
    assert_eq!(ty("ratio"), "double precision");
    assert_eq!(
        ty("big"),
        "double precision",
        "REAL affinity stored 2^53+1 as the double 2^53"
    );
    assert_eq!(ty("doc"), "jsonb");
    assert_eq!(ty("name"), "character varying");
    assert_eq!(ty("raw"), "bytea");
    assert_eq!(
        ty("anything"),
        "text",
        "an untyped column holding 42 and 'text'"
    );
    let row: tokio_postgres::Row = query(&db, "SELECT flag, created = '2024-03-01 12:34:56+00', price::text, ratio, doc = '{\"a\": \"ü\", \"b\": [1, 2]}'::jsonb, name, raw, anything, total FROM typed WHERE id = 1").remove(0);
    assert!(row.get::<_, bool>(0));
    assert!(row.get::<_, bool>(1));
    assert_eq!(
        row.get::<_, String>(2),
        "12.50",
        "numeric(8,2) shows its scale; the value is 12.5"
    );
    assert_eq!(row.get::<_, f64>(3), 0.1);
    assert!(row.get::<_, bool>(4));
    assert_eq!(row.get::<_, String>(5), "zürich");
    assert_eq!(row.get::<_, Vec<u8>>(6), vec![0, 255]);
    assert_eq!(row.get::<_, String>(7), "42");
    assert_eq!(row.get::<_, i64>(8), 2);
    let same: bool = scalar(
        &db,
        "SELECT bool_and(created = '2024-03-01 12:34:56+00') FROM typed",
    );
    assert!(
        same,
        "ISO text, epoch integer and Julian day all name the same instant"
    );
    let neg_zero: f64 = scalar(&db, "SELECT ratio FROM typed WHERE id = 2");
    let sqlite_zero: f64 = sqlite_scalar(&src, "SELECT ratio FROM typed WHERE id = 2");
    assert_eq!(
        neg_zero.to_bits(),
        sqlite_zero.to_bits(),
        "-0.0 arrives exactly as SQLite stores it"
    );
    let big: f64 = scalar(&db, "SELECT big FROM typed WHERE id = 2");
    assert_eq!(
        big, 9_007_199_254_740_992.0,
        "SQLite stored the REAL 2^53 (its own rounding), copied exactly"
    );
    // Constraints and defaults.
    let defaults: (bool, String) = {
        let r = query(
            &db,
            "INSERT INTO typed (id) VALUES (10) RETURNING flag, status",
        )
        .remove(0);
        (r.get(0), r.get(1))
    };
    assert_eq!(defaults, (false, "new".to_string()));
    let created_default: bool = scalar(
        &db,
        "SELECT created > now() - interval '1 minute' FROM typed WHERE id = 10",
    );
    assert!(created_default, "DEFAULT CURRENT_TIMESTAMP is kept");
    let violates = block_on(async {
        db.client()
            .await
            .execute("INSERT INTO typed (id, price) VALUES (11, -1)", &[])
            .await
    });
    assert!(violates.is_err(), "the CHECK constraint is enforced");
    let next_parent: i64 = scalar(&db, "INSERT INTO parent (code) VALUES ('z') RETURNING id");
    assert_eq!(
        next_parent, 6,
        "AUTOINCREMENT never reuses 5, the largest id ever handed out"
    );
    let dup = block_on(async {
        db.client()
            .await
            .execute("INSERT INTO parent (code) VALUES ('A')", &[])
            .await
    });
    assert!(dup.is_err(), "UNIQUE COLLATE NOCASE: 'A' collides with 'a'");
    let indexes: i64 = scalar(
        &db,
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'typed'",
    );
    assert_eq!(
        indexes, 4,
        "primary key + 3 indexes: {:#?}",
        r.post_load.notes
    );
    block_on(async {
        db.client()
            .await
            .execute("DELETE FROM parent WHERE id = 1", &[])
            .await
            .unwrap()
    });
    let children: i64 = scalar(
        &db,
        "SELECT count(*) FROM typed WHERE parent_id IS NOT NULL",
    );
    assert_eq!(children, 0, "ON DELETE CASCADE");
}

#[test]
fn bad_values_are_quarantined_with_table_key_column_and_reason() {
    let dir = temp_dir();
    let src = dir.path().join("bad.db");
    let conn = Connection::open(&src).unwrap();
    conn.execute_batch(
        "CREATE TABLE \"Orders\" (id INTEGER PRIMARY KEY, note TEXT, at DATETIME, qty INTEGER);
         INSERT INTO \"Orders\" VALUES (1, 'fine', '2024-01-01', 1);
         INSERT INTO \"Orders\" VALUES (2, 'nul' || char(0) || 'inside', '2024-01-02', 2);
         INSERT INTO \"Orders\" VALUES (3, CAST(x'c328' AS TEXT), '2024-01-03', 3);
         INSERT INTO \"Orders\" VALUES (4, 'ok', 'not a date', 4);
         INSERT INTO \"Orders\" VALUES (5, 'ok', '2024-01-05', 5.5);
         INSERT INTO \"Orders\" VALUES (6, 'ok', '2024-01-06', 6);",
    )
    .unwrap();
    drop(conn);
    let toml = dir.path().join("sqlite2pg.toml");
    std::fs::write(
        &toml,
        "[columns]\n\"orders.at\" = \"timestamptz\"\n\"orders.qty\" = \"bigint\"\n",
    )
    .unwrap();
    let db = TestDb::new();
    let flags = GlobalFlags {
        source: Some(src.clone()),
        target: Some(db.url_string()),
        config: Some(toml),
        ..GlobalFlags::default()
    };
    let r = run_snapshot(&Config::resolve(&flags).unwrap(), &options(), &|_, _| {}).unwrap();
    assert_eq!(r.exit_code(), 3);
    assert_eq!(r.quarantined(), 4);
    assert!(r.count_mismatches().is_empty());
    let ids: Vec<i64> = query(&db, "SELECT id FROM orders ORDER BY id")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [1, 6]);
    let q: Vec<(String, String, String, String)> = query(&db, "SELECT table_name, row_key::text, column_name, reason FROM sqlite2pg.quarantine ORDER BY row_key")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(q.len(), 4, "{q:#?}");
    assert_eq!(
        (q[0].0.as_str(), q[0].1.as_str(), q[0].2.as_str()),
        ("Orders", "[2]", "note")
    );
    assert!(q[0].3.contains("NUL"));
    assert_eq!((q[1].1.as_str(), q[1].2.as_str()), ("[3]", "note"));
    assert!(q[1].3.contains("UTF-8"));
    assert_eq!((q[2].1.as_str(), q[2].2.as_str()), ("[4]", "at"));
    assert_eq!((q[3].1.as_str(), q[3].2.as_str()), ("[5]", "qty"));
    let bytes: Vec<u8> = scalar(
        &db,
        "SELECT value_bytes FROM sqlite2pg.quarantine WHERE row_key = '[2]'",
    );
    assert_eq!(bytes, b"nul\0inside", "the exact bytes are kept");
}

#[test]
fn hostile_names_and_values_arrive() {
    let dir = temp_dir();
    let src = dir.path().join("hostile.db");
    let conn = Connection::open(&src).unwrap();
    conn.execute_batch(
        r#"CREATE TABLE "select" ("from" INTEGER PRIMARY KEY, "where" TEXT, "a ""quoted"" col" JSON, "User" BLOB);
           CREATE TABLE "tåble with spaces ✓" ("user" TEXT PRIMARY KEY, "order" INTEGER REFERENCES "select"("from")) WITHOUT ROWID;
           INSERT INTO "select" VALUES (1, 'Robert''); DROP TABLE students;--', '{"k": "\u00e9"}', randomblob(300000));
           INSERT INTO "tåble with spaces ✓" VALUES ('ö ''"\', 1);"#,
    )
    .unwrap();
    drop(conn);
    let db = TestDb::new();
    let r = snapshot(&src, &db, &options()).unwrap();
    assert_complete(&r);
    let text: String = scalar(&db, "SELECT \"where\" FROM \"select\"");
    assert_eq!(text, "Robert'); DROP TABLE students;--");
    let blob_len: i32 = scalar(&db, "SELECT length(\"user\") FROM \"select\"");
    assert_eq!(blob_len, 300_000);
    let key: String = scalar(&db, "SELECT \"user\" FROM \"tåble with spaces ✓\"");
    assert_eq!(key, "ö '\"\\");
}

#[test]
fn tables_subset_refuses_dangling_foreign_keys_and_foreign_tables_are_kept() {
    let (_dir, src) = real_db("chinook__Chinook_Sqlite.sqlite");
    let db = TestDb::new();
    let err = snapshot(
        &src,
        &db,
        &SnapshotOptions {
            tables: Some(vec!["Album".into()]),
            ..options()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("Artist"), "{err}");
    let r = snapshot(
        &src,
        &db,
        &SnapshotOptions {
            tables: Some(vec!["Album".into(), "Artist".into()]),
            ..options()
        },
    )
    .unwrap();
    assert_eq!(r.tables.len(), 2);

    let other = TestDb::new();
    query(
        &other,
        "CREATE TABLE genre (id int); INSERT INTO genre VALUES (7)"
            .split(';')
            .next()
            .unwrap(),
    );
    query(&other, "INSERT INTO genre VALUES (7)");
    let err = snapshot(&src, &other, &options()).unwrap_err().to_string();
    assert!(
        err.contains("genre") && err.contains("--drop-existing"),
        "{err}"
    );
    let kept: i64 = scalar(&other, "SELECT count(*) FROM genre");
    assert_eq!(kept, 1, "a table sqlite2pg did not create is never touched");
    let r = snapshot(
        &src,
        &other,
        &SnapshotOptions {
            drop_existing: true,
            ..options()
        },
    )
    .unwrap();
    assert_complete(&r);
}

fn cli_snapshot(src: &Path, db: &TestDb, fault: Option<&str>) -> Output {
    cli_snapshot_with(src, db, fault, &["--jobs", "2", "--range-rows", "2000"])
}

fn cli_snapshot_with(src: &Path, db: &TestDb, fault: Option<&str>, args: &[&str]) -> Output {
    cli_snapshot_args(src, db, fault, &[args, &["--validate"]].concat())
}

/// `sqlite2pg snapshot` with `args` (and 500-row batches) into `db`, with the fault `fault`.
fn cli_snapshot_args(src: &Path, db: &TestDb, fault: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sqlite2pg"));
    cmd.args(["--source", src.to_str().unwrap(), "snapshot"])
        .args(args)
        .args(["--batch-size", "500"]);
    cmd.env("SQLITE2PG_TARGET", db.url_string())
        .env_remove("DATABASE_URL");
    if let Some(f) = fault {
        cmd.env(sqlite2pg::fault::FAULT_ENV, f);
    }
    cmd.output().expect("run sqlite2pg")
}

/// The sample app at scale 0.01 in `dir`, and its number of jobs.
fn crash_test_source(dir: &Path) -> (PathBuf, i64) {
    let src = dir.join("app.db");
    sqlite2pg::sample_app::generate(
        &src,
        &sqlite2pg::sample_app::GenerateOptions {
            scale: 0.01,
            seed: 3,
        },
    )
    .unwrap();
    let jobs = sqlite_scalar(&src, "SELECT count(*) FROM jobs");
    (src, jobs)
}

#[test]
fn a_crash_at_each_fault_point_resumes_without_loss_or_duplicates() {
    let dir = temp_dir();
    let (src, expected) = crash_test_source(dir.path());
    for fault in [
        "snapshot.before_range_commit@2",
        "snapshot.after_range_commit@1",
        "snapshot.before_post_load",
        // The post-load's steps commit one by one: after the first table's keys, amid the
        // index builds, amid the validations.
        "snapshot.after_post_load_step@1",
        "snapshot.after_post_load_step@10",
        "snapshot.after_post_load_step@25",
    ] {
        let db = TestDb::new();
        let crashed = cli_snapshot(&src, &db, Some(fault));
        assert_ne!(crashed.status.code(), Some(0), "{fault} must abort the run");
        let out = cli_snapshot(&src, &db, None);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{fault}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("validate: every table holds"), "{stdout}");
        let jobs: i64 = scalar(&db, "SELECT count(*) FROM jobs");
        let distinct: i64 = scalar(&db, "SELECT count(DISTINCT id) FROM jobs");
        assert_eq!((jobs, distinct), (expected, expected), "{fault}");
        let pk: i64 = scalar(&db, "SELECT count(*) FROM pg_constraint WHERE contype = 'p' AND conrelid = 'jobs'::regclass");
        assert_eq!(pk, 1);
        // Every index, CHECK and foreign key once, and validated.
        let indexes: Vec<String> = query(
            &db,
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid IN ('jobs'::regclass, 'job_history'::regclass) ORDER BY 1",
        )
        .iter()
        .map(|r| r.get(0))
        .collect();
        assert_eq!(
            indexes,
            [
                "job_history_job",
                "job_history_pkey",
                "jobs_pkey",
                "jobs_queued",
                "jobs_status_scheduled",
                "jobs_user"
            ],
            "{fault}"
        );
        let constraints: Vec<(String, bool)> = query(
            &db,
            "SELECT conname::text, convalidated FROM pg_constraint WHERE conrelid = 'jobs'::regclass AND contype IN ('c', 'f') ORDER BY 1",
        )
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        assert_eq!(
            constraints,
            [
                ("jobs_check1".to_string(), true),
                ("jobs_fk1".to_string(), true)
            ],
            "{fault}"
        );
        let not_done: i64 = scalar(
            &db,
            "SELECT count(*) FROM sqlite2pg.snapshot_tables WHERE status <> 'done'",
        );
        assert_eq!(not_done, 0, "{fault}");
        // Autovacuum, off while the snapshot loads and builds, is back on every table.
        let autovacuum_off: i64 = scalar(
            &db,
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND array_to_string(reloptions, ',') LIKE '%autovacuum_enabled=false%'",
        );
        assert_eq!(autovacuum_off, 0, "{fault}");
    }
}

/// A snapshot that read the live source (no `--validate`) and crashed cannot resume: the state
/// it read is gone. The re-run starts over from a new read view: the tables it created are
/// created again, so nothing copied by the crashed run is kept twice.
#[test]
fn a_crash_while_reading_the_live_source_starts_over_without_duplicates() {
    let dir = temp_dir();
    let (src, expected) = crash_test_source(dir.path());
    let args = ["--jobs", "2", "--range-rows", "2000"];
    for fault in [
        "snapshot.after_range_commit@1",
        "snapshot.after_post_load_step@10",
    ] {
        let db = TestDb::new();
        let crashed = cli_snapshot_args(&src, &db, Some(fault), &args);
        assert_ne!(crashed.status.code(), Some(0), "{fault} must abort the run");
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("app.db.sqlite2pg/snapshot.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(record["view"], "live", "{record}");
        assert_eq!(record["backup"], src.to_str().unwrap(), "no backup written");
        let out = cli_snapshot_args(&src, &db, None, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{fault}: {stderr}");
        assert!(stderr.contains("starting over"), "{fault}: {stderr}");
        let (rows, distinct): (i64, i64) = {
            let r = &query(&db, "SELECT count(*), count(DISTINCT id) FROM jobs")[0];
            (r.get(0), r.get(1))
        };
        assert_eq!((rows, distinct), (expected, expected), "{fault}");
        let not_done: i64 = scalar(
            &db,
            "SELECT count(*) FROM sqlite2pg.snapshot_tables WHERE status <> 'done'",
        );
        assert_eq!(not_done, 0, "{fault}");
        let validated: i64 = scalar(
            &db,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated",
        );
        let fks: i64 = scalar(
            &db,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'",
        );
        assert_eq!(validated, fks, "{fault}: every foreign key once, validated");
    }
    // No backup file was ever written.
    let backups = std::fs::read_dir(dir.path().join("app.db.sqlite2pg"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("backup-")
        })
        .count();
    assert_eq!(backups, 0);
}

/// A source in rollback-journal mode is copied from a backup even without `--validate`: a long
/// read there would lock the application's writers out for the whole copy.
#[test]
fn a_rollback_journal_source_is_copied_from_a_backup() {
    let dir = temp_dir();
    let src = dir.path().join("journal.db");
    let conn = Connection::open(&src).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=DELETE;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         INSERT INTO t VALUES (1, 'a'), (2, 'b');",
    )
    .unwrap();
    drop(conn);
    assert_copied_from_a_backup(&src, true);
}

/// Snapshots `src` (table `t` with 2 committed rows) without `--validate`, `capture` as given,
/// and checks that it read a backup and that exactly those rows arrived.
fn assert_copied_from_a_backup(src: &Path, capture: bool) {
    let db = TestDb::new();
    let opts = SnapshotOptions {
        validate: false,
        capture,
        ..options()
    };
    let r = snapshot(src, &db, &opts).unwrap();
    assert_complete(&r);
    assert!(r.snapshot_file.contains("backup-"), "{}", r.snapshot_file);
    let n: i64 = scalar(&db, "SELECT count(*) FROM t");
    assert_eq!(n, 2);
}

/// An application that holds its write lock past the busy timeout does not stop a snapshot: the
/// read view needs that lock for a moment, a backup's read does not (the uncommitted row stays
/// out, as it must).
#[test]
fn a_writer_holding_its_lock_past_the_busy_timeout_gets_a_snapshot_from_a_backup() {
    let dir = temp_dir();
    let src = dir.path().join("held.db");
    let app = Connection::open(&src).unwrap();
    app.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         INSERT INTO t VALUES (1, 'a'), (2, 'b');
         BEGIN IMMEDIATE;
         INSERT INTO t VALUES (3, 'uncommitted');",
    )
    .unwrap();
    // Capture off: installing it needs the write lock too.
    assert_copied_from_a_backup(&src, false);
    app.execute_batch("COMMIT").unwrap();
}

/// A source whose `qty INTEGER` holds one fraction and whose `at DATETIME` holds one word, far
/// into a table split into ranges: the declared types cannot hold them, so the snapshot widens
/// the columns (numeric, text) and copies the table again.
fn outgrown_db(dir: &Path) -> PathBuf {
    let src = dir.join("outgrown.db");
    let conn = Connection::open(&src).unwrap();
    conn.execute_batch(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER, at DATETIME, note TEXT);
         CREATE TABLE clean (id INTEGER PRIMARY KEY, qty INTEGER);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO items SELECT i, i, '2024-01-01 00:00:00', 'row ' || i FROM n;
         INSERT INTO clean SELECT id, qty FROM items WHERE id <= 2000;
         UPDATE items SET qty = 2.5 WHERE id = 2500;
         UPDATE items SET at = 'soon' WHERE id = 2999;",
    )
    .unwrap();
    src
}

fn assert_outgrown_arrived(db: &TestDb) {
    let types: Vec<(String, String)> = query(
        db,
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname IN ('qty', 'at') ORDER BY attname",
    )
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    assert_eq!(
        types,
        [
            ("at".to_string(), "text".to_string()),
            ("qty".to_string(), "numeric".to_string())
        ]
    );
    let (rows, distinct): (i64, i64) = {
        let r = &query(db, "SELECT count(*), count(DISTINCT id) FROM items")[0];
        (r.get(0), r.get(1))
    };
    assert_eq!((rows, distinct), (3000, 3000), "every row once");
    let odd: String = scalar(
        db,
        "SELECT qty::text || '|' || at FROM items WHERE id = 2500",
    );
    assert_eq!(odd, "2.5|2024-01-01 00:00:00");
    let word: String = scalar(db, "SELECT at FROM items WHERE id = 2999");
    assert_eq!(word, "soon");
    let quarantined: i64 = scalar(db, "SELECT count(*) FROM sqlite2pg.quarantine");
    assert_eq!(quarantined, 0, "widening loses nothing");
    let clean: String = scalar(
        db,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'clean'::regclass AND attname = 'qty'",
    );
    assert_eq!(clean, "bigint", "a clean table keeps its declared type");
}

#[test]
fn values_that_outgrow_the_declared_type_widen_the_column_and_the_table_is_copied_again() {
    let dir = temp_dir();
    let src = outgrown_db(dir.path());
    let db = TestDb::new();
    let r = snapshot(&src, &db, &options()).unwrap();
    assert_complete(&r);
    let items = r.tables.iter().find(|t| t.table == "items").unwrap();
    assert_eq!((items.rows, items.source_rows), (3000, 3000));
    assert_eq!(r.exit_code(), 0, "{:#?}", r.diff);
    assert_outgrown_arrived(&db);
}

/// A crash after the widened copy committed: the re-run finds the widened table, plans it from
/// its values again (the same types) and keeps what was loaded.
#[test]
fn a_crash_after_widening_resumes_with_the_widened_types() {
    let dir = temp_dir();
    let src = outgrown_db(dir.path());
    let db = TestDb::new();
    let crashed = cli_snapshot(&src, &db, Some("snapshot.before_post_load"));
    assert_ne!(crashed.status.code(), Some(0));
    let widened = "copied again";
    assert!(String::from_utf8_lossy(&crashed.stderr).contains(widened));
    let out = cli_snapshot(&src, &db, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(widened),
        "the resumed run keeps the widened table it finds"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("validate: every table holds"), "{stdout}");
    assert_outgrown_arrived(&db);
}

/// A crash right after the range holding the misfits committed, before the copy could widen the
/// table: the quarantine it committed is the evidence, so the resumed run widens and recopies
/// the table all the same (one job at a time, largest first: `items` commits first).
#[test]
fn a_crash_before_widening_still_widens_on_resume() {
    let dir = temp_dir();
    let src = outgrown_db(dir.path());
    let db = TestDb::new();
    let args = ["--jobs", "1", "--range-rows", "5000"];
    let crashed = cli_snapshot_with(&src, &db, Some("snapshot.after_range_commit@1"), &args);
    assert_ne!(crashed.status.code(), Some(0));
    let early: i64 = scalar(
        &db,
        "SELECT count(*) FROM sqlite2pg.quarantine WHERE table_name = 'items'",
    );
    assert_eq!(
        early, 2,
        "the crashed run committed items with its two misfits"
    );
    let out = cli_snapshot_with(&src, &db, None, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("copied again"));
    assert_outgrown_arrived(&db);
}

/// A foreign key to a UNIQUE column that is not the primary key: the unique index is built with
/// the parent's primary key, before the keys are added (an index built later, beside the other
/// indexes, would not exist yet), so the key exists and its violation is listed by value.
#[test]
fn a_foreign_key_to_a_unique_column_is_created_and_checked() {
    let dir = temp_dir();
    let src = dir.path().join("unique_fk.db");
    Connection::open(&src)
        .unwrap()
        .execute_batch(
            "PRAGMA foreign_keys = OFF;
             CREATE TABLE account (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);
             CREATE INDEX account_id_email ON account (id, email);
             CREATE TABLE login (id INTEGER PRIMARY KEY, email TEXT REFERENCES account(email));
             INSERT INTO account VALUES (1, 'a@x'), (2, 'b@x');
             INSERT INTO login VALUES (1, 'a@x'), (2, 'nobody@x'), (3, NULL);",
        )
        .unwrap();
    let db = TestDb::new();
    let r = snapshot(&src, &db, &options()).unwrap();
    let fk: (String, bool) = {
        let row = &query(
            &db,
            "SELECT confrelid::regclass::text, convalidated FROM pg_constraint WHERE conrelid = 'login'::regclass AND contype = 'f'",
        )[0];
        (row.get(0), row.get(1))
    };
    assert_eq!(fk, ("account".to_string(), false), "{:#?}", r.post_load);
    assert_eq!(r.post_load.fk_violations.len(), 1, "{:#?}", r.post_load);
    let v = &r.post_load.fk_violations[0];
    assert_eq!((v.table.as_str(), v.count), ("login", 1));
    assert_eq!(v.keys, [serde_json::json!(["nobody@x"])]);
    let indexes: i64 = scalar(
        &db,
        "SELECT count(*) FROM pg_index WHERE indrelid = 'account'::regclass",
    );
    assert_eq!(
        indexes, 3,
        "primary key, the unique email index, account_id_email"
    );
    assert!(
        r.post_load.notes.is_empty(),
        "nothing refused: {:#?}",
        r.post_load.notes
    );
}

/// The progress the command line shows: rows per table while copying, then the post-load's
/// steps, each counter reaching its total when its phase ends; with `--jobs 3`.
#[test]
fn progress_counts_rows_then_post_load_steps_to_their_totals() {
    use std::sync::atomic::Ordering;
    let dir = temp_dir();
    let src = rules_db(dir.path());
    let db = TestDb::new();
    let flags = GlobalFlags {
        source: Some(src),
        target: Some(db.url_string()),
        ..GlobalFlags::default()
    };
    let seen = std::sync::Mutex::new(Vec::new());
    let watch = |p: &sqlite2pg::snapshot::LoadProgress, done: &std::sync::atomic::AtomicBool| {
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let sum = |f: fn(&(String, _, _)) -> u64| p.tables.iter().map(f).sum::<u64>();
        let total = sum(|t| t.1.load(Ordering::Relaxed));
        let count = sum(|t| t.2.load(Ordering::Relaxed));
        seen.lock().unwrap().push((p.unit, total, count));
    };
    // Three workers: three copy connections, then three post-load connections sharing steps.
    let opts = SnapshotOptions {
        jobs: 3,
        ..options()
    };
    let r = run_snapshot(&Config::resolve(&flags).unwrap(), &opts, &watch).unwrap();
    let seen = seen.into_inner().unwrap();
    let rows: u64 = r.tables.iter().map(|t| t.source_rows).sum();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], ("rows", rows, rows));
    let (unit, total, count) = seen[1];
    assert_eq!(unit, "steps");
    // Per table at least its keys, validation and ANALYZE, plus the foreign keys step.
    assert!(total > 3 * r.tables.len() as u64, "{seen:?}");
    assert_eq!(count, total, "every step done");
}

/// A table of `rows` rows of 200 bytes each, alone in a fresh database (rollback journal, so the
/// file holds every page); returns the file's page size.
fn one_big_table(path: &Path, rows: i64) -> u64 {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
         CREATE INDEX notes_body ON notes (body);",
    )
    .unwrap();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO notes SELECT i, printf('%0200d', i) FROM n",
        [rows],
    )
    .unwrap();
    conn.query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap()
}

/// A database at `path` holding [`one_big_table`] of 3000 rows, with one b-tree page of type
/// `kind` (13: table leaf, 10: index leaf) in the middle of the file broken: its type byte
/// becomes one SQLite rejects.
fn big_table_with_a_broken_page(path: &Path, kind: u8) {
    let page_size = one_big_table(path, 3000);
    let mut bytes = std::fs::read(path).unwrap();
    let pages: Vec<u64> = (2..=bytes.len() as u64 / page_size)
        .filter(|&p| bytes[((p - 1) * page_size) as usize] == kind)
        .collect();
    assert!(pages.len() > 20, "{pages:?}");
    bytes[((pages[pages.len() / 2] - 1) * page_size) as usize] = 0x42;
    std::fs::write(path, &bytes).unwrap();
}

#[test]
fn a_corrupt_page_in_a_copied_table_stops_the_snapshot_naming_the_table() {
    let dir = temp_dir();
    let src = dir.path().join("corrupt.db");
    big_table_with_a_broken_page(&src, 13);
    let db = TestDb::new();
    let opts = SnapshotOptions {
        capture: false,
        validate: false,
        ..options()
    };
    let err = snapshot(&src, &db, &opts).expect_err("a corrupt table must not load");
    let text = format!("{err}");
    assert!(text.contains("notes"), "{text}");
    assert!(
        text.contains("malformed") || text.contains("corrupt"),
        "{text}"
    );
}

#[test]
fn a_corrupt_index_page_is_not_copied_and_check_backup_finds_it() {
    let dir = temp_dir();
    let src = dir.path().join("corrupt_index.db");
    big_table_with_a_broken_page(&src, 10);
    // The rows are intact: the snapshot copies all of them (PostgreSQL builds its own index).
    let db = TestDb::new();
    let opts = SnapshotOptions {
        capture: false,
        validate: false,
        ..options()
    };
    let report = snapshot(&src, &db, &opts).expect("the table's rows are intact");
    assert_eq!(report.tables[0].rows, 3000);
    // --check-backup runs quick_check on the backup, which walks the index too.
    let db = TestDb::new();
    let opts = SnapshotOptions {
        fresh: true,
        check_backup: true,
        ..opts
    };
    let err = snapshot(&src, &db, &opts).expect_err("quick_check sees the broken index");
    assert!(format!("{err}").contains("corrupt"), "{err}");
}
