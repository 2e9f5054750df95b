//! The profile of the values actually stored: per column, `typeof()` counts and, for every
//! candidate PostgreSQL type of the column's ladder, how many values it would refuse with a few
//! example row keys. One pass over each table; the same conversion the copy will use decides
//! what fits, so `check`'s numbers are the snapshot's numbers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde::Serialize;

use super::introspect::{PrimaryKey, Table};
use super::quote_ident;
use crate::convert::plan::{choose, ladder, Choice, Step, StepOutcome, StepRule};
use crate::convert::{convert, render, ConvertOptions, PgType};
use crate::error::{Error, Result};

/// Example rows kept per column and candidate type: enough to find them, few enough to print.
pub const EXAMPLES_PER_COLUMN: usize = 3;

/// Per-column type overrides from the config, keyed by lower-case `table.column`.
pub type ColumnOverrides = BTreeMap<String, PgType>;

#[derive(Debug, Clone, Default, Serialize)]
pub struct StorageCounts {
    pub null: u64,
    pub integer: u64,
    pub real: u64,
    pub text: u64,
    pub blob: u64,
}

impl StorageCounts {
    fn add(&mut self, v: ValueRef<'_>) {
        match v {
            ValueRef::Null => self.null += 1,
            ValueRef::Integer(_) => self.integer += 1,
            ValueRef::Real(_) => self.real += 1,
            ValueRef::Text(_) => self.text += 1,
            ValueRef::Blob(_) => self.blob += 1,
        }
    }

    pub fn non_null(&self) -> u64 {
        self.integer + self.real + self.text + self.blob
    }
}

/// A value that does not fit a candidate type, located by its row key.
#[derive(Debug, Clone, Serialize)]
pub struct MisfitExample {
    /// The row's key values as a JSON array (the primary key, or the rowid).
    pub key: serde_json::Value,
    pub value: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnProfile {
    pub name: String,
    pub declared_type: String,
    pub storage: StorageCounts,
    /// Every candidate and how many values it refuses.
    pub candidates: Vec<StepOutcome>,
    /// The planned PostgreSQL type.
    pub planned: PgType,
    pub reason: String,
    /// True when the config pinned the type.
    pub overridden: bool,
    /// Values refused by the declared type's first candidate (why a column widened).
    pub declared_misfits: u64,
    pub declared_examples: Vec<MisfitExample>,
    /// Values refused by the planned type: these rows would be quarantined.
    pub misfits: u64,
    pub examples: Vec<MisfitExample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableProfile {
    pub table: String,
    pub rows: u64,
    pub key_columns: Vec<String>,
    pub columns: Vec<ColumnProfile>,
    pub seconds: f64,
}

struct Tally {
    storage: StorageCounts,
    misfits: Vec<u64>,
    examples: Vec<Vec<MisfitExample>>,
}

/// The key expressions that identify a row: the primary key columns, else the rowid.
pub fn key_columns(table: &Table) -> Vec<String> {
    match &table.primary_key {
        PrimaryKey::None => vec!["rowid".to_string()],
        pk => pk.columns(),
    }
}

/// Profiles one table in a single scan.
pub fn profile_table(
    conn: &Connection,
    path: &Path,
    table: &Table,
    overrides: &ColumnOverrides,
    opts: ConvertOptions,
) -> Result<TableProfile> {
    let started = Instant::now();
    let ladders: Vec<(Vec<Step>, bool)> = table
        .columns
        .iter()
        .map(|c| column_ladder(table, &c.name, &c.declared_type, overrides))
        .collect();
    let keys = key_columns(table);
    let (rows, tallies) =
        scan(conn, table, &keys, &ladders, opts).map_err(|source| Error::Source {
            op: "profile values",
            path: path.to_path_buf(),
            table: Some(table.name.clone()),
            source,
        })?;
    let columns = table
        .columns
        .iter()
        .zip(ladders)
        .zip(tallies)
        .map(|((col, (ladder, overridden)), tally)| {
            column_profile(&col.name, &col.declared_type, ladder, overridden, tally)
        })
        .collect();
    Ok(TableProfile {
        table: table.name.clone(),
        rows,
        key_columns: keys,
        columns,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The profile a table would have if every stored value fitted its column's first candidate
/// (the declared type's, or the config's override), without reading a value. The snapshot plans
/// with it and lets the copy confirm it: a value that does not fit shows up as a misfit there,
/// and only then is the table profiled for real (see `snapshot`), so clean tables are read once.
pub fn declared_profile(table: &Table, overrides: &ColumnOverrides, rows: u64) -> TableProfile {
    let columns = table
        .columns
        .iter()
        .map(|c| {
            let (ladder, overridden) = column_ladder(table, &c.name, &c.declared_type, overrides);
            let step = ladder
                .into_iter()
                .next()
                .expect("every ladder has a first step");
            ColumnProfile {
                name: c.name.clone(),
                declared_type: c.declared_type.clone(),
                storage: StorageCounts::default(),
                candidates: vec![StepOutcome {
                    ty: step.ty.clone(),
                    misfits: 0,
                }],
                planned: step.ty,
                reason: "assumed from the declared type; the copy confirms every value fits".into(),
                overridden,
                declared_misfits: 0,
                declared_examples: Vec::new(),
                misfits: 0,
                examples: Vec::new(),
            }
        })
        .collect();
    TableProfile {
        table: table.name.clone(),
        rows,
        key_columns: key_columns(table),
        columns,
        seconds: 0.0,
    }
}

/// True when the config pins the type of `table.column`.
pub fn is_overridden(overrides: &ColumnOverrides, table: &str, column: &str) -> bool {
    overrides.contains_key(&format!("{table}.{column}").to_lowercase())
}

/// A column's candidate types (the config's override alone, or the declared type's ladder), and
/// whether the config chose them.
fn column_ladder(
    table: &Table,
    column: &str,
    declared: &str,
    overrides: &ColumnOverrides,
) -> (Vec<Step>, bool) {
    match overrides.get(&format!("{}.{}", table.name, column).to_lowercase()) {
        Some(ty) => (
            vec![Step {
                ty: ty.clone(),
                rule: StepRule::Always,
            }],
            true,
        ),
        None => (ladder(declared), false),
    }
}

/// Two passes: every column against its first candidate (and the `typeof()` counts); then, only
/// for columns some value did not fit, the remaining candidates. Most columns fit their declared
/// type, so most tables are read once and each value is converted once.
fn scan(
    conn: &Connection,
    table: &Table,
    keys: &[String],
    ladders: &[(Vec<Step>, bool)],
    opts: ConvertOptions,
) -> rusqlite::Result<(u64, Vec<Tally>)> {
    let mut tallies: Vec<Tally> = ladders
        .iter()
        .map(|(l, _)| Tally {
            storage: StorageCounts::default(),
            misfits: vec![0; l.len()],
            examples: vec![Vec::new(); l.len()],
        })
        .collect();
    let first: Vec<std::ops::Range<usize>> = ladders.iter().map(|_| 0..1).collect();
    let count = scan_pass(conn, table, keys, ladders, &first, true, opts, &mut tallies)?;
    let rest: Vec<std::ops::Range<usize>> = ladders
        .iter()
        .zip(&tallies)
        .map(|((l, _), t)| if t.misfits[0] > 0 { 1..l.len() } else { 0..0 })
        .collect();
    if rest.iter().any(|r| !r.is_empty()) {
        scan_pass(conn, table, keys, ladders, &rest, false, opts, &mut tallies)?;
    }
    Ok((count, tallies))
}

/// One pass over the table, converting column `i`'s values with the ladder steps `steps[i]`.
#[allow(clippy::too_many_arguments)]
fn scan_pass(
    conn: &Connection,
    table: &Table,
    keys: &[String],
    ladders: &[(Vec<Step>, bool)],
    steps: &[std::ops::Range<usize>],
    count_storage: bool,
    opts: ConvertOptions,
    tallies: &mut [Tally],
) -> rusqlite::Result<u64> {
    let select: Vec<String> = keys
        .iter()
        .map(|k| {
            if k == "rowid" {
                k.clone()
            } else {
                quote_ident(k)
            }
        })
        .chain(table.columns.iter().map(|c| quote_ident(&c.name)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}",
        select.join(", "),
        quote_ident(&table.name)
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut count = 0u64;
    while let Some(row) = rows.next()? {
        count += 1;
        for (i, ((ladder, _), tally)) in ladders.iter().zip(tallies.iter_mut()).enumerate() {
            if steps[i].is_empty() && !count_storage {
                continue;
            }
            let v = row.get_ref(keys.len() + i)?;
            if count_storage {
                tally.storage.add(v);
            }
            for s in steps[i].clone() {
                if let Err(m) = convert(&ladder[s].ty, v, opts) {
                    tally.misfits[s] += 1;
                    if tally.examples[s].len() < EXAMPLES_PER_COLUMN {
                        let key = row_key(row, keys.len())?;
                        tally.examples[s].push(MisfitExample {
                            key,
                            value: render(v),
                            reason: m.reason,
                        });
                    }
                }
            }
        }
    }
    Ok(count)
}

/// The first `n` values of a row as a JSON array: the row key as reports and quarantine show it.
pub fn row_key(row: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<serde_json::Value> {
    let mut key = Vec::with_capacity(n);
    for i in 0..n {
        key.push(match row.get_ref(i)? {
            ValueRef::Null => serde_json::Value::Null,
            ValueRef::Integer(v) => v.into(),
            ValueRef::Real(v) => {
                serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into)
            }
            ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
            ValueRef::Blob(b) => format!(
                "x'{}'",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            )
            .into(),
        });
    }
    Ok(serde_json::Value::Array(key))
}

fn column_profile(
    name: &str,
    declared: &str,
    ladder: Vec<Step>,
    overridden: bool,
    tally: Tally,
) -> ColumnProfile {
    let outcomes: Vec<StepOutcome> = ladder
        .iter()
        .zip(&tally.misfits)
        .map(|(s, &m)| StepOutcome {
            ty: s.ty.clone(),
            misfits: m,
        })
        .collect();
    let choice = if overridden {
        let reason = match tally.misfits[0] {
            0 => "set by the config; every stored value fits".to_string(),
            n => format!(
                "set by the config; {n} value(s) do not fit and their rows will be quarantined"
            ),
        };
        Choice { step: 0, reason }
    } else {
        choose(&ladder, &outcomes, tally.storage.non_null())
    };
    let mut examples = tally.examples;
    ColumnProfile {
        name: name.to_string(),
        declared_type: declared.to_string(),
        planned: ladder[choice.step].ty.clone(),
        reason: choice.reason,
        overridden,
        declared_misfits: tally.misfits[0],
        declared_examples: examples[0].clone(),
        misfits: tally.misfits[choice.step],
        examples: std::mem::take(&mut examples[choice.step]),
        storage: tally.storage,
        candidates: outcomes,
    }
}
