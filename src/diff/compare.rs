//! The diff itself: per table, both sides read and hashed in parallel (see `streams`), merged in
//! one pass in key order — missing, extra and modified rows found in bounded memory — with
//! quarantined rows accounted as expected-missing, per-column mismatch counts, the bucketed
//! summaries of both sides, and at most `max_differences` rows kept for the report.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use crossbeam_channel::Receiver;
use tokio_postgres::Client;

use super::buckets::{TableBuckets, BUCKETS};
use super::canonical::{compare_keys, display, encode_canonical};
use super::report::{ColumnDifference, DiffKind, Difference, TableDiff};
use super::streams::{read_source, read_target, Batch, HashedRow, KeyRange, CHANNEL_BATCHES};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::source::introspect::Table;
use crate::target::mapping::TableMap;

const QUARANTINED_KEYS: &str = "SELECT row_key FROM sqlite2pg.quarantine WHERE table_name = $1";
const HAS_QUARANTINE: &str = "SELECT to_regclass('sqlite2pg.quarantine') IS NOT NULL";

/// What to compare and how much to keep.
#[derive(Debug, Clone)]
pub struct TableScope {
    pub range: Option<KeyRange>,
    /// Compare only rows whose key hash falls in the first `sample` fraction of buckets (the
    /// same rows on both sides).
    pub sample: Option<f64>,
    pub max_differences: usize,
}

/// Keys (as `row_key` JSON text) quarantined for `table`.
pub async fn quarantined_keys(client: &Client, table: &str) -> Result<HashSet<String>> {
    let err = |op| {
        let table = Some(table.to_string());
        move |source| Error::Target { op, table, source }
    };
    let exists: bool = client
        .query_one(HAS_QUARANTINE, &[])
        .await
        .map_err(err("look for the quarantine"))?
        .get(0);
    if !exists {
        return Ok(HashSet::new());
    }
    let rows = client
        .query(QUARANTINED_KEYS, &[&table])
        .await
        .map_err(err("read quarantined keys"))?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, serde_json::Value>(0).to_string())
        .collect())
}

/// Rows of one side in key order, checked as they come: a stream out of order would make the
/// merge report phantom differences, so it is an error instead.
struct Ordered {
    rx: Receiver<Batch>,
    batch: std::vec::IntoIter<HashedRow>,
    next: Option<HashedRow>,
    last: Option<Vec<crate::convert::PgValue>>,
    side: &'static str,
    table: String,
    sample_buckets: usize,
}

impl Ordered {
    fn new(rx: Receiver<Batch>, side: &'static str, table: &str, sample: Option<f64>) -> Ordered {
        let sample_buckets = sample.map_or(BUCKETS, |p| {
            ((p * BUCKETS as f64).ceil() as usize).clamp(1, BUCKETS)
        });
        Ordered {
            rx,
            batch: Vec::new().into_iter(),
            next: None,
            last: None,
            side,
            table: table.to_string(),
            sample_buckets,
        }
    }

    fn peek(&mut self) -> Result<Option<&HashedRow>> {
        while self.next.is_none() {
            let row = match self.batch.next() {
                Some(r) => r,
                None => match self.rx.recv() {
                    Ok(b) => {
                        self.batch = b.into_iter();
                        continue;
                    }
                    Err(_) => return Ok(None),
                },
            };
            if let Some(last) = &self.last {
                if compare_keys(last, &row.key) != std::cmp::Ordering::Less {
                    return Err(Error::Data {
                        table: self.table.clone(),
                        reason: format!(
                            "the {} rows are not in key order at key {:?}: the key column holds values of mixed SQLite types, which sort differently in PostgreSQL",
                            self.side,
                            row.key.iter().map(display).collect::<Vec<_>>()
                        ),
                    });
                }
            }
            self.last = Some(row.key.clone());
            if usize::from(row.key_hash[0]) % BUCKETS < self.sample_buckets {
                self.next = Some(row);
            }
        }
        Ok(self.next.as_ref())
    }

    fn take(&mut self) -> HashedRow {
        self.next.take().expect("peeked before taking")
    }
}

/// Compares one mapped table.
pub fn diff_table(
    config: &Config,
    source: &Table,
    map: &TableMap,
    quarantined: &HashSet<String>,
    scope: &TableScope,
) -> Result<TableDiff> {
    let started = Instant::now();
    let path = config.require_source()?.to_path_buf();
    let url = config.require_target()?.clone();
    let (stx, srx) = crossbeam_channel::bounded(CHANNEL_BATCHES);
    let (ttx, trx) = crossbeam_channel::bounded(CHANNEL_BATCHES);
    let mut diff = TableDiff::new(&source.name, &map.target, map.problems.clone());
    let keys = !quarantined.is_empty();
    let merged = std::thread::scope(|s| {
        let src = s.spawn(|| read_source(&path, map, scope.range, config.convert, keys, stx));
        let tgt = s.spawn(|| read_target(&url, &config.schema, map, scope.range, ttx));
        let mut sides = (
            Ordered::new(srx, "SQLite", &source.name, scope.sample),
            Ordered::new(trx, "PostgreSQL", &source.name, scope.sample),
        );
        let merged = merge(&mut sides, map, quarantined, scope, &mut diff);
        drop(sides);
        let src = src.join().expect("the SQLite reader panicked");
        let tgt = tgt.join().expect("the PostgreSQL reader panicked");
        merged.and(src).and(tgt)
    });
    merged?;
    diff.seconds = started.elapsed().as_secs_f64();
    diff.finish();
    Ok(diff)
}

fn merge(
    sides: &mut (Ordered, Ordered),
    map: &TableMap,
    quarantined: &HashSet<String>,
    scope: &TableScope,
    diff: &mut TableDiff,
) -> Result<()> {
    let (mut src_buckets, mut tgt_buckets) = (TableBuckets::default(), TableBuckets::default());
    loop {
        let order = match (sides.0.peek()?, sides.1.peek()?) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => compare_keys(&a.key, &b.key),
        };
        match order {
            std::cmp::Ordering::Less => {
                let a = sides.0.take();
                diff.source_rows += 1;
                if a.misfit.is_none() {
                    src_buckets.add(&a.key_hash, &a.row_hash);
                }
                missing(a, map, quarantined, scope, diff);
            }
            std::cmp::Ordering::Greater => {
                let b = sides.1.take();
                diff.target_rows += 1;
                tgt_buckets.add(&b.key_hash, &b.row_hash);
                diff.extra += 1;
                diff.keep(scope.max_differences, || {
                    Difference::whole(&map.source, DiffKind::Extra, &b)
                });
            }
            std::cmp::Ordering::Equal => {
                let (a, b) = (sides.0.take(), sides.1.take());
                diff.source_rows += 1;
                diff.target_rows += 1;
                src_buckets.add(&a.key_hash, &a.row_hash);
                tgt_buckets.add(&b.key_hash, &b.row_hash);
                matched(a, b, map, scope, diff);
            }
        }
    }
    diff.source_fingerprint = src_buckets.fingerprint();
    diff.target_fingerprint = tgt_buckets.fingerprint();
    diff.source_buckets = Some(src_buckets);
    Ok(())
}

fn missing(
    a: HashedRow,
    map: &TableMap,
    quarantined: &HashSet<String>,
    scope: &TableScope,
    diff: &mut TableDiff,
) {
    let in_quarantine = a
        .key_json
        .as_ref()
        .is_some_and(|k| quarantined.contains(&k.to_string()));
    if in_quarantine {
        diff.quarantined += 1;
        return;
    }
    diff.missing += 1;
    let why = a.misfit.clone();
    diff.keep(scope.max_differences, || {
        let mut d = Difference::whole(&map.source, DiffKind::Missing, &a);
        d.note = why.map(|m| {
            format!("a value does not fit its column ({m}) and the row is not in the quarantine")
        });
        d
    });
}

fn matched(a: HashedRow, b: HashedRow, map: &TableMap, scope: &TableScope, diff: &mut TableDiff) {
    if a.misfit.is_none() && a.row_hash == b.row_hash {
        diff.identical += 1;
        return;
    }
    diff.modified += 1;
    let mut columns = Vec::new();
    for (i, c) in map.columns.iter().enumerate() {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        encode_canonical(&mut x, &a.values[i]);
        encode_canonical(&mut y, &b.values[i]);
        if x != y
            || (a.misfit.is_some()
                && a.misfit
                    .as_deref()
                    .is_some_and(|m| m.starts_with(&format!("{}:", c.source))))
        {
            *diff.column_mismatches.entry(c.target.clone()).or_default() += 1;
            columns.push(ColumnDifference {
                column: c.target.clone(),
                source: display(&a.values[i]),
                target: display(&b.values[i]),
            });
        }
    }
    diff.keep(scope.max_differences, || Difference {
        table: map.source.clone(),
        kind: DiffKind::Modified,
        key: a.key.iter().map(display).collect(),
        columns,
        note: a.misfit.clone(),
    });
}

/// The source tables to compare, in migration order.
pub fn selected<'a>(
    schema: &'a crate::source::introspect::Schema,
    names: Option<&[String]>,
) -> Result<Vec<&'a Table>> {
    let order = crate::source::order::migration_order(schema);
    let wanted: Option<Vec<String>> = names.map(|n| n.iter().map(|s| s.to_lowercase()).collect());
    if let Some(w) = &wanted {
        if let Some(missing) = w.iter().find(|n| schema.table(n).is_none()) {
            return Err(Error::Config {
                field: "--tables".into(),
                reason: format!("no table {missing:?} in the source"),
            });
        }
    }
    Ok(order
        .tables
        .iter()
        .filter_map(|n| schema.table(n))
        .filter(|t| {
            wanted
                .as_ref()
                .is_none_or(|w| w.contains(&t.name.to_lowercase()))
        })
        .collect())
}

/// Per-table key ranges from `--key-range table=lo..hi`.
pub fn parse_key_ranges(specs: &[String]) -> Result<BTreeMap<String, KeyRange>> {
    specs
        .iter()
        .map(|spec| {
            let bad = || Error::Config {
                field: "--key-range".into(),
                reason: format!("{spec:?} is not TABLE=LO..HI (integer keys)"),
            };
            let (table, range) = spec.split_once('=').ok_or_else(bad)?;
            let (lo, hi) = range.split_once("..").ok_or_else(bad)?;
            let (lo, hi) = (
                lo.trim().parse().map_err(|_| bad())?,
                hi.trim().parse().map_err(|_| bad())?,
            );
            Ok((table.trim().to_lowercase(), KeyRange { lo, hi }))
        })
        .collect()
}
