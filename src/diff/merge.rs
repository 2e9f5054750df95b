//! The merge of the two key-ordered streams of encoded rows (see `streams`): one pass finds
//! missing, extra and modified rows in bounded memory. Rows arrive as canonical bytes, so a
//! matched pair is identical exactly when its bytes are equal, and its key hash and row hash are
//! computed once for both sides; a side's own row hash is computed only for a row that differs
//! or has no partner. Values are rendered only for the rows the report lists.
//!
//! The hashing happens here, on the merge thread, rather than on a reader: each reader is then
//! left with reading and encoding, so the SQLite reader, the PostgreSQL reader (with its server
//! backend) and the merge are three pipeline stages of similar weight.

use std::collections::HashSet;

use super::buckets::{bucket_of, TableBuckets, BUCKETS};
use super::canonical::{key_hash_of, row_hash_of};
use super::compare::TableScope;
use super::encoded::{compare_encoded_keys, display_encoded, values};
use super::report::{ColumnDifference, DiffKind, Difference, TableDiff};
use super::streams::{BatchReceiver, Row, RowBatch};
use crate::error::{Error, Result};
use crate::target::mapping::TableMap;

/// Rows of one side in key order, checked as they come: a stream out of order would make the
/// merge report phantom differences, so it is an error instead.
pub struct Ordered {
    rx: BatchReceiver,
    batch: Option<RowBatch>,
    /// The current row's index in `batch`, and the cursor into its notes.
    at: usize,
    note_at: usize,
    /// The key values of the row before the current one.
    last: Vec<u8>,
    /// Whether the current row has been checked against `last`.
    checked: bool,
    side: &'static str,
    table: String,
}

impl Ordered {
    pub fn new(rx: BatchReceiver, side: &'static str, table: &str) -> Ordered {
        Ordered {
            rx,
            batch: None,
            at: 0,
            note_at: 0,
            last: Vec::new(),
            checked: false,
            side,
            table: table.to_string(),
        }
    }

    /// The current row, `None` at the end of the stream.
    fn peek(&mut self) -> Result<Option<Row<'_>>> {
        while self.batch.as_ref().is_none_or(|b| self.at >= b.len()) {
            let Some(next) = self.rx.recv() else {
                return Ok(None);
            };
            if let Some(done) = self.batch.replace(next) {
                self.rx.give_back(done);
            }
            (self.at, self.note_at) = (0, 0);
        }
        let row = self
            .batch
            .as_ref()
            .expect("filled above")
            .row(self.at, &mut self.note_at);
        if !self.checked {
            if !self.last.is_empty() && compare_encoded_keys(&self.last, row.key()).is_ge() {
                return Err(Error::Data {
                    table: self.table.clone(),
                    reason: format!(
                        "the {} rows are not in key order at key {:?}: the key column holds values of mixed SQLite types, which sort differently in PostgreSQL",
                        self.side,
                        values(row.key()).map(display_encoded).collect::<Vec<_>>()
                    ),
                });
            }
            self.checked = true;
        }
        Ok(Some(row))
    }

    /// Moves past the current row (after a `peek` that returned one).
    fn advance(&mut self) {
        let batch = self.batch.as_ref().expect("peeked before advancing");
        let mut note_at = self.note_at;
        let key = batch.row(self.at, &mut note_at).key();
        self.last.clear();
        self.last.extend_from_slice(key);
        (self.at, self.checked) = (self.at + 1, false);
    }
}

/// Per-table state of the merge: what is counted, the buckets of both sides, what to keep.
struct Tally<'a> {
    map: &'a TableMap,
    quarantined: &'a HashSet<String>,
    scope: &'a TableScope,
    sample_buckets: usize,
    diff: &'a mut TableDiff,
    source: TableBuckets,
    target: TableBuckets,
}

/// Merges both sides of one table into `diff`: counts, buckets, fingerprints, kept differences.
pub fn merge(
    sides: &mut (Ordered, Ordered),
    map: &TableMap,
    quarantined: &HashSet<String>,
    scope: &TableScope,
    diff: &mut TableDiff,
) -> Result<()> {
    let sample_buckets = scope.sample.map_or(BUCKETS, |p| {
        ((p * BUCKETS as f64).ceil() as usize).clamp(1, BUCKETS)
    });
    let mut tally = Tally {
        map,
        quarantined,
        scope,
        sample_buckets,
        diff,
        source: TableBuckets::default(),
        target: TableBuckets::default(),
    };
    loop {
        let (a, b) = (sides.0.peek()?, sides.1.peek()?);
        match (a, b) {
            (None, None) => break,
            (Some(a), Some(b)) if compare_encoded_keys(a.key(), b.key()).is_eq() => {
                tally.matched(a, b);
                sides.0.advance();
                sides.1.advance();
            }
            (Some(a), b) if b.is_none_or(|b| compare_encoded_keys(a.key(), b.key()).is_lt()) => {
                tally.source_only(a);
                sides.0.advance();
            }
            (_, Some(b)) => {
                tally.target_only(b);
                sides.1.advance();
            }
            (Some(_), None) => unreachable!("a source row with no target row is source-only"),
        }
    }
    tally.diff.source_fingerprint = tally.source.fingerprint();
    tally.diff.target_fingerprint = tally.target.fingerprint();
    tally.diff.source_buckets = Some(tally.source);
    Ok(())
}

impl Tally<'_> {
    /// The key hash of a row in the sample (every row without `--sample`); `None` for a row
    /// outside it, which both sides skip alike.
    fn sampled(&self, row: &Row<'_>) -> Option<[u8; 32]> {
        let key_hash = key_hash_of(row.encoded_key());
        (bucket_of(&key_hash) < self.sample_buckets).then_some(key_hash)
    }

    fn matched(&mut self, a: Row<'_>, b: Row<'_>) {
        let Some(key_hash) = self.sampled(&a) else {
            return;
        };
        self.diff.source_rows += 1;
        self.diff.target_rows += 1;
        let source_hash = row_hash_of(a.encoded);
        self.source.add(&key_hash, &source_hash);
        if a.encoded == b.encoded {
            self.target.add(&key_hash, &source_hash);
            if a.misfit().is_none() {
                self.diff.identical += 1;
                return;
            }
        } else {
            self.target.add(&key_hash, &row_hash_of(b.encoded));
        }
        self.modified(a, b);
    }

    fn modified(&mut self, a: Row<'_>, b: Row<'_>) {
        self.diff.modified += 1;
        let misfit = a.misfit();
        let mut columns = Vec::new();
        let pairs = values(a.columns()).zip(values(b.columns()));
        for (i, (x, y)) in pairs.enumerate() {
            if x != y || misfit.is_some_and(|m| m.column == i) {
                let name = &self.map.columns[i].target;
                *self.diff.column_mismatches.entry(name.clone()).or_default() += 1;
                columns.push(ColumnDifference {
                    column: name.clone(),
                    source: display_encoded(x),
                    target: display_encoded(y),
                });
            }
        }
        let table = &self.map.source;
        self.diff.keep(self.scope.max_differences, || Difference {
            table: table.clone(),
            kind: DiffKind::Modified,
            key: values(a.key()).map(display_encoded).collect(),
            columns,
            note: misfit.map(|m| m.message.clone()),
        });
    }

    /// A SQLite row with no PostgreSQL row: quarantined (expected) or missing.
    fn source_only(&mut self, a: Row<'_>) {
        let Some(key_hash) = self.sampled(&a) else {
            return;
        };
        self.diff.source_rows += 1;
        let misfit = a.misfit();
        if misfit.is_none() {
            self.source.add(&key_hash, &row_hash_of(a.encoded));
        }
        let in_quarantine = a
            .note
            .and_then(|n| n.key_json.as_ref())
            .is_some_and(|k| self.quarantined.contains(&k.to_string()));
        if in_quarantine {
            self.diff.quarantined += 1;
            return;
        }
        self.diff.missing += 1;
        let table = &self.map.source;
        self.diff.keep(self.scope.max_differences, || {
            let mut d = Difference::whole(table, DiffKind::Missing, a.key(), a.columns());
            d.note = misfit.map(|m| {
                format!(
                    "a value does not fit its column ({}) and the row is not in the quarantine",
                    m.message
                )
            });
            d
        });
    }

    /// A PostgreSQL row with no SQLite row.
    fn target_only(&mut self, b: Row<'_>) {
        let Some(key_hash) = self.sampled(&b) else {
            return;
        };
        self.diff.target_rows += 1;
        self.target.add(&key_hash, &row_hash_of(b.encoded));
        self.diff.extra += 1;
        let table = &self.map.source;
        self.diff.keep(self.scope.max_differences, || {
            Difference::whole(table, DiffKind::Extra, b.key(), b.columns())
        });
    }
}
