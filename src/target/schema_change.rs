//! Applying an additive source schema change to PostgreSQL while sync runs: columns added with
//! the type the snapshot's ladder picks and, as their DEFAULT, the value SQLite gives the rows
//! that predate them; new tables created as the snapshot creates them (columns, primary key,
//! indexes, DEFAULTs, CHECKs; rows arrive through the change stream). Keeps promise 2: the whole
//! step is one transaction that first locks sync's position and checks it is exactly where the
//! step belongs, so it lands between the last change captured with the old definitions and the
//! first captured with the new ones. Idempotent: columns are added `IF NOT EXISTS`, and a table
//! sqlite2pg already created is completed instead of created again, so a crash anywhere around
//! it is repaired by running the step again.

use std::path::Path;

use tokio_postgres::{Client, Transaction};

use super::ddl::{add_column, create_table, qualified};
use super::state::{lock_sync_position, set_status, start_table, table_state, TableStatus};
use crate::error::{Error, Result};
use crate::snapshot::plan::{ColumnPlan, TablePlan};
use crate::snapshot::post_load::{keys_and_indexes, Note, PostLoad, TableSource};
use crate::source::introspect::Table;

const TABLE_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relname = $2)";

/// A column appended to a replicated table.
#[derive(Debug, Clone)]
pub struct AddedColumn {
    /// The source table's name.
    pub table: String,
    /// The target table's name.
    pub target: String,
    pub plan: ColumnPlan,
}

/// A table created in the source during sync, with the snapshot's plan for it.
#[derive(Debug, Clone)]
pub struct NewTable {
    pub table: Table,
    pub plan: TablePlan,
}

/// What one step changes in PostgreSQL, and where it belongs in the change stream.
#[derive(Debug, Clone)]
pub struct SchemaStep {
    /// The position PostgreSQL must be at: every change up to it applied, none after it.
    pub at: u64,
    pub columns: Vec<AddedColumn>,
    pub tables: Vec<NewTable>,
}

fn pg_err(op: &'static str, table: &str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let table = Some(table.to_string());
    move |source| Error::Target { op, table, source }
}

/// Applies `step` in one transaction (see the module doc). `source` is the live SQLite file
/// (index columns and identities of new tables are read from it); `fingerprint` identifies the
/// snapshot new tables are recorded under. Returns what PostgreSQL refused of a new table
/// besides its key (an index, a CHECK), one note each.
pub async fn apply_schema_step(
    client: &mut Client,
    schema: &str,
    step: &SchemaStep,
    source: &Path,
    fingerprint: &str,
) -> Result<Vec<Note>> {
    let mut tx = client
        .transaction()
        .await
        .map_err(pg_err("begin the schema change", "(schema)"))?;
    let position = lock_sync_position(&tx).await?;
    if position != step.at as i64 {
        return Err(Error::Data {
            table: "sqlite2pg.sync_state".into(),
            reason: format!(
                "the target is at position {position}, not {}, where the schema change belongs: \
                 another sync is applying to this target; stop it first",
                step.at
            ),
        });
    }
    for c in &step.columns {
        tx.batch_execute(&add_column(schema, &c.target, &c.plan))
            .await
            .map_err(pg_err("add a column", &c.table))?;
        tracing::info!(table = %c.table, column = %c.plan.source, ty = %c.plan.ty.sql(), "column added");
    }
    let mut out = PostLoad::default();
    if !step.tables.is_empty() {
        let conn = crate::source::open_read_only(source)?;
        for t in &step.tables {
            let from = TableSource {
                conn: &conn,
                file: source,
                table: &t.table,
            };
            new_table(
                &mut tx,
                schema,
                &from,
                t.plan.clone(),
                fingerprint,
                &mut out,
            )
            .await?;
        }
    }
    crate::fault::hit(crate::fault::SYNC_MID_SCHEMA_STEP);
    tx.commit()
        .await
        .map_err(pg_err("commit the schema change", "(schema)"))?;
    Ok(out.notes)
}

/// Creates a new table with its key, indexes, DEFAULTs and CHECKs, recorded as created by
/// sqlite2pg; completes one an earlier attempt created (its missing columns); refuses a
/// same-named table sqlite2pg did not create.
async fn new_table(
    tx: &mut Transaction<'_>,
    schema: &str,
    from: &TableSource<'_>,
    mut plan: TablePlan,
    fingerprint: &str,
    out: &mut PostLoad,
) -> Result<()> {
    let exists: bool = tx
        .query_one(TABLE_EXISTS, &[&schema, &plan.target])
        .await
        .map_err(pg_err("look for the table", &plan.source))?
        .get(0);
    if exists {
        if table_state(&*tx, schema, &plan.target).await?.is_none() {
            return Err(Error::Config {
                field: format!("table {:?}", plan.source),
                reason: format!(
                    "it was created in the source during sync, but {} already exists in the \
                     target and sqlite2pg did not create it: drop or rename it there",
                    qualified(schema, &plan.target)
                ),
            });
        }
        for c in plan.copied() {
            tx.batch_execute(&add_column(schema, &plan.target, c))
                .await
                .map_err(pg_err("add a column", &plan.source))?;
        }
        return Ok(());
    }
    create(tx, schema, &mut plan).await?;
    out.notes.extend(plan.notes.iter().map(|message| Note {
        subject: plan.source.clone(),
        message: message.clone(),
    }));
    start_table(&*tx, schema, &plan.target, &plan.source, fingerprint).await?;
    keys_and_indexes(tx, from, schema, false, &plan, out).await?;
    set_status(&*tx, schema, &plan.target, TableStatus::Done).await?;
    tracing::info!(table = %plan.source, columns = plan.columns.len(), "table created");
    Ok(())
}

/// `CREATE TABLE` under a savepoint; when PostgreSQL refuses a generated column's expression,
/// the generated columns become plain columns holding SQLite's values (as in the snapshot).
async fn create(tx: &mut Transaction<'_>, schema: &str, plan: &mut TablePlan) -> Result<()> {
    let sp = tx
        .savepoint("sqlite2pg_create")
        .await
        .map_err(pg_err("open a savepoint", &plan.source))?;
    match sp.batch_execute(&create_table(schema, plan)).await {
        Ok(()) => sp.commit().await,
        Err(e) if plan.has_generated() => {
            sp.rollback()
                .await
                .map_err(pg_err("roll back a savepoint", &plan.source))?;
            let reason = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string());
            plan.demote_generated(&reason);
            tx.batch_execute(&create_table(schema, plan)).await
        }
        Err(e) => Err(e),
    }
    .map_err(pg_err("create the table", &plan.source))
}
