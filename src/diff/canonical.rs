//! The canonical encoding of a PostgreSQL-typed value and the row hash built on it: the spec
//! every diff report cites (by [`HASH_VERSION`]). Both sides of a diff go through it — the
//! SQLite side from `convert`'s planned values, the PostgreSQL side from
//! `target::copy_out` — so two values encode equally exactly when PostgreSQL's own `=` (or
//! `IS NOT DISTINCT FROM`) calls them equal: promise 5, "diffs tell the truth".
//!
//! # Encoding
//!
//! Each value is one tag byte, then a fixed-width payload or a `u32` big-endian length and
//! that many bytes. Every encoding is self-delimiting, so a sequence of values cannot be
//! re-split: `("a","bc")` and `("ab","c")` differ, and NULL, `''` and `'NULL'` differ.
//!
//! | value | tag | payload | equal when |
//! |---|---|---|---|
//! | NULL | `0x00` | none | always (`IS NOT DISTINCT FROM`) |
//! | boolean | `0x01` | 1 byte, 0 or 1 | same truth value |
//! | bigint | `0x02` | i64 BE | same integer |
//! | double precision | `0x03` | IEEE-754 bits BE; every NaN as `0x7ff8000000000000`, `-0.0` as `+0.0` | PostgreSQL's float8 `=`: all NaNs are equal, `-0 = 0` |
//! | numeric, finite | `0x04` | sign byte (0 negative, 1 zero or positive), i64 BE decimal exponent `e` of the first significant digit (value = d₁.d₂d₃… × 10^e; 0 for zero), length-prefixed ASCII digits without leading or trailing zeros (empty for zero) | same number: `1.5 = 1.50 = 01.500 = 15e-1`, `0 = 0.000 = -0` |
//! | numeric NaN | `0x05` | none | PostgreSQL's numeric: `NaN = NaN` |
//! | numeric Infinity | `0x06` | none | |
//! | numeric -Infinity | `0x07` | none | |
//! | numeric, unreadable text | `0x08` | length-prefixed text as given | same text (never produced by `convert` or `copy_out`) |
//! | text, varchar | `0x09` | length-prefixed UTF-8 bytes | same bytes (text `=` under a deterministic collation) |
//! | bytea | `0x0A` | length-prefixed bytes | same bytes |
//! | date | `0x0B` | i32 BE days since 1970-01-01 | same day |
//! | timestamptz | `0x0C` | i64 BE µs since 1970-01-01 UTC | same instant, whatever zone it was written in |
//! | jsonb | `0x0D` | length-prefixed canonical JSON text (below) | jsonb `=` |
//! | jsonb, invalid JSON | `0x0E` | length-prefixed text as given | same text (never produced by `convert` or `copy_out`) |
//!
//! Decisions worth knowing:
//! - **`-0.0` equals `0.0`.** PostgreSQL's float8 `=` treats them as equal and SQLite cannot
//!   store `-0.0` (it reads back as `0.0`), so a difference in the sign of zero alone is not a
//!   data difference. Likewise NaN payload bits are not data: PostgreSQL orders and compares
//!   every NaN as one value.
//! - **bigint 1 and numeric 1 differ** (different tags): they are different PostgreSQL types,
//!   and a column planned as one but holding the other is a real difference.
//! - Text and varchar share a tag: both are PostgreSQL text, compared by bytes.
//!
//! Canonical JSON (jsonb's own equality): no whitespace; object members sorted by their
//! encoded key (any fixed order would do; equal objects sort equally); a duplicate key keeps
//! its last value, as jsonb does; strings decoded and re-encoded (`"\u00e9"` and `"é"` are the
//! same string); numbers compared as numeric (`1 = 1.0 = 1.00`, `1e2 = 100`, `-0 = 0`) and
//! written in one form: plain decimal for decimal exponents in -7..=20, else `d.ddde±x`.
//! Numbers are never read through a double, so no digit is rounded away. Text that is not
//! JSON is hashed as itself under its own tag, never a panic.
//!
//! Lengths are `u32`: PostgreSQL values are at most 1 GB, so a length never saturates.
//!
//! # Hashes
//!
//! [`row_hash`] and [`key_hash`] are BLAKE3 in derive-key mode with context [`HASH_VERSION`],
//! over a domain byte (`R` for a row, `K` for a key), then the number of key values (`u32`
//! BE), the key values, and for a row the number of columns and the columns in target order.
//! The counts keep the key/column boundary: key `[1]` with columns `[2]` differs from key `[]`
//! with columns `[1, 2]`. [`row_hash_of`] and [`key_hash_of`] are the same hashes of a row
//! already encoded that way (everything after the domain byte): the diff streams rows as those
//! bytes (`streams`, `wire`) and hashes them without going back to values.

use std::cmp::Ordering;
use std::fmt::Write;

use crate::convert::PgValue;
use crate::target::copy_binary::{special_numeric, NUMERIC_NAN, NUMERIC_PINF};

/// The row-hash version: part of every hash (blake3 derive-key context) and of every report.
pub const HASH_VERSION: &str = "sqlite2pg row-hash v1";

pub(super) const TAG_NULL: u8 = 0x00;
pub(super) const TAG_BOOL: u8 = 0x01;
pub(super) const TAG_INT8: u8 = 0x02;
pub(super) const TAG_FLOAT8: u8 = 0x03;
pub(super) const TAG_NUMERIC: u8 = 0x04;
pub(super) const TAG_NUMERIC_NAN: u8 = 0x05;
pub(super) const TAG_NUMERIC_POS_INF: u8 = 0x06;
pub(super) const TAG_NUMERIC_NEG_INF: u8 = 0x07;
pub(super) const TAG_NUMERIC_INVALID: u8 = 0x08;
pub(super) const TAG_TEXT: u8 = 0x09;
pub(super) const TAG_BYTEA: u8 = 0x0A;
pub(super) const TAG_DATE: u8 = 0x0B;
pub(super) const TAG_TIMESTAMPTZ: u8 = 0x0C;
pub(super) const TAG_JSONB: u8 = 0x0D;
pub(super) const TAG_JSONB_INVALID: u8 = 0x0E;

/// The one NaN every float8 NaN encodes as (the quiet NaN Rust's `f64::NAN` is).
const CANONICAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0000;
/// Domain bytes that keep a row hash and a key hash apart.
const DOMAIN_ROW: u8 = b'R';
const DOMAIN_KEY: u8 = b'K';
/// Room for a typical row's encoding (8 columns of ~200 bytes) before reallocating.
const ROW_CAPACITY: usize = 512;
/// Decimal exponents written as plain decimals in canonical JSON and reports (as JavaScript
/// does): `0.0000001` … `999999999999999999999`; outside, `d.ddde±x`, so a short input like
/// `1e999999` never becomes a megabyte of zeros.
const PLAIN_EXPONENTS: std::ops::RangeInclusive<i64> = -7..=20;
/// How much of a text or JSON value a report shows, in characters.
const DISPLAY_TEXT_CHARS: usize = 200;
/// How much of a bytea value a report shows, in bytes.
const DISPLAY_BYTEA_BYTES: usize = 64;
const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Appends the canonical encoding of one value: a type tag byte, then a fixed-width or
/// length-prefixed (u32 BE) payload — so NULL, '' and 'NULL' differ and no two rows collide by
/// shifting bytes. See the module docs for the table of rules.
pub fn encode_canonical(out: &mut Vec<u8>, v: &PgValue) {
    match v {
        PgValue::Null => out.push(TAG_NULL),
        PgValue::Bool(b) => out.extend_from_slice(&[TAG_BOOL, u8::from(*b)]),
        PgValue::Int8(i) => tagged(out, TAG_INT8, &i.to_be_bytes()),
        PgValue::Float8(f) => tagged(out, TAG_FLOAT8, &canonical_float_bits(*f).to_be_bytes()),
        PgValue::Numeric(text) => encode_numeric(out, text),
        PgValue::Text(s) => length_prefixed(out, TAG_TEXT, s.as_bytes()),
        PgValue::Bytea(b) => length_prefixed(out, TAG_BYTEA, b),
        PgValue::Date(days) => tagged(out, TAG_DATE, &days.to_be_bytes()),
        PgValue::Timestamptz(us) => tagged(out, TAG_TIMESTAMPTZ, &us.to_be_bytes()),
        PgValue::Jsonb(text) => encode_jsonb(out, text),
    }
}

/// Appends a jsonb value: its canonical JSON, or the text as given under its own tag when it is
/// not JSON.
pub(super) fn encode_jsonb(out: &mut Vec<u8>, text: &str) {
    with_canonical_json(text, |json| match json {
        Some(json) => length_prefixed(out, TAG_JSONB, json.as_bytes()),
        None => length_prefixed(out, TAG_JSONB_INVALID, text.as_bytes()),
    })
}

/// Appends a jsonb value when `text` is JSON and returns true; writes nothing and returns false
/// when it is not.
pub(super) fn encode_jsonb_if_json(out: &mut Vec<u8>, text: &str) -> bool {
    with_canonical_json(text, |json| {
        json.map(|json| length_prefixed(out, TAG_JSONB, json.as_bytes()))
            .is_some()
    })
}

/// Runs `f` with the canonical JSON of `text` (None if it is not JSON), built in a reused
/// per-thread buffer: no allocation per value.
fn with_canonical_json<R>(text: &str, f: impl FnOnce(Option<&str>) -> R) -> R {
    thread_local! {
        static JSON: std::cell::RefCell<(String, JsonScratch)> =
            std::cell::RefCell::new((String::new(), JsonScratch::default()));
    }
    JSON.with(|cell| {
        let (json, scratch) = &mut *cell.borrow_mut();
        json.clear();
        let result = match write_canonical_json(text, json, scratch) {
            Some(()) => f(Some(json.as_str())),
            None => f(None),
        };
        if json.capacity() > 1 << 20 {
            (*json, *scratch) = (String::new(), JsonScratch::default());
        }
        result
    })
}

/// blake3 (`new_derive_key(HASH_VERSION)`) over: domain byte `R`, number of key values, key
/// values canonical, number of columns, columns canonical (target order).
pub fn row_hash(key: &[PgValue], columns: &[PgValue]) -> [u8; 32] {
    with_buffer(|buf| {
        encode_values(buf, key);
        encode_values(buf, columns);
        row_hash_of(buf)
    })
}

/// Hash of the key alone (same context, domain byte `K`), for bucketing rows.
pub fn key_hash(key: &[PgValue]) -> [u8; 32] {
    with_buffer(|buf| {
        encode_values(buf, key);
        key_hash_of(buf)
    })
}

/// [`row_hash`] of a row already encoded: `encoded` is the number of key values (`u32` BE),
/// the key values canonical, the number of columns and the columns canonical — everything the
/// row hash covers after its domain byte.
pub fn row_hash_of(encoded: &[u8]) -> [u8; 32] {
    hash(DOMAIN_ROW, encoded)
}

/// [`key_hash`] of a key already encoded: the number of key values (`u32` BE), then the key
/// values canonical.
pub fn key_hash_of(encoded_key: &[u8]) -> [u8; 32] {
    hash(DOMAIN_KEY, encoded_key)
}

/// Appends the count that precedes a run of canonical values in the row and key hashes.
pub fn encode_count(out: &mut Vec<u8>, count: usize) {
    out.extend_from_slice(&length_u32(count).to_be_bytes());
}

/// Runs `f` with this thread's empty encoding buffer: hashing millions of rows allocates nothing
/// per row. A buffer grown past 1 MiB by a huge row is given back afterwards.
fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> =
            std::cell::RefCell::new(Vec::with_capacity(ROW_CAPACITY));
    }
    BUFFER.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.clear();
        let out = f(&mut buf);
        if buf.capacity() > 1 << 20 {
            *buf = Vec::with_capacity(ROW_CAPACITY);
        }
        out
    })
}

fn encode_values(out: &mut Vec<u8>, values: &[PgValue]) {
    encode_count(out, values.len());
    for v in values {
        encode_canonical(out, v);
    }
}

/// The derive-key hasher is built once per thread (deriving the context key costs a hash of its
/// own) and reset for each hash: a reset rewrites its small chunk state in place, where a clone
/// or a new hasher would copy its whole ~2 KB stack of chaining values per row.
fn hash(domain: u8, bytes: &[u8]) -> [u8; 32] {
    thread_local! {
        static HASHER: std::cell::RefCell<blake3::Hasher> =
            std::cell::RefCell::new(blake3::Hasher::new_derive_key(HASH_VERSION));
    }
    HASHER.with(|cell| {
        let mut hasher = cell.borrow_mut();
        hasher.reset();
        hasher.update(&[domain]);
        hasher.update(bytes);
        *hasher.finalize().as_bytes()
    })
}

pub(super) fn tagged(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    out.extend_from_slice(payload);
}

pub(super) fn length_prefixed(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&length_u32(payload.len()).to_be_bytes());
    out.extend_from_slice(payload);
}

/// PostgreSQL values stay below 1 GB; saturating keeps this total without a panic.
fn length_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

pub(super) fn canonical_float_bits(f: f64) -> u64 {
    if f.is_nan() {
        CANONICAL_NAN_BITS
    } else if f == 0.0 {
        0
    } else {
        f.to_bits()
    }
}

pub(super) fn encode_numeric(out: &mut Vec<u8>, text: &str) {
    match Numeric::parse(text) {
        Some(Numeric::NaN) => out.push(TAG_NUMERIC_NAN),
        Some(Numeric::PosInf) => out.push(TAG_NUMERIC_POS_INF),
        Some(Numeric::NegInf) => out.push(TAG_NUMERIC_NEG_INF),
        Some(Numeric::Finite(d)) => {
            out.push(TAG_NUMERIC);
            out.push(u8::from(!d.negative));
            out.extend_from_slice(&d.exponent.to_be_bytes());
            out.extend_from_slice(&length_u32(d.len).to_be_bytes());
            out.extend(d.digits());
        }
        None => length_prefixed(out, TAG_NUMERIC_INVALID, text.as_bytes()),
    }
}

/// A numeric value as PostgreSQL compares it.
#[derive(Clone, Copy)]
enum Numeric<'a> {
    NegInf,
    Finite(Decimal<'a>),
    PosInf,
    NaN,
}

impl<'a> Numeric<'a> {
    /// numeric_in's spellings, as `copy_binary` reads them; None for anything else.
    fn parse(text: &'a str) -> Option<Numeric<'a>> {
        match special_numeric(text) {
            Some(NUMERIC_NAN) => Some(Numeric::NaN),
            Some(NUMERIC_PINF) => Some(Numeric::PosInf),
            Some(_) => Some(Numeric::NegInf),
            None => Decimal::parse(text).map(Numeric::Finite),
        }
    }

    /// -Infinity < finite < Infinity < NaN, as PostgreSQL orders numeric.
    fn rank(&self) -> u8 {
        match self {
            Numeric::NegInf => 0,
            Numeric::Finite(_) => 1,
            Numeric::PosInf => 2,
            Numeric::NaN => 3,
        }
    }

    fn cmp(&self, other: &Numeric<'_>) -> Ordering {
        match (self, other) {
            (Numeric::Finite(a), Numeric::Finite(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// A finite decimal reduced to sign, exponent and significant digits, borrowing the digits
/// from the text: value = d₁.d₂d₃… × 10^exponent.
#[derive(Clone, Copy)]
struct Decimal<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    /// Index of the first significant digit in `int` followed by `frac`.
    first: usize,
    /// Number of significant digits (first to last nonzero); 0 for zero.
    len: usize,
    exponent: i64,
}

impl<'a> Decimal<'a> {
    /// `[+-]digits[.digits][(e|E)[+-]digits]` with at least one digit; None if not, or if the
    /// exponent does not fit an i64.
    fn parse(text: &'a str) -> Option<Decimal<'a>> {
        let (negative, unsigned) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
            Some((m, e)) => (m, parse_exponent(e)?),
            None => (unsigned, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        let (int, frac) = (int.as_bytes(), frac.as_bytes());
        let mut nonzero = int
            .iter()
            .chain(frac)
            .enumerate()
            .filter(|(_, &d)| d != b'0');
        let Some((first, _)) = nonzero.next() else {
            return Some(Decimal::zero());
        };
        let last = nonzero.last().map_or(first, |(i, _)| i);
        let shift = i64::try_from(int.len()).ok()? - 1 - i64::try_from(first).ok()?;
        Some(Decimal {
            negative,
            int,
            frac,
            first,
            len: last - first + 1,
            exponent: exponent.checked_add(shift)?,
        })
    }

    fn zero() -> Decimal<'static> {
        Decimal {
            negative: false,
            int: b"",
            frac: b"",
            first: 0,
            len: 0,
            exponent: 0,
        }
    }

    /// The significant digits, ASCII.
    fn digits(&self) -> impl Iterator<Item = u8> + 'a {
        self.int
            .iter()
            .chain(self.frac)
            .skip(self.first)
            .take(self.len)
            .copied()
    }

    /// -1, 0 or 1.
    fn signum(&self) -> i8 {
        match (self.len, self.negative) {
            (0, _) => 0,
            (_, true) => -1,
            (_, false) => 1,
        }
    }

    fn cmp(&self, other: &Decimal<'_>) -> Ordering {
        let by_sign = self.signum().cmp(&other.signum());
        if by_sign != Ordering::Equal || self.len == 0 {
            return by_sign;
        }
        let magnitude = self
            .exponent
            .cmp(&other.exponent)
            .then_with(|| self.digits().cmp(other.digits()));
        if self.negative {
            magnitude.reverse()
        } else {
            magnitude
        }
    }

    /// The canonical text: plain for exponents in [`PLAIN_EXPONENTS`], else `d.ddde±x`.
    fn write_text(&self, out: &mut String) {
        if self.len == 0 {
            out.push('0');
            return;
        }
        if self.negative {
            out.push('-');
        }
        let mut digits = self.digits().map(char::from);
        let e = self.exponent;
        if !PLAIN_EXPONENTS.contains(&e) {
            out.extend(digits.next());
            if self.len > 1 {
                out.push('.');
                out.extend(digits);
            }
            let sign = if e < 0 { '-' } else { '+' };
            let _ = write!(out, "e{sign}{}", e.unsigned_abs());
        } else if e < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', e.unsigned_abs() as usize - 1));
            out.extend(digits);
        } else {
            let int_digits = e as usize + 1;
            out.extend(digits.by_ref().take(int_digits));
            out.extend(std::iter::repeat_n(
                '0',
                int_digits.saturating_sub(self.len),
            ));
            if self.len > int_digits {
                out.push('.');
                out.extend(digits);
            }
        }
    }
}

/// An exponent's digits with an optional sign; None if empty, not digits or beyond i64.
fn parse_exponent(text: &str) -> Option<i64> {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The canonical text of a numeric value (`NaN`, `Infinity`, `-Infinity` or the canonical
/// decimal); None if the text is no numeric.
fn numeric_text(text: &str) -> Option<String> {
    Some(match Numeric::parse(text)? {
        Numeric::NaN => "NaN".into(),
        Numeric::PosInf => "Infinity".into(),
        Numeric::NegInf => "-Infinity".into(),
        Numeric::Finite(d) => {
            let mut out = String::new();
            d.write_text(&mut out);
            out
        }
    })
}

/// The canonical JSON text of `text` (see the module docs), or None if it is not JSON.
///
/// Written in one pass into one buffer: scalars as they are read, an object's members in
/// place, re-sorted only when their keys are not already in order and unique. Iterative, so no
/// nesting depth can overflow the stack.
fn canonical_json(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    write_canonical_json(text, &mut out, &mut JsonScratch::default()).map(|()| out)
}

/// [`canonical_json`] written to the empty `out` (which it may leave half-written on `None`).
fn write_canonical_json(text: &str, out: &mut String, scratch: &mut JsonScratch) -> Option<()> {
    let mut lexer = JsonLexer {
        text,
        s: text.as_bytes(),
        at: 0,
    };
    scratch.open.clear();
    scratch.members.clear();
    loop {
        if let Some(container) = lexer.value(out, &scratch.members)? {
            scratch.open.push(container);
            continue;
        }
        // A value is complete: it ends a member of the innermost container, which then
        // either takes another member or closes, completing a value in its parent.
        loop {
            let Some(container) = scratch.open.last_mut() else {
                lexer.skip_whitespace();
                return (lexer.at == lexer.s.len()).then_some(());
            };
            container.end_member(out.len(), &mut scratch.members);
            lexer.skip_whitespace();
            if lexer.eat(b',') {
                out.push(',');
                container.begin_member(&mut lexer, out)?;
                break;
            }
            scratch.open.pop()?.close(&mut lexer, out, scratch)?;
        }
    }
}

/// The working memory of the JSON canonicaliser, kept between values so that canonicalising
/// millions of them allocates nothing per value.
#[derive(Default)]
struct JsonScratch {
    open: Vec<Container>,
    /// (start, end of the key, end) in the output of each finished member of every open object;
    /// an object's members start at its `base`.
    members: Vec<(usize, usize, usize)>,
    /// Where an object's members are rewritten when they have to be sorted.
    sorted: String,
}

/// An array or object whose members are still arriving.
enum Container {
    Array,
    Object {
        /// Where the first member starts in the output.
        start: usize,
        /// Where this object's members start in [`JsonScratch::members`].
        base: usize,
        /// (start, end of the key) of the member being read.
        current: (usize, usize),
    },
}

impl Container {
    /// Opens the container whose bracket was just read and not closed at once.
    fn open(
        bracket: u8,
        lexer: &mut JsonLexer<'_>,
        out: &mut String,
        members: &[(usize, usize, usize)],
    ) -> Option<Container> {
        if bracket == b'[' {
            return Some(Container::Array);
        }
        let mut object = Container::Object {
            start: out.len(),
            base: members.len(),
            current: (0, 0),
        };
        object.begin_member(lexer, out)?;
        Some(object)
    }

    /// For an object, reads the next member's key and colon.
    fn begin_member(&mut self, lexer: &mut JsonLexer<'_>, out: &mut String) -> Option<()> {
        if let Container::Object { current, .. } = self {
            let start = out.len();
            lexer.skip_whitespace();
            (lexer.s.get(lexer.at) == Some(&b'"')).then_some(())?;
            lexer.string(out)?;
            let key_end = out.len();
            lexer.skip_whitespace();
            lexer.eat(b':').then_some(())?;
            out.push(':');
            *current = (start, key_end);
        }
        Some(())
    }

    fn end_member(&mut self, end: usize, members: &mut Vec<(usize, usize, usize)>) {
        if let Container::Object { current, .. } = self {
            members.push((current.0, current.1, end));
        }
    }

    /// Expects the closing bracket and writes it.
    fn close(
        self,
        lexer: &mut JsonLexer<'_>,
        out: &mut String,
        scratch: &mut JsonScratch,
    ) -> Option<()> {
        match self {
            Container::Array => {
                lexer.eat(b']').then_some(())?;
                out.push(']');
            }
            Container::Object { start, base, .. } => {
                lexer.eat(b'}').then_some(())?;
                sort_members(
                    out,
                    start,
                    &mut scratch.members[base..],
                    &mut scratch.sorted,
                );
                scratch.members.truncate(base);
                out.push('}');
            }
        }
        Some(())
    }
}

/// Rewrites the members from `start` on sorted by encoded key, of duplicate keys the last one
/// only — unless they already are.
fn sort_members(
    out: &mut String,
    start: usize,
    members: &mut [(usize, usize, usize)],
    sorted: &mut String,
) {
    let key = |&(s, k, _): &(usize, usize, usize)| &out.as_bytes()[s..k];
    if members.windows(2).all(|w| key(&w[0]) < key(&w[1])) {
        return;
    }
    members.reverse();
    // Stable: among equal keys the last written now comes first, and only the first of a run
    // of equal keys is kept.
    members.sort_by(|a, b| key(a).cmp(key(b)));
    sorted.clear();
    let mut previous: Option<&[u8]> = None;
    for member in members.iter() {
        let (s, _, e) = *member;
        if previous == Some(key(member)) {
            continue;
        }
        if previous.is_some() {
            sorted.push(',');
        }
        previous = Some(key(member));
        sorted.push_str(&out[s..e]);
    }
    out.truncate(start);
    out.push_str(sorted);
}

/// A strict JSON (RFC 8259) tokenizer over bytes, as PostgreSQL's json lexer reads them.
struct JsonLexer<'a> {
    text: &'a str,
    s: &'a [u8],
    at: usize,
}

impl JsonLexer<'_> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let found = self.s.get(self.at) == Some(&b);
        self.at += usize::from(found);
        found
    }

    /// Writes a scalar or an empty container and returns None inside the Some; or opens a
    /// container, ready for its first member's value, and returns it.
    fn value(
        &mut self,
        out: &mut String,
        members: &[(usize, usize, usize)],
    ) -> Option<Option<Container>> {
        self.skip_whitespace();
        let first = *self.s.get(self.at)?;
        match first {
            b'{' | b'[' => {
                self.at += 1;
                out.push(char::from(first));
                self.skip_whitespace();
                let close = if first == b'{' { b'}' } else { b']' };
                if self.eat(close) {
                    out.push(char::from(close));
                    return Some(None);
                }
                return Container::open(first, self, out, members).map(Some);
            }
            b'"' => self.string(out)?,
            b't' => self.literal("true", out)?,
            b'f' => self.literal("false", out)?,
            b'n' => self.literal("null", out)?,
            _ => self.number(out)?,
        }
        Some(None)
    }

    fn literal(&mut self, word: &str, out: &mut String) -> Option<()> {
        let end = self.at + word.len();
        (self.s.get(self.at..end)? == word.as_bytes()).then_some(())?;
        self.at = end;
        out.push_str(word);
        Some(())
    }

    /// A string token re-encoded the one way serde_json writes strings.
    fn string(&mut self, out: &mut String) -> Option<()> {
        let start = self.at;
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            match *self.s.get(i)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                0..=0x1F => return None,
                _ => i += 1,
            }
        }
        self.at = i + 1;
        // Quotes are ASCII, so both ends are character boundaries.
        let token = self.text.get(start..=i)?;
        if escaped {
            let decoded: String = serde_json::from_str(token).ok()?;
            out.push_str(&serde_json::to_string(&decoded).ok()?);
        } else {
            // No escapes and no control characters: serde_json would write it unchanged.
            out.push_str(token);
        }
        Some(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, canonicalised as numeric.
    fn number(&mut self, out: &mut String) -> Option<()> {
        let start = self.at;
        self.eat(b'-');
        if !self.eat(b'0') {
            if !matches!(self.s.get(self.at), Some(b'1'..=b'9')) {
                return None;
            }
            self.digits();
        }
        if self.eat(b'.') && self.digits() == 0 {
            return None;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            if self.digits() == 0 {
                return None;
            }
        }
        let token = self.text.get(start..self.at)?;
        Decimal::parse(token)?.write_text(out);
        Some(())
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.s.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        self.at - start
    }
}

/// A comparable rendering of a value for reports: PostgreSQL-like text. Timestamps ISO UTC
/// with µs, numeric and JSON canonical, bytea `\x` hex truncated to 64 bytes, text quoted (an
/// `E'…'` literal when it holds control characters) and truncated to 200 characters.
pub fn display(v: &PgValue) -> String {
    match v {
        PgValue::Null => "NULL".into(),
        PgValue::Bool(b) => b.to_string(),
        PgValue::Int8(i) => i.to_string(),
        PgValue::Float8(f) => float_text(*f),
        PgValue::Numeric(text) => {
            numeric_text(text).unwrap_or_else(|| format!("invalid numeric {}", quoted(text)))
        }
        PgValue::Text(s) => quoted(s),
        PgValue::Bytea(b) => bytea_text(b),
        PgValue::Date(days) => {
            let (date, era) = date_text(i64::from(*days));
            format!("{date}{era}")
        }
        PgValue::Timestamptz(us) => timestamp_text(*us),
        PgValue::Jsonb(text) => match canonical_json(text) {
            Some(json) => truncated(&json),
            None => format!("invalid json {}", quoted(text)),
        },
    }
}

/// float8's text output with `extra_float_digits` ≥ 1: shortest digits that read back
/// exactly, exponent form below 1e-4 or from 1e15.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let scientific = format!("{f:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return f.to_string();
    };
    match exponent.parse::<i32>() {
        Ok(e) if (-4..15).contains(&e) || f == 0.0 => f.to_string(),
        Ok(e) => format!("{mantissa}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()),
        Err(_) => f.to_string(),
    }
}

/// A SQL string literal of the first 200 characters, `E'…'` when it holds control characters.
fn quoted(s: &str) -> String {
    let (shown, more) = split_chars(s);
    let escape = shown.chars().any(char::is_control);
    let mut out = String::with_capacity(shown.len() + 3);
    out.push_str(if escape { "E'" } else { "'" });
    for c in shown.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' if escape => out.push_str("\\\\"),
            '\n' if escape => out.push_str("\\n"),
            '\r' if escape => out.push_str("\\r"),
            '\t' if escape => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    if more {
        let _ = write!(out, "… ({} chars)", s.chars().count());
    }
    out
}

fn truncated(s: &str) -> String {
    match split_chars(s) {
        (shown, true) => format!("{shown}… ({} chars)", s.chars().count()),
        (shown, false) => shown.to_string(),
    }
}

/// The first [`DISPLAY_TEXT_CHARS`] characters, and whether any follow.
fn split_chars(s: &str) -> (&str, bool) {
    match s.char_indices().nth(DISPLAY_TEXT_CHARS) {
        Some((end, _)) => (&s[..end], true),
        None => (s, false),
    }
}

fn bytea_text(b: &[u8]) -> String {
    let shown = &b[..b.len().min(DISPLAY_BYTEA_BYTES)];
    let mut out = String::with_capacity(2 + shown.len() * 2 + 16);
    out.push_str("\\x");
    for byte in shown {
        let _ = write!(out, "{byte:02x}");
    }
    if b.len() > shown.len() {
        let _ = write!(out, "… ({} bytes)", b.len());
    }
    out
}

/// `YYYY-MM-DD` of days since 1970-01-01 and the era suffix (` BC` for year 0 and before,
/// shown as PostgreSQL does: 1 BC, 2 BC, …).
fn date_text(days: i64) -> (String, &'static str) {
    let (y, m, d) = civil_from_days(days);
    if y <= 0 {
        (format!("{:04}-{m:02}-{d:02}", 1 - y), " BC")
    } else {
        (format!("{y:04}-{m:02}-{d:02}"), "")
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff+00`, always UTC and six fraction digits.
fn timestamp_text(us: i64) -> String {
    let (days, of_day) = (us.div_euclid(MICROS_PER_DAY), us.rem_euclid(MICROS_PER_DAY));
    let (date, era) = date_text(days);
    let secs = of_day / MICROS_PER_SECOND;
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = of_day % MICROS_PER_SECOND;
    format!("{date} {h:02}:{mi:02}:{s:02}.{frac:06}+00{era}")
}

/// Proleptic Gregorian (year, month, day) of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`); exact for any i64 day count a date or timestamp can hold.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Total order for merge-joining key streams, consistent with PostgreSQL's `ORDER BY` of the
/// same typed values with `COLLATE "C"` for text (byte order), numbers numerically, NULL last
/// (the default `ASC NULLS LAST`), and with the canonical encoding: `Equal` exactly when the
/// keys encode equally.
///
/// float8 and numeric order NaN above every number (and above Infinity), as PostgreSQL does.
/// jsonb keys are ordered by their canonical text, which is NOT PostgreSQL's jsonb order: a
/// merge-join on a jsonb key must sort the PostgreSQL side some other way.
pub fn compare_keys(a: &[PgValue], b: &[PgValue]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| compare_value(x, y))
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.len().cmp(&b.len()))
}

fn compare_value(a: &PgValue, b: &PgValue) -> Ordering {
    use PgValue as V;
    match (a, b) {
        (V::Null, V::Null) => Ordering::Equal,
        (V::Null, _) => Ordering::Greater,
        (_, V::Null) => Ordering::Less,
        (V::Bool(x), V::Bool(y)) => x.cmp(y),
        (V::Int8(x), V::Int8(y)) => x.cmp(y),
        (V::Float8(x), V::Float8(y)) => compare_float(*x, *y),
        (V::Numeric(x), V::Numeric(y)) => compare_numeric(x, y),
        (V::Text(x), V::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (V::Bytea(x), V::Bytea(y)) => x.cmp(y),
        (V::Date(x), V::Date(y)) => x.cmp(y),
        (V::Timestamptz(x), V::Timestamptz(y)) => x.cmp(y),
        // Values of different types never share a key column; any fixed order keeps it total.
        _ => canonical_bytes(a).cmp(&canonical_bytes(b)),
    }
}

fn canonical_bytes(v: &PgValue) -> Vec<u8> {
    let mut out = Vec::new();
    encode_canonical(&mut out, v);
    out
}

/// float8's btree order: NaN equals NaN and sorts above everything; `-0 = 0`.
fn compare_float(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// numeric's order; unreadable text (never produced by `convert` or `copy_out`) sorts after
/// every number, by its bytes.
fn compare_numeric(x: &str, y: &str) -> Ordering {
    match (Numeric::parse(x), Numeric::parse(y)) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => x.cmp(y),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use PgValue as V;

    fn enc(v: &PgValue) -> Vec<u8> {
        let mut out = Vec::new();
        encode_canonical(&mut out, v);
        out
    }

    fn num(s: &str) -> PgValue {
        V::Numeric(s.into())
    }

    fn json(s: &str) -> PgValue {
        V::Jsonb(s.into())
    }

    fn assert_same(a: &PgValue, b: &PgValue) {
        assert_eq!(enc(a), enc(b), "{a:?} should encode like {b:?}");
        assert_eq!(
            compare_keys(std::slice::from_ref(a), std::slice::from_ref(b)),
            Ordering::Equal,
            "{a:?} vs {b:?}"
        );
    }

    fn assert_differ(a: &PgValue, b: &PgValue) {
        assert_ne!(enc(a), enc(b), "{a:?} should encode unlike {b:?}");
        assert_ne!(
            compare_keys(std::slice::from_ref(a), std::slice::from_ref(b)),
            Ordering::Equal,
            "{a:?} vs {b:?}"
        );
    }

    #[test]
    fn equal_numbers_spelled_differently_encode_equally() {
        for (a, b) in [
            ("1.5", "1.50"),
            ("1.5", "01.500"),
            ("1.5", "15e-1"),
            ("0", "0.000"),
            ("0", "-0"),
            ("-0.0e9", "+0"),
            ("100", "1e2"),
            ("-12.5", "-1250E-2"),
            ("NaN", "nan"),
            ("Infinity", "inf"),
            ("-Infinity", "-inf"),
        ] {
            assert_same(&num(a), &num(b));
        }
        for (a, b) in [
            ("1.5", "1.51"),
            ("1.5", "-1.5"),
            ("1", "10"),
            ("Infinity", "-Infinity"),
        ] {
            assert_differ(&num(a), &num(b));
        }
        assert_differ(&num("NaN"), &num("Infinity"));
    }

    #[test]
    fn float_sign_of_zero_and_nan_payloads_are_not_data() {
        assert_same(&V::Float8(-0.0), &V::Float8(0.0));
        let other_nan = f64::from_bits(0xfff8_0000_0000_0001);
        assert!(other_nan.is_nan());
        assert_same(&V::Float8(f64::NAN), &V::Float8(other_nan));
        assert_differ(&V::Float8(f64::NAN), &V::Float8(f64::INFINITY));
        assert_differ(&V::Float8(1.0), &V::Float8(1.0 + f64::EPSILON));
    }

    #[test]
    fn null_empty_and_the_word_null_differ() {
        let (null, empty, word) = (V::Null, V::Text(String::new()), V::Text("NULL".into()));
        assert_differ(&null, &empty);
        assert_differ(&null, &word);
        assert_differ(&empty, &word);
        assert_differ(&V::Text("ab".into()), &V::Bytea(b"ab".to_vec()));
    }

    #[test]
    fn bigint_and_numeric_of_one_number_differ_by_type() {
        assert_differ(&V::Int8(1), &num("1"));
        assert_differ(&V::Int8(0), &V::Float8(0.0));
        assert_differ(&V::Date(1), &V::Int8(1));
    }

    #[test]
    fn jsonb_equality_ignores_order_whitespace_scale_and_overwritten_keys() {
        for (a, b) in [
            (r#"{"b":1,"a":[1.0,2]}"#, r#"{"a":[1,2.00],"b":1}"#),
            (r#"{"a":1,"a":2}"#, r#"{"a":2}"#),
            (" {\n\t\"a\" : [ 1 , 2 ] } ", r#"{"a":[1,2]}"#),
            (r#"[1e2, -0, 0.5E1]"#, r#"[100, 0, 5]"#),
            (r#""\u00e9\/\n""#, "\"é/\\n\""),
            (r#"{"\u0061":true}"#, r#"{"a":true}"#),
            (
                "12345678901234567890.123456789e-3",
                "12345678901234567.890123456789",
            ),
        ] {
            assert_same(&json(a), &json(b));
        }
        for (a, b) in [
            (r#"{"a":{"b":[1,2]}}"#, r#"{"a":{"b":[1,3]}}"#),
            (r#"[1,2]"#, r#"[2,1]"#),
            (r#"{"a":1}"#, r#"{"a":"1"}"#),
            (r#"{"a":null}"#, r#"{}"#),
            ("12345678901234567890", "12345678901234567891"),
        ] {
            assert_differ(&json(a), &json(b));
        }
    }

    #[test]
    fn canonical_json_text_is_the_documented_form() {
        let cases = [
            (
                r#"{"b": 1.50, "a": [true, null, "x"]}"#,
                r#"{"a":[true,null,"x"],"b":1.5}"#,
            ),
            ("1e21", "1e+21"),
            ("-1.25e-8", "-1.25e-8"),
            ("0.0000001", "0.0000001"),
            ("123000000000000000000", "123000000000000000000"),
            ("[[],{},[{}]]", "[[],{},[{}]]"),
            (r#""tab\there""#, r#""tab\there""#),
        ];
        for (input, canonical) in cases {
            assert_eq!(canonical_json(input).as_deref(), Some(canonical), "{input}");
        }
    }

    #[test]
    fn invalid_json_is_hashed_as_its_text_without_panicking() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\"}",
            "01",
            "1.",
            ".5",
            "+1",
            "tru",
            "[1] x",
            "\"\t\"",
            "NaN",
            "{\"a\":1,}",
            "\"\\ud800\"",
        ] {
            assert_eq!(canonical_json(bad), None, "{bad:?}");
            assert_eq!(enc(&json(bad))[0], TAG_JSONB_INVALID, "{bad:?}");
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(canonical_json(&deep).map(|s| s.len()), Some(200_000));
    }

    #[test]
    fn timestamps_a_microsecond_apart_differ() {
        assert_differ(
            &V::Timestamptz(1_700_000_000_000_000),
            &V::Timestamptz(1_700_000_000_000_001),
        );
        assert_same(&V::Timestamptz(-1), &V::Timestamptz(-1));
    }

    #[test]
    fn rows_cannot_collide_by_shifting_bytes_or_the_key_boundary() {
        let t = |s: &str| V::Text(s.into());
        assert_ne!(
            row_hash(&[], &[t("a"), t("bc")]),
            row_hash(&[], &[t("ab"), t("c")])
        );
        assert_ne!(
            row_hash(&[V::Int8(1)], &[V::Int8(2)]),
            row_hash(&[], &[V::Int8(1), V::Int8(2)])
        );
        assert_ne!(row_hash(&[t("k")], &[]), key_hash(&[t("k")]));
        assert_eq!(
            row_hash(&[t("k")], &[num("1.50")]),
            row_hash(&[t("k")], &[num("1.5")])
        );
        assert_eq!(key_hash(&[V::Float8(-0.0)]), key_hash(&[V::Float8(0.0)]));
    }

    #[test]
    fn the_hash_version_is_part_of_the_hash() {
        let mut plain = blake3::Hasher::new();
        plain.update(b"K\0\0\0\0");
        assert_ne!(key_hash(&[]), *plain.finalize().as_bytes());
        let mut derived = blake3::Hasher::new_derive_key(HASH_VERSION);
        derived.update(b"K\0\0\0\0");
        assert_eq!(key_hash(&[]), *derived.finalize().as_bytes());
    }

    #[test]
    fn display_reads_like_postgresql() {
        let cases = [
            (V::Null, "NULL"),
            (V::Bool(true), "true"),
            (V::Float8(1e20), "1e+20"),
            (V::Float8(0.0001), "0.0001"),
            (V::Float8(1.5e-7), "1.5e-07"),
            (V::Float8(-0.0), "-0"),
            (V::Float8(f64::NAN), "NaN"),
            (num("01.500"), "1.5"),
            (num("-0.00"), "0"),
            (num("-inf"), "-Infinity"),
            (num("1x"), "invalid numeric '1x'"),
            (V::Text("O'Reilly".into()), "'O''Reilly'"),
            (V::Text("a\\b\nc".into()), r"E'a\\b\nc'"),
            (V::Bytea(vec![0, 0xab]), r"\x00ab"),
            (V::Date(0), "1970-01-01"),
            (V::Date(-719_163), "0001-12-31 BC"),
            (V::Date(-719_162), "0001-01-01"),
            (V::Timestamptz(-1), "1969-12-31 23:59:59.999999+00"),
            (
                V::Timestamptz(1_700_000_000_000_001),
                "2023-11-14 22:13:20.000001+00",
            ),
            (json(r#"{"b":1.0, "a":2}"#), r#"{"a":2,"b":1}"#),
            (json("{"), "invalid json '{'"),
        ];
        for (value, shown) in cases {
            assert_eq!(display(&value), shown, "{value:?}");
        }
        let long = display(&V::Text("é".repeat(300)));
        assert_eq!(long, format!("'{}'… (300 chars)", "é".repeat(200)));
        let bytes = display(&V::Bytea(vec![1; 100]));
        assert_eq!(bytes, format!("\\x{}… (100 bytes)", "01".repeat(64)));
    }

    #[test]
    fn keys_order_like_postgresql() {
        let ascending = [
            vec![V::Int8(-5)],
            vec![V::Int8(2)],
            vec![V::Int8(2), V::Text("a".into())],
            vec![V::Int8(2), V::Text("b".into())],
            vec![V::Int8(2), V::Null],
            vec![V::Null],
        ];
        for pair in ascending.windows(2) {
            assert_eq!(compare_keys(&pair[0], &pair[1]), Ordering::Less, "{pair:?}");
            assert_eq!(
                compare_keys(&pair[1], &pair[0]),
                Ordering::Greater,
                "{pair:?}"
            );
        }
        let numerics = [
            "-Infinity",
            "-10",
            "-9.99",
            "-0.001",
            "0",
            "0.001",
            "0.0011",
            "1",
            "1.5",
            "9.99",
            "10",
            "1e100",
            "Infinity",
            "NaN",
        ];
        for pair in numerics.windows(2) {
            assert_eq!(
                compare_keys(&[num(pair[0])], &[num(pair[1])]),
                Ordering::Less,
                "{pair:?}"
            );
        }
        let floats = [
            f64::NEG_INFINITY,
            -1.0,
            0.0,
            1e-300,
            f64::INFINITY,
            f64::NAN,
        ];
        for pair in floats.windows(2) {
            assert_eq!(
                compare_keys(&[V::Float8(pair[0])], &[V::Float8(pair[1])]),
                Ordering::Less
            );
        }
        // COLLATE "C": bytes, so 'B' < 'a' < 'é'.
        let texts = ["", "B", "a", "ab", "b", "é"];
        for pair in texts.windows(2) {
            let (a, b) = (V::Text(pair[0].into()), V::Text(pair[1].into()));
            assert_eq!(compare_keys(&[a], &[b]), Ordering::Less, "{pair:?}");
        }
    }

    fn value() -> impl Strategy<Value = PgValue> {
        prop_oneof![
            Just(V::Null),
            any::<bool>().prop_map(V::Bool),
            any::<i64>().prop_map(V::Int8),
            prop_oneof![any::<f64>(), Just(-0.0), Just(f64::NAN)].prop_map(V::Float8),
            "[-+]?[0-9]{0,3}(\\.[0-9]{0,3})?([eE][-+]?[0-9])?".prop_map(V::Numeric),
            "[a-c]{0,3}".prop_map(V::Text),
            prop::collection::vec(0..3_u8, 0..3).prop_map(V::Bytea),
            (-3..3_i32).prop_map(V::Date),
            (-3..3_i64).prop_map(V::Timestamptz),
            r#"\{("[ab]":[0-9](\.0)?,?){0,3}\}"#.prop_map(V::Jsonb),
        ]
    }

    proptest! {
        /// `Equal` exactly when the encodings are equal, and the order is antisymmetric.
        #[test]
        fn key_order_agrees_with_the_encoding(a in prop::collection::vec(value(), 0..3), b in prop::collection::vec(value(), 0..3)) {
            let encode_all = |vs: &[PgValue]| vs.iter().map(enc).collect::<Vec<_>>();
            let order = compare_keys(&a, &b);
            prop_assert_eq!(order == Ordering::Equal, encode_all(&a) == encode_all(&b));
            prop_assert_eq!(order.reverse(), compare_keys(&b, &a));
        }

        #[test]
        fn any_text_as_numeric_or_json_never_panics(s in "\\PC{0,40}") {
            let _ = (enc(&num(&s)), enc(&json(&s)), display(&num(&s)), display(&json(&s)));
        }

        /// One integer written with trailing fraction zeros or as a scaled exponent form is
        /// one value, as numeric and inside jsonb.
        #[test]
        fn scale_and_exponent_do_not_change_a_number(i in any::<i64>(), k in 1..6_usize) {
            let zeros = "0".repeat(k);
            let spellings = [format!("{i}"), format!("{i}.{zeros}"), format!("{i}{zeros}e-{k}")];
            for s in &spellings[1..] {
                prop_assert_eq!(enc(&num(&spellings[0])), enc(&num(s)));
                prop_assert_eq!(enc(&json(&format!("[{}]", spellings[0]))), enc(&json(&format!("[{s}]"))));
            }
        }
    }

    /// Hashing throughput for realistic rows (8 columns, ~200 bytes):
    /// `cargo test --release --lib diff::canonical -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn throughput() {
        let rows: Vec<(Vec<PgValue>, Vec<PgValue>)> = (0..1000_i64)
            .map(|i| {
                let key = vec![V::Int8(i)];
                let columns = vec![
                    V::Int8(i),
                    V::Text(format!("customer number {i} of the northern region")),
                    V::Text(format!("user{i}@example.com")),
                    num(&format!("{}.{:02}", i * 37, i % 100)),
                    V::Float8(i as f64 * 0.125),
                    V::Bool(i % 2 == 0),
                    V::Timestamptz(1_700_000_000_000_000 + i * 1_000_003),
                    json(&format!(
                        r#"{{"plan":"pro","seats":{i},"tags":["a","b"],"trial":false}}"#
                    )),
                ];
                (key, columns)
            })
            .collect();
        let encoded: usize = rows
            .iter()
            .map(|(_, c)| c.iter().map(|v| enc(v).len()).sum::<usize>())
            .sum();
        let per_row = encoded as f64 / rows.len() as f64;
        let total = 1_000_000;
        let started = std::time::Instant::now();
        let mut acc = 0_u8;
        for n in 0..total {
            let (key, columns) = &rows[n % rows.len()];
            acc ^= key_hash(key)[0] ^ row_hash(key, columns)[0];
        }
        let secs = started.elapsed().as_secs_f64();
        std::hint::black_box(acc);
        println!(
            "{total} rows (key hash + row hash), {per_row:.0} canonical bytes/row in {secs:.3}s: \
             {:.0} rows/s, {:.1} MB/s of canonical encoding",
            total as f64 / secs,
            total as f64 * per_row / secs / 1e6
        );
    }
}
