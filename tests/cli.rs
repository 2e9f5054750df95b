//! The `sqlite2pg` binary as users run it: exit codes, one-paragraph errors for hostile input
//! (not SQLite, corrupt, unreachable target, wrong password) that never panic and never show a
//! password, JSON output, and the built-in demo.

use std::path::Path;
use std::process::{Command, Output};

use crate::check::real_db;
use crate::support::pg::TestDb;
use crate::support::temp_dir;

fn sqlite2pg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sqlite2pg"))
        .args(args)
        .env_remove("SQLITE2PG_TARGET")
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run sqlite2pg")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a failure with `code` whose stderr is a clear error (no panic) containing `needle`.
fn assert_fails(out: &Output, code: i32, needle: &str) -> String {
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {err}\nstdout: {}",
        text(&out.stdout)
    );
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn check_args(source: &Path) -> Vec<String> {
    vec![
        "--source".into(),
        source.display().to_string(),
        "check".into(),
    ]
}

fn run(args: &[String]) -> Output {
    sqlite2pg(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn help_documents_exit_codes_and_usage_errors_exit_2() {
    let out = sqlite2pg(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for needle in [
        "Exit codes",
        "3  finished, but the data needs attention",
        "--state-dir",
        "check",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }
    assert_fails(
        &sqlite2pg(&["check", "--no-such-flag"]),
        2,
        "--no-such-flag",
    );
    assert_fails(&sqlite2pg(&["check"]), 2, "--source");
}

#[test]
fn not_sqlite_empty_and_missing_files_are_clear_errors() {
    let dir = temp_dir();
    let not_db = dir.path().join("notes.txt");
    std::fs::write(&not_db, "these are my notes, not a database\n".repeat(50)).unwrap();
    assert_fails(&run(&check_args(&not_db)), 1, "is not a SQLite database");
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert_fails(&run(&check_args(&empty)), 1, "the file is empty");
    assert_fails(
        &run(&check_args(&dir.path().join("missing.db"))),
        1,
        "missing.db",
    );
}

#[test]
fn corrupt_file_fails_with_what_to_do() {
    let (_dir, db) = real_db("chinook__Chinook_Sqlite.sqlite");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in &mut bytes[4096 * 20..4096 * 24] {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes).unwrap();
    let out = run(&check_args(&db));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("corrupt") || all.contains("integrity_check failed"),
        "{all}"
    );
    assert!(
        all.contains("backup") || all.contains(".recover"),
        "says what to do: {all}"
    );
    assert!(!all.contains("panicked"));
}

#[test]
fn unreachable_target_and_wrong_password_never_show_the_password() {
    let (_dir, db) = real_db("northwind__northwind.db");
    let mut args = vec![
        "--target".to_string(),
        "postgres://app:s3cret-pw@127.0.0.1:1/app".to_string(),
    ];
    args.extend(check_args(&db));
    let err = assert_fails(&run(&args), 1, "cannot connect to PostgreSQL");
    assert!(!err.contains("s3cret-pw"), "{err}");
    assert!(err.contains("hint:"), "{err}");

    let test_db = TestDb::new();
    let url = test_db.url_string();
    let wrong = url.replacen("://postgres:", "://postgres:Wr0ng-Passw0rd", 1);
    assert_ne!(
        wrong,
        url,
        "the harness URL carries a password: {}",
        test_db.url().redacted()
    );
    let mut args = vec!["--target".to_string(), wrong];
    args.extend(check_args(&db));
    let err = assert_fails(&run(&args), 1, "password authentication failed");
    assert!(!err.contains("Wr0ng-Passw0rd"), "{err}");
    assert!(err.lines().count() <= 5, "one paragraph: {err}");
}

#[test]
fn json_report_and_config_file_errors() {
    let (dir, db) = real_db("northwind__northwind.db");
    let mut args = check_args(&db);
    args.push("--json".into());
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(report["tables"].as_array().unwrap().len(), 13);
    assert_eq!(report["target"]["status"], "not_checked");

    let toml = dir.path().join("bad.toml");
    std::fs::write(&toml, "shema = \"public\"\n").unwrap();
    let mut args = vec!["--config".to_string(), toml.display().to_string()];
    args.extend(check_args(&db));
    assert_fails(&run(&args), 2, "shema");
}

#[test]
fn demo_walks_check_snapshot_sync_diff_with_a_private_postgres() {
    let dir = temp_dir();
    let work = dir.path().join("demo");
    let out = sqlite2pg(&[
        "demo",
        "--scale",
        "0.001",
        "--rate",
        "100",
        "--sync-seconds",
        "2",
        "--dir",
        work.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    for needle in [
        "sample app database",
        "private PostgreSQL",
        "TARGET  postgres://",
        "BACKUP",
        "VERDICT: ready",
        "validate: every table holds",
        "sync: applied seq",
        "live writer stopped",
        "VERDICT: IDENTICAL",
        "sign-off report:",
        "writers paused",
        "migrated to PostgreSQL",
        "PostgreSQL: the same INSERT succeeded",
    ] {
        assert!(
            stdout.contains(needle),
            "demo output lacks {needle:?}:\n{stdout}"
        );
    }
    assert!(work.join("state").is_dir());
    assert!(work.join("state/diff-report.html").is_file());
}
