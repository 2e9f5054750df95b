//! The snapshot's record in the state directory (`snapshot.json`): which verified backup the
//! copy reads (its path and blake3 — the source position the snapshot corresponds to), and
//! whether the run completed. A re-run after a failure reuses the same backup, so every table
//! comes from one consistent source state; `--fresh` or a completed run takes a new one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SnapshotReport;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::source::backup::{verified_backup_at, BackupOptions};
use crate::source::open_read_only;

const STATE_FILE: &str = "snapshot.json";
const REPORT_FILE: &str = "snapshot-report.json";
/// The newest change row the snapshot's read transaction sees: every change up to it is in the
/// snapshot, every later one gets a higher seq (capture always keeps the newest change row, so
/// SQLite never hands out a lower one). An empty change table gives 0, which is right too:
/// every later change comes after the snapshot.
const CHANGE_POSITION: &str = "SELECT coalesce(max(seq), 0) FROM _sqlite2pg_changes";

/// `snapshot.json`: what the snapshot copied, and from which source position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The backup file the copy reads.
    pub backup: PathBuf,
    /// blake3 of that file: the identity of the source state copied.
    pub blake3: String,
    pub started_at: String,
    /// `running` or `complete`.
    pub status: String,
    /// The highest change sequence the snapshot includes (S): sync applies exactly the changes
    /// after it. `null` when the snapshot ran without change capture.
    pub change_seq: Option<i64>,
    /// The tables `--tables` selected; `null` when every table was copied. Sync follows tables
    /// created later in the source only when every table was copied.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
}

/// Reads `snapshot.json` from a state directory (`None` when no snapshot ran there).
pub fn read_snapshot_record(state_dir: &Path) -> Result<Option<SnapshotRecord>> {
    read_record(&state_dir.join(STATE_FILE))
}

/// The consistent source the copy reads.
#[derive(Debug, Clone)]
pub struct SnapshotSource {
    pub file: PathBuf,
    pub fingerprint: String,
    state_dir: PathBuf,
    record: SnapshotRecord,
}

impl SnapshotSource {
    /// Reuses the backup of an unfinished run (unless `fresh`), else takes a verified backup;
    /// with `capture` (change capture installed), reads the change sequence S in the backup's
    /// own read transaction. `tables` is the `--tables` selection, recorded for sync.
    pub fn prepare(
        config: &Config,
        fresh: bool,
        capture: bool,
        tables: Option<&[String]>,
    ) -> Result<SnapshotSource> {
        let state_dir = config.ensure_state_dir()?;
        let path = state_dir.join(STATE_FILE);
        if let Some(record) =
            read_record(&path)?.filter(|r| !fresh && r.status == "running" && r.backup.exists())
        {
            tracing::info!(backup = %record.backup.display(), "resuming the unfinished snapshot from its backup");
            return Ok(SnapshotSource {
                file: record.backup.clone(),
                fingerprint: record.blake3.clone(),
                state_dir,
                record,
            });
        }
        let source_path = config.require_source()?;
        let conn = open_read_only(source_path)?;
        let opts = BackupOptions {
            position_sql: capture.then_some(CHANGE_POSITION),
            quick_check: true,
        };
        let backup = verified_backup_at(&conn, source_path, &state_dir, &opts)?;
        let record = SnapshotRecord {
            backup: backup.path.clone(),
            blake3: backup.blake3.clone(),
            started_at: chrono::Utc::now().to_rfc3339(),
            status: "running".into(),
            change_seq: backup.position,
            tables: tables.map(<[String]>::to_vec),
        };
        write_json(&path, &record)?;
        Ok(SnapshotSource {
            file: backup.path,
            fingerprint: backup.blake3,
            state_dir,
            record,
        })
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
