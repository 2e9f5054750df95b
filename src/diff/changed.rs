//! `diff --changed`: compares, per table, only the rows whose key changed since the table's
//! baseline (see `baseline`), so a sign-off diff after sync costs time in proportion to the
//! changes, not the table. The changed keys come from the change log (`ChangeLog::changed_keys`,
//! kept by capture) and, for changes no capture has consumed yet, from the source's change table.
//!
//! Each changed key is compared exactly as sync's continuous verification compares it
//! (`target::verify`): the SQLite row of that key, read in one read transaction for every table
//! and converted with the column plan, against the PostgreSQL row of that key, by canonical row
//! hash. Row counts of both sides are compared too, so a row that sync never touched but someone
//! else inserted or deleted in PostgreSQL does not go unseen (PostgreSQL may lack up to one row
//! per quarantined key, as cutover allows).
//!
//! What this trusts, and says so: rows outside the changed keys were identical at the baseline,
//! and only sync has changed PostgreSQL's rows since (a full `diff` trusts nothing).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use rusqlite::Connection;
use tokio::runtime::Runtime;
use tokio_postgres::Client;

use super::baseline::TableBaseline;
use super::compare::counts_agree;
use super::report::{ChangedSince, DiffKind, Difference, TableDiff};
use crate::change::{Change, RawValue};
use crate::changelog::{ChangeLog, SledChangeLog};
use crate::config::Config;
use crate::convert::render;
use crate::error::{Error, Result};
use crate::source::capture::{logged_keys_after, visible_seq, ImageLookup};
use crate::source::introspect::{row_count, Table};
use crate::source::open_read_only;
use crate::target::apply::ApplyTable;
use crate::target::ddl::qualified;
use crate::target::mapping::TableMap;
use crate::target::verify::{verify_changes, MAX_KEYS_PER_READ};

/// Above this fraction of a table's rows (at its baseline) changed, the table is compared whole:
/// each changed key costs a lookup on both sides, several times what a row of a full comparison
/// costs (measured at scale 0.1: about 40 µs against 3 µs), and PostgreSQL reads a large share of
/// scattered keys by scanning the table anyway.
pub const WHOLE_TABLE_FRACTION: f64 = 0.05;

/// What every table's `changed` comparison shares: one SQLite read transaction, the change seq it
/// sees, the change log, and the keys of changes still in the source's change table.
pub struct ChangedRead<'a> {
    /// The source database, and the read transaction on it.
    path: PathBuf,
    conn: Connection,
    /// The change seq the read sees.
    pub source_seq: u64,
    log: Option<Log<'a>>,
    /// Keys logged in SQLite after the change log's last boundary, per table.
    pending: HashMap<String, Vec<Vec<RawValue>>>,
}

/// The change log: opened here, or the caller's (cutover holds it open while frozen).
enum Log<'a> {
    Own(Box<SledChangeLog>),
    Borrowed(&'a dyn ChangeLog),
}

impl Log<'_> {
    fn get(&self) -> &dyn ChangeLog {
        match self {
            Log::Own(log) => log.as_ref(),
            Log::Borrowed(log) => *log,
        }
    }
}

impl<'a> ChangedRead<'a> {
    /// Opens the SQLite read, and the change log unless `log` is given (when sync ever ran from
    /// this state directory). Fails when a running sync holds the change log, or change capture
    /// is not installed.
    pub fn open(config: &Config, log: Option<&'a dyn ChangeLog>) -> Result<ChangedRead<'a>> {
        let path = config.require_source()?;
        let dir = config.state_dir()?.join("changelog");
        let log = if let Some(log) = log {
            Some(Log::Borrowed(log))
        } else if dir.exists() {
            Some(Log::Own(Box::new(SledChangeLog::open(&dir).map_err(
                |e| Error::Config {
                    field: "--changed".into(),
                    reason: format!(
                    "the change log {} cannot be opened ({e}); a running sync or cutover holds \
                     it: stop sync first, or run a full diff",
                    dir.display()
                ),
                },
            )?)))
        } else {
            None
        };
        let conn = open_read_only(path)?;
        conn.execute_batch("BEGIN")
            .map_err(|source| Error::Source {
                op: "begin the diff read",
                path: path.to_path_buf(),
                table: None,
                source,
            })?;
        let source_seq = visible_seq(&conn)?.ok_or_else(|| Error::Config {
            field: "--changed".into(),
            reason: format!(
                "change capture is not installed in {}: without it no change is logged, so only \
                 a full diff can compare",
                path.display()
            ),
        })?;
        let captured = match &log {
            Some(log) => log.get().last_boundary()?.map_or(0, |b| b.end_seq),
            None => 0,
        };
        let mut pending: HashMap<String, Vec<Vec<RawValue>>> = HashMap::new();
        for (table, key) in logged_keys_after(&conn, captured)? {
            pending.entry(table).or_default().push(key);
        }
        Ok(ChangedRead {
            path: path.to_path_buf(),
            conn,
            source_seq,
            log,
            pending,
        })
    }

    /// Compares the rows of `table` changed since `baseline`; `Err(why)` inside `Ok` when the
    /// whole table should be compared instead: the change log cannot vouch for every key changed
    /// since (it was started, or its keys forgotten, after the baseline), or so many keys changed
    /// that reading them one by one would cost more than reading the table (see
    /// [`WHOLE_TABLE_FRACTION`]).
    #[allow(clippy::too_many_arguments)]
    pub fn diff_table(
        &self,
        runtime: &Runtime,
        client: &mut Client,
        config: &Config,
        table: &Table,
        map: &TableMap,
        baseline: &TableBaseline,
        quarantined: &HashSet<String>,
        max_differences: usize,
    ) -> Result<std::result::Result<TableDiff, &'static str>> {
        let started = std::time::Instant::now();
        // Keys still in SQLite's change table first (distinct); the log's keys skip those.
        let pending = self.pending.get(&table.name).map_or(&[][..], Vec::as_slice);
        let seen: HashSet<String> = pending.iter().map(|k| format!("{k:?}")).collect();
        let mut keys = seen.len() as u64;
        if let Some(log) = &self.log {
            match log
                .get()
                .changed_key_count(&table.name, baseline.source_seq)?
            {
                Some(n) => keys += n,
                None => {
                    return Ok(Err(
                        "the change log cannot vouch for every key changed since its baseline",
                    ))
                }
            }
        }
        if keys as f64 > baseline.source_rows.max(1) as f64 * WHOLE_TABLE_FRACTION {
            return Ok(Err(
                "so many of its rows changed that reading the whole table costs less",
            ));
        }
        let mut diff = TableDiff::new(&table.name, &map.target, map.problems.clone());
        diff.mode = "changed";
        diff.source_seq = Some(self.source_seq);
        let lookup = ImageLookup::new(table)?;
        let apply = [runtime.block_on(ApplyTable::load(client, &config.schema, map.clone()))?];
        let mut check = Checker {
            conn: &self.conn,
            runtime,
            client,
            config,
            lookup: &lookup,
            apply: &apply,
            diff: &mut diff,
            max_differences,
            chunk: Vec::with_capacity(MAX_KEYS_PER_READ),
            checked: 0,
        };
        // Distinct already (`logged_keys_after` reads them with SELECT DISTINCT).
        for key in pending {
            check.push(key.clone())?;
        }
        if let Some(log) = &self.log {
            log.get()
                .changed_keys(&table.name, baseline.source_seq, &mut |key, _| {
                    if seen.is_empty() || !seen.contains(&format!("{key:?}")) {
                        check.push(key)?;
                    }
                    Ok(())
                })?;
        }
        check.flush()?;
        let checked = check.checked;
        let (source_rows, target_rows) = self.counts(runtime, client, config, map)?;
        diff.source_rows = source_rows;
        diff.target_rows = target_rows;
        diff.identical = checked - (diff.modified + diff.missing + diff.extra);
        let q = quarantined.len() as u64;
        if !counts_agree(source_rows, target_rows, q) {
            diff.problems.push(format!(
                "SQLite has {source_rows} rows and PostgreSQL {target_rows}, with {q} key(s) \
                 quarantined: a row no change touched differs (did something other than sync \
                 write PostgreSQL?); run a full diff to find it"
            ));
        }
        diff.changed_since = Some(ChangedSince {
            baseline_at: baseline.generated_at.clone(),
            baseline_seq: baseline.source_seq,
            checked_rows: checked,
        });
        diff.seconds = started.elapsed().as_secs_f64();
        diff.finish();
        Ok(Ok(diff))
    }

    /// Forgets the change log's keys of `table` up to the read's seq: a new baseline is there.
    pub fn forget_through_read(&self, table: &str) -> Result<()> {
        match &self.log {
            Some(log) => log.get().forget_changed_keys(table, self.source_seq),
            None => Ok(()),
        }
    }

    fn counts(
        &self,
        runtime: &Runtime,
        client: &Client,
        config: &Config,
        map: &TableMap,
    ) -> Result<(u64, u64)> {
        let source = row_count(&self.conn, &map.source).map_err(|source| Error::Source {
            op: "count rows",
            path: self.path.clone(),
            table: Some(map.source.clone()),
            source,
        })?;
        let sql = format!(
            "SELECT count(*) FROM {}",
            qualified(&config.schema, &map.target)
        );
        let target: i64 = runtime
            .block_on(client.query_one(&sql, &[]))
            .map_err(|source| Error::Target {
                op: "count rows",
                table: Some(map.source.clone()),
                source,
            })?
            .get(0);
        Ok((source, target as u64))
    }
}

/// Compares changed keys a chunk at a time: memory stays bounded however many keys changed.
struct Checker<'a> {
    conn: &'a Connection,
    runtime: &'a Runtime,
    client: &'a mut Client,
    config: &'a Config,
    lookup: &'a ImageLookup,
    apply: &'a [ApplyTable],
    diff: &'a mut TableDiff,
    max_differences: usize,
    chunk: Vec<Change>,
    checked: u64,
}

impl Checker<'_> {
    fn push(&mut self, key: Vec<RawValue>) -> Result<()> {
        let image = self.lookup.image(self.conn, &key)?;
        self.chunk.push(Change {
            seq: 0,
            table: self.diff.table.clone(),
            key,
            image,
        });
        if self.chunk.len() >= MAX_KEYS_PER_READ {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let mismatches = self.runtime.block_on(verify_changes(
            self.client,
            &self.config.schema,
            self.apply,
            &self.chunk,
            self.config.convert,
        ))?;
        self.checked += self.chunk.len() as u64;
        self.chunk.clear();
        for m in mismatches {
            match m.kind {
                DiffKind::Missing => self.diff.missing += 1,
                DiffKind::Extra => self.diff.extra += 1,
                DiffKind::Modified => self.diff.modified += 1,
            }
            self.diff.keep(self.max_differences, || Difference {
                table: m.table.clone(),
                kind: m.kind,
                key: m.key.iter().map(|v| render(v.as_ref())).collect(),
                columns: Vec::new(),
                note: Some(m.detail.clone()),
            });
        }
        Ok(())
    }
}
