//! Issue 5: "a very large transaction (100k rows) must not blow memory". One source transaction
//! of 115k changes (inserts, updates, deletes across two tables linked by a foreign key) is one
//! consistent state, so it is applied in one PostgreSQL transaction; capture and apply stream it
//! in chunks. These tests run the real `sqlite2pg sync --catch-up` and check its peak memory,
//! and kill it in the middle of the stream.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use rusqlite::Connection;

use crate::snapshot::{options, query, snapshot};
use crate::support::pg::TestDb;
use crate::support::temp_dir;
use crate::sync::assert_identical;

/// Rows each table starts with, and what the one big transaction does.
const START_ROWS: i64 = 20_000;
const NEW_PARENTS: i64 = 50_000;
const UPDATED_CHILDREN: i64 = 10_000;
const DELETED_PARENTS: i64 = 2_500;
/// Changes (distinct keys) of the big transaction: new parents, one new child per new parent,
/// updated children, deleted parents and their children.
const CHANGES: i64 = NEW_PARENTS * 2 + UPDATED_CHILDREN + DELETED_PARENTS * 2;
/// The batch size the tests run sync with: the transaction is 23 times larger.
const BATCH: &str = "5000";
/// Bytes of text each new or updated child carries.
const NOTE_BYTES: usize = 500;

/// A snapshotted source, then one transaction of [`CHANGES`] changes (about 30 MB of notes).
/// The parents it deletes come before their children in seq order, so no chunk is consistent
/// on its own: PostgreSQL's deferred foreign keys see only the final state.
fn big_transaction(dir: &Path, db: &TestDb) -> PathBuf {
    let src = source(dir, db);
    write(&src, 1, NEW_PARENTS, UPDATED_CHILDREN, DELETED_PARENTS);
    src
}

/// Two tables of [`START_ROWS`] rows linked by a foreign key, snapshotted.
fn source(dir: &Path, db: &TestDb) -> PathBuf {
    let src = dir.join("big.db");
    let conn = Connection::open(&src).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE parents (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE children (id INTEGER PRIMARY KEY,
             parent_id INTEGER NOT NULL REFERENCES parents(id), note TEXT);
         CREATE INDEX children_parent ON children(parent_id);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {START_ROWS})
         INSERT INTO parents SELECT i, 'parent ' || i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {START_ROWS})
         INSERT INTO children SELECT i, i, 'child ' || i FROM n;"
    ))
    .unwrap();
    drop(conn);
    snapshot(&src, db, &options()).expect("snapshot");
    src
}

/// One source transaction: deletes parents `from..` (`deleted` of them), adds `added` parents
/// (ids after every existing one) with a child each, gives `updated` children a new note, and
/// deletes the deleted parents' children.
fn write(src: &Path, from: i64, added: i64, updated: i64, deleted: i64) {
    let conn = Connection::open(src).unwrap();
    let note = format!("replace(hex(zeroblob({})), '0', 'n')", NOTE_BYTES / 2);
    let first_new: i64 = conn
        .query_row("SELECT max(id) + 1 FROM parents", [], |r| r.get(0))
        .unwrap();
    let last_new = first_new + added - 1;
    let last_deleted = from + deleted - 1;
    conn.execute_batch(&format!(
        "PRAGMA foreign_keys = OFF;
         BEGIN;
         DELETE FROM parents WHERE id BETWEEN {from} AND {last_deleted};
         WITH RECURSIVE n(i) AS (SELECT {first_new} UNION ALL SELECT i + 1 FROM n WHERE i < {last_new})
         INSERT INTO parents SELECT i, 'new parent ' || i FROM n;
         WITH RECURSIVE n(i) AS (SELECT {first_new} UNION ALL SELECT i + 1 FROM n WHERE i < {last_new})
         INSERT INTO children SELECT i, i, {note} || i FROM n;
         UPDATE children SET note = {note} || 'u'
             WHERE id > {START_ROWS} - {updated} - {from} AND id <= {START_ROWS} - {from};
         DELETE FROM children WHERE parent_id BETWEEN {from} AND {last_deleted};
         COMMIT;"
    ))
    .unwrap();
}

/// `sqlite2pg sync --catch-up --batch-size 5000` as a child, optionally with a fault point
/// armed; returns how it ended, its stderr and its peak resident memory in KiB (from `wait4`,
/// which reports the child's `ru_maxrss`).
fn sync_child(
    src: &Path,
    db: &TestDb,
    fault: Option<&str>,
    dir: &Path,
) -> (ExitStatus, String, u64) {
    let err_path = dir.join("sync.stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sqlite2pg"));
    cmd.args(["--source", src.to_str().unwrap(), "sync", "--catch-up"])
        .args(["--batch-size", BATCH])
        .env("SQLITE2PG_TARGET", db.url_string())
        .env_remove("DATABASE_URL")
        .env(
            "RUST_LOG",
            "sqlite2pg::target::apply=debug,sqlite2pg::pipeline=debug",
        )
        .env_remove(sqlite2pg::fault::FAULT_ENV)
        .stdout(Stdio::null())
        .stderr(File::create(&err_path).unwrap());
    if let Some(f) = fault {
        cmd.env(sqlite2pg::fault::FAULT_ENV, f);
    }
    // Reaped by `wait4` below (for its rusage), not by `Child::wait`.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("spawn sqlite2pg sync");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain syscall on our own child; `rusage` is plain data.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 on the sync child");
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();

    (ExitStatus::from_raw(status), stderr, usage.ru_maxrss as u64)
}

fn applied(db: &TestDb) -> i64 {
    query(
        db,
        "SELECT coalesce((SELECT applied_seq FROM sqlite2pg.sync_state), 0)",
    )[0]
    .get(0)
}

fn count(db: &TestDb, table: &str) -> i64 {
    query(db, &format!("SELECT count(*) FROM public.{table}"))[0].get(0)
}

/// `log` with its ANSI colours removed.
fn plain(log: &str) -> String {
    log.split('\x1b')
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part
            } else {
                part.split_once('m').map_or("", |(_, rest)| rest)
            }
        })
        .collect()
}

/// The value of `field=` in the last line of `log` that has it (ANSI colours removed).
fn logged(log: &str, field: &str) -> Option<u64> {
    let plain = plain(log);
    let at = plain.rfind(&format!("{field}="))? + field.len() + 1;
    plain[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The 115k-change transaction is applied in one PostgreSQL transaction of 23 chunks of at
/// most `--batch-size` changes each (what apply holds at once), and sync's peak memory rises
/// above a sync of a 1k-change transaction by less than 1.5 KB per change. Before streaming, a
/// cycle's changes, their conversions and their verification were all held at once: about
/// 2 KB per change of the sample app (BENCHMARKS.md: 1428 MB for 745k changes), more for rows
/// this wide.
#[test]
fn a_100k_change_transaction_is_applied_whole_in_bounded_memory() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = source(dir.path(), &db);
    write(&src, 1, 400, 100, 50);
    let (status, stderr, small_kib) = sync_child(&src, &db, None, dir.path());
    assert!(status.success(), "{stderr}");
    write(&src, 51, NEW_PARENTS, UPDATED_CHILDREN, DELETED_PARENTS);
    let (status, stderr, big_kib) = sync_child(&src, &db, None, dir.path());
    assert!(status.success(), "{stderr}");
    let batch: u64 = BATCH.parse().unwrap();
    let (chunks, largest) = (logged(&stderr, "chunks"), logged(&stderr, "largest_chunk"));
    assert_eq!(chunks, Some((CHANGES as u64).div_ceil(batch)), "{stderr}");
    assert_eq!(largest, Some(batch), "{stderr}");
    // Apply started on the cycle while capture was still writing it (it takes far longer than
    // apply's 50 ms wait between looks), instead of after its boundary.
    assert!(plain(&stderr).contains("followed=true"), "{stderr}");
    let (small, big) = (small_kib >> 10, big_kib >> 10);
    eprintln!("sync peaked at {small} MiB for 1k changes, {big} MiB for {CHANGES} changes");
    let bound = (CHANGES as u64 * 1536) >> 20;
    assert!(
        big.saturating_sub(small) < bound,
        "a {CHANGES}-change transaction raised sync's peak from {small} to {big} MiB (bound: +{bound} MiB)"
    );
    assert_identical(&src, &db);
}

/// SIGABRT (like kill -9: no unwinding, no rollback) after two chunks of the transaction were
/// applied in PostgreSQL's open transaction: nothing of it is committed, the position has not
/// moved, and the next run applies it whole from the change log.
#[test]
fn a_crash_mid_stream_commits_nothing_and_the_next_run_applies_it_whole() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = big_transaction(dir.path(), &db);
    let before = (applied(&db), count(&db, "parents"), count(&db, "children"));
    let fault = format!("{}@2", sqlite2pg::fault::SYNC_MID_CHUNKED_APPLY);
    let (status, stderr, peak) = sync_child(&src, &db, Some(&fault), dir.path());
    eprintln!(
        "crashed after two chunks, having peaked at {} MiB",
        peak >> 10
    );
    assert!(
        !status.success() && stderr.contains("fault point sync.mid_chunked_apply hit"),
        "{status:?}: {stderr}"
    );
    assert_eq!(
        (applied(&db), count(&db, "parents"), count(&db, "children")),
        before,
        "a crash mid-stream must leave PostgreSQL as it was"
    );
    let (status, stderr, _) = sync_child(&src, &db, None, dir.path());
    assert!(status.success(), "{stderr}");
    assert!(applied(&db) > before.0);
    assert_identical(&src, &db);
}

/// SIGABRT in the middle of capturing the transaction (40 of its 115 chunks of images are in
/// the change log, without a boundary): nothing reaches PostgreSQL, and the next run discards
/// the partial cycle, captures it again whole and applies it once.
#[test]
fn a_crash_mid_capture_of_a_huge_transaction_loses_and_duplicates_nothing() {
    let dir = temp_dir();
    let db = TestDb::new();
    let src = big_transaction(dir.path(), &db);
    let before = (applied(&db), count(&db, "parents"), count(&db, "children"));
    let fault = format!("{}@40", sqlite2pg::fault::CAPTURE_AFTER_CHUNK);
    let (status, stderr, _) = sync_child(&src, &db, Some(&fault), dir.path());
    assert!(
        !status.success() && stderr.contains("fault point capture.after_chunk hit"),
        "{status:?}: {stderr}"
    );
    assert_eq!(
        (applied(&db), count(&db, "parents"), count(&db, "children")),
        before
    );
    let (status, stderr, _) = sync_child(&src, &db, None, dir.path());
    assert!(status.success(), "{stderr}");
    assert_eq!(
        count(&db, "parents"),
        START_ROWS + NEW_PARENTS - DELETED_PARENTS
    );
    assert_identical(&src, &db);
}
