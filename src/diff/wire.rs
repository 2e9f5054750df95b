//! Canonical bytes straight from what each side reads, without building a [`PgValue`] first:
//! a SQLite value through the column's conversion plan ([`encode_sqlite`]), and a field of a
//! binary `COPY … TO STDOUT` ([`encode_copy_field`]). Each is the fast path of a general one —
//! `encode_canonical(convert(…))` and `encode_canonical(decode_value(…))` — and produces the
//! same bytes and the same errors for every input (property tests below), so promise 5 rests on
//! one definition: the encoding in `canonical`. Integers, floats, text, bytea, booleans, dates,
//! timestamps, finite numerics from COPY and JSON text from SQLite (parsed once, not validated
//! and then parsed again) take the fast path; numerics from SQLite, the rarer cases (NaN, JSON
//! stored as a number) and every value that does not fit its column (for the exact reason) go
//! through the general one.

use rusqlite::types::ValueRef;

use super::canonical::{
    canonical_float_bits, encode_canonical, encode_jsonb, encode_jsonb_if_json, length_prefixed,
    tagged, TAG_BOOL, TAG_BYTEA, TAG_DATE, TAG_FLOAT8, TAG_INT8, TAG_NULL, TAG_NUMERIC, TAG_TEXT,
    TAG_TIMESTAMPTZ,
};
use crate::convert::{convert, datetime, ConvertOptions, Misfit, PgType, F64_EXACT_INT};
use crate::target::copy_binary::{JSONB_VERSION, NUMERIC_DSCALE_MAX, NUMERIC_NEG, NUMERIC_POS};
use crate::target::copy_out::{decode_date_field, decode_timestamptz_field, decode_value};

/// The largest integer magnitude a double represents exactly (2^53), as `convert` allows.
/// JSON text with fewer brackets than this nests less deeply than serde_json's recursion limit
/// (128), which `convert` validates with; deeper text takes the general path.
const SHALLOW_JSON_BRACKETS: usize = 100;

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
        (PgType::Jsonb, ValueRef::Text(b)) => json(out, b),
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

/// JSON text parsed once: `convert` validates it with serde_json and the encoding parses it
/// again to canonicalise it. Text the canonical parser accepts is text serde_json accepts (the
/// same RFC 8259 grammar; serde_json only adds a nesting limit, which shallow text stays under),
/// so when it accepts, `convert` would have taken the text as it is. Anything else — not JSON
/// to the canonical parser (serde_json decides between a misfit and a jsonb value that is
/// hashed as its text), NUL, deep nesting — takes the general path.
fn json(out: &mut Vec<u8>, b: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(b) else {
        return false;
    };
    let brackets = b.iter().filter(|&&c| c == b'[' || c == b'{').count();
    if brackets >= SHALLOW_JSON_BRACKETS || b.contains(&0) || s.contains("\\u0000") {
        return false;
    }
    encode_jsonb_if_json(out, s)
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
        (PgType::Numeric(_), _) if finite_numeric(out, payload) => {}
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
            Some((&JSONB_VERSION, json)) => match std::str::from_utf8(json) {
                Ok(json) => encode_jsonb(out, json),
                Err(_) => encode_canonical(out, &decode_value(ty, payload)?),
            },
            _ => encode_canonical(out, &decode_value(ty, payload)?),
        },
        _ => encode_canonical(out, &decode_value(ty, payload)?),
    }
    Ok(())
}

/// A finite numeric's `numeric_send` payload (header of four 16-bit words: digit count, weight
/// of the first base-10000 digit, sign, display scale; then the digits), encoded as
/// `encode_canonical` encodes the text `decode_value` prints for it — exactly `dscale` fraction
/// digits, the rest dropped as `numeric_recv` drops them — without printing it: the decimal
/// digits down to 10^-dscale, without leading and trailing zeros, and the exponent of the first.
/// False, with nothing written, for any payload that is not a well-formed finite numeric (NaN,
/// infinities and malformed bytes take the general path, which names the problem).
fn finite_numeric(out: &mut Vec<u8>, payload: &[u8]) -> bool {
    let Some((head, body)) = payload.split_first_chunk::<8>() else {
        return false;
    };
    let word = |i: usize| u16::from_be_bytes([head[i], head[i + 1]]);
    let (ndigits, weight, sign, dscale) = (word(0) as i16, word(2) as i16, word(4), word(6));
    let groups = body
        .chunks_exact(2)
        .map(|d| u16::from_be_bytes([d[0], d[1]]));
    let well_formed = usize::try_from(ndigits).is_ok_and(|n| body.len() == n * 2)
        && (sign == NUMERIC_POS || sign == NUMERIC_NEG)
        && i64::from(dscale) <= NUMERIC_DSCALE_MAX
        && groups.clone().all(|g| g <= 9_999);
    if !well_formed {
        return false;
    }
    out.push(TAG_NUMERIC);
    let head_at = out.len();
    out.extend_from_slice(&[0; 1 + 8 + 4]);
    let digits_at = out.len();
    let (mut exponent, mut kept) = (0_i64, 0_usize);
    let lowest = -i64::from(dscale);
    'groups: for (i, group) in groups.enumerate() {
        let group_exponent = 4 * (i64::from(weight) - i as i64);
        for (k, unit) in [1000, 100, 10, 1].into_iter().enumerate() {
            let position = group_exponent + 3 - k as i64;
            if position < lowest {
                break 'groups;
            }
            let digit = (group / unit % 10) as u8;
            if out.len() == digits_at && digit == 0 {
                continue;
            }
            if out.len() == digits_at {
                exponent = position;
            }
            out.push(b'0' + digit);
            if digit != 0 {
                kept = out.len();
            }
        }
    }
    out.truncate(kept.max(digits_at));
    let len = out.len() - digits_at;
    let negative = sign == NUMERIC_NEG && len > 0;
    out[head_at] = u8::from(!negative);
    out[head_at + 1..head_at + 9].copy_from_slice(&exponent.to_be_bytes());
    out[head_at + 9..head_at + 13].copy_from_slice(&(len as u32).to_be_bytes());
    true
}

/// An error of `decode_value`'s form: the type, then what is wrong.
fn typed(ty: &PgType, e: String) -> String {
    format!("{}: {e}", ty.sql())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::convert::test_values::{all_types, json_text, stored};
    use crate::convert::PgValue;
    use crate::target::copy_binary::encode_value;

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
        let numeric_sends = numeric_send().prop_map(Some);
        (
            Just(ty),
            prop_oneof![
                4 => encoded,
                1 => edges,
                1 => any_bytes,
                1 => Just(None),
                2 => numeric_sends,
            ],
        )
            .boxed()
    }

    /// `numeric_send` payloads PostgreSQL would not send but might: leading and trailing zero
    /// digits, digits beyond the display scale, any weight and sign word, out-of-range digits.
    fn numeric_send() -> impl Strategy<Value = Vec<u8>> {
        let sign = prop_oneof![
            4 => Just(NUMERIC_POS),
            4 => Just(NUMERIC_NEG),
            1 => prop::sample::select(vec![0xC000, 0xD000, 0xF000, 0x8000]),
        ];
        let digit = prop_oneof![8 => 0..=9_999_u16, 1 => Just(0), 1 => Just(10_000)];
        let digits = prop::collection::vec(digit, 0..5);
        let weight = prop_oneof![-6..6_i16, Just(i16::MIN), Just(i16::MAX)];
        let dscale = prop_oneof![0..24_u16, Just(16_383), Just(16_384)];
        (digits, weight, sign, dscale).prop_map(|(digits, weight, sign, dscale)| {
            let mut out = Vec::new();
            for word in [digits.len() as u16, weight as u16, sign, dscale] {
                out.extend_from_slice(&word.to_be_bytes());
            }
            for d in digits {
                out.extend_from_slice(&d.to_be_bytes());
            }
            out
        })
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
        fn json_texts_encode_like_convert_then_encode(text in json_text()) {
            let opts = ConvertOptions::default();
            let v = ValueRef::Text(text.as_bytes());
            prop_assert_eq!(fast_sqlite(&PgType::Jsonb, v, opts), general_sqlite(&PgType::Jsonb, v, opts), "{}", text);
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

    /// The JSON texts the parse-once path must decide exactly as `convert` does: near misses,
    /// NUL escapes, lone surrogates, exponents beyond i64, nesting around serde_json's limit.
    #[test]
    fn json_edge_cases_encode_like_convert_then_encode() {
        let opts = ConvertOptions::default();
        let mut texts: Vec<String> = [
            "\"\\u0000\"",
            "{\"a\":\"x\\u0000\"}",
            "\"\\ud800\"",
            "\"\\udc00\\ud800\"",
            "1e99999999999999999999",
            "[1e9223372036854775807, 10e9223372036854775807]",
            " {\"b\" : 1.50 , \"a\":[true,null]} ",
            "{\"a\":1,\"a\":2}",
            "[1,]",
            "01",
            "\"\t\"",
        ]
        .map(String::from)
        .to_vec();
        for depth in [1, 99, 100, 126, 127, 128, 129, 200] {
            texts.push(format!("{}1{}", "[".repeat(depth), "]".repeat(depth)));
            texts.push(format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)));
        }
        for text in &texts {
            let v = ValueRef::Text(text.as_bytes());
            let (fast, general) = (
                fast_sqlite(&PgType::Jsonb, v, opts),
                general_sqlite(&PgType::Jsonb, v, opts),
            );
            assert_eq!(fast, general, "{text}");
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
