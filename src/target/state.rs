//! What sqlite2pg keeps in the target, in its own `sqlite2pg` schema: which tables it created and
//! how far each got (so a re-run resumes instead of starting over, and never touches a table it
//! did not create), and the quarantine of values that could not become their column's type
//! (promise 3: nothing is dropped silently).

use tokio_postgres::{Client, GenericClient};

use crate::error::{Error, Result};

/// The schema sqlite2pg owns in the target.
pub const STATE_SCHEMA: &str = "sqlite2pg";

const CREATE_STATE: &str = "
CREATE SCHEMA IF NOT EXISTS sqlite2pg;
CREATE TABLE IF NOT EXISTS sqlite2pg.snapshot_tables (
    target_schema text NOT NULL,
    target_table text NOT NULL,
    source_table text NOT NULL,
    source_fingerprint text NOT NULL,
    status text NOT NULL,
    rows bigint NOT NULL DEFAULT 0,
    quarantined bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_schema, target_table)
);
CREATE TABLE IF NOT EXISTS sqlite2pg.snapshot_ranges (
    target_schema text NOT NULL,
    target_table text NOT NULL,
    range_start bigint NOT NULL,
    rows bigint NOT NULL,
    quarantined bigint NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_schema, target_table, range_start)
);
CREATE TABLE IF NOT EXISTS sqlite2pg.sync_state (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    applied_seq bigint NOT NULL,
    source_committed_at double precision,
    applied_at timestamptz NOT NULL DEFAULT now(),
    changes_applied bigint NOT NULL DEFAULT 0,
    batches_applied bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sqlite2pg.quarantine (
    id bigserial PRIMARY KEY,
    table_name text NOT NULL,
    row_key jsonb NOT NULL,
    column_name text NOT NULL,
    sqlite_type text NOT NULL,
    value text NOT NULL,
    value_bytes bytea,
    reason text NOT NULL,
    stage text NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now()
);";

const TABLE_STATE: &str = "SELECT source_fingerprint, status FROM sqlite2pg.snapshot_tables \
     WHERE target_schema = $1 AND target_table = $2";
const UPSERT_TABLE: &str = "INSERT INTO sqlite2pg.snapshot_tables \
     (target_schema, target_table, source_table, source_fingerprint, status) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (target_schema, target_table) DO UPDATE SET source_table = $3, source_fingerprint = $4, \
     status = $5, rows = 0, quarantined = 0, updated_at = now()";
const SET_STATUS: &str = "UPDATE sqlite2pg.snapshot_tables SET status = $3, updated_at = now() \
     WHERE target_schema = $1 AND target_table = $2";
const FINISH_LOAD: &str = "UPDATE sqlite2pg.snapshot_tables t SET status = 'loaded', updated_at = now(), \
     rows = r.rows, quarantined = r.quarantined FROM (SELECT coalesce(sum(rows), 0)::bigint AS rows, \
     coalesce(sum(quarantined), 0)::bigint AS quarantined FROM sqlite2pg.snapshot_ranges \
     WHERE target_schema = $1 AND target_table = $2) r WHERE t.target_schema = $1 AND t.target_table = $2";
const RANGES_DONE: &str = "SELECT range_start FROM sqlite2pg.snapshot_ranges WHERE target_schema = $1 AND target_table = $2";
const RANGE_DONE: &str = "INSERT INTO sqlite2pg.snapshot_ranges (target_schema, target_table, range_start, rows, quarantined) \
     VALUES ($1, $2, $3, $4, $5)";
const CLEAR_RANGES: &str =
    "DELETE FROM sqlite2pg.snapshot_ranges WHERE target_schema = $1 AND target_table = $2";
const CLEAR_QUARANTINE: &str =
    "DELETE FROM sqlite2pg.quarantine WHERE stage = 'snapshot' AND table_name = $1";
const INSERT_QUARANTINE: &str = "INSERT INTO sqlite2pg.quarantine \
     (table_name, row_key, column_name, sqlite_type, value, value_bytes, reason, stage) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

const READ_SYNC_STATE: &str = "SELECT applied_seq FROM sqlite2pg.sync_state WHERE id = 1";
const INIT_SYNC_STATE: &str =
    "INSERT INTO sqlite2pg.sync_state (id, applied_seq) VALUES (1, $1) ON CONFLICT (id) DO NOTHING";
const LOCK_SYNC_STATE: &str =
    "SELECT applied_seq FROM sqlite2pg.sync_state WHERE id = 1 FOR UPDATE";
const ADVANCE_SYNC_STATE: &str = "UPDATE sqlite2pg.sync_state SET applied_seq = $1, source_committed_at = $2, \
     applied_at = now(), changes_applied = changes_applied + $3, batches_applied = batches_applied + 1 WHERE id = 1";

/// The applied position, or `None` when sync never started against this target.
pub async fn sync_position(client: &impl GenericClient) -> Result<Option<i64>> {
    let row = client
        .query_opt(READ_SYNC_STATE, &[])
        .await
        .map_err(err("read sync_state", None))?;
    Ok(row.map(|r| r.get(0)))
}

/// Starts sync at `seq` (the snapshot's position) unless a position is already recorded.
pub async fn init_sync_position(client: &impl GenericClient, seq: i64) -> Result<()> {
    client
        .execute(INIT_SYNC_STATE, &[&seq])
        .await
        .map_err(err("initialise sync_state", None))?;
    Ok(())
}

/// Locks the position row for this transaction and returns it: a second sync applying the
/// same target waits here, then sees the position moved and stops.
pub async fn lock_sync_position(client: &impl GenericClient) -> Result<i64> {
    let row = client
        .query_one(LOCK_SYNC_STATE, &[])
        .await
        .map_err(err("lock sync_state", None))?;
    Ok(row.get(0))
}

/// Moves the position forward; call in the batch's transaction so both commit together.
pub async fn advance_sync_position(
    client: &impl GenericClient,
    seq: i64,
    committed_at: f64,
    changes: i64,
) -> Result<()> {
    client
        .execute(ADVANCE_SYNC_STATE, &[&seq, &committed_at, &changes])
        .await
        .map_err(err("advance sync_state", None))?;
    Ok(())
}

/// Where a table stands in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableStatus {
    /// Created, rows arriving range by range.
    Loading,
    /// Every range committed.
    Loaded,
    /// Keys and indexes built.
    Indexed,
    /// Foreign keys added; nothing left to do.
    Done,
}

impl TableStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TableStatus::Loading => "loading",
            TableStatus::Loaded => "loaded",
            TableStatus::Indexed => "indexed",
            TableStatus::Done => "done",
        }
    }

    fn parse(s: &str) -> Option<TableStatus> {
        Some(match s {
            "loading" => TableStatus::Loading,
            "loaded" => TableStatus::Loaded,
            "indexed" => TableStatus::Indexed,
            "done" => TableStatus::Done,
            _ => return None,
        })
    }
}

/// One value that could not become its column's type.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuarantinedValue {
    pub table_name: String,
    pub row_key: serde_json::Value,
    pub column_name: String,
    pub sqlite_type: &'static str,
    /// A faithful, readable rendering.
    pub value: String,
    /// The exact bytes for text and BLOB values.
    pub value_bytes: Option<Vec<u8>>,
    pub reason: String,
}

fn err(op: &'static str, table: Option<&str>) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let table = table.map(str::to_string);
    move |source| Error::Target { op, table, source }
}

/// Creates the `sqlite2pg` schema and its tables when missing.
pub async fn ensure_state(client: &Client) -> Result<()> {
    client
        .batch_execute(CREATE_STATE)
        .await
        .map_err(err("create the sqlite2pg state schema", None))
}

/// The recorded fingerprint and status of a target table, if sqlite2pg created it.
pub async fn table_state(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Option<(String, TableStatus)>> {
    let row = client
        .query_opt(TABLE_STATE, &[&schema, &table])
        .await
        .map_err(err("read snapshot state", Some(table)))?;
    Ok(row.and_then(|r| Some((r.get(0), TableStatus::parse(r.get(1))?))))
}

/// Records that sqlite2pg (re)created `table` for the source snapshot `fingerprint`; forgets its
/// earlier ranges and quarantined values.
pub async fn start_table(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
    source: &str,
    fingerprint: &str,
) -> Result<()> {
    let status = TableStatus::Loading.as_str();
    client
        .execute(
            UPSERT_TABLE,
            &[&schema, &table, &source, &fingerprint, &status],
        )
        .await
        .map_err(err("record snapshot state", Some(table)))?;
    client
        .execute(CLEAR_RANGES, &[&schema, &table])
        .await
        .map_err(err("reset snapshot ranges", Some(table)))?;
    client
        .execute(CLEAR_QUARANTINE, &[&source])
        .await
        .map_err(err("reset quarantine", Some(table)))?;
    Ok(())
}

pub async fn set_status(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
    status: TableStatus,
) -> Result<()> {
    client
        .execute(SET_STATUS, &[&schema, &table, &status.as_str()])
        .await
        .map_err(err("record snapshot state", Some(table)))?;
    Ok(())
}

/// Marks the table loaded, totalling its ranges.
pub async fn finish_load(client: &Client, schema: &str, table: &str) -> Result<()> {
    client
        .execute(FINISH_LOAD, &[&schema, &table])
        .await
        .map_err(err("record snapshot state", Some(table)))?;
    Ok(())
}

/// Source columns with values the snapshot quarantined from `source_table` (committed with their
/// ranges, so this survives a crash).
pub async fn snapshot_misfit_columns(client: &Client, source_table: &str) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT DISTINCT column_name FROM sqlite2pg.quarantine WHERE stage = 'snapshot' AND table_name = $1",
            &[&source_table],
        )
        .await
        .map_err(err("read quarantined columns", Some(source_table)))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Range starts already committed for `table`.
pub async fn ranges_done(client: &Client, schema: &str, table: &str) -> Result<Vec<i64>> {
    let rows = client
        .query(RANGES_DONE, &[&schema, &table])
        .await
        .map_err(err("read snapshot ranges", Some(table)))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Records a committed range; call inside the range's COPY transaction so both commit together.
pub async fn range_done(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
    start: i64,
    rows: i64,
    quarantined: i64,
) -> Result<()> {
    client
        .execute(RANGE_DONE, &[&schema, &table, &start, &rows, &quarantined])
        .await
        .map_err(err("record a copied range", Some(table)))?;
    Ok(())
}

/// Writes quarantined values; call inside the transaction that skipped their rows.
pub async fn quarantine(
    client: &impl GenericClient,
    stage: &str,
    values: &[QuarantinedValue],
) -> Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    let stmt = client
        .prepare(INSERT_QUARANTINE)
        .await
        .map_err(err("prepare the quarantine insert", None))?;
    for v in values {
        client
            .execute(
                &stmt,
                &[
                    &v.table_name,
                    &v.row_key,
                    &v.column_name,
                    &v.sqlite_type,
                    &v.value,
                    &v.value_bytes,
                    &v.reason,
                    &stage,
                ],
            )
            .await
            .map_err(err("write to sqlite2pg.quarantine", Some(&v.table_name)))?;
    }
    Ok(())
}
