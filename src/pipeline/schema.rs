//! Sync following the source schema. What sync replicates is what PostgreSQL holds: at start,
//! each captured table with the columns its target table has ([`replicated_from_target`]).
//! Capture reads row images only at the schema version its table definitions were read at (the
//! [`Capturer`] is pinned); when the version moves, or at start, the capture stage runs
//! [`Follower::follow`] at its position P (every change up to P is in the change log, captured
//! with the old definitions, and nothing after P is captured yet):
//!
//! 1. the schema is read and, in the same read transaction, the values of what it adds are
//!    profiled (the snapshot's ladder picks the types), then compared with what sync replicates
//!    (`source::schema_change`): anything but appended columns and new tables with a primary key
//!    stops capture there, apply drains the change log up to P, and sync stops with the error;
//! 2. apply, once PostgreSQL is at exactly P, adds the columns (existing rows get the value
//!    SQLite gives them) and creates the new tables in one transaction
//!    (`target::schema_change`), then maps the tables again;
//! 3. capture installs the new tables' triggers and logs a change row for every row they hold,
//!    in one SQLite transaction (`capture::adopt`), and goes on from P with the new definitions.
//!
//! So every change captured with the old definitions is applied before the DDL and every one
//! captured with the new definitions after it (promise 2). A crash anywhere is repaired on the
//! next start: the replicated set is read back from PostgreSQL, so a step that did not commit is
//! simply found again, and each part of it is idempotent.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;
use tokio_postgres::Client;

use crate::config::Config;
use crate::convert::literal::sql_literal;
use crate::convert::{convert, PgType};
use crate::error::{Error, Result};
use crate::snapshot::plan::{plan_table, ColumnPlan, ROWID_COLUMN};
use crate::source::capture::{adopt, tables_without_triggers, Capturer};
use crate::source::introspect::{
    at_schema_version, read_schema, Column, PrimaryKey, Schema, Table,
};
use crate::source::order::migration_order;
use crate::source::profile::profile_table;
use crate::source::schema_change::{compare, Additions, NewTables};
use crate::target::apply::ApplyTable;
use crate::target::ddl::qualified;
use crate::target::mapping::map_table;
use crate::target::schema_change::{apply_schema_step, AddedColumn, NewTable, SchemaStep};
use crate::translate::target_name;

const TARGET_COLUMN_NAMES: &str = "SELECT a.attname::text FROM pg_attribute a \
     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

/// How often capture, waiting for apply to run a step, looks at the stop flag.
const STEP_WAIT: Duration = Duration::from_millis(100);

/// The source as one read transaction saw it.
pub(crate) struct SourceState {
    pub schema: Schema,
    pub version: i64,
    /// The tables capture was installed for, in the order they were recorded.
    pub installed: Vec<String>,
}

/// Reads the schema, its version and the captured tables at one instant.
pub(crate) fn read_source(path: &Path) -> Result<SourceState> {
    let conn = crate::source::open_read_only(path)?;
    let ((schema, installed), version) = at_schema_version(&conn, path, |c| {
        Ok((
            read_schema(c, path)?,
            crate::source::capture::installed_tables(c)?,
        ))
    })?;
    let installed = installed.ok_or_else(|| Error::Config {
        field: "--source".into(),
        reason: "change capture is not installed in this database (sqlite2pg rollback removed it, or snapshot ran with --no-capture): run `sqlite2pg snapshot --fresh`".into(),
    })?;
    Ok(SourceState {
        schema,
        version,
        installed,
    })
}

/// The replicated tables as PostgreSQL holds them, in migration order: each captured table with
/// the columns its target table has, in target order. A target column the source no longer has
/// keeps its name (so the comparison can say it was dropped or renamed); a captured table the
/// source no longer has keeps the target's columns.
pub(crate) async fn replicated_from_target(
    client: &Client,
    schema: &str,
    source: &SourceState,
) -> Result<Vec<Table>> {
    let captured = |n: &String| source.installed.iter().any(|i| i.eq_ignore_ascii_case(n));
    let mut names: Vec<String> = migration_order(&source.schema)
        .tables
        .into_iter()
        .filter(captured)
        .collect();
    names.extend(
        (source.installed.iter())
            .filter(|i| source.schema.table(i).is_none())
            .cloned(),
    );
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        let now = source.schema.table(&name).cloned();
        let base = now.clone().unwrap_or_else(|| gone_table(&name));
        let target = qualified(schema, &target_name(&base.name, false));
        let columns: Vec<String> = client
            .query(TARGET_COLUMN_NAMES, &[&target])
            .await
            .map_err(|source| Error::Target {
                op: "read target columns",
                table: Some(base.name.clone()),
                source,
            })?
            .iter()
            .map(|r| r.get(0))
            .filter(|c: &String| c != ROWID_COLUMN)
            .collect();
        if columns.is_empty() && now.is_some() {
            return Err(Error::Data {
                table: base.name,
                reason: "the table does not exist in the target: run snapshot first".into(),
            });
        }
        let columns = columns
            .into_iter()
            .map(|t| {
                (base.columns.iter())
                    .find(|c| target_name(&c.name, false) == t)
                    .cloned()
                    .unwrap_or_else(|| gone_column(t))
            })
            .collect();
        tables.push(Table { columns, ..base });
    }
    Ok(tables)
}

/// A captured table the source no longer has, as far as anything is known of it.
fn gone_table(name: &str) -> Table {
    Table {
        name: name.to_string(),
        columns: Vec::new(),
        primary_key: PrimaryKey::None,
        strict: false,
        autoincrement: false,
        foreign_keys: Vec::new(),
        indexes: Vec::new(),
        sql: String::new(),
    }
}

/// A target column the source no longer has: its name is all that is known.
fn gone_column(name: String) -> Column {
    Column {
        name,
        declared_type: String::new(),
        not_null: false,
        default: None,
        pk_position: 0,
        generated: None,
    }
}

/// How apply sees `tables`: each mapped onto its target table, which must hold every column.
pub(crate) async fn apply_tables(
    client: &Client,
    schema: &str,
    tables: &[Table],
) -> Result<Vec<ApplyTable>> {
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let map = map_table(client, schema, t, false)
            .await?
            .ok_or_else(|| Error::Data {
                table: t.name.clone(),
                reason: "the table does not exist in the target: run snapshot first".into(),
            })?;
        if let Some(p) = map.problems.first() {
            return Err(Error::Data {
                table: t.name.clone(),
                reason: format!("the source schema no longer matches the target ({p}): sync cannot apply changes to it; re-run snapshot --fresh"),
            });
        }
        out.push(ApplyTable::load(client, schema, map).await?);
    }
    Ok(out)
}

/// Refuses to go on (cutover) while the source schema differs from what sync replicates: a
/// change sync cannot follow is its [`Error::SchemaChange`]; an additive one sync has not
/// applied yet asks for a sync run first.
pub(crate) fn check_schema_applied(setup: &super::SyncSetup) -> Result<()> {
    let policy = match &setup.snapshot.tables {
        Some(names) => NewTables::Only(names),
        None => NewTables::All,
    };
    let additions = compare(&setup.tables, &setup.schema, policy)?;
    if additions.is_empty() {
        return Ok(());
    }
    Err(Error::Data {
        table: "(cutover)".into(),
        reason: format!(
            "the source schema changed since sync last ran ({}): run sync, which applies it, then cutover",
            additions.summary()
        ),
    })
}

/// A step for apply, with the tables apply maps once it committed.
pub(crate) struct StepRequest {
    pub step: SchemaStep,
    pub replicated: Vec<Table>,
}

/// What the capture and apply stages share about schema steps.
pub(crate) struct SchemaLinks {
    pub steps: (Sender<StepRequest>, Receiver<StepRequest>),
    /// Apply's answer: the step committed in PostgreSQL.
    pub acks: (Sender<()>, Receiver<()>),
    /// True while capture reads with definitions that match the source (no step pending):
    /// `--catch-up` does not end before, so a change made before sync started is applied.
    pub settled: AtomicBool,
    /// `--catch-up`'s target; a new table's rows, logged when capture adopts it, raise it.
    pub catch_up: Option<AtomicU64>,
}

impl SchemaLinks {
    pub fn new(catch_up: Option<u64>) -> SchemaLinks {
        SchemaLinks {
            steps: crossbeam_channel::unbounded(),
            acks: crossbeam_channel::unbounded(),
            settled: AtomicBool::new(false),
            catch_up: catch_up.map(AtomicU64::new),
        }
    }
}

/// The capture stage's side of following the schema; see the module doc.
pub(crate) struct Follower<'a> {
    pub path: &'a Path,
    pub config: &'a Config,
    /// The snapshot's `--tables` selection (`None`: every table, so new tables are followed).
    pub selection: Option<&'a [String]>,
    /// What sync replicates, as the capturer reads it.
    pub replicated: Vec<Table>,
    pub links: &'a SchemaLinks,
}

impl Follower<'_> {
    /// Brings capture up to the source schema at `pos` (see the module doc) and returns a
    /// capturer pinned to the version its definitions were read at; `Ok(None)` when sync is
    /// stopping. A change sync cannot follow is an [`Error::SchemaChange`].
    pub fn follow(
        &mut self,
        pos: u64,
        stop: &AtomicBool,
        wake: &Sender<()>,
    ) -> Result<Option<Capturer>> {
        self.links.settled.store(false, Ordering::SeqCst);
        let conn = crate::source::open_read_only(self.path)?;
        let ((additions, step), mut version) = at_schema_version(&conn, self.path, |c| {
            let additions = self.compare(&read_schema(c, self.path)?)?;
            rebuilt(c, &additions.replicated)?;
            let step = self.plan(c, pos, &additions)?;
            Ok((additions, step))
        })?;
        drop(conn);
        let mut replicated = additions.replicated.clone();
        let mut settled = true;
        if !additions.is_empty() {
            tracing::info!(seq = pos, changes = %additions.summary(), "the source schema changed: applying it to PostgreSQL");
            let mut after = replicated.clone();
            after.extend(additions.tables.iter().cloned());
            if !self.hand_to_apply(step, after.clone(), stop, wake)? {
                return Ok(None);
            }
            if !additions.tables.is_empty() {
                let conn = crate::source::open_read_write(self.path)?;
                match adopt(&conn, self.path, &after, &additions.tables, version)? {
                    Some(adopted) => {
                        version = adopted.schema_version;
                        replicated = after;
                        if let Some(target) = &self.links.catch_up {
                            target.fetch_max(adopted.last_seq, Ordering::SeqCst);
                        }
                    }
                    // The schema moved again: the first capture at `version` fails and the
                    // next follow finds the new tables again.
                    None => settled = false,
                }
            }
        }
        self.replicated = replicated;
        let mut capturer = Capturer::open(self.path, &self.replicated)?;
        capturer.pin_schema(version);
        self.links.settled.store(settled, Ordering::SeqCst);
        Ok(Some(capturer))
    }

    fn compare(&self, schema: &Schema) -> Result<Additions> {
        let policy = match self.selection {
            Some(names) => NewTables::Only(names),
            None => NewTables::All,
        };
        let additions = compare(&self.replicated, schema, policy)?;
        for t in &additions.tables {
            let target = target_name(&t.name, false);
            if let Some(other) =
                (self.replicated.iter()).find(|r| target_name(&r.name, false) == target)
            {
                return Err(Error::SchemaChange {
                    table: t.name.clone(),
                    column: None,
                    change: format!(
                        "the table was created, but its PostgreSQL name {target:?} is replicated table {:?}'s",
                        other.name
                    ),
                });
            }
        }
        Ok(additions)
    }

    /// The PostgreSQL side of `additions`, planned from the values SQLite holds now.
    fn plan(&self, conn: &Connection, pos: u64, additions: &Additions) -> Result<SchemaStep> {
        let mut step = SchemaStep {
            at: pos,
            columns: Vec::new(),
            tables: Vec::new(),
        };
        for (table, before) in &additions.columns {
            for plan in plan_added_columns(conn, self.path, table, *before, self.config)? {
                step.columns.push(AddedColumn {
                    table: table.name.clone(),
                    target: target_name(&table.name, false),
                    plan,
                });
            }
        }
        for table in &additions.tables {
            let opts = self.config.convert;
            let profile = profile_table(conn, self.path, table, &self.config.columns, opts)?;
            step.tables.push(NewTable {
                table: table.clone(),
                plan: plan_table(table, &profile, false, false, opts)?,
            });
        }
        Ok(step)
    }

    /// Hands `step` to apply and waits until PostgreSQL committed it; `false` when sync stops
    /// first (apply failed, or SIGINT).
    fn hand_to_apply(
        &self,
        step: SchemaStep,
        replicated: Vec<Table>,
        stop: &AtomicBool,
        wake: &Sender<()>,
    ) -> Result<bool> {
        if self
            .links
            .steps
            .0
            .send(StepRequest { step, replicated })
            .is_err()
        {
            return Ok(false);
        }
        let _ = wake.send(());
        loop {
            match self.links.acks.1.recv_timeout(STEP_WAIT) {
                Ok(()) => return Ok(true),
                Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::SeqCst) => {}
                Err(_) => return Ok(false),
            }
        }
    }
}

/// Refuses a replicated table whose definition is unchanged but whose capture triggers are
/// gone: it was dropped and created again (a rebuild), and its changes since may be missing.
fn rebuilt(conn: &Connection, replicated: &[Table]) -> Result<()> {
    match tables_without_triggers(conn, replicated)?
        .into_iter()
        .next()
    {
        None => Ok(()),
        Some(table) => Err(Error::SchemaChange {
            table,
            column: None,
            change: "its capture triggers are gone although its columns did not change: the \
                     table was rebuilt (dropped and created again) or the triggers were dropped, \
                     so changes made to it since may be missing"
                .into(),
        }),
    }
}

/// Apply's side of a step, run when PostgreSQL is at `request.step.at`: the DDL in one
/// transaction, then the tables as apply sees them from now on.
pub(super) async fn run_step(
    client: &mut Client,
    ctx: &super::ApplyContext<'_>,
    request: &StepRequest,
) -> Result<Vec<ApplyTable>> {
    let source = ctx.config.require_source()?;
    let schema = &ctx.config.schema;
    let notes = apply_schema_step(client, schema, &request.step, source, ctx.fingerprint).await?;
    crate::fault::hit(crate::fault::SYNC_AFTER_SCHEMA_STEP);
    for note in &notes {
        tracing::warn!(table = %note.subject, note = %note.message, "PostgreSQL refused part of a table created during sync");
    }
    apply_tables(client, schema, &request.replicated).await
}

/// The plans of `table`'s columns from `before` on: types from the snapshot's ladder over the
/// values stored now, DEFAULT = the value SQLite gives every row that predates the column.
fn plan_added_columns(
    conn: &Connection,
    path: &Path,
    table: &Table,
    before: usize,
    config: &Config,
) -> Result<Vec<ColumnPlan>> {
    let added = Table {
        columns: table.columns[before..].to_vec(),
        ..table.clone()
    };
    let profile = profile_table(conn, path, &added, &config.columns, config.convert)?;
    let plan = plan_table(&added, &profile, false, true, config.convert)?;
    let existing: Vec<String> = table.columns[..before]
        .iter()
        .map(|c| target_name(&c.name, false))
        .collect();
    let refuse = |col: &Column, what: String| Error::SchemaChange {
        table: table.name.clone(),
        column: Some(col.name.clone()),
        change: what,
    };
    let mut out = Vec::with_capacity(plan.columns.len());
    for (mut c, col) in plan.columns.into_iter().zip(&added.columns) {
        if existing.contains(&c.target) {
            let what = format!(
                "it was added, but it becomes {:?} in PostgreSQL, which the table already has",
                c.target
            );
            return Err(refuse(col, what));
        }
        c.default_sql = None;
        if col.generated.is_some() && c.generated_sql.is_none() {
            let what = "a generated column was added whose expression is not translated for PostgreSQL, so its values in existing rows cannot be filled in".to_string();
            return Err(refuse(col, what));
        }
        if col.generated.is_none() {
            c.default_sql = stored_default(col, &c.ty, config).map_err(|what| refuse(col, what))?;
        }
        out.push(c);
    }
    Ok(out)
}

/// The DEFAULT of an added column as PostgreSQL SQL: the value SQLite gives rows that predate
/// the column (its DEFAULT with the column's affinity applied, evaluated by SQLite itself),
/// converted to the column's type. `None` when that value is NULL.
fn stored_default(
    col: &Column,
    ty: &PgType,
    config: &Config,
) -> std::result::Result<Option<String>, String> {
    let Some(default) = &col.default else {
        return Ok(None);
    };
    let value = evaluate_default(&col.declared_type, default)
        .map_err(|e| format!("its DEFAULT {default} cannot be evaluated: {e}"))?;
    if value == Value::Null {
        return Ok(None);
    }
    convert(ty, ValueRef::from(&value), config.convert)
        .map(|v| Some(sql_literal(&v, ty)))
        .map_err(|m| {
            format!(
                "it was added with DEFAULT {default}, which every existing row holds, but that value does not fit {}: {}",
                ty.sql(),
                m.reason
            )
        })
}

/// What SQLite stores for a column declared `declared DEFAULT default` when a row leaves it out.
fn evaluate_default(declared: &str, default: &str) -> rusqlite::Result<Value> {
    let conn = Connection::open_in_memory()?;
    conn.execute_batch(&format!(
        "CREATE TABLE d (c {declared} DEFAULT {default}); INSERT INTO d DEFAULT VALUES;"
    ))?;
    conn.query_row("SELECT c FROM d", [], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_what_sqlite_stores_with_the_column_affinity() {
        assert_eq!(
            evaluate_default("INTEGER", "'5'").unwrap(),
            Value::Integer(5)
        );
        assert_eq!(evaluate_default("REAL", "2").unwrap(), Value::Real(2.0));
        assert_eq!(
            evaluate_default("TEXT", "7").unwrap(),
            Value::Text("7".into())
        );
        assert_eq!(evaluate_default("", "NULL").unwrap(), Value::Null);
        assert_eq!(
            evaluate_default("BLOB", "x'00ff'").unwrap(),
            Value::Blob(vec![0, 255])
        );
    }
}
