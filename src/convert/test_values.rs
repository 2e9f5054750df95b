//! SQLite values and column types for property tests of every path that turns a SQLite value
//! into PostgreSQL bytes (the snapshot's copy, the diff's canonical encoding): one strategy, so
//! each path is tested against the same awkward values.

use proptest::prelude::*;
use rusqlite::types::ValueRef;

use super::{PgType, F64_EXACT_INT};

/// Every column type a plan chooses, numeric with and without a scale.
pub(crate) fn all_types() -> Vec<PgType> {
    vec![
        PgType::Boolean,
        PgType::Bigint,
        PgType::DoublePrecision,
        PgType::Numeric(None),
        PgType::Numeric(Some((6, 2))),
        PgType::Text,
        PgType::Varchar(3),
        PgType::Bytea,
        PgType::Date,
        PgType::Timestamptz,
        PgType::Jsonb,
    ]
}

/// SQLite values as an application stores them: every storage class, with the texts the
/// plans read (dates, timestamps, booleans, JSON, numbers) and the ones they refuse.
#[derive(Debug, Clone)]
pub(crate) enum Stored {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl Stored {
    pub(crate) fn value_ref(&self) -> ValueRef<'_> {
        match self {
            Stored::Null => ValueRef::Null,
            Stored::Integer(i) => ValueRef::Integer(*i),
            Stored::Real(f) => ValueRef::Real(*f),
            Stored::Text(b) => ValueRef::Text(b),
            Stored::Blob(b) => ValueRef::Blob(b),
        }
    }
}

pub(crate) fn stored() -> impl Strategy<Value = Stored> {
    let texts = prop_oneof![
        "\\PC{0,5}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}",
        "(19|20|99)[0-9]{2}-(0[1-9]|1[0-3])-(0[1-9]|[1-3][0-9])([ Tt]([01][0-9]|2[0-4]):[0-5][0-9](:[0-6][0-9](\\.[0-9]{1,9})?)?(Z|[+-][01][0-9](:?[0-5][0-9])?)?)?",
        prop::sample::select(vec!["true", "F", "t", "FALSE", "yes", "0", "1.5", "NaN", "ab\0c", "\"a\"", "{\"b\":1,\"a\":[1.0]}", "[1,", "\"\\u0000\"", "\"\\ud800\"", "1e99999999999999999999", " [1e2 , -0] "])
            .prop_map(String::from),
        json_text(),
        (1..140_usize).prop_map(|depth| format!("{}1{}", "[".repeat(depth), "]".repeat(depth))),
    ];
    prop_oneof![
        Just(Stored::Null),
        prop_oneof![
            any::<i64>(),
            -2..3_i64,
            Just(F64_EXACT_INT),
            Just(F64_EXACT_INT + 1),
            Just(-F64_EXACT_INT - 1),
            -70_000_000_000..300_000_000_000_i64
        ]
        .prop_map(Stored::Integer),
        prop_oneof![
            any::<f64>(),
            Just(0.0),
            Just(1.0),
            Just(-0.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            1_000_000.0..3_000_000.0_f64,
            -1e3..1e3_f64
        ]
        .prop_map(Stored::Real),
        texts.prop_map(|s| Stored::Text(s.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..6).prop_map(Stored::Text),
        prop::collection::vec(any::<u8>(), 0..6).prop_map(Stored::Blob),
    ]
}

/// JSON as applications write it, and near misses: whitespace, key order, duplicate keys,
/// number spellings, escapes, unterminated values.
pub(crate) fn json_text() -> impl Strategy<Value = String> {
    let scalar = r#"(-?(0|[1-9][0-9]{0,2})(\.[0-9]{1,3})?([eE][-+]?[0-9]{1,2})?|"([a-z ]|\\[n"/u]|\\u00e9){0,3}"|true|null|01|\.5)"#;
    let member = format!(r#""[ab]{{1,2}}" ?: ?({scalar}|\[ ?({scalar},? ?){{0,3}}\])"#);
    let pattern = format!(
        r#"[ \n]?(\{{ ?({member}, ?){{0,3}}{member}? ?\}}|\[({scalar}, ?){{0,3}}\]|{scalar})[ \t]?"#
    );
    proptest::string::string_regex(&pattern).expect("a valid pattern")
}
