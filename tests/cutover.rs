//! `sqlite2pg cutover` under a live writer: the pause is reported, PostgreSQL ends identical to
//! the frozen SQLite, identities continue past SQLite's ids, and the fence makes the old
//! database refuse writes; a cutover aborted by its pause bound leaves SQLite untouched.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use sqlite2pg::cutover::{run_cutover, CutoverOptions};
use sqlite2pg::sample_app::{generate, GenerateOptions, LiveWriter, WriterOptions};

use crate::snapshot::{block_on, execute, options, query, snapshot};
use crate::support::pg::TestDb;
use crate::support::{temp_dir, wait_until};
use crate::sync::{assert_identical, catch_up, config};

pub fn prepared(dir: &Path, db: &TestDb) -> std::path::PathBuf {
    let src = generated(dir);
    snapshot(&src, db, &options()).unwrap();
    src
}

/// Cutover options with pause bound `max_pause`, a generous lag bound and no row diff.
fn pausing(max_pause: Duration) -> CutoverOptions {
    CutoverOptions {
        max_pause,
        max_lag: 100_000,
        full_verify: false,
        verify_changed: false,
    }
}

/// A small sample app database, `app.db` in `dir`.
fn generated(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("app.db");
    generate(
        &src,
        &GenerateOptions {
            scale: 0.002,
            seed: 4,
        },
    )
    .unwrap();
    src
}

#[test]
fn cutover_under_a_live_writer_freezes_drains_fences_and_reports_the_pause() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = prepared(dir.path(), &db);
    let writer = LiveWriter::start(
        &src,
        WriterOptions {
            rate_per_sec: 500.0,
            seed: 6,
        },
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the writer writes", || {
        writer.stats().transactions > 100
    });
    catch_up(&src, &db);
    let report =
        run_cutover(&config(&src, &db), &pausing(Duration::from_secs(5))).expect("cutover");
    let pause = report
        .pause_ms
        .expect("a cutover that freezes reports its pause");
    assert!(pause > 0.0 && pause < 5000.0, "{report:?}");
    let steps: Vec<&str> = report
        .freeze_steps
        .iter()
        .map(|s| s.step.as_str())
        .collect();
    assert_eq!(
        steps,
        [
            "lock taken",
            "drained",
            "verified",
            "identities moved",
            "fenced",
            "released"
        ]
    );
    assert!(!report.resumed);
    let err = writer.stop().expect_err("the fence stops the writer");
    assert!(
        err.to_string().contains("migrated to PostgreSQL")
            || format!("{err:?}").contains("migrated to PostgreSQL"),
        "{err:?}"
    );
    let app = Connection::open(&src).unwrap();
    let refused = app
        .execute("UPDATE users SET display_name = 'late' WHERE id = 1", [])
        .unwrap_err();
    assert!(
        refused.to_string().contains("migrated to PostgreSQL"),
        "{refused}"
    );
    assert_identical(&src, &db);
    let max_id: i64 = app
        .query_row("SELECT max(id) FROM jobs", [], |r| r.get(0))
        .unwrap();
    let new_id: i64 = query(&db, "INSERT INTO jobs (kind, status, attempts, created_at) VALUES ('x', 'queued', 0, now()) RETURNING id")[0].get(0);
    assert!(
        new_id > max_id,
        "a fresh id in PostgreSQL ({new_id}) continues after SQLite's {max_id}"
    );
}

#[test]
fn a_cutover_over_its_pause_bound_aborts_and_leaves_sqlite_untouched() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = prepared(dir.path(), &db);
    let app = Connection::open(&src).unwrap();
    app.execute_batch("UPDATE users SET display_name = 'pending' WHERE id <= 5")
        .unwrap();
    let triggers = |c: &Connection| -> Vec<String> {
        let mut s = c
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'trigger' ORDER BY name")
            .unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let before = triggers(&app);
    let err = run_cutover(&config(&src, &db), &pausing(Duration::from_millis(1))).unwrap_err();
    assert!(err.to_string().contains("aborted"), "{err}");
    assert_eq!(triggers(&app), before, "no fence, capture still installed");
    app.execute_batch("UPDATE users SET display_name = 'after abort' WHERE id = 6")
        .expect("writes still work");
    catch_up(&src, &db);
    assert_identical(&src, &db);
}

/// Holds `lock` (a `LOCK TABLE …` statement) in a transaction of its own on `db` until the
/// returned sender is used or dropped (30 s at most).
fn hold_lock(
    db: &TestDb,
    lock: &'static str,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (locked_tx, locked) = std::sync::mpsc::channel::<()>();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let url = db.url().clone();
    let holder = std::thread::spawn(move || {
        block_on(async {
            let mut client = url.connect().await.unwrap();
            let tx = client.transaction().await.unwrap();
            tx.batch_execute(lock).await.unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
            tx.rollback().await.unwrap();
        })
    });
    locked.recv().unwrap();
    (release, holder)
}

/// A lock held in PostgreSQL must not hold the application's writers past the pause bound: the
/// frozen statements are bounded too (here `count(*)` would wait on the lock), so the cutover
/// aborts at the bound with SQLite untouched, and succeeds once the lock is gone.
#[test]
fn a_lock_held_in_postgresql_aborts_the_cutover_at_its_pause_bound() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = prepared(dir.path(), &db);
    let (release, holder) = hold_lock(&db, "LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE");
    let started = std::time::Instant::now();
    let err = run_cutover(&config(&src, &db), &pausing(Duration::from_millis(1500))).unwrap_err();
    let took = started.elapsed();
    release.send(()).unwrap();
    holder.join().unwrap();
    assert!(err.to_string().contains("aborted"), "{err}");
    assert!(
        took < Duration::from_secs(10),
        "the cutover held writers {took:?} behind PostgreSQL's lock"
    );
    Connection::open(&src)
        .unwrap()
        .execute_batch("UPDATE users SET display_name = 'not frozen' WHERE id = 1")
        .expect("writers are released and SQLite is not fenced");
    run_cutover(&config(&src, &db), &pausing(Duration::from_millis(1500)))
        .expect("cutover once the lock is gone");
    assert_identical(&src, &db);
}

/// Moving identities must not lock their tables: `ALTER TABLE … RESTART` waited, writers
/// frozen, behind the autovacuum that follows a snapshot until PostgreSQL cancelled it after
/// `deadlock_timeout` (1 s in 3 of 10 runs of the cutover bench at scale 1). Autovacuum's lock
/// is SHARE UPDATE EXCLUSIVE.
#[test]
fn an_autovacuum_lock_does_not_delay_moving_identities() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = prepared(dir.path(), &db);
    let (release, holder) = hold_lock(&db, "LOCK TABLE public.jobs IN SHARE UPDATE EXCLUSIVE MODE");
    let report = run_cutover(&config(&src, &db), &pausing(Duration::from_millis(1500)));
    release.send(()).unwrap();
    holder.join().unwrap();
    let report = report.expect("cutover while a table is being vacuumed");
    assert!(
        report.identities.iter().any(|(t, _)| t == "jobs"),
        "{report:?}"
    );
    assert_identical(&src, &db);
}

/// The `sqlite2pg` binary on `src` and `db`, with `fault` armed (a crash test's victim).
pub fn cli(src: &Path, db: &TestDb, args: &[&str], fault: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sqlite2pg"));
    cmd.arg("--source")
        .arg(src)
        .args(args)
        .env("SQLITE2PG_TARGET", db.url_string())
        .env_remove("DATABASE_URL");
    cmd.env_remove(sqlite2pg::fault::FAULT_ENV);
    if let Some(f) = fault {
        cmd.env(sqlite2pg::fault::FAULT_ENV, f);
    }
    cmd.output().expect("run sqlite2pg")
}

/// A row PostgreSQL changes behind sync's back (here a trigger in the target) fails the key
/// verification of cutover's drain: the cutover stops naming the table and key, SQLite stays the
/// system of record, and the key is re-enqueued so the next sync repairs it.
#[test]
fn a_row_changed_behind_syncs_back_stops_the_cutover() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = prepared(dir.path(), &db);
    execute(
        &db,
        "CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.display_name = 'checked' THEN NEW.display_name := 'tampered'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER tamper BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION tamper();",
    );
    let app = Connection::open(&src).unwrap();
    app.execute_batch("UPDATE users SET display_name = 'checked' WHERE id = 3")
        .unwrap();
    let err = run_cutover(&config(&src, &db), &pausing(Duration::from_secs(5)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("users") && err.contains("key 3") && err.contains("re-enqueued"),
        "{err}"
    );
    let fence: i64 = app
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND sql LIKE '%RAISE%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(fence, 0, "no fence: SQLite is still the system of record");
    app.execute_batch("UPDATE users SET locale = 'fr' WHERE id = 4")
        .expect("writes still work");
    execute(&db, "DROP TRIGGER tamper ON users");
    catch_up(&src, &db);
    assert_identical(&src, &db);
}

/// `--full-verify`: the diff of every row runs while writers are frozen; identical → its HTML
/// sign-off report is in the state directory and named by the report; a row changed in
/// PostgreSQL behind sync's back (row counts still equal, no change captured for it) aborts the
/// cutover and leaves SQLite unfenced.
#[test]
fn full_verify_diffs_every_row_while_frozen_and_aborts_on_a_difference() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = prepared(dir.path(), &db);
    let opts = CutoverOptions {
        full_verify: true,
        ..pausing(Duration::from_secs(30))
    };
    execute(&db, "UPDATE users SET locale = 'tampered' WHERE id = 2");
    let err = run_cutover(&config(&src, &db), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("full diff found differences"), "{err}");
    let app = Connection::open(&src).unwrap();
    app.execute_batch("UPDATE users SET locale = 'de' WHERE id = 2")
        .expect("not fenced: SQLite still takes writes");
    catch_up(&src, &db);
    let report = run_cutover(&config(&src, &db), &opts).expect("cutover");
    let full = report.full_diff.expect("--full-verify reports its diff");
    let html = std::fs::read_to_string(&full.html).unwrap();
    assert!(html.contains("IDENTICAL"), "{}", full.html.display());
    assert!(report.freeze_steps.iter().any(|s| s.step == "verified"));
    assert!(app
        .execute_batch("UPDATE users SET locale = 'x' WHERE id = 2")
        .is_err());
}

/// `--verify-changed`: while frozen, only the rows changed since each table's baseline (the
/// snapshot's --validate) are diffed; a changed row altered in PostgreSQL aborts the cutover, and
/// the table that differed is diffed whole next time.
#[test]
fn verify_changed_diffs_the_changed_rows_while_frozen_and_aborts_on_a_difference() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = prepared(dir.path(), &db);
    let opts = CutoverOptions {
        verify_changed: true,
        ..pausing(Duration::from_secs(30))
    };
    let app = Connection::open(&src).unwrap();
    app.execute_batch("UPDATE jobs SET status = status WHERE id IN (1, 2, 3)")
        .unwrap();
    catch_up(&src, &db);
    execute(&db, "UPDATE jobs SET kind = 'tampered' WHERE id = 2");
    let err = run_cutover(&config(&src, &db), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("diff of the changed rows found differences"),
        "{err}"
    );
    app.execute_batch(
        "UPDATE jobs SET status = status WHERE id = 2; UPDATE users SET locale = 'de' WHERE id = 4;",
    )
    .expect("not fenced: SQLite still takes writes");
    catch_up(&src, &db);
    let report = run_cutover(&config(&src, &db), &opts).expect("cutover");
    let verified = report.full_diff.expect("--verify-changed reports its diff");
    // users: the one row changed since the first cutover's diff; jobs (which differed then) whole.
    assert_eq!(verified.changed_rows_checked, Some(1));
    let html = std::fs::read_to_string(&verified.html).unwrap();
    assert!(html.contains("IDENTICAL"), "{}", verified.html.display());
    assert!(html.contains("changed rows only: 1 checked"), "{html}");
    assert!(app
        .execute_batch("UPDATE users SET locale = 'x' WHERE id = 4")
        .is_err());
}

/// Rollback after a cutover lists what PostgreSQL received after the switch (those writes are
/// not in SQLite), from the transaction id the cutover recorded.
#[test]
fn rollback_after_a_cutover_lists_the_writes_postgresql_received_since() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = prepared(dir.path(), &db);
    let report =
        run_cutover(&config(&src, &db), &pausing(Duration::from_secs(5))).expect("cutover");
    assert!(report.target_xid.is_some());
    execute(
        &db,
        "UPDATE users SET locale = 'after-switch' WHERE id = 2; \
                 INSERT INTO users (email, created_at) VALUES ('new@example.com', now())",
    );
    let out = cli(&src, &db, &["rollback"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("writes after the cutover in users: 2 row(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("after-switch") && stdout.contains("new@example.com"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("in jobs:"),
        "untouched tables are not listed: {stdout}"
    );
}

/// A row quarantined by the snapshot (NUL in text) that the application fixes later arrives
/// through sync; its quarantine record stays as history, and must not make the cutover's row
/// counts disagree. The counts still catch a row PostgreSQL holds beyond SQLite's, and one it
/// lacks beyond the quarantined keys.
#[test]
fn a_quarantined_row_fixed_later_does_not_stop_the_cutover() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = generated(dir.path());
    let app = Connection::open(&src).unwrap();
    app.execute_batch("UPDATE users SET display_name = 'a' || char(0) || 'b' WHERE id = 5")
        .unwrap();
    let _ = snapshot(&src, &db, &options());
    let quarantined: i64 = query(&db, "SELECT count(*) FROM sqlite2pg.quarantine")[0].get(0);
    assert_eq!(quarantined, 1, "the NUL row is quarantined");
    app.execute_batch("UPDATE users SET display_name = 'fixed' WHERE id = 5")
        .unwrap();
    let cutover = || run_cutover(&config(&src, &db), &pausing(Duration::from_secs(5)));
    execute(
        &db,
        "INSERT INTO users (id, email, created_at, is_admin) VALUES (100000, 'extra@x', now(), false)",
    );
    let err = cutover().unwrap_err().to_string();
    assert!(err.contains("SQLite holds 20 rows, PostgreSQL 21"), "{err}");
    execute(&db, "DELETE FROM users WHERE id = 100000");
    let key: String = app
        .query_row("SELECT key FROM app_state ORDER BY key LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    execute(&db, &format!("DELETE FROM app_state WHERE key = '{key}'"));
    let err = cutover().unwrap_err().to_string();
    assert!(
        err.contains("app_state") && err.contains("+0 quarantined"),
        "{err}"
    );
    // Touching the row in SQLite makes sync send it again.
    app.execute("UPDATE app_state SET value = value WHERE key = ?1", [&key])
        .unwrap();
    cutover().expect("the fixed row arrived, so the counts agree");
    assert_identical(&src, &db);
}
