//! Applying captured changes to PostgreSQL, exactly once (promise 2). A batch — changes up to a
//! capture boundary, i.e. a consistent source state — is applied in ONE transaction together
//! with the position it reaches (`sqlite2pg.sync_state`); the position row is locked and checked
//! first, so after any crash the next run resumes from what PostgreSQL committed and nothing is
//! applied twice or skipped. Set-based: per table, keys to delete and rows to upsert are staged
//! with binary COPY into temporary tables and applied with `DELETE … USING` and
//! `INSERT … ON CONFLICT`. Rows evicted in SQLite by `INSERT OR REPLACE` through a UNIQUE
//! conflict (which fires no delete trigger) are evicted here too. Foreign keys are checked at
//! commit (`SET CONSTRAINTS ALL DEFERRED`). A value that does not fit its column is quarantined
//! and its row removed from the target, never half-applied (promise 3).

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::{Client, Transaction};

use super::copy_binary::CopyEncoder;
use super::ddl::qualified;
use super::mapping::TableMap;
use super::state::{advance_sync_position, lock_sync_position, quarantine, QuarantinedValue};
use crate::change::{Boundary, Change, RawValue};
use crate::convert::{convert, render, storage_class, ConvertOptions, PgType, PgValue};
use crate::error::{Error, Result};
use crate::translate::quote_pg;

/// Plain-column UNIQUE constraints and indexes other than the primary key, by column numbers.
const UNIQUE_INDEXES: &str = "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i \
     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
     WHERE i.indrelid = to_regclass($1) AND i.indisunique AND NOT i.indisprimary AND i.indpred IS NULL \
     AND NOT (0 = ANY (i.indkey::int2[])) GROUP BY i.indexrelid";

/// One table as apply sees it.
#[derive(Debug, Clone)]
pub struct ApplyTable {
    pub map: TableMap,
    /// Column positions (in `map.columns`) of each UNIQUE constraint besides the key.
    pub uniques: Vec<Vec<usize>>,
}

impl ApplyTable {
    /// Reads the target's unique constraints for `map`.
    pub async fn load(client: &Client, schema: &str, map: TableMap) -> Result<ApplyTable> {
        let name = qualified(schema, &map.target);
        let rows = client
            .query(UNIQUE_INDEXES, &[&name])
            .await
            .map_err(|source| Error::Target {
                op: "read unique constraints",
                table: Some(map.source.clone()),
                source,
            })?;
        let uniques = rows
            .iter()
            .filter_map(|r| {
                let cols: Vec<String> = r.get(0);
                cols.iter()
                    .map(|c| map.columns.iter().position(|m| &m.target == c))
                    .collect::<Option<Vec<_>>>()
            })
            .collect();
        Ok(ApplyTable { map, uniques })
    }

    fn writable(&self) -> impl Iterator<Item = (usize, &crate::target::mapping::ColumnMap)> {
        self.map
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.generated)
    }
}

/// What one batch did.
#[derive(Debug, Clone, Default)]
pub struct BatchStats {
    pub changes: u64,
    pub upserted: u64,
    pub deleted: u64,
    pub evicted: u64,
    pub quarantined: u64,
    /// Upserted or deleted rows per source table.
    pub per_table: HashMap<String, u64>,
}

/// The rows of one table in a batch, converted and coalesced.
#[derive(Default)]
struct Staged {
    upserts: Vec<Vec<PgValue>>,
    deletes: Vec<Vec<PgValue>>,
    quarantined: Vec<QuarantinedValue>,
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

/// The last change per (table, key), by reference, in seq order. A batch of one capture cycle
/// is already one change per key (capture coalesces), and is returned as it is.
fn latest(changes: &[Change]) -> Vec<&Change> {
    let mut last: HashMap<(&str, Vec<u8>), usize> = HashMap::with_capacity(changes.len());
    for (i, c) in changes.iter().enumerate() {
        last.insert((c.table.as_str(), key_bytes(&c.key)), i);
    }
    if last.len() == changes.len() {
        return changes.iter().collect();
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| &changes[i]).collect()
}

fn stage(table: &ApplyTable, changes: &[&Change], opts: ConvertOptions) -> Result<Staged> {
    let mut staged = Staged::default();
    for change in changes {
        let key = convert_key(table, &change.key, opts)?;
        let Some(image) = &change.image else {
            staged.deletes.push(key);
            continue;
        };
        let mut row = Vec::new();
        let mut misfits = Vec::new();
        for (_, col) in table.writable() {
            let raw = match col.source_index {
                Some(i) => image.get(i).ok_or_else(|| Error::Data {
                    table: table.map.source.clone(),
                    reason: format!(
                        "a captured row image has {} values; column {:?} is number {}",
                        image.len(),
                        col.source,
                        i + 1
                    ),
                })?,
                None => &change.key[0],
            };
            match convert(&col.ty, raw.as_ref(), opts) {
                Ok(v) => row.push(v),
                Err(m) => misfits.push(quarantined(table, change, col, raw, m.reason)),
            }
        }
        if misfits.is_empty() {
            staged.upserts.push(row);
        } else {
            staged.quarantined.extend(misfits);
            staged.deletes.push(key);
        }
    }
    Ok(staged)
}

fn convert_key(table: &ApplyTable, key: &[RawValue], opts: ConvertOptions) -> Result<Vec<PgValue>> {
    table
        .map
        .key
        .iter()
        .zip(key)
        .map(|(&i, raw)| {
            convert(&table.map.columns[i].ty, raw.as_ref(), opts).map_err(|m| Error::Data {
                table: table.map.source.clone(),
                reason: format!(
                    "key value {} of column {:?} cannot be matched: {}",
                    render(raw.as_ref()),
                    table.map.columns[i].source,
                    m.reason
                ),
            })
        })
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

/// Applies one batch: every change with `after < seq <= through.end_seq`, in one transaction
/// with the position. Fails without applying anything when the target's position is not
/// `after` (another sync moved it).
pub async fn apply_batch(
    client: &mut Client,
    schema: &str,
    tables: &[ApplyTable],
    after: u64,
    through: &Boundary,
    changes: &[Change],
    opts: ConvertOptions,
) -> Result<BatchStats> {
    let changes = latest(changes);
    let mut stats = BatchStats {
        changes: changes.len() as u64,
        ..BatchStats::default()
    };
    let tx = client
        .transaction()
        .await
        .map_err(pg_err("begin the apply transaction", None))?;
    let position = lock_sync_position(&tx).await?;
    if position != after as i64 {
        return Err(Error::Data {
            table: "sqlite2pg.sync_state".into(),
            reason: format!("the target is at position {position}, not {after}: another sync is applying to this target; stop it first"),
        });
    }
    tx.batch_execute("SET CONSTRAINTS ALL DEFERRED")
        .await
        .map_err(pg_err("defer constraints", None))?;
    let mut by_table: HashMap<&str, Vec<&Change>> = HashMap::new();
    for c in &changes {
        by_table.entry(c.table.as_str()).or_default().push(c);
    }
    let started = std::time::Instant::now();
    let mut staged = Vec::new();
    for (n, table) in tables.iter().enumerate() {
        if let Some(rows) = by_table.remove(table.map.source.as_str()) {
            staged.push((n, table, stage(table, &rows, opts)?));
        }
    }
    if let Some(unknown) = by_table.keys().next() {
        return Err(Error::Data {
            table: unknown.to_string(),
            reason: "changes arrived for a table sync does not replicate".into(),
        });
    }
    let converted = started.elapsed();
    for (n, table, s) in &staged {
        apply_deletes(&tx, schema, *n, table, &s.deletes, &mut stats).await?;
    }
    let deleted = started.elapsed();
    for (n, table, s) in &staged {
        apply_upserts(&tx, schema, *n, table, &s.upserts, &mut stats).await?;
        quarantine(&tx, "sync", &s.quarantined).await?;
        stats.quarantined += s.quarantined.len() as u64;
    }
    let upserted = started.elapsed();
    crate::fault::hit(crate::fault::SYNC_MID_APPLY);
    advance_sync_position(
        &tx,
        through.end_seq as i64,
        through.committed_at,
        stats.changes as i64,
    )
    .await?;
    tx.commit()
        .await
        .map_err(pg_err("commit the apply transaction", None))?;
    tracing::debug!(
        convert_ms = converted.as_millis() as u64,
        delete_ms = (deleted - converted).as_millis() as u64,
        upsert_ms = (upserted - deleted).as_millis() as u64,
        commit_ms = (started.elapsed() - upserted).as_millis() as u64,
        "apply transaction"
    );
    Ok(stats)
}

fn pg_err(op: &'static str, table: Option<&str>) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let table = table.map(str::to_string);
    move |source| Error::Target { op, table, source }
}

/// Stages `rows` of the given columns of `map` into a new temporary table `name` (dropped at
/// commit) with the target's exact column types, by binary COPY. Used by apply (keys to delete,
/// rows to upsert) and by verification (keys to re-read).
pub(crate) async fn stage_rows<'r>(
    tx: &Transaction<'_>,
    schema: &str,
    name: &str,
    map: &TableMap,
    cols: &[usize],
    rows: impl IntoIterator<Item = &'r [PgValue]>,
) -> Result<()> {
    let t = Some(map.source.as_str());
    let list: Vec<String> = cols
        .iter()
        .map(|&i| quote_pg(&map.columns[i].target))
        .collect();
    let create = format!(
        "CREATE TEMP TABLE {name} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA",
        list.join(", "),
        qualified(schema, &map.target)
    );
    tx.batch_execute(&create)
        .await
        .map_err(pg_err("create a staging table", t))?;
    let types: Vec<PgType> = cols.iter().map(|&i| map.columns[i].ty.clone()).collect();
    let sink = tx
        .copy_in::<_, Bytes>(&format!("COPY {name} FROM STDIN (FORMAT binary)"))
        .await
        .map_err(pg_err("start staging COPY", t))?;
    futures_util::pin_mut!(sink);
    let mut encoder = CopyEncoder::new();
    for row in rows {
        encoder
            .push_row(&types, row)
            .map_err(|reason| Error::Data {
                table: map.source.clone(),
                reason,
            })?;
        if encoder.len() >= 1 << 20 {
            sink.send(Bytes::from(encoder.take_chunk()))
                .await
                .map_err(pg_err("send staging rows", t))?;
        }
    }
    sink.send(Bytes::from(encoder.finish()))
        .await
        .map_err(pg_err("send staging rows", t))?;
    sink.as_mut()
        .finish()
        .await
        .map_err(pg_err("finish staging COPY", t))?;
    // Without statistics the planner guesses thousands of staged rows and joins them to the
    // target with a full scan; with them it looks the few keys up by the primary key index.
    tx.batch_execute(&format!("ANALYZE {name}"))
        .await
        .map_err(pg_err("analyze a staging table", t))?;
    Ok(())
}

fn key_match(table: &ApplyTable, left: &str, right: &str, cols: &[usize]) -> String {
    cols.iter()
        .map(|&i| {
            let c = quote_pg(&table.map.columns[i].target);
            format!("{left}.{c} = {right}.{c}")
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

async fn apply_deletes(
    tx: &Transaction<'_>,
    schema: &str,
    n: usize,
    table: &ApplyTable,
    keys: &[Vec<PgValue>],
    stats: &mut BatchStats,
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let name = format!("_s2p_del_{n}");
    stage_rows(
        tx,
        schema,
        &name,
        &table.map,
        &table.map.key,
        keys.iter().map(Vec::as_slice),
    )
    .await?;
    let sql = format!(
        "DELETE FROM {} t USING {name} d WHERE {}",
        qualified(schema, &table.map.target),
        key_match(table, "t", "d", &table.map.key)
    );
    let deleted = tx
        .execute(&sql, &[])
        .await
        .map_err(pg_err("delete rows", Some(&table.map.source)))?;
    stats.deleted += deleted;
    *stats.per_table.entry(table.map.source.clone()).or_default() += deleted;
    Ok(())
}

async fn apply_upserts(
    tx: &Transaction<'_>,
    schema: &str,
    n: usize,
    table: &ApplyTable,
    rows: &[Vec<PgValue>],
    stats: &mut BatchStats,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let name = format!("_s2p_up_{n}");
    let cols: Vec<usize> = table.writable().map(|(i, _)| i).collect();
    stage_rows(
        tx,
        schema,
        &name,
        &table.map,
        &cols,
        rows.iter().map(Vec::as_slice),
    )
    .await?;
    let target = qualified(schema, &table.map.target);
    let t = Some(table.map.source.as_str());
    for unique in &table.uniques {
        let evict = format!(
            "DELETE FROM {target} t USING {name} s WHERE {} AND NOT ({})",
            key_match(table, "t", "s", unique),
            key_match(table, "t", "s", &table.map.key)
        );
        stats.evicted += tx
            .execute(&evict, &[])
            .await
            .map_err(pg_err("evict rows replaced through a UNIQUE conflict", t))?;
    }
    let list: Vec<String> = cols
        .iter()
        .map(|&i| quote_pg(&table.map.columns[i].target))
        .collect();
    let key_list: Vec<String> = table
        .map
        .key
        .iter()
        .map(|&i| quote_pg(&table.map.columns[i].target))
        .collect();
    let updates: Vec<String> = cols
        .iter()
        .filter(|i| !table.map.key.contains(i))
        .map(|&i| {
            let c = quote_pg(&table.map.columns[i].target);
            format!("{c} = EXCLUDED.{c}")
        })
        .collect();
    let action = if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    let sql = format!(
        "INSERT INTO {target} ({cols}) SELECT {cols} FROM {name} ON CONFLICT ({keys}) {action}",
        cols = list.join(", "),
        keys = key_list.join(", ")
    );
    let upserted = tx
        .execute(&sql, &[])
        .await
        .map_err(pg_err("upsert rows", t))?;
    stats.upserted += upserted;
    *stats.per_table.entry(table.map.source.clone()).or_default() += upserted;
    Ok(())
}
