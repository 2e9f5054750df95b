//! `sqlite2pg status` from durable state: before sync, while it runs (another process), after a
//! clean stop, and after it was killed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::snapshot::{options, snapshot};
use crate::support::pg::TestDb;
use crate::support::{temp_dir, wait_until, ChildGuard};

pub fn status(src: &Path, db: &TestDb) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sqlite2pg"))
        .args(["--source", src.to_str().unwrap(), "status", "--json"])
        .env("SQLITE2PG_TARGET", db.url_string())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

#[test]
fn status_before_during_after_and_after_a_kill() {
    let dir = temp_dir();
    let src = dir.path().join("app.db");
    sqlite2pg::sample_app::generate(
        &src,
        &sqlite2pg::sample_app::GenerateOptions {
            scale: 0.001,
            seed: 2,
        },
    )
    .unwrap();
    let db = TestDb::new();
    snapshot(&src, &db, &options()).unwrap();
    let s = status(&src, &db);
    assert_eq!(s["snapshot"]["status"], "complete");
    assert_eq!(s["sync"]["state"], "never ran");

    let spawn = || {
        ChildGuard(
            Command::new(env!("CARGO_BIN_EXE_sqlite2pg"))
                .args(["--source", src.to_str().unwrap(), "sync"])
                .env("SQLITE2PG_TARGET", db.url_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut sync = spawn();
    wait_until(Duration::from_secs(20), "status says running", || {
        status(&src, &db)["sync"]["state"] == "running"
    });
    rusqlite::Connection::open(&src)
        .unwrap()
        .execute_batch("UPDATE users SET display_name = 'seen' WHERE id = 1")
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the change is applied and lag is 0",
        || {
            let s = status(&src, &db);
            s["sync"]["lag_changes"] == 0 && s["sync"]["changes_applied"].as_i64().unwrap_or(0) > 0
        },
    );
    // A clean stop (SIGTERM: finish the batch, exit 0) says stopped.
    unsafe { libc::kill(sync.id() as libc::pid_t, libc::SIGTERM) };
    assert!(sync.wait().unwrap().success());
    assert_eq!(status(&src, &db)["sync"]["state"], "stopped");
    // A SIGKILL says died, never running.
    let mut sync = spawn();
    wait_until(Duration::from_secs(20), "running again", || {
        status(&src, &db)["sync"]["state"] == "running"
    });
    sync.kill().unwrap();
    sync.wait().unwrap();
    assert_eq!(status(&src, &db)["sync"]["state"], "died");
    // A sync that stops on an error says failed, with the error and its time.
    rusqlite::Connection::open(&src)
        .unwrap()
        .execute_batch("ALTER TABLE users DROP COLUMN last_login_at")
        .unwrap();
    let failed = spawn().wait().unwrap();
    assert!(!failed.success());
    let s = status(&src, &db);
    assert_eq!(s["sync"]["state"], "failed", "{s}");
    let error = &s["sync"]["heartbeat"]["status"]["last_error"];
    assert!(
        error["message"].as_str().unwrap().contains("last_login_at"),
        "{error}"
    );
    assert!(error["at"].as_str().is_some_and(|t| t.starts_with("20")));
}
