//! PostgreSQL SQL literals of converted values: for translated DEFAULTs and for reports that show
//! a value as PostgreSQL would read it back. Text uses standard-conforming strings ('' escapes).

use super::datetime::{format_date, format_timestamp};
use super::{PgType, PgValue};

/// A SQL literal of `v`, cast to `ty` where the literal alone would be ambiguous.
pub fn sql_literal(v: &PgValue, ty: &PgType) -> String {
    let quoted = |s: &str| format!("'{}'", s.replace('\'', "''"));
    match v {
        PgValue::Null => "NULL".into(),
        PgValue::Bool(b) => b.to_string(),
        PgValue::Int8(i) => i.to_string(),
        PgValue::Float8(f) if f.is_finite() => {
            format!("{}::double precision", quoted(&format!("{f:?}")))
        }
        PgValue::Float8(f) if f.is_nan() => "'NaN'::double precision".into(),
        PgValue::Float8(f) => format!(
            "'{}Infinity'::double precision",
            if *f < 0.0 { "-" } else { "" }
        ),
        PgValue::Numeric(n) => format!("{}::{}", quoted(n), ty.sql()),
        PgValue::Text(s) => quoted(s),
        PgValue::Bytea(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("'\\x{hex}'::bytea")
        }
        PgValue::Date(d) => format!("'{}'::date", format_date(i64::from(*d))),
        PgValue::Timestamptz(t) => format!("'{}'::timestamptz", format_timestamp(*t)),
        PgValue::Jsonb(j) => format!("{}::jsonb", quoted(j)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_quote_and_cast() {
        assert_eq!(
            sql_literal(&PgValue::Text("it's".into()), &PgType::Text),
            "'it''s'"
        );
        assert_eq!(
            sql_literal(&PgValue::Bytea(vec![0, 255]), &PgType::Bytea),
            "'\\x00ff'::bytea"
        );
        assert_eq!(
            sql_literal(&PgValue::Date(0), &PgType::Date),
            "'1970-01-01'::date"
        );
        assert_eq!(
            sql_literal(
                &PgValue::Numeric("1.50".into()),
                &PgType::Numeric(Some((10, 2)))
            ),
            "'1.50'::numeric(10,2)"
        );
        assert_eq!(
            sql_literal(
                &PgValue::Float8(f64::NEG_INFINITY),
                &PgType::DoublePrecision
            ),
            "'-Infinity'::double precision"
        );
    }
}
