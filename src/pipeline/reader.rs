//! The reader stage between the change log and apply: reads a batch's changes from the log in
//! chunks, and converts and encodes each chunk (`target::apply::prepare_chunk`) on its own
//! thread while apply's PostgreSQL transaction works on the chunk before. The channel to apply
//! holds [`CHUNKS_IN_FLIGHT`] chunk, so at most three chunks of a batch are in memory (one being
//! prepared, one waiting, one being applied), however many changes one source transaction made.
//! It also trims the change log behind apply's commits, so a trim (seconds for a huge cycle)
//! overlaps the next batch instead of delaying it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Receiver;
use tokio::sync::mpsc::Sender;

use crate::change::{Boundary, Change};
use crate::changelog::ChangeLog;
use crate::convert::ConvertOptions;
use crate::error::{Error, Result};
use crate::target::apply::{prepare_chunk, ApplyTable, BatchPiece};

/// Prepared chunks waiting for apply: one, so reading and converting overlap with PostgreSQL's
/// work on the chunk before without running ahead of it.
pub(crate) const CHUNKS_IN_FLIGHT: usize = 1;

/// One batch to read: the changes with `after < seq <= through.end_seq`, prepared for
/// `tables`, sent to `reply` in seq order, then [`BatchPiece::End`] with the boundary (or,
/// instead, the first error). `through: None` follows the capture cycle still being written
/// after `after` (see [`read_open_cycle`]).
pub(crate) struct ReadRequest {
    pub after: u64,
    pub through: Option<Boundary>,
    pub tables: Vec<ApplyTable>,
    pub reply: Sender<Result<BatchPiece>>,
}

/// Work for the reader thread, done in the order sent.
pub(crate) enum Job {
    Read(ReadRequest),
    /// Trim the change log through this seq: send it only once PostgreSQL committed past it.
    Trim(u64),
}

/// Serves jobs until every sender is dropped. `Err`: a trim failed (the thread then stops, so
/// apply's next request fails and sync ends with this error). `capture_failed` tells a reader
/// following an open cycle that its boundary will never come (capture leaves a cycle open only
/// when it fails: stopping, it ends between cycles).
pub(crate) fn serve(
    log: &dyn ChangeLog,
    jobs: &Receiver<Job>,
    chunk_changes: usize,
    opts: ConvertOptions,
    capture_failed: &AtomicBool,
) -> Result<()> {
    for job in jobs {
        match job {
            Job::Read(request) => read_chunks(log, &request, chunk_changes, opts, capture_failed),
            Job::Trim(through) => {
                let trimming = std::time::Instant::now();
                log.trim_through(through)?;
                tracing::debug!(
                    seq = through,
                    ms = trimming.elapsed().as_millis() as u64,
                    "change log trimmed"
                );
            }
        }
    }
    Ok(())
}

/// Reads one batch in chunks of at most `chunk_changes` changes. Stops early, quietly, when
/// apply dropped its receiver (it failed or stopped; it asks again if it retries).
pub(crate) fn read_chunks(
    log: &dyn ChangeLog,
    request: &ReadRequest,
    chunk_changes: usize,
    opts: ConvertOptions,
    capture_failed: &AtomicBool,
) {
    let chunk_changes = chunk_changes.max(1);
    let mut buf: Vec<Change> = Vec::with_capacity(chunk_changes.min(1 << 16));
    let mut send = |change: Option<Change>| -> Result<()> {
        let end = change.is_none();
        buf.extend(change);
        if buf.is_empty() || (!end && buf.len() < chunk_changes) {
            return Ok(());
        }
        let changes = std::mem::replace(&mut buf, Vec::with_capacity(chunk_changes.min(1 << 16)));
        let prepared = prepare_chunk(&request.tables, changes, opts).map(BatchPiece::Chunk);
        let failed = prepared.is_err();
        if request.reply.blocking_send(prepared).is_err() || failed {
            return Err(stop_reading());
        }
        Ok(())
    };
    let read = match request.through {
        Some(through) => log
            .for_each_in(request.after, through.end_seq, &mut |c| send(Some(c)))
            .map(|()| through),
        None => read_open_cycle(log, request.after, capture_failed, &mut |c| send(Some(c))),
    };
    let rest = read.and_then(|through| send(None).map(|()| through));
    match rest {
        Ok(through) => {
            let _ = request.reply.blocking_send(Ok(BatchPiece::End(through)));
        }
        Err(e) if is_stop(&e) => {}
        Err(e) => {
            let _ = request.reply.blocking_send(Err(e));
        }
    }
}

/// How often a reader following an open capture cycle looks for more of it.
const FOLLOW_POLL: Duration = Duration::from_millis(2);

/// Reads the capture cycle after `after` while capture is still writing it, so apply works on
/// a huge cycle (a backlog, a 100k-row transaction) while capture reads the rest from SQLite,
/// instead of after it. Returns the cycle's boundary once capture committed it and every change
/// up to it was passed to `f`. Only changes of this one cycle are read: the newest seq is taken
/// *before* checking that no boundary is past `after`, so every change up to it was appended
/// before capture ended the cycle (capture appends the next cycle only after committing this
/// one's boundary). The count read is checked against the boundary's. Fails when capture
/// failed without committing the boundary.
fn read_open_cycle(
    log: &dyn ChangeLog,
    after: u64,
    capture_failed: &AtomicBool,
    f: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<Boundary> {
    let mut cursor = after;
    let mut read = 0u64;
    loop {
        let newest = log.last_change_seq()?.unwrap_or(0);
        let boundary = log.boundaries_after(after, 1)?.first().copied();
        let upto = boundary.map_or(newest, |b| b.end_seq);
        if upto > cursor {
            log.for_each_in(cursor, upto, &mut |change| {
                read += 1;
                f(change)
            })?;
            cursor = upto;
        }
        if let Some(b) = boundary {
            if read != b.changes {
                return Err(Error::Data {
                    table: "(change log)".into(),
                    reason: format!(
                        "the capture cycle ending at seq {} logged {} changes, but {read} were read while it was written",
                        b.end_seq, b.changes
                    ),
                });
            }
            return Ok(b);
        }
        if capture_failed.load(Ordering::SeqCst) {
            return Err(Error::Data {
                table: "(sync)".into(),
                reason: format!("capture failed before it ended the cycle after seq {after}"),
            });
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// Why reading stopped before the end, when apply no longer listens or a chunk failed (and its
/// error went to apply already); never reaches apply itself.
const STOPPED: &str = "(reader stopped)";

fn stop_reading() -> Error {
    Error::Data {
        table: STOPPED.into(),
        reason: "apply stopped listening or a chunk failed".into(),
    }
}

fn is_stop(e: &Error) -> bool {
    matches!(e, Error::Data { table, .. } if table == STOPPED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::RawValue;
    use crate::changelog::SledChangeLog;

    fn change(seq: u64) -> Change {
        Change {
            seq,
            table: "t".into(),
            key: vec![RawValue::Integer(seq as i64)],
            image: Some(vec![RawValue::Integer(seq as i64)]),
        }
    }

    fn boundary(end_seq: u64, changes: u64) -> Boundary {
        Boundary {
            end_seq,
            committed_at: 1_700_000_000.0,
            changes,
        }
    }

    /// A cycle read while capture writes it: every change of the cycle arrives once, in order,
    /// and nothing of the next cycle (written right after the boundary) is taken along.
    #[test]
    fn an_open_cycle_is_read_whole_and_alone_while_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledChangeLog::open(&dir.path().join("changelog")).unwrap();
        log.append(&[change(1), change(2)]).unwrap();
        log.commit_boundary(&boundary(2, 2)).unwrap();
        let failed = AtomicBool::new(false);
        // Coalescing leaves gaps in the seqs of a cycle: every third seq is missing.
        let cycle: Vec<u64> = (3..3000).filter(|s| s % 3 != 0).collect();
        let mut read = Vec::new();
        let found = std::thread::scope(|s| {
            s.spawn(|| {
                for part in cycle.chunks(100) {
                    let changes: Vec<Change> = part.iter().map(|&seq| change(seq)).collect();
                    log.append(&changes).unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
                let end = *cycle.last().unwrap();
                log.commit_boundary(&boundary(end, cycle.len() as u64))
                    .unwrap();
                log.append(&[change(end + 1), change(end + 2)]).unwrap();
                log.commit_boundary(&boundary(end + 2, 2)).unwrap();
            });
            read_open_cycle(&log, 2, &failed, &mut |c| {
                read.push(c.seq);
                Ok(())
            })
        })
        .expect("the cycle is read");
        assert_eq!(found, boundary(*cycle.last().unwrap(), cycle.len() as u64));
        assert_eq!(read, cycle);
    }

    /// Capture that failed without committing the cycle's boundary: the reader says
    /// so instead of waiting forever, and apply never gets an end to commit.
    #[test]
    fn a_cycle_capture_failed_in_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledChangeLog::open(&dir.path().join("changelog")).unwrap();
        log.append(&[change(1), change(2)]).unwrap();
        let failed = AtomicBool::new(true);
        let mut read = 0;
        let err = read_open_cycle(&log, 0, &failed, &mut |_| {
            read += 1;
            Ok(())
        })
        .expect_err("no boundary will come");
        assert!(err.to_string().contains("capture failed"), "{err}");
        assert_eq!(read, 2);
    }

    /// A boundary whose count disagrees with what was read (changes missed or doubled while the
    /// cycle was followed) fails the batch instead of committing it.
    #[test]
    fn a_cycle_read_short_of_its_boundary_count_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledChangeLog::open(&dir.path().join("changelog")).unwrap();
        log.append(&[change(1), change(2)]).unwrap();
        log.commit_boundary(&boundary(2, 3)).unwrap();
        let failed = AtomicBool::new(false);
        let err = read_open_cycle(&log, 0, &failed, &mut |_| Ok(()))
            .expect_err("3 changes logged, 2 found");
        assert!(err.to_string().contains("logged 3 changes"), "{err}");
    }
}
