//! Continuous verification: right after a batch commits, re-read from PostgreSQL the rows of the
//! keys that batch touched and compare them with the source images they were applied from — so a
//! wrong apply (or a hand edit in the target) shows up within one batch, not at the final diff.
//! This keeps promise 5 ("diffs tell the truth") for sync: both sides go through the same
//! conversion as apply (`convert`) and the same canonical row hash as the diff
//! (`diff::canonical::row_hash`), and the PostgreSQL side is read with binary COPY
//! (`copy_out`), which no session setting can change.
//!
//! What PostgreSQL must hold for each key is what the *applied image* says, not what SQLite holds
//! now: rows may change again in SQLite after the batch was captured, and PostgreSQL catches up
//! with the next batch. So call [`verify_changes`] after a batch commits and before the next one.
//! Sync itself verifies inside the apply transaction, chunk by chunk ([`verify_staged`], called
//! by `apply::apply_chunks`), reading the keys through the chunk's own staging tables.
//!
//! Cost is proportional to the batch, not the table: per table the batch's keys are staged with
//! binary COPY into a temporary table (`ON COMMIT DROP`) and only the matching rows are read back,
//! in one `COPY (SELECT … JOIN …) TO STDOUT` per [`MAX_KEYS_PER_READ`] keys.

use std::collections::HashMap;

use futures_util::StreamExt;
use tokio_postgres::Transaction;

use super::apply::{stage_rows, ApplyTable, KEYED_JOINS};
use super::copy_out::CopyDecoder;
use super::ddl::qualified;
use super::mapping::TableMap;
use crate::change::{Change, RawValue};
use crate::convert::{convert, render, ConvertOptions, PgValue};
use crate::diff::canonical::{display, encode_canonical, key_hash, row_hash};
use crate::diff::report::DiffKind;
use crate::error::{Error, Result};
use crate::translate::quote_pg;

/// Keys staged and read back per round trip: apply's batches are at most this big, so a batch
/// costs one read per table, and a larger input stays bounded in memory (~10k rows at a time).
pub const MAX_KEYS_PER_READ: usize = 10_000;

/// One key whose PostgreSQL row does not match the source image it was applied from.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// The source table's name, as SQLite spells it.
    pub table: String,
    /// The row's key, as the change carried it.
    pub key: Vec<RawValue>,
    /// In the diff's terms: the target lacks the row, has one it should not, or differs.
    pub kind: DiffKind,
    /// What differs: the columns with both values (rendered by `diff::canonical::display`), or
    /// which side has a row the other lacks and why.
    pub detail: String,
}

/// What PostgreSQL must hold for one key after the batch.
#[derive(Debug)]
pub(crate) enum Expected {
    /// Every mapped column's planned value, in `map.columns` order; a generated column whose
    /// SQLite value does not fit its type holds the reason instead.
    Row(Vec<std::result::Result<PgValue, String>>),
    /// No row, and why: the source row was deleted, or its image was quarantined.
    Absent(String),
}

/// One key to check: its position in the caller's changes (for report order and to name the
/// key in a mismatch), the key as apply matches it, and what its row must be.
#[derive(Debug)]
pub(crate) struct Wanted {
    pub order: usize,
    pub key: Vec<PgValue>,
    pub expected: Expected,
    /// The canonical hashes of the key and of the expected row (when every value converted),
    /// computed where the wanted key is built — for sync, on the reader thread.
    key_hash: [u8; 32],
    row_hash: Option<[u8; 32]>,
}

impl Wanted {
    pub(crate) fn new(order: usize, key: Vec<PgValue>, expected: Expected) -> Wanted {
        let row_hash = match &expected {
            Expected::Row(values) => values
                .iter()
                .map(|v| v.as_ref().ok().cloned())
                .collect::<Option<Vec<PgValue>>>()
                .map(|planned| row_hash(&key, &planned)),
            Expected::Absent(_) => None,
        };
        Wanted {
            order,
            key_hash: key_hash(&key),
            key,
            expected,
            row_hash,
        }
    }
}

/// Re-reads from PostgreSQL the rows of `changes` (coalesced: one per key; if a key repeats, its
/// last change counts, as apply keeps it) and returns every key whose row differs
/// from the applied image: a change without image, or whose image had a value that does not fit
/// (quarantined), must have no row; otherwise the row must hash equal to the image converted with
/// each column's type, generated columns included (PostgreSQL computed them; the image holds
/// SQLite's values).
///
/// `Ok` lists mismatches in the order of `changes`; it reads only (the staging tables are
/// temporary and dropped at commit) and holds one short transaction on `client`. `Err` when a
/// change names a table not in `tables`, a key does not convert (apply would have refused the
/// batch), or PostgreSQL fails.
pub async fn verify_changes(
    client: &mut tokio_postgres::Client,
    schema: &str,
    tables: &[ApplyTable],
    changes: &[Change],
    opts: ConvertOptions,
) -> Result<Vec<Mismatch>> {
    let grouped = wanted_by_table(tables, changes, opts)?;
    if grouped.iter().all(|(_, w)| w.is_empty()) {
        return Ok(Vec::new());
    }
    // Not `READ ONLY`: PostgreSQL refuses CREATE TEMP TABLE there. Only temporary tables are
    // written, and they are dropped at commit.
    let tx = client
        .transaction()
        .await
        .map_err(pg_err("begin the verify transaction", None))?;
    tx.batch_execute(KEYED_JOINS)
        .await
        .map_err(pg_err("plan the verify reads", None))?;
    let mut found = Vec::new();
    let mut staged = 0;
    for (table, wanted) in &grouped {
        for chunk in wanted.chunks(MAX_KEYS_PER_READ) {
            let name = format!("_s2p_verify_{staged}");
            staged += 1;
            let rows = read_rows(&tx, schema, &name, &table.map, chunk).await?;
            found.extend(compare(&table.map, chunk, rows, changes)?);
        }
    }
    tx.commit()
        .await
        .map_err(pg_err("end the verify transaction", None))?;
    found.sort_by_key(|(order, _)| *order);
    Ok(found.into_iter().map(|(_, m)| m).collect())
}

/// Groups `changes` by table (in `tables` order), one [`Wanted`] per key, the last change winning.
fn wanted_by_table<'a>(
    tables: &'a [ApplyTable],
    changes: &[Change],
    opts: ConvertOptions,
) -> Result<Vec<(&'a ApplyTable, Vec<Wanted>)>> {
    let index: HashMap<&str, usize> = tables
        .iter()
        .enumerate()
        .map(|(n, t)| (t.map.source.as_str(), n))
        .collect();
    let mut grouped: Vec<(&ApplyTable, Vec<Wanted>)> =
        tables.iter().map(|t| (t, Vec::new())).collect();
    let mut seen: Vec<HashMap<[u8; 32], usize>> = vec![HashMap::new(); tables.len()];
    for (order, change) in changes.iter().enumerate() {
        let &n = index
            .get(change.table.as_str())
            .ok_or_else(|| Error::Data {
                table: change.table.clone(),
                reason: "changes arrived for a table sync does not replicate".into(),
            })?;
        let table = &tables[n].map;
        let key = wanted_key(table, &change.key, opts)?;
        let wanted = Wanted::new(order, key, expected(table, change, opts)?);
        let list = &mut grouped[n].1;
        match seen[n].get(&wanted.key_hash) {
            Some(&at) => list[at] = wanted,
            None => {
                seen[n].insert(wanted.key_hash, list.len());
                list.push(wanted);
            }
        }
    }
    Ok(grouped)
}

/// The key as apply matches it: each key value converted with its column's type.
pub(crate) fn wanted_key(
    table: &TableMap,
    key: &[RawValue],
    opts: ConvertOptions,
) -> Result<Vec<PgValue>> {
    if key.len() != table.key.len() {
        return Err(Error::Data {
            table: table.source.clone(),
            reason: format!(
                "a change has {} key values; the table's key has {} columns",
                key.len(),
                table.key.len()
            ),
        });
    }
    table
        .key
        .iter()
        .zip(key)
        .map(|(&i, raw)| {
            let col = &table.columns[i];
            convert(&col.ty, raw.as_ref(), opts).map_err(|m| Error::Data {
                table: table.source.clone(),
                reason: format!(
                    "key value {} of column {:?} cannot be matched: {}",
                    render(raw.as_ref()),
                    col.source,
                    m.reason
                ),
            })
        })
        .collect()
}

/// What apply left in PostgreSQL for `change`: no row for a deletion or a quarantined image,
/// else every column converted as apply converts it.
pub(crate) fn expected(
    table: &TableMap,
    change: &Change,
    opts: ConvertOptions,
) -> Result<Expected> {
    let Some(image) = &change.image else {
        return Ok(Expected::Absent("the source row was deleted".into()));
    };
    let mut values = Vec::with_capacity(table.columns.len());
    for col in &table.columns {
        let raw = col.value_in(&table.source, change, image)?;
        match convert(&col.ty, raw.as_ref(), opts) {
            Ok(v) => values.push(Ok(v)),
            Err(m) if col.generated => values.push(Err(format!(
                "SQLite's value {} does not fit {}: {}",
                render(raw.as_ref()),
                col.ty.sql(),
                m.reason
            ))),
            Err(m) => {
                return Ok(Expected::Absent(format!(
                    "the source row was quarantined (column {:?}: {} does not fit {}: {})",
                    col.source,
                    render(raw.as_ref()),
                    col.ty.sql(),
                    m.reason
                )))
            }
        }
    }
    Ok(Expected::Row(values))
}

/// Stages the keys of `wanted` into temporary table `name` and reads back the target's rows for
/// them, every mapped column in `map.columns` order.
async fn read_rows(
    tx: &Transaction<'_>,
    schema: &str,
    name: &str,
    map: &TableMap,
    wanted: &[Wanted],
) -> Result<Vec<Vec<PgValue>>> {
    stage_rows(
        tx,
        schema,
        name,
        map,
        &map.key,
        wanted.iter().map(|w| w.key.as_slice()),
    )
    .await?;
    let sql = format!(
        "COPY (SELECT {} FROM {} t JOIN {name} USING ({})) TO STDOUT (FORMAT binary)",
        target_columns(map),
        qualified(schema, &map.target),
        key_columns(map).join(", ")
    );
    copy_rows(tx, &sql, map, wanted.len()).await
}

/// Verification inside the apply transaction, right after a chunk's writes: reads back the
/// target's rows for the keys in the chunk's staging tables of this table (`staging`: its
/// upsert and delete tables, which together hold exactly the keys of `wanted`) and returns every
/// key whose row is not what `wanted` says, in `wanted` order. It sees the transaction's own
/// writes, so it checks what this chunk applied even when a later chunk of the batch overwrites
/// the row again; the keys need no second staging.
pub(crate) async fn verify_staged(
    tx: &Transaction<'_>,
    schema: &str,
    map: &TableMap,
    staging: &[String],
    wanted: &[Wanted],
    changes: &[Change],
) -> Result<Vec<Mismatch>> {
    if staging.is_empty() || wanted.is_empty() {
        return Ok(Vec::new());
    }
    let (cols, target, keys) = (
        target_columns(map),
        qualified(schema, &map.target),
        key_columns(map).join(", "),
    );
    let selects: Vec<String> = staging
        .iter()
        .map(|name| format!("SELECT {cols} FROM {target} t JOIN {name} USING ({keys})"))
        .collect();
    let sql = format!(
        "COPY ({}) TO STDOUT (FORMAT binary)",
        selects.join(" UNION ALL ")
    );
    let rows = copy_rows(tx, &sql, map, wanted.len()).await?;
    let found = compare(map, wanted, rows, changes)?;
    Ok(found.into_iter().map(|(_, m)| m).collect())
}

/// Every mapped column of the target aliased `t`, in `map.columns` order.
fn target_columns(map: &TableMap) -> String {
    let cols: Vec<String> = map
        .columns
        .iter()
        .map(|c| format!("t.{}", quote_pg(&c.target)))
        .collect();
    cols.join(", ")
}

/// Runs a `COPY (…) TO STDOUT (FORMAT binary)` of every mapped column and decodes its rows.
async fn copy_rows(
    tx: &Transaction<'_>,
    sql: &str,
    map: &TableMap,
    expect: usize,
) -> Result<Vec<Vec<PgValue>>> {
    let t = Some(map.source.as_str());
    let stream = tx
        .copy_out(sql)
        .await
        .map_err(pg_err("start reading rows to verify", t))?;
    futures_util::pin_mut!(stream);
    let data_err = |reason| Error::Data {
        table: map.source.clone(),
        reason,
    };
    let mut decoder = CopyDecoder::new(map.types());
    let mut rows = Vec::with_capacity(expect);
    while let Some(chunk) = stream.next().await {
        decoder.feed(&chunk.map_err(pg_err("read rows to verify", t))?);
        while let Some(row) = decoder.next_row().map_err(data_err)? {
            rows.push(row);
        }
    }
    decoder
        .check_complete()
        .map_err(|r| data_err(format!("the COPY stream ended early: {r}")))?;
    Ok(rows)
}

fn key_columns(map: &TableMap) -> Vec<String> {
    map.key
        .iter()
        .map(|&i| quote_pg(&map.columns[i].target))
        .collect()
}

/// Pairs each wanted key with the row PostgreSQL returned for it (by key hash) and reports the
/// keys whose expectation does not hold, with their position in the caller's changes.
fn compare(
    map: &TableMap,
    wanted: &[Wanted],
    rows: Vec<Vec<PgValue>>,
    changes: &[Change],
) -> Result<Vec<(usize, Mismatch)>> {
    let at: HashMap<[u8; 32], usize> = wanted
        .iter()
        .enumerate()
        .map(|(i, w)| (w.key_hash, i))
        .collect();
    let mut actual: Vec<Option<Vec<PgValue>>> = vec![None; wanted.len()];
    for row in rows {
        let key = row_key(map, &row);
        let &i = at.get(&key_hash(&key)).ok_or_else(|| Error::Data {
            table: map.source.clone(),
            // The join matches by PostgreSQL's `=`, the pairing by canonical key hash; they
            // agree for every planned type, so this is a bug, not a verdict on the data.
            reason: format!(
                "verify read back a row whose key ({}) matches no staged key by canonical hash",
                key.iter().map(display).collect::<Vec<_>>().join(", ")
            ),
        })?;
        actual[i] = Some(row);
    }
    Ok(wanted
        .iter()
        .zip(&actual)
        .filter_map(|(w, row)| {
            let (kind, detail) = difference(map, w, row.as_deref())?;
            Some((w.order, mismatch(map, &changes[w.order], kind, detail)))
        })
        .collect())
}

fn row_key(map: &TableMap, row: &[PgValue]) -> Vec<PgValue> {
    map.key.iter().map(|&i| row[i].clone()).collect()
}

fn mismatch(map: &TableMap, change: &Change, kind: DiffKind, detail: String) -> Mismatch {
    Mismatch {
        table: map.source.clone(),
        key: change.key.clone(),
        kind,
        detail,
    }
}

/// Why `actual` (the target's row, if any) is not what `expected` says; `None` when it is.
fn difference(
    map: &TableMap,
    wanted: &Wanted,
    actual: Option<&[PgValue]>,
) -> Option<(DiffKind, String)> {
    match (&wanted.expected, actual) {
        (Expected::Absent(_), None) => None,
        (Expected::Absent(why), Some(_)) => {
            Some((DiffKind::Extra, format!("PostgreSQL has a row, but {why}")))
        }
        (Expected::Row(_), None) => Some((
            DiffKind::Missing,
            "PostgreSQL has no row, but the applied source image has one".into(),
        )),
        (Expected::Row(values), Some(row)) => {
            if wanted.row_hash == Some(row_hash(&row_key(map, row), row)) {
                return None;
            }
            Some((DiffKind::Modified, column_differences(map, values, row)))
        }
    }
}

/// `column "x": expected …, PostgreSQL has …` for each differing column, joined by `; `.
fn column_differences(
    map: &TableMap,
    values: &[std::result::Result<PgValue, String>],
    row: &[PgValue],
) -> String {
    let mut parts = Vec::new();
    for ((col, want), have) in map.columns.iter().zip(values).zip(row) {
        let kind = if col.generated { " (generated)" } else { "" };
        match want {
            Ok(want) if canonical(want) == canonical(have) => {}
            Ok(want) => parts.push(format!(
                "column {:?}{kind}: expected {}, PostgreSQL has {}",
                col.source,
                display(want),
                display(have)
            )),
            Err(why) => parts.push(format!(
                "column {:?}{kind}: {why}; PostgreSQL has {}",
                col.source,
                display(have)
            )),
        }
    }
    if parts.is_empty() {
        // Equal columns with unequal hashes cannot happen: the hash covers exactly these.
        parts.push("the row hashes differ but no column does".into());
    }
    parts.join("; ")
}

fn canonical(v: &PgValue) -> Vec<u8> {
    let mut out = Vec::new();
    encode_canonical(&mut out, v);
    out
}

fn pg_err(op: &'static str, table: Option<&str>) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let table = table.map(str::to_string);
    move |source| Error::Target { op, table, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::PgType;
    use crate::target::mapping::ColumnMap;

    fn column(name: &str, ty: PgType, source_index: usize, generated: bool) -> ColumnMap {
        ColumnMap {
            source_expr: name.into(),
            source: name.into(),
            target: name.into(),
            ty,
            source_index: Some(source_index),
            generated,
        }
    }

    fn map() -> TableMap {
        TableMap {
            source: "t".into(),
            target: "t".into(),
            columns: vec![
                column("id", PgType::Bigint, 0, false),
                column("price", PgType::DoublePrecision, 1, false),
                column("twice", PgType::DoublePrecision, 2, true),
            ],
            key: vec![0],
            problems: Vec::new(),
        }
    }

    fn change(id: i64, image: Option<Vec<RawValue>>) -> Change {
        Change {
            seq: 1,
            table: "t".into(),
            key: vec![RawValue::Integer(id)],
            image,
        }
    }

    fn image(price: RawValue, twice: RawValue) -> Option<Vec<RawValue>> {
        Some(vec![RawValue::Integer(1), price, twice])
    }

    fn check(c: &Change, actual: Option<&[PgValue]>) -> Option<String> {
        let opts = ConvertOptions::default();
        let key = wanted_key(&map(), &c.key, opts).unwrap();
        let wanted = Wanted::new(0, key, expected(&map(), c, opts).unwrap());
        difference(&map(), &wanted, actual).map(|(_, detail)| detail)
    }

    #[test]
    fn an_equal_row_and_a_deleted_absent_row_match() {
        let c = change(1, image(RawValue::Real(1.5), RawValue::Real(3.0)));
        let row = [PgValue::Int8(1), PgValue::Float8(1.5), PgValue::Float8(3.0)];
        assert_eq!(check(&c, Some(&row)), None);
        assert_eq!(check(&change(1, None), None), None);
    }

    #[test]
    fn a_differing_column_is_named_with_both_values() {
        let c = change(1, image(RawValue::Real(1.5), RawValue::Real(3.0)));
        let row = [PgValue::Int8(1), PgValue::Float8(2.5), PgValue::Float8(4.0)];
        let detail = check(&c, Some(&row)).unwrap();
        assert_eq!(
            detail,
            "column \"price\": expected 1.5, PostgreSQL has 2.5; \
             column \"twice\" (generated): expected 3, PostgreSQL has 4"
        );
    }

    #[test]
    fn a_quarantined_image_must_have_no_row() {
        let c = change(1, image(RawValue::Text(b"abc".to_vec()), RawValue::Null));
        assert_eq!(check(&c, None), None);
        let row = [PgValue::Int8(1), PgValue::Null, PgValue::Null];
        let detail = check(&c, Some(&row)).unwrap();
        assert!(detail.contains("quarantined (column \"price\""), "{detail}");
    }

    #[test]
    fn a_generated_value_that_does_not_fit_is_a_mismatch_not_a_quarantine() {
        let c = change(1, image(RawValue::Real(1.5), RawValue::Text(b"x".to_vec())));
        let row = [PgValue::Int8(1), PgValue::Float8(1.5), PgValue::Float8(3.0)];
        let detail = check(&c, Some(&row)).unwrap();
        assert!(
            detail.starts_with("column \"twice\" (generated): SQLite's value"),
            "{detail}"
        );
    }

    #[test]
    fn a_repeated_key_keeps_its_last_change() {
        let tables = [ApplyTable {
            map: map(),
            uniques: Vec::new(),
        }];
        let changes = [
            change(1, None),
            change(2, None),
            change(1, image(RawValue::Real(1.0), RawValue::Real(2.0))),
        ];
        let grouped = wanted_by_table(&tables, &changes, ConvertOptions::default()).unwrap();
        let orders: Vec<usize> = grouped[0].1.iter().map(|w| w.order).collect();
        assert_eq!(orders, [2, 1]);
        let unknown = [Change {
            table: "nope".into(),
            ..change(1, None)
        }];
        let err = wanted_by_table(&tables, &unknown, ConvertOptions::default()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
