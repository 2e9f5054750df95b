//! What a diff found, as data (serialised as the documented JSON report) and as the terminal
//! summary. The JSON schema is stable: fields are only ever added. See README "diff report".

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::buckets::TableBuckets;
use super::encoded::{display_encoded, values};
use crate::error::{EXIT_ATTENTION, EXIT_OK};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// In SQLite, not in PostgreSQL (and not quarantined).
    Missing,
    /// In PostgreSQL, not in SQLite.
    Extra,
    /// Same key, different values.
    Modified,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnDifference {
    pub column: String,
    /// The value PostgreSQL should hold (SQLite's, converted), rendered.
    pub source: String,
    /// The value PostgreSQL holds, rendered.
    pub target: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub table: String,
    pub kind: DiffKind,
    pub key: Vec<String>,
    /// For `modified`: the differing columns; for `missing`/`extra`: every column of the row.
    pub columns: Vec<ColumnDifference>,
    pub note: Option<String>,
}

impl Difference {
    /// A row present on one side only, from its encoded key and columns.
    pub fn whole(table: &str, kind: DiffKind, key: &[u8], columns: &[u8]) -> Difference {
        let columns = values(columns)
            .enumerate()
            .map(|(i, v)| {
                let (s, t) = match kind {
                    DiffKind::Extra => ("(absent)".to_string(), display_encoded(v)),
                    _ => (display_encoded(v), "(absent)".to_string()),
                };
                ColumnDifference {
                    column: format!("#{}", i + 1),
                    source: s,
                    target: t,
                }
            })
            .collect();
        Difference {
            table: table.to_string(),
            kind,
            key: values(key).map(display_encoded).collect(),
            columns,
            note: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TableDiff {
    pub table: String,
    pub target: String,
    pub source_rows: u64,
    pub target_rows: u64,
    pub identical: u64,
    pub modified: u64,
    pub missing: u64,
    pub extra: u64,
    /// Source rows absent from the target because they are in `sqlite2pg.quarantine`.
    pub quarantined: u64,
    pub column_mismatches: BTreeMap<String, u64>,
    /// Schema differences (a column on one side only, no key, no target table).
    pub problems: Vec<String>,
    pub source_fingerprint: String,
    pub target_fingerprint: String,
    /// `identical` or `different`.
    pub verdict: &'static str,
    pub seconds: f64,
    /// What was compared: `full` (every row), `sample`, `key_range`, or `changed` (only the rows
    /// changed since the table's baseline, see `changed_since`; the counts of identical,
    /// modified, missing and extra rows are then among those rows).
    pub mode: &'static str,
    /// The change seq the SQLite read saw: the source's state after exactly the changes up to
    /// it. `None` when change capture is not installed.
    pub source_seq: Option<u64>,
    /// For `changed`: the baseline built on and how many changed rows were checked.
    pub changed_since: Option<ChangedSince>,
    /// Differences kept for the report (at most `max_differences` over the whole run).
    #[serde(skip)]
    pub differences: Vec<Difference>,
    #[serde(skip)]
    pub dropped_differences: u64,
    #[serde(skip)]
    pub source_buckets: Option<TableBuckets>,
}

impl TableDiff {
    pub fn new(table: &str, target: &str, problems: Vec<String>) -> TableDiff {
        TableDiff {
            table: table.to_string(),
            target: target.to_string(),
            source_rows: 0,
            target_rows: 0,
            identical: 0,
            modified: 0,
            missing: 0,
            extra: 0,
            quarantined: 0,
            column_mismatches: BTreeMap::new(),
            problems,
            source_fingerprint: String::new(),
            target_fingerprint: String::new(),
            verdict: "identical",
            seconds: 0.0,
            mode: "full",
            source_seq: None,
            changed_since: None,
            differences: Vec::new(),
            dropped_differences: 0,
            source_buckets: None,
        }
    }

    /// Keeps a difference while under the cap; counts the rest.
    pub fn keep(&mut self, cap: usize, make: impl FnOnce() -> Difference) {
        if self.differences.len() < cap {
            self.differences.push(make());
        } else {
            self.dropped_differences += 1;
        }
    }

    pub fn is_identical(&self) -> bool {
        self.modified == 0 && self.missing == 0 && self.extra == 0 && self.problems.is_empty()
    }

    pub fn finish(&mut self) {
        self.verdict = if self.is_identical() {
            "identical"
        } else {
            "different"
        };
    }
}

/// The baseline a `changed` comparison builds on: the last diff that found the table identical.
#[derive(Debug, Clone, Serialize)]
pub struct ChangedSince {
    /// When that diff ran, and the change seq its SQLite read saw.
    pub baseline_at: String,
    pub baseline_seq: u64,
    /// Rows whose key changed after `baseline_seq`, each compared on both sides.
    pub checked_rows: u64,
}

/// What was compared on the SQLite side.
#[derive(Debug, Clone, Serialize)]
pub struct SourcePosition {
    pub path: String,
    pub bytes: u64,
    pub modified_at: Option<String>,
    /// The identity of the snapshot, when one ran from this state directory: its backup's
    /// blake3, or its run id when it read the live source.
    pub snapshot_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// The JSON schema version of this report.
    pub report_version: u32,
    pub hash_version: &'static str,
    pub generated_at: String,
    pub source: SourcePosition,
    pub target: String,
    pub schema: String,
    pub sample: Option<f64>,
    pub tables: Vec<TableDiff>,
    /// blake3 over every table's source-side bucket fingerprint, in table order.
    pub fingerprint: String,
    pub identical: bool,
    /// True when `max_differences` cut the list of differing rows.
    pub partial: bool,
    pub max_differences: usize,
    pub differences: Vec<Difference>,
    pub seconds: f64,
}

impl DiffReport {
    /// 0 when every table is identical (quarantined rows accounted for), 3 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.identical {
            EXIT_OK
        } else {
            EXIT_ATTENTION
        }
    }
}

/// The terminal summary: one line per table, the differing rows, the verdict.
pub fn render_text(r: &DiffReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>10} {:>10} {:>10} {:>9} {:>8} {:>7} {:>11}  verdict",
        "table", "sqlite", "postgres", "identical", "modified", "missing", "extra", "quarantined"
    );
    for t in &r.tables {
        let _ = writeln!(
            out,
            "{:<28} {:>10} {:>10} {:>10} {:>9} {:>8} {:>7} {:>11}  {}",
            t.table,
            t.source_rows,
            t.target_rows,
            t.identical,
            t.modified,
            t.missing,
            t.extra,
            t.quarantined,
            t.verdict
        );
        if let Some(c) = &t.changed_since {
            let _ = writeln!(
                out,
                "    changed rows only: {} checked, changed after seq {} (identical at the diff of {}); SQLite read at seq {}",
                c.checked_rows,
                c.baseline_seq,
                c.baseline_at,
                t.source_seq.unwrap_or(0)
            );
        }
        for p in &t.problems {
            let _ = writeln!(out, "    problem: {p}");
        }
        if !t.column_mismatches.is_empty() {
            let cols: Vec<String> = t
                .column_mismatches
                .iter()
                .map(|(c, n)| format!("{c} ({n})"))
                .collect();
            let _ = writeln!(out, "    modified columns: {}", cols.join(", "));
        }
    }
    for d in &r.differences {
        let mut cols: Vec<String> = d
            .columns
            .iter()
            .map(|c| format!("{}: {} → {}", c.column, c.source, c.target))
            .collect();
        if cols.is_empty() {
            cols.extend(d.note.clone());
        }
        let _ = writeln!(
            out,
            "  {:?} {} key ({}): {}",
            d.kind,
            d.table,
            d.key.join(", "),
            cols.join("; ")
        );
    }
    if r.partial {
        let _ = writeln!(
            out,
            "  … more differences not listed (--max-differences {})",
            r.max_differences
        );
    }
    let _ = writeln!(out, "\nfingerprint {} ({})", r.fingerprint, r.hash_version);
    let verdict = if r.identical {
        "IDENTICAL: PostgreSQL holds exactly what SQLite holds (quarantined rows accounted for)"
    } else {
        "DIFFERENT: see the rows above (exit code 3)"
    };
    let _ = writeln!(out, "VERDICT: {verdict}");
    out
}
