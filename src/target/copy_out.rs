//! Reads `COPY (SELECT …) TO STDOUT (FORMAT binary)`: the header, one tuple per row with each
//! field in PostgreSQL's binary send format, and the trailer, arriving in chunks of any size.
//! Each field becomes the [`PgValue`] of its planned type — the inverse of
//! [`copy_binary::encode_value`](crate::target::copy_binary::encode_value).
//!
//! The diff reads the target this way so that no session setting (`TimeZone`,
//! `extra_float_digits`, `DateStyle`, `IntervalStyle`) can change what it hashes: binary send
//! formats do not depend on them. That is promise 5 ("diffs tell the truth") on the PostgreSQL
//! side. Numeric keeps its display scale (`1.50` stays `1.50`); equal values that are spelled
//! differently are the canonical encoding's business (`diff::canonical`).
//!
//! Malformed input is an `Err` naming the row, the column and its type, never a panic.

use std::fmt::Write;

use bytes::{Buf, BytesMut};

use crate::convert::{PgType, PgValue};
use crate::target::copy_binary::{
    HEADER, JSONB_VERSION, NUMERIC_DSCALE_MAX, NUMERIC_NAN, NUMERIC_NEG, NUMERIC_NINF,
    NUMERIC_PINF, NUMERIC_POS, PG_EPOCH_DAYS, PG_EPOCH_MICROS,
};

/// `PGCOPY\n\377\r\n\0`: the first 11 bytes of every binary COPY stream.
const SIGNATURE_LEN: usize = 11;
/// Signature, 32-bit flags, 32-bit header-extension length.
const FIXED_HEADER_LEN: usize = 19;
/// Flags bit 16: every tuple carries an OID (`WITH OIDS`, gone since PostgreSQL 12).
const FLAG_HAS_OIDS: u32 = 1 << 16;
/// Flags bits 0-15 are critical: a reader must stop on one it does not know.
const FLAGS_CRITICAL: u32 = 0xFFFF;
/// The field count that ends the data.
const TRAILER_COUNT: i16 = -1;
/// The field length that stands for NULL.
const NULL_LEN: i32 = -1;
/// date's `-infinity` and `infinity` (`DATEVAL_NOBEGIN`, `DATEVAL_NOEND`).
const DATE_INFINITIES: [i32; 2] = [i32::MIN, i32::MAX];
/// timestamptz's `-infinity` and `infinity` (`DT_NOBEGIN`, `DT_NOEND`).
const TIMESTAMP_INFINITIES: [i64; 2] = [i64::MIN, i64::MAX];
/// The largest base-10000 digit.
const NBASE_MAX: i16 = 9_999;

/// Parses COPY BINARY data arriving in arbitrary chunks (as tokio-postgres's `CopyOutStream`
/// yields them) into rows of [`PgValue`]s, one per planned column type.
///
/// Feed every chunk in order with [`CopyDecoder::feed`] and drain [`CopyDecoder::next_row`]
/// until it returns `Ok(None)`; when the stream has ended, [`CopyDecoder::check_complete`] says
/// whether it ended with the trailer. After an `Err` drop the decoder: a framing error (bad
/// header, wrong field count) repeats on every call.
#[derive(Debug)]
pub struct CopyDecoder {
    types: Vec<PgType>,
    buf: BytesMut,
    header_seen: bool,
    finished: bool,
    rows: u64,
    /// Where each field of the tuple at the front of `buf` lies (`None` for NULL), filled while
    /// its length is checked.
    fields: Vec<Option<(usize, usize)>>,
    /// Bytes of the tuple last handed out by [`CopyDecoder::next_tuple`], consumed on the next
    /// call.
    handed_out: usize,
}

/// One tuple of the stream, borrowed from the decoder: its fields' raw binary payloads.
#[derive(Debug, Clone, Copy)]
pub struct Tuple<'a> {
    bytes: &'a [u8],
    fields: &'a [Option<(usize, usize)>],
    /// The tuple's number in the stream (0-based), for error messages.
    pub row: u64,
}

impl<'a> Tuple<'a> {
    /// The payload of field `i` in PostgreSQL's binary send format; `None` for NULL.
    pub fn field(&self, i: usize) -> Option<&'a [u8]> {
        self.fields[i].map(|(start, end)| &self.bytes[start..end])
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl CopyDecoder {
    /// A decoder for tuples of `types.len()` fields, field `i` of type `types[i]`.
    pub fn new(types: Vec<PgType>) -> CopyDecoder {
        CopyDecoder {
            types,
            buf: BytesMut::new(),
            header_seen: false,
            finished: false,
            rows: 0,
            fields: Vec::new(),
            handed_out: 0,
        }
    }

    /// Appends the next chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete row, `Ok(None)` when more data is needed (or after the trailer).
    ///
    /// Bytes after the trailer are an `Err`: the stream is not what this decoder was built for.
    pub fn next_row(&mut self) -> Result<Option<Vec<PgValue>>, String> {
        if !self.advance_to_tuple()? {
            return Ok(None);
        }
        let tuple = self.tuple();
        let mut row = Vec::with_capacity(tuple.len());
        for (column, ty) in self.types.iter().enumerate() {
            let value = match tuple.field(column) {
                None => PgValue::Null,
                Some(payload) => decode_value(ty, payload)
                    .map_err(|e| format!("COPY row {}, column {column}: {e}", tuple.row))?,
            };
            row.push(value);
        }
        Ok(Some(row))
    }

    /// The next complete tuple, undecoded, `Ok(None)` when more data is needed (or after the
    /// trailer): what [`CopyDecoder::next_row`] decodes, for a reader that takes the fields'
    /// bytes as they are. The tuple stays valid until the next call.
    pub fn next_tuple(&mut self) -> Result<Option<Tuple<'_>>, String> {
        Ok(self.advance_to_tuple()?.then(|| self.tuple()))
    }

    /// Moves to the next complete tuple; false when more data is needed (or after the trailer).
    fn advance_to_tuple(&mut self) -> Result<bool, String> {
        self.buf.advance(std::mem::take(&mut self.handed_out));
        if !self.header_seen && !self.read_header()? {
            return Ok(false);
        }
        if self.finished {
            return match self.buf.len() {
                0 => Ok(false),
                n => Err(format!("{n} bytes after the COPY trailer")),
            };
        }
        if self.buf.get(..2) == Some(&TRAILER_COUNT.to_be_bytes()[..]) {
            self.buf.advance(2);
            self.finished = true;
            return self.advance_to_tuple();
        }
        let Some(len) = self.complete_tuple_len()? else {
            return Ok(false);
        };
        self.handed_out = len;
        self.rows += 1;
        Ok(true)
    }

    /// The tuple `advance_to_tuple` moved to.
    fn tuple(&self) -> Tuple<'_> {
        Tuple {
            bytes: &self.buf[..self.handed_out],
            fields: &self.fields,
            row: self.rows - 1,
        }
    }

    /// True once the trailer has been read.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Rows returned so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// `Ok` when the stream ended where it should: after the trailer with nothing left over.
    /// Call it when the server says the COPY is done; an `Err` describes what was cut off.
    pub fn check_complete(&self) -> Result<(), String> {
        match (self.finished, self.buf.len() - self.handed_out) {
            (true, 0) => Ok(()),
            (true, n) => Err(format!("{n} bytes after the COPY trailer")),
            (false, n) => Err(format!(
                "COPY data ended after {} rows without its trailer ({n} bytes of an incomplete \
                 {} left)",
                self.rows,
                if self.header_seen { "row" } else { "header" }
            )),
        }
    }

    /// Consumes the header once it has fully arrived; `Ok(false)` while it has not.
    fn read_header(&mut self) -> Result<bool, String> {
        let have = self.buf.len().min(SIGNATURE_LEN);
        if self.buf[..have] != HEADER[..have] {
            return Err(
                "not COPY BINARY data: the signature PGCOPY\\n\\377\\r\\n\\0 is missing".into(),
            );
        }
        if self.buf.len() < FIXED_HEADER_LEN {
            return Ok(false);
        }
        let flags = be_u32(&self.buf[11..15]);
        if flags & FLAG_HAS_OIDS != 0 {
            return Err("COPY data carries OIDs, which sqlite2pg does not read".into());
        }
        if flags & FLAGS_CRITICAL != 0 {
            return Err(format!(
                "COPY header has unknown critical flags {flags:#010x}"
            ));
        }
        let extension = be_u32(&self.buf[15..19]) as usize;
        let Some(total) = FIXED_HEADER_LEN.checked_add(extension) else {
            return Err(format!("COPY header extension of {extension} bytes"));
        };
        if self.buf.len() < total {
            return Ok(false);
        }
        self.buf.advance(total);
        self.header_seen = true;
        Ok(true)
    }

    /// The byte length of the tuple at the front of the buffer once all of it has
    /// arrived (its fields' places in `fields`); `Ok(None)` while it has not.
    fn complete_tuple_len(&mut self) -> Result<Option<usize>, String> {
        let buf = &self.buf[..];
        self.fields.clear();
        let Some(count) = buf.get(..2) else {
            return Ok(None);
        };
        let count = i16::from_be_bytes([count[0], count[1]]);
        if usize::try_from(count).ok() != Some(self.types.len()) {
            return Err(format!(
                "COPY row {} has {count} fields, expected {}",
                self.rows,
                self.types.len()
            ));
        }
        let mut at = 2;
        for column in 0..self.types.len() {
            let Some(len) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            let len = be_i32(len);
            at += 4;
            match usize::try_from(len) {
                Ok(len) => {
                    self.fields.push(Some((at, at + len)));
                    at += len;
                }
                Err(_) if len == NULL_LEN => self.fields.push(None),
                Err(_) => {
                    return Err(format!(
                        "COPY row {}, column {column}: field length {len}",
                        self.rows
                    ))
                }
            }
        }
        Ok((buf.len() >= at).then_some(at))
    }
}

/// Decodes one non-NULL field payload of type `ty` (the inverse of
/// [`copy_binary::encode_value`](crate::target::copy_binary::encode_value)). The error names
/// the type and what is wrong with the bytes.
pub fn decode_value(ty: &PgType, payload: &[u8]) -> Result<PgValue, String> {
    let value = match ty {
        PgType::Boolean => match payload {
            [0] => Ok(PgValue::Bool(false)),
            [1] => Ok(PgValue::Bool(true)),
            [b] => Err(format!("byte {b} is neither 0 nor 1")),
            _ => Err(wrong_len(payload, 1)),
        },
        PgType::Bigint => fixed(payload).map(|b| PgValue::Int8(i64::from_be_bytes(b))),
        PgType::DoublePrecision => fixed(payload).map(|b| PgValue::Float8(f64::from_be_bytes(b))),
        PgType::Numeric(_) => decode_numeric(payload).map(PgValue::Numeric),
        PgType::Text | PgType::Varchar(_) => decode_text(payload).map(PgValue::Text),
        PgType::Bytea => Ok(PgValue::Bytea(payload.to_vec())),
        PgType::Date => decode_date_field(payload).map(PgValue::Date),
        PgType::Timestamptz => decode_timestamptz_field(payload).map(PgValue::Timestamptz),
        PgType::Jsonb => match payload.split_first() {
            Some((&JSONB_VERSION, text)) => decode_text(text).map(PgValue::Jsonb),
            Some((version, _)) => Err(format!("format version {version}, expected 1")),
            None => Err("empty payload (no format version byte)".into()),
        },
    };
    value.map_err(|e| format!("{}: {e}", ty.sql()))
}

fn wrong_len(payload: &[u8], expected: usize) -> String {
    format!("payload has {} bytes, expected {expected}", payload.len())
}

fn fixed<const N: usize>(payload: &[u8]) -> Result<[u8; N], String> {
    payload.try_into().map_err(|_| wrong_len(payload, N))
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn decode_text(payload: &[u8]) -> Result<String, String> {
    String::from_utf8(payload.to_vec()).map_err(|e| {
        format!(
            "invalid UTF-8 at byte {} (is client_encoding UTF8?)",
            e.utf8_error().valid_up_to()
        )
    })
}

/// A date field's payload as days since 1970-01-01; the error without the type's name.
pub(crate) fn decode_date_field(payload: &[u8]) -> Result<i32, String> {
    let days_since_2000 = i32::from_be_bytes(fixed(payload)?);
    if DATE_INFINITIES.contains(&days_since_2000) {
        return Err(infinity_error(days_since_2000 > 0));
    }
    days_since_2000
        .checked_add(PG_EPOCH_DAYS)
        .ok_or_else(|| format!("{days_since_2000} days after 2000-01-01 is out of range"))
}

/// A timestamptz field's payload as µs since 1970-01-01 UTC; the error without the type's name.
pub(crate) fn decode_timestamptz_field(payload: &[u8]) -> Result<i64, String> {
    let micros_since_2000 = i64::from_be_bytes(fixed(payload)?);
    if TIMESTAMP_INFINITIES.contains(&micros_since_2000) {
        return Err(infinity_error(micros_since_2000 > 0));
    }
    micros_since_2000
        .checked_add(PG_EPOCH_MICROS)
        .ok_or_else(|| format!("{micros_since_2000} µs after 2000-01-01 is out of range"))
}

fn infinity_error(positive: bool) -> String {
    let sign = if positive { "" } else { "-" };
    format!("'{sign}infinity' has no planned value (SQLite values never convert to it)")
}

/// `numeric_send`'s layout → the decimal text `numeric_out` prints: exactly `dscale` fraction
/// digits (digits beyond it are dropped, as `numeric_recv` drops them), no sign on zero.
fn decode_numeric(payload: &[u8]) -> Result<String, String> {
    let Some((head, body)) = payload.split_first_chunk::<8>() else {
        return Err(wrong_len(payload, 8));
    };
    let word = |i: usize| u16::from_be_bytes([head[i], head[i + 1]]);
    let (ndigits, weight, sign, dscale) = (word(0) as i16, word(2) as i16, word(4), word(6));
    let Ok(ndigits) = usize::try_from(ndigits) else {
        return Err(format!("negative digit count {ndigits}"));
    };
    if body.len() != ndigits * 2 {
        return Err(format!(
            "{ndigits} digits need {} bytes after the header, got {}",
            ndigits * 2,
            body.len()
        ));
    }
    match sign {
        NUMERIC_NAN => return Ok("NaN".into()),
        NUMERIC_PINF => return Ok("Infinity".into()),
        NUMERIC_NINF => return Ok("-Infinity".into()),
        NUMERIC_POS | NUMERIC_NEG => {}
        other => return Err(format!("unknown sign word {other:#06x}")),
    }
    if i64::from(dscale) > NUMERIC_DSCALE_MAX {
        return Err(format!("display scale {dscale} exceeds 16383"));
    }
    let digits: Vec<i16> = body
        .chunks_exact(2)
        .map(|d| i16::from_be_bytes([d[0], d[1]]))
        .collect();
    if let Some(bad) = digits.iter().find(|d| !(0..=NBASE_MAX).contains(*d)) {
        return Err(format!("base-10000 digit {bad} out of range"));
    }
    Ok(numeric_text(&digits, weight, sign == NUMERIC_NEG, dscale))
}

/// Prints base-10000 `digits` (the first has weight `weight`) with `dscale` fraction digits.
fn numeric_text(digits: &[i16], weight: i16, negative: bool, dscale: u16) -> String {
    let group = |i: i32| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let mut int = String::new();
    for i in 0..=i32::from(weight) {
        let _ = write!(int, "{:04}", group(i));
    }
    let int = match int.trim_start_matches('0') {
        "" => "0",
        trimmed => trimmed,
    };
    let mut frac = String::with_capacity(usize::from(dscale) + 4);
    let first_frac_group = i32::from(weight) + 1;
    for k in 0..i32::from(dscale.div_ceil(4)) {
        let _ = write!(frac, "{:04}", group(first_frac_group + k));
    }
    frac.truncate(usize::from(dscale));
    let nonzero = int != "0" || frac.bytes().any(|b| b != b'0');
    let mut text = String::with_capacity(int.len() + frac.len() + 2);
    if negative && nonzero {
        text.push('-');
    }
    text.push_str(int);
    if !frac.is_empty() {
        text.push('.');
        text.push_str(&frac);
    }
    text
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::diff::canonical::encode_canonical;
    use crate::target::copy_binary::{encode_value, CopyEncoder};

    fn all_types() -> Vec<PgType> {
        vec![
            PgType::Boolean,
            PgType::Bigint,
            PgType::DoublePrecision,
            PgType::Numeric(None),
            PgType::Text,
            PgType::Varchar(5),
            PgType::Bytea,
            PgType::Date,
            PgType::Timestamptz,
            PgType::Jsonb,
        ]
    }

    fn sample_row() -> Vec<PgValue> {
        vec![
            PgValue::Bool(true),
            PgValue::Int8(i64::MIN),
            PgValue::Float8(-0.0),
            PgValue::Numeric("-12.50".into()),
            PgValue::Text("héllo\n".into()),
            PgValue::Null,
            PgValue::Bytea(vec![0, 255, 7]),
            PgValue::Date(-1),
            PgValue::Timestamptz(-1),
            PgValue::Jsonb(r#"{"a": [1, 2.50]}"#.into()),
        ]
    }

    fn stream(types: &[PgType], rows: &[Vec<PgValue>]) -> Vec<u8> {
        let mut enc = CopyEncoder::new();
        for row in rows {
            enc.push_row(types, row).unwrap();
        }
        enc.finish()
    }

    /// Feeds `bytes` in chunks of `chunk` bytes, draining rows after each.
    fn decode_all(
        types: &[PgType],
        bytes: &[u8],
        chunk: usize,
    ) -> Result<Vec<Vec<PgValue>>, String> {
        let mut dec = CopyDecoder::new(types.to_vec());
        let mut rows = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            dec.feed(piece);
            while let Some(row) = dec.next_row()? {
                rows.push(row);
            }
        }
        dec.check_complete()?;
        Ok(rows)
    }

    fn canonical(v: &PgValue) -> Vec<u8> {
        let mut out = Vec::new();
        encode_canonical(&mut out, v);
        out
    }

    fn numeric_payload(
        ndigits: i16,
        weight: i16,
        sign: u16,
        dscale: u16,
        digits: &[i16],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [ndigits as u16, weight as u16, sign, dscale] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    #[test]
    fn rows_decode_whole_or_byte_by_byte() {
        let types = all_types();
        let rows = vec![sample_row(), vec![PgValue::Null; types.len()], sample_row()];
        let bytes = stream(&types, &rows);
        for chunk in [1, 2, 3, 7, 19, 20, 64, bytes.len()] {
            let decoded = decode_all(&types, &bytes, chunk).unwrap();
            assert_eq!(decoded.len(), 3, "chunk {chunk}");
            for (got, want) in decoded.iter().zip(&rows) {
                let got: Vec<_> = got.iter().map(canonical).collect();
                let want: Vec<_> = want.iter().map(canonical).collect();
                assert_eq!(got, want, "chunk {chunk}");
            }
        }
    }

    #[test]
    fn an_empty_stream_is_header_and_trailer() {
        let bytes = stream(&[PgType::Text], &[]);
        assert_eq!(decode_all(&[PgType::Text], &bytes, 1).unwrap().len(), 0);
        let mut dec = CopyDecoder::new(vec![PgType::Text]);
        dec.feed(&bytes);
        assert_eq!(dec.next_row(), Ok(None));
        assert!(dec.is_finished());
        assert_eq!(dec.next_row(), Ok(None));
    }

    #[test]
    fn numeric_keeps_its_display_scale() {
        let cases = [
            ("1.50", "1.50"),
            ("-12.50", "-12.50"),
            ("-0.000", "0.000"),
            ("0", "0"),
            ("007.", "7"),
            (".5", "0.5"),
            ("1e20", "100000000000000000000"),
            ("+1.5e3", "1500"),
            ("15E-5", "0.00015"),
            ("10000.0001", "10000.0001"),
            ("0.000001", "0.000001"),
            ("99999999.9999", "99999999.9999"),
            ("NaN", "NaN"),
            ("inf", "Infinity"),
            ("-Infinity", "-Infinity"),
        ];
        for (written, read) in cases {
            let mut payload = Vec::new();
            let ty = PgType::Numeric(None);
            encode_value(&mut payload, &ty, &PgValue::Numeric(written.into())).unwrap();
            assert_eq!(
                decode_value(&ty, &payload),
                Ok(PgValue::Numeric(read.into())),
                "{written}"
            );
        }
    }

    #[test]
    fn numeric_drops_digits_beyond_its_scale_as_numeric_recv_does() {
        // 1.23456789 sent with dscale 2, a leading zero digit, and a negative value that
        // truncates to zero.
        let cases = [
            (
                numeric_payload(3, 0, NUMERIC_POS, 2, &[1, 2345, 6789]),
                "1.23",
            ),
            (numeric_payload(2, 1, NUMERIC_POS, 0, &[0, 42]), "42"),
            (numeric_payload(1, -2, NUMERIC_NEG, 2, &[5]), "0.00"),
            (numeric_payload(1, 2, NUMERIC_NEG, 1, &[3]), "-300000000.0"),
        ];
        for (payload, read) in cases {
            let got = decode_value(&PgType::Numeric(None), &payload);
            assert_eq!(got, Ok(PgValue::Numeric(read.into())));
        }
    }

    #[test]
    fn malformed_fields_are_errors_naming_the_type() {
        let numeric = PgType::Numeric(None);
        let cases: Vec<(PgType, Vec<u8>, &str)> = vec![
            (
                PgType::Boolean,
                vec![2],
                "boolean: byte 2 is neither 0 nor 1",
            ),
            (
                PgType::Bigint,
                vec![0; 7],
                "bigint: payload has 7 bytes, expected 8",
            ),
            (
                PgType::Text,
                vec![b'a', 0xff],
                "text: invalid UTF-8 at byte 1",
            ),
            (
                PgType::Jsonb,
                vec![2, b'1'],
                "jsonb: format version 2, expected 1",
            ),
            (PgType::Jsonb, vec![], "jsonb: empty payload"),
            (
                PgType::Date,
                i32::MAX.to_be_bytes().to_vec(),
                "date: 'infinity'",
            ),
            (
                PgType::Timestamptz,
                i64::MIN.to_be_bytes().to_vec(),
                "timestamptz: '-infinity'",
            ),
            (numeric.clone(), vec![0; 7], "numeric: payload has 7 bytes"),
            (
                numeric.clone(),
                numeric_payload(-1, 0, 0, 0, &[]),
                "numeric: negative digit count",
            ),
            (
                numeric.clone(),
                numeric_payload(2, 0, 0, 0, &[1]),
                "numeric: 2 digits need 4 bytes",
            ),
            (
                numeric.clone(),
                numeric_payload(0, 0, 0x8000, 0, &[]),
                "numeric: unknown sign word 0x8000",
            ),
            (
                numeric.clone(),
                numeric_payload(1, 0, 0, 0, &[10_000]),
                "numeric: base-10000 digit 10000",
            ),
            (
                numeric,
                numeric_payload(0, 0, 0, 0x4000, &[]),
                "numeric: display scale 16384",
            ),
        ];
        for (ty, payload, message) in cases {
            let err = decode_value(&ty, &payload).unwrap_err();
            assert!(
                err.starts_with(message),
                "{err:?} should start with {message:?}"
            );
        }
    }

    #[test]
    fn framing_errors_name_row_and_column() {
        let types = [PgType::Bigint, PgType::Boolean];
        let good = stream(&types, &[vec![PgValue::Int8(1), PgValue::Bool(true)]]);
        let body = &good[19..good.len() - 2];
        let with_tuple = |tuple: &[u8]| [&good[..19], body, tuple, &[0xff, 0xff]].concat();

        let three_fields = with_tuple(&3_i16.to_be_bytes());
        let err = decode_all(&types, &three_fields, 5).unwrap_err();
        assert_eq!(err, "COPY row 1 has 3 fields, expected 2");

        let bad_len = with_tuple(&[&2_i16.to_be_bytes()[..], &(-2_i32).to_be_bytes()].concat());
        let err = decode_all(&types, &bad_len, 5).unwrap_err();
        assert_eq!(err, "COPY row 1, column 0: field length -2");

        let bad_bool = [
            &2_i16.to_be_bytes()[..],
            &[0, 0, 0, 8],
            &[0; 8],
            &[0, 0, 0, 1, 9],
        ]
        .concat();
        let err = decode_all(&types, &with_tuple(&bad_bool), 5).unwrap_err();
        assert_eq!(
            err,
            "COPY row 1, column 1: boolean: byte 9 is neither 0 nor 1"
        );

        let err = decode_all(&types, b"PGCOPX\n", 5).unwrap_err();
        assert!(err.starts_with("not COPY BINARY data"), "{err}");
        let mut oids = good.clone();
        oids[12] = 1; // flags bit 16
        assert!(decode_all(&types, &oids, 64).unwrap_err().contains("OIDs"));
        let mut critical = good.clone();
        critical[14] = 1; // flags bit 0
        let err = decode_all(&types, &critical, 64).unwrap_err();
        assert_eq!(err, "COPY header has unknown critical flags 0x00000001");

        let err = decode_all(&types, &[&good[..], b"x"].concat(), 64).unwrap_err();
        assert_eq!(err, "1 bytes after the COPY trailer");
        let err = decode_all(&types, &good[..good.len() - 3], 64).unwrap_err();
        assert!(
            err.starts_with("COPY data ended after 0 rows without its trailer"),
            "{err}"
        );
    }

    #[test]
    fn a_header_extension_is_skipped() {
        let types = [PgType::Bigint];
        let good = stream(&types, &[vec![PgValue::Int8(5)]]);
        let mut extended = good[..15].to_vec();
        extended.extend_from_slice(&3_u32.to_be_bytes());
        extended.extend_from_slice(b"abc");
        extended.extend_from_slice(&good[19..]);
        assert_eq!(
            decode_all(&types, &extended, 2),
            Ok(vec![vec![PgValue::Int8(5)]])
        );
    }

    /// A value of `ty` the encoder accepts.
    fn value_of(ty: &PgType) -> BoxedStrategy<PgValue> {
        match ty {
            PgType::Boolean => any::<bool>().prop_map(PgValue::Bool).boxed(),
            PgType::Bigint => any::<i64>().prop_map(PgValue::Int8).boxed(),
            PgType::DoublePrecision => any::<f64>().prop_map(PgValue::Float8).boxed(),
            PgType::Numeric(_) => prop_oneof![
                "[-+]?[0-9]{1,30}(\\.[0-9]{0,20})?",
                "[-+]?[0-9]{0,3}\\.[0-9]{1,40}",
                "[-+]?[0-9]{1,6}(\\.[0-9]{1,6})?[eE][-+]?[0-9]{1,3}",
                prop::sample::select(vec!["NaN", "Infinity", "-inf", "0", "-0.00"])
                    .prop_map(String::from),
            ]
            .prop_map(PgValue::Numeric)
            .boxed(),
            PgType::Text | PgType::Varchar(_) => {
                "(?s)[^\\x00]{0,40}".prop_map(PgValue::Text).boxed()
            }
            PgType::Bytea => prop::collection::vec(any::<u8>(), 0..64)
                .prop_map(PgValue::Bytea)
                .boxed(),
            PgType::Date => (-2_000_000..2_000_000_i32).prop_map(PgValue::Date).boxed(),
            PgType::Timestamptz => (-200_000_000_000_000_000..200_000_000_000_000_000_i64)
                .prop_map(PgValue::Timestamptz)
                .boxed(),
            PgType::Jsonb => "[^\\x00]{0,20}"
                .prop_map(|s| {
                    PgValue::Jsonb(serde_json::json!({ "k": s, "n": [1.5, -2] }).to_string())
                })
                .boxed(),
        }
    }

    fn typed_value() -> impl Strategy<Value = (PgType, PgValue)> {
        prop::sample::select(all_types()).prop_flat_map(|ty| (Just(ty.clone()), value_of(&ty)))
    }

    proptest! {
        #[test]
        fn every_value_decodes_to_what_was_encoded((ty, value) in typed_value()) {
            let mut payload = Vec::new();
            encode_value(&mut payload, &ty, &value).unwrap();
            let decoded = decode_value(&ty, &payload).unwrap();
            match (&value, &decoded) {
                (PgValue::Float8(a), PgValue::Float8(b)) => prop_assert_eq!(a.to_bits(), b.to_bits()),
                (PgValue::Numeric(_), _) => prop_assert_eq!(canonical(&value), canonical(&decoded)),
                _ => prop_assert_eq!(&value, &decoded),
            }
        }

        #[test]
        fn random_bytes_never_panic(
            types in prop::collection::vec(prop::sample::select(all_types()), 0..4),
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            with_header in any::<bool>(),
            chunk in 1..50_usize,
        ) {
            let input = if with_header { [&stream(&[], &[])[..19], &bytes].concat() } else { bytes };
            let _ = decode_all(&types, &input, chunk);
            for ty in &types {
                let _ = decode_value(ty, &input);
            }
        }

        #[test]
        fn corrupted_streams_never_panic(
            rows in prop::collection::vec(prop::collection::vec(typed_value(), 3), 1..4),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            chunk in 1..50_usize,
        ) {
            let types: Vec<PgType> = rows[0].iter().map(|(t, _)| t.clone()).collect();
            let mut enc = CopyEncoder::new();
            for row in &rows {
                let values: Vec<PgValue> = row.iter().map(|(_, v)| v.clone()).collect();
                let row_types: Vec<PgType> = row.iter().map(|(t, _)| t.clone()).collect();
                if row_types == types {
                    enc.push_row(&types, &values).unwrap();
                }
            }
            let mut bytes = enc.finish();
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            let _ = decode_all(&types, &bytes, chunk);
        }
    }
}
