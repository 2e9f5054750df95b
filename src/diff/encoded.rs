//! Working on canonical bytes without going back to values: splitting a run of encoded values,
//! ordering encoded keys as PostgreSQL orders the values (the merge's comparison), and reading an
//! encoded value back for a report. The diff streams rows as canonical bytes (see `streams`), so
//! these are what the merge uses; each agrees with its value-level twin in `canonical`
//! ([`compare_keys`](super::canonical::compare_keys), [`display`]), which the property tests
//! below check for every value.

use std::cmp::Ordering;

use super::canonical::{
    display, TAG_BOOL, TAG_BYTEA, TAG_DATE, TAG_FLOAT8, TAG_INT8, TAG_JSONB, TAG_JSONB_INVALID,
    TAG_NULL, TAG_NUMERIC, TAG_NUMERIC_INVALID, TAG_NUMERIC_NAN, TAG_NUMERIC_NEG_INF,
    TAG_NUMERIC_POS_INF, TAG_TEXT, TAG_TIMESTAMPTZ,
};
use crate::convert::PgValue;

/// Bytes of a `u32` length or count.
const LEN: usize = 4;
/// Sign byte and i64 exponent before a finite numeric's length-prefixed digits.
const NUMERIC_HEAD: usize = 1 + 8;

/// The byte length of the one encoded value at the front of `bytes` (which must start with a
/// whole value, as every slice the diff builds does).
pub fn value_len(bytes: &[u8]) -> usize {
    let prefixed = |at: usize| at + LEN + be_u32(&bytes[at..]) as usize;
    1 + match bytes[0] {
        TAG_NULL | TAG_NUMERIC_NAN | TAG_NUMERIC_POS_INF | TAG_NUMERIC_NEG_INF => 0,
        TAG_BOOL => 1,
        TAG_DATE => 4,
        TAG_INT8 | TAG_FLOAT8 | TAG_TIMESTAMPTZ => 8,
        TAG_NUMERIC => prefixed(1 + NUMERIC_HEAD) - 1,
        _ => prefixed(1) - 1,
    }
}

/// The encoded values of a run (no count prefix), one slice each.
pub fn values(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let (value, rest) = bytes.split_at(value_len(bytes));
        bytes = rest;
        Some(value)
    })
}

/// [`compare_keys`](super::canonical::compare_keys) of two encoded keys (runs of values without
/// their count): PostgreSQL's `ORDER BY` of the values, text in byte order, NULL last; `Equal`
/// exactly when the bytes are equal.
pub fn compare_encoded_keys(a: &[u8], b: &[u8]) -> Ordering {
    let (mut a, mut b) = (a, b);
    while !a.is_empty() && !b.is_empty() {
        let (x, y) = (&a[..value_len(a)], &b[..value_len(b)]);
        let order = compare_value(x, y);
        if order.is_ne() {
            return order;
        }
        (a, b) = (&a[x.len()..], &b[y.len()..]);
    }
    // Equal so far: the key with values left over is longer, hence greater.
    (!a.is_empty()).cmp(&!b.is_empty())
}

/// The kind of PostgreSQL value an encoding is, as `compare_keys` groups them.
fn family(tag: u8) -> u8 {
    match tag {
        TAG_NUMERIC..=TAG_NUMERIC_INVALID => TAG_NUMERIC,
        TAG_JSONB_INVALID => TAG_JSONB,
        other => other,
    }
}

fn compare_value(x: &[u8], y: &[u8]) -> Ordering {
    let (tx, ty) = (x[0], y[0]);
    match (tx, ty) {
        (TAG_NULL, TAG_NULL) => Ordering::Equal,
        (TAG_NULL, _) => Ordering::Greater,
        (_, TAG_NULL) => Ordering::Less,
        _ if family(tx) != family(ty) => x.cmp(y),
        (TAG_INT8, _) | (TAG_TIMESTAMPTZ, _) => be_i64(&x[1..]).cmp(&be_i64(&y[1..])),
        (TAG_DATE, _) => be_i32(&x[1..]).cmp(&be_i32(&y[1..])),
        (TAG_FLOAT8, _) => compare_float(be_f64(&x[1..]), be_f64(&y[1..])),
        (TAG_TEXT, _) | (TAG_BYTEA, _) => x[1 + LEN..].cmp(&y[1 + LEN..]),
        _ if family(tx) == TAG_NUMERIC => compare_numeric(x, y),
        // bool (0 < 1) and jsonb: by bytes, as `compare_keys` does.
        _ => x.cmp(y),
    }
}

/// float8's btree order on canonical bits: NaN (one NaN) above everything.
fn compare_float(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// numeric's order: -Infinity < finite < Infinity < NaN < unreadable text (by its bytes).
fn compare_numeric(x: &[u8], y: &[u8]) -> Ordering {
    let rank = |tag: u8| match tag {
        TAG_NUMERIC_NEG_INF => 0,
        TAG_NUMERIC => 1,
        TAG_NUMERIC_POS_INF => 2,
        TAG_NUMERIC_NAN => 3,
        _ => 4,
    };
    match (x[0], y[0]) {
        (TAG_NUMERIC, TAG_NUMERIC) => compare_finite(x, y),
        (TAG_NUMERIC_INVALID, TAG_NUMERIC_INVALID) => x[1 + LEN..].cmp(&y[1 + LEN..]),
        (a, b) => rank(a).cmp(&rank(b)),
    }
}

/// Two finite numerics: sign, then exponent, then significant digits.
fn compare_finite(x: &[u8], y: &[u8]) -> Ordering {
    let signum = |v: &[u8]| match (finite_digits(v).is_empty(), v[1]) {
        (true, _) => 0_i8,
        (false, 0) => -1,
        (false, _) => 1,
    };
    let by_sign = signum(x).cmp(&signum(y));
    if by_sign.is_ne() || signum(x) == 0 {
        return by_sign;
    }
    let magnitude = be_i64(&x[2..])
        .cmp(&be_i64(&y[2..]))
        .then_with(|| finite_digits(x).cmp(finite_digits(y)));
    if signum(x) < 0 {
        magnitude.reverse()
    } else {
        magnitude
    }
}

fn finite_digits(v: &[u8]) -> &[u8] {
    &v[1 + NUMERIC_HEAD + LEN..]
}

/// The value an encoding stands for, as the report shows it: equal to the encoded value under
/// the spec's equality (numeric and jsonb in their canonical spelling, `-0` as `0`).
pub fn decode(v: &[u8]) -> PgValue {
    let payload = &v[1..];
    let text = |b: &[u8]| String::from_utf8_lossy(&b[LEN..]).into_owned();
    match v[0] {
        TAG_NULL => PgValue::Null,
        TAG_BOOL => PgValue::Bool(payload[0] != 0),
        TAG_INT8 => PgValue::Int8(be_i64(payload)),
        TAG_FLOAT8 => PgValue::Float8(be_f64(payload)),
        TAG_NUMERIC => PgValue::Numeric(finite_text(v)),
        TAG_NUMERIC_NAN => PgValue::Numeric("NaN".into()),
        TAG_NUMERIC_POS_INF => PgValue::Numeric("Infinity".into()),
        TAG_NUMERIC_NEG_INF => PgValue::Numeric("-Infinity".into()),
        TAG_NUMERIC_INVALID => PgValue::Numeric(text(payload)),
        TAG_TEXT => PgValue::Text(text(payload)),
        TAG_BYTEA => PgValue::Bytea(payload[LEN..].to_vec()),
        TAG_DATE => PgValue::Date(be_i32(payload)),
        TAG_TIMESTAMPTZ => PgValue::Timestamptz(be_i64(payload)),
        TAG_JSONB | TAG_JSONB_INVALID => PgValue::Jsonb(text(payload)),
        tag => PgValue::Text(format!("(unknown canonical tag {tag:#04x})")),
    }
}

/// A finite numeric as `d.ddde±x` text, which numeric parsing reads back to the same value.
fn finite_text(v: &[u8]) -> String {
    let digits = finite_digits(v);
    let Some((first, rest)) = digits.split_first() else {
        return "0".into();
    };
    let mut out = String::with_capacity(digits.len() + 24);
    if v[1] == 0 {
        out.push('-');
    }
    out.push(char::from(*first));
    if !rest.is_empty() {
        out.push('.');
        out.extend(rest.iter().map(|&d| char::from(d)));
    }
    out.push('e');
    out.push_str(&be_i64(&v[2..]).to_string());
    out
}

/// [`display`] of an encoded value.
pub fn display_encoded(v: &[u8]) -> String {
    display(&decode(v))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

fn be_f64(b: &[u8]) -> f64 {
    f64::from_bits(be_i64(b) as u64)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::diff::canonical::{compare_keys, encode_canonical};
    use PgValue as V;

    fn enc(v: &PgValue) -> Vec<u8> {
        let mut out = Vec::new();
        encode_canonical(&mut out, v);
        out
    }

    fn enc_all(vs: &[PgValue]) -> Vec<u8> {
        vs.iter().flat_map(enc).collect()
    }

    /// Values of every tag, with the spellings and edge cases the rules are about.
    fn value() -> impl Strategy<Value = PgValue> {
        prop_oneof![
            Just(V::Null),
            any::<bool>().prop_map(V::Bool),
            prop_oneof![any::<i64>(), -3..3_i64].prop_map(V::Int8),
            prop_oneof![
                any::<f64>(),
                Just(-0.0),
                Just(0.0),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                (-3..3_i32).prop_map(f64::from)
            ]
            .prop_map(V::Float8),
            prop_oneof![
                "[-+]?[0-9]{0,4}(\\.[0-9]{0,4})?([eE][-+]?[0-9]{1,2})?",
                prop::sample::select(vec![
                    "NaN",
                    "inf",
                    "-Infinity",
                    "x1",
                    "",
                    "1e99999999999999999999"
                ])
                .prop_map(String::from),
            ]
            .prop_map(V::Numeric),
            "\\PC{0,4}".prop_map(V::Text),
            prop::collection::vec(any::<u8>(), 0..4).prop_map(V::Bytea),
            prop_oneof![any::<i32>(), -3..3_i32].prop_map(V::Date),
            prop_oneof![any::<i64>(), -3..3_i64].prop_map(V::Timestamptz),
            prop_oneof![
                r#"\{("[ab]":[0-9](\.0)?,?){0,3}\}"#,
                r#"\[( ?-?[0-9](\.[0-9])?([eE][-+]?[0-9]{1,2})?,?){0,3}\]"#,
                r#""(\\u00e9|é|\\n|\\"|a){0,3}""#,
            ]
            .prop_map(V::Jsonb),
        ]
    }

    /// The value the report should show for `v`: `-0` is `0` under the spec.
    fn shown(v: &PgValue) -> String {
        match v {
            V::Float8(f) if *f == 0.0 => display(&V::Float8(0.0)),
            other => display(other),
        }
    }

    proptest! {
        #[test]
        fn encoded_keys_order_like_values(a in prop::collection::vec(value(), 0..3), b in prop::collection::vec(value(), 0..3)) {
            let want = compare_keys(&a, &b);
            prop_assert_eq!(compare_encoded_keys(&enc_all(&a), &enc_all(&b)), want, "{:?} vs {:?}", a, b);
        }

        #[test]
        fn values_split_a_run_back_into_its_encodings(vs in prop::collection::vec(value(), 0..6)) {
            let run = enc_all(&vs);
            let split: Vec<&[u8]> = values(&run).collect();
            let each: Vec<Vec<u8>> = vs.iter().map(enc).collect();
            prop_assert_eq!(split, each.iter().map(Vec::as_slice).collect::<Vec<_>>());
        }

        #[test]
        fn decoding_keeps_the_encoding_and_the_display(v in value()) {
            let bytes = enc(&v);
            let back = decode(&bytes);
            prop_assert_eq!(enc(&back), bytes.clone(), "{:?} came back as {:?}", v, back);
            prop_assert_eq!(display_encoded(&bytes), shown(&v));
        }
    }

    #[test]
    fn numbers_and_text_order_by_value_not_by_bytes() {
        let ascending = [
            vec![V::Int8(-1)],
            vec![V::Int8(0)],
            vec![V::Int8(1)],
            vec![V::Int8(256)],
        ];
        for pair in ascending.windows(2) {
            let (a, b) = (enc_all(&pair[0]), enc_all(&pair[1]));
            assert_eq!(compare_encoded_keys(&a, &b), Ordering::Less, "{pair:?}");
        }
        let (short, long) = (enc(&V::Text("b".into())), enc(&V::Text("ab".into())));
        assert_eq!(compare_encoded_keys(&short, &long), Ordering::Greater);
        let numerics = [
            "-1e5", "-2", "-0.5", "0", "0.001", "2", "1e5", "Infinity", "NaN",
        ];
        for pair in numerics.windows(2) {
            let (a, b) = (
                enc(&V::Numeric(pair[0].into())),
                enc(&V::Numeric(pair[1].into())),
            );
            assert_eq!(compare_encoded_keys(&a, &b), Ordering::Less, "{pair:?}");
        }
    }
}
