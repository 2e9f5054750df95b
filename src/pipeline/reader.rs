//! The reader stage between the change log and apply: reads a batch's changes from the log in
//! chunks, and converts and encodes each chunk (`target::apply::prepare_chunk`) on its own
//! thread while apply's PostgreSQL transaction works on the chunk before. The channel to apply
//! holds [`CHUNKS_IN_FLIGHT`] chunk, so at most three chunks of a batch are in memory (one being
//! prepared, one waiting, one being applied), however many changes one source transaction made.
//! It also trims the change log behind apply's commits, so a trim (seconds for a huge cycle)
//! overlaps the next batch instead of delaying it.

use crossbeam_channel::Receiver;
use tokio::sync::mpsc::Sender;

use crate::change::Change;
use crate::changelog::ChangeLog;
use crate::convert::ConvertOptions;
use crate::error::{Error, Result};
use crate::target::apply::{prepare_chunk, ApplyTable, PreparedChunk};

/// Prepared chunks waiting for apply: one, so reading and converting overlap with PostgreSQL's
/// work on the chunk before without running ahead of it.
pub(crate) const CHUNKS_IN_FLIGHT: usize = 1;

/// One batch to read: the changes with `after < seq <= through`, prepared for `tables`, sent
/// to `reply` in seq order, then `Ok(None)` for the end (or, instead, the first error).
pub(crate) struct ReadRequest {
    pub after: u64,
    pub through: u64,
    pub tables: Vec<ApplyTable>,
    pub reply: Sender<Result<Option<PreparedChunk>>>,
}

/// Work for the reader thread, done in the order sent.
pub(crate) enum Job {
    Read(ReadRequest),
    /// Trim the change log through this seq: send it only once PostgreSQL committed past it.
    Trim(u64),
}

/// Serves jobs until every sender is dropped. `Err`: a trim failed (the thread then stops, so
/// apply's next request fails and sync ends with this error).
pub(crate) fn serve(
    log: &dyn ChangeLog,
    jobs: &Receiver<Job>,
    chunk_changes: usize,
    opts: ConvertOptions,
) -> Result<()> {
    for job in jobs {
        match job {
            Job::Read(request) => read_chunks(log, &request, chunk_changes, opts),
            Job::Trim(through) => log.trim_through(through)?,
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
) {
    let chunk_changes = chunk_changes.max(1);
    let mut buf: Vec<Change> = Vec::with_capacity(chunk_changes.min(1 << 16));
    let send = |changes: Vec<Change>| -> Result<()> {
        let prepared = prepare_chunk(&request.tables, changes, opts).map(Some);
        let failed = prepared.is_err();
        if request.reply.blocking_send(prepared).is_err() || failed {
            return Err(stop_reading());
        }
        Ok(())
    };
    let read = log.for_each_in(request.after, request.through, &mut |change| {
        buf.push(change);
        if buf.len() >= chunk_changes {
            send(std::mem::replace(
                &mut buf,
                Vec::with_capacity(chunk_changes),
            ))?;
        }
        Ok(())
    });
    let rest = match read {
        Ok(()) if buf.is_empty() => Ok(()),
        Ok(()) => send(buf),
        Err(e) => Err(e),
    };
    match rest {
        Ok(()) => {
            let _ = request.reply.blocking_send(Ok(None));
        }
        Err(e) if is_stop(&e) => {}
        Err(e) => {
            let _ = request.reply.blocking_send(Err(e));
        }
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
