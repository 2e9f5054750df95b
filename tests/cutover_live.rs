//! Issue 6: `cutover` while `sync` runs (both as the real binary, under a live writer). The
//! running sync pauses for the cutover through the state directory (`cutover::handover`): a
//! completed cutover stops it (exit 0 by itself); an aborted one, or one that died, lets the
//! same sync process resume and keep following the application; a sync that dies while cutover
//! waits lets the cutover go on.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rusqlite::Connection;
use sqlite2pg::cutover::handover::{PAUSED, REQUEST_FILE};
use sqlite2pg::fault;
use sqlite2pg::sample_app::{LiveWriter, WriterOptions};

use crate::cutover::{cli, prepared};
use crate::snapshot::query;
use crate::status::status;
use crate::support::pg::TestDb;
use crate::support::{temp_dir, wait_until};
use crate::sync::{assert_identical, catch_up};

/// What the fence's error says.
const FENCED: &str = "migrated to PostgreSQL";

/// `sqlite2pg sync` as a child process; killed (by its PID) if the test fails before it exits.
struct SyncProcess {
    child: Option<Child>,
    pid: u32,
}

impl SyncProcess {
    fn start(src: &Path, db: &TestDb) -> SyncProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_sqlite2pg"))
            .args(["--source", src.to_str().unwrap(), "sync"])
            .env("SQLITE2PG_TARGET", db.url_string())
            .env_remove("DATABASE_URL")
            .env_remove(fault::FAULT_ENV)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sqlite2pg sync");
        let pid = child.id();
        let sync = SyncProcess {
            child: Some(child),
            pid,
        };
        sync.wait_running(src, db);
        sync
    }

    /// Waits until `status` says this very process is syncing (not paused, not another one).
    fn wait_running(&self, src: &Path, db: &TestDb) {
        wait_until(Duration::from_secs(30), "this sync runs", || {
            let s = status(src, db);
            s["sync"]["state"] == "running" && s["sync"]["heartbeat"]["pid"] == self.pid
        });
    }

    fn running(&mut self) -> bool {
        let child = self.child.as_mut().expect("the sync process");
        child
            .try_wait()
            .expect("look at the sync process")
            .is_none()
    }

    fn terminate(&self) {
        // SAFETY: sends SIGTERM to our own child, by its PID.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
    }

    /// Waits (bounded) for the process to exit by itself; its exit code and stderr.
    fn exited(mut self) -> (Option<i32>, String) {
        wait_until(Duration::from_secs(30), "the sync process exits", || {
            !self.running()
        });
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for SyncProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn writer(src: &Path) -> LiveWriter {
    let writer = LiveWriter::start(
        src,
        WriterOptions {
            rate_per_sec: 500.0,
            seed: 12,
        },
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the writer writes", || {
        writer.stats().transactions > 100
    });
    writer
}

fn triggers(src: &Path) -> Vec<String> {
    let conn = Connection::open(src).unwrap();
    let mut s = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'trigger' ORDER BY name")
        .unwrap();
    let names = s.query_map([], |r| r.get(0)).unwrap();
    names.map(Result::unwrap).collect()
}

/// Writes a row the live writer never touches and waits until PostgreSQL holds it: the sync
/// is applying again.
fn assert_sync_follows(src: &Path, db: &TestDb, key: &str) {
    Connection::open(src)
        .unwrap()
        .execute(
            "INSERT INTO app_state (key, value) VALUES (?1, '{\"after\": \"cutover\"}')",
            [key],
        )
        .unwrap();
    let sql = format!("SELECT count(*) FROM public.app_state WHERE key = '{key}'");
    wait_until(
        Duration::from_secs(30),
        "the sync applies a new write",
        || query(db, &sql)[0].get::<_, i64>(0) == 1,
    );
}

fn request_file(src: &Path) -> std::path::PathBuf {
    src.with_file_name("app.db.sqlite2pg").join(REQUEST_FILE)
}

/// Stops the sync with SIGTERM (exit 0), then the writer, and checks both sides are identical.
fn stop_and_diff(sync: SyncProcess, writer: LiveWriter, src: &Path, db: &TestDb) {
    sync.terminate();
    let (code, stderr) = sync.exited();
    assert_eq!(code, Some(0), "{stderr}");
    writer.stop().expect("the writer was never refused");
    catch_up(src, db);
    assert_identical(src, db);
}

#[test]
fn cutover_while_sync_runs_pauses_it_completes_and_the_sync_exits_by_itself() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = prepared(dir.path(), &db);
    let writer = writer(&src);
    let sync = SyncProcess::start(&src, &db);
    let out = cli(&src, &db, &["-v", "cutover"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cutover: {stderr}");
    assert!(stderr.contains("asked it to pause"), "{stderr}");
    let (code, sync_stderr) = sync.exited();
    assert_eq!(code, Some(0), "{sync_stderr}");
    assert!(
        sync_stderr.contains("cutover completed; sync stopped"),
        "{sync_stderr}"
    );
    let err = writer.stop().expect_err("the fence stops the writer");
    assert!(format!("{err:?}").contains(FENCED), "{err:?}");
    let refused = Connection::open(&src)
        .unwrap()
        .execute("UPDATE users SET display_name = 'late' WHERE id = 1", [])
        .unwrap_err();
    assert!(refused.to_string().contains(FENCED), "{refused}");
    assert_identical(&src, &db);
    assert!(!request_file(&src).exists(), "the request is withdrawn");
    assert_eq!(status(&src, &db)["sync"]["state"], "stopped");
}

#[test]
fn a_cutover_aborted_by_its_pause_bound_leaves_the_same_sync_running() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = prepared(dir.path(), &db);
    let writer = writer(&src);
    let mut sync = SyncProcess::start(&src, &db);
    let before = triggers(&src);
    let out = cli(&src, &db, &["cutover", "--max-pause-ms", "1"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("aborted"), "{stderr}");
    assert_eq!(triggers(&src), before, "no fence, capture still installed");
    let written = writer.stats().transactions;
    wait_until(Duration::from_secs(10), "the writer keeps writing", || {
        writer.stats().transactions > written + 50
    });
    sync.wait_running(&src, &db);
    assert!(sync.running(), "the same sync process goes on");
    assert_sync_follows(&src, &db, "after an aborted cutover");
    assert!(!request_file(&src).exists(), "the request is withdrawn");
    stop_and_diff(sync, writer, &src, &db);
}

#[test]
fn a_sync_paused_for_a_cutover_that_dies_resumes_by_itself() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = prepared(dir.path(), &db);
    let writer = writer(&src);
    let mut sync = SyncProcess::start(&src, &db);
    // A request from a live process (this test) pauses sync, and `status` says so; withdrawn
    // with SQLite not fenced, the sync resumes.
    let request = serde_json::json!({"pid": std::process::id(), "requested_at": "now"});
    std::fs::write(request_file(&src), request.to_string()).unwrap();
    wait_until(Duration::from_secs(30), "status says paused", || {
        status(&src, &db)["sync"]["state"] == PAUSED
    });
    std::fs::remove_file(request_file(&src)).unwrap();
    sync.wait_running(&src, &db);
    // A cutover killed (abort, like kill -9) after draining, while sync is paused for it.
    let point = fault::CUTOVER_AFTER_BACKLOG;
    let out = cli(&src, &db, &["cutover"], Some(point));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&format!("fault point {point} hit")),
        "{stderr}"
    );
    sync.wait_running(&src, &db);
    assert!(sync.running(), "the same sync process goes on");
    assert!(
        !request_file(&src).exists(),
        "the dead cutover's request is removed"
    );
    assert_sync_follows(&src, &db, "after a dead cutover");
    stop_and_diff(sync, writer, &src, &db);
}

/// A sync that dies while cutover waits for it to pause must not make cutover wait out its
/// bound: here the "sync" is a process that never answers (its heartbeat says running), and
/// cutover goes on as with sync stopped once that process is gone.
#[test]
fn a_sync_that_dies_while_cutover_waits_lets_the_cutover_go_on() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = prepared(dir.path(), &db);
    let state_dir = src.with_file_name("app.db.sqlite2pg");
    let mut silent = Command::new("sleep").arg("60").spawn().unwrap();
    sqlite2pg::status::write_heartbeat(&state_dir, "now", "running", &Default::default()).unwrap();
    let beat = state_dir.join("sync-heartbeat.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&beat).unwrap()).unwrap();
    json["pid"] = silent.id().into();
    std::fs::write(&beat, json.to_string()).unwrap();
    let cutover = Command::new(env!("CARGO_BIN_EXE_sqlite2pg"))
        .args(["--source", src.to_str().unwrap(), "cutover"])
        .env("SQLITE2PG_TARGET", db.url_string())
        .env_remove("DATABASE_URL")
        .env_remove(fault::FAULT_ENV)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "cutover asks the sync", || {
        request_file(&src).exists()
    });
    silent.kill().unwrap();
    silent.wait().unwrap();
    let out = cutover.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!request_file(&src).exists(), "the request is withdrawn");
    assert_identical(&src, &db);
}
