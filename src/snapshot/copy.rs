//! The bulk copy: jobs (a whole table, or one rowid range of a large one) run on `--jobs` worker
//! threads, each with its own SQLite connection to the consistent snapshot file and its own
//! PostgreSQL connection. A job reads rows, converts every value with the column's plan, streams
//! them through `COPY … FROM STDIN (FORMAT binary)`, and commits the rows, the quarantined values
//! and the range's completion record in one transaction — so after a crash a range is either
//! wholly there and recorded, or absent and redone (promises 2 and 3 for the snapshot).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::SinkExt;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::plan::TablePlan;
use crate::convert::{convert, jsonb_text_fits, render, storage_class, ConvertOptions, PgType};
use crate::error::{Error, Result};
use crate::source::profile::row_key;
use crate::source::quote_ident;
use crate::target::connect::TargetUrl;
use crate::target::copy_binary::CopyEncoder;
use crate::target::ddl::copy_in;
use crate::target::state::{quarantine, range_done, QuarantinedValue};

/// Bytes buffered before a chunk goes to PostgreSQL: large enough to amortise the send, small
/// enough that memory stays flat whatever the table size.
const CHUNK_BYTES: usize = 1 << 20;

/// One unit of work: a table, or the rowids `[start, end]` of a table.
#[derive(Debug, Clone)]
pub struct CopyJob {
    pub plan: Arc<TablePlan>,
    /// Inclusive rowid range; `None` copies the whole table.
    pub range: Option<(i64, i64)>,
    /// Rows copied so far, for progress.
    pub progress: Arc<AtomicU64>,
}

impl CopyJob {
    /// The key the job's completion is recorded under.
    pub fn range_start(&self) -> i64 {
        self.range.map_or(i64::MIN, |r| r.0)
    }
}

#[derive(Debug, Clone)]
pub struct CopyOutcome {
    pub table: String,
    pub rows: u64,
    pub quarantined: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// The SQLite connections the workers read with. For a backup, each worker opens its own; for
/// the live source, the connections of the snapshot's read view (see
/// [`crate::source::view`]), handed out and given back, since a connection opened later would
/// read a later state.
#[derive(Debug)]
pub struct Readers {
    file: PathBuf,
    /// `Some` for a read view: its connections not in use.
    view: Option<std::sync::Mutex<Vec<Connection>>>,
}

impl Readers {
    pub fn of_file(file: PathBuf) -> Self {
        Readers { file, view: None }
    }

    pub fn of_view(file: PathBuf, conns: Vec<Connection>) -> Self {
        Readers {
            file,
            view: Some(std::sync::Mutex::new(conns)),
        }
    }

    /// The read view's connections not in use; `None` for a backup.
    fn idle(&self) -> Option<std::sync::MutexGuard<'_, Vec<Connection>>> {
        let view = self.view.as_ref()?;
        Some(view.lock().expect("the readers' lock is not poisoned"))
    }

    fn take(&self) -> Result<Connection> {
        let Some(mut idle) = self.idle() else {
            return open_snapshot(&self.file);
        };
        idle.pop().ok_or_else(|| Error::Config {
            field: "--jobs".into(),
            reason: "more copy workers than connections in the snapshot's read view".into(),
        })
    }

    fn give_back(&self, conn: Connection) {
        if let Some(mut idle) = self.idle() {
            idle.push(conn);
        }
    }

    /// Ends the read view's transactions (the copy is done): the application's checkpoints can
    /// go past it again.
    pub fn close(&self) {
        if let Some(mut idle) = self.idle() {
            idle.clear();
        }
    }
}

/// Settings shared by every worker.
#[derive(Debug, Clone)]
pub struct CopySettings {
    pub snapshot_file: PathBuf,
    pub readers: Arc<Readers>,
    pub target: TargetUrl,
    pub schema: String,
    pub batch_rows: usize,
    pub convert: ConvertOptions,
}

/// Runs `jobs` on `workers` threads; returns every outcome, or the first error (the other
/// workers finish their current job and stop).
pub fn run_jobs(
    settings: &CopySettings,
    jobs: Vec<CopyJob>,
    workers: usize,
) -> Result<Vec<CopyOutcome>> {
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<CopyJob>();
    for job in jobs {
        job_tx.send(job).expect("the receiver is alive");
    }
    drop(job_tx);
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                let rx = job_rx.clone();
                let failed = failed.clone();
                scope.spawn(move || worker(settings, rx, &failed))
            })
            .collect();
        let mut outcomes = Vec::new();
        let mut first_error = None;
        for h in handles {
            match h.join().expect("a copy worker panicked") {
                Ok(mut o) => outcomes.append(&mut o),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        first_error.map_or(Ok(outcomes), Err)
    })
}

fn worker(
    settings: &CopySettings,
    jobs: crossbeam_channel::Receiver<CopyJob>,
    failed: &std::sync::atomic::AtomicBool,
) -> Result<Vec<CopyOutcome>> {
    let runtime = crate::target::connect::client_runtime()?;
    let sqlite = settings.readers.take()?;
    let mut client = runtime.block_on(settings.target.connect())?;
    let mut outcomes = Vec::new();
    while let Ok(job) = jobs.recv() {
        if failed.load(Ordering::Relaxed) {
            break;
        }
        match runtime.block_on(copy_job(&sqlite, &mut client, settings, &job)) {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    settings.readers.give_back(sqlite);
    Ok(outcomes)
}

/// Opens the snapshot file read-only for one worker.
pub fn open_snapshot(path: &Path) -> Result<Connection> {
    crate::source::open_with(path, OpenFlags::SQLITE_OPEN_READ_ONLY, "open the snapshot")
}

/// The SELECT of a job: key expressions, the rowid when it becomes the key, then copied columns.
fn select_sql(job: &CopyJob) -> String {
    let plan = &job.plan;
    let mut exprs: Vec<String> = plan
        .source_key
        .iter()
        .map(|k| {
            if k == "rowid" {
                k.clone()
            } else {
                quote_ident(k)
            }
        })
        .collect();
    if plan.rowid_fallback {
        exprs.push("rowid".into());
    }
    exprs.extend(plan.copied().map(|c| quote_ident(&c.source)));
    let range = if job.range.is_some() {
        " WHERE rowid BETWEEN ?1 AND ?2"
    } else {
        ""
    };
    format!(
        "SELECT {} FROM {}{range}",
        exprs.join(", "),
        quote_ident(&plan.source)
    )
}

async fn copy_job(
    sqlite: &Connection,
    client: &mut tokio_postgres::Client,
    settings: &CopySettings,
    job: &CopyJob,
) -> Result<CopyOutcome> {
    let started = Instant::now();
    let plan = &job.plan;
    let table = Some(plan.source.clone());
    let pg_err = |op: &'static str| {
        let table = table.clone();
        move |source| Error::Target { op, table, source }
    };
    let tx = client
        .transaction()
        .await
        .map_err(pg_err("begin the copy transaction"))?;
    let sink = tx
        .copy_in::<_, Bytes>(&copy_in(&settings.schema, plan))
        .await
        .map_err(pg_err("start COPY"))?;
    futures_util::pin_mut!(sink);
    let mut types: Vec<PgType> = Vec::new();
    if plan.rowid_fallback {
        types.push(PgType::Bigint);
    }
    types.extend(plan.copied().map(|c| c.ty.clone()));
    let mut encoder = CopyEncoder::new();
    let mut quarantined: Vec<QuarantinedValue> = Vec::new();
    let (mut rows, mut skipped, mut bytes) = (0u64, 0u64, 0u64);
    let src_err = |op: &'static str| {
        let path = settings.snapshot_file.clone();
        let table = Some(plan.source.clone());
        move |source| Error::Source {
            op,
            path,
            table,
            source,
        }
    };
    let mut stmt = sqlite
        .prepare_cached(&select_sql(job))
        .map_err(src_err("prepare the table read"))?;
    let mut cursor = match job.range {
        Some((lo, hi)) => stmt.query([lo, hi]),
        None => stmt.query([]),
    }
    .map_err(src_err("read rows"))?;
    let key_len = plan.source_key.len();
    let fields = i16::try_from(types.len()).map_err(|_| Error::Data {
        table: plan.source.clone(),
        reason: format!("{} columns exceed COPY's limit", types.len()),
    })?;
    let data_err = |reason| Error::Data {
        table: plan.source.clone(),
        reason,
    };
    while let Some(row) = cursor.next().map_err(src_err("read rows"))? {
        let mark = encoder.begin_row(fields);
        let mut misfits = Vec::new();
        for (i, ty) in types.iter().enumerate() {
            let v = row.get_ref(key_len + i).map_err(src_err("read a value"))?;
            if misfits.is_empty() && encode_direct(&mut encoder, ty, v).map_err(data_err)? {
                continue;
            }
            match convert(ty, v, settings.convert) {
                Ok(pg) if misfits.is_empty() => encoder
                    .field(ty, &pg)
                    .map_err(|e| data_err(format!("column {i}: {e}")))?,
                Ok(_) => {}
                Err(m) => misfits.push((i, v, m.reason)),
            }
        }
        if !misfits.is_empty() {
            encoder.abandon_row(mark);
            let key = row_key(row, key_len).map_err(src_err("read the row key"))?;
            for (i, v, reason) in misfits {
                quarantined.push(quarantine_value(plan, i, &key, v, reason));
            }
            skipped += 1;
            continue;
        }
        encoder.end_row();
        rows += 1;
        if rows % 1024 == 0 {
            job.progress.fetch_add(1024, Ordering::Relaxed);
        }
        if encoder.len() >= CHUNK_BYTES || rows % settings.batch_rows as u64 == 0 {
            let chunk = encoder.take_chunk();
            bytes += chunk.len() as u64;
            sink.send(Bytes::from(chunk))
                .await
                .map_err(pg_err("send COPY data"))?;
        }
    }
    drop(cursor);
    let rest = encoder.finish();
    bytes += rest.len() as u64;
    sink.send(Bytes::from(rest))
        .await
        .map_err(pg_err("send COPY data"))?;
    let copied = sink
        .as_mut()
        .finish()
        .await
        .map_err(pg_err("finish COPY"))?;
    debug_assert_eq!(copied, rows);
    job.progress
        .fetch_add(rows % 1024 + skipped, Ordering::Relaxed);
    quarantine(&tx, "snapshot", &quarantined).await?;
    range_done(
        &tx,
        &settings.schema,
        &plan.target,
        job.range_start(),
        rows as i64,
        skipped as i64,
    )
    .await?;
    crate::fault::hit(crate::fault::SNAPSHOT_BEFORE_RANGE_COMMIT);
    tx.commit().await.map_err(pg_err("commit the copy"))?;
    crate::fault::hit(crate::fault::SNAPSHOT_AFTER_RANGE_COMMIT);
    tracing::info!(table = %plan.source, rows, quarantined = skipped, seconds = started.elapsed().as_secs_f64(), "range copied");
    Ok(CopyOutcome {
        table: plan.source.clone(),
        rows,
        quarantined: skipped,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes the common exact cases straight into the COPY buffer — an integer into bigint, a real
/// into double precision, valid UTF-8 text without NUL into text (or varchar when it fits), a
/// blob into bytea, JSON text that fits jsonb into jsonb, NULL — byte for byte what `convert` then the encoder would write, without
/// building a value. `Ok(false)`: nothing was written, take the general path (which also finds
/// and explains misfits).
fn encode_direct(enc: &mut CopyEncoder, ty: &PgType, v: ValueRef<'_>) -> Result<bool, String> {
    let text_ok = |b: &[u8]| !b.contains(&0) && std::str::from_utf8(b).is_ok();
    match (ty, v) {
        (_, ValueRef::Null) => enc.null_field(),
        (PgType::Bigint, ValueRef::Integer(i)) => enc.raw_field(&i.to_be_bytes())?,
        (PgType::DoublePrecision, ValueRef::Real(f)) => enc.raw_field(&f.to_be_bytes())?,
        (PgType::Text, ValueRef::Text(b)) if text_ok(b) => enc.raw_field(b)?,
        (PgType::Varchar(n), ValueRef::Text(b))
            if text_ok(b)
                && std::str::from_utf8(b).is_ok_and(|s| s.chars().count() <= *n as usize) =>
        {
            enc.raw_field(b)?
        }
        (PgType::Bytea, ValueRef::Blob(b)) => enc.raw_field(b)?,
        (PgType::Jsonb, ValueRef::Text(b)) if jsonb_text_fits(b) => enc.jsonb_text_field(b)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// The quarantine record of copied column `i` of a row.
fn quarantine_value(
    plan: &TablePlan,
    i: usize,
    key: &serde_json::Value,
    v: ValueRef<'_>,
    reason: String,
) -> QuarantinedValue {
    let column = if plan.rowid_fallback && i == 0 {
        "rowid".to_string()
    } else {
        let offset = usize::from(plan.rowid_fallback);
        plan.copied()
            .nth(i - offset)
            .map(|c| c.source.clone())
            .unwrap_or_default()
    };
    let value_bytes = match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(b.to_vec()),
        _ => None,
    };
    QuarantinedValue {
        table_name: plan.source.clone(),
        row_key: key.clone(),
        column_name: column,
        sqlite_type: storage_class(v),
        value: render_full(v),
        value_bytes,
        reason,
    }
}

/// A complete rendering for the quarantine (no truncation; exact bytes go to `value_bytes`).
fn render_full(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Text(b) => String::from_utf8_lossy(b).replace('\0', "\\0"),
        ValueRef::Blob(b) => format!(
            "x'{}'",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
        other => render(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::test_values::{all_types, stored};
    use proptest::prelude::*;

    /// What the general path writes for `v`: `convert`, then the encoder; `None` when it does
    /// not convert (the row would be quarantined).
    fn general(ty: &PgType, v: ValueRef<'_>) -> Option<Vec<u8>> {
        let mut enc = CopyEncoder::new();
        let pg = convert(ty, v, ConvertOptions::default()).ok()?;
        enc.field(ty, &pg).ok()?;
        Some(enc.finish())
    }

    fn direct(ty: &PgType, v: ValueRef<'_>) -> Option<Vec<u8>> {
        let mut enc = CopyEncoder::new();
        encode_direct(&mut enc, ty, v)
            .expect("a direct write fits a COPY field")
            .then(|| enc.finish())
    }

    proptest! {
        /// Whenever the direct path writes a value, it writes exactly what `convert` and the
        /// encoder would: the same bytes reach PostgreSQL either way, and a value that would
        /// not convert is never written directly (it must reach the quarantine instead).
        #[test]
        fn the_direct_path_writes_what_the_general_path_would(stored in stored()) {
            let v = stored.value_ref();
            for ty in all_types() {
                if let Some(written) = direct(&ty, v) {
                    prop_assert_eq!(Some(written), general(&ty, v), "{:?} as {:?}", v, ty);
                }
            }
        }
    }

    /// The jsonb direct path takes valid JSON as it is and leaves every misfit to `convert`.
    #[test]
    fn json_goes_direct_only_when_jsonb_takes_it_verbatim() {
        let ty = PgType::Jsonb;
        assert!(direct(&ty, ValueRef::Text(br#"{"a": [1, "x"]}"#)).is_some());
        for bad in [&br#"{"a": "\u0000"}"#[..], b"\"a\0b\"", b"{\"a\":", b"\xff"] {
            assert_eq!(direct(&ty, ValueRef::Text(bad)), None, "{bad:?}");
            assert_eq!(general(&ty, ValueRef::Text(bad)), None, "{bad:?}");
        }
    }
}
