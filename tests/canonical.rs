//! The diff's canonical encoding with PostgreSQL as the oracle (promise 5): values written as
//! SQL literals read back through `COPY … TO STDOUT (FORMAT binary)` and `CopyDecoder` as the
//! values they spell; for pairs of values PostgreSQL's own `IS NOT DISTINCT FROM` agrees with
//! canonical equality, and its `ORDER BY … COLLATE "C"` with `compare_keys`; no session setting
//! (TimeZone, extra_float_digits, DateStyle) changes a decoded value; and proptest-generated
//! values copied in with `CopyEncoder` come back canonically equal.

use std::cmp::Ordering;

use futures_util::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sqlite2pg::convert::{PgType, PgValue};
use sqlite2pg::diff::canonical::{compare_keys, display, encode_canonical};
use sqlite2pg::diff::encoded::compare_encoded_keys;
use sqlite2pg::target::copy_binary::{copy_in_chunks, copy_statement, CopyEncoder};
use sqlite2pg::target::copy_out::CopyDecoder;
use tokio::runtime::Runtime;
use tokio_postgres::Client;

use crate::support::error_chain;
use crate::support::pg::TestDb;

/// Settings that change PostgreSQL's text output of every type here, and must not change the
/// binary output.
const ODD_SESSION: &str = "SET TimeZone = 'Asia/Tokyo'; SET extra_float_digits = -3; \
                           SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'sql_standard'";
/// Proptest cases per type, each one COPY in and one COPY out.
const CASES: u32 = 32;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

fn canonical(v: &PgValue) -> Vec<u8> {
    let mut out = Vec::new();
    encode_canonical(&mut out, v);
    out
}

/// Runs `COPY (query) TO STDOUT (FORMAT binary)` and decodes every row.
async fn copy_out(
    client: &Client,
    query: &str,
    types: &[PgType],
) -> Result<Vec<Vec<PgValue>>, String> {
    let sql = format!("COPY ({query}) TO STDOUT (FORMAT binary)");
    let stream = client.copy_out(&sql).await.map_err(|e| error_chain(&e))?;
    let mut stream = std::pin::pin!(stream);
    let mut decoder = CopyDecoder::new(types.to_vec());
    let mut rows = Vec::new();
    while let Some(chunk) = stream.next().await {
        decoder.feed(&chunk.map_err(|e| error_chain(&e))?);
        while let Some(row) = decoder.next_row()? {
            rows.push(row);
        }
    }
    decoder.check_complete()?;
    Ok(rows)
}

/// `'text'` with quotes doubled, or NULL.
fn sql_literal(lit: Option<&str>) -> String {
    lit.map_or("NULL".into(), |s| format!("'{}'", s.replace('\'', "''")))
}

/// Literals of `ty` and the value each one must read back as.
fn readback_cases(ty: &PgType) -> Vec<(Option<&'static str>, PgValue)> {
    use PgValue as V;
    let n = |s: &str| V::Numeric(s.into());
    let t = |s: &str| V::Text(s.into());
    let j = |s: &str| V::Jsonb(s.into());
    let mut cases = match ty {
        PgType::Boolean => vec![(Some("true"), V::Bool(true)), (Some("f"), V::Bool(false))],
        PgType::Bigint => vec![
            (Some("-9223372036854775808"), V::Int8(i64::MIN)),
            (Some("9223372036854775807"), V::Int8(i64::MAX)),
            (Some("0"), V::Int8(0)),
        ],
        PgType::DoublePrecision => vec![
            (Some("-0"), V::Float8(-0.0)),
            (Some("0.1"), V::Float8(0.1)),
            (Some("1e308"), V::Float8(1e308)),
            (Some("5e-324"), V::Float8(5e-324)),
            (Some("NaN"), V::Float8(f64::NAN)),
            (Some("-Infinity"), V::Float8(f64::NEG_INFINITY)),
        ],
        PgType::Numeric(None) => vec![
            (Some("1.50"), n("1.50")),
            (Some("-0.000"), n("0.000")),
            (Some("1e20"), n("100000000000000000000")),
            (
                Some("-12345678901234567890.000000000000000000001"),
                n("-12345678901234567890.000000000000000000001"),
            ),
            (Some("0.00000000000000000001"), n("0.00000000000000000001")),
            (Some("NaN"), n("NaN")),
            (Some("Infinity"), n("Infinity")),
            (Some("-Infinity"), n("-Infinity")),
        ],
        PgType::Numeric(Some(_)) => vec![
            (Some("12.5"), n("12.5000")),
            (Some("-0.00004"), n("0.0000")),
        ],
        PgType::Text | PgType::Varchar(_) => vec![
            (Some(""), t("")),
            (Some("NULL"), t("NULL")),
            (Some("héllo 🌍"), t("héllo 🌍")),
            (Some("O'Reilly\\n\ttab\nline"), t("O'Reilly\\n\ttab\nline")),
        ],
        PgType::Bytea => vec![
            (Some("\\x00ff"), V::Bytea(vec![0, 255])),
            (Some("\\x"), V::Bytea(vec![])),
        ],
        PgType::Date => vec![
            (Some("1970-01-01"), V::Date(0)),
            (Some("1969-12-31"), V::Date(-1)),
            (Some("2000-01-01"), V::Date(10_957)),
            (Some("0001-01-01"), V::Date(-719_162)),
            (Some("4714-11-24 BC"), V::Date(-2_440_588)),
        ],
        PgType::Timestamptz => vec![
            (Some("1970-01-01 00:00:00+00"), V::Timestamptz(0)),
            (Some("1969-12-31 23:59:59.999999+00"), V::Timestamptz(-1)),
            (
                Some("2000-01-01 00:00:00.000001+00"),
                V::Timestamptz(946_684_800_000_001),
            ),
            (
                Some("2023-11-15 07:13:20+09"),
                V::Timestamptz(1_700_000_000_000_000),
            ),
        ],
        PgType::Jsonb => vec![
            (
                Some(r#"{"b": 1.50, "a": [1, 2e0], "b": 3}"#),
                j(r#"{"a":[1,2],"b":3}"#),
            ),
            (Some(r#""\u00e9\n""#), j("\"é\\n\"")),
            (
                Some("12345678901234567890.12345678901234567890"),
                j("12345678901234567890.1234567890123456789"),
            ),
            (Some("[]"), j("[]")),
        ],
    };
    cases.push((None, PgValue::Null));
    cases
}

fn all_types() -> Vec<PgType> {
    vec![
        PgType::Boolean,
        PgType::Bigint,
        PgType::DoublePrecision,
        PgType::Numeric(None),
        PgType::Numeric(Some((12, 4))),
        PgType::Text,
        PgType::Varchar(40),
        PgType::Bytea,
        PgType::Date,
        PgType::Timestamptz,
        PgType::Jsonb,
    ]
}

/// Floats compare by bits (NaN included); numeric by exact text (the scale is kept); the rest
/// by value, and every value also canonically.
fn assert_reads_back(ty: &PgType, lit: Option<&str>, got: &PgValue, want: &PgValue) {
    let what = format!("{} literal {lit:?}", ty.sql());
    assert_eq!(canonical(got), canonical(want), "{what}: read {got:?}");
    match (got, want) {
        (PgValue::Float8(g), PgValue::Float8(w)) if w.is_nan() => assert!(g.is_nan(), "{what}"),
        (PgValue::Float8(g), PgValue::Float8(w)) => assert_eq!(g.to_bits(), w.to_bits(), "{what}"),
        (PgValue::Jsonb(_), _) => {}
        _ => assert_eq!(got, want, "{what}"),
    }
}

#[test]
fn literals_read_back_as_the_values_they_spell_whatever_the_session_settings() {
    let runtime = runtime();
    let db = TestDb::new();
    runtime.block_on(async {
        let client = db.client().await;
        for ty in all_types() {
            let cases = readback_cases(&ty);
            let rows: Vec<String> = cases
                .iter()
                .enumerate()
                .map(|(id, (lit, _))| format!("({id}, {}::{})", sql_literal(*lit), ty.sql()))
                .collect();
            let setup = format!(
                "RESET ALL; DROP TABLE IF EXISTS t; CREATE TABLE t (id int, v {}); \
                 INSERT INTO t VALUES {}",
                ty.sql(),
                rows.join(", ")
            );
            client.batch_execute(&setup).await.unwrap();
            let query = "SELECT v FROM t ORDER BY id";
            let plain = copy_out(&client, query, std::slice::from_ref(&ty))
                .await
                .unwrap();
            assert_eq!(plain.len(), cases.len(), "{}", ty.sql());
            for ((lit, want), got) in cases.iter().zip(&plain) {
                assert_reads_back(&ty, *lit, &got[0], want);
            }
            let text_before = text_output(&client).await;
            client.batch_execute(ODD_SESSION).await.unwrap();
            assert_ne!(
                text_output(&client).await,
                text_before,
                "the settings took effect"
            );
            let odd = copy_out(&client, query, std::slice::from_ref(&ty))
                .await
                .unwrap();
            let bits =
                |rows: &[Vec<PgValue>]| rows.iter().map(|r| canonical(&r[0])).collect::<Vec<_>>();
            assert_eq!(bits(&odd), bits(&plain), "{} under {ODD_SESSION}", ty.sql());
            let float_bits = |rows: &[Vec<PgValue>]| {
                rows.iter()
                    .filter_map(|r| match r[0] {
                        PgValue::Float8(f) => Some(f.to_bits()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(float_bits(&odd), float_bits(&plain));
        }
    });
}

/// Text output that the odd session settings change.
async fn text_output(client: &Client) -> String {
    let sql = "SELECT concat_ws(' | ', '2024-03-01 12:00:00+00'::timestamptz, \
               '2024-03-01'::date, 0.1::float8)";
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Pairs of literals of one type: PostgreSQL decides whether they are equal.
fn equality_pairs(ty: &PgType) -> Vec<(Option<&'static str>, Option<&'static str>)> {
    let pairs: &[(&str, &str)] = match ty {
        PgType::Boolean => &[("true", "yes"), ("t", "f")],
        PgType::Bigint => &[("1", "01"), ("-0", "0"), ("1", "2")],
        PgType::DoublePrecision => &[
            ("-0", "0"),
            ("NaN", "NaN"),
            ("NaN", "Infinity"),
            ("Infinity", "-Infinity"),
            ("0.1", "0.1000000000000000055511151231257827"),
            ("1", "1.0000000000000002"),
            ("1e300", "1E+300"),
        ],
        // A typmod rounds to its scale and refuses infinities.
        PgType::Numeric(Some(_)) => &[
            ("1.5", "1.50"),
            ("0", "-0.000"),
            ("1e2", "100"),
            ("NaN", "NaN"),
            ("1.5", "1.51"),
            ("0.00001", "0.00002"),
            ("-7", "7"),
        ],
        PgType::Numeric(None) => &[
            ("1.5", "1.50"),
            ("1.5", "01.500"),
            ("0", "-0.000"),
            ("1e2", "100"),
            ("NaN", "NaN"),
            ("Infinity", "Infinity"),
            ("-Infinity", "Infinity"),
            ("NaN", "Infinity"),
            ("1.5", "1.51"),
            ("0.1", "0.10000000000000000000001"),
            ("-7", "7"),
        ],
        PgType::Text | PgType::Varchar(_) => &[
            ("", "NULL"),
            ("a", "a"),
            ("a ", "a"),
            ("é", "e\u{301}"),
            ("A", "a"),
        ],
        PgType::Bytea => &[("\\x00", "\\x"), ("\\xDEADBEEF", "\\xdeadbeef")],
        PgType::Date => &[("2024-03-01", "20240301"), ("2024-02-29", "2024-03-01")],
        PgType::Timestamptz => &[
            ("2024-03-01 12:00:00+00", "2024-03-01 21:00:00+09"),
            (
                "2024-03-01 12:00:00Z",
                "2024-03-01 07:00:00 America/New_York",
            ),
            ("2024-03-01 12:00:00+00", "2024-03-01 12:00:00.000001+00"),
            ("epoch", "1970-01-01 00:00:00+00"),
        ],
        PgType::Jsonb => &[
            (r#"{"b":1,"a":[1.0,2]}"#, r#"{"a":[1,2.00],"b":1}"#),
            (r#"{"a":1,"a":2}"#, r#"{"a":2}"#),
            ("1.0", "1"),
            ("1e2", "100"),
            ("-0", "0"),
            (r#""\u00e9""#, r#""é""#),
            (" [ 1 , 2 ] ", "[1,2]"),
            ("12345678901234567890.5", "12345678901234567890.50"),
            ("12345678901234567890", "12345678901234567891"),
            (r#"{"a":{"b":1}}"#, r#"{"a":{"b":2}}"#),
            ("[1,2]", "[2,1]"),
            (r#"{"a":null}"#, "{}"),
            (r#"{"a":1}"#, r#"{"a":"1"}"#),
            (r#"{"aa":1,"b":2}"#, r#"{"b":2,"aa":1}"#),
        ],
    };
    let first = pairs[0].0;
    let mut pairs: Vec<_> = pairs.iter().map(|(a, b)| (Some(*a), Some(*b))).collect();
    pairs.extend([(None, None), (None, Some(first))]);
    pairs
}

#[test]
fn postgresql_equality_agrees_with_canonical_equality() {
    let runtime = runtime();
    let db = TestDb::new();
    runtime.block_on(async {
        let client = db.client().await;
        for ty in all_types() {
            let pairs = equality_pairs(&ty);
            let rows: Vec<String> = pairs
                .iter()
                .enumerate()
                .map(|(id, (a, b))| {
                    let cast = |lit| format!("{}::{}", sql_literal(lit), ty.sql());
                    format!("({id}, {}, {})", cast(*a), cast(*b))
                })
                .collect();
            let setup = format!(
                "DROP TABLE IF EXISTS pairs; CREATE TABLE pairs (id int, a {0}, b {0}); \
                 INSERT INTO pairs VALUES {1}",
                ty.sql(),
                rows.join(", ")
            );
            client.batch_execute(&setup).await.unwrap();
            let query = "SELECT a, b, a IS NOT DISTINCT FROM b FROM pairs ORDER BY id";
            let types = [ty.clone(), ty.clone(), PgType::Boolean];
            let decoded = copy_out(&client, query, &types).await.unwrap();
            for ((a, b), row) in pairs.iter().zip(&decoded) {
                let pg_equal = row[2] == PgValue::Bool(true);
                let canonical_equal = canonical(&row[0]) == canonical(&row[1]);
                assert_eq!(
                    canonical_equal,
                    pg_equal,
                    "{}: {a:?} vs {b:?} read as {} and {}",
                    ty.sql(),
                    display(&row[0]),
                    display(&row[1])
                );
            }
        }
    });
}

#[test]
fn postgresql_order_by_agrees_with_compare_keys_and_the_encoded_order() {
    let runtime = runtime();
    let db = TestDb::new();
    runtime.block_on(async {
        let client = db.client().await;
        for ty in all_types().into_iter().filter(|t| *t != PgType::Jsonb) {
            let literals: Vec<Option<&str>> = equality_pairs(&ty)
                .into_iter()
                .flat_map(|(a, b)| [a, b])
                .collect();
            let values: Vec<String> = literals
                .iter()
                .map(|lit| format!("({}::{})", sql_literal(*lit), ty.sql()))
                .collect();
            let setup = format!(
                "DROP TABLE IF EXISTS vals; CREATE TABLE vals (v {}); INSERT INTO vals VALUES {}",
                ty.sql(),
                values.join(", ")
            );
            client.batch_execute(&setup).await.unwrap();
            let collate = if matches!(ty, PgType::Text | PgType::Varchar(_)) {
                " COLLATE \"C\""
            } else {
                ""
            };
            let query = format!("SELECT v FROM vals ORDER BY v{collate}");
            let sorted = copy_out(&client, &query, std::slice::from_ref(&ty))
                .await
                .unwrap();
            for pair in sorted.windows(2) {
                let order = compare_keys(&pair[0], &pair[1]);
                assert_ne!(
                    order,
                    Ordering::Greater,
                    "{}: {:?} sorts before {:?}",
                    ty.sql(),
                    pair[0],
                    pair[1]
                );
                // The merge compares keys as canonical bytes: the same order.
                let key = |row: &[PgValue]| row.iter().flat_map(canonical).collect::<Vec<u8>>();
                let encoded = compare_encoded_keys(&key(&pair[0]), &key(&pair[1]));
                assert_eq!(
                    encoded,
                    order,
                    "{}: {:?} vs {:?}",
                    ty.sql(),
                    pair[0],
                    pair[1]
                );
            }
        }
    });
}

#[test]
fn a_nan_with_another_payload_and_negative_zero_equal_their_canonical_values() {
    let runtime = runtime();
    let db = TestDb::new();
    runtime.block_on(async {
        let client = db.client().await;
        client
            .batch_execute("CREATE TABLE f (id bigint, v float8)")
            .await
            .unwrap();
        let odd_nan = f64::from_bits(0xfff8_0000_0000_0001);
        let mut encoder = CopyEncoder::new();
        for (id, v) in [(0, odd_nan), (1, -0.0)] {
            encoder
                .push_row(
                    &[PgType::Bigint, PgType::DoublePrecision],
                    &[PgValue::Int8(id), PgValue::Float8(v)],
                )
                .unwrap();
        }
        let copy = copy_statement("public", "f", &["id", "v"]);
        copy_in_chunks(&client, &copy, [encoder.finish()])
            .await
            .unwrap();
        let query = "SELECT v, v = 'NaN'::float8 OR v = 0 FROM f ORDER BY id";
        let rows = copy_out(&client, query, &[PgType::DoublePrecision, PgType::Boolean])
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        for (row, canonical_twin) in rows.iter().zip([f64::NAN, 0.0]) {
            assert_eq!(
                row[1],
                PgValue::Bool(true),
                "PostgreSQL calls {:?} equal to {canonical_twin}",
                row[0]
            );
            assert_eq!(
                canonical(&row[0]),
                canonical(&PgValue::Float8(canonical_twin))
            );
        }
    });
}

/// Values the encoder accepts for `ty`, edge cases included.
fn generated(ty: &PgType) -> BoxedStrategy<PgValue> {
    match ty {
        PgType::Boolean => any::<bool>().prop_map(PgValue::Bool).boxed(),
        PgType::Bigint => any::<i64>().prop_map(PgValue::Int8).boxed(),
        PgType::DoublePrecision => any::<f64>().prop_map(PgValue::Float8).boxed(),
        PgType::Numeric(None) => prop_oneof![
            "-?[0-9]{1,30}(\\.[0-9]{0,20})?",
            "[-+]?[0-9]{0,3}\\.[0-9]{1,40}",
            "[-+]?[0-9]{1,6}(\\.[0-9]{1,6})?[eE][-+]?[0-9]{1,2}",
            prop::sample::select(vec!["NaN", "Infinity", "-Infinity", "-0.000"])
                .prop_map(String::from),
        ]
        .prop_map(PgValue::Numeric)
        .boxed(),
        PgType::Numeric(Some(_)) => "-?[0-9]{1,8}(\\.[0-9]{0,4})?"
            .prop_map(PgValue::Numeric)
            .boxed(),
        PgType::Text | PgType::Varchar(_) => "(?s)[^\\x00]{0,40}".prop_map(PgValue::Text).boxed(),
        PgType::Bytea => prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(PgValue::Bytea)
            .boxed(),
        // Years 1 to 9999.
        PgType::Date => (-719_162..2_932_897_i32).prop_map(PgValue::Date).boxed(),
        PgType::Timestamptz => (-62_135_596_800_000_000..253_402_300_800_000_000_i64)
            .prop_map(PgValue::Timestamptz)
            .boxed(),
        PgType::Jsonb => ("[^\\x00]{0,12}", any::<i32>(), 0..4_u32)
            .prop_map(|(s, i, scale)| {
                let number = format!("{}.{}", i, "0".repeat(scale as usize + 1));
                PgValue::Jsonb(format!(
                    r#"{{"z":{number},"k":{},"a":[{i},{{"n":null}}],"k":true}}"#,
                    serde_json::Value::String(s)
                ))
            })
            .boxed(),
    }
}

/// Generated values of every type, copied in with `CopyEncoder` and out with `CopyDecoder`,
/// come back canonically equal (and exactly equal, except numeric's spelling and NaN bits).
#[test]
fn generated_values_survive_copy_in_and_copy_out() {
    let runtime = runtime();
    let db = TestDb::new();
    let client = runtime.block_on(db.client());
    for ty in all_types() {
        let create = format!(
            "DROP TABLE IF EXISTS g; CREATE TABLE g (id bigint, v {})",
            ty.sql()
        );
        runtime.block_on(client.batch_execute(&create)).unwrap();
        let maybe_null =
            prop::option::weighted(0.9, generated(&ty)).prop_map(|v| v.unwrap_or(PgValue::Null));
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&prop::collection::vec(maybe_null, 0..30), |values| {
                runtime.block_on(round_trip(&client, &ty, &values))
            })
            .unwrap_or_else(|e| panic!("{}: {e}", ty.sql()));
    }
}

async fn round_trip(client: &Client, ty: &PgType, values: &[PgValue]) -> Result<(), TestCaseError> {
    let fail = |e: String| TestCaseError::fail(e);
    client
        .batch_execute("TRUNCATE g")
        .await
        .map_err(|e| fail(error_chain(&e)))?;
    let types = [PgType::Bigint, ty.clone()];
    let mut encoder = CopyEncoder::new();
    for (id, v) in (0_i64..).zip(values) {
        encoder
            .push_row(&types, &[PgValue::Int8(id), v.clone()])
            .map_err(fail)?;
    }
    let copy = copy_statement("public", "g", &["id", "v"]);
    copy_in_chunks(client, &copy, [encoder.finish()])
        .await
        .map_err(|e| fail(error_chain(&e)))?;
    let rows = copy_out(
        client,
        "SELECT v FROM g ORDER BY id",
        std::slice::from_ref(ty),
    )
    .await
    .map_err(fail)?;
    prop_assert_eq!(rows.len(), values.len());
    for (sent, row) in values.iter().zip(&rows) {
        let got = &row[0];
        prop_assert_eq!(
            canonical(sent),
            canonical(got),
            "sent {:?}, read {:?}",
            sent,
            got
        );
        match (sent, got) {
            (PgValue::Float8(s), PgValue::Float8(g)) if !s.is_nan() => {
                prop_assert_eq!(s.to_bits(), g.to_bits())
            }
            (PgValue::Float8(_), _) | (PgValue::Numeric(_), _) | (PgValue::Jsonb(_), _) => {}
            _ => prop_assert_eq!(sent, got),
        }
    }
    Ok(())
}
