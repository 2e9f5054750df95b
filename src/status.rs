//! `sqlite2pg status`: where every stage stands, read from durable state only — the snapshot
//! record, the sync heartbeat file, the target's `sqlite2pg.sync_state` and quarantine, the
//! source's change table, the cutover report and the source's fence record — so it works while
//! sync runs in another process and after it died, and says it died instead of "running" (and
//! that a cutover was interrupted, not "not done", when SQLite is fenced without a report).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::cutover::handover::{CutoverRequest, PAUSED};
use crate::error::{Error, Result};
use crate::pipeline::SyncStatus;

const HEARTBEAT_FILE: &str = "sync-heartbeat.json";
/// A running sync rewrites its heartbeat every 2 s; older than this, it is stuck.
const STALE_AFTER_SECONDS: f64 = 30.0;

/// What a running sync writes to the state directory on every status tick and when it stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub pid: u32,
    pub started_at: String,
    pub updated_at: String,
    /// Unix seconds of `updated_at`.
    pub updated_unix: f64,
    /// `running`, `paused for cutover` (see `cutover::handover`), `stopped` (a clean exit) or
    /// `failed` (it stopped on the error in `status.last_error`).
    pub state: String,
    pub status: SyncStatus,
    /// While paused: the cutover request this sync paused for (its acknowledgement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_for: Option<CutoverRequest>,
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Writes the heartbeat atomically (temporary file, then rename).
pub fn write_heartbeat(
    state_dir: &Path,
    started_at: &str,
    state: &str,
    status: &SyncStatus,
) -> Result<()> {
    write_beat(state_dir, started_at, state, status, None)
}

/// Writes the heartbeat of a sync paused for `request`: the acknowledgement cutover waits for.
pub(crate) fn write_paused_heartbeat(
    state_dir: &Path,
    started_at: &str,
    status: &SyncStatus,
    request: &CutoverRequest,
) -> Result<()> {
    write_beat(state_dir, started_at, PAUSED, status, Some(request.clone()))
}

fn write_beat(
    state_dir: &Path,
    started_at: &str,
    state: &str,
    status: &SyncStatus,
    paused_for: Option<CutoverRequest>,
) -> Result<()> {
    let beat = Heartbeat {
        pid: std::process::id(),
        started_at: started_at.to_string(),
        updated_at: chrono::Utc::now().to_rfc3339(),
        updated_unix: now_unix(),
        state: state.to_string(),
        status: status.clone(),
        paused_for,
    };
    let path = state_dir.join(HEARTBEAT_FILE);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&beat).expect("a heartbeat always serialises"),
    )
    .map_err(|source| Error::Io {
        op: "write",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| Error::Io {
        op: "replace",
        path,
        source,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// `never ran`, `running`, `paused for cutover`, `stuck`, `stopped`, `failed` (it stopped on
    /// an error: see `heartbeat.status.last_error`) or `died`.
    pub state: String,
    pub heartbeat: Option<Heartbeat>,
    pub applied_seq: Option<i64>,
    pub applied_at: Option<String>,
    pub changes_applied: Option<i64>,
    pub source_seq: Option<u64>,
    pub lag_changes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub snapshot: Option<crate::snapshot::SnapshotRecord>,
    pub sync: SyncReport,
    /// Quarantined values per source table.
    pub quarantined: Vec<(String, i64)>,
    pub cutover: Option<serde_json::Value>,
    /// When the source is fenced: the fence's time, from the cutover record written with it.
    /// Fenced without a report means a cutover died after releasing writers (run it again).
    pub fenced_at: Option<String>,
}

/// Is process `pid` alive? (signal 0 checks without sending anything; a zombie — dead, not yet
/// reaped by its parent — counts as dead.)
pub(crate) fn process_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) == 0 };
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and may hold spaces.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    });
    exists && !zombie
}

/// The sync heartbeat in `state_dir`, if one is there and readable.
pub(crate) fn read_heartbeat(state_dir: &Path) -> Option<Heartbeat> {
    std::fs::read(state_dir.join(HEARTBEAT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn sync_state(beat: &Option<Heartbeat>) -> String {
    match beat {
        None => "never ran".into(),
        Some(b) if b.state == "stopped" => "stopped".into(),
        Some(b) if b.state == "failed" => "failed".into(),
        Some(b) if !process_alive(b.pid) => "died".into(),
        Some(b) if now_unix() - b.updated_unix > STALE_AFTER_SECONDS => "stuck".into(),
        Some(b) if b.state == PAUSED => PAUSED.into(),
        Some(_) => "running".into(),
    }
}

pub fn read_status(config: &Config) -> Result<Status> {
    let state_dir = config.state_dir()?;
    let snapshot = crate::snapshot::read_snapshot_record(&state_dir)?;
    let heartbeat = read_heartbeat(&state_dir);
    let source = match config.source.as_deref() {
        Some(path) if path.exists() => crate::source::open_read_only(path).ok(),
        _ => None,
    };
    let source_seq = source
        .as_ref()
        .and_then(|c| crate::source::capture::max_seq(c).ok());
    let fenced_at = match (&source, config.source.as_deref()) {
        (Some(conn), Some(path)) => crate::cutover::fence_record(conn, path)
            .ok()
            .flatten()
            .map(|r| r.fenced_at),
        _ => None,
    };
    let mut sync = SyncReport {
        state: sync_state(&heartbeat),
        heartbeat,
        applied_seq: None,
        applied_at: None,
        changes_applied: None,
        source_seq,
        lag_changes: None,
    };
    let mut quarantined = Vec::new();
    if let Some(url) = &config.target {
        let runtime = crate::target::connect::client_runtime()?;
        runtime.block_on(async {
            let client = url.connect().await?;
            let err = |op| move |source| Error::Target { op, table: None, source };
            let has_state: bool = client.query_one("SELECT to_regclass('sqlite2pg.sync_state') IS NOT NULL", &[]).await.map_err(err("look for sync_state"))?.get(0);
            if has_state {
                if let Some(row) = client
                    .query_opt("SELECT applied_seq, applied_at::text, changes_applied FROM sqlite2pg.sync_state WHERE id = 1", &[])
                    .await
                    .map_err(err("read sync_state"))?
                {
                    sync.applied_seq = Some(row.get(0));
                    sync.applied_at = Some(row.get(1));
                    sync.changes_applied = Some(row.get(2));
                }
                let rows = client
                    .query("SELECT table_name, count(*) FROM sqlite2pg.quarantine GROUP BY 1 ORDER BY 1", &[])
                    .await
                    .map_err(err("count quarantined values"))?;
                quarantined = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            }
            Ok::<(), Error>(())
        })?;
    }
    sync.lag_changes = match (sync.source_seq, sync.applied_seq) {
        (Some(s), Some(a)) => Some(s.saturating_sub(a.max(0) as u64)),
        _ => None,
    };
    let cutover = std::fs::read(state_dir.join(crate::cutover::REPORT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    Ok(Status {
        snapshot,
        sync,
        quarantined,
        cutover,
        fenced_at,
    })
}

/// The human form: one line per stage.
pub fn render_status(s: &Status) -> String {
    let mut out = String::new();
    match &s.snapshot {
        None => out.push_str("snapshot  never ran\n"),
        Some(r) => out.push_str(&format!(
            "snapshot  {} (started {}, change position {:?})\n",
            r.status, r.started_at, r.change_seq
        )),
    }
    let sync = &s.sync;
    out.push_str(&format!("sync      {}", sync.state));
    if let Some(b) = &sync.heartbeat {
        out.push_str(&format!(
            " (pid {}, last heartbeat {})",
            b.pid, b.updated_at
        ));
        if let Some(r) = b.paused_for.as_ref().filter(|_| sync.state == PAUSED) {
            out.push_str(&format!(
                "; cutover pid {} asked at {}",
                r.pid, r.requested_at
            ));
        }
    }
    out.push('\n');
    if let Some(a) = sync.applied_seq {
        out.push_str(&format!(
            "apply     position {a} at {}, {} changes applied; source at {}, lag {} changes\n",
            sync.applied_at.as_deref().unwrap_or("?"),
            sync.changes_applied.unwrap_or(0),
            sync.source_seq.map_or("?".into(), |v| v.to_string()),
            sync.lag_changes.map_or("?".into(), |v| v.to_string())
        ));
    }
    if let Some(b) = &sync.heartbeat {
        out.push_str(&format!(
            "verify    {} mismatches re-enqueued; {} retries\n",
            b.status.verification_mismatches, b.status.retries
        ));
        if !b.status.applied_per_table.is_empty() {
            let per_table: Vec<String> = b
                .status
                .applied_per_table
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect();
            out.push_str(&format!(
                "tables    rows applied: {}\n",
                per_table.join(", ")
            ));
        }
        if let Some(e) = &b.status.last_error {
            out.push_str(&format!("error     {} at {}\n", e.message, e.at));
        }
    }
    for (t, n) in &s.quarantined {
        out.push_str(&format!("quarantine {t}: {n} value(s)\n"));
    }
    match (&s.cutover, &s.fenced_at) {
        (None, None) => out.push_str("cutover   not done\n"),
        (None, Some(at)) => out.push_str(&format!(
            "cutover   interrupted after SQLite was fenced at {at}: run `sqlite2pg cutover` again to finish it\n"
        )),
        (Some(c), _) => out.push_str(&format!(
            "cutover   done at {}, {}\n",
            c["fenced_at"].as_str().unwrap_or("?"),
            match c["pause_ms"].as_f64() {
                Some(ms) => format!("pause {ms:.1} ms"),
                None => "completed by a re-run (the pause was not recorded)".to_string(),
            }
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::process_alive;

    /// A sync or cutover that died but was not reaped yet (a zombie, e.g. a test's child) must
    /// count as dead: the other side of the cutover handover would wait for it otherwise.
    #[test]
    fn a_zombie_process_is_not_alive() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "the exited child still counts as alive"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        assert!(zombie.contains(") Z"), "not reaped yet: {zombie}");
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }
}
