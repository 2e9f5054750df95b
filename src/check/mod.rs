//! `sqlite2pg check`: every pre-migration fact in one report. The source (integrity, foreign
//! keys, journal mode, per-table row counts, key kinds and value profiles against the planned
//! PostgreSQL types), objects that will not migrate as-is, the foreign-key migration order, the
//! target's readiness and, on request, a verified backup. Findings carry a severity that decides
//! the exit code: errors 1, data needing attention 3.

mod render;
mod source_facts;

use serde::Serialize;

use crate::config::Config;
use crate::error::{Result, EXIT_ATTENTION, EXIT_ERROR, EXIT_OK};
use crate::source::backup::{verified_backup, BackupReport};
use crate::source::introspect::{read_schema, OtherObject, PrimaryKey, Schema, Table};
use crate::source::open_read_only;
use crate::source::order::{migration_order, MigrationOrder};
use crate::source::profile::{profile_table, TableProfile};
use crate::target::readiness::{inspect, TargetReport};

pub use render::render_text;
pub use source_facts::SourceFacts;

#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Take a verified backup into the state directory.
    pub backup: bool,
    /// Only these tables (all when `None`).
    pub tables: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    /// The data needs a decision before migrating (exit code 3).
    Attention,
    /// The migration cannot go ahead (exit code 1).
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// What it is about: `source`, `target`, a table, `table.column` or an object name.
    pub subject: String,
    pub message: String,
}

/// What will happen to a schema object that is not a plain table.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectPlan {
    #[serde(flatten)]
    pub object: OtherObject,
    pub action: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub name: String,
    pub rows: u64,
    pub primary_key: PrimaryKey,
    pub autoincrement: bool,
    pub strict: bool,
    pub foreign_keys: usize,
    pub indexes: usize,
    pub profile: TableProfile,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TargetSection {
    NotChecked { reason: String },
    Checked(TargetReport),
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub source: SourceFacts,
    pub tables: Vec<TableReport>,
    pub objects: Vec<ObjectPlan>,
    pub order: MigrationOrder,
    pub target: TargetSection,
    pub backup: Option<BackupReport>,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// 0 when ready, 3 when the data needs attention, 1 when the migration cannot go ahead.
    pub fn exit_code(&self) -> i32 {
        match self.findings.iter().map(|f| f.severity).max() {
            Some(Severity::Error) => EXIT_ERROR,
            Some(Severity::Attention) => EXIT_ATTENTION,
            _ => EXIT_OK,
        }
    }
}

/// Runs every check. Errors that stop the check itself (unreadable source, unreachable target)
/// are returned; everything else becomes a finding.
pub fn run_check(config: &Config, opts: &CheckOptions) -> Result<CheckReport> {
    let path = config.require_source()?.to_path_buf();
    let conn = open_read_only(&path)?;
    let schema = read_schema(&conn, &path).map_err(|e| match e {
        crate::Error::Source { source, .. } => crate::source::classify_open_error(&path, source),
        other => other,
    })?;
    let selected = select_tables(&schema, opts.tables.as_deref())?;
    let target = check_target(config, &selected)?;
    let source = SourceFacts::read(&conn, &path)?;
    let mut tables = Vec::new();
    for table in &selected {
        let profile = profile_table(&conn, &path, table, &config.columns, config.convert)?;
        tracing::info!(table = %table.name, rows = profile.rows, seconds = profile.seconds, "profiled");
        tables.push(TableReport {
            name: table.name.clone(),
            rows: profile.rows,
            primary_key: table.primary_key.clone(),
            autoincrement: table.autoincrement,
            strict: table.strict,
            foreign_keys: table.foreign_keys.len(),
            indexes: table.indexes.len(),
            profile,
        });
    }
    let backup = if opts.backup {
        let dir = config.ensure_state_dir()?;
        Some(verified_backup(&conn, &path, &dir)?)
    } else {
        None
    };
    let order = migration_order(&schema);
    let objects = schema.others.iter().map(plan_object).collect();
    let mut report = CheckReport {
        source,
        tables,
        objects,
        order,
        target,
        backup,
        findings: Vec::new(),
    };
    report.findings = findings(&report);
    Ok(report)
}

fn select_tables(schema: &Schema, names: Option<&[String]>) -> Result<Vec<Table>> {
    let Some(names) = names else {
        return Ok(schema.tables.clone());
    };
    names
        .iter()
        .map(|n| {
            schema
                .table(n)
                .cloned()
                .ok_or_else(|| crate::Error::Config {
                    field: "--tables".into(),
                    reason: format!(
                        "no table {n:?} in the source (tables: {})",
                        schema
                            .tables
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })
        })
        .collect()
}

fn check_target(config: &Config, tables: &[Table]) -> Result<TargetSection> {
    let Some(url) = &config.target else {
        return Ok(TargetSection::NotChecked {
            reason: "no --target given (or SQLITE2PG_TARGET / DATABASE_URL)".into(),
        });
    };
    let names: Vec<String> = tables.iter().map(|t| t.name.to_lowercase()).collect();
    let runtime = crate::target::connect::client_runtime()?;
    let report = runtime.block_on(inspect(url, &config.schema, &names))?;
    Ok(TargetSection::Checked(report))
}

fn plan_object(o: &OtherObject) -> ObjectPlan {
    let sql = o.sql.to_ascii_lowercase();
    let action = match o.kind {
        "view" => {
            "recreated after the load if its SQL is valid in PostgreSQL, else reported".to_string()
        }
        "trigger" => "not migrated: port it to a PL/pgSQL trigger function by hand".to_string(),
        "virtual table" if sql.contains("using fts") => {
            "not migrated: use a tsvector column with a GIN index".to_string()
        }
        "virtual table" if sql.contains("using rtree") => {
            "not migrated: use PostGIS or a GiST index on the geometry".to_string()
        }
        "virtual table" => "not migrated: its rows are computed by a SQLite module".to_string(),
        "shadow table" => format!(
            "skipped: storage of virtual table {}",
            o.table.as_deref().unwrap_or("?")
        ),
        other => format!("not migrated ({other})"),
    };
    ObjectPlan {
        object: o.clone(),
        action,
    }
}

fn findings(report: &CheckReport) -> Vec<Finding> {
    let mut out = report.source.findings();
    for t in &report.tables {
        if t.primary_key == PrimaryKey::None {
            out.push(Finding {
                severity: Severity::Attention,
                subject: t.name.clone(),
                message:
                    "no primary key: rows are identified only by rowid, which VACUUM may renumber; \
                          snapshot copies it, but sync refuses it unless you add a key"
                        .into(),
            });
        }
        for c in &t.profile.columns {
            if c.misfits > 0 {
                out.push(Finding {
                    severity: Severity::Attention,
                    subject: format!("{}.{}", t.name, c.name),
                    message: format!(
                        "{} value(s) cannot become {} and their rows would be quarantined (e.g. key {}: {})",
                        c.misfits,
                        c.planned.sql(),
                        c.examples.first().map(|e| e.key.to_string()).unwrap_or_default(),
                        c.examples.first().map(|e| e.reason.as_str()).unwrap_or_default()
                    ),
                });
            } else if c.declared_misfits > 0 {
                out.push(Finding {
                    severity: Severity::Warning,
                    subject: format!("{}.{}", t.name, c.name),
                    message: format!(
                        "declared {:?} but planned as {}: {}",
                        c.declared_type,
                        c.planned.sql(),
                        c.reason
                    ),
                });
            }
        }
    }
    for cycle in &report.order.cycles {
        out.push(Finding {
            severity: Severity::Warning,
            subject: cycle.join(", "),
            message: "foreign keys form a cycle: sqlite2pg creates foreign keys after the load, so the copy \
                      works, but the application must insert these tables in one transaction"
                .into(),
        });
    }
    for (child, parent) in &report.order.dangling {
        out.push(Finding {
            severity: Severity::Attention,
            subject: child.clone(),
            message: format!("has a foreign key to {parent:?}, which does not exist; PostgreSQL cannot create it"),
        });
    }
    for kind in ["trigger", "virtual table"] {
        let names: Vec<&str> = report
            .objects
            .iter()
            .filter(|o| o.object.kind == kind)
            .map(|o| o.object.name.as_str())
            .collect();
        if !names.is_empty() {
            out.push(Finding {
                severity: Severity::Warning,
                subject: "source".into(),
                message: format!(
                    "{} {kind}(s) will not be migrated ({}{}): see OBJECTS for what to use instead",
                    names.len(),
                    names.iter().take(5).copied().collect::<Vec<_>>().join(", "),
                    if names.len() > 5 { ", …" } else { "" }
                ),
            });
        }
    }
    if let TargetSection::Checked(t) = &report.target {
        for p in t.problems() {
            out.push(Finding {
                severity: Severity::Error,
                subject: "target".into(),
                message: p,
            });
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}
