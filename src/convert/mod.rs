//! The per-column plan that turns a SQLite value into its PostgreSQL value. One conversion,
//! shared by `check` (which counts what would not fit), snapshot's COPY, sync's apply and the
//! diff's canonical hashing, so promise 5 ("diffs tell the truth") compares what the target
//! should hold with what it holds. A value that cannot become its column's type is a [`Misfit`]
//! with a reason, never a silent change (promise 3).

pub mod datetime;
pub mod literal;
pub mod plan;
#[cfg(test)]
pub(crate) mod test_values;

use rusqlite::types::ValueRef;
use serde::{Deserialize, Serialize};

/// The PostgreSQL column types sqlite2pg plans. SQLite REAL is 8 bytes, so there is deliberately
/// no `real` (4-byte float) here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum PgType {
    Boolean,
    Bigint,
    DoublePrecision,
    /// `numeric`, or `numeric(precision, scale)`.
    Numeric(Option<(u32, u32)>),
    Text,
    Varchar(u32),
    Bytea,
    Date,
    Timestamptz,
    Jsonb,
}

impl PgType {
    /// The type as written in PostgreSQL DDL.
    pub fn sql(&self) -> String {
        match self {
            PgType::Boolean => "boolean".into(),
            PgType::Bigint => "bigint".into(),
            PgType::DoublePrecision => "double precision".into(),
            PgType::Numeric(None) => "numeric".into(),
            PgType::Numeric(Some((p, s))) => format!("numeric({p},{s})"),
            PgType::Text => "text".into(),
            PgType::Varchar(n) => format!("varchar({n})"),
            PgType::Bytea => "bytea".into(),
            PgType::Date => "date".into(),
            PgType::Timestamptz => "timestamptz".into(),
            PgType::Jsonb => "jsonb".into(),
        }
    }

    /// Parses a type name as users write it in config overrides.
    pub fn parse(s: &str) -> Result<PgType, String> {
        let norm = s.trim().to_ascii_lowercase().replace(' ', "");
        let args = |prefix: &str| -> Option<Vec<u32>> {
            let inner = norm
                .strip_prefix(prefix)?
                .strip_prefix('(')?
                .strip_suffix(')')?;
            inner.split(',').map(|n| n.trim().parse().ok()).collect()
        };
        Ok(match norm.as_str() {
            "boolean" | "bool" => PgType::Boolean,
            "bigint" | "int8" => PgType::Bigint,
            "doubleprecision" | "float8" => PgType::DoublePrecision,
            "numeric" | "decimal" => PgType::Numeric(None),
            "text" => PgType::Text,
            "bytea" => PgType::Bytea,
            "date" => PgType::Date,
            "timestamptz" | "timestampwithtimezone" => PgType::Timestamptz,
            "jsonb" => PgType::Jsonb,
            _ => match (args("numeric").or_else(|| args("decimal")), args("varchar")) {
                (Some(a), _) if a.len() == 2 && a[0] >= 1 && a[1] <= a[0] => {
                    PgType::Numeric(Some((a[0], a[1])))
                }
                (_, Some(a)) if a.len() == 1 && a[0] >= 1 => PgType::Varchar(a[0]),
                _ => {
                    return Err(format!(
                    "unknown type {s:?}: use one of boolean, bigint, double precision, numeric, \
                         numeric(p,s), text, varchar(n), bytea, date, timestamptz, jsonb"
                ))
                }
            },
        })
    }
}

impl From<PgType> for String {
    fn from(t: PgType) -> String {
        t.sql()
    }
}

impl TryFrom<String> for PgType {
    type Error = String;
    fn try_from(s: String) -> Result<PgType, String> {
        PgType::parse(&s)
    }
}

/// A value ready for PostgreSQL, in the representation of its planned type.
#[derive(Debug, Clone, PartialEq)]
pub enum PgValue {
    Null,
    Bool(bool),
    Int8(i64),
    Float8(f64),
    /// Exact decimal text (`-12.50`, `Infinity`).
    Numeric(String),
    Text(String),
    Bytea(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 00:00:00 UTC.
    Timestamptz(i64),
    /// Valid JSON text, as stored.
    Jsonb(String),
}

/// Why a value cannot become its column's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    pub reason: String,
}

fn misfit<T>(reason: impl Into<String>) -> Result<T, Misfit> {
    Err(Misfit {
        reason: reason.into(),
    })
}

/// Settings that change how values are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConvertOptions {
    /// Offset applied to date-time text without `Z` or an offset (seconds east of UTC).
    pub default_offset_seconds: i32,
}

/// 2^63 as a double: reals in [-2^63, 2^63) with no fraction fit bigint exactly.
const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

/// The largest integer magnitude a double represents exactly (2^53).
pub(crate) const F64_EXACT_INT: i64 = 1 << 53;

/// Converts one SQLite value into its PostgreSQL value for column type `ty`.
pub fn convert(ty: &PgType, v: ValueRef<'_>, opts: ConvertOptions) -> Result<PgValue, Misfit> {
    if let ValueRef::Null = v {
        return Ok(PgValue::Null);
    }
    match ty {
        PgType::Boolean => to_bool(v),
        PgType::Bigint => to_bigint(v),
        PgType::DoublePrecision => to_double(v),
        PgType::Numeric(ps) => to_numeric(v, *ps),
        PgType::Text => to_text(v).map(PgValue::Text),
        PgType::Varchar(n) => to_varchar(v, *n),
        PgType::Bytea => to_bytea(v),
        PgType::Date => to_date(v),
        PgType::Timestamptz => to_timestamptz(v, opts),
        PgType::Jsonb => to_jsonb(v),
    }
}

/// The SQLite storage class of a value, as `typeof()` names it.
pub fn storage_class(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "null",
        ValueRef::Integer(_) => "integer",
        ValueRef::Real(_) => "real",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "blob",
    }
}

fn to_bool(v: ValueRef<'_>) -> Result<PgValue, Misfit> {
    match v {
        ValueRef::Integer(0) => Ok(PgValue::Bool(false)),
        ValueRef::Integer(1) => Ok(PgValue::Bool(true)),
        ValueRef::Real(0.0) => Ok(PgValue::Bool(false)),
        ValueRef::Real(1.0) => Ok(PgValue::Bool(true)),
        ValueRef::Text(t) => match t.to_ascii_lowercase().as_slice() {
            b"true" | b"t" => Ok(PgValue::Bool(true)),
            b"false" | b"f" => Ok(PgValue::Bool(false)),
            _ => misfit("text that is not true/false cannot become boolean"),
        },
        other => misfit(format!(
            "{} {} is not 0 or 1",
            storage_class(other),
            render(other)
        )),
    }
}

fn to_bigint(v: ValueRef<'_>) -> Result<PgValue, Misfit> {
    match v {
        ValueRef::Integer(i) => Ok(PgValue::Int8(i)),
        ValueRef::Real(f) if f.fract() == 0.0 && (-I64_BOUND..I64_BOUND).contains(&f) => {
            Ok(PgValue::Int8(f as i64))
        }
        ValueRef::Real(f) => misfit(format!("real {f:?} is not an integer that fits bigint")),
        other => misfit(format!("{} cannot become bigint", storage_class(other))),
    }
}

fn to_double(v: ValueRef<'_>) -> Result<PgValue, Misfit> {
    match v {
        ValueRef::Real(f) => Ok(PgValue::Float8(f)),
        ValueRef::Integer(i) if (-F64_EXACT_INT..=F64_EXACT_INT).contains(&i) => {
            Ok(PgValue::Float8(i as f64))
        }
        ValueRef::Integer(i) => misfit(format!("integer {i} would be rounded by double precision")),
        other => misfit(format!(
            "{} cannot become double precision",
            storage_class(other)
        )),
    }
}

/// Exact decimal text of a number, or `None` for a non-number.
fn decimal_text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) if f.is_nan() => Some("NaN".into()),
        ValueRef::Real(f) if f.is_infinite() => {
            Some(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
        }
        // Rust's Display prints the shortest digits that read back as the same double, without
        // an exponent: exactly the decimal a human sees in SQLite, nothing invented.
        ValueRef::Real(f) => Some(format!("{f}")),
        _ => None,
    }
}

/// Integer digits (without leading zeros) and fraction digits (without trailing zeros).
fn decimal_digits(text: &str) -> (u32, u32) {
    let unsigned = text.trim_start_matches('-');
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    (int.len() as u32, frac.len() as u32)
}

fn to_numeric(v: ValueRef<'_>, ps: Option<(u32, u32)>) -> Result<PgValue, Misfit> {
    let Some(text) = decimal_text(v) else {
        return misfit(format!("{} cannot become numeric", storage_class(v)));
    };
    if let Some((p, s)) = ps {
        if !text
            .chars()
            .next()
            .is_some_and(|c| c == '-' || c.is_ascii_digit())
        {
            return misfit(format!("{text} does not fit numeric({p},{s})"));
        }
        let (int_digits, frac_digits) = decimal_digits(&text);
        if frac_digits > s {
            return misfit(format!(
                "{text} would be rounded to {s} decimal places by numeric({p},{s})"
            ));
        }
        if int_digits > p - s {
            return misfit(format!(
                "{text} has more than {} integer digits allowed by numeric({p},{s})",
                p - s
            ));
        }
    }
    Ok(PgValue::Numeric(text))
}

fn to_text(v: ValueRef<'_>) -> Result<String, Misfit> {
    match v {
        ValueRef::Text(bytes) => {
            let s = std::str::from_utf8(bytes).map_err(|e| Misfit {
                reason: format!("text is not valid UTF-8 ({e})"),
            })?;
            if s.contains('\0') {
                return misfit("text contains a NUL character, which PostgreSQL text cannot store");
            }
            Ok(s.to_string())
        }
        ValueRef::Integer(i) => Ok(i.to_string()),
        // Debug prints the shortest text that reads back as the same double ("0.1", "1e300").
        ValueRef::Real(f) => Ok(format!("{f:?}")),
        ValueRef::Blob(_) => misfit("a BLOB cannot become text"),
        ValueRef::Null => unreachable!("NULL is handled by convert"),
    }
}

fn to_varchar(v: ValueRef<'_>, n: u32) -> Result<PgValue, Misfit> {
    let s = to_text(v)?;
    let chars = s.chars().count();
    if chars > n as usize {
        return misfit(format!("{chars} characters do not fit varchar({n})"));
    }
    Ok(PgValue::Text(s))
}

fn to_bytea(v: ValueRef<'_>) -> Result<PgValue, Misfit> {
    match v {
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(PgValue::Bytea(b.to_vec())),
        other => misfit(format!(
            "{} {} cannot become bytea",
            storage_class(other),
            render(other)
        )),
    }
}

fn utf8_text<'a>(v: ValueRef<'a>, what: &str) -> Result<&'a str, Misfit> {
    match v {
        ValueRef::Text(b) => std::str::from_utf8(b).map_err(|_| Misfit {
            reason: format!("text is not valid UTF-8, so not {what}"),
        }),
        other => misfit(format!("{} cannot become {what}", storage_class(other))),
    }
}

fn to_date(v: ValueRef<'_>) -> Result<PgValue, Misfit> {
    let s = utf8_text(v, "a date")?;
    datetime::parse_date_only(s)
        .map(PgValue::Date)
        .map_err(|reason| Misfit { reason })
}

fn to_timestamptz(v: ValueRef<'_>, opts: ConvertOptions) -> Result<PgValue, Misfit> {
    let micros = match v {
        ValueRef::Integer(secs) => datetime::from_epoch_seconds(secs),
        ValueRef::Real(jd) => datetime::from_julian_day(jd),
        other => datetime::parse_text(
            utf8_text(other, "a timestamp")?,
            opts.default_offset_seconds,
        )
        .map(|p| p.micros),
    };
    micros
        .map(PgValue::Timestamptz)
        .map_err(|reason| Misfit { reason })
}

fn to_jsonb(v: ValueRef<'_>) -> Result<PgValue, Misfit> {
    if let Some(number) = decimal_text(v) {
        return match v {
            ValueRef::Real(f) if !f.is_finite() => misfit(format!("{number} is not a JSON number")),
            ValueRef::Real(f) => Ok(PgValue::Jsonb(format!("{f:?}"))),
            _ => Ok(PgValue::Jsonb(number)),
        };
    }
    let s = utf8_text(v, "JSON")?;
    check_jsonb_text(s)?;
    Ok(PgValue::Jsonb(s.to_string()))
}

/// Whether `s` becomes jsonb as it is: valid JSON without `\u0000` (which jsonb cannot store).
fn check_jsonb_text(s: &str) -> Result<(), Misfit> {
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(s) {
        return misfit(format!("not valid JSON: {e}"));
    }
    if s.contains("\\u0000") || s.contains('\0') {
        return misfit("JSON contains \\u0000, which PostgreSQL jsonb cannot store");
    }
    Ok(())
}

/// Whether text `bytes` convert to jsonb as they are (what [`convert`] would keep verbatim), so
/// a writer may send them without building a value.
pub(crate) fn jsonb_text_fits(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|s| check_jsonb_text(s).is_ok())
}

/// A short, faithful rendering of a SQLite value for messages and reports (text is quoted and
/// truncated, blobs are shown as hex).
pub fn render(v: ValueRef<'_>) -> String {
    const MAX: usize = 60;
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => format!("{f:?}"),
        ValueRef::Text(b) => {
            let s = String::from_utf8_lossy(b);
            let cut: String = s.chars().take(MAX).collect();
            let more = if s.chars().count() > MAX { "…" } else { "" };
            format!("{cut:?}{more}")
        }
        ValueRef::Blob(b) => {
            let hex: String = b.iter().take(MAX / 2).map(|x| format!("{x:02x}")).collect();
            let more = if b.len() > MAX / 2 { "…" } else { "" };
            format!("x'{hex}{more}' ({} bytes)", b.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::types::ValueRef as V;

    fn conv(ty: &PgType, v: V<'_>) -> Result<PgValue, Misfit> {
        convert(ty, v, ConvertOptions::default())
    }

    #[test]
    fn numeric_scale_refuses_rounding() {
        let ty = PgType::Numeric(Some((10, 2)));
        assert_eq!(
            conv(&ty, V::Real(1.5)).unwrap(),
            PgValue::Numeric("1.5".into())
        );
        assert_eq!(
            conv(&ty, V::Integer(12345678)).unwrap(),
            PgValue::Numeric("12345678".into())
        );
        assert!(conv(&ty, V::Real(0.125)).is_err());
        assert!(conv(&ty, V::Integer(123456789)).is_err());
        assert!(conv(&ty, V::Real(f64::INFINITY)).is_err());
    }

    #[test]
    fn doubles_refuse_integers_they_would_round() {
        assert_eq!(
            conv(&PgType::DoublePrecision, V::Integer(1 << 53)).unwrap(),
            PgValue::Float8(9007199254740992.0)
        );
        assert!(conv(&PgType::DoublePrecision, V::Integer((1 << 53) + 1)).is_err());
    }

    #[test]
    fn text_refuses_nul_and_invalid_utf8() {
        assert!(conv(&PgType::Text, V::Text(b"a\0b")).is_err());
        assert!(conv(&PgType::Text, V::Text(b"\xff\xfe")).is_err());
        assert_eq!(
            conv(&PgType::Text, V::Text("zürich ' \" 東京".as_bytes())).unwrap(),
            PgValue::Text("zürich ' \" 東京".into())
        );
        assert_eq!(
            conv(&PgType::Varchar(3), V::Text("äöü".as_bytes())).unwrap(),
            PgValue::Text("äöü".into())
        );
        assert!(conv(&PgType::Varchar(2), V::Text("äöü".as_bytes())).is_err());
    }

    #[test]
    fn booleans_json_and_nulls() {
        assert_eq!(
            conv(&PgType::Boolean, V::Integer(1)).unwrap(),
            PgValue::Bool(true)
        );
        assert!(conv(&PgType::Boolean, V::Integer(2)).is_err());
        assert!(conv(&PgType::Jsonb, V::Text(b"{\"a\":")).is_err());
        assert!(conv(&PgType::Jsonb, V::Text(b"\"\\u0000\"")).is_err());
        assert_eq!(
            conv(&PgType::Jsonb, V::Integer(7)).unwrap(),
            PgValue::Jsonb("7".into())
        );
        assert_eq!(conv(&PgType::Bigint, V::Null).unwrap(), PgValue::Null);
        assert_eq!(
            conv(&PgType::Bigint, V::Real(3.0)).unwrap(),
            PgValue::Int8(3)
        );
        assert!(conv(&PgType::Bigint, V::Real(9.3e18)).is_err());
    }

    #[test]
    fn type_names_parse_back() {
        for t in [
            PgType::Boolean,
            PgType::Bigint,
            PgType::DoublePrecision,
            PgType::Numeric(None),
            PgType::Numeric(Some((10, 2))),
            PgType::Text,
            PgType::Varchar(40),
            PgType::Bytea,
            PgType::Date,
            PgType::Timestamptz,
            PgType::Jsonb,
        ] {
            assert_eq!(PgType::parse(&t.sql()).unwrap(), t);
        }
        assert!(PgType::parse("real").is_err());
    }
}
