//! Named fault points at durability boundaries, for crash tests. When the environment variable
//! `SQLITE2PG_FAULT` names a point, the process aborts there — like `kill -9`, with no
//! destructors, no flush and no rollback — so a test can check that a resumed run loses and
//! duplicates nothing. Unset (always, outside tests), a fault point costs one cached lookup.

use std::sync::OnceLock;

/// The variable that arms a fault point: `SQLITE2PG_FAULT=<point>` or `<point>@<n>` (the n-th hit).
pub const FAULT_ENV: &str = "SQLITE2PG_FAULT";

/// After a range's COPY finished, before its transaction commits.
pub const SNAPSHOT_BEFORE_RANGE_COMMIT: &str = "snapshot.before_range_commit";
/// After a range committed, before the next one starts.
pub const SNAPSHOT_AFTER_RANGE_COMMIT: &str = "snapshot.after_range_commit";
/// After the load, before keys and indexes are built.
pub const SNAPSHOT_BEFORE_POST_LOAD: &str = "snapshot.before_post_load";
/// After one step of the post-load committed (a table's keys, one index, a validation, …).
pub const SNAPSHOT_AFTER_POST_LOAD_STEP: &str = "snapshot.after_post_load_step";
/// Before the change log writes and flushes a boundary: its changes are appended, not durable.
pub const CHANGELOG_BEFORE_BOUNDARY: &str = "changelog.before_boundary";
/// Right after the change log flushed a boundary, before capture deletes the source change rows.
pub const CHANGELOG_AFTER_BOUNDARY: &str = "changelog.after_boundary";
/// Before the change log trims what PostgreSQL committed past.
pub const CHANGELOG_BEFORE_TRIM: &str = "changelog.before_trim";
/// During a capture cycle, after a chunk of changes went to the sink, before the cycle's
/// boundary is returned: the consumer holds changes past its last boundary.
pub const CAPTURE_AFTER_CHUNK: &str = "capture.after_chunk";
/// Inside the source transaction that deletes flushed change rows, before it commits.
pub const CAPTURE_BEFORE_DELETE_COMMIT: &str = "capture.before_delete_commit";

/// Sync: the batch is staged and applied, its transaction not yet committed.
pub const SYNC_MID_APPLY: &str = "sync.mid_apply";
/// Sync: a batch larger than one chunk has some chunks applied in its open transaction and
/// more to come (a huge source transaction streamed from the change log).
pub const SYNC_MID_CHUNKED_APPLY: &str = "sync.mid_chunked_apply";
/// Sync: the batch committed in PostgreSQL, the change log not yet trimmed.
pub const SYNC_AFTER_APPLY_COMMIT: &str = "sync.after_apply_commit";
/// Sync: the change log flushed a capture boundary, the source change rows not yet deleted.
pub const SYNC_AFTER_LOG_FLUSH: &str = "sync.after_log_flush";
/// Sync: a schema step's DDL ran in PostgreSQL, its transaction not yet committed.
pub const SYNC_MID_SCHEMA_STEP: &str = "sync.mid_schema_step";
/// Sync: a schema step committed in PostgreSQL; capture has not yet installed the triggers of
/// the new tables nor read with the new definitions.
pub const SYNC_AFTER_SCHEMA_STEP: &str = "sync.after_schema_step";

/// Cutover: the backlog is applied (PostgreSQL moved), writers are not frozen yet.
pub const CUTOVER_AFTER_BACKLOG: &str = "cutover.after_backlog";
/// Cutover: writers are frozen and every change up to the final one is applied and proven from
/// PostgreSQL's committed position; nothing verified or fenced yet.
pub const CUTOVER_AFTER_DRAIN: &str = "cutover.after_drain";
/// Cutover, frozen: row counts compared; identities not moved yet.
pub const CUTOVER_AFTER_VERIFY: &str = "cutover.after_verify";
/// Cutover, frozen: PostgreSQL's identities moved (committed there); SQLite not fenced yet.
pub const CUTOVER_AFTER_SEQUENCES: &str = "cutover.after_sequences";
/// Cutover, frozen: fence triggers and the cutover record written in the frozen transaction,
/// which is not committed: writers are still held.
pub const CUTOVER_AFTER_FENCE: &str = "cutover.after_fence";
/// Cutover: the fence committed and writers are released; the report is not written yet.
pub const CUTOVER_AFTER_RELEASE: &str = "cutover.after_release";
/// Every cutover fault point, in the order a cutover reaches them.
pub const CUTOVER_POINTS: [&str; 6] = [
    CUTOVER_AFTER_BACKLOG,
    CUTOVER_AFTER_DRAIN,
    CUTOVER_AFTER_VERIFY,
    CUTOVER_AFTER_SEQUENCES,
    CUTOVER_AFTER_FENCE,
    CUTOVER_AFTER_RELEASE,
];

fn armed() -> Option<&'static (String, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(FAULT_ENV).ok()?;
            match spec.split_once('@') {
                Some((point, n)) => Some((point.to_string(), n.parse().unwrap_or(1))),
                None => Some((spec, 1)),
            }
        })
        .as_ref()
}

/// Aborts the process when `point` is armed and this is the armed hit.
pub fn hit(point: &str) {
    static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if let Some((armed_point, nth)) = armed() {
        if armed_point == point
            && HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == *nth
        {
            eprintln!("sqlite2pg: fault point {point} hit: aborting");
            std::process::abort();
        }
    }
}
