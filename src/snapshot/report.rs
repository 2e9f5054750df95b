//! The snapshot's summary: per table rows, quarantined rows, seconds and MB/s (like pgloader's
//! table, so users can compare), notes on what was not translated, foreign-key violations by key,
//! and with `--validate` a per-table count comparison. Written as JSON to the state directory and
//! rendered for the terminal.

use std::fmt::Write;
use std::time::Instant;

use serde::Serialize;
use tokio_postgres::Client;

use super::copy::CopyOutcome;
use super::plan::TablePlan;
use super::post_load::{Note, PostLoad};
use super::state_file::SnapshotSource;
use super::SnapshotOptions;
use crate::config::Config;
use crate::error::{Error, Result, EXIT_ATTENTION, EXIT_OK};
use crate::target::ddl::qualified;

const TABLE_TOTALS: &str = "SELECT rows, quarantined FROM sqlite2pg.snapshot_tables WHERE target_schema = $1 AND target_table = $2";

#[derive(Debug, Clone, Serialize)]
pub struct TableSummary {
    pub table: String,
    pub target: String,
    pub source_rows: u64,
    pub rows: u64,
    pub quarantined: u64,
    /// Time spent copying in this run (0 when a previous run copied it).
    pub seconds: f64,
    pub megabytes: f64,
    /// Rows in the target table, counted after the load (with `--validate`).
    pub target_rows: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    pub source_fingerprint: String,
    pub snapshot_file: String,
    pub tables: Vec<TableSummary>,
    pub post_load: PostLoad,
    pub load_seconds: f64,
    pub total_seconds: f64,
    pub validated: bool,
    pub report_path: String,
    /// With `--validate`: the row-by-row diff of the snapshot file against the target.
    pub diff: Option<crate::diff::DiffReport>,
}

impl SnapshotReport {
    pub fn quarantined(&self) -> u64 {
        self.tables.iter().map(|t| t.quarantined).sum()
    }

    /// Tables whose target row count differs from source rows minus quarantined rows.
    pub fn count_mismatches(&self) -> Vec<&TableSummary> {
        self.tables
            .iter()
            .filter(|t| {
                t.target_rows
                    .is_some_and(|n| n + t.quarantined != t.source_rows)
            })
            .collect()
    }

    /// 0 when everything arrived; 3 when rows were quarantined, foreign keys are violated or
    /// counts differ.
    pub fn exit_code(&self) -> i32 {
        if self.quarantined() > 0
            || !self.post_load.fk_violations.is_empty()
            || !self.count_mismatches().is_empty()
        {
            EXIT_ATTENTION
        } else {
            EXIT_OK
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn build(
    client: &Client,
    config: &Config,
    opts: &SnapshotOptions,
    source: &SnapshotSource,
    plans: &[TablePlan],
    outcomes: &[CopyOutcome],
    mut post_load: PostLoad,
    load_seconds: f64,
    started: Instant,
) -> Result<SnapshotReport> {
    let plan_notes = plans.iter().flat_map(|p| {
        p.notes.iter().map(|n| Note {
            subject: p.source.clone(),
            message: n.clone(),
        })
    });
    post_load.notes.splice(0..0, plan_notes);
    let mut tables = Vec::new();
    for plan in plans {
        let err = |op| {
            let table = Some(plan.source.clone());
            move |source| Error::Target { op, table, source }
        };
        let totals = client
            .query_one(TABLE_TOTALS, &[&config.schema, &plan.target])
            .await
            .map_err(err("read snapshot totals"))?;
        let mine = outcomes.iter().filter(|o| o.table == plan.source);
        let (seconds, bytes) =
            mine.fold((0.0f64, 0u64), |(s, b), o| (s.max(o.seconds), b + o.bytes));
        let target_rows = if opts.validate {
            let sql = format!(
                "SELECT count(*) FROM {}",
                qualified(&config.schema, &plan.target)
            );
            let n: i64 = client
                .query_one(&sql, &[])
                .await
                .map_err(err("count target rows"))?
                .get(0);
            Some(n as u64)
        } else {
            None
        };
        tables.push(TableSummary {
            table: plan.source.clone(),
            target: plan.target.clone(),
            source_rows: plan.rows,
            rows: totals.get::<_, i64>(0) as u64,
            quarantined: totals.get::<_, i64>(1) as u64,
            seconds,
            megabytes: bytes as f64 / 1_000_000.0,
            target_rows,
        });
    }
    Ok(SnapshotReport {
        source_fingerprint: source.identity().to_string(),
        snapshot_file: source.file.display().to_string(),
        tables,
        post_load,
        load_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        validated: opts.validate,
        report_path: source.report_path().display().to_string(),
        diff: None,
    })
}

/// The terminal summary: one line per table, then totals, notes, violations and the verdict.
pub fn render_summary(r: &SnapshotReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:>12} {:>11} {:>9} {:>9}",
        "table", "rows", "quarantined", "seconds", "MB/s"
    );
    for t in &r.tables {
        let mbps = if t.seconds > 0.0 {
            t.megabytes / t.seconds
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "{:<32} {:>12} {:>11} {:>9.2} {:>9.1}",
            t.table, t.rows, t.quarantined, t.seconds, mbps
        );
    }
    let rows: u64 = r.tables.iter().map(|t| t.rows).sum();
    let _ = writeln!(
        out,
        "{:<32} {:>12} {:>11} {:>9.2}",
        "total",
        rows,
        r.quarantined(),
        r.total_seconds
    );
    let _ = writeln!(
        out,
        "\nload {:.2} s; {} indexes, {} views created",
        r.load_seconds,
        r.post_load.indexes_created,
        r.post_load.views_created.len()
    );
    if r.quarantined() > 0 {
        let _ = writeln!(out, "{} row(s) quarantined: SELECT * FROM sqlite2pg.quarantine shows table, key, column, value and reason", r.quarantined());
    }
    for v in &r.post_load.fk_violations {
        let keys: Vec<String> = v.keys.iter().map(|k| k.to_string()).collect();
        let _ = writeln!(
            out,
            "foreign key {} of {} → {}: {} row(s) point nowhere (e.g. {}); it stays NOT VALID",
            v.constraint,
            v.table,
            v.parent,
            v.count,
            keys.join(", ")
        );
    }
    for n in &r.post_load.notes {
        let _ = writeln!(out, "note: {}: {}", n.subject, n.message);
    }
    if r.validated {
        let bad = r.count_mismatches();
        if bad.is_empty() {
            let _ = writeln!(
                out,
                "validate: every table holds source rows minus quarantined rows"
            );
        }
        for t in bad {
            let _ = writeln!(
                out,
                "validate: {} holds {} rows, expected {} - {} quarantined",
                t.table,
                t.target_rows.unwrap_or(0),
                t.source_rows,
                t.quarantined
            );
        }
    }
    if let Some(d) = &r.diff {
        let _ = writeln!(
            out,
            "\nvalidate --- row-by-row diff of the snapshot against PostgreSQL"
        );
        out.push_str(&crate::diff::render_text(d));
    }
    let _ = writeln!(out, "report: {}", r.report_path);
    out
}
