//! The diff itself: per table, both sides read and encoded in parallel (see `streams`), merged
//! in one pass in key order (see `merge`) — missing, extra and modified rows found in bounded
//! memory — with quarantined rows accounted as expected-missing, per-column mismatch counts, the
//! bucketed summaries of both sides, and at most `max_differences` rows kept for the report.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use tokio_postgres::Client;

use super::merge::{merge, Ordered};
use super::report::TableDiff;
use super::streams::{batch_channel, read_source, read_target, KeyRange};
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

/// Whether a table's row counts agree after sync, given how many distinct keys of it were ever
/// quarantined. Quarantine records are history: a row quarantined once and fixed in SQLite since
/// is in PostgreSQL too, its record still there. So PostgreSQL may lack one row per quarantined
/// key and no more, and never holds more rows than SQLite. (Exact would need to know which
/// quarantined keys are still absent.) Cutover's frozen count check and `diff --changed` use it.
pub fn counts_agree(source_rows: u64, target_rows: u64, quarantined_keys: u64) -> bool {
    target_rows <= source_rows && target_rows + quarantined_keys >= source_rows
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
    let (stx, srx) = batch_channel();
    let (ttx, trx) = batch_channel();
    let mut diff = TableDiff::new(&source.name, &map.target, map.problems.clone());
    let keys = !quarantined.is_empty();
    let merged = std::thread::scope(|s| {
        // Named, so a profile or a debugger tells the three stages apart.
        let src = std::thread::Builder::new()
            .name("diff-sqlite".into())
            .spawn_scoped(s, || {
                read_source(&path, map, scope.range, config.convert, keys, stx)
            })
            .expect("start the SQLite reader thread");
        let tgt = std::thread::Builder::new()
            .name("diff-postgres".into())
            .spawn_scoped(s, || {
                read_target(&url, &config.schema, map, scope.range, ttx)
            })
            .expect("start the PostgreSQL reader thread");
        let mut sides = (
            Ordered::new(srx, "SQLite", &source.name),
            Ordered::new(trx, "PostgreSQL", &source.name),
        );
        let merged = merge(&mut sides, map, quarantined, scope, &mut diff);
        drop(sides);
        let src = src.join().expect("the SQLite reader panicked");
        let tgt = tgt.join().expect("the PostgreSQL reader panicked");
        merged.and(tgt).and(src)
    });
    diff.source_seq = merged?;
    diff.seconds = started.elapsed().as_secs_f64();
    diff.finish();
    Ok(diff)
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
