//! `sqlite2pg diff`: compares every selected table and assembles the report. Tables run one after
//! another, each with both sides read in parallel; the report lists at most `max_differences`
//! rows in all and says when it is partial.

use std::time::Instant;

use super::baseline::{signature, Baselines, TableBaseline};
use super::canonical::HASH_VERSION;
use super::changed::ChangedRead;
use super::compare::{diff_table, parse_key_ranges, quarantined_keys, selected, TableScope};
use super::report::{DiffReport, SourcePosition, TableDiff};
use crate::changelog::ChangeLog;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::source::introspect::read_schema;
use crate::source::open_read_only;
use crate::target::mapping::map_table;

/// Version of the JSON report's schema; bumped only when a field changes meaning.
pub const REPORT_VERSION: u32 = 1;

/// Rows listed when `--max-differences` is not given: enough to see a pattern, small enough
/// to read.
pub const DEFAULT_MAX_DIFFERENCES: usize = 100;

#[derive(Debug, Clone)]
pub struct DiffOptions {
    pub tables: Option<Vec<String>>,
    pub keep_case: bool,
    pub max_differences: usize,
    pub sample: Option<f64>,
    /// `table=lo..hi` ranges of single integer keys.
    pub key_ranges: Vec<String>,
    /// Compare only the rows changed since each table's baseline, where one counts (see
    /// `diff::changed`); every row of the other tables.
    pub changed: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            tables: None,
            keep_case: false,
            max_differences: DEFAULT_MAX_DIFFERENCES,
            sample: None,
            key_ranges: Vec::new(),
            changed: false,
        }
    }
}

pub fn run_diff(config: &Config, opts: &DiffOptions) -> Result<DiffReport> {
    run_diff_with_log(config, opts, None)
}

/// [`run_diff`] with the change log already open in this process (cutover holds it), for
/// `changed`.
pub fn run_diff_with_log(
    config: &Config,
    opts: &DiffOptions,
    log: Option<&dyn ChangeLog>,
) -> Result<DiffReport> {
    let started = Instant::now();
    if let Some(p) = opts.sample {
        if !(p > 0.0 && p <= 1.0) {
            return Err(Error::Config {
                field: "--sample".into(),
                reason: format!("{p} is not a fraction in (0, 1]"),
            });
        }
    }
    let ranges = parse_key_ranges(&opts.key_ranges)?;
    if opts.changed && (opts.sample.is_some() || !ranges.is_empty()) {
        return Err(Error::Config {
            field: "--changed".into(),
            reason: "compares the changed rows of whole tables: it does not combine with \
                     --sample or --key-range"
                .into(),
        });
    }
    let path = config.require_source()?.to_path_buf();
    let url = config.require_target()?;
    let conn = open_read_only(&path)?;
    let schema = read_schema(&conn, &path)?;
    drop(conn);
    let runtime = crate::target::connect::client_runtime()?;
    let mut client = runtime.block_on(url.connect())?;
    let state_dir = config.state_dir().ok();
    let mut baselines = state_dir
        .as_deref()
        .map(Baselines::load)
        .unwrap_or_default();
    let snapshot = snapshot_fingerprint(config);
    let changed = if opts.changed {
        Some(ChangedRead::open(config, log)?)
    } else {
        None
    };
    let mut tables = Vec::new();
    let mut budget = opts.max_differences;
    for table in selected(&schema, opts.tables.as_deref())? {
        let mut diff =
            match runtime.block_on(map_table(&client, &config.schema, table, opts.keep_case))? {
                None => {
                    let mut d = TableDiff::new(
                        &table.name,
                        "",
                        vec!["the table does not exist in the target".into()],
                    );
                    d.finish();
                    d
                }
                Some(map) if map.key.is_empty() => {
                    let mut d = TableDiff::new(&table.name, &map.target, map.problems.clone());
                    d.finish();
                    d
                }
                Some(map) => {
                    let quarantined = runtime.block_on(quarantined_keys(&client, &table.name))?;
                    let signature = signature(&map, config.convert, snapshot.as_deref());
                    let base = baselines.get(&table.name, &signature);
                    let by_changes = match (&changed, base) {
                        (Some(read), Some(base)) => read.diff_table(
                            &runtime,
                            &mut client,
                            config,
                            table,
                            &map,
                            base,
                            &quarantined,
                            budget,
                        )?,
                        (Some(_), None) => Err("no diff found it identical yet (its baseline)"),
                        (None, _) => Err(""),
                    };
                    let diff = match by_changes {
                        Ok(d) => d,
                        Err(why) => {
                            if changed.is_some() {
                                tracing::info!(table = %table.name, "comparing every row: {why}");
                            }
                            let scope = TableScope {
                                range: ranges.get(&table.name.to_lowercase()).copied(),
                                sample: opts.sample,
                                max_differences: budget,
                            };
                            let mut d = diff_table(config, table, &map, &quarantined, &scope)?;
                            d.mode = match (scope.range, scope.sample) {
                                (Some(_), _) => "key_range",
                                (None, Some(_)) => "sample",
                                (None, None) => "full",
                            };
                            d
                        }
                    };
                    keep_baseline(&mut baselines, changed.as_ref(), &diff, signature)?;
                    diff
                }
            };
        budget = budget.saturating_sub(diff.differences.len());
        tracing::info!(table = %diff.table, rows = diff.source_rows, seconds = diff.seconds, verdict = diff.verdict, mode = diff.mode, "compared");
        diff.finish();
        tables.push(diff);
    }
    if let Ok(dir) = config.ensure_state_dir() {
        baselines.save(&dir)?;
    }
    assemble(config, opts, tables, started)
}

/// The identity of the snapshot this state directory took, if any (its backup's blake3, or its
/// run id when it read the live source): a new snapshot makes every baseline of the old one
/// meaningless.
fn snapshot_fingerprint(config: &Config) -> Option<String> {
    let dir = config.state_dir().ok()?;
    let record = crate::snapshot::read_snapshot_record(&dir).ok()??;
    Some(record.identity().to_string())
}

/// Updates `table`'s baseline from a comparison: an identical whole-table comparison at a known
/// change seq becomes the baseline (and, for a `changed` one, the change log forgets the keys it
/// covered); any other whole-table comparison that differs removes it; a sample or key range
/// leaves it.
fn keep_baseline(
    baselines: &mut Baselines,
    changed: Option<&ChangedRead>,
    diff: &TableDiff,
    signature: String,
) -> Result<()> {
    if diff.mode != "full" && diff.mode != "changed" {
        return Ok(());
    }
    let Some(source_seq) = diff.source_seq.filter(|_| diff.is_identical()) else {
        baselines.forget(&diff.table);
        return Ok(());
    };
    baselines.set(TableBaseline {
        table: diff.table.clone(),
        signature,
        source_seq,
        generated_at: chrono::Utc::now().to_rfc3339(),
        source_rows: diff.source_rows,
        target_rows: diff.target_rows,
        buckets: diff.source_buckets.clone(),
    });
    match changed {
        Some(read) if diff.mode == "changed" => read.forget_through_read(&diff.table),
        _ => Ok(()),
    }
}

fn assemble(
    config: &Config,
    opts: &DiffOptions,
    mut tables: Vec<TableDiff>,
    started: Instant,
) -> Result<DiffReport> {
    let path = config.require_source()?;
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        op: "stat",
        path: path.to_path_buf(),
        source,
    })?;
    let snapshot_fingerprint = snapshot_fingerprint(config);
    let mut fp = blake3::Hasher::new_derive_key(HASH_VERSION);
    for t in &tables {
        fp.update(t.table.as_bytes());
        fp.update(t.source_fingerprint.as_bytes());
    }
    let differences: Vec<_> = tables
        .iter_mut()
        .flat_map(|t| std::mem::take(&mut t.differences))
        .collect();
    let partial = tables.iter().any(|t| t.dropped_differences > 0);
    Ok(DiffReport {
        report_version: REPORT_VERSION,
        hash_version: HASH_VERSION,
        generated_at: chrono::Utc::now().to_rfc3339(),
        source: SourcePosition {
            path: path.display().to_string(),
            bytes: meta.len(),
            modified_at: meta
                .modified()
                .ok()
                .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()),
            snapshot_fingerprint,
        },
        target: config.require_target()?.redacted(),
        schema: config.schema.clone(),
        sample: opts.sample,
        identical: tables.iter().all(TableDiff::is_identical),
        fingerprint: fp.finalize().to_hex().to_string(),
        tables,
        partial,
        max_differences: opts.max_differences,
        differences,
        seconds: started.elapsed().as_secs_f64(),
    })
}
