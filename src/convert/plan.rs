//! Choosing each column's PostgreSQL type from its declared type *and* the values actually
//! stored. The declared type gives a ladder of candidate types, most faithful first; the profile
//! counts how many values each candidate would refuse; the first candidate that refuses nothing
//! wins. Widening steps keep meaning (bigint → numeric, varchar(n) → text); the step from text to
//! bytea is taken only when most values are bytes, so a few bad strings are quarantined instead
//! of turning a whole text column into bytes. A config override pins one type: what does not fit
//! it is quarantined.

use serde::Serialize;

use super::PgType;

/// When a ladder step may be chosen over the steps before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepRule {
    /// Whenever the earlier steps refuse some value.
    Always,
    /// Only when the earlier step refuses most of the non-NULL values.
    Majority,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub ty: PgType,
    pub rule: StepRule,
}

/// SQLite's GeoPackage/SpatiaLite geometry type names: binary geometry blobs, not integers,
/// although "POINT" contains "INT" and would get INTEGER affinity.
const GEOMETRY_TYPES: &[&str] = &[
    "GEOMETRY",
    "POINT",
    "LINESTRING",
    "POLYGON",
    "MULTIPOINT",
    "MULTILINESTRING",
    "MULTIPOLYGON",
    "GEOMETRYCOLLECTION",
    "CURVEPOLYGON",
    "MULTICURVE",
    "MULTISURFACE",
];

/// The candidate types for a declared SQLite type, most faithful first. The rules follow SQLite's
/// affinity rules (section 3.1 of its datatype page) after the names that carry a more specific
/// meaning (BOOLEAN, DATE, DATETIME/TIMESTAMP, JSON, geometry types).
pub fn ladder(declared: &str) -> Vec<Step> {
    use PgType::*;
    let d = declared.trim().to_ascii_uppercase();
    let base = d.split('(').next().unwrap_or("").trim().to_string();
    let steps: Vec<PgType> = if d.is_empty() {
        vec![Bigint, DoublePrecision, Numeric(None), Text, Bytea]
    } else if d.contains("BOOL") {
        vec![Boolean, Bigint, Numeric(None), Text]
    } else if d.contains("DATETIME") || d.contains("TIMESTAMP") {
        vec![Timestamptz, Text]
    } else if d.contains("DATE") {
        vec![Date, Timestamptz, Text]
    } else if d.contains("JSON") {
        vec![Jsonb, Text]
    } else if GEOMETRY_TYPES.contains(&base.as_str()) {
        vec![Bytea, Text]
    } else if d.contains("INT") {
        vec![Bigint, Numeric(None), Text, Bytea]
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        match type_args(&d).as_deref() {
            Some([n]) if *n >= 1 => vec![Varchar(*n), Text, Bytea],
            _ => vec![Text, Bytea],
        }
    } else if d.contains("BLOB") {
        vec![Bytea, Text]
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        vec![DoublePrecision, Numeric(None), Text]
    } else {
        match type_args(&d).as_deref() {
            Some([p, s]) if *p >= 1 && *p <= 1000 && s <= p => {
                vec![Numeric(Some((*p, *s))), Numeric(None), Text]
            }
            Some([p]) if *p >= 1 && *p <= 1000 => vec![Numeric(Some((*p, 0))), Numeric(None), Text],
            _ => vec![Numeric(None), Text],
        }
    };
    steps
        .into_iter()
        .map(|ty| {
            let rule = if ty == Bytea
                && !matches!(d.as_str(), "" | "BLOB")
                && !GEOMETRY_TYPES.contains(&base.as_str())
            {
                StepRule::Majority
            } else {
                StepRule::Always
            };
            Step { ty, rule }
        })
        .collect()
}

/// The numbers in `NAME(a, b)`.
fn type_args(declared: &str) -> Option<Vec<u32>> {
    let inner = declared.split_once('(')?.1.split_once(')')?.0;
    inner.split(',').map(|n| n.trim().parse().ok()).collect()
}

/// How one candidate fared against the stored values.
#[derive(Debug, Clone, Serialize)]
pub struct StepOutcome {
    #[serde(rename = "type")]
    pub ty: PgType,
    pub misfits: u64,
}

/// The decision for one column.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    /// Index into the ladder of the chosen type.
    pub step: usize,
    /// Why this type, in one sentence for the report.
    pub reason: String,
}

/// Picks the type: the first step that refuses no value (respecting [`StepRule::Majority`]);
/// when every step refuses something, the one that refuses fewest (its misfits go to quarantine).
pub fn choose(ladder: &[Step], outcomes: &[StepOutcome], non_null: u64) -> Choice {
    let declared = &ladder[0].ty;
    for (i, (step, out)) in ladder.iter().zip(outcomes).enumerate() {
        if i > 0 && step.rule == StepRule::Majority {
            let before = outcomes[i - 1].misfits;
            if before * 2 <= non_null {
                break;
            }
        }
        if out.misfits == 0 {
            let reason = if i == 0 {
                "every stored value fits the declared type".to_string()
            } else {
                format!(
                    "{} value(s) do not fit {}, so the column widens to {} (nothing is lost)",
                    outcomes[0].misfits,
                    declared.sql(),
                    step.ty.sql()
                )
            };
            return Choice { step: i, reason };
        }
    }
    let allowed = ladder
        .iter()
        .enumerate()
        .take_while(|(i, s)| {
            *i == 0 || s.rule == StepRule::Always || outcomes[i - 1].misfits * 2 > non_null
        })
        .count();
    let best = (0..allowed)
        .min_by_key(|&i| outcomes[i].misfits)
        .unwrap_or(0);
    Choice {
        step: best,
        reason: format!(
            "{} value(s) fit no faithful PostgreSQL type; their rows will be quarantined",
            outcomes[best].misfits
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PgType::*;

    fn types(declared: &str) -> Vec<PgType> {
        ladder(declared).into_iter().map(|s| s.ty).collect()
    }

    #[test]
    fn declared_types_follow_affinity_and_common_names() {
        assert_eq!(types("INTEGER")[0], Bigint);
        assert_eq!(types("UNSIGNED BIG INT")[0], Bigint);
        assert_eq!(types("NVARCHAR(40)")[0], Varchar(40));
        assert_eq!(types("NUMERIC(10,2)")[0], Numeric(Some((10, 2))));
        assert_eq!(types("DECIMAL")[0], Numeric(None));
        assert_eq!(types("DOUBLE PRECISION")[0], DoublePrecision);
        assert_eq!(types("FLOAT")[0], DoublePrecision);
        assert_eq!(types("REAL")[0], DoublePrecision);
        assert_eq!(types("BOOLEAN")[0], Boolean);
        assert_eq!(types("DATE")[0], Date);
        assert_eq!(types("DATETIME")[0], Timestamptz);
        assert_eq!(types("TIMESTAMP")[0], Timestamptz);
        assert_eq!(types("JSON")[0], Jsonb);
        assert_eq!(types("BLOB")[0], Bytea);
        assert_eq!(types("POINT")[0], Bytea);
        assert_eq!(types("")[0], Bigint);
        assert_eq!(types("CLOB")[0], Text);
    }

    fn outcomes(ladder: &[Step], misfits: &[u64]) -> Vec<StepOutcome> {
        ladder
            .iter()
            .zip(misfits)
            .map(|(s, &m)| StepOutcome {
                ty: s.ty.clone(),
                misfits: m,
            })
            .collect()
    }

    #[test]
    fn first_type_that_refuses_nothing_wins() {
        let l = ladder("INTEGER");
        assert_eq!(choose(&l, &outcomes(&l, &[0, 0, 0, 9]), 10).step, 0);
        assert_eq!(choose(&l, &outcomes(&l, &[3, 0, 0, 9]), 10).step, 1);
        assert_eq!(choose(&l, &outcomes(&l, &[3, 3, 0, 9]), 10).step, 2);
    }

    #[test]
    fn text_becomes_bytea_only_when_most_values_are_bytes() {
        let l = ladder("TEXT");
        let few = choose(&l, &outcomes(&l, &[2, 0]), 100);
        assert_eq!(few.step, 0);
        assert!(few.reason.contains("quarantined"));
        assert_eq!(choose(&l, &outcomes(&l, &[80, 0]), 100).step, 1);
    }
}
