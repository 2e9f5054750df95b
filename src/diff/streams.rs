//! The two sides of a diff as streams of rows in key order, each read on its own thread: the
//! SQLite side in one read transaction, every value converted with the target column's type
//! (the snapshot's plan); the PostgreSQL side with `COPY (SELECT …) TO STDOUT (FORMAT binary)`,
//! so no session setting can change a byte. Each row travels as its canonical bytes (see
//! `wire`: straight from the SQLite value or the COPY field, no value built in between), so the
//! merge can tell equal rows apart by comparing bytes and hash a matched pair once. Rows travel
//! in batches over bounded channels, so memory stays flat whatever the table size.

use std::path::Path;

use crossbeam_channel::{Receiver, Sender};
use futures_util::StreamExt;
use rusqlite::Connection;

use super::canonical::{encode_canonical, encode_count};
use super::wire::{encode_copy_field, encode_sqlite};
use crate::convert::{ConvertOptions, PgType, PgValue};
use crate::error::{Error, Result};
use crate::source::profile::row_key;
use crate::source::quote_ident;
use crate::target::connect::TargetUrl;
use crate::target::copy_out::{CopyDecoder, Tuple};
use crate::target::ddl::qualified;
use crate::target::mapping::TableMap;
use crate::translate::quote_pg;

/// Rows per message between a reader and the merge: amortises channel costs.
pub const BATCH_ROWS: usize = 1024;
/// Batches in flight per side: bounds memory to a few thousand rows.
pub const CHANNEL_BATCHES: usize = 8;
/// Room for a batch of typical rows (~250 canonical bytes) before it grows.
const BATCH_BYTES: usize = BATCH_ROWS * 256;
/// Bytes of the count before the key values and before the columns.
const COUNT_LEN: usize = 4;

/// Rows of one side, each as the bytes its row hash covers after the domain byte: the number of
/// key values (`u32` BE), the key values canonical, the number of columns, the columns canonical
/// in target order. Back to back in one buffer: a batch is three allocations, not one per value.
#[derive(Debug)]
pub struct RowBatch {
    bytes: Vec<u8>,
    /// Per row: where it starts, where its key ends and where it ends, in `bytes`.
    spans: Vec<(usize, usize, usize)>,
    /// SQLite side only: the rows that carry a [`SourceNote`], by row index, ascending.
    notes: Vec<(usize, SourceNote)>,
}

/// What the SQLite side knows about a row beyond its values.
#[derive(Debug, Clone, Default)]
pub struct SourceNote {
    /// The key as `sqlite2pg.quarantine.row_key` stores it (see [`read_source`] for when it is
    /// built).
    pub key_json: Option<serde_json::Value>,
    /// The first value that does not fit its column (the row should be quarantined); that
    /// value is encoded as NULL.
    pub misfit: Option<RowMisfit>,
}

#[derive(Debug, Clone)]
pub struct RowMisfit {
    /// Position of the column in the table map.
    pub column: usize,
    /// `column: reason`.
    pub message: String,
}

/// One row of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// Everything the row hash covers after its domain byte (see [`RowBatch`]).
    pub encoded: &'a [u8],
    key_end: usize,
    pub note: Option<&'a SourceNote>,
}

impl<'a> Row<'a> {
    /// The key's count and values: what the key hash covers after its domain byte.
    pub fn encoded_key(&self) -> &'a [u8] {
        &self.encoded[..self.key_end]
    }

    /// The key values, canonical, without their count.
    pub fn key(&self) -> &'a [u8] {
        &self.encoded[COUNT_LEN..self.key_end]
    }

    /// The columns, canonical, without their count.
    pub fn columns(&self) -> &'a [u8] {
        &self.encoded[self.key_end + COUNT_LEN..]
    }

    pub fn misfit(&self) -> Option<&'a RowMisfit> {
        self.note.and_then(|n| n.misfit.as_ref())
    }
}

impl RowBatch {
    fn new() -> RowBatch {
        RowBatch {
            bytes: Vec::with_capacity(BATCH_BYTES),
            spans: Vec::with_capacity(BATCH_ROWS),
            notes: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Row `i`; `note_at` is a cursor into the notes that the caller moves forward with `i`.
    pub fn row(&self, i: usize, note_at: &mut usize) -> Row<'_> {
        let (start, key_end, end) = self.spans[i];
        while self.notes.get(*note_at).is_some_and(|(n, _)| *n < i) {
            *note_at += 1;
        }
        let note = match self.notes.get(*note_at) {
            Some((n, note)) if *n == i => Some(note),
            _ => None,
        };
        Row {
            encoded: &self.bytes[start..end],
            key_end: key_end - start,
            note,
        }
    }

    /// Starts a row: its key count; returns where it starts.
    fn begin(&mut self, keys: usize) -> usize {
        let start = self.bytes.len();
        encode_count(&mut self.bytes, keys);
        start
    }

    /// Ends the key of the row begun at `start` and starts its columns.
    fn end_key(&mut self, columns: usize) -> usize {
        let key_end = self.bytes.len();
        encode_count(&mut self.bytes, columns);
        key_end
    }

    fn finish(&mut self, start: usize, key_end: usize) {
        self.spans.push((start, key_end, self.bytes.len()));
    }
}

/// An inclusive range of a single integer key, pushed down into both queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    pub lo: i64,
    pub hi: i64,
}

/// A reader's end of its channel to the merge: full batches go out, and batches the merge is
/// done with come back to be refilled (a fresh batch for every 1024 rows would fault in new
/// memory pages every time).
pub struct BatchSender {
    full: Sender<RowBatch>,
    spare: Receiver<RowBatch>,
}

/// The merge's end of a reader's channel.
pub struct BatchReceiver {
    full: Receiver<RowBatch>,
    spare: Sender<RowBatch>,
}

/// A channel for one side: at most [`CHANNEL_BATCHES`] batches in flight, so memory stays flat.
pub fn batch_channel() -> (BatchSender, BatchReceiver) {
    let (full_tx, full_rx) = crossbeam_channel::bounded(CHANNEL_BATCHES);
    let (spare_tx, spare_rx) = crossbeam_channel::bounded(CHANNEL_BATCHES);
    let sender = BatchSender {
        full: full_tx,
        spare: spare_rx,
    };
    let receiver = BatchReceiver {
        full: full_rx,
        spare: spare_tx,
    };
    (sender, receiver)
}

impl BatchSender {
    /// Sends the batch when it is full and goes on with a spare one; false when the merge has
    /// stopped listening.
    fn send_full(&self, batch: &mut RowBatch) -> bool {
        if batch.len() < BATCH_ROWS {
            return true;
        }
        let next = match self.spare.try_recv() {
            Ok(mut spare) => {
                spare.bytes.clear();
                spare.spans.clear();
                spare.notes.clear();
                spare
            }
            Err(_) => RowBatch::new(),
        };
        self.full.send(std::mem::replace(batch, next)).is_ok()
    }

    /// Sends the last, partly filled batch.
    fn send_last(&self, batch: RowBatch) {
        if !batch.is_empty() {
            let _ = self.full.send(batch);
        }
    }
}

impl BatchReceiver {
    /// The next batch; `None` once the reader is done.
    pub fn recv(&self) -> Option<RowBatch> {
        self.full.recv().ok()
    }

    /// Hands a batch the merge is done with back to the reader for refilling.
    pub fn give_back(&self, batch: RowBatch) {
        let _ = self.spare.try_send(batch);
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

/// Reads the SQLite side in one read transaction and sends batches of encoded rows. Each row's
/// key as the quarantine records it (`key_json`) is built only for rows with a misfit, or for
/// every row when `quarantine_keys` (the table has quarantined rows to recognise). Returns the
/// change seq the read saw (`None` when capture is not installed): the rows read are the
/// source's state after exactly the changes up to it.
pub fn read_source(
    path: &Path,
    map: &TableMap,
    range: Option<KeyRange>,
    opts: ConvertOptions,
    quarantine_keys: bool,
    out: BatchSender,
) -> Result<Option<u64>> {
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
    // The first read opens the transaction's snapshot: the seq and the rows are one state.
    let seq = crate::source::capture::visible_seq(&conn)?;
    stream_source(&conn, map, range, opts, quarantine_keys, &out)
        .map_err(err("read rows for the diff"))?;
    conn.execute_batch("COMMIT")
        .map_err(err("end the diff read"))?;
    Ok(seq)
}

fn stream_source(
    conn: &Connection,
    map: &TableMap,
    range: Option<KeyRange>,
    opts: ConvertOptions,
    quarantine_keys: bool,
    out: &BatchSender,
) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare(&source_sql(map, range))?;
    let mut rows = match range {
        Some(r) => stmt.query([r.lo, r.hi])?,
        None => stmt.query([])?,
    };
    let (mut batch, mut count) = (RowBatch::new(), 0u64);
    while let Some(row) = rows.next()? {
        let misfit = encode_source_row(row, map, opts, &mut batch)?;
        if quarantine_keys || misfit.is_some() {
            let key_json = Some(key_json(row, &map.key)?);
            let note = SourceNote { key_json, misfit };
            batch.notes.push((batch.len() - 1, note));
        }
        count += 1;
        if !out.send_full(&mut batch) {
            return Ok(count);
        }
    }
    out.send_last(batch);
    Ok(count)
}

/// Appends one SQLite row, every value converted to its column's type and encoded; a value that
/// does not fit is encoded as NULL and the first such is returned.
fn encode_source_row(
    row: &rusqlite::Row<'_>,
    map: &TableMap,
    opts: ConvertOptions,
    batch: &mut RowBatch,
) -> rusqlite::Result<Option<RowMisfit>> {
    let null = |bytes: &mut Vec<u8>| encode_canonical(bytes, &PgValue::Null);
    let start = batch.begin(map.key.len());
    for &k in &map.key {
        if encode_sqlite(&mut batch.bytes, &map.columns[k].ty, row.get_ref(k)?, opts).is_err() {
            null(&mut batch.bytes);
        }
    }
    let key_end = batch.end_key(map.columns.len());
    let mut misfit = None;
    for (i, c) in map.columns.iter().enumerate() {
        if let Err(m) = encode_sqlite(&mut batch.bytes, &c.ty, row.get_ref(i)?, opts) {
            null(&mut batch.bytes);
            misfit.get_or_insert_with(|| RowMisfit {
                column: i,
                message: format!("{}: {}", c.source, m.reason),
            });
        }
    }
    batch.finish(start, key_end);
    Ok(misfit)
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

/// Reads the PostgreSQL side with binary COPY and sends batches of encoded rows.
pub fn read_target(
    url: &TargetUrl,
    schema: &str,
    map: &TableMap,
    range: Option<KeyRange>,
    out: BatchSender,
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
        let data_error = |reason| Error::Data {
            table: map.source.clone(),
            reason,
        };
        let types = map.types();
        let mut decoder = CopyDecoder::new(types.clone());
        let (mut batch, mut count) = (RowBatch::new(), 0u64);
        while let Some(chunk) = stream.next().await {
            decoder.feed(&chunk.map_err(err("read COPY TO"))?);
            while let Some(tuple) = decoder.next_tuple().map_err(data_error)? {
                encode_target_row(&tuple, map, &types, &mut batch).map_err(data_error)?;
                count += 1;
                if !out.send_full(&mut batch) {
                    return Ok(count);
                }
            }
        }
        decoder.check_complete().map_err(|reason| Error::Data {
            table: map.source.clone(),
            reason: format!("the COPY stream ended early: {reason}"),
        })?;
        out.send_last(batch);
        Ok(count)
    })
}

/// Appends one COPY tuple, every field encoded from its binary payload.
fn encode_target_row(
    tuple: &Tuple<'_>,
    map: &TableMap,
    types: &[PgType],
    batch: &mut RowBatch,
) -> std::result::Result<(), String> {
    let field = |bytes: &mut Vec<u8>, column: usize| {
        encode_copy_field(bytes, &types[column], tuple.field(column))
            .map_err(|e| format!("COPY row {}, column {column}: {e}", tuple.row))
    };
    let start = batch.begin(map.key.len());
    for &k in &map.key {
        field(&mut batch.bytes, k)?;
    }
    let key_end = batch.end_key(types.len());
    for column in 0..types.len() {
        field(&mut batch.bytes, column)?;
    }
    batch.finish(start, key_end);
    Ok(())
}
