//! Continuous verification (`target::verify`) against a real PostgreSQL: a batch's keys re-read
//! after apply match their images, and every kind of tampering in the target — a changed value,
//! a missing row, a row that should be gone — is reported for exactly the keys it hit, with the
//! column named; composite text keys with quotes, commas and unicode included.

use std::path::Path;
use std::time::Instant;

use rusqlite::{params, Connection};
use sqlite2pg::change::{Boundary, Change, RawValue};
use sqlite2pg::convert::ConvertOptions;
use sqlite2pg::source::introspect::read_schema;
use sqlite2pg::target::apply::{
    apply_batch, apply_chunks, prepare_chunk, ApplyTable, BatchPiece, StagingTables,
};
use sqlite2pg::target::mapping::map_table;
use sqlite2pg::target::state::{init_sync_position, sync_position};
use sqlite2pg::target::verify::{verify_changes, Mismatch, MAX_KEYS_PER_READ};

use crate::snapshot::{block_on, options, query, snapshot};
use crate::support::pg::TestDb;
use crate::support::temp_dir;

const SCHEMA: &str = "public";

/// Keys of the WITHOUT ROWID table: quotes, commas, parentheses, unicode, empty text.
const TEXT_KEYS: &[(&str, &str)] = &[
    ("O'Brien", "a,b"),
    ("\"quoted\"", "(1,2)"),
    ("ünï€ode", "🎉"),
    ("", "tab\there"),
    ("a", "b"),
];

fn source(dir: &Path, rows: i64) -> std::path::PathBuf {
    let path = dir.join("app.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, meta JSON, data BLOB,
             twice REAL GENERATED ALWAYS AS (price * 2) STORED);
         CREATE TABLE tags (a TEXT NOT NULL, b TEXT NOT NULL, note TEXT, PRIMARY KEY (a, b)) WITHOUT ROWID;",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut insert = tx
            .prepare("INSERT INTO items (id, name, price, meta, data) VALUES (?1, ?2, ?3, ?4, ?5)")
            .unwrap();
        for id in 1..=rows {
            let meta = format!(r#"{{"n": {id}, "tags": ["x", "y"], "ok": true}}"#);
            let data = id.to_be_bytes().to_vec();
            insert
                .execute(params![
                    id,
                    format!("item {id}"),
                    id as f64 / 4.0,
                    meta,
                    data
                ])
                .unwrap();
        }
        for (i, (a, b)) in TEXT_KEYS.iter().enumerate() {
            tx.execute(
                "INSERT INTO tags VALUES (?1, ?2, ?3)",
                params![a, b, format!("note {i}")],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
    path
}

/// The tables as sync applies them: `map_table` + `ApplyTable::load`, as src/pipeline.rs does.
fn apply_tables(src: &Path, db: &TestDb) -> Vec<ApplyTable> {
    let schema = read_schema(&Connection::open(src).unwrap(), src).unwrap();
    block_on(async {
        let client = db.client().await;
        let mut tables = Vec::new();
        for name in ["items", "tags"] {
            let table = schema.table(name).unwrap();
            let map = map_table(&client, SCHEMA, table, false)
                .await
                .unwrap()
                .unwrap();
            assert!(map.problems.is_empty(), "{:?}", map.problems);
            tables.push(ApplyTable::load(&client, SCHEMA, map).await.unwrap());
        }
        tables
    })
}

/// The change sync would capture for `key` now: the current image read from the SQLite file
/// (every column in source order, generated ones included), or `None` when the row is gone.
fn change(conn: &Connection, table: &str, key: Vec<RawValue>) -> Change {
    let (cols, filter) = match table {
        "items" => ("id, name, price, meta, data, twice", "id = ?1"),
        _ => ("a, b, note", "a = ?1 AND b = ?2"),
    };
    let sql = format!("SELECT {cols} FROM {table} WHERE {filter}");
    let mut stmt = conn.prepare(&sql).unwrap();
    let width = stmt.column_count();
    let args = key.iter().map(|v| rusqlite::types::Value::from(v.as_ref()));
    let mut rows = stmt.query(rusqlite::params_from_iter(args)).unwrap();
    let image = rows.next().unwrap().map(|row| {
        (0..width)
            .map(|i| RawValue::from_ref(row.get_ref(i).unwrap()))
            .collect()
    });
    Change {
        seq: 0,
        table: table.into(),
        key,
        image,
    }
}

fn item_key(id: i64) -> Vec<RawValue> {
    vec![RawValue::Integer(id)]
}

fn tag_key(a: &str, b: &str) -> Vec<RawValue> {
    vec![
        RawValue::Text(a.as_bytes().to_vec()),
        RawValue::Text(b.as_bytes().to_vec()),
    ]
}

/// A change for every item id and every tag key, images as SQLite holds them now.
fn all_changes(conn: &Connection, items: impl Iterator<Item = i64>) -> Vec<Change> {
    let mut changes: Vec<Change> = items
        .map(|id| change(conn, "items", item_key(id)))
        .collect();
    for (a, b) in TEXT_KEYS {
        changes.push(change(conn, "tags", tag_key(a, b)));
    }
    for (seq, c) in changes.iter_mut().enumerate() {
        c.seq = seq as u64 + 1;
    }
    changes
}

fn verify(db: &TestDb, tables: &[ApplyTable], changes: &[Change]) -> Vec<Mismatch> {
    block_on(async {
        let mut client = db.client().await;
        verify_changes(
            &mut client,
            SCHEMA,
            tables,
            changes,
            ConvertOptions::default(),
        )
        .await
        .expect("verify_changes")
    })
}

fn execute(db: &TestDb, sql: &str) {
    query(db, sql);
}

#[test]
fn identical_rows_verify_clean_and_tampering_names_exactly_the_keys_and_columns() {
    let (_dir, db, tables, conn) = snapshotted(20);
    assert!(
        tables[0].map.columns.iter().any(|c| c.generated),
        "the generated column stays generated in PostgreSQL, so it is compared as computed there"
    );
    let mut changes = all_changes(&conn, 1..=20);
    changes.push(change(&conn, "items", item_key(100))); // deleted: no row on either side
    assert_eq!(verify(&db, &tables, &changes), []);

    execute(&db, "UPDATE items SET name = 'tampered' WHERE id = 2");
    execute(&db, "UPDATE items SET price = 99 WHERE id = 4");
    execute(&db, "DELETE FROM items WHERE id = 3");
    execute(
        &db,
        "INSERT INTO items (id, name, price) VALUES (100, 'ghost', 1)",
    );
    execute(
        &db,
        "UPDATE tags SET note = 'changed' WHERE a = 'O''Brien' AND b = 'a,b'",
    );
    execute(&db, "DELETE FROM tags WHERE a = 'ünï€ode' AND b = '🎉'");
    let found = verify(&db, &tables, &changes);
    let keys: Vec<(&str, &[RawValue])> = found
        .iter()
        .map(|m| (m.table.as_str(), m.key.as_slice()))
        .collect();
    assert_eq!(
        keys,
        [
            ("items", &item_key(2)[..]),
            ("items", &item_key(3)[..]),
            ("items", &item_key(4)[..]),
            ("tags", &tag_key("O'Brien", "a,b")[..]),
            ("tags", &tag_key("ünï€ode", "🎉")[..]),
            ("items", &item_key(100)[..]),
        ],
        "{found:#?}"
    );
    let detail = |i: usize| found[i].detail.as_str();
    assert_eq!(
        detail(0),
        "column \"name\": expected 'item 2', PostgreSQL has 'tampered'"
    );
    assert_eq!(
        detail(1),
        "PostgreSQL has no row, but the applied source image has one"
    );
    assert_eq!(
        detail(2),
        "column \"price\": expected 1, PostgreSQL has 99; \
         column \"twice\" (generated): expected 2, PostgreSQL has 198"
    );
    assert_eq!(
        detail(3),
        "column \"note\": expected 'note 0', PostgreSQL has 'changed'"
    );
    assert_eq!(
        detail(4),
        "PostgreSQL has no row, but the applied source image has one"
    );
    assert_eq!(
        detail(5),
        "PostgreSQL has a row, but the source row was deleted"
    );
}

#[test]
fn an_image_that_would_be_quarantined_must_have_no_row() {
    let (_dir, db, tables, conn) = snapshotted(3);
    let mut misfit = change(&conn, "items", item_key(1));
    misfit.image.as_mut().unwrap()[2] = RawValue::Text(b"abc".to_vec());
    let found = verify(&db, &tables, std::slice::from_ref(&misfit));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0]
            .detail
            .starts_with("PostgreSQL has a row, but the source row was quarantined (column \"price\": \"abc\" does not fit double precision"),
        "{}",
        found[0].detail
    );
    execute(&db, "DELETE FROM items WHERE id = 1");
    assert_eq!(verify(&db, &tables, &[misfit]), []);
}

#[test]
fn a_batch_applied_by_sync_verifies_clean() {
    let (_dir, db, tables, conn) = snapshotted(10);
    conn.execute_batch(
        "UPDATE items SET name = 'renamed ''x'', ü', price = 0.1, meta = '{\"b\":1,\"a\":[1.50]}' WHERE id = 2;
         DELETE FROM items WHERE id = 3;
         INSERT INTO items (id, name, price, data) VALUES (11, NULL, -0.0, x'00ff');
         INSERT INTO items (id, name, price) VALUES (12, 'misfit', 'abc');
         UPDATE tags SET note = NULL WHERE a = '\"quoted\"';
         DELETE FROM tags WHERE a = '';",
    )
    .unwrap();
    let changes = all_changes(&conn, [2, 3, 11, 12].into_iter());
    let stats = block_on(async {
        let mut client = db.client().await;
        init_sync_position(&client, 0).await.unwrap();
        let after = sync_position(&client).await.unwrap().unwrap() as u64;
        let through = Boundary {
            end_seq: after + changes.len() as u64,
            committed_at: 0.0,
            changes: changes.len() as u64,
        };
        let opts = ConvertOptions::default();
        apply_batch(
            &mut client,
            SCHEMA,
            &tables,
            after,
            &through,
            &changes,
            opts,
        )
        .await
        .expect("apply")
    });
    assert_eq!(stats.quarantined, 1, "{stats:?}");
    assert_eq!(verify(&db, &tables, &changes), []);
    execute(&db, "UPDATE items SET data = '\\x00fe' WHERE id = 11");
    let found = verify(&db, &tables, &changes);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, item_key(11));
    assert!(found[0].detail.starts_with("column \"data\""), "{found:#?}");
}

/// More keys than one read holds: every chunk is checked, and the cost per key is printed.
#[test]
fn keys_beyond_one_read_are_all_checked() {
    let rows = (MAX_KEYS_PER_READ + MAX_KEYS_PER_READ / 2) as i64;
    let (_dir, db, tables, conn) = snapshotted(rows);
    let changes = all_changes(&conn, 1..=rows);
    let started = Instant::now();
    assert_eq!(verify(&db, &tables, &changes), []);
    let first = started.elapsed();
    let batch = &changes[..MAX_KEYS_PER_READ];
    let started = Instant::now();
    assert_eq!(verify(&db, &tables, batch), []);
    eprintln!(
        "verify: {} keys in {:?}, {} keys in {:?} ({:.1} µs per key)",
        changes.len(),
        first,
        batch.len(),
        started.elapsed(),
        started.elapsed().as_secs_f64() * 1e6 / batch.len() as f64
    );
    execute(&db, "UPDATE items SET meta = '{\"n\": 0}' WHERE id = 14000");
    let found = verify(&db, &tables, &changes);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, item_key(14000));
    assert!(found[0].detail.starts_with("column \"meta\""), "{found:#?}");
}

/// Sync verifies inside the apply transaction (`verify_staged`): a target trigger that changes
/// what apply writes is caught in the same batch, naming the key and the column.
#[test]
fn apply_reports_rows_changed_behind_its_back_within_the_batch() {
    let (_dir, db, tables, conn) = snapshotted(10);
    execute(
        &db,
        "CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN IF NEW.id = 4 THEN NEW.name := 'tampered'; END IF; RETURN NEW; END $$",
    );
    execute(
        &db,
        "CREATE TRIGGER tamper BEFORE INSERT OR UPDATE ON items \
         FOR EACH ROW EXECUTE FUNCTION tamper()",
    );
    conn.execute_batch("UPDATE items SET price = 9.5 WHERE id IN (4, 5)")
        .unwrap();
    let changes = all_changes(&conn, [4, 5].into_iter());
    let stats = apply(&db, &tables, &changes).expect("apply");
    assert_eq!(stats.mismatches.len(), 1, "{:#?}", stats.mismatches);
    assert_eq!(stats.mismatches[0].key, item_key(4));
    assert!(
        stats.mismatches[0].detail.starts_with("column \"name\""),
        "{:#?}",
        stats.mismatches
    );
}

/// Regression (sync-speed): a batch whose chunk stream closes before its end marker (the reader
/// thread stopped) must fail, not commit the chunks seen so far with the batch's position.
#[test]
fn a_chunk_stream_that_ends_early_commits_nothing() {
    let (_dir, db, tables, conn) = snapshotted(10);
    conn.execute_batch("DELETE FROM items WHERE id = 7")
        .unwrap();
    let changes = all_changes(&conn, [7].into_iter());
    let err = block_on(async {
        let mut client = db.client().await;
        init_sync_position(&client, 0).await.unwrap();
        let chunk = prepare_chunk(&tables, changes.clone(), ConvertOptions::default());
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        tx.try_send(chunk.map(BatchPiece::Chunk)).unwrap();
        drop(tx);
        let mut staging = StagingTables::default();
        apply_chunks(&mut client, &mut staging, SCHEMA, &tables, 0, &mut rx)
            .await
            .expect_err("a stream without its end marker must not commit")
    });
    assert!(
        err.to_string().contains("before the end of the batch"),
        "{err}"
    );
    let position: i64 = query(&db, "SELECT applied_seq FROM sqlite2pg.sync_state")[0].get(0);
    assert_eq!(position, 0);
    assert_eq!(count_items(&db, 7), 1, "the deletion must not be committed");
}

/// A source of `rows` items snapshotted into a fresh database: its directory (keep it alive),
/// the database, the tables as sync applies them, and a connection to the source.
fn snapshotted(rows: i64) -> (tempfile::TempDir, TestDb, Vec<ApplyTable>, Connection) {
    let dir = temp_dir();
    let src = source(dir.path(), rows);
    let db = TestDb::new();
    snapshot(&src, &db, &options()).expect("snapshot");
    let tables = apply_tables(&src, &db);
    let conn = Connection::open(&src).unwrap();
    (dir, db, tables, conn)
}

fn boundary(changes: &[Change]) -> Boundary {
    Boundary {
        end_seq: changes.len() as u64,
        committed_at: 0.0,
        changes: changes.len() as u64,
    }
}

fn count_items(db: &TestDb, id: i64) -> i64 {
    query(db, &format!("SELECT count(*) FROM items WHERE id = {id}"))[0].get(0)
}

fn apply(
    db: &TestDb,
    tables: &[ApplyTable],
    changes: &[Change],
) -> sqlite2pg::Result<sqlite2pg::target::apply::BatchStats> {
    block_on(async {
        let mut client = db.client().await;
        init_sync_position(&client, 0).await.unwrap();
        let through = boundary(changes);
        apply_batch(
            &mut client,
            SCHEMA,
            tables,
            0,
            &through,
            changes,
            ConvertOptions::default(),
        )
        .await
    })
}

/// Staging tables live as long as the session: each is created once (`ON COMMIT DELETE ROWS`)
/// and every later batch reuses it, instead of creating and dropping it per transaction (which
/// churned the catalogs at dozens of batches a second). A batch that rolls back after creating
/// one leaves nothing stale for the next batch to trip on.
#[test]
fn staging_tables_are_created_once_per_session_and_survive_a_rolled_back_batch() {
    let (_dir, db, tables, conn) = snapshotted(10);
    conn.execute_batch("UPDATE items SET name = 'renamed ' || id WHERE id <= 3")
        .unwrap();
    let updates: Vec<Change> = (1..=3)
        .map(|id| change(&conn, "items", item_key(id)))
        .collect();
    conn.execute_batch("DELETE FROM items WHERE id = 9")
        .unwrap();
    let deletion = vec![change(&conn, "items", item_key(9))];
    block_on(async {
        let mut client = db.client().await;
        init_sync_position(&client, 0).await.unwrap();
        let mut staging = StagingTables::default();

        let stats = stream(&mut client, &mut staging, &tables, 0, &updates, true)
            .await
            .expect("first batch");
        assert_eq!((stats.upserted, stats.mismatches.len()), (3, 0));
        let first = temp_tables(&client).await;
        assert_eq!(first.len(), 1, "one upsert staging table: {first:?}");
        let rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM {}", first[0].0), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 0, "a committed batch leaves its staging table empty");

        stream(&mut client, &mut staging, &tables, 3, &deletion, false)
            .await
            .expect_err("a stream without its end marker rolls back");
        assert_eq!(
            temp_tables(&client).await,
            first,
            "the rolled-back table is gone"
        );

        let stats = stream(&mut client, &mut staging, &tables, 3, &deletion, true)
            .await
            .expect("the deletion again, after the rollback");
        assert_eq!(stats.deleted, 1);
        let both = temp_tables(&client).await;
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(
            both.contains(&first[0]),
            "the upsert table was kept: {both:?}"
        );

        let stats = stream(&mut client, &mut staging, &tables, 4, &updates, true)
            .await
            .expect("the updates again");
        assert_eq!(stats.upserted, 3);
        assert_eq!(temp_tables(&client).await, both, "nothing created again");
    });
    assert_eq!(count_items(&db, 9), 0);
    let names = query(&db, "SELECT name FROM items WHERE id <= 3 ORDER BY id");
    let names: Vec<String> = names.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["renamed 1", "renamed 2", "renamed 3"]);
}

/// The temporary tables of `client`'s session: (name, oid).
async fn temp_tables(client: &tokio_postgres::Client) -> Vec<(String, i64)> {
    let sql = "SELECT relname::text, oid::bigint FROM pg_class \
               WHERE relnamespace = pg_my_temp_schema() AND relkind = 'r' ORDER BY 1";
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Applies `changes` as one chunk of a batch after position `after` on `client`'s session;
/// without `complete` the stream closes before its end marker (the batch must roll back).
async fn stream(
    client: &mut tokio_postgres::Client,
    staging: &mut StagingTables,
    tables: &[ApplyTable],
    after: u64,
    changes: &[Change],
    complete: bool,
) -> sqlite2pg::Result<sqlite2pg::target::apply::BatchStats> {
    let chunk = prepare_chunk(tables, changes.to_vec(), ConvertOptions::default());
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    tx.try_send(chunk.map(BatchPiece::Chunk)).unwrap();
    if complete {
        let through = Boundary {
            end_seq: after + changes.len() as u64,
            committed_at: 0.0,
            changes: changes.len() as u64,
        };
        tx.try_send(Ok(BatchPiece::End(through))).unwrap();
    }
    drop(tx);
    apply_chunks(client, staging, SCHEMA, tables, after, &mut rx).await
}
