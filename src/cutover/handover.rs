//! Cutover while sync runs: the handover between a running `sync` and `cutover`, through the
//! state directory. The running sync holds the change log (sled lets one process open it), so
//! cutover cannot drain beside it. Instead:
//!
//! 1. cutover sees a live sync (its heartbeat says running or paused and its pid is alive),
//!    writes `cutover-request.json` (its pid and the time, atomically) and waits, bounded by
//!    [`HANDOVER_TIMEOUT`], for the sync's heartbeat to say `paused for cutover` naming that
//!    request;
//! 2. the sync notices the request (polled every 50 ms) and stops as SIGTERM stops it: the batch
//!    in flight commits with its position, what capture logged is applied, the change log is
//!    closed; then it writes that acknowledgement and waits;
//! 3. cutover runs exactly as with sync stopped (it drains itself) and, whatever the outcome,
//!    removes its request once it closed the change log;
//! 4. the sync then asks the truth, SQLite: fenced → the cutover completed and sync exits 0;
//!    not fenced → the cutover aborted and sync resumes from PostgreSQL's committed position
//!    (promise 2: nothing applied twice, nothing skipped).
//!
//! Crashes: a cutover that dies leaves its request with a dead pid; the paused sync notices,
//! removes it and decides as in 4. A sync that dies while cutover waits is noticed by its pid
//! (or a `stopped` heartbeat), and cutover goes on as with sync stopped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{data_err, fence_record, REPORT_FILE};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::pipeline::{run_sync, SyncOptions, SyncStatus};
use crate::status::{process_alive, read_heartbeat, write_heartbeat, write_paused_heartbeat};

/// The request cutover writes in the state directory; its presence pauses a running sync.
pub const REQUEST_FILE: &str = "cutover-request.json";
/// The heartbeat state of a sync paused for a cutover.
pub const PAUSED: &str = "paused for cutover";
/// How long cutover waits for a running sync to pause: the sync finishes its batch in flight
/// and applies what it already captured (at most `--max-lag` changes were pending, applied at
/// tens of thousands per second), so a minute is ample; past it something else is wrong.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How often both sides look at each other's file: short against a cutover's pause budget,
/// long enough to cost nothing.
const POLL: Duration = Duration::from_millis(50);
/// How often a paused sync refreshes its heartbeat (as a running one does), so `status` does
/// not call a long pause stuck.
const PAUSED_BEAT_EVERY: Duration = Duration::from_secs(2);

/// A cutover asking the running sync to pause (the content of [`REQUEST_FILE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutoverRequest {
    /// The cutover process; when it is gone, the request is void.
    pub pid: u32,
    pub requested_at: String,
}

fn read_request(state_dir: &Path) -> Option<CutoverRequest> {
    std::fs::read(state_dir.join(REQUEST_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Writes the request atomically (temporary file, then rename): the sync never reads half.
fn write_request(state_dir: &Path, request: &CutoverRequest) -> Result<()> {
    let path = state_dir.join(REQUEST_FILE);
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(request).expect("a cutover request always serialises");
    std::fs::write(&tmp, json).map_err(|source| Error::Io {
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

/// Removes the request file if it still holds `request` (never a newer cutover's).
fn remove_request(state_dir: &Path, request: &CutoverRequest) {
    if read_request(state_dir).as_ref() == Some(request) {
        let _ = std::fs::remove_file(state_dir.join(REQUEST_FILE));
    }
}

/// Held by a cutover that asked a sync to pause; dropping it withdraws the request, which
/// tells the paused sync to look at SQLite and stop or resume. Drop it only after the change
/// log is closed.
pub(crate) struct PausedSync {
    state_dir: PathBuf,
    request: CutoverRequest,
}

impl Drop for PausedSync {
    fn drop(&mut self) {
        remove_request(&self.state_dir, &self.request);
    }
}

/// Cutover's side: when a sync is running, asks it to pause and waits until it did (or died,
/// or stopped); `None` when no sync runs.
pub(crate) fn pause_running_sync(state_dir: &Path) -> Result<Option<PausedSync>> {
    let me = std::process::id();
    let Some(beat) = read_heartbeat(state_dir)
        .filter(|b| b.state != "stopped" && b.pid != me && process_alive(b.pid))
    else {
        return Ok(None);
    };
    if let Some(other) = read_request(state_dir).filter(|r| r.pid != me && process_alive(r.pid)) {
        return Err(data_err(format!(
            "another cutover (pid {}, asked at {}) is in progress",
            other.pid, other.requested_at
        )));
    }
    let request = CutoverRequest {
        pid: me,
        requested_at: chrono::Utc::now().to_rfc3339(),
    };
    write_request(state_dir, &request)?;
    let paused = PausedSync {
        state_dir: state_dir.to_path_buf(),
        request,
    };
    tracing::info!(
        sync_pid = beat.pid,
        "sync is running: asked it to pause for cutover"
    );
    let deadline = Instant::now() + HANDOVER_TIMEOUT;
    loop {
        match read_heartbeat(state_dir) {
            Some(b) if b.state == PAUSED && b.paused_for.as_ref() == Some(&paused.request) => {
                tracing::info!(sync_pid = b.pid, "sync paused for cutover");
                return Ok(Some(paused));
            }
            Some(b) if b.state != "stopped" && process_alive(b.pid) => {}
            _ => {
                tracing::info!("sync stopped while cutover waited: cutover drains itself");
                return Ok(Some(paused));
            }
        }
        if Instant::now() > deadline {
            return Err(data_err(format!(
                "waited {} s for the running sync (pid {}) to acknowledge {} with a heartbeat `{PAUSED}` in {}; it did not (an older sqlite2pg?): stop it (SIGTERM) and run cutover, which drains itself",
                HANDOVER_TIMEOUT.as_secs(),
                beat.pid,
                REQUEST_FILE,
                state_dir.display()
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// How a sync run that may hand over to a cutover ended.
#[derive(Debug)]
pub enum SyncEnd {
    /// Stopped by a signal, or caught up (`--catch-up`).
    Stopped(SyncStatus),
    /// A cutover fenced SQLite while this sync was paused for it; `reported` is false when that
    /// cutover died before writing its report (run `cutover` again to finish it).
    CutOver { status: SyncStatus, reported: bool },
}

/// Sync's side: runs sync (see `pipeline::run_sync`) and pauses it whenever a cutover asks,
/// until `stop` is set, it caught up, or a cutover completed.
pub fn run_sync_handing_over(
    config: &Config,
    opts: &SyncOptions,
    stop: &AtomicBool,
    on_status: &(dyn Fn(&SyncStatus) + Sync),
) -> Result<SyncEnd> {
    let state_dir = config.ensure_state_dir()?;
    let started_at = chrono::Utc::now().to_rfc3339();
    if let Some(stale) = read_request(&state_dir).filter(|r| !process_alive(r.pid)) {
        tracing::warn!(
            cutover_pid = stale.pid,
            "removing the request of a cutover that died"
        );
        remove_request(&state_dir, &stale);
    }
    loop {
        let (status, request) = sync_until_request(config, opts, stop, on_status, &state_dir)?;
        let Some(request) = request else {
            return Ok(SyncEnd::Stopped(status));
        };
        tracing::info!(
            cutover_pid = request.pid,
            seq = status.applied_seq,
            "paused for cutover: change log closed, position committed"
        );
        match wait_paused(config, &state_dir, &started_at, &status, request, stop)? {
            Paused::Resume => {
                tracing::info!("the cutover did not complete (aborted or died): sync resumes");
            }
            Paused::Stopped => return Ok(SyncEnd::Stopped(status)),
            Paused::CutOver { reported } => return Ok(SyncEnd::CutOver { status, reported }),
        }
    }
}

/// Runs sync until it stops by itself or a live cutover request appears (then it stops at a
/// batch boundary, as SIGTERM stops it, and the request is returned).
fn sync_until_request(
    config: &Config,
    opts: &SyncOptions,
    stop: &AtomicBool,
    on_status: &(dyn Fn(&SyncStatus) + Sync),
    state_dir: &Path,
) -> Result<(SyncStatus, Option<CutoverRequest>)> {
    let pause = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if stop.load(Ordering::SeqCst) {
                    pause.store(true, Ordering::SeqCst);
                    return None;
                }
                if let Some(r) = read_request(state_dir).filter(|r| process_alive(r.pid)) {
                    pause.store(true, Ordering::SeqCst);
                    return Some(r);
                }
                std::thread::sleep(POLL);
            }
            None
        });
        let synced = run_sync(config, opts, &pause, on_status);
        done.store(true, Ordering::SeqCst);
        let request = watcher
            .join()
            .expect("the cutover request watcher panicked");
        Ok((synced?, request))
    })
}

enum Paused {
    Resume,
    Stopped,
    CutOver { reported: bool },
}

/// Acknowledges `request` and waits until it is withdrawn or its cutover died, then decides
/// from SQLite (fenced or not) whether sync stops or resumes. A newer live request (another
/// cutover asking in turn) keeps it paused for that one.
fn wait_paused(
    config: &Config,
    state_dir: &Path,
    started_at: &str,
    status: &SyncStatus,
    mut request: CutoverRequest,
    stop: &AtomicBool,
) -> Result<Paused> {
    write_paused_heartbeat(state_dir, started_at, status, &request)?;
    let mut beat = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            write_heartbeat(state_dir, started_at, "stopped", status)?;
            return Ok(Paused::Stopped);
        }
        match read_request(state_dir) {
            Some(r) if process_alive(r.pid) => {
                if r != request || beat.elapsed() >= PAUSED_BEAT_EVERY {
                    request = r;
                    write_paused_heartbeat(state_dir, started_at, status, &request)?;
                    beat = Instant::now();
                }
            }
            left => {
                if let Some(dead) = left {
                    tracing::warn!(
                        cutover_pid = dead.pid,
                        "the cutover died while sync was paused"
                    );
                    remove_request(state_dir, &dead);
                }
                return decide(config, state_dir, started_at, status);
            }
        }
        std::thread::sleep(POLL);
    }
}

/// After the cutover: SQLite fenced means it completed (sync stops), otherwise sync resumes.
fn decide(
    config: &Config,
    state_dir: &Path,
    started_at: &str,
    status: &SyncStatus,
) -> Result<Paused> {
    let path = config.require_source()?;
    let fenced = fence_record(&crate::source::open_read_only(path)?, path)?;
    if fenced.is_none() {
        return Ok(Paused::Resume);
    }
    write_heartbeat(state_dir, started_at, "stopped", status)?;
    Ok(Paused::CutOver {
        reported: state_dir.join(REPORT_FILE).exists(),
    })
}
