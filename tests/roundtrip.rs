//! Property test of promise 3 for the snapshot: any SQLite value, in a column of any declared
//! type, either arrives in PostgreSQL as the same logical value — checked by PostgreSQL itself,
//! comparing what COPY BINARY stored with the planned value written as a SQL literal, and for
//! lossless types by reading it back and comparing with the SQLite original — or its row is in
//! `sqlite2pg.quarantine` under its key, with a reason. Nothing disappears.

use proptest::prelude::*;
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;
use sqlite2pg::convert::literal::sql_literal;
use sqlite2pg::convert::{convert, ConvertOptions, PgType};

use crate::snapshot::{options, query, snapshot};
use crate::support::pg::TestDb;
use crate::support::temp_dir;

/// Declared types covering every ladder of the type rules.
const DECLARED: &[&str] = &[
    "INTEGER",
    "REAL",
    "TEXT",
    "BLOB",
    "NUMERIC(6,2)",
    "DATETIME",
    "DATE",
    "BOOLEAN",
    "JSON",
    "",
];

fn sqlite_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        (-1i64..=2).prop_map(Value::Integer),
        (0i64..4_102_444_800).prop_map(Value::Integer),
        any::<f64>()
            .prop_filter("SQLite stores NaN as NULL", |f| !f.is_nan())
            .prop_map(Value::Real),
        (-10_000i32..10_000).prop_map(|c| Value::Real(f64::from(c) / 100.0)),
        "\\PC{0,12}".prop_map(Value::Text),
        "[a-z'\" \\\\]{0,8}\u{0}?[a-z]{0,3}".prop_map(Value::Text),
        (1900u32..2100, 1u32..13, 1u32..29, 0u32..24, 0u32..60).prop_map(|(y, m, d, h, mi)| {
            Value::Text(format!("{y}-{m:02}-{d:02} {h:02}:{mi:02}:07"))
        }),
        (1900u32..2100, 1u32..13, 1u32..29)
            .prop_map(|(y, m, d)| Value::Text(format!("{y}-{m:02}-{d:02}"))),
        Just(Value::Text("{\"a\": [1, 2.5, null], \"é\": \"x\"}".into())),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::Blob),
    ]
}

fn table_rows() -> impl Strategy<Value = Vec<Vec<Value>>> {
    proptest::collection::vec(
        proptest::collection::vec(sqlite_value(), DECLARED.len()),
        1..30,
    )
}

/// Writes the rows; values SQLite refuses as text (invalid UTF-8) go in as text-typed blobs.
fn write_source(path: &std::path::Path, rows: &[Vec<Value>]) -> Connection {
    let conn = Connection::open(path).unwrap();
    let cols: Vec<String> = DECLARED
        .iter()
        .enumerate()
        .map(|(i, d)| format!("c{i} {d}"))
        .collect();
    conn.execute_batch(&format!(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, {})",
        cols.join(", ")
    ))
    .unwrap();
    let marks: Vec<String> = (0..=DECLARED.len())
        .map(|i| format!("?{}", i + 1))
        .collect();
    let sql = format!("INSERT INTO t VALUES ({})", marks.join(", "));
    for (id, row) in rows.iter().enumerate() {
        let mut params: Vec<Value> = vec![Value::Integer(id as i64 + 1)];
        params.extend(row.iter().cloned());
        conn.execute(&sql, rusqlite::params_from_iter(params))
            .unwrap();
    }
    conn
}

fn planned_types(db: &TestDb) -> Vec<PgType> {
    let rows = query(db, "SELECT column_name::text, format_type(a.atttypid, a.atttypmod) FROM information_schema.columns c \
        JOIN pg_attribute a ON a.attrelid = 't'::regclass AND a.attname = c.column_name \
        WHERE c.table_name = 't' AND c.column_name <> 'id' ORDER BY c.ordinal_position");
    rows.iter()
        .map(|r| {
            PgType::parse(
                &r.get::<_, String>(1)
                    .replace("character varying", "varchar")
                    .replace("timestamp with time zone", "timestamptz"),
            )
            .expect("a planned type")
        })
        .collect()
}

fn check_case(rows: Vec<Vec<Value>>) {
    let dir = temp_dir();
    let src = dir.path().join("prop.db");
    let conn = write_source(&src, &rows);
    let db = TestDb::new();
    let report = snapshot(&src, &db, &options()).expect("snapshot");
    let types = planned_types(&db);
    let quarantined: Vec<i64> = query(
        &db,
        "SELECT DISTINCT (row_key->>0)::bigint FROM sqlite2pg.quarantine ORDER BY 1",
    )
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(quarantined.len() as u64, report.quarantined());
    let mut stmt = conn.prepare("SELECT * FROM t ORDER BY id").unwrap();
    let mut source = stmt.query([]).unwrap();
    while let Some(row) = source.next().unwrap() {
        let id: i64 = row.get(0).unwrap();
        let expected: Vec<_> = types
            .iter()
            .enumerate()
            .map(|(i, ty)| convert(ty, row.get_ref(i + 1).unwrap(), ConvertOptions::default()))
            .collect();
        if expected.iter().any(Result::is_err) {
            assert!(
                quarantined.contains(&id),
                "row {id} has a misfit but is not quarantined: {expected:?}"
            );
            continue;
        }
        assert!(
            !quarantined.contains(&id),
            "row {id} fits but was quarantined"
        );
        let checks: Vec<String> = types
            .iter()
            .zip(&expected)
            .enumerate()
            .map(|(i, (ty, v))| {
                format!(
                    "c{i} IS NOT DISTINCT FROM {}",
                    sql_literal(v.as_ref().unwrap(), ty)
                )
            })
            .collect();
        let flags: Vec<bool> = query(
            &db,
            &format!("SELECT ARRAY[{}] FROM t WHERE id = {id}", checks.join(", ")),
        )[0]
        .get(0);
        for (i, ok) in flags.iter().enumerate() {
            assert!(
                ok,
                "row {id} column c{i} ({}): PostgreSQL holds something else than {:?}",
                DECLARED[i], expected[i]
            );
        }
        lossless_readback(&db, id, row, &types);
    }
}

/// For types that keep SQLite's own representation, the value read back equals the original.
fn lossless_readback(db: &TestDb, id: i64, row: &rusqlite::Row<'_>, types: &[PgType]) {
    let back = query(db, &format!("SELECT * FROM t WHERE id = {id}")).remove(0);
    for (i, ty) in types.iter().enumerate() {
        match (ty, row.get_ref(i + 1).unwrap()) {
            (PgType::Bigint, ValueRef::Integer(v)) => {
                assert_eq!(back.get::<_, Option<i64>>(i + 1), Some(v))
            }
            (PgType::DoublePrecision, ValueRef::Real(v)) => assert_eq!(
                back.get::<_, Option<f64>>(i + 1).map(f64::to_bits),
                Some(v.to_bits())
            ),
            (PgType::Text, ValueRef::Text(v)) => assert_eq!(
                back.get::<_, Option<String>>(i + 1)
                    .as_deref()
                    .map(str::as_bytes),
                Some(v)
            ),
            (PgType::Bytea, ValueRef::Blob(v) | ValueRef::Text(v)) => {
                assert_eq!(back.get::<_, Option<Vec<u8>>>(i + 1).as_deref(), Some(v))
            }
            (_, ValueRef::Null) => {}
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 50, ..ProptestConfig::default() })]

    #[test]
    fn any_value_round_trips_or_is_quarantined(rows in table_rows()) {
        check_case(rows);
    }
}
