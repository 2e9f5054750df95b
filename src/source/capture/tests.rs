//! Tests of change capture: the application writes through its own connection (or the system
//! `sqlite3` binary) while a [`Capturer`] reads, on real SQLite files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rusqlite::Connection;

use super::*;
use crate::error::ErrorKind;
use crate::source::introspect::read_schema;

/// The system SQLite shell (Debian's 3.40): an older SQLite than the bundled one, like an app's.
const SYSTEM_SQLITE: &str = "/usr/bin/sqlite3";

struct App {
    _dir: tempfile::TempDir,
    path: PathBuf,
    conn: Connection,
}

impl App {
    /// A WAL-mode application database with `schema`, capture installed on every table.
    fn new(schema: &str) -> App {
        let app = App::bare(schema, "wal");
        install(&app.conn, &app.path, &app.tables()).unwrap();
        app
    }

    fn bare(schema: &str, journal_mode: &str) -> App {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", journal_mode)
            .unwrap();
        conn.execute_batch(schema).unwrap();
        App {
            _dir: dir,
            path,
            conn,
        }
    }

    fn tables(&self) -> Vec<Table> {
        read_schema(&self.conn, &self.path).unwrap().tables
    }

    fn capturer(&self) -> Capturer {
        Capturer::open(&self.path, &self.tables()).unwrap()
    }

    fn exec(&self, sql: &str) {
        self.conn.execute_batch(sql).unwrap();
    }

    fn schema_text(&self) -> Vec<Option<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT sql FROM sqlite_schema ORDER BY rowid")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    /// The raw change rows after `after`: (op, key).
    fn logged(&self, after: u64) -> Vec<(String, String)> {
        let mut stmt = self
            .conn
            .prepare("SELECT op, key FROM _sqlite2pg_changes WHERE seq > ?1 ORDER BY seq")
            .unwrap();
        let rows = stmt
            .query_map([after as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }
}

/// One capture cycle, every change collected.
fn cycle(capturer: &mut Capturer, after: u64) -> (Option<Boundary>, Vec<Change>) {
    let mut changes = Vec::new();
    let boundary = capturer
        .capture(after, &mut |chunk| {
            changes.extend_from_slice(chunk);
            Ok(())
        })
        .unwrap();
    (boundary, changes)
}

fn int(i: i64) -> RawValue {
    RawValue::Integer(i)
}

fn text(s: &str) -> RawValue {
    RawValue::Text(s.as_bytes().to_vec())
}

fn change<'a>(changes: &'a [Change], table: &str, key: &[RawValue]) -> &'a Change {
    changes
        .iter()
        .find(|c| c.table == table && c.key == key)
        .unwrap_or_else(|| panic!("no change for {table} {key:?} in {changes:?}"))
}

const PEOPLE: &str = "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, score REAL);";

#[test]
fn insert_update_delete_are_captured_with_current_images() {
    let app = App::new(PEOPLE);
    let mut capturer = app.capturer();
    assert_eq!(cycle(&mut capturer, 0).0, None, "nothing written yet");
    app.exec("INSERT INTO people VALUES (1, 'ann', 1.5), (2, 'bob', NULL), (3, 'cy', 3.0);");
    let (boundary, changes) = cycle(&mut capturer, 0);
    let boundary = boundary.unwrap();
    assert_eq!(
        (boundary.end_seq, boundary.changes, changes.len()),
        (3, 3, 3)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (boundary.committed_at - now).abs() < 60.0,
        "{boundary:?} vs {now}"
    );
    let ann = change(&changes, "people", &[int(1)]);
    assert_eq!(
        ann.image,
        Some(vec![int(1), text("ann"), RawValue::Real(1.5)])
    );

    app.exec("UPDATE people SET name = 'bobby' WHERE id = 2; DELETE FROM people WHERE id = 3;");
    app.exec("UPDATE people SET score = 2.5 WHERE id = 2;");
    let (boundary, changes) = cycle(&mut capturer, boundary.end_seq);
    assert_eq!(
        boundary.unwrap().changes,
        2,
        "two updates of row 2 coalesce: {changes:?}"
    );
    let bob = change(&changes, "people", &[int(2)]);
    assert_eq!(
        bob.image,
        Some(vec![int(2), text("bobby"), RawValue::Real(2.5)])
    );
    assert_eq!(bob.seq, 6, "the last seq of the key");
    assert_eq!(change(&changes, "people", &[int(3)]).image, None);
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq), "seq order");
}

#[test]
fn update_changing_the_key_logs_a_delete_of_the_old_key() {
    let app = App::new(PEOPLE);
    app.exec("INSERT INTO people VALUES (1, 'ann', 1.0);");
    app.exec("UPDATE people SET id = 10 WHERE id = 1;");
    app.exec("UPDATE people SET name = 'anna' WHERE id = 10;");
    let ops: Vec<(String, String)> = app.logged(1);
    let expected = [("D", "1"), ("U", "10"), ("U", "10")];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(o, k)| (o.to_string(), k.to_string()))
        .collect();
    assert_eq!(ops, expected, "no delete when the key stays");
    let (_, changes) = cycle(&mut app.capturer(), 0);
    assert_eq!(change(&changes, "people", &[int(1)]).image, None);
    assert_eq!(
        change(&changes, "people", &[int(10)]).image,
        Some(vec![int(10), text("anna"), RawValue::Real(1.0)])
    );
}

#[test]
fn key_changing_only_under_its_collation_or_numeric_equality_deletes_the_old_key() {
    let app = App::new(
        "CREATE TABLE tags (name TEXT COLLATE NOCASE PRIMARY KEY, v);
         CREATE TABLE loose (k PRIMARY KEY, v);",
    );
    app.exec("INSERT INTO tags VALUES ('abc', 1); INSERT INTO loose VALUES (1, 'one');");
    let mut capturer = app.capturer();
    let end = cycle(&mut capturer, 0).0.unwrap().end_seq;
    app.exec("UPDATE tags SET name = 'ABC'; UPDATE loose SET k = 1.0;");
    let (_, changes) = cycle(&mut capturer, end);
    assert_eq!(changes.len(), 4, "{changes:?}");
    assert_eq!(change(&changes, "tags", &[text("abc")]).image, None);
    assert_eq!(
        change(&changes, "tags", &[text("ABC")]).image,
        Some(vec![text("ABC"), int(1)])
    );
    assert_eq!(change(&changes, "loose", &[int(1)]).image, None);
    assert_eq!(
        change(&changes, "loose", &[RawValue::Real(1.0)]).image,
        Some(vec![RawValue::Real(1.0), text("one")])
    );
}

#[test]
fn composite_keys_with_commas_quotes_and_blobs_round_trip() {
    let app = App::new("CREATE TABLE pairs (a TEXT, b INTEGER, c BLOB, v, PRIMARY KEY (a, b, c));");
    let mut insert = app
        .conn
        .prepare("INSERT INTO pairs VALUES (?1, ?2, ?3, ?4)")
        .unwrap();
    let weird = "it's, a\n'comma',,list''";
    insert
        .execute(rusqlite::params![weird, -5, vec![0u8, 0xff, b','], "v1"])
        .unwrap();
    insert
        .execute(rusqlite::params!["','", 7, Vec::<u8>::new(), "v2"])
        .unwrap();
    drop(insert);
    let mut capturer = app.capturer();
    let (boundary, changes) = cycle(&mut capturer, 0);
    let first_key = vec![text(weird), int(-5), RawValue::Blob(vec![0, 0xff, b','])];
    let first = change(&changes, "pairs", &first_key);
    assert_eq!(first.image.as_ref().unwrap()[3], text("v1"));
    let second_key = vec![text("','"), int(7), RawValue::Blob(vec![])];
    assert!(change(&changes, "pairs", &second_key).image.is_some());

    app.conn
        .execute("DELETE FROM pairs WHERE a = ?1", [weird])
        .unwrap();
    app.exec("UPDATE pairs SET v = 'v2b';");
    let (_, changes) = cycle(&mut capturer, boundary.unwrap().end_seq);
    assert_eq!(change(&changes, "pairs", &first_key).image, None);
    let second = change(&changes, "pairs", &second_key);
    assert_eq!(second.image.as_ref().unwrap()[3], text("v2b"));
}

#[test]
fn without_rowid_tables_are_keyed_by_their_primary_key() {
    let app = App::new("CREATE TABLE kv (k TEXT, n INTEGER, v, PRIMARY KEY (n, k)) WITHOUT ROWID;");
    app.exec("INSERT INTO kv VALUES ('a', 1, 'x'), ('b', 2, 'y');");
    app.exec("UPDATE kv SET v = 'z' WHERE k = 'a'; DELETE FROM kv WHERE k = 'b';");
    let (_, changes) = cycle(&mut app.capturer(), 0);
    assert_eq!(
        change(&changes, "kv", &[int(1), text("a")]).image,
        Some(vec![text("a"), int(1), text("z")])
    );
    assert_eq!(change(&changes, "kv", &[int(2), text("b")]).image, None);
}

#[test]
fn tables_without_primary_key_are_keyed_by_the_rowid_even_when_a_column_hides_it() {
    let app = App::new(
        "CREATE TABLE plain (x, y);
         CREATE TABLE shadowed (rowid TEXT, v);",
    );
    app.exec("INSERT INTO plain VALUES ('a', 1), ('b', 2); DELETE FROM plain WHERE x = 'a';");
    app.exec("INSERT INTO shadowed VALUES ('not the rowid', 1);");
    let triggers = table_triggers(&app.tables()[1]).unwrap();
    assert!(
        triggers[0].sql.contains("quote(NEW._rowid_)"),
        "{}",
        triggers[0].sql
    );
    let (_, changes) = cycle(&mut app.capturer(), 0);
    assert_eq!(change(&changes, "plain", &[int(1)]).image, None);
    assert_eq!(
        change(&changes, "plain", &[int(2)]).image,
        Some(vec![text("b"), int(2)])
    );
    assert_eq!(
        change(&changes, "shadowed", &[int(1)]).image,
        Some(vec![text("not the rowid"), int(1)])
    );
}

/// SQLite fires no delete trigger for a row evicted by REPLACE through a UNIQUE conflict (only
/// under `recursive_triggers`): capture sees the insert only, so apply must evict the row.
#[test]
fn insert_or_replace_evicting_through_unique_is_captured_as_the_insert_only() {
    let app = App::new("CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT UNIQUE);");
    app.exec("INSERT INTO accounts VALUES (1, 'a@x');");
    let mut capturer = app.capturer();
    let end = cycle(&mut capturer, 0).0.unwrap().end_seq;
    app.exec("INSERT OR REPLACE INTO accounts VALUES (2, 'a@x');");
    let remaining: i64 = app
        .conn
        .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(remaining, 1, "row 1 was evicted");
    let (_, changes) = cycle(&mut capturer, end);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].key, vec![int(2)]);
    assert_eq!(changes[0].image, Some(vec![int(2), text("a@x")]));
}

#[test]
fn delete_of_a_whole_table_logs_every_row() {
    let app = App::new(PEOPLE);
    app.exec("INSERT INTO people (name) VALUES ('a'), ('b'), ('c');");
    let mut capturer = app.capturer();
    let end = cycle(&mut capturer, 0).0.unwrap().end_seq;
    app.exec("DELETE FROM people;");
    let (_, changes) = cycle(&mut capturer, end);
    assert_eq!(changes.len(), 3);
    assert!(changes.iter().all(|c| c.image.is_none()));
}

#[test]
fn upsert_do_update_is_captured_as_an_update() {
    let app = App::new(PEOPLE);
    app.exec("INSERT INTO people VALUES (1, 'ann', 1.0);");
    app.exec(
        "INSERT INTO people VALUES (1, 'ann2', 2.0)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, score = excluded.score;",
    );
    assert_eq!(app.logged(1), vec![("U".to_string(), "1".to_string())]);
    let (_, changes) = cycle(&mut app.capturer(), 0);
    assert_eq!(
        changes[0].image,
        Some(vec![int(1), text("ann2"), RawValue::Real(2.0)])
    );
}

#[test]
fn rowid_reuse_after_delete_is_an_update_of_the_same_key() {
    let app = App::new(PEOPLE);
    app.exec("INSERT INTO people (name) VALUES ('a'), ('b'), ('c');");
    let mut capturer = app.capturer();
    let end = cycle(&mut capturer, 0).0.unwrap().end_seq;
    app.exec("DELETE FROM people WHERE id = 3; INSERT INTO people (name) VALUES ('new');");
    let (_, changes) = cycle(&mut capturer, end);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].key, vec![int(3)]);
    assert_eq!(
        changes[0].image,
        Some(vec![int(3), text("new"), RawValue::Null])
    );
}

/// Promise 2: every boundary is a consistent state — a transaction writing two tables is in
/// one cycle with both its rows, never split.
#[test]
fn transactions_touching_many_tables_are_captured_whole() {
    let app = App::new(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER);
         CREATE TABLE lines (id INTEGER PRIMARY KEY, order_id INTEGER, qty INTEGER);",
    );
    const TRANSACTIONS: i64 = 400;
    let path = app.path.clone();
    let writer = std::thread::spawn(move || {
        let mut conn = Connection::open(&path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        for i in 1..=TRANSACTIONS {
            let tx = conn.transaction().unwrap();
            tx.execute("INSERT INTO orders VALUES (?1, ?1 * 10)", [i])
                .unwrap();
            tx.execute("INSERT INTO lines VALUES (?1, ?1, 1)", [i])
                .unwrap();
            tx.execute("UPDATE orders SET total = total + 1 WHERE id = ?1 / 2", [i])
                .unwrap();
            tx.commit().unwrap();
        }
    });
    let mut capturer = app.capturer();
    let (mut after, mut cycles, mut seen) = (0, 0, BTreeSet::new());
    loop {
        let done = writer.is_finished();
        let (boundary, changes) = cycle(&mut capturer, after);
        if let Some(boundary) = boundary {
            cycles += 1;
            after = boundary.end_seq;
            let keys = |table: &str| -> BTreeSet<i64> {
                changes
                    .iter()
                    .filter(|c| c.table == table && c.image.is_some())
                    .map(|c| match c.key[..] {
                        [RawValue::Integer(i)] => i,
                        ref other => panic!("{other:?}"),
                    })
                    .collect()
            };
            let new_orders: BTreeSet<i64> = keys("orders")
                .into_iter()
                .filter(|i| !seen.contains(i))
                .collect();
            let lines = keys("lines");
            assert_eq!(new_orders, lines, "a cycle split a transaction");
            seen.extend(lines);
        } else if done {
            break;
        }
    }
    writer.join().unwrap();
    assert_eq!(seen.len() as i64, TRANSACTIONS);
    eprintln!("{TRANSACTIONS} transactions captured in {cycles} cycles");
}

#[test]
fn a_hundred_thousand_row_transaction_is_sunk_in_chunks_of_at_most_a_thousand() {
    const ROWS: i64 = 100_000;
    let app = App::new("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT, n INTEGER);");
    app.exec(&format!(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {ROWS})
         INSERT INTO events SELECT i, 'kind' || (i % 7), i * 3 FROM s;"
    ));
    let mut capturer = app.capturer();
    let (mut peak, mut total, mut next_id) = (0, 0, 1);
    let started = Instant::now();
    let boundary = capturer
        .capture(0, &mut |chunk| {
            peak = peak.max(chunk.len());
            total += chunk.len();
            for c in chunk {
                assert_eq!(c.key, vec![int(next_id)], "seq order");
                let expected = vec![
                    int(next_id),
                    text(&format!("kind{}", next_id % 7)),
                    int(next_id * 3),
                ];
                assert_eq!(c.image.as_ref(), Some(&expected));
                next_id += 1;
            }
            Ok(())
        })
        .unwrap()
        .unwrap();
    eprintln!("captured {ROWS} changes in {:?}", started.elapsed());
    assert_eq!(peak, CHUNK_ROWS);
    assert_eq!((total, boundary.changes), (ROWS as usize, ROWS as u64));
    assert_eq!(boundary.end_seq, ROWS as u64);
}

#[test]
fn triggers_run_on_the_system_sqlite3() {
    let app = App::new(
        "CREATE TABLE pairs (a TEXT, b INTEGER, v, PRIMARY KEY (a, b));
         CREATE TABLE plain (x);",
    );
    let script = "INSERT INTO pairs VALUES ('it''s,', 1, 'x'), ('b', 2, 'y');
        UPDATE pairs SET b = 3 WHERE a = 'b';
        DELETE FROM pairs WHERE a = 'it''s,';
        INSERT INTO plain VALUES (1.5);
        SELECT sqlite_version();";
    let out = std::process::Command::new(SYSTEM_SQLITE)
        .arg(&app.path)
        .arg(script)
        .output()
        .unwrap_or_else(|e| panic!("{SYSTEM_SQLITE} is needed (bin/set-up installs it): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "system sqlite3 {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let (_, changes) = cycle(&mut app.capturer(), 0);
    assert_eq!(changes.len(), 4, "{changes:?}");
    assert_eq!(
        change(&changes, "pairs", &[text("it's,"), int(1)]).image,
        None
    );
    assert_eq!(change(&changes, "pairs", &[text("b"), int(2)]).image, None);
    assert_eq!(
        change(&changes, "pairs", &[text("b"), int(3)]).image,
        Some(vec![text("b"), int(3), text("y")])
    );
    assert_eq!(
        change(&changes, "plain", &[int(1)]).image,
        Some(vec![RawValue::Real(1.5)])
    );
}

const ODD_NAMES: &str = r#"
    CREATE TABLE "we""ird 'tab,le ü" ("k ""1""" TEXT, "k,2" INTEGER, v, PRIMARY KEY ("k ""1""", "k,2"));
    CREATE TABLE plain (x);
    CREATE INDEX plain_x ON plain (x);
    CREATE VIEW plain_view AS SELECT x FROM plain;
    CREATE TRIGGER app_trigger AFTER INSERT ON plain BEGIN SELECT 1; END;
"#;

#[test]
fn uninstall_restores_the_schema_exactly() {
    let app = App::bare(ODD_NAMES, "wal");
    let before = app.schema_text();
    install(&app.conn, &app.path, &app.tables()).unwrap();
    assert_eq!(
        installed_tables(&app.conn).unwrap(),
        Some(vec!["plain".to_string(), "we\"ird 'tab,le ü".to_string()])
    );
    app.exec(
        r#"INSERT INTO "we""ird 'tab,le ü" VALUES ('a''b', 1, 2); INSERT INTO plain VALUES (1);"#,
    );
    let mut capturer = app.capturer();
    let (boundary, changes) = cycle(&mut capturer, 0);
    assert_eq!(
        change(&changes, "we\"ird 'tab,le ü", &[text("a'b"), int(1)]).image,
        Some(vec![text("a'b"), int(1), int(2)])
    );
    capturer.delete_through(boundary.unwrap().end_seq).unwrap();
    drop(capturer);
    let mut dropped = uninstall(&app.conn, &app.path).unwrap();
    dropped.sort();
    assert_eq!(dropped.len(), 8, "{dropped:?}");
    assert_eq!(app.schema_text(), before);
    assert_eq!(installed_tables(&app.conn).unwrap(), None);
    assert_eq!(
        uninstall(&app.conn, &app.path).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn install_is_idempotent_and_follows_the_table_list() {
    let app = App::bare(
        "CREATE TABLE a (id INTEGER PRIMARY KEY); CREATE TABLE b (id INTEGER PRIMARY KEY);",
        "wal",
    );
    let tables = app.tables();
    install(&app.conn, &app.path, &tables).unwrap();
    let version = |conn: &Connection| -> i64 {
        conn.query_row("PRAGMA schema_version", [], |r| r.get(0))
            .unwrap()
    };
    let installed_version = version(&app.conn);
    install(&app.conn, &app.path, &tables).unwrap();
    assert_eq!(
        version(&app.conn),
        installed_version,
        "a second install changes nothing"
    );
    let recorded: String = app
        .conn
        .query_row(
            "SELECT value FROM _sqlite2pg_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(recorded, installed_version.to_string());

    install(&app.conn, &app.path, &tables[..1]).unwrap();
    assert_eq!(
        installed_tables(&app.conn).unwrap(),
        Some(vec!["a".to_string()])
    );
    let triggers: i64 = app
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(triggers, 3);
    let err = Capturer::open(&app.path, &tables).err().unwrap();
    assert!(
        matches!(&err, Error::Data { table, .. } if table == "b"),
        "{err}"
    );
}

/// Installing capture on a cutover's fenced database (a new snapshot without a rollback) drops
/// the fence; the cutover record must go with it, or the next cutover would take the database
/// for fenced and only write a report.
#[test]
fn install_over_a_fence_clears_the_cutover_record() {
    let app = App::new("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);");
    app.exec(
        "DROP TRIGGER _sqlite2pg_ins_t; DROP TRIGGER _sqlite2pg_upd_t; DROP TRIGGER _sqlite2pg_del_t;
         CREATE TRIGGER _sqlite2pg_fence_ins_t BEFORE INSERT ON t BEGIN SELECT RAISE(ABORT, 'fenced'); END;
         INSERT INTO _sqlite2pg_meta (key, value) VALUES ('cutover', '{}');",
    );
    install(&app.conn, &app.path, &app.tables()).unwrap();
    let records: i64 = app
        .conn
        .query_row(
            "SELECT count(*) FROM _sqlite2pg_meta WHERE key = ?1",
            [CUTOVER_RECORD_KEY],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(records, 0);
    app.exec("INSERT INTO t (v) VALUES ('the fence is gone')");
    assert!(Capturer::open(&app.path, &app.tables()).is_ok());
}

#[test]
fn a_change_for_a_table_not_captured_is_an_error_naming_it() {
    let app = App::new(
        "CREATE TABLE a (id INTEGER PRIMARY KEY); CREATE TABLE b (id INTEGER PRIMARY KEY);",
    );
    let mut capturer = Capturer::open(&app.path, &app.tables()[..1]).unwrap();
    app.exec("INSERT INTO a VALUES (1); INSERT INTO b VALUES (1);");
    let err = capturer.capture(0, &mut |_| Ok(())).err().unwrap();
    assert!(
        matches!(&err, Error::Data { table, .. } if table == "b"),
        "{err}"
    );
}

#[test]
fn a_table_rebuilt_by_the_application_is_detected() {
    let app = App::new(PEOPLE);
    let mut capturer = app.capturer();
    app.exec("INSERT INTO people (name) VALUES ('a');");
    let end = cycle(&mut capturer, 0).0.unwrap().end_seq;
    app.exec(
        "CREATE TABLE people_new (id INTEGER PRIMARY KEY, name TEXT, score REAL);
         INSERT INTO people_new SELECT * FROM people; DROP TABLE people;
         ALTER TABLE people_new RENAME TO people; INSERT INTO people (name) VALUES ('lost');",
    );
    let err = capturer.capture(end, &mut |_| Ok(())).err().unwrap();
    assert!(
        matches!(&err, Error::Data { table, .. } if table == "people"),
        "{err}"
    );
}

#[test]
fn seqs_never_go_back_after_the_log_is_trimmed() {
    let app = App::new(PEOPLE);
    let mut capturer = app.capturer();
    assert_eq!(max_seq(&app.conn).unwrap(), 0);
    app.exec("INSERT INTO people (name) VALUES ('a'), ('b'), ('c');");
    let end = cycle(&mut capturer, 0).0.unwrap().end_seq;
    assert_eq!(max_seq(&app.conn).unwrap(), 3);
    assert_eq!(
        capturer.delete_through(end).unwrap(),
        2,
        "the newest row stays"
    );
    assert_eq!(capturer.delete_through(end).unwrap(), 0, "idempotent");
    assert_eq!(max_seq(&app.conn).unwrap(), 3);
    assert_eq!(cycle(&mut capturer, end).0, None);
    app.exec("INSERT INTO people (name) VALUES ('d');");
    let (boundary, changes) = cycle(&mut capturer, end);
    assert_eq!(boundary.unwrap().end_seq, 4);
    assert_eq!(changes[0].key, vec![int(4)]);
    capturer.delete_through(4).unwrap();
    let left: i64 = app
        .conn
        .query_row("SELECT count(*) FROM _sqlite2pg_changes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1);
}

/// Promise 4: capture reads while the application holds the write lock (WAL), never blocks
/// the application's commits, and a trim waits only its busy timeout before a transient error.
#[test]
fn capture_does_not_block_the_application_and_trim_gives_up_after_the_busy_timeout() {
    let app = App::new(PEOPLE);
    app.exec("INSERT INTO people (name) VALUES ('committed');");
    let mut capturer = app.capturer();
    capturer
        .set_busy_timeout(Duration::from_millis(200))
        .unwrap();
    app.conn.busy_timeout(Duration::ZERO).unwrap();
    // The application commits while capture holds its read transaction.
    let (mut chunks, writer) = (0, &app.conn);
    let boundary = capturer
        .capture(0, &mut |chunk| {
            chunks += 1;
            assert_eq!(chunk.len(), 1);
            writer
                .execute("INSERT INTO people (name) VALUES ('during')", [])
                .unwrap();
            Ok(())
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        (chunks, boundary.end_seq),
        (1, 1),
        "the later write is not in this cycle"
    );

    app.exec("BEGIN IMMEDIATE; INSERT INTO people (name) VALUES ('uncommitted');");
    let (boundary, changes) = cycle(&mut capturer, 1);
    assert_eq!(boundary.unwrap().end_seq, 2);
    assert_eq!(changes[0].image.as_ref().unwrap()[1], text("during"));
    let started = Instant::now();
    let err = capturer.delete_through(2).err().unwrap();
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(waited >= Duration::from_millis(190), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    app.exec("COMMIT;");
    assert_eq!(capturer.delete_through(2).unwrap(), 2);
}

#[test]
fn rollback_journal_databases_keep_their_journal_mode() {
    let app = App::bare(PEOPLE, "delete");
    install(&app.conn, &app.path, &app.tables()).unwrap();
    let mut capturer = app.capturer();
    app.exec("INSERT INTO people (name) VALUES ('a'), ('b');");
    let end = cycle(&mut capturer, 0).0.unwrap().end_seq;
    capturer.delete_through(end).unwrap();
    drop(capturer);
    let mode: String = app
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    assert!(!Path::new(&format!("{}-wal", app.path.display())).exists());
}

#[test]
fn trigger_sql_for_a_composite_key() {
    let app = App::bare(
        "CREATE TABLE pairs (a TEXT, b INTEGER, v, PRIMARY KEY (a, b));",
        "wal",
    );
    let triggers = table_triggers(&app.tables()[0]).unwrap();
    for t in &triggers {
        eprintln!("{};", t.sql);
    }
    let forbidden = ["json", "ON CONFLICT", "OVER", "RETURNING", "FILTER"];
    for t in &triggers {
        assert!(forbidden.iter().all(|f| !t.sql.contains(f)), "{}", t.sql);
    }
    assert_eq!(
        triggers[1].sql,
        "CREATE TRIGGER \"_sqlite2pg_upd_pairs\" AFTER UPDATE ON \"pairs\" BEGIN \
         INSERT INTO _sqlite2pg_changes (tbl, op, key) SELECT 'pairs', 'D', \
         quote(OLD.\"a\") || ',' || quote(OLD.\"b\") WHERE (quote(OLD.\"a\") || ',' || \
         quote(OLD.\"b\")) IS NOT (quote(NEW.\"a\") || ',' || quote(NEW.\"b\")); \
         INSERT INTO _sqlite2pg_changes (tbl, op, key) VALUES ('pairs', 'U', \
         quote(NEW.\"a\") || ',' || quote(NEW.\"b\")); END"
    );
}

#[test]
fn parse_key_reads_every_quote_format() {
    let cases: Vec<(&str, Vec<RawValue>)> = vec![
        ("1", vec![int(1)]),
        ("-9223372036854775808", vec![int(i64::MIN)]),
        (
            "NULL,'a,b',X'00FF'",
            vec![RawValue::Null, text("a,b"), RawValue::Blob(vec![0, 255])],
        ),
        (
            "'it''s','',x''",
            vec![text("it's"), text(""), RawValue::Blob(vec![])],
        ),
        ("0.3", vec![RawValue::Real(0.3)]),
        ("0.30000000000000004", vec![RawValue::Real(0.1 + 0.2)]),
        (
            "3.00000000000000044408e-01",
            vec![RawValue::Real(0.1 + 0.2)],
        ),
        (
            "1.0e+20,-2.5e-07",
            vec![RawValue::Real(1e20), RawValue::Real(-2.5e-7)],
        ),
        (
            "9.0e+999,-9.0e+999",
            vec![
                RawValue::Real(f64::INFINITY),
                RawValue::Real(f64::NEG_INFINITY),
            ],
        ),
        (
            "Inf,-Inf",
            vec![
                RawValue::Real(f64::INFINITY),
                RawValue::Real(f64::NEG_INFINITY),
            ],
        ),
        ("'line\nbreak'", vec![text("line\nbreak")]),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_key(input), Ok(expected), "{input}");
    }
    for bad in [
        "", "'open", "1,", "X'0'", "X'zz'", "abc", "1 2", "'a'b", "NaN",
    ] {
        assert!(parse_key(bad).is_err(), "{bad:?} parsed");
    }
}

fn raw_value() -> impl Strategy<Value = RawValue> {
    prop_oneof![
        Just(RawValue::Null),
        any::<i64>().prop_map(RawValue::Integer),
        // SQLite's own quote() is exact for these; see the module docs for where it is not.
        (-1e12..1e12f64).prop_map(RawValue::Real),
        any::<i32>().prop_map(|i| RawValue::Real(f64::from(i) / 64.0)),
        prop::sample::select(vec![
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            0.1,
        ])
        .prop_map(RawValue::Real),
        proptest::collection::vec(1u8..=255, 0..12).prop_map(RawValue::Text),
        "[a-z',\n ]{0,8}".prop_map(|s| RawValue::Text(s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(RawValue::Blob),
    ]
}

proptest! {
    /// Whatever SQLite's own quote() prints for a key, parse_key reads back the same values.
    #[test]
    fn parse_key_inverts_sqlite_quote(key in proptest::collection::vec(raw_value(), 1..5)) {
        let conn = Connection::open_in_memory().unwrap();
        let expr = (1..=key.len()).map(|i| format!("quote(?{i})")).collect::<Vec<_>>().join(" || ',' || ");
        let quoted: Vec<u8> = conn
            .query_row(
                &format!("SELECT CAST({expr} AS BLOB)"),
                rusqlite::params_from_iter(key.iter().map(|v| ToSqlOutput::Borrowed(v.as_ref()))),
                |r| r.get(0),
            )
            .unwrap();
        let parsed = parse_key_bytes(&quoted).unwrap();
        prop_assert_eq!(parsed, key);
    }
}
