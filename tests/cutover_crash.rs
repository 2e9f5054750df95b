//! Issue 6: a crash (abort, no cleanup, like kill -9) at each cutover step, under a live writer,
//! leaves a state from which `cutover` completes — zero differences by diff, every identity past
//! SQLite's ids, the fence refusing writes, a report that says what happened — and, separately,
//! from which `rollback` makes SQLite the system of record again: its schema exactly the
//! application's, the application writing, no report claiming a cutover.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use sqlite2pg::cutover::REPORT_FILE;
use sqlite2pg::fault;
use sqlite2pg::sample_app::{generate, GenerateOptions, LiveWriter, WriterOptions};

use crate::cutover::cli;
use crate::snapshot::{options, query, snapshot};
use crate::support::pg::TestDb;
use crate::support::{temp_dir, wait_until};
use crate::sync::assert_identical;

/// What the fence's error says.
const FENCED: &str = "migrated to PostgreSQL";

/// A cutover process that died at a fault point while the application kept writing.
struct Crashed {
    _dir: tempfile::TempDir,
    db: TestDb,
    src: PathBuf,
    writer: LiveWriter,
    /// `sqlite_schema` as the application had it before sqlite2pg installed anything.
    app_schema: Vec<String>,
    /// Whether the crash came after the fence committed.
    fenced: bool,
}

fn schema_of(src: &Path) -> Vec<String> {
    let conn = Connection::open(src).unwrap();
    let mut stmt = conn
        .prepare("SELECT type || ' ' || name || ': ' || coalesce(sql, '') FROM sqlite_schema ORDER BY type, name")
        .unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

fn report_path(src: &Path) -> PathBuf {
    src.with_file_name("app.db.sqlite2pg").join(REPORT_FILE)
}

/// Sample app, snapshot, a writer at 500 transactions/s, then `cutover` aborted at `point`.
fn crash_at(point: &str) -> Crashed {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = dir.path().join("app.db");
    let sample = GenerateOptions {
        scale: 0.002,
        seed: 8,
    };
    generate(&src, &sample).unwrap();
    let app_schema = schema_of(&src);
    snapshot(&src, &db, &options()).unwrap();
    // A report left by an earlier cutover (as an older version's rollback left it): it must not
    // survive into a cutover that crashed, where it would say "done".
    std::fs::write(report_path(&src), r#"{"fenced_at": "an earlier cutover"}"#).unwrap();
    let writer = LiveWriter::start(
        &src,
        WriterOptions {
            rate_per_sec: 500.0,
            seed: 9,
        },
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the writer writes", || {
        writer.stats().transactions > 50
    });
    let out = cli(&src, &db, &["cutover"], Some(point));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&format!("fault point {point} hit")),
        "the run must die at {point}: {:?} {stderr}",
        out.status
    );
    assert!(
        !report_path(&src).exists(),
        "after a crash at {point} no report says the cutover is done"
    );
    let fenced = point == fault::CUTOVER_AFTER_RELEASE;
    let status = cli(&src, &db, &["status"], None);
    let status = String::from_utf8_lossy(&status.stdout);
    let expected = match fenced {
        true => "cutover   interrupted after SQLite was fenced",
        false => "cutover   not done",
    };
    assert!(status.contains(expected), "{point}: {status}");
    let write = Connection::open(&src)
        .unwrap()
        .execute_batch("UPDATE users SET display_name = 'after the crash' WHERE id = 1");
    if fenced {
        assert!(write.unwrap_err().to_string().contains(FENCED), "{point}");
    } else {
        write.unwrap_or_else(|e| panic!("{point}: the crash released the freeze: {e}"));
        let seen = writer.stats().transactions;
        wait_until(
            Duration::from_secs(10),
            "the writer goes on after the crash",
            || writer.stats().transactions > seen + 50,
        );
    }
    Crashed {
        _dir: dir,
        db,
        src,
        writer,
        app_schema,
        fenced,
    }
}

/// The writer ends cleanly, or (once SQLite is fenced) with the fence's error; nothing else.
fn stop_writer(writer: LiveWriter, may_be_fenced: bool) {
    match writer.stop() {
        Ok(_) => {}
        Err(e) if may_be_fenced && format!("{e:?}").contains(FENCED) => {}
        Err(e) => panic!("the application's writer failed: {e:?}"),
    }
}

/// Every identity column in PostgreSQL hands out ids past the largest SQLite ever used
/// (`max(id)` and `sqlite_sequence`).
fn assert_identities_past_sqlite(src: &Path, db: &TestDb) {
    let app = Connection::open(src).unwrap();
    let identities = query(
        db,
        "SELECT table_name::text, column_name::text, \
         pg_get_serial_sequence(format('%I.%I', table_schema, table_name), column_name) \
         FROM information_schema.columns WHERE table_schema = 'public' AND is_identity = 'YES'",
    );
    assert!(identities.len() >= 5, "the sample app has 5 integer keys");
    for row in identities {
        let (table, column, sequence): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        let next: i64 = query(
            db,
            &format!("SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {sequence}"),
        )[0]
        .get(0);
        let used: i64 = app
            .query_row(
                &format!(
                    "SELECT max(coalesce((SELECT max(\"{column}\") FROM \"{table}\"), 0), \
                     coalesce((SELECT seq FROM sqlite_sequence WHERE name = ?1), 0))"
                ),
                [&table],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            next > used,
            "{table}.{column}: PostgreSQL's next id {next} must be past SQLite's {used}"
        );
    }
}

fn read_report(src: &Path) -> serde_json::Value {
    let bytes = std::fs::read(report_path(src)).expect("the cutover report is written");
    serde_json::from_slice(&bytes).unwrap()
}

fn then_cutover_completes(point: &str) {
    let c = crash_at(point);
    let out = cli(&c.src, &c.db, &["cutover"], None);
    assert!(
        out.status.success(),
        "cutover after a crash at {point}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop_writer(c.writer, true);
    let refused = Connection::open(&c.src)
        .unwrap()
        .execute_batch("UPDATE users SET display_name = 'late' WHERE id = 2")
        .unwrap_err();
    assert!(refused.to_string().contains(FENCED), "{refused}");
    assert_identical(&c.src, &c.db);
    assert_identities_past_sqlite(&c.src, &c.db);
    let report = read_report(&c.src);
    let position: i64 = query(
        &c.db,
        "SELECT applied_seq FROM sqlite2pg.sync_state WHERE id = 1",
    )[0]
    .get(0);
    assert_eq!(report["final_seq"], position, "{report}");
    assert_eq!(report["resumed"], c.fenced, "{report}");
    assert_eq!(report["pause_ms"].is_null(), c.fenced, "{report}");
    // Once more: a cutover already done is reported as it was, nothing is redone.
    let again = cli(&c.src, &c.db, &["cutover"], None);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(read_report(&c.src), report);
}

fn then_rollback_restores_sqlite(point: &str) {
    let c = crash_at(point);
    let out = cli(&c.src, &c.db, &["rollback"], None);
    assert!(
        out.status.success(),
        "rollback after a crash at {point}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Unfenced, the application never failed: the crash released the freeze, rollback waited
    // its turn. Fenced, its writes failed until the rollback.
    stop_writer(c.writer, c.fenced);
    assert_eq!(
        schema_of(&c.src),
        c.app_schema,
        "after rollback the schema is exactly the application's (no trigger, fence or table of ours)"
    );
    let app = LiveWriter::start(
        &c.src,
        WriterOptions {
            rate_per_sec: 500.0,
            seed: 10,
        },
    )
    .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the application writes after rollback",
        || app.stats().transactions > 20,
    );
    app.stop().expect("no write is refused after rollback");
    assert!(!report_path(&c.src).exists(), "no report claims a cutover");
}

/// One module per fault point, each with a test per way out; and a check that every cutover
/// fault point is listed.
macro_rules! crash_tests {
    ($($name:ident => $point:expr,)*) => {
        $(mod $name {
            #[test]
            fn then_cutover_completes() {
                super::then_cutover_completes($point)
            }

            #[test]
            fn then_rollback_restores_sqlite() {
                super::then_rollback_restores_sqlite($point)
            }
        })*

        #[test]
        fn every_cutover_fault_point_has_crash_tests() {
            assert_eq!([$($point),*], sqlite2pg::fault::CUTOVER_POINTS);
        }
    };
}

crash_tests! {
    after_backlog => sqlite2pg::fault::CUTOVER_AFTER_BACKLOG,
    after_drain => sqlite2pg::fault::CUTOVER_AFTER_DRAIN,
    after_verify => sqlite2pg::fault::CUTOVER_AFTER_VERIFY,
    after_sequences => sqlite2pg::fault::CUTOVER_AFTER_SEQUENCES,
    after_fence => sqlite2pg::fault::CUTOVER_AFTER_FENCE,
    after_release => sqlite2pg::fault::CUTOVER_AFTER_RELEASE,
}

/// A completed cutover undone by `rollback` must not leave its report behind: `status` would
/// say "cutover done" for a database that is the system of record again.
#[test]
fn rollback_after_a_completed_cutover_removes_its_report() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = dir.path().join("app.db");
    let sample = GenerateOptions {
        scale: 0.001,
        seed: 3,
    };
    generate(&src, &sample).unwrap();
    snapshot(&src, &db, &options()).unwrap();
    let status = |db: &TestDb| -> serde_json::Value {
        let out = cli(&src, db, &["status", "--json"], None);
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    };
    assert!(cli(&src, &db, &["cutover"], None).status.success());
    assert!(status(&db)["cutover"]["pause_ms"].as_f64().is_some());
    assert!(cli(&src, &db, &["rollback"], None).status.success());
    assert!(status(&db)["cutover"].is_null(), "{}", status(&db));
    Connection::open(&src)
        .unwrap()
        .execute_batch("UPDATE users SET display_name = 'system of record' WHERE id = 1")
        .expect("SQLite takes writes again");
}
