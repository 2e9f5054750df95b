//! COPY BINARY with PostgreSQL as the oracle: proptest-generated values of every planned type,
//! edge cases included, copied in by `CopyEncoder`, must read back exactly as the same values
//! sent as text literals (compared as PostgreSQL's text output, so numeric scale, -0 and NaN
//! count); a large COPY in many chunks arrives complete; an unfinished or broken COPY keeps
//! nothing.

use chrono::{DateTime, NaiveDate};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;
use sqlite2pg::convert::{PgType, PgValue};
use sqlite2pg::target::copy_binary::{copy_in_chunks, copy_statement, CopyEncoder};
use tokio::runtime::Runtime;

use crate::support::error_chain;
use crate::support::pg::TestDb;

/// Cases per type; each case is one COPY of up to `MAX_ROWS` values.
const CASES: u32 = 64;
const MAX_ROWS: usize = 40;
const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Rows whose values differ between the binary copy and the literal, or exist on one side only.
const DIFFERENCES: &str = "SELECT id, CAST(t.v AS text), CAST(CAST(l.lit AS {ty}) AS text) \
     FROM t FULL JOIN unnest($1::bigint[], $2::text[]) AS l(id, lit) USING (id) \
     WHERE CAST(t.v AS text) IS DISTINCT FROM CAST(CAST(l.lit AS {ty}) AS text) \
        OR t.id IS NULL OR l.id IS NULL";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

/// Copies each generated case into `t (id bigint, v <ty>)` and compares it with the literals.
fn assert_round_trips(ty: PgType, value: impl Strategy<Value = PgValue>) {
    let runtime = runtime();
    let db = TestDb::new();
    let client = runtime.block_on(db.client());
    let create = format!("CREATE TABLE t (id bigint, v {})", ty.sql());
    runtime.block_on(client.batch_execute(&create)).unwrap();
    let maybe_null = prop::option::weighted(0.9, value).prop_map(|v| v.unwrap_or(PgValue::Null));
    let rows = vec(maybe_null, 0..MAX_ROWS);
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&rows, |values| {
            runtime.block_on(copy_and_compare(&client, &ty, &values))
        })
        .unwrap_or_else(|e| panic!("{}: {e}", ty.sql()));
}

async fn copy_and_compare(
    client: &tokio_postgres::Client,
    ty: &PgType,
    values: &[PgValue],
) -> Result<(), TestCaseError> {
    client.batch_execute("TRUNCATE t").await.map_err(failure)?;
    let types = [PgType::Bigint, ty.clone()];
    let mut encoder = CopyEncoder::new();
    for (id, value) in (0_i64..).zip(values) {
        encoder
            .push_row(&types, &[PgValue::Int8(id), value.clone()])
            .map_err(TestCaseError::fail)?;
    }
    let copy = copy_statement("public", "t", &["id", "v"]);
    let copied = copy_in_chunks(client, &copy, [encoder.finish()])
        .await
        .map_err(failure)?;
    prop_assert_eq!(copied, values.len() as u64);
    let ids: Vec<i64> = (0..values.len() as i64).collect();
    let literals: Vec<Option<String>> = values.iter().map(literal).collect();
    let sql = DIFFERENCES.replace("{ty}", &ty.sql());
    let differences = client
        .query(&sql, &[&ids, &literals])
        .await
        .map_err(failure)?;
    let shown: Vec<(i64, Option<String>, Option<String>)> = differences
        .iter()
        .take(5)
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    prop_assert!(shown.is_empty(), "(id, copied, literal): {:?}", shown);
    Ok(())
}

fn failure(e: tokio_postgres::Error) -> TestCaseError {
    TestCaseError::fail(error_chain(&e))
}

/// The value as a PostgreSQL text literal, written without the encoder.
fn literal(value: &PgValue) -> Option<String> {
    Some(match value {
        PgValue::Null => return None,
        PgValue::Bool(b) => b.to_string(),
        PgValue::Int8(i) => i.to_string(),
        PgValue::Float8(f) => float_literal(*f),
        PgValue::Numeric(s) | PgValue::Text(s) | PgValue::Jsonb(s) => s.clone(),
        PgValue::Bytea(b) => b.iter().fold("\\x".to_string(), |mut hex, byte| {
            hex.push_str(&format!("{byte:02x}"));
            hex
        }),
        PgValue::Date(days) => date(*days).format("%Y-%m-%d").to_string(),
        PgValue::Timestamptz(us) => DateTime::from_timestamp_micros(*us)
            .expect("generated timestamps are in chrono's range")
            .format("%Y-%m-%d %H:%M:%S%.6f+00")
            .to_string(),
    })
}

fn float_literal(f: f64) -> String {
    match f {
        f if f.is_nan() => "NaN".into(),
        f64::INFINITY => "Infinity".into(),
        f64::NEG_INFINITY => "-Infinity".into(),
        // Debug prints the shortest digits that read back as the same double ("-0.0", "5e-324").
        f => format!("{f:?}"),
    }
}

/// Days since 1970-01-01 → the date.
fn date(days: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(days + unix_epoch_days_from_ce())
        .expect("generated dates are in chrono's range")
}

fn unix_epoch_days_from_ce() -> i32 {
    use chrono::Datelike;
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .unwrap()
        .num_days_from_ce()
}

/// Days since 1970-01-01 of a date.
fn days(y: i32, m: u32, d: u32) -> i32 {
    use chrono::Datelike;
    NaiveDate::from_ymd_opt(y, m, d).unwrap().num_days_from_ce() - unix_epoch_days_from_ce()
}

#[test]
fn boolean_round_trips() {
    assert_round_trips(PgType::Boolean, any::<bool>().prop_map(PgValue::Bool));
}

#[test]
fn bigint_round_trips() {
    let edges = prop::sample::select(vec![i64::MIN, i64::MAX, 0, -1, 1]);
    let value = prop_oneof![edges, any::<i64>()];
    assert_round_trips(PgType::Bigint, value.prop_map(PgValue::Int8));
}

#[test]
fn double_precision_round_trips_with_sign_of_zero_subnormals_and_specials() {
    let edges = prop::sample::select(vec![
        0.0,
        -0.0,
        f64::MIN_POSITIVE,
        5e-324,
        -2.5e-310,
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
        0.1,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ]);
    // `any::<f64>()` draws normals, subnormals, zeros, infinities and NaN of either sign.
    let value = prop_oneof![edges, any::<f64>()];
    assert_round_trips(PgType::DoublePrecision, value.prop_map(PgValue::Float8));
}

fn numeric_edges() -> Vec<String> {
    let mut edges: Vec<String> = [
        "0",
        "0.000",
        "-0",
        "-0.0",
        "NaN",
        "Infinity",
        "-Infinity",
        "1",
        "-1",
        "0.5",
        "9999",
        "10000",
        "99999999.9999",
        "0.0001",
        "1e20",
        "-7.25E-3",
        "+3.",
        ".75",
    ]
    .map(String::from)
    .into();
    edges.push(format!("{}.5", "9".repeat(1000)));
    edges.push(format!("-0.{}1", "0".repeat(1000)));
    edges.push(format!("1{}", "0".repeat(500)));
    edges.push("1234567890".repeat(100));
    edges
}

#[test]
fn numeric_round_trips_with_exact_scale() {
    let value = prop_oneof![
        prop::sample::select(numeric_edges()),
        "-?[0-9]{1,30}(\\.[0-9]{0,20})?",
        "-?[0-9]{0,3}\\.[0-9]{1,40}",
        "[-+]?[0-9]{1,6}(\\.[0-9]{1,6})?[eE][-+]?[0-9]{1,2}",
        "-?[1-9][0-9]{0,200}\\.[0-9]{0,200}",
    ];
    assert_round_trips(PgType::Numeric(None), value.prop_map(PgValue::Numeric));
}

#[test]
fn numeric_with_typmod_round_trips_and_rounds_like_its_literal() {
    let edges = ["0", "0.0000", "NaN", "-99999999.9999", "12.5"].map(String::from);
    let value = prop_oneof![
        prop::sample::select(edges.to_vec()),
        "-?[0-9]{1,8}(\\.[0-9]{0,4})?",
        "-?[0-9]{1,7}\\.[0-9]{5,8}",
    ];
    let ty = PgType::Numeric(Some((12, 4)));
    assert_round_trips(ty, value.prop_map(PgValue::Numeric));
}

fn text_edges() -> Vec<String> {
    [
        "",
        "'",
        "''",
        "\\",
        "\\x41",
        "\"quoted\"",
        "O'Reilly\\n",
        "tab\tnew\nline\r\n",
        "héllo wörld 🌍",
        "\u{FEFF}\u{200B}",
        "\u{10FFFF}",
        "\\N",
    ]
    .map(String::from)
    .into()
}

#[test]
fn text_round_trips() {
    let value = prop_oneof![prop::sample::select(text_edges()), "(?s)[^\\x00]{0,40}"];
    assert_round_trips(PgType::Text, value.prop_map(PgValue::Text));
}

#[test]
fn varchar_round_trips_up_to_its_length() {
    let short_edges = text_edges()
        .into_iter()
        .filter(|s| s.chars().count() <= 12)
        .collect::<Vec<_>>();
    let value = prop_oneof![prop::sample::select(short_edges), "(?s)[^\\x00]{0,12}"];
    assert_round_trips(PgType::Varchar(12), value.prop_map(PgValue::Text));
}

#[test]
fn bytea_round_trips() {
    let value = prop_oneof![
        Just(Vec::new()),
        Just((0..=255).collect::<Vec<u8>>()),
        vec(any::<u8>(), 0..64),
    ];
    assert_round_trips(PgType::Bytea, value.prop_map(PgValue::Bytea));
}

#[test]
fn date_round_trips_from_year_1_to_9999() {
    let (first, last) = (days(1, 1, 1), days(9999, 12, 31));
    let edges = prop::sample::select(vec![first, last, 0, -1, 10_957, 10_956, days(1900, 2, 28)]);
    let value = prop_oneof![edges, first..=last];
    assert_round_trips(PgType::Date, value.prop_map(PgValue::Date));
}

#[test]
fn timestamptz_round_trips_from_year_1_to_9999() {
    let first = i64::from(days(1, 1, 1)) * MICROS_PER_DAY;
    let last = i64::from(days(9999, 12, 31) + 1) * MICROS_PER_DAY - 1;
    let pg_epoch = 946_684_800_000_000;
    let edges = prop::sample::select(vec![first, last, 0, -1, 1, pg_epoch, pg_epoch - 1]);
    let value = prop_oneof![edges, first..=last];
    assert_round_trips(PgType::Timestamptz, value.prop_map(PgValue::Timestamptz));
}

/// JSON text PostgreSQL's jsonb accepts (no NUL, which jsonb cannot store).
fn json_value() -> impl Strategy<Value = Value> {
    let key = "[^\\x00]{0,8}";
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        "[^\\x00]{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(key, inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn jsonb_round_trips() {
    let edges = prop::sample::select(vec![
        r#"{"a":[1,2.50,{"b":null}],"ü":"é\"\\","a":"duplicate key"}"#.to_string(),
        "12345678901234567890.123456789e-3".into(),
        "[]".into(),
        "{}".into(),
        "\"\"".into(),
        " { \"spaced\" : [ 1 , -0 , 1E400 ] } ".into(),
        r#""\ud83c\udf0d \u00e9 \n""#.into(),
    ]);
    let value = prop_oneof![edges, json_value().prop_map(|v| v.to_string())];
    assert_round_trips(PgType::Jsonb, value.prop_map(PgValue::Jsonb));
}

#[test]
fn hundred_thousand_rows_in_many_chunks_arrive_complete() {
    const ROWS: i64 = 100_000;
    let runtime = runtime();
    let db = TestDb::new();
    runtime.block_on(async {
        let client = db.client().await;
        client
            .batch_execute("CREATE TABLE many (id bigint, name text, amount numeric, at timestamptz)")
            .await
            .unwrap();
        let types = [PgType::Bigint, PgType::Text, PgType::Numeric(None), PgType::Timestamptz];
        let mut encoder = CopyEncoder::new();
        let mut chunks = Vec::new();
        for id in 0..ROWS {
            let row = [
                PgValue::Int8(id),
                PgValue::Text(format!("name {id}")),
                PgValue::Numeric(format!("{id}.{:02}", id % 100)),
                PgValue::Timestamptz(id * 1_000_001 - 5_000_000_000),
            ];
            encoder.push_row(&types, &row).unwrap();
            if encoder.len() >= 256 * 1024 {
                chunks.push(encoder.take_chunk());
            }
        }
        chunks.push(encoder.finish());
        assert!(chunks.len() > 5, "only {} chunks", chunks.len());
        let copy = copy_statement("public", "many", &["id", "name", "amount", "at"]);
        let copied = copy_in_chunks(&client, &copy, chunks).await.unwrap();
        assert_eq!(copied, ROWS as u64);
        let row = client
            .query_one(
                "SELECT count(*), sum(id)::text, sum(amount)::text, count(DISTINCT name), \
                 count(*) FILTER (WHERE name = 'name ' || id \
                   AND at = to_timestamp(0) + (id * 1000001 - 5000000000) * interval '1 microsecond') \
                 FROM many",
                &[],
            )
            .await
            .unwrap();
        let cents: i64 = (0..ROWS).map(|id| id * 100 + id % 100).sum();
        let expected_amount = format!("{}.{:02}", cents / 100, cents % 100);
        assert_eq!(row.get::<_, i64>(0), ROWS);
        assert_eq!(row.get::<_, String>(1), (ROWS * (ROWS - 1) / 2).to_string());
        assert_eq!(row.get::<_, String>(2), expected_amount);
        assert_eq!(row.get::<_, i64>(3), ROWS);
        assert_eq!(row.get::<_, i64>(4), ROWS);
    });
}

#[test]
fn a_broken_copy_keeps_nothing_and_the_client_stays_usable() {
    let runtime = runtime();
    let db = TestDb::new();
    runtime.block_on(async {
        let client = db.client().await;
        client
            .batch_execute("CREATE TABLE t (id bigint)")
            .await
            .unwrap();
        let mut encoder = CopyEncoder::new();
        encoder
            .push_row(&[PgType::Bigint], &[PgValue::Int8(1)])
            .unwrap();
        let good = encoder.take_chunk();
        // A tuple that announces two fields for a one-column table.
        let bad = [2_i16.to_be_bytes().as_slice(), &(-1_i32).to_be_bytes()].concat();
        let copy = copy_statement("public", "t", &["id"]);
        let err = copy_in_chunks(&client, &copy, [good, bad, encoder.finish()])
            .await
            .unwrap_err();
        assert!(err.as_db_error().is_some(), "{err}");
        let count: i64 = client
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 0);
    });
}
