//! `sqlite2pg diff` against a real PostgreSQL: every kind of difference planted into the target
//! is found — and nothing else (equal values spelled differently are not differences); clean
//! snapshots of the real databases diff as identical; the HTML report shows the differing keys
//! in a real browser.

use std::path::Path;
use std::process::Command;

use rusqlite::Connection;
use sqlite2pg::config::{Config, GlobalFlags};
use sqlite2pg::diff::report::DiffKind;
use sqlite2pg::diff::{render_html, run_diff, DiffOptions, DiffReport};
use sqlite2pg::snapshot::SnapshotOptions;

use crate::check::real_db;
use crate::snapshot::{options, query, snapshot};
use crate::support::pg::TestDb;
use crate::support::temp_dir;

fn diff(source: &Path, db: &TestDb, opts: &DiffOptions) -> DiffReport {
    let flags = GlobalFlags {
        source: Some(source.to_path_buf()),
        target: Some(db.url_string()),
        ..GlobalFlags::default()
    };
    run_diff(&Config::resolve(&flags).unwrap(), opts).expect("diff runs")
}

fn planted_db(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("plant.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        r#"CREATE TABLE t (id INTEGER PRIMARY KEY, b BOOLEAN, n NUMERIC, r REAL, s TEXT, blob BLOB, at DATETIME, day DATE, doc JSON);
           CREATE TABLE k ("code" TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID;"#,
    )
    .unwrap();
    let mut ins = conn
        .prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
        .unwrap();
    for id in 1..=40i64 {
        ins.execute(rusqlite::params![
            id,
            id % 2,
            1.5 + id as f64,
            if id == 14 { 0.0 } else { 0.25 * id as f64 },
            if id == 5 {
                None
            } else {
                Some(format!("text {id} 'q' ü"))
            },
            vec![id as u8; 3],
            format!("2024-01-{:02} 10:00:00.000001", id % 28 + 1),
            format!("2023-05-{:02}", id % 28 + 1),
            format!(r#"{{"a": {id}, "nested": {{"x": [1, 2]}}, "b": "y"}}"#),
        ])
        .unwrap();
    }
    for (code, v) in [
        ("Apple", 1),
        ("apple", 2),
        ("Zebra", 3),
        ("éclair", 4),
        ("a b", 5),
    ] {
        conn.execute("INSERT INTO k VALUES (?1, ?2)", rusqlite::params![code, v])
            .unwrap();
    }
    path
}

#[test]
fn planted_differences_are_found_exactly() {
    let dir = temp_dir();
    let src = planted_db(dir.path());
    let db = TestDb::new();
    let r = snapshot(
        &src,
        &db,
        &SnapshotOptions {
            validate: false,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(r.exit_code(), 0);
    assert!(
        diff(&src, &db, &DiffOptions::default()).identical,
        "a fresh snapshot is identical"
    );
    // Equal values spelled differently: not differences.
    query(&db, "UPDATE t SET n = 2.50 WHERE id = 1");
    query(
        &db,
        "UPDATE t SET doc = '{\"b\": \"y\", \"nested\": {\"x\": [1.0, 2]}, \"a\": 2}' WHERE id = 2",
    );
    query(&db, "UPDATE t SET r = '-0' WHERE id = 14");
    // Real differences, one per kind.
    let plants = [
        "UPDATE t SET b = NOT b WHERE id = 3",
        "UPDATE t SET n = n + 0.001 WHERE id = 4",
        "UPDATE t SET s = '' WHERE id = 5",
        "UPDATE t SET r = r + 1e-9 WHERE id = 6",
        "UPDATE t SET blob = '\\x000000' WHERE id = 7",
        "UPDATE t SET at = at + interval '1 microsecond' WHERE id = 8",
        "UPDATE t SET day = day + 1 WHERE id = 9",
        "UPDATE t SET doc = jsonb_set(doc, '{nested,x,1}', '3') WHERE id = 10",
        "UPDATE t SET s = 'NULL' WHERE id = 11",
        "DELETE FROM t WHERE id = 12",
        "INSERT INTO t (id) VALUES (1000)",
        "UPDATE t SET id = 2000 WHERE id = 13",
        "UPDATE k SET v = 9 WHERE code = 'apple'",
    ];
    for p in plants {
        query(&db, p);
    }
    let report = diff(&src, &db, &DiffOptions::default());
    assert!(!report.identical);
    assert_eq!(report.exit_code(), 3);
    let t = report.tables.iter().find(|t| t.table == "t").unwrap();
    assert_eq!(
        (t.modified, t.missing, t.extra),
        (9, 2, 2),
        "{:#?}",
        report.differences
    );
    let modified_cols: Vec<(&str, u64)> = t
        .column_mismatches
        .iter()
        .map(|(c, n)| (c.as_str(), *n))
        .collect();
    assert_eq!(
        modified_cols,
        [
            ("at", 1),
            ("b", 1),
            ("blob", 1),
            ("day", 1),
            ("doc", 1),
            ("n", 1),
            ("r", 1),
            ("s", 2)
        ]
    );
    let keys = |kind: DiffKind| -> Vec<String> {
        report
            .differences
            .iter()
            .filter(|d| d.kind == kind && d.table == "t")
            .map(|d| d.key.join(","))
            .collect()
    };
    assert_eq!(keys(DiffKind::Missing), ["12", "13"]);
    assert_eq!(keys(DiffKind::Extra), ["1000", "2000"]);
    let k = report.tables.iter().find(|t| t.table == "k").unwrap();
    assert_eq!(
        (k.identical, k.modified),
        (4, 1),
        "text keys merge in byte order on both sides"
    );
    let null_vs_empty = report.differences.iter().find(|d| d.key == ["5"]).unwrap();
    assert_eq!(
        (
            null_vs_empty.columns[0].source.as_str(),
            null_vs_empty.columns[0].target.as_str()
        ),
        ("NULL", "''")
    );
}

#[test]
fn max_differences_marks_the_report_partial_and_sample_limits_rows() {
    let dir = temp_dir();
    let src = planted_db(dir.path());
    let db = TestDb::new();
    snapshot(
        &src,
        &db,
        &SnapshotOptions {
            validate: false,
            ..options()
        },
    )
    .unwrap();
    query(&db, "UPDATE t SET s = 'changed'");
    let report = diff(
        &src,
        &db,
        &DiffOptions {
            max_differences: 3,
            ..DiffOptions::default()
        },
    );
    assert_eq!(report.differences.len(), 3);
    assert!(report.partial);
    assert_eq!(
        report
            .tables
            .iter()
            .find(|t| t.table == "t")
            .unwrap()
            .modified,
        40
    );
    let sampled = diff(
        &src,
        &db,
        &DiffOptions {
            sample: Some(0.25),
            ..DiffOptions::default()
        },
    );
    let t = sampled.tables.iter().find(|t| t.table == "t").unwrap();
    assert!(
        t.source_rows > 0 && t.source_rows < 40,
        "{} rows sampled",
        t.source_rows
    );
    assert_eq!(
        t.source_rows, t.target_rows,
        "the same rows are sampled on both sides"
    );
    let ranged = diff(
        &src,
        &db,
        &DiffOptions {
            key_ranges: vec!["t=10..19".into()],
            ..DiffOptions::default()
        },
    );
    assert_eq!(
        ranged
            .tables
            .iter()
            .find(|t| t.table == "t")
            .unwrap()
            .source_rows,
        10
    );
}

#[test]
fn quarantined_rows_are_accounted_not_reported() {
    let dir = temp_dir();
    let src = dir.path().join("q.db");
    let conn = Connection::open(&src).unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b' || char(0)), (3, 'c');").unwrap();
    drop(conn);
    let db = TestDb::new();
    let r = snapshot(&src, &db, &options()).unwrap();
    assert_eq!(r.quarantined(), 1);
    let d = r.diff.as_ref().expect("--validate runs the diff");
    assert!(d.identical, "{:#?}", d.tables);
    assert_eq!(d.tables[0].quarantined, 1);
    assert_eq!(r.exit_code(), 3, "quarantined rows still need attention");
}

#[test]
fn real_databases_diff_identical_after_a_snapshot() {
    for name in [
        "chinook__Chinook_Sqlite.sqlite",
        "northwind__northwind.db",
        "pgloader__storage.sqlite",
        "geopackage__gdal_sample.gpkg",
    ] {
        let (_dir, src) = real_db(name);
        let db = TestDb::new();
        let r = snapshot(
            &src,
            &db,
            &SnapshotOptions {
                allow_rowid_key: true,
                ..options()
            },
        )
        .unwrap();
        let d = r.diff.as_ref().expect("--validate runs the diff");
        assert!(d.identical, "{name}: {}", sqlite2pg::diff::render_text(d));
        assert_eq!(r.exit_code(), 0, "{name}");
    }
}

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

#[test]
fn html_report_shows_the_differing_keys_in_a_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("SQLITE2PG_REQUIRE_CHROMIUM").is_none(),
            "Chromium is required here: run bin/set-up"
        );
        eprintln!("skipped: Chromium is not installed (bin/set-up installs it)");
        return;
    };
    let dir = temp_dir();
    let src = planted_db(dir.path());
    let db = TestDb::new();
    snapshot(
        &src,
        &db,
        &SnapshotOptions {
            validate: false,
            ..options()
        },
    )
    .unwrap();
    query(
        &db,
        "UPDATE t SET s = '<script>alert(1)</script>' WHERE id = 17",
    );
    query(&db, "DELETE FROM k WHERE code = 'éclair'");
    let report = diff(&src, &db, &DiffOptions::default());
    let html = dir.path().join("report.html");
    std::fs::write(&html, render_html(&report)).unwrap();
    let profile = dir.path().join("chromium-profile");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("id=\"verdict\">DIFFERENT"),
        "rendered DOM: {dom}"
    );
    assert!(
        dom.contains("<code>17</code>"),
        "the modified row's key is visible"
    );
    assert!(
        dom.contains("<code>'éclair'</code>"),
        "the missing row's key is visible: {dom}"
    );
    assert!(!dom.contains("<script>alert"), "values are escaped");
}
