//! Canonical bytes straight from what each side reads, without building a [`PgValue`] first:
//! a SQLite value through the column's conversion plan ([`encode_sqlite`]), and a field of a
//! binary `COPY … TO STDOUT` ([`encode_copy_field`]). Each is the fast path of a general one —
//! `encode_canonical(convert(…))` and `encode_canonical(decode_value(…))` — and produces the
//! same bytes and the same errors for every input (property tests below), so promise 5 rests on
//! one definition: the encoding in `canonical`. Integers, floats, text, bytea, booleans, dates
//! and timestamps take the fast path; numeric and jsonb (and every value that does not fit its
//! column, for the exact reason) go through the general one.

use rusqlite::types::ValueRef;

use super::canonical::{
    canonical_float_bits, encode_canonical, encode_jsonb, length_prefixed, tagged, TAG_BOOL,
    TAG_BYTEA, TAG_DATE, TAG_FLOAT8, TAG_INT8, TAG_NULL, TAG_TEXT, TAG_TIMESTAMPTZ,
};
use crate::convert::{convert, datetime, ConvertOptions, Misfit, PgType};
use crate::target::copy_binary::JSONB_VERSION;
use crate::target::copy_out::{decode_date_field, decode_timestamptz_field, decode_value};

/// The largest integer magnitude a double represents exactly (2^53), as `convert` allows.
const F64_EXACT_INT: i64 = 1 << 53;

/// Appends `encode_canonical(&convert(ty, v, opts)?)`: the canonical bytes of what PostgreSQL
/// should hold for SQLite value `v` in a column of type `ty`, or the reason it does not fit.
pub fn encode_sqlite(
    out: &mut Vec<u8>,
    ty: &PgType,
    v: ValueRef<'_>,
    opts: ConvertOptions,
) -> Result<(), Misfit> {
    let done = match (ty, v) {
        (_, ValueRef::Null) => {
            out.push(TAG_NULL);
            true
        }
        (PgType::Bigint, ValueRef::Integer(i)) => {
            tagged(out, TAG_INT8, &i.to_be_bytes());
            true
        }
        (PgType::DoublePrecision, ValueRef::Real(f)) => float(out, f),
        (PgType::DoublePrecision, ValueRef::Integer(i))
            if (-F64_EXACT_INT..=F64_EXACT_INT).contains(&i) =>
        {
            float(out, i as f64)
        }
        (PgType::Text, ValueRef::Text(b)) => text(out, b, None),
        (PgType::Varchar(n), ValueRef::Text(b)) => text(out, b, Some(*n)),
        (PgType::Bytea, ValueRef::Blob(b) | ValueRef::Text(b)) => {
            length_prefixed(out, TAG_BYTEA, b);
            true
        }
        (PgType::Boolean, ValueRef::Integer(i @ (0 | 1))) => {
            out.extend_from_slice(&[TAG_BOOL, i as u8]);
            true
        }
        (PgType::Timestamptz, _) => timestamp(out, v, opts),
        (PgType::Date, ValueRef::Text(b)) => date(out, b),
        _ => false,
    };
    if done {
        return Ok(());
    }
    convert(ty, v, opts).map(|value| encode_canonical(out, &value))
}

fn float(out: &mut Vec<u8>, f: f64) -> bool {
    tagged(out, TAG_FLOAT8, &canonical_float_bits(f).to_be_bytes());
    true
}

/// Text that `convert` takes as it is: UTF-8 without NUL (and at most `max_chars` characters).
fn text(out: &mut Vec<u8>, b: &[u8], max_chars: Option<u32>) -> bool {
    let Ok(s) = std::str::from_utf8(b) else {
        return false;
    };
    if b.contains(&0) || max_chars.is_some_and(|n| s.chars().count() > n as usize) {
        return false;
    }
    length_prefixed(out, TAG_TEXT, b);
    true
}

fn timestamp(out: &mut Vec<u8>, v: ValueRef<'_>, opts: ConvertOptions) -> bool {
    let micros = match v {
        ValueRef::Integer(secs) => datetime::from_epoch_seconds(secs),
        ValueRef::Real(jd) => datetime::from_julian_day(jd),
        ValueRef::Text(b) => match std::str::from_utf8(b) {
            Ok(s) => datetime::parse_text(s, opts.default_offset_seconds).map(|p| p.micros),
            Err(_) => return false,
        },
        _ => return false,
    };
    let Ok(micros) = micros else {
        return false;
    };
    tagged(out, TAG_TIMESTAMPTZ, &micros.to_be_bytes());
    true
}

fn date(out: &mut Vec<u8>, b: &[u8]) -> bool {
    let days = std::str::from_utf8(b)
        .ok()
        .and_then(|s| datetime::parse_date_only(s).ok());
    let Some(days) = days else {
        return false;
    };
    tagged(out, TAG_DATE, &days.to_be_bytes());
    true
}

/// Appends `encode_canonical(&decode_value(ty, payload)?)` for one field of a binary COPY
/// (`None` for NULL): the canonical bytes of what PostgreSQL holds, or why the bytes are not a
/// value of `ty` (the same message `decode_value` gives).
pub fn encode_copy_field(
    out: &mut Vec<u8>,
    ty: &PgType,
    payload: Option<&[u8]>,
) -> Result<(), String> {
    let Some(payload) = payload else {
        out.push(TAG_NULL);
        return Ok(());
    };
    match (ty, payload.len()) {
        (PgType::Bigint, 8) => tagged(out, TAG_INT8, payload),
        (PgType::DoublePrecision, 8) => {
            let f = f64::from_be_bytes(payload.try_into().expect("8 bytes"));
            float(out, f);
        }
        (PgType::Text | PgType::Varchar(_), _) if std::str::from_utf8(payload).is_ok() => {
            length_prefixed(out, TAG_TEXT, payload)
        }
        (PgType::Bytea, _) => length_prefixed(out, TAG_BYTEA, payload),
        (PgType::Boolean, 1) if payload[0] <= 1 => out.extend_from_slice(&[TAG_BOOL, payload[0]]),
        (PgType::Timestamptz, 8) => {
            let micros = decode_timestamptz_field(payload).map_err(|e| typed(ty, e))?;
            tagged(out, TAG_TIMESTAMPTZ, &micros.to_be_bytes());
        }
        (PgType::Date, 4) => {
            let days = decode_date_field(payload).map_err(|e| typed(ty, e))?;
            tagged(out, TAG_DATE, &days.to_be_bytes());
        }
        (PgType::Jsonb, _) => match payload.split_first() {
            Some((&JSONB_VERSION, json)) if std::str::from_utf8(json).is_ok() => {
                let json = std::str::from_utf8(json).expect("checked just above");
                encode_jsonb(out, json);
            }
            _ => encode_canonical(out, &decode_value(ty, payload)?),
        },
        _ => encode_canonical(out, &decode_value(ty, payload)?),
    }
    Ok(())
}

/// An error of `decode_value`'s form: the type, then what is wrong.
fn typed(ty: &PgType, e: String) -> String {
    format!("{}: {e}", ty.sql())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::convert::PgValue;
    use crate::target::copy_binary::encode_value;

    fn all_types() -> Vec<PgType> {
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

    fn general_sqlite(
        ty: &PgType,
        v: ValueRef<'_>,
        opts: ConvertOptions,
    ) -> Result<Vec<u8>, Misfit> {
        convert(ty, v, opts).map(|value| {
            let mut out = Vec::new();
            encode_canonical(&mut out, &value);
            out
        })
    }

    fn fast_sqlite(ty: &PgType, v: ValueRef<'_>, opts: ConvertOptions) -> Result<Vec<u8>, Misfit> {
        let mut out = vec![0xEE];
        encode_sqlite(&mut out, ty, v, opts).map(|()| out.split_off(1))
    }

    /// SQLite values as an application stores them: every storage class, with the texts the
    /// plans read (dates, timestamps, booleans, JSON, numbers) and the ones they refuse.
    #[derive(Debug, Clone)]
    enum Stored {
        Null,
        Integer(i64),
        Real(f64),
        Text(Vec<u8>),
        Blob(Vec<u8>),
    }

    impl Stored {
        fn value_ref(&self) -> ValueRef<'_> {
            match self {
                Stored::Null => ValueRef::Null,
                Stored::Integer(i) => ValueRef::Integer(*i),
                Stored::Real(f) => ValueRef::Real(*f),
                Stored::Text(b) => ValueRef::Text(b),
                Stored::Blob(b) => ValueRef::Blob(b),
            }
        }
    }

    fn stored() -> impl Strategy<Value = Stored> {
        let texts = prop_oneof![
            "\\PC{0,5}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}",
            "(19|20|99)[0-9]{2}-(0[1-9]|1[0-3])-(0[1-9]|[1-3][0-9])([ Tt]([01][0-9]|2[0-4]):[0-5][0-9](:[0-6][0-9](\\.[0-9]{1,9})?)?(Z|[+-][01][0-9](:?[0-5][0-9])?)?)?",
            prop::sample::select(vec!["true", "F", "t", "FALSE", "yes", "0", "1.5", "NaN", "ab\0c", "\"a\"", "{\"b\":1,\"a\":[1.0]}", "[1,", "\"\\u0000\""])
                .prop_map(String::from),
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

    /// A field payload for `ty`: a real value's bytes, or bytes of any length and content.
    fn payload(ty: PgType) -> BoxedStrategy<(PgType, Option<Vec<u8>>)> {
        let valid = match &ty {
            PgType::Boolean => any::<bool>().prop_map(PgValue::Bool).boxed(),
            PgType::Bigint => any::<i64>().prop_map(PgValue::Int8).boxed(),
            PgType::DoublePrecision => prop_oneof![any::<f64>(), Just(-0.0), Just(f64::NAN)]
                .prop_map(PgValue::Float8)
                .boxed(),
            PgType::Numeric(_) => "-?[0-9]{1,8}(\\.[0-9]{0,6})?"
                .prop_map(PgValue::Numeric)
                .boxed(),
            PgType::Text | PgType::Varchar(_) => "\\PC{0,6}".prop_map(PgValue::Text).boxed(),
            PgType::Bytea => prop::collection::vec(any::<u8>(), 0..6)
                .prop_map(PgValue::Bytea)
                .boxed(),
            PgType::Date => any::<i32>().prop_map(PgValue::Date).boxed(),
            PgType::Timestamptz => any::<i64>().prop_map(PgValue::Timestamptz).boxed(),
            PgType::Jsonb => prop_oneof![
                r#"\{"[a-c]{1,2}": ?[0-9](\.[0-9]0?)?(, "[ab]": ?"x\\n")?\}"#,
                "\\PC{0,5}"
            ]
            .prop_map(PgValue::Jsonb)
            .boxed(),
        };
        let encoded = {
            let ty = ty.clone();
            valid.prop_filter_map("encodable", move |v| {
                let mut out = Vec::new();
                encode_value(&mut out, &ty, &v).ok().map(|()| Some(out))
            })
        };
        let edges = prop::sample::select(vec![
            i64::MIN.to_be_bytes().to_vec(),
            i64::MAX.to_be_bytes().to_vec(),
            i32::MIN.to_be_bytes().to_vec(),
            i32::MAX.to_be_bytes().to_vec(),
            vec![1, 0xff],
            vec![2],
            vec![],
        ])
        .prop_map(Some);
        let any_bytes = prop::collection::vec(any::<u8>(), 0..10).prop_map(Some);
        (
            Just(ty),
            prop_oneof![4 => encoded, 1 => edges, 1 => any_bytes, 1 => Just(None)],
        )
            .boxed()
    }

    fn field() -> impl Strategy<Value = (PgType, Option<Vec<u8>>)> {
        prop::sample::select(all_types()).prop_flat_map(payload)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// The fast path writes exactly what the general path writes, or refuses with the
        /// same reason, for every value and type.
        #[test]
        fn sqlite_values_encode_like_convert_then_encode(
            ty in prop::sample::select(all_types()),
            v in stored(),
            offset in prop::sample::select(vec![0, 7200, -3600]),
        ) {
            let opts = ConvertOptions { default_offset_seconds: offset };
            let v = v.value_ref();
            prop_assert_eq!(fast_sqlite(&ty, v, opts), general_sqlite(&ty, v, opts), "{:?} as {}", v, ty.sql());
        }

        #[test]
        fn copy_fields_encode_like_decode_then_encode((ty, payload) in field()) {
            let general = match &payload {
                None => Ok(vec![TAG_NULL]),
                Some(p) => decode_value(&ty, p).map(|value| {
                    let mut out = Vec::new();
                    encode_canonical(&mut out, &value);
                    out
                }),
            };
            let mut out = vec![0xEE];
            let fast = encode_copy_field(&mut out, &ty, payload.as_deref()).map(|()| out.split_off(1));
            prop_assert_eq!(fast, general, "{} {:?}", ty.sql(), payload);
        }
    }

    #[test]
    fn a_misfit_keeps_its_reason_and_writes_nothing() {
        let opts = ConvertOptions::default();
        let mut out = Vec::new();
        let err = encode_sqlite(&mut out, &PgType::Varchar(2), ValueRef::Text(b"abc"), opts);
        assert_eq!(
            err.unwrap_err().reason,
            "3 characters do not fit varchar(2)"
        );
        let err = encode_sqlite(&mut out, &PgType::Date, ValueRef::Text(b"2024-13-01"), opts);
        assert!(err.is_err());
        assert!(out.is_empty(), "{out:?}");
    }
}
