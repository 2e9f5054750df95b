//! Applying captured changes to PostgreSQL, exactly once (promise 2). A batch — changes up to a
//! capture boundary, i.e. a consistent source state — is applied in ONE transaction together
//! with the position it reaches (`sqlite2pg.sync_state`); the position row is locked and checked
//! first, so after any crash the next run resumes from what PostgreSQL committed and nothing is
//! applied twice or skipped. A batch arrives in chunks (`prepare::prepare_chunk`, converted on
//! the caller's reader thread), so a source transaction of any size is applied whole while only
//! a chunk or two is in memory. Set-based: per chunk and table, keys to delete and rows to upsert
//! are staged with binary COPY into temporary tables (created once per session, see
//! [`StagingTables`]) and applied with `DELETE … USING` and `INSERT … ON CONFLICT`. Rows evicted in SQLite by `INSERT OR REPLACE` through a UNIQUE
//! conflict (which fires no delete trigger) are evicted here too. Foreign keys are checked at
//! commit (`SET CONSTRAINTS ALL DEFERRED`). A value that does not fit its column is quarantined
//! and its row removed from the target, never half-applied (promise 3). Each chunk's keys are
//! re-read inside the transaction and compared with their images (continuous verification,
//! `verify::verify_staged`).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::{Client, Transaction};

use super::copy_binary::CopyEncoder;
use super::ddl::qualified;
use super::mapping::TableMap;
use super::state::{advance_sync_position, lock_sync_position, quarantine};
use super::verify::{verify_staged, Mismatch};
use crate::change::{Boundary, Change};
use crate::convert::{ConvertOptions, PgType, PgValue};
use crate::error::{Error, Result};
use crate::translate::quote_pg;

mod prepare;

use prepare::PreparedTable;
pub use prepare::{prepare_chunk, PreparedChunk};

/// Plain-column UNIQUE constraints and indexes other than the primary key, by column numbers.
const UNIQUE_INDEXES: &str = "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i \
     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
     WHERE i.indrelid = to_regclass($1) AND i.indisunique AND NOT i.indisprimary AND i.indpred IS NULL \
     AND NOT (0 = ANY (i.indkey::int2[])) GROUP BY i.indexrelid";

/// Run at the start of a transaction that joins staged keys with target tables (apply's
/// deletes, evictions and verification; `verify::verify_changes`): the joins then look each
/// staged key up in the target's index on it (the key, or the UNIQUE columns of an eviction:
/// every join condition here has one), so their cost follows the chunk, not the table. Left to
/// itself the planner merge-joined a chunk's few thousand keys with a full index scan of the
/// target: 167k rows of `job_history` read to verify 3.7k deleted keys, on every chunk, at
/// scale 0.1; ten times that at scale 1.
pub(crate) const KEYED_JOINS: &str =
    "SET LOCAL enable_mergejoin = off; SET LOCAL enable_hashjoin = off";

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

/// What apply receives for one batch, in order: its chunks, then its end.
#[derive(Debug)]
pub enum BatchPiece {
    /// Changes of the batch, converted and encoded ([`prepare_chunk`]).
    Chunk(PreparedChunk),
    /// The end of the batch: the consistent source state it reaches, committed with it.
    End(Boundary),
}

/// What one batch did.
#[derive(Debug, Clone, Default)]
pub struct BatchStats {
    /// The position the batch reached (committed with it); `None` only before it committed.
    pub through: Option<Boundary>,
    pub changes: u64,
    pub upserted: u64,
    pub deleted: u64,
    pub evicted: u64,
    pub quarantined: u64,
    /// Upserted or deleted rows per source table.
    pub per_table: HashMap<String, u64>,
    /// Chunks the batch arrived in, and the most changes one of them held (what bounds apply's
    /// memory, whatever the size of the batch).
    pub chunks: u64,
    pub largest_chunk: u64,
    /// Keys whose row, re-read inside the transaction after its chunk was applied, does not
    /// match the image it was applied from (PostgreSQL changed behind sync's back, or a bug).
    pub mismatches: Vec<Mismatch>,
}

/// Applies one batch: every change with `after < seq <= through.end_seq`, in one transaction
/// with the position, and verifies what it wrote before committing (see [`apply_chunks`]).
/// `changes` are coalesced per key and applied as one chunk. Fails without applying anything
/// when the target's position is not `after` (another sync moved it).
pub async fn apply_batch(
    client: &mut Client,
    schema: &str,
    tables: &[ApplyTable],
    after: u64,
    through: &Boundary,
    changes: &[Change],
    opts: ConvertOptions,
) -> Result<BatchStats> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let chunk = prepare_chunk(tables, changes.to_vec(), opts).map(BatchPiece::Chunk);
    for message in [chunk, Ok(BatchPiece::End(*through))] {
        tx.try_send(message)
            .expect("a fresh channel of capacity 2 takes two messages");
    }
    let mut staging = StagingTables::default();
    apply_chunks(client, &mut staging, schema, tables, after, &mut rx).await
}

/// Applies one batch that arrives in pieces (chunks prepared with [`prepare_chunk`] from the
/// same `tables`, in seq order, then [`BatchPiece::End`] with the boundary the batch reaches:
/// a channel that closes before it fails the batch, never commits part of it) in ONE
/// transaction with that boundary's position: per chunk and table, deletes then upserts
/// (set-based, from staging tables), then re-reads the chunk's keys inside the transaction and
/// compares them with the images (continuous verification; mismatches are returned, not fatal).
/// Applying the chunks in seq order leaves what applying the whole batch at once would, and
/// only a chunk or two is in memory at a time, however large the source transaction. Foreign
/// keys are checked at commit. `Ok`: committed; `Err`: nothing of the batch is committed.
pub async fn apply_chunks(
    client: &mut Client,
    staging: &mut StagingTables,
    schema: &str,
    tables: &[ApplyTable],
    after: u64,
    pieces: &mut tokio::sync::mpsc::Receiver<Result<BatchPiece>>,
) -> Result<BatchStats> {
    let applied = apply_in_transaction(client, staging, schema, tables, after, pieces).await;
    staging.end_transaction(applied.is_ok());
    applied
}

async fn apply_in_transaction(
    client: &mut Client,
    staging: &mut StagingTables,
    schema: &str,
    tables: &[ApplyTable],
    after: u64,
    pieces: &mut tokio::sync::mpsc::Receiver<Result<BatchPiece>>,
) -> Result<BatchStats> {
    let mut stats = BatchStats::default();
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
    tx.batch_execute(&format!("SET CONSTRAINTS ALL DEFERRED; {KEYED_JOINS}"))
        .await
        .map_err(pg_err("defer constraints", None))?;
    let mut timing = Timing::default();
    let mut waited = std::time::Instant::now();
    let mut next = next_piece(pieces).await?;
    while let BatchPiece::Chunk(chunk) = next {
        timing.wait += waited.elapsed();
        stats.chunks += 1;
        stats.largest_chunk = stats.largest_chunk.max(chunk.len() as u64);
        stats.changes += chunk.len() as u64;
        apply_chunk(
            &tx,
            schema,
            tables,
            &chunk,
            staging,
            &mut stats,
            &mut timing,
        )
        .await?;
        drop(chunk);
        waited = std::time::Instant::now();
        next = next_piece(pieces).await?;
        if matches!(next, BatchPiece::Chunk(_)) {
            crate::fault::hit(crate::fault::SYNC_MID_CHUNKED_APPLY);
        }
    }
    let BatchPiece::End(through) = next else {
        unreachable!("the loop above ends only at the end of the batch")
    };
    if through.end_seq <= after {
        return Err(Error::Data {
            table: "sqlite2pg.sync_state".into(),
            reason: format!(
                "a batch after position {after} ends at {}, not past it",
                through.end_seq
            ),
        });
    }
    if let Some(sql) = staging.emptying_sql() {
        tx.batch_execute(&sql)
            .await
            .map_err(pg_err("empty the staging tables", None))?;
    }
    crate::fault::hit(crate::fault::SYNC_MID_APPLY);
    advance_sync_position(
        &tx,
        through.end_seq as i64,
        through.committed_at,
        stats.changes as i64,
    )
    .await?;
    let committing = std::time::Instant::now();
    tx.commit()
        .await
        .map_err(pg_err("commit the apply transaction", None))?;
    stats.through = Some(through);
    tracing::debug!(
        chunks = stats.chunks,
        largest_chunk = stats.largest_chunk,
        wait_ms = timing.wait.as_millis() as u64,
        delete_ms = timing.delete.as_millis() as u64,
        upsert_ms = timing.upsert.as_millis() as u64,
        verify_ms = timing.verify.as_millis() as u64,
        commit_ms = committing.elapsed().as_millis() as u64,
        "apply transaction"
    );
    Ok(stats)
}

/// The next piece of the batch. A channel closed before the end (the reader stopped or failed)
/// is an error, so a partial batch is never committed as the whole.
async fn next_piece(
    pieces: &mut tokio::sync::mpsc::Receiver<Result<BatchPiece>>,
) -> Result<BatchPiece> {
    pieces.recv().await.unwrap_or_else(|| {
        Err(Error::Data {
            table: "(sync)".into(),
            reason: "the change-log reader stopped before the end of the batch".into(),
        })
    })
}

/// Where an apply transaction's time went, for the debug log: waiting for the reader's next
/// chunk, and each server-side step.
#[derive(Default)]
struct Timing {
    wait: std::time::Duration,
    delete: std::time::Duration,
    upsert: std::time::Duration,
    verify: std::time::Duration,
}

/// The staging tables of one PostgreSQL session (keep one per connection; a new connection
/// needs a new one). Each is a temporary table created once per session. An apply transaction
/// empties the tables it used before it commits, in one round trip ([`Self::emptying_sql`]),
/// so every transaction finds them empty: with `DELETE`, or with `TRUNCATE` once
/// [`TRUNCATE_AFTER_BYTES`] were staged into the table since the last (a `DELETE` leaves the
/// space its rows took, which nothing reclaims in a temporary table). Two designs measured worse:
/// - Creating and dropping them in every transaction (`ON COMMIT DROP`) churned the catalogs: at
///   1000 source transactions/s sync committed about 70 batches/s, wrote 9 MB/s of WAL for the
///   catalog rows alone, and autovacuum of `pg_attribute` and `pg_depend` ran every minute.
/// - `ON COMMIT DELETE ROWS` makes PostgreSQL truncate every such table of the session at every
///   commit that touched any temporary table, with its TOAST table and TOAST index (rebuilt): at
///   1000 source transactions/s (about 185 small batches/s) that was 28% of the server's CPU
///   time for sync.
///
/// A table's name carries a hash of its definition, so a schema step that adds a column gets a
/// new one.
#[derive(Debug, Default)]
pub struct StagingTables {
    /// Tables that exist in the session (created by a committed transaction).
    session: HashSet<String>,
    /// Tables the open transaction created (in the session once it commits).
    created: HashSet<String>,
    /// Tables the open transaction filled.
    used: HashSet<String>,
    /// COPY bytes staged into each table since it was last truncated: what its `DELETE`s left.
    since_truncate: HashMap<String, u64>,
}

/// Staged COPY bytes after which a staging table is emptied with `TRUNCATE` (new, empty files)
/// rather than `DELETE`: bounds what each statement of a batch scans in it (a few dozen 8 KB
/// pages) while small batches truncate rarely.
const TRUNCATE_AFTER_BYTES: u64 = 256 << 10;

impl StagingTables {
    /// The staging table for `cols` of `map` (`kind` and `n` make the name readable), and the
    /// SQL that readies it for a chunk of `bytes` COPY bytes: create it, or empty what an
    /// earlier chunk of this transaction left in it; `None` when it is ready as it is.
    fn ready(
        &mut self,
        schema: &str,
        map: &TableMap,
        kind: &str,
        n: usize,
        cols: &[usize],
        bytes: u64,
    ) -> (String, Option<String>) {
        let definition = staging_definition(schema, map, cols);
        let hash = blake3::hash(definition.as_bytes()).to_hex();
        let name = format!("_s2p_{kind}_{n}_{}", &hash[..8]);
        let sql = if self.used.contains(&name) {
            Some(self.empty(&name))
        } else if self.session.contains(&name) || self.created.contains(&name) {
            None
        } else {
            self.created.insert(name.clone());
            self.since_truncate.insert(name.clone(), 0);
            // A table of this name may be left in the session by an earlier user: emptied.
            // Analyzed once while empty: from then on the planner estimates its rows from its
            // current size (never-analyzed tables count as 10 pages, which made it join a few
            // staged keys to the target with a full scan).
            Some(format!(
                "CREATE TEMP TABLE IF NOT EXISTS {name} AS {definition}; \
                 TRUNCATE {name}; ANALYZE {name}"
            ))
        };
        *self.since_truncate.entry(name.clone()).or_default() += bytes;
        self.used.insert(name.clone());
        (name, sql)
    }

    /// The statement that empties staging table `name`.
    fn empty(&mut self, name: &str) -> String {
        let staged = self.since_truncate.entry(name.to_string()).or_default();
        if *staged >= TRUNCATE_AFTER_BYTES {
            *staged = 0;
            format!("TRUNCATE {name}")
        } else {
            format!("DELETE FROM {name}")
        }
    }

    /// The statements that empty every table the open transaction filled, to run before it
    /// commits; `None` when it filled none.
    fn emptying_sql(&mut self) -> Option<String> {
        let mut used: Vec<String> = self.used.iter().cloned().collect();
        used.sort_unstable();
        let sql: Vec<String> = used.iter().map(|name| self.empty(name)).collect();
        (!sql.is_empty()).then(|| sql.join("; "))
    }

    /// The open transaction ended: committed (its tables stay, emptied) or not (tables it
    /// created are gone, the others hold no row it staged; a `TRUNCATE` it ran is undone, so
    /// they are truncated next time).
    fn end_transaction(&mut self, committed: bool) {
        if committed {
            self.session.extend(self.created.drain());
        } else {
            for name in self.created.drain() {
                self.since_truncate.remove(&name);
            }
            for name in &self.used {
                if let Some(staged) = self.since_truncate.get_mut(name) {
                    *staged = (*staged).max(TRUNCATE_AFTER_BYTES);
                }
            }
        }
        self.used.clear();
    }
}

async fn apply_chunk(
    tx: &Transaction<'_>,
    schema: &str,
    tables: &[ApplyTable],
    chunk: &PreparedChunk,
    staging: &mut StagingTables,
    stats: &mut BatchStats,
    timing: &mut Timing,
) -> Result<()> {
    let mut step = std::time::Instant::now();
    let mut lap = |d: &mut std::time::Duration| {
        *d += step.elapsed();
        step = std::time::Instant::now();
    };
    // Per table, the staging tables its rows went to (what verification reads back).
    let mut staged: Vec<Vec<String>> = Vec::with_capacity(chunk.tables.len());
    for t in &chunk.tables {
        let deletes = apply_deletes(tx, schema, &tables[t.n], t, staging, stats).await?;
        staged.push(deletes.into_iter().collect());
    }
    lap(&mut timing.delete);
    for (t, names) in chunk.tables.iter().zip(&mut staged) {
        names.extend(apply_upserts(tx, schema, &tables[t.n], t, staging, stats).await?);
        quarantine(tx, "sync", &t.quarantined).await?;
        stats.quarantined += t.quarantined.len() as u64;
    }
    lap(&mut timing.upsert);
    for (t, names) in chunk.tables.iter().zip(&staged) {
        let map = &tables[t.n].map;
        let found = verify_staged(tx, schema, map, names, &t.wanted, &chunk.changes).await?;
        stats.mismatches.extend(found);
    }
    lap(&mut timing.verify);
    Ok(())
}

fn pg_err(op: &'static str, table: Option<&str>) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let table = table.map(str::to_string);
    move |source| Error::Target { op, table, source }
}

/// Stages `rows` of the given columns of `map` into a new temporary table `name` (dropped at
/// commit) with the target's exact column types, by binary COPY. Used by verification (keys to
/// re-read) outside an apply transaction.
pub(crate) async fn stage_rows<'r>(
    tx: &Transaction<'_>,
    schema: &str,
    name: &str,
    map: &TableMap,
    cols: &[usize],
    rows: impl IntoIterator<Item = &'r [PgValue]>,
) -> Result<()> {
    let types: Vec<PgType> = cols.iter().map(|&i| map.columns[i].ty.clone()).collect();
    let mut encoder = CopyEncoder::new();
    for row in rows {
        encoder
            .push_row(&types, row)
            .map_err(|reason| Error::Data {
                table: map.source.clone(),
                reason,
            })?;
    }
    let create = format!(
        "CREATE TEMP TABLE {name} ON COMMIT DROP AS {}",
        staging_definition(schema, map, cols)
    );
    let data = Bytes::from(encoder.finish());
    stage_encoded(tx, map, name, Some(&create), data).await?;
    // Without statistics the planner guesses thousands of staged rows and joins them to the
    // target with a full scan; with them it looks the few keys up by the primary key index.
    tx.batch_execute(&format!("ANALYZE {name}"))
        .await
        .map_err(pg_err("analyze a staging table", Some(&map.source)))
}

/// The query a staging table of `cols` of `map` is created from: the target's exact column
/// types, no rows.
fn staging_definition(schema: &str, map: &TableMap, cols: &[usize]) -> String {
    let list: Vec<String> = cols
        .iter()
        .map(|&i| quote_pg(&map.columns[i].target))
        .collect();
    format!(
        "SELECT {} FROM {} WITH NO DATA",
        list.join(", "),
        qualified(schema, &map.target)
    )
}

/// Runs `ready` (SQL that creates or empties staging table `name`), then loads `data`, a
/// complete binary COPY stream of its columns.
async fn stage_encoded(
    tx: &Transaction<'_>,
    map: &TableMap,
    name: &str,
    ready: Option<&str>,
    data: Bytes,
) -> Result<()> {
    let t = Some(map.source.as_str());
    if let Some(sql) = ready {
        tx.batch_execute(sql)
            .await
            .map_err(pg_err("ready a staging table", t))?;
    }
    let sink = tx
        .copy_in::<_, Bytes>(&format!("COPY {name} FROM STDIN (FORMAT binary)"))
        .await
        .map_err(pg_err("start staging COPY", t))?;
    futures_util::pin_mut!(sink);
    sink.send(data)
        .await
        .map_err(pg_err("send staging rows", t))?;
    sink.as_mut()
        .finish()
        .await
        .map_err(pg_err("finish staging COPY", t))?;
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
    table: &ApplyTable,
    prepared: &PreparedTable,
    staging: &mut StagingTables,
    stats: &mut BatchStats,
) -> Result<Option<String>> {
    let Some(data) = &prepared.deletes else {
        return Ok(None);
    };
    let (name, ready) = staging.ready(
        schema,
        &table.map,
        "del",
        prepared.n,
        &table.map.key,
        data.len() as u64,
    );
    stage_encoded(tx, &table.map, &name, ready.as_deref(), data.clone()).await?;
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
    Ok(Some(name))
}

async fn apply_upserts(
    tx: &Transaction<'_>,
    schema: &str,
    table: &ApplyTable,
    prepared: &PreparedTable,
    staging: &mut StagingTables,
    stats: &mut BatchStats,
) -> Result<Option<String>> {
    let Some(data) = &prepared.upserts else {
        return Ok(None);
    };
    let cols: Vec<usize> = table.writable().map(|(i, _)| i).collect();
    let (name, ready) = staging.ready(
        schema,
        &table.map,
        "up",
        prepared.n,
        &cols,
        data.len() as u64,
    );
    stage_encoded(tx, &table.map, &name, ready.as_deref(), data.clone()).await?;
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
    let upserted = tx
        .execute(&upsert_sql(table, &target, &name, &cols), &[])
        .await
        .map_err(pg_err("upsert rows", t))?;
    stats.upserted += upserted;
    *stats.per_table.entry(table.map.source.clone()).or_default() += upserted;
    Ok(Some(name))
}

/// `INSERT … SELECT … FROM <staging> ON CONFLICT (<key>) DO UPDATE SET …` for `cols`.
fn upsert_sql(table: &ApplyTable, target: &str, staging: &str, cols: &[usize]) -> String {
    let name = |i: usize| quote_pg(&table.map.columns[i].target);
    let list: Vec<String> = cols.iter().map(|&i| name(i)).collect();
    let key_list: Vec<String> = table.map.key.iter().map(|&i| name(i)).collect();
    let updates: Vec<String> = cols
        .iter()
        .filter(|i| !table.map.key.contains(i))
        .map(|&i| format!("{c} = EXCLUDED.{c}", c = name(i)))
        .collect();
    let action = if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    format!(
        "INSERT INTO {target} ({cols}) SELECT {cols} FROM {staging} ON CONFLICT ({keys}) {action}",
        cols = list.join(", "),
        keys = key_list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A staging table in the session that a transaction filled with `bytes`.
    fn filled(staging: &mut StagingTables, name: &str, bytes: u64) {
        staging.session.insert(name.to_string());
        staging.used.insert(name.to_string());
        *staging.since_truncate.entry(name.to_string()).or_default() += bytes;
    }

    #[test]
    fn staging_tables_are_deleted_from_until_enough_was_staged_to_truncate() {
        let mut staging = StagingTables::default();
        assert_eq!(
            staging.emptying_sql(),
            None,
            "nothing used, nothing to empty"
        );
        filled(&mut staging, "b", 10);
        filled(&mut staging, "a", TRUNCATE_AFTER_BYTES - 11);
        assert_eq!(
            staging.emptying_sql().as_deref(),
            Some("DELETE FROM a; DELETE FROM b")
        );
        staging.end_transaction(true);
        filled(&mut staging, "a", 11);
        assert_eq!(staging.emptying_sql().as_deref(), Some("TRUNCATE a"));
        staging.end_transaction(true);
        filled(&mut staging, "a", 1);
        assert_eq!(staging.emptying_sql().as_deref(), Some("DELETE FROM a"));
        // A rolled-back transaction undoes its TRUNCATE or DELETE: truncated next time.
        staging.end_transaction(false);
        filled(&mut staging, "a", 1);
        assert_eq!(staging.emptying_sql().as_deref(), Some("TRUNCATE a"));
    }
}
