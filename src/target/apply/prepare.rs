//! The client-side half of applying a chunk of changes: coalesce per key, convert every image
//! with its column plan (once, for both the upsert and the verification that follows it), and
//! encode the rows to stage as binary COPY data. Pure CPU work with no connection, so the sync
//! pipeline runs it on a reader thread while PostgreSQL applies the chunk before (see
//! `pipeline::reader`), and a chunk is all a batch holds in memory at once.

use std::collections::HashMap;

use bytes::Bytes;

use super::ApplyTable;
use crate::change::{Change, RawValue};
use crate::convert::{convert, render, storage_class, ConvertOptions, PgType, PgValue};
use crate::error::{Error, Result};
use crate::target::copy_binary::CopyEncoder;
use crate::target::state::QuarantinedValue;
use crate::target::verify::{expected, wanted_key, Expected, Wanted};

/// One chunk of a batch, ready to stage: its changes (one per key, in seq order) and, per table
/// it touches, the COPY data to stage and what verification must find afterwards.
#[derive(Debug)]
pub struct PreparedChunk {
    pub(crate) changes: Vec<Change>,
    pub(crate) tables: Vec<PreparedTable>,
}

impl PreparedChunk {
    /// Changes in this chunk (after coalescing per key).
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// The rows of one table in a chunk, converted and encoded.
#[derive(Debug)]
pub(crate) struct PreparedTable {
    /// The table's position in the `tables` the chunk was prepared with.
    pub n: usize,
    /// Keys to delete (deleted rows and quarantined images), as COPY data; `None` when none.
    pub deletes: Option<Bytes>,
    /// Rows to upsert (writable columns), as COPY data; `None` when none.
    pub upserts: Option<Bytes>,
    pub quarantined: Vec<QuarantinedValue>,
    /// What PostgreSQL must hold for each key once the chunk is applied; `order` indexes the
    /// chunk's `changes`.
    pub wanted: Vec<Wanted>,
}

/// Coalesces `changes` per (table, key), converts and encodes them. `Err` when a change names a
/// table not in `tables` or its key does not convert (apply would have to refuse the batch).
pub fn prepare_chunk(
    tables: &[ApplyTable],
    changes: Vec<Change>,
    opts: ConvertOptions,
) -> Result<PreparedChunk> {
    let changes = latest(changes);
    let index: HashMap<&str, usize> = tables
        .iter()
        .enumerate()
        .map(|(n, t)| (t.map.source.as_str(), n))
        .collect();
    let mut builders: Vec<Option<TableBuilder>> = (0..tables.len()).map(|_| None).collect();
    for (order, change) in changes.iter().enumerate() {
        let &n = index
            .get(change.table.as_str())
            .ok_or_else(|| Error::Data {
                table: change.table.clone(),
                reason: "changes arrived for a table sync does not replicate".into(),
            })?;
        let table = &tables[n];
        builders[n]
            .get_or_insert_with(|| TableBuilder::new(table))
            .push(table, order, change, opts)?;
    }
    let prepared = builders
        .into_iter()
        .enumerate()
        .filter_map(|(n, b)| b.map(|b| b.finish(n)))
        .collect();
    Ok(PreparedChunk {
        changes,
        tables: prepared,
    })
}

/// Accumulates one table's part of a chunk.
struct TableBuilder {
    key_types: Vec<PgType>,
    row_types: Vec<PgType>,
    deletes: CopyEncoder,
    upserts: CopyEncoder,
    quarantined: Vec<QuarantinedValue>,
    wanted: Vec<Wanted>,
}

impl TableBuilder {
    fn new(table: &ApplyTable) -> TableBuilder {
        let map = &table.map;
        TableBuilder {
            key_types: map.key.iter().map(|&i| map.columns[i].ty.clone()).collect(),
            row_types: table.writable().map(|(_, c)| c.ty.clone()).collect(),
            deletes: CopyEncoder::new(),
            upserts: CopyEncoder::new(),
            quarantined: Vec::new(),
            wanted: Vec::new(),
        }
    }

    fn push(
        &mut self,
        table: &ApplyTable,
        order: usize,
        change: &Change,
        opts: ConvertOptions,
    ) -> Result<()> {
        let data_err = |reason| Error::Data {
            table: table.map.source.clone(),
            reason,
        };
        let key = wanted_key(&table.map, &change.key, opts)?;
        let expected = expected(&table.map, change, opts)?;
        match (&change.image, &expected) {
            (Some(_), Expected::Row(values)) => {
                self.push_upsert(table, values).map_err(data_err)?
            }
            (Some(image), Expected::Absent(_)) => {
                self.quarantined
                    .extend(misfits(table, change, image, opts)?);
                self.deletes
                    .push_row(&self.key_types, &key)
                    .map_err(data_err)?;
            }
            (None, _) => self
                .deletes
                .push_row(&self.key_types, &key)
                .map_err(data_err)?,
        }
        self.wanted.push(Wanted::new(order, key, expected));
        Ok(())
    }

    /// Encodes the writable columns of `values` (`expected` turns an image whose writable
    /// column does not fit into `Absent`, so each of them converted).
    fn push_upsert(
        &mut self,
        table: &ApplyTable,
        values: &[std::result::Result<PgValue, String>],
    ) -> std::result::Result<(), String> {
        let mark = self.upserts.begin_row(self.row_types.len() as i16);
        for ((i, _), ty) in table.writable().zip(&self.row_types) {
            let written = match &values[i] {
                Ok(v) => self.upserts.field(ty, v),
                Err(why) => Err(why.clone()),
            };
            if let Err(why) = written {
                self.upserts.abandon_row(mark);
                return Err(why);
            }
        }
        self.upserts.end_row();
        Ok(())
    }

    fn finish(self, n: usize) -> PreparedTable {
        let bytes = |e: CopyEncoder| (e.rows() > 0).then(|| Bytes::from(e.finish()));
        PreparedTable {
            n,
            deletes: bytes(self.deletes),
            upserts: bytes(self.upserts),
            quarantined: self.quarantined,
            wanted: self.wanted,
        }
    }
}

/// Every writable column of `image` that does not fit its type, for the quarantine table.
fn misfits(
    table: &ApplyTable,
    change: &Change,
    image: &[RawValue],
    opts: ConvertOptions,
) -> Result<Vec<QuarantinedValue>> {
    let mut out = Vec::new();
    for (_, col) in table.writable() {
        let raw = col.value_in(&table.map.source, change, image)?;
        if let Err(m) = convert(&col.ty, raw.as_ref(), opts) {
            out.push(quarantined(table, change, col, raw, m.reason));
        }
    }
    Ok(out)
}

fn key_bytes(key: &[RawValue]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in key {
        match v {
            RawValue::Null => out.push(0),
            RawValue::Integer(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_be_bytes());
            }
            RawValue::Real(f) => {
                out.push(2);
                out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            RawValue::Text(b) | RawValue::Blob(b) => {
                out.push(if matches!(v, RawValue::Text(_)) { 3 } else { 4 });
                out.extend_from_slice(&(b.len() as u64).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    out
}

/// The last change per (table, key), in seq order. A chunk of one capture cycle is already one
/// change per key (capture coalesces), and is returned as it is.
pub(crate) fn latest(changes: Vec<Change>) -> Vec<Change> {
    let mut last: HashMap<(&str, Vec<u8>), usize> = HashMap::with_capacity(changes.len());
    for (i, c) in changes.iter().enumerate() {
        last.insert((c.table.as_str(), key_bytes(&c.key)), i);
    }
    if last.len() == changes.len() {
        return changes;
    }
    let mut keep = vec![false; changes.len()];
    for i in last.into_values() {
        keep[i] = true;
    }
    changes
        .into_iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(c))
        .collect()
}

fn quarantined(
    table: &ApplyTable,
    change: &Change,
    col: &crate::target::mapping::ColumnMap,
    raw: &RawValue,
    reason: String,
) -> QuarantinedValue {
    let key: Vec<serde_json::Value> = change
        .key
        .iter()
        .map(|k| match k {
            RawValue::Null => serde_json::Value::Null,
            RawValue::Integer(i) => (*i).into(),
            RawValue::Real(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
            }
            RawValue::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
            RawValue::Blob(b) => format!(
                "x'{}'",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            )
            .into(),
        })
        .collect();
    QuarantinedValue {
        table_name: table.map.source.clone(),
        row_key: serde_json::Value::Array(key),
        column_name: col.source.clone(),
        sqlite_type: storage_class(raw.as_ref()),
        value: render(raw.as_ref()),
        value_bytes: match raw {
            RawValue::Text(b) | RawValue::Blob(b) => Some(b.clone()),
            _ => None,
        },
        reason,
    }
}
