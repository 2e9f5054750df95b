//! The snapshot's record in the state directory (`snapshot.json`): what the copy reads — the
//! live source through one read view, or a verified backup (its path and blake3) — the source
//! position the snapshot corresponds to, and whether the run completed. A re-run after a failure
//! reuses the same backup, so every table comes from one consistent source state; a run that
//! read the live source starts over (that state is gone); `--fresh` or a completed run takes a
//! new one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SnapshotReport;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::source::backup::{
    hash_file, take_backup, verify_backup, BackupReport, StructureCheck, TakenBackup,
};
use crate::source::open_read_only;
use crate::source::view::{is_wal, open_live_view};

const STATE_FILE: &str = "snapshot.json";
/// [`SnapshotRecord::view`] of a copy that read the live source.
const LIVE: &str = "live";
const BACKUP: &str = "backup";
const REPORT_FILE: &str = "snapshot-report.json";
/// The newest change row the snapshot's read transaction sees: every change up to it is in the
/// snapshot, every later one gets a higher seq (capture always keeps the newest change row, so
/// SQLite never hands out a lower one). An empty change table gives 0, which is right too:
/// every later change comes after the snapshot.
const CHANGE_POSITION: &str = "SELECT coalesce(max(seq), 0) FROM _sqlite2pg_changes";

/// `snapshot.json`: what the snapshot copied, and from which source position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The file the copy reads: the backup, or with `view` `live` the source itself.
    pub backup: PathBuf,
    /// `live` when the copy read the source through a read view (see
    /// [`crate::source::view`]); `backup` (or empty, in records written before) when it read a
    /// verified backup.
    #[serde(default)]
    pub view: String,
    /// blake3 of that file: the identity of the source state copied (empty until the backup's
    /// verification, which computes it beside the copy, finished).
    pub blake3: String,
    /// The identity of this snapshot run that the target's `sqlite2pg.snapshot_tables` records:
    /// a re-run with the same record resumes the tables loaded under it. Records written before
    /// it existed use their blake3.
    #[serde(default)]
    pub run_id: String,
    pub started_at: String,
    /// `running` or `complete`.
    pub status: String,
    /// The highest change sequence the snapshot includes (S): sync applies exactly the changes
    /// after it. `null` when the snapshot ran without change capture.
    pub change_seq: Option<i64>,
    /// True once the backup was verified: hashed, counted, synced to disk, and with
    /// `--check-backup` its `quick_check` passed (this runs while the copy reads it; a run resumed
    /// from an unverified backup verifies it again).
    #[serde(default)]
    pub verified: bool,
    /// The tables `--tables` selected; `null` when every table was copied. Sync follows tables
    /// created later in the source only when every table was copied.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
}

impl SnapshotRecord {
    /// The identity of the source state copied: the backup's blake3, or for a copy of the live
    /// source (or before the blake3 is known) the run's id.
    pub fn identity(&self) -> &str {
        match self.blake3.is_empty() {
            true => &self.run_id,
            false => &self.blake3,
        }
    }
}

/// Reads `snapshot.json` from a state directory (`None` when no snapshot ran there).
pub fn read_snapshot_record(state_dir: &Path) -> Result<Option<SnapshotRecord>> {
    read_record(&state_dir.join(STATE_FILE))
}

/// The consistent source the copy reads.
#[derive(Debug)]
pub struct SnapshotSource {
    pub file: PathBuf,
    /// The run identity target tables are recorded under (see [`SnapshotRecord::run_id`]).
    pub fingerprint: String,
    state_dir: PathBuf,
    record: SnapshotRecord,
    /// The backup's verification, running beside the copy until [`SnapshotSource::verified`].
    verification: Option<std::thread::JoinHandle<Result<BackupReport>>>,
}

impl SnapshotSource {
    /// Reuses the backup of an unfinished run (unless `fresh`), else opens the source: with
    /// `live_readers` and a WAL-mode source, as `live_readers` connections in one read view
    /// (returned; the copy reads them), else through a verified backup. With `capture` (change
    /// capture installed), reads the change sequence S in that same read. `tables` is the
    /// `--tables` selection, recorded for sync; `check` is the backup's structure check.
    pub fn prepare(
        config: &Config,
        fresh: bool,
        capture: bool,
        tables: Option<&[String]>,
        check: StructureCheck,
        live_readers: Option<usize>,
    ) -> Result<(SnapshotSource, Vec<rusqlite::Connection>)> {
        let state_dir = config.ensure_state_dir()?;
        let path = state_dir.join(STATE_FILE);
        let unfinished = read_record(&path)?.filter(|r| !fresh && r.status == "running");
        if let Some(record) = unfinished
            .as_ref()
            .filter(|r| r.view != LIVE && r.backup.exists())
        {
            tracing::info!(backup = %record.backup.display(), "resuming the unfinished snapshot from its backup");
            let verification = (!record.verified).then(|| {
                let taken = TakenBackup::existing(&record.backup, record.change_seq);
                std::thread::spawn(move || verify(&taken, check))
            });
            let fingerprint = match record.run_id.is_empty() {
                true => record.blake3.clone(),
                false => record.run_id.clone(),
            };
            let source = SnapshotSource {
                file: record.backup.clone(),
                fingerprint,
                state_dir,
                record: record.clone(),
                verification,
            };
            return Ok((source, Vec::new()));
        }
        if unfinished.is_some() {
            tracing::warn!("the unfinished snapshot read the live source, whose state has moved on since: starting over (pass --from-backup for a snapshot that resumes)");
        }
        let source_path = config.require_source()?;
        let position_sql = capture.then_some(CHANGE_POSITION);
        let now = chrono::Utc::now();
        let run_id = format!(
            "run-{}-{}",
            now.timestamp_nanos_opt().unwrap_or_default(),
            std::process::id()
        );
        // Written once the source state is fixed: `started_at` is when the copy could start.
        let record = |backup: &Path, view: &str, change_seq, verified| SnapshotRecord {
            backup: backup.to_path_buf(),
            view: view.into(),
            blake3: String::new(),
            run_id: run_id.clone(),
            started_at: chrono::Utc::now().to_rfc3339(),
            status: "running".into(),
            change_seq,
            verified,
            tables: tables.map(<[String]>::to_vec),
        };
        let view = live_readers
            .filter(|_| is_wal(source_path).unwrap_or(false))
            .and_then(
                |readers| match open_live_view(source_path, readers, position_sql) {
                    Ok(view) => Some(view),
                    // A backup needs no write lock: a read-only file, or an application that
                    // held its write lock past the busy timeout, still gets its snapshot.
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open a read view of the live source: copying from a backup instead");
                        None
                    }
                },
            );
        if let Some((conns, position)) = view {
            // Nothing to verify: the copy reads the source itself.
            let record = record(source_path, LIVE, position, true);
            write_json(&path, &record)?;
            let source = SnapshotSource {
                file: source_path.to_path_buf(),
                fingerprint: run_id,
                state_dir,
                record,
                verification: None,
            };
            return Ok((source, conns));
        }
        let conn = open_read_only(source_path)?;
        let taken = take_backup(&conn, source_path, &state_dir, position_sql)?;
        drop(conn);
        let record = record(&taken.path, BACKUP, taken.position, false);
        write_json(&path, &record)?;
        let file = taken.path.clone();
        let verification = std::thread::Builder::new()
            .name("verify-backup".into())
            .spawn(move || verify(&taken, check))
            .map_err(|source| Error::Io {
                op: "start the backup verification for",
                path: file.clone(),
                source,
            })?;
        let source = SnapshotSource {
            file,
            fingerprint: run_id,
            state_dir,
            record,
            verification: Some(verification),
        };
        Ok((source, Vec::new()))
    }

    /// True when the copy reads the live source through a read view.
    pub fn is_live(&self) -> bool {
        self.record.view == LIVE
    }

    /// Waits for the backup's verification (blake3, row counts, the structure check asked for,
    /// run while the copy and the post-load work) and records it; a corrupt backup fails the run here, before the
    /// snapshot is declared complete (sync only starts from a complete snapshot, and a re-run
    /// resumes from this backup and checks it again).
    pub fn verified(&mut self) -> Result<()> {
        let Some(handle) = self.verification.take() else {
            return Ok(());
        };
        let waited = std::time::Instant::now();
        let report = handle.join().expect("the backup verification panicked")?;
        // Time the snapshot waited for it after its own work: ideally none.
        let waited = waited.elapsed().as_secs_f64();
        tracing::info!(backup = %report.path.display(), integrity = %report.integrity, blake3 = %report.blake3, waited, "backup verified");
        self.record.verified = true;
        self.record.blake3 = report.blake3;
        write_json(&self.state_dir.join(STATE_FILE), &self.record)
    }

    /// The identity of the source state copied (see [`SnapshotRecord::identity`]; a backup's
    /// blake3 is known once [`SnapshotSource::verified`] returned).
    pub fn identity(&self) -> &str {
        self.record.identity()
    }

    /// Records the run as complete and writes the report beside it.
    pub fn complete(&self, report: &SnapshotReport) -> Result<()> {
        write_json(&self.state_dir.join(REPORT_FILE), report)?;
        let record = SnapshotRecord {
            status: "complete".into(),
            ..self.record.clone()
        };
        write_json(&self.state_dir.join(STATE_FILE), &record)
    }

    pub fn report_path(&self) -> PathBuf {
        self.state_dir.join(REPORT_FILE)
    }
}

/// The backup's blake3, then its structure check (`check`), row counts and manifest, at the
/// lowest CPU priority: the copy and PostgreSQL's index builds (the critical path) keep both
/// cores, and the verification takes the time they leave idle.
fn verify(taken: &TakenBackup, check: StructureCheck) -> Result<BackupReport> {
    lower_this_threads_priority();
    let hash = hash_file(&taken.path)?;
    verify_backup(taken, check, hash)
}

/// Nice 19 for the calling thread only (Linux schedules threads by their own nice value).
fn lower_this_threads_priority() {
    // SAFETY: gettid has no preconditions; setpriority only reads its arguments. A failure
    // leaves the thread at its normal priority, which is merely slower for the others.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

fn read_record(path: &Path) -> Result<Option<SnapshotRecord>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Config {
                field: path.display().to_string(),
                reason: format!(
                    "unreadable snapshot record ({e}); delete it to start a fresh snapshot"
                ),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes JSON atomically (temporary file, then rename), so a crash never leaves half a record.
fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).expect("state records always serialise");
    std::fs::write(&tmp, bytes).map_err(|source| Error::Io {
        op: "write",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        op: "replace",
        path: path.to_path_buf(),
        source,
    })
}
