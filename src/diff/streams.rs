//! The two sides of a diff as streams of hashed rows in key order, each read on its own thread:
//! the SQLite side in one read transaction, every value converted with the target column's type
//! (the snapshot's plan); the PostgreSQL side with `COPY (SELECT …) TO STDOUT (FORMAT binary)`,
//! so no session setting can change a byte. Rows travel in batches over bounded channels, so
//! memory stays flat whatever the table size.

use std::path::Path;

use crossbeam_channel::Sender;
use futures_util::StreamExt;
use rusqlite::Connection;

use super::canonical::{key_hash, row_hash};
use crate::convert::{convert, ConvertOptions, PgValue};
use crate::error::{Error, Result};
use crate::source::profile::row_key;
use crate::source::quote_ident;
use crate::target::connect::TargetUrl;
use crate::target::copy_out::CopyDecoder;
use crate::target::ddl::qualified;
use crate::target::mapping::TableMap;
use crate::translate::quote_pg;

/// Rows per message between a reader and the merge: amortises channel costs.
pub const BATCH_ROWS: usize = 1024;
/// Batches in flight per side: bounds memory to a few thousand rows.
pub const CHANNEL_BATCHES: usize = 8;

/// One row, ready to compare.
#[derive(Debug, Clone)]
pub struct HashedRow {
    pub key: Vec<PgValue>,
    pub values: Vec<PgValue>,
    pub key_hash: [u8; 32],
    pub row_hash: [u8; 32],
    /// SQLite side only: the key as `sqlite2pg.quarantine.row_key` stores it (see
    /// [`read_source`] for when it is built).
    pub key_json: Option<serde_json::Value>,
    /// SQLite side only: why a value does not fit its column (its row should be quarantined).
    pub misfit: Option<String>,
}

pub type Batch = Vec<HashedRow>;

/// An inclusive range of a single integer key, pushed down into both queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    pub lo: i64,
    pub hi: i64,
}

fn hashed(
    map: &TableMap,
    values: Vec<PgValue>,
    key_json: Option<serde_json::Value>,
    misfit: Option<String>,
) -> HashedRow {
    let key: Vec<PgValue> = map.key.iter().map(|&i| values[i].clone()).collect();
    let kh = key_hash(&key);
    let rh = row_hash(&key, &values);
    HashedRow {
        key,
        values,
        key_hash: kh,
        row_hash: rh,
        key_json,
        misfit,
    }
}

fn source_sql(map: &TableMap, range: Option<KeyRange>) -> String {
    let cols: Vec<&str> = map.columns.iter().map(|c| c.source_expr.as_str()).collect();
    let order: Vec<String> = map
        .key
        .iter()
        .map(|&i| format!("{} COLLATE BINARY", map.columns[i].source_expr))
        .collect();
    let filter = range
        .map(|_| {
            format!(
                " WHERE {} BETWEEN ?1 AND ?2",
                map.columns[map.key[0]].source_expr
            )
        })
        .unwrap_or_default();
    format!(
        "SELECT {} FROM {}{filter} ORDER BY {}",
        cols.join(", "),
        quote_ident(&map.source),
        order.join(", ")
    )
}

/// Reads the SQLite side in one read transaction and sends hashed batches. Each row's key as the
/// quarantine records it (`key_json`) is built only for rows with a misfit, or for every row when
/// `quarantine_keys` (the table has quarantined rows to recognise).
pub fn read_source(
    path: &Path,
    map: &TableMap,
    range: Option<KeyRange>,
    opts: ConvertOptions,
    quarantine_keys: bool,
    out: Sender<Batch>,
) -> Result<u64> {
    let conn = crate::snapshot::copy::open_snapshot(path)?;
    let err = |op| {
        let (path, table) = (path.to_path_buf(), Some(map.source.clone()));
        move |source| Error::Source {
            op,
            path,
            table,
            source,
        }
    };
    conn.execute_batch("BEGIN")
        .map_err(err("begin the diff read"))?;
    let count = stream_source(&conn, map, range, opts, quarantine_keys, &out)
        .map_err(err("read rows for the diff"))?;
    conn.execute_batch("COMMIT")
        .map_err(err("end the diff read"))?;
    Ok(count)
}

fn stream_source(
    conn: &Connection,
    map: &TableMap,
    range: Option<KeyRange>,
    opts: ConvertOptions,
    quarantine_keys: bool,
    out: &Sender<Batch>,
) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare(&source_sql(map, range))?;
    let mut rows = match range {
        Some(r) => stmt.query([r.lo, r.hi])?,
        None => stmt.query([])?,
    };
    let (mut batch, mut count) = (Vec::with_capacity(BATCH_ROWS), 0u64);
    let key_positions: Vec<usize> = map.key.clone();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(map.columns.len());
        let mut misfit = None;
        for (i, c) in map.columns.iter().enumerate() {
            let v = row.get_ref(i)?;
            match convert(&c.ty, v, opts) {
                Ok(pg) => values.push(pg),
                Err(m) => {
                    misfit.get_or_insert(format!("{}: {}", c.source, m.reason));
                    values.push(PgValue::Null);
                }
            }
        }
        let key_json = match quarantine_keys || misfit.is_some() {
            true => Some(key_json(row, &key_positions)?),
            false => None,
        };
        batch.push(hashed(map, values, key_json, misfit));
        count += 1;
        if batch.len() == BATCH_ROWS
            && out
                .send(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(BATCH_ROWS),
                ))
                .is_err()
        {
            return Ok(count);
        }
    }
    if !batch.is_empty() {
        let _ = out.send(batch);
    }
    Ok(count)
}

/// The key as the quarantine records it: the SQLite values of the key columns, in key order.
fn key_json(row: &rusqlite::Row<'_>, positions: &[usize]) -> rusqlite::Result<serde_json::Value> {
    let whole = row_key(row, positions.iter().max().map_or(0, |m| m + 1))?;
    let all = whole.as_array().cloned().unwrap_or_default();
    Ok(serde_json::Value::Array(
        positions.iter().map(|&p| all[p].clone()).collect(),
    ))
}

fn target_sql(schema: &str, map: &TableMap, range: Option<KeyRange>) -> String {
    let cols: Vec<String> = map.columns.iter().map(|c| quote_pg(&c.target)).collect();
    let order: Vec<String> = (0..map.key.len())
        .map(|i| {
            let col = quote_pg(&map.columns[map.key[i]].target);
            if map.key_is_text(i) {
                format!("{col} COLLATE \"C\"")
            } else {
                col
            }
        })
        .collect();
    let filter = range
        .map(|r| {
            format!(
                " WHERE {} BETWEEN {} AND {}",
                quote_pg(&map.columns[map.key[0]].target),
                r.lo,
                r.hi
            )
        })
        .unwrap_or_default();
    format!(
        "COPY (SELECT {} FROM {}{filter} ORDER BY {}) TO STDOUT (FORMAT binary)",
        cols.join(", "),
        qualified(schema, &map.target),
        order.join(", ")
    )
}

/// Reads the PostgreSQL side with binary COPY and sends hashed batches.
pub fn read_target(
    url: &TargetUrl,
    schema: &str,
    map: &TableMap,
    range: Option<KeyRange>,
    out: Sender<Batch>,
) -> Result<u64> {
    let runtime = crate::target::connect::client_runtime()?;
    runtime.block_on(async {
        let client = url.connect().await?;
        let err = |op| {
            let table = Some(map.source.clone());
            move |source| Error::Target { op, table, source }
        };
        let stream = client
            .copy_out(&target_sql(schema, map, range))
            .await
            .map_err(err("start COPY TO"))?;
        futures_util::pin_mut!(stream);
        let mut decoder = CopyDecoder::new(map.types());
        let (mut batch, mut count) = (Vec::with_capacity(BATCH_ROWS), 0u64);
        while let Some(chunk) = stream.next().await {
            decoder.feed(&chunk.map_err(err("read COPY TO"))?);
            while let Some(values) = decoder.next_row().map_err(|reason| Error::Data {
                table: map.source.clone(),
                reason,
            })? {
                batch.push(hashed(map, values, None, None));
                count += 1;
                if batch.len() == BATCH_ROWS
                    && out
                        .send(std::mem::replace(
                            &mut batch,
                            Vec::with_capacity(BATCH_ROWS),
                        ))
                        .is_err()
                {
                    return Ok(count);
                }
            }
        }
        decoder.check_complete().map_err(|reason| Error::Data {
            table: map.source.clone(),
            reason: format!("the COPY stream ended early: {reason}"),
        })?;
        if !batch.is_empty() {
            let _ = out.send(batch);
        }
        Ok(count)
    })
}
