//! The durable change log between capture (SQLite side) and apply (PostgreSQL side): a sled
//! database under `<state dir>/changelog` with the changes (records of captured [`Change`]s in
//! blocks of a few KB, each keyed by the big-endian seq of its last change so sled's key order
//! is seq order, in trees of 65536 seqs each so a trim drops whole trees, see `segments`),
//! `boundaries` (one
//! [`Boundary`] per consistent source state, keyed by big-endian `end_seq`) and `meta` (how far
//! the log was trimmed) — and beside it the changed keys (per table and key, the seq of the key's
//! latest captured change: what `diff --changed` rechecks; trims leave them), in a SQLite file of
//! its own (see `changed_keys` for why not sled).
//!
//! It keeps two promises of DESIGN.md. Promise 2 (exactly-once apply): apply reads whole
//! boundaries, in seq order, and a boundary is only ever visible together with every change up to
//! it. Promise 3 (nothing lost): [`ChangeLog::commit_boundary`] returns only after sled flushed
//! the boundary and every change before it, so capture may then delete the source's change rows;
//! and the log is trimmed only up to a seq PostgreSQL committed past.
//!
//! Why a boundary is never durable without its changes: sled writes one log in reservation order
//! and its recovery keeps a prefix of that log (it cuts the log at the first torn or missing
//! segment), so once a boundary survives a crash, every change appended before it survives too.
//! The crash tests in this module kill a writer with SIGKILL and check exactly that.
//!
//! What a flush covers: the death of the process (kill -9, abort, the OOM killer). It does not
//! fully cover a power loss or kernel crash: sled 0.34 writes its log with `sync_file_range`,
//! which flushes neither the drive's cache nor file metadata, and never fsyncs its blob files.

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::change::{Boundary, Change, RawValue};
use crate::error::{Error, Result};
use crate::fault;

mod changed_keys;
mod segments;
use changed_keys::ChangedKeys;
use segments::{key_range, Segments};

/// The log between capture and apply. What `Ok` guarantees is in each method's doc: durable?
/// ordered? idempotent? Implementations are shared by the capture and the apply thread.
pub trait ChangeLog: Send + Sync {
    /// Appends changes (any order of calls, seqs ascending within the capture cycle). Not durable
    /// until [`ChangeLog::commit_boundary`] returns `Ok`.
    /// Idempotent: appending the same seq again overwrites it.
    fn append(&self, changes: &[Change]) -> Result<()>;

    /// Records a consistent source state and flushes: on `Ok`, every change appended so far and
    /// the boundary are durable (survive kill -9). Idempotent: committing the same boundary again
    /// overwrites it.
    fn commit_boundary(&self, boundary: &Boundary) -> Result<()>;

    /// The newest durable boundary (`None` on a fresh log). Still answers after a trim removed
    /// that boundary, so a resumed capture never mistakes a trimmed log for a fresh one.
    fn last_boundary(&self) -> Result<Option<Boundary>>;

    /// Drops every change with seq > `seq` that has no boundary yet (left by a crash
    /// mid-capture), so a resumed capture starts clean. Changes up to the newest boundary are
    /// kept even when `seq` is below it. Durable on `Ok`; idempotent.
    fn discard_after(&self, seq: u64) -> Result<()>;

    /// Boundaries with `end_seq > after`, ascending by `end_seq`, at most `limit`.
    fn boundaries_after(&self, after: u64, limit: usize) -> Result<Vec<Boundary>>;

    /// The highest seq appended (durable or not), `None` when the log holds no change. Read
    /// before [`ChangeLog::boundaries_after`] finds no boundary past a position, it bounds
    /// changes of the capture cycle still being written (see `pipeline::reader`).
    fn last_change_seq(&self) -> Result<Option<u64>>;

    /// Calls `f` for every change with `after < seq <= through`, ascending by seq, a few KB of
    /// records in memory at a time. Stops at the first error `f` or a corrupt record returns.
    fn for_each_in(
        &self,
        after: u64,
        through: u64,
        f: &mut dyn FnMut(Change) -> Result<()>,
    ) -> Result<()>;

    /// Removes changes and boundaries with seq <= `through` (PostgreSQL committed past them).
    /// Never moves backwards: trimming at or below an earlier trim is a no-op. Durable on `Ok`.
    fn trim_through(&self, through: u64) -> Result<()>;

    /// The highest seq trimmed so far (0 on a fresh log).
    fn trimmed_through(&self) -> Result<u64>;

    /// Entries and approximate bytes on disk, for status and metrics.
    fn size(&self) -> Result<ChangeLogSize>;

    /// Calls `f` with every key of `table` that has a change with seq > `after` in this log, and
    /// that change's seq (the key's latest; in key-encoding order, one key in memory at a time).
    /// Returns `false` without calling `f` when the log cannot vouch for every such key: it was
    /// created (or upgraded) after `after`, or the keys were forgotten past it. A key may also be
    /// listed whose change a resumed capture discarded: rechecking it costs a lookup, not truth.
    fn changed_keys(
        &self,
        table: &str,
        after: u64,
        f: &mut dyn FnMut(Vec<RawValue>, u64) -> Result<()>,
    ) -> Result<bool>;

    /// How many keys [`ChangeLog::changed_keys`] would list, without reading them; `None` when
    /// it would return `false`.
    fn changed_key_count(&self, table: &str, after: u64) -> Result<Option<u64>>;

    /// Forgets the changed keys of `table` with seq <= `through` (a diff found the table
    /// identical at `through`); later [`ChangeLog::changed_keys`] calls with `after < through`
    /// return `false`. Durable on `Ok`.
    fn forget_changed_keys(&self, table: &str, through: u64) -> Result<()>;
}

/// How big the change log is: entries in it and what its files take on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChangeLogSize {
    pub changes: u64,
    pub boundaries: u64,
    pub disk_bytes: u64,
}

/// What errors name as the tree of change records (they live in segment trees, see `segments`).
const CHANGES_TREE: &str = "changes";
const BOUNDARIES_TREE: &str = "boundaries";
const META_TREE: &str = "meta";
/// `meta` key: the highest seq trimmed, big-endian u64.
const META_TRIMMED_THROUGH: &[u8] = b"trimmed_through";
/// `meta` key: the newest boundary a trim removed, so `last_boundary` outlives the trim.
const META_TRIMMED_BOUNDARY: &[u8] = b"trimmed_boundary";

/// sled's page cache. Apply reads changes shortly after capture wrote them, so a cache holding a
/// few large capture cycles (10k changes of ~200 bytes are 2 MB) serves those reads from memory;
/// sled's default of 1 GiB would compete with SQLite and the PostgreSQL client for no gain.
const CACHE_CAPACITY_BYTES: u64 = 16 << 20;

/// Bytes appended between flushes inside one capture cycle. sled keeps what was written since
/// its last flush in memory, so without this a huge source transaction (one cycle, flushed once
/// at its boundary) would sit in memory whole; a flush every few MB bounds that. Durability is
/// still only promised at the boundary.
const FLUSH_EVERY_BYTES: u64 = 8 << 20;

/// Boundaries removed per pass of a trim: bounds the memory a large trim needs.
const REMOVE_CHUNK: usize = 4096;

/// Bytes of encoded changes after which an append starts a new block (see `segments`): 20–30
/// changes of the sample app's rows. sled writes a page over a quarter of its 512 KiB log
/// segments to a file of its own, and a leaf page holds up to 17 entries: blocks of this size
/// keep pages inline.
const BLOCK_BYTES: usize = 4 << 10;

/// Blocks read per pass of a removal inside a segment (a couple of MB).
const REMOVE_BLOCKS: usize = 64;

/// The change log in sled. See the module doc for the layout and why it is crash-safe.
pub struct SledChangeLog {
    path: PathBuf,
    db: sled::Db,
    changes: Segments,
    boundaries: sled::Tree,
    meta: sled::Tree,
    /// Set by `open`, right after the trees (a new store vouches from the last boundary).
    changed: Option<ChangedKeys>,
    /// Boundaries, for `size()`, counted once at open and kept by every insert and remove
    /// (sled's own `len()` scans the whole tree); the segments count their changes.
    boundary_count: AtomicU64,
    /// Bytes appended since the last flush (see [`FLUSH_EVERY_BYTES`]).
    unflushed: AtomicU64,
    /// Serialises trims and discards, so `trimmed_through` only moves forward.
    maintenance: Mutex<()>,
}

impl SledChangeLog {
    /// Opens (creating if needed) the change log in `dir`, normally `<state dir>/changelog`.
    /// Only one process may hold it open. Counts its entries, so it takes time in proportion to
    /// the untrimmed log.
    pub fn open(dir: &Path) -> Result<SledChangeLog> {
        let fail = |op: &'static str| {
            let path = dir.to_path_buf();
            move |source| Error::ChangeLog { op, path, source }
        };
        let db = open_db(dir).map_err(fail("open"))?;
        let changes = Segments::open(&db).map_err(fail("open"))?;
        let boundaries = db.open_tree(BOUNDARIES_TREE).map_err(fail("open"))?;
        let meta = db.open_tree(META_TREE).map_err(fail("open"))?;
        let mut log = SledChangeLog {
            path: dir.to_path_buf(),
            boundary_count: AtomicU64::new(boundaries.len() as u64),
            unflushed: AtomicU64::new(0),
            db,
            changes,
            boundaries,
            meta,
            changed: None,
            maintenance: Mutex::new(()),
        };
        let keys = ChangedKeys::open(&dir.with_extension("keys.db"), || {
            Ok(log.last_boundary()?.map_or(0, |b| b.end_seq))
        })?;
        log.changed = Some(keys);
        Ok(log)
    }

    fn changed(&self) -> &ChangedKeys {
        self.changed.as_ref().expect("opened with the log")
    }

    /// A big-endian u64 kept in `meta`, if set.
    fn meta_seq(&self, key: &[u8]) -> Result<Option<u64>> {
        let Some(value) = self.meta.get(key).map_err(self.fail("read"))? else {
            return Ok(None);
        };
        <[u8; 8]>::try_from(&value[..])
            .map(|b| Some(u64::from_be_bytes(b)))
            .map_err(|_| {
                let name = String::from_utf8_lossy(key);
                let reason = format!("{name} is {} bytes, not 8", value.len());
                self.corrupt(META_TREE, None, reason)
            })
    }

    fn fail(&self, op: &'static str) -> impl FnOnce(sled::Error) -> Error + '_ {
        move |source| Error::ChangeLog {
            op,
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, tree: &'static str, seq: Option<u64>, reason: String) -> Error {
        Error::ChangeLogCorrupt {
            path: self.path.clone(),
            tree,
            seq,
            reason,
        }
    }

    fn flush(&self, op: &'static str) -> Result<()> {
        self.unflushed.store(0, Ordering::Relaxed);
        self.db.flush().map_err(self.fail(op))?;
        Ok(())
    }

    fn key_seq(&self, tree: &'static str, key: &[u8]) -> Result<u64> {
        <[u8; 8]>::try_from(key)
            .map(u64::from_be_bytes)
            .map_err(|_| self.corrupt(tree, None, format!("key is {} bytes, not 8", key.len())))
    }

    fn boundary_entry(&self, key: &[u8], value: &[u8]) -> Result<Boundary> {
        let seq = self.key_seq(BOUNDARIES_TREE, key)?;
        let boundary = record::decode_boundary(value)
            .map_err(|reason| self.corrupt(BOUNDARIES_TREE, Some(seq), reason))?;
        if boundary.end_seq != seq {
            let reason = format!("holds end_seq {}", boundary.end_seq);
            return Err(self.corrupt(BOUNDARIES_TREE, Some(seq), reason));
        }
        Ok(boundary)
    }

    fn trimmed_boundary(&self) -> Result<Option<Boundary>> {
        let Some(value) = self
            .meta
            .get(META_TRIMMED_BOUNDARY)
            .map_err(self.fail("read"))?
        else {
            return Ok(None);
        };
        record::decode_boundary(&value)
            .map(Some)
            .map_err(|reason| self.corrupt(META_TREE, None, reason))
    }

    /// Removes every key of `tree` in `range`, a chunk at a time, keeping `count` exact.
    fn remove_range(
        &self,
        tree: &sled::Tree,
        range: (Bound<[u8; 8]>, Bound<[u8; 8]>),
        count: &AtomicU64,
        op: &'static str,
    ) -> Result<()> {
        loop {
            let keys = tree
                .range(range)
                .keys()
                .take(REMOVE_CHUNK)
                .collect::<sled::Result<Vec<_>>>()
                .map_err(self.fail(op))?;
            if keys.is_empty() {
                return Ok(());
            }
            let full = keys.len() == REMOVE_CHUNK;
            for key in keys {
                if tree.remove(key).map_err(self.fail(op))?.is_some() {
                    count.fetch_sub(1, Ordering::Relaxed);
                }
            }
            // What sled rewrote stays in memory until flushed: a flush after each full pass
            // keeps a trim of a huge cycle from holding the whole rewritten tree. A small trim
            // (one partial pass) is flushed once by its caller, as before.
            if full {
                self.flush(op)?;
            }
        }
    }

    /// The `(seq, encoded change)` pairs of the change-log entry `(key, value)`, ascending
    /// (see `record::entries`; never empty).
    fn entries<'v>(&self, key: &[u8], value: &'v [u8]) -> Result<Vec<(u64, &'v [u8])>> {
        let last = self.key_seq(CHANGES_TREE, key)?;
        record::entries(last, value)
            .map_err(|reason| self.corrupt(CHANGES_TREE, Some(last), reason))
    }

    /// Writes `block` into `segment` (which holds its seqs) and empties it. Entries are kept
    /// as disjoint seq ranges in key order: entries whose ranges interleave with the block's
    /// (seqs appended again, or out of order) are merged with it, the newest write of a seq
    /// winning. Appending past the end costs one lookup for that.
    fn put_block(
        &self,
        segment: &segments::Segment,
        block: &mut record::BlockWriter,
    ) -> Result<()> {
        if block.count() == 0 {
            return Ok(());
        }
        let appended = block.bytes().len() as u64 + 8;
        let mut interleaved = Vec::new();
        for entry in segment.tree.range(block.first().to_be_bytes()..) {
            let (key, value) = entry.map_err(self.fail("append"))?;
            let changes = self.entries(&key, &value)?;
            if changes[0].0 > block.last() {
                break;
            }
            interleaved.push((key, value));
        }
        if interleaved.is_empty() {
            self.insert_block(segment, block, "append")?;
        } else {
            let mut merged = std::collections::BTreeMap::new();
            for (key, value) in &interleaved {
                let changes = self.entries(key, value)?;
                segment
                    .remove_block(key, changes.len() as u64)
                    .map_err(self.fail("append"))?;
                merged.extend(changes);
            }
            let newest = self.entries(&block.last().to_be_bytes(), block.bytes())?;
            merged.extend(newest);
            let mut rewritten = record::BlockWriter::new();
            for (seq, bytes) in merged {
                rewritten.push(seq, bytes);
                if rewritten.bytes().len() >= BLOCK_BYTES {
                    self.insert_block(segment, &mut rewritten, "append")?;
                }
            }
            self.insert_block(segment, &mut rewritten, "append")?;
            block.clear();
        }
        if self.unflushed.fetch_add(appended, Ordering::Relaxed) + appended > FLUSH_EVERY_BYTES {
            self.flush("append")?;
        }
        Ok(())
    }

    /// Inserts `block` (disjoint from every entry of `segment`) under its last seq, if it holds
    /// any change, and empties it.
    fn insert_block(
        &self,
        segment: &segments::Segment,
        block: &mut record::BlockWriter,
        op: &'static str,
    ) -> Result<()> {
        if block.count() > 0 {
            segment
                .insert_block(&block.last().to_be_bytes(), block.bytes(), block.count())
                .map_err(self.fail(op))?;
        }
        block.clear();
        Ok(())
    }

    /// Removes every change with a seq in `range`: the segments it covers whole are dropped,
    /// the others lose their changes in `range` block by block.
    fn remove_changes(&self, range: (Bound<u64>, Bound<u64>), op: &'static str) -> Result<()> {
        for segment in self.changes.overlapping(range) {
            if segment.lies_within(range) {
                self.changes.drop_segment(segment).map_err(self.fail(op))?;
            } else {
                self.remove_in_segment(&segment, range, op)?;
            }
        }
        Ok(())
    }

    /// Removes the changes of `segment` with a seq in `range`: a block holding only such
    /// changes goes, one holding others too is written again without them (under the key of
    /// its new last seq). Reads [`REMOVE_BLOCKS`] blocks at a time, flushing between passes.
    fn remove_in_segment(
        &self,
        segment: &segments::Segment,
        range: (Bound<u64>, Bound<u64>),
        op: &'static str,
    ) -> Result<()> {
        let past_end = |seq: u64| match range.1 {
            Bound::Included(end) => seq > end,
            Bound::Excluded(end) => seq >= end,
            Bound::Unbounded => false,
        };
        // Blocks are keyed by their last seq: the first that may hold a seq in `range` is the
        // first whose key is at or past the range's start.
        let mut from = key_range(range).0;
        loop {
            let blocks = segment
                .tree
                .range((from, Bound::Unbounded))
                .take(REMOVE_BLOCKS)
                .collect::<sled::Result<Vec<_>>>()
                .map_err(self.fail(op))?;
            let full = blocks.len() == REMOVE_BLOCKS;
            for (key, value) in &blocks {
                let changes = self.entries(key, value)?;
                let last = changes[changes.len() - 1].0;
                if past_end(changes[0].0) {
                    return Ok(());
                }
                let mut kept = record::BlockWriter::new();
                for &(seq, bytes) in changes.iter().filter(|(seq, _)| !range.contains(seq)) {
                    kept.push(seq, bytes);
                }
                if kept.count() < changes.len() as u64 {
                    let all = changes.len() as u64;
                    segment.remove_block(key, all).map_err(self.fail(op))?;
                    self.insert_block(segment, &mut kept, op)?;
                }
                from = Bound::Excluded(last.to_be_bytes());
            }
            if !full {
                return Ok(());
            }
            // What sled rewrote stays in memory until flushed: a flush after each full pass
            // keeps a trim of a huge cycle from holding the whole rewritten tree.
            self.flush(op)?;
        }
    }

    /// Records the newest boundary a trim through `through` removes, before removing it.
    fn keep_trimmed_boundary(&self, through: u64) -> Result<()> {
        let newest = self
            .boundaries
            .range(..=through.to_be_bytes())
            .next_back()
            .transpose()
            .map_err(self.fail("trim"))?;
        if let Some((key, value)) = newest {
            self.boundary_entry(&key, &value)?;
            self.meta
                .insert(META_TRIMMED_BOUNDARY, value)
                .map_err(self.fail("trim"))?;
        }
        Ok(())
    }
}

impl ChangeLog for SledChangeLog {
    fn append(&self, changes: &[Change]) -> Result<()> {
        // The changed keys first, in the store's open transaction: `commit_boundary` commits it
        // before the boundary, so a change that survives a crash has its key there.
        self.changed().record(changes)?;
        let mut change_bytes = Vec::with_capacity(256);
        let mut block = record::BlockWriter::new();
        let mut segment: Option<segments::Segment> = None;
        for change in changes {
            let same_segment = segment.as_ref().is_some_and(|s| s.holds(change.seq));
            if !same_segment || !block.accepts(change.seq) || block.bytes().len() >= BLOCK_BYTES {
                if let Some(s) = &segment {
                    self.put_block(s, &mut block)?;
                }
            }
            if !same_segment {
                segment = Some(
                    self.changes
                        .get_or_create(change.seq)
                        .map_err(self.fail("append"))?,
                );
            }
            record::encode_change(change, &mut change_bytes);
            block.push(change.seq, &change_bytes);
        }
        if let Some(s) = &segment {
            self.put_block(s, &mut block)?;
        }
        Ok(())
    }

    fn commit_boundary(&self, boundary: &Boundary) -> Result<()> {
        self.changed().commit()?;
        let old = self
            .boundaries
            .insert(
                boundary.end_seq.to_be_bytes(),
                &record::encode_boundary(boundary)[..],
            )
            .map_err(self.fail("commit boundary"))?;
        if old.is_none() {
            self.boundary_count.fetch_add(1, Ordering::Relaxed);
        }
        self.flush("flush boundary")
    }

    fn last_boundary(&self) -> Result<Option<Boundary>> {
        // Boundaries first, then meta: a trim writes meta before it removes boundaries, so one
        // of the two reads sees the newest boundary.
        let newest = match self.boundaries.last().map_err(self.fail("read"))? {
            Some((key, value)) => Some(self.boundary_entry(&key, &value)?),
            None => None,
        };
        let trimmed = self.trimmed_boundary()?;
        Ok(newest.into_iter().chain(trimmed).max_by_key(|b| b.end_seq))
    }

    fn discard_after(&self, seq: u64) -> Result<()> {
        let _maintenance = self.maintenance.lock().unwrap_or_else(|e| e.into_inner());
        let bounded = self.last_boundary()?.map_or(0, |b| b.end_seq);
        let range = (Bound::Excluded(seq.max(bounded)), Bound::Unbounded);
        self.remove_changes(range, "discard")?;
        self.flush("discard")
    }

    fn boundaries_after(&self, after: u64, limit: usize) -> Result<Vec<Boundary>> {
        let range = (Bound::Excluded(after.to_be_bytes()), Bound::Unbounded);
        self.boundaries
            .range(range)
            .take(limit)
            .map(|entry| {
                let (key, value) = entry.map_err(self.fail("read"))?;
                self.boundary_entry(&key, &value)
            })
            .collect()
    }

    fn last_change_seq(&self) -> Result<Option<u64>> {
        let all = (Bound::Unbounded, Bound::Unbounded);
        for segment in self.changes.overlapping(all).into_iter().rev() {
            match segment.tree.last() {
                Ok(Some((key, _))) => return self.key_seq(CHANGES_TREE, &key).map(Some),
                // Empty, or dropped by a trim on another thread since the list was taken: a
                // trimmed segment holds nothing newer.
                Ok(None) | Err(sled::Error::CollectionNotFound(_)) => {}
                Err(e) => return Err(self.fail("read")(e)),
            }
        }
        Ok(None)
    }

    fn for_each_in(
        &self,
        after: u64,
        through: u64,
        f: &mut dyn FnMut(Change) -> Result<()>,
    ) -> Result<()> {
        if after >= through {
            return Ok(());
        }
        let range = (Bound::Excluded(after), Bound::Included(through));
        for segment in self.changes.overlapping(range) {
            // Entries are keyed by their last seq: the first past `after` may also hold seqs at
            // or below it; the walk ends at the first seq past `through`.
            let keys = (Bound::Excluded(after.to_be_bytes()), Bound::Unbounded);
            for entry in segment.tree.range(keys) {
                let (key, value) = entry.map_err(self.fail("read"))?;
                let changes = self.entries(&key, &value)?;
                for (seq, bytes) in changes {
                    if seq > through {
                        return Ok(());
                    }
                    if seq > after {
                        let change = record::decode_change(seq, bytes)
                            .map_err(|reason| self.corrupt(CHANGES_TREE, Some(seq), reason))?;
                        f(change)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn trim_through(&self, through: u64) -> Result<()> {
        let _maintenance = self.maintenance.lock().unwrap_or_else(|e| e.into_inner());
        if through <= self.trimmed_through()? {
            return Ok(());
        }
        // Order matters for a crash mid-trim: the trimmed boundary is saved before boundaries
        // go, and `trimmed_through` moves only after every removal, so a retry redoes the rest.
        self.keep_trimmed_boundary(through)?;
        let range = (Bound::Unbounded, Bound::Included(through));
        self.remove_range(
            &self.boundaries,
            key_range(range),
            &self.boundary_count,
            "trim",
        )?;
        self.remove_changes(range, "trim")?;
        self.meta
            .insert(META_TRIMMED_THROUGH, &through.to_be_bytes()[..])
            .map_err(self.fail("trim"))?;
        self.flush("trim")
    }

    fn trimmed_through(&self) -> Result<u64> {
        Ok(self.meta_seq(META_TRIMMED_THROUGH)?.unwrap_or(0))
    }

    fn size(&self) -> Result<ChangeLogSize> {
        Ok(ChangeLogSize {
            changes: self.changes.count(),
            boundaries: self.boundary_count.load(Ordering::Relaxed),
            disk_bytes: self.db.size_on_disk().map_err(self.fail("measure"))?,
        })
    }

    fn changed_keys(
        &self,
        table: &str,
        after: u64,
        f: &mut dyn FnMut(Vec<RawValue>, u64) -> Result<()>,
    ) -> Result<bool> {
        self.changed().for_each(table, after, f)
    }

    fn changed_key_count(&self, table: &str, after: u64) -> Result<Option<u64>> {
        self.changed().count(table, after)
    }

    fn forget_changed_keys(&self, table: &str, through: u64) -> Result<()> {
        self.changed().forget(table, through)
    }
}

/// A change log that hits named fault points around its durability boundaries, for crash tests:
/// [`fault::CHANGELOG_BEFORE_BOUNDARY`] before a boundary is written or flushed (the appended
/// changes are not durable yet), [`fault::CHANGELOG_AFTER_BOUNDARY`] right after the flush
/// returned (before the caller deletes the source's change rows), and
/// [`fault::CHANGELOG_BEFORE_TRIM`] before a trim. Unarmed, it passes every call through.
pub struct FaultyChangeLog<L: ChangeLog> {
    inner: L,
}

impl<L: ChangeLog> FaultyChangeLog<L> {
    pub fn new(inner: L) -> FaultyChangeLog<L> {
        FaultyChangeLog { inner }
    }

    pub fn into_inner(self) -> L {
        self.inner
    }
}

impl<L: ChangeLog> ChangeLog for FaultyChangeLog<L> {
    fn append(&self, changes: &[Change]) -> Result<()> {
        self.inner.append(changes)
    }

    fn commit_boundary(&self, boundary: &Boundary) -> Result<()> {
        fault::hit(fault::CHANGELOG_BEFORE_BOUNDARY);
        self.inner.commit_boundary(boundary)?;
        fault::hit(fault::CHANGELOG_AFTER_BOUNDARY);
        Ok(())
    }

    fn last_boundary(&self) -> Result<Option<Boundary>> {
        self.inner.last_boundary()
    }

    fn discard_after(&self, seq: u64) -> Result<()> {
        self.inner.discard_after(seq)
    }

    fn boundaries_after(&self, after: u64, limit: usize) -> Result<Vec<Boundary>> {
        self.inner.boundaries_after(after, limit)
    }

    fn last_change_seq(&self) -> Result<Option<u64>> {
        self.inner.last_change_seq()
    }

    fn for_each_in(
        &self,
        after: u64,
        through: u64,
        f: &mut dyn FnMut(Change) -> Result<()>,
    ) -> Result<()> {
        self.inner.for_each_in(after, through, f)
    }

    fn trim_through(&self, through: u64) -> Result<()> {
        fault::hit(fault::CHANGELOG_BEFORE_TRIM);
        self.inner.trim_through(through)
    }

    fn trimmed_through(&self) -> Result<u64> {
        self.inner.trimmed_through()
    }

    fn size(&self) -> Result<ChangeLogSize> {
        self.inner.size()
    }

    fn changed_keys(
        &self,
        table: &str,
        after: u64,
        f: &mut dyn FnMut(Vec<RawValue>, u64) -> Result<()>,
    ) -> Result<bool> {
        self.inner.changed_keys(table, after, f)
    }

    fn changed_key_count(&self, table: &str, after: u64) -> Result<Option<u64>> {
        self.inner.changed_key_count(table, after)
    }

    fn forget_changed_keys(&self, table: &str, through: u64) -> Result<()> {
        self.inner.forget_changed_keys(table, through)
    }
}

/// The on-disk record format, version 1. Compact and binary, so blobs are stored as they are:
///
/// ```text
/// change   := 0x01 table:bytes key:values image
/// image    := 0x00 (row gone) | 0x01 values
/// values   := count:varint value*
/// value    := 0x00                   Null
///           | 0x01 zigzag:varint     Integer
///           | 0x02 bits:u64le        Real (bit-exact: NaN payloads, -0.0, infinities)
///           | 0x03 bytes             Text (raw bytes, may be invalid UTF-8)
///           | 0x04 bytes             Blob
/// bytes    := len:varint byte*
/// block    := 0x02 (seq-step:varint change:bytes)+
/// boundary := 0x01 end_seq:u64le committed_at:f64-bits-le changes:u64le
/// key      := values                   (a key in the changed-key store)
/// ```
///
/// A change-log entry is a block (the changes of one append, keyed by the big-endian seq of its
/// last change; each seq-step is the seq's distance from the previous one, the first is the seq
/// itself) or, in a log written before blocks, one change keyed by its seq. Decoding checks
/// every length against the bytes left and rejects trailing bytes, so a corrupt record is an
/// error, never a panic or a huge allocation.
mod record {
    use crate::change::{Boundary, Change, RawValue};

    const VERSION: u8 = 1;
    /// First byte of a block (see the format above); a change starts with [`VERSION`].
    const BLOCK: u8 = 2;
    const TAG_NULL: u8 = 0;
    const TAG_INTEGER: u8 = 1;
    const TAG_REAL: u8 = 2;
    const TAG_TEXT: u8 = 3;
    const TAG_BLOB: u8 = 4;
    const BOUNDARY_LEN: usize = 25;

    /// Why a record could not be decoded; the caller adds the tree and the seq.
    pub(super) type Decoded<T> = std::result::Result<T, String>;

    pub(super) fn encode_change(change: &Change, out: &mut Vec<u8>) {
        out.clear();
        out.push(VERSION);
        put_bytes(out, change.table.as_bytes());
        put_values(out, &change.key);
        match &change.image {
            None => out.push(0),
            Some(image) => {
                out.push(1);
                put_values(out, image);
            }
        }
    }

    pub(super) fn decode_change(seq: u64, bytes: &[u8]) -> Decoded<Change> {
        let mut r = Reader { rest: bytes };
        r.version()?;
        let table = String::from_utf8(r.bytes("table")?.to_vec())
            .map_err(|_| "table name is not UTF-8".to_string())?;
        let key = r.values("key")?;
        let image = match r.byte("image flag")? {
            0 => None,
            1 => Some(r.values("image")?),
            other => return Err(format!("image flag {other} is neither 0 nor 1")),
        };
        r.finish()?;
        Ok(Change {
            seq,
            table,
            key,
            image,
        })
    }

    /// Changes with ascending seqs, encoded into one block.
    pub(super) struct BlockWriter {
        bytes: Vec<u8>,
        first: u64,
        last: u64,
        count: u64,
    }

    impl BlockWriter {
        pub(super) fn new() -> BlockWriter {
            BlockWriter {
                bytes: vec![BLOCK],
                first: 0,
                last: 0,
                count: 0,
            }
        }

        /// Whether a change with this seq may follow the block's changes.
        pub(super) fn accepts(&self, seq: u64) -> bool {
            self.count == 0 || seq > self.last
        }

        /// Adds an encoded change (see [`encode_change`]); its seq must be [`Self::accepts`]ed.
        pub(super) fn push(&mut self, seq: u64, change: &[u8]) {
            debug_assert!(self.accepts(seq), "seq {seq} after {}", self.last);
            if self.count == 0 {
                self.first = seq;
                put_varint(&mut self.bytes, seq);
            } else {
                put_varint(&mut self.bytes, seq - self.last);
            }
            put_bytes(&mut self.bytes, change);
            self.last = seq;
            self.count += 1;
        }

        pub(super) fn bytes(&self) -> &[u8] {
            &self.bytes
        }

        pub(super) fn first(&self) -> u64 {
            self.first
        }

        pub(super) fn last(&self) -> u64 {
            self.last
        }

        pub(super) fn count(&self) -> u64 {
            self.count
        }

        pub(super) fn clear(&mut self) {
            self.bytes.truncate(1);
            self.count = 0;
        }
    }

    /// The `(seq, encoded change)` pairs of the change-log entry keyed by seq `key`, ascending:
    /// a block's changes (the last of which must be `key`), or the one change of an entry
    /// written before blocks.
    pub(super) fn entries(key: u64, value: &[u8]) -> Decoded<Vec<(u64, &[u8])>> {
        match value.first() {
            Some(&VERSION) => return Ok(vec![(key, value)]),
            Some(&BLOCK) => {}
            Some(other) => return Err(format!("unknown record version {other}")),
            None => return Err("empty entry".into()),
        }
        let mut r = Reader { rest: &value[1..] };
        let mut out = Vec::new();
        let mut seq = 0u64;
        while !r.rest.is_empty() {
            let step = r.varint("seq step")?;
            if !out.is_empty() && step == 0 {
                return Err(format!("block repeats seq {seq}"));
            }
            seq = seq
                .checked_add(step)
                .ok_or_else(|| format!("seq after {seq} overflows"))?;
            out.push((seq, r.bytes("change")?));
        }
        match out.last() {
            Some(&(last, _)) if last == key => Ok(out),
            Some(&(last, _)) => Err(format!("block ends at seq {last}, not its key")),
            None => Err("empty block".into()),
        }
    }

    /// Key values as the changed-key store keeps them.
    pub(super) fn encode_key_values(key: &[RawValue], out: &mut Vec<u8>) {
        out.clear();
        put_values(out, key);
    }

    pub(super) fn decode_key_values(bytes: &[u8]) -> Decoded<Vec<RawValue>> {
        let mut r = Reader { rest: bytes };
        let key = r.values("key")?;
        r.finish()?;
        Ok(key)
    }

    pub(super) fn encode_boundary(boundary: &Boundary) -> [u8; BOUNDARY_LEN] {
        let mut out = [0u8; BOUNDARY_LEN];
        out[0] = VERSION;
        out[1..9].copy_from_slice(&boundary.end_seq.to_le_bytes());
        out[9..17].copy_from_slice(&boundary.committed_at.to_bits().to_le_bytes());
        out[17..25].copy_from_slice(&boundary.changes.to_le_bytes());
        out
    }

    pub(super) fn decode_boundary(bytes: &[u8]) -> Decoded<Boundary> {
        let mut r = Reader { rest: bytes };
        r.version()?;
        let boundary = Boundary {
            end_seq: u64::from_le_bytes(r.fixed8("end_seq")?),
            committed_at: f64::from_bits(u64::from_le_bytes(r.fixed8("committed_at")?)),
            changes: u64::from_le_bytes(r.fixed8("changes")?),
        };
        r.finish()?;
        Ok(boundary)
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    fn put_values(out: &mut Vec<u8>, values: &[RawValue]) {
        put_varint(out, values.len() as u64);
        for value in values {
            match value {
                RawValue::Null => out.push(TAG_NULL),
                RawValue::Integer(i) => {
                    out.push(TAG_INTEGER);
                    put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
                }
                RawValue::Real(f) => {
                    out.push(TAG_REAL);
                    out.extend_from_slice(&f.to_bits().to_le_bytes());
                }
                RawValue::Text(bytes) => {
                    out.push(TAG_TEXT);
                    put_bytes(out, bytes);
                }
                RawValue::Blob(bytes) => {
                    out.push(TAG_BLOB);
                    put_bytes(out, bytes);
                }
            }
        }
    }

    struct Reader<'a> {
        rest: &'a [u8],
    }

    impl<'a> Reader<'a> {
        fn version(&mut self) -> Decoded<()> {
            match self.byte("version")? {
                VERSION => Ok(()),
                other => Err(format!(
                    "unknown record version {other} (this build reads {VERSION})"
                )),
            }
        }

        fn take(&mut self, n: usize, what: &str) -> Decoded<&'a [u8]> {
            if n > self.rest.len() {
                return Err(format!("{what}: needs {n} bytes, {} left", self.rest.len()));
            }
            let (head, tail) = self.rest.split_at(n);
            self.rest = tail;
            Ok(head)
        }

        fn byte(&mut self, what: &str) -> Decoded<u8> {
            Ok(self.take(1, what)?[0])
        }

        fn fixed8(&mut self, what: &str) -> Decoded<[u8; 8]> {
            let mut out = [0u8; 8];
            out.copy_from_slice(self.take(8, what)?);
            Ok(out)
        }

        fn varint(&mut self, what: &str) -> Decoded<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let b = self.byte(what)?;
                let low = u64::from(b & 0x7f);
                if shift == 63 && low > 1 {
                    return Err(format!("{what}: varint overflows 64 bits"));
                }
                v |= low << shift;
                if b & 0x80 == 0 {
                    return Ok(v);
                }
            }
            Err(format!("{what}: varint longer than 10 bytes"))
        }

        /// A length or count, checked against the bytes left (each item takes at least one).
        fn length(&mut self, what: &str) -> Decoded<usize> {
            let n = self.varint(what)?;
            match usize::try_from(n) {
                Ok(n) if n <= self.rest.len() => Ok(n),
                _ => Err(format!(
                    "{what}: length {n} exceeds the {} bytes left",
                    self.rest.len()
                )),
            }
        }

        fn bytes(&mut self, what: &str) -> Decoded<&'a [u8]> {
            let n = self.length(what)?;
            self.take(n, what)
        }

        fn values(&mut self, what: &str) -> Decoded<Vec<RawValue>> {
            let n = self.length(what)?;
            (0..n).map(|_| self.value(what)).collect()
        }

        fn value(&mut self, what: &str) -> Decoded<RawValue> {
            Ok(match self.byte(what)? {
                TAG_NULL => RawValue::Null,
                TAG_INTEGER => {
                    let z = self.varint(what)?;
                    RawValue::Integer(((z >> 1) as i64) ^ -((z & 1) as i64))
                }
                TAG_REAL => RawValue::Real(f64::from_bits(u64::from_le_bytes(self.fixed8(what)?))),
                TAG_TEXT => RawValue::Text(self.bytes(what)?.to_vec()),
                TAG_BLOB => RawValue::Blob(self.bytes(what)?.to_vec()),
                tag => return Err(format!("{what}: unknown value tag {tag}")),
            })
        }

        fn finish(self) -> Decoded<()> {
            if self.rest.is_empty() {
                Ok(())
            } else {
                Err(format!("{} trailing bytes", self.rest.len()))
            }
        }
    }
}

/// How long `open` waits for the directory lock: a handle dropped a moment ago in this process
/// releases it only when sled's background flusher thread ends (a blink); a lock held by
/// another running sync stays held, and that is reported as the error it is.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn open_db(dir: &Path) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn open_temp() -> (tempfile::TempDir, SledChangeLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = SledChangeLog::open(&dir.path().join("changelog")).unwrap();
        (dir, log)
    }

    fn change(seq: u64, image: Option<Vec<RawValue>>) -> Change {
        Change {
            seq,
            table: "t".into(),
            key: vec![RawValue::Integer(seq as i64)],
            image,
        }
    }

    fn boundary(end_seq: u64, changes: u64) -> Boundary {
        Boundary {
            end_seq,
            committed_at: 1_700_000_000.5,
            changes,
        }
    }

    fn collect(log: &dyn ChangeLog, after: u64, through: u64) -> Vec<Change> {
        let mut out = Vec::new();
        log.for_each_in(after, through, &mut |c| {
            out.push(c);
            Ok(())
        })
        .unwrap();
        out
    }

    fn seqs(changes: &[Change]) -> Vec<u64> {
        changes.iter().map(|c| c.seq).collect()
    }

    /// Equality that tells NaN payloads and -0.0 apart, as the record must.
    fn same_values(a: &[RawValue], b: &[RawValue]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|pair| match pair {
                (RawValue::Real(x), RawValue::Real(y)) => x.to_bits() == y.to_bits(),
                (x, y) => x == y,
            })
    }

    fn same_change(a: &Change, b: &Change) -> bool {
        a.seq == b.seq
            && a.table == b.table
            && same_values(&a.key, &b.key)
            && match (&a.image, &b.image) {
                (None, None) => true,
                (Some(x), Some(y)) => same_values(x, y),
                _ => false,
            }
    }

    fn every_kind() -> Vec<RawValue> {
        vec![
            RawValue::Null,
            RawValue::Integer(0),
            RawValue::Integer(-1),
            RawValue::Integer(i64::MIN),
            RawValue::Integer(i64::MAX),
            RawValue::Real(f64::NAN),
            RawValue::Real(f64::from_bits(0x7ff8_dead_beef_0001)),
            RawValue::Real(f64::INFINITY),
            RawValue::Real(f64::NEG_INFINITY),
            RawValue::Real(-0.0),
            RawValue::Real(f64::MIN_POSITIVE / 2.0),
            RawValue::Text(vec![]),
            RawValue::Text(vec![0xff, 0xfe, 0x00, b'a', 0xc3]),
            RawValue::Text("héllo ✓".as_bytes().to_vec()),
            RawValue::Blob(vec![]),
            RawValue::Blob((0..=255).collect()),
            RawValue::Blob(vec![0xab; 1 << 20]),
        ]
    }

    #[test]
    fn every_value_kind_round_trips_through_the_log() {
        let (_dir, log) = open_temp();
        let written = vec![
            Change {
                seq: 7,
                table: "weird \"table\" ✓".into(),
                key: every_kind(),
                image: Some(every_kind()),
            },
            change(8, None),
            change(9, Some(vec![])),
        ];
        log.append(&written).unwrap();
        log.commit_boundary(&boundary(9, 3)).unwrap();
        let read = collect(&log, 0, 9);
        assert_eq!(read.len(), 3);
        for (w, r) in written.iter().zip(&read) {
            assert!(same_change(w, r), "{} did not round-trip", w.seq);
        }
    }

    fn raw_value() -> impl Strategy<Value = RawValue> {
        prop_oneof![
            Just(RawValue::Null),
            any::<i64>().prop_map(RawValue::Integer),
            any::<u64>().prop_map(|bits| RawValue::Real(f64::from_bits(bits))),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(RawValue::Text),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(RawValue::Blob),
        ]
    }

    fn any_change() -> impl Strategy<Value = Change> {
        let values = || proptest::collection::vec(raw_value(), 0..6);
        (
            any::<u64>(),
            "\\PC{0,12}",
            values(),
            proptest::option::of(values()),
        )
            .prop_map(|(seq, table, key, image)| Change {
                seq,
                table,
                key,
                image,
            })
    }

    proptest! {
        #[test]
        fn any_change_round_trips_through_the_record(c in any_change()) {
            let mut buf = Vec::new();
            record::encode_change(&c, &mut buf);
            let back = record::decode_change(c.seq, &buf).unwrap();
            prop_assert!(same_change(&c, &back), "{c:?} came back as {back:?}");
        }

        #[test]
        fn a_damaged_record_is_an_error_never_a_panic(
            c in any_change(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut buf = Vec::new();
            record::encode_change(&c, &mut buf);
            let truncated = &buf[..cut.index(buf.len())];
            prop_assert!(record::decode_change(c.seq, truncated).is_err());
            let mut flipped = buf.clone();
            let at = flip.index(flipped.len());
            flipped[at] ^= 0x80;
            let _ = record::decode_change(c.seq, &flipped);
            let _ = record::decode_change(c.seq, &garbage);
            let _ = record::decode_boundary(&garbage);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn the_log_returns_the_newest_write_of_each_seq_in_seq_order(
            batches in proptest::collection::vec(
                proptest::collection::vec(
                    // Few distinct seqs, so later appends overwrite earlier ones.
                    (1u64..40, any_change()).prop_map(|(seq, c)| Change { seq, ..c }),
                    0..20,
                ),
                1..5,
            ),
        ) {
            let (_dir, log) = open_temp();
            let mut expected = std::collections::BTreeMap::new();
            for batch in &batches {
                log.append(batch).unwrap();
                expected.extend(batch.iter().map(|c| (c.seq, c.clone())));
            }
            let read = collect(&log, 0, u64::MAX);
            prop_assert_eq!(read.len(), expected.len());
            for (e, r) in expected.values().zip(&read) {
                prop_assert!(same_change(e, r), "{e:?} read back as {r:?}");
            }
            prop_assert_eq!(log.size().unwrap().changes, expected.len() as u64);
        }
    }

    #[test]
    fn keys_are_big_endian_so_seq_order_is_key_order() {
        let (_dir, log) = open_temp();
        let order = [1u64 << 40, 255, 256, 1, u64::MAX, 65_536, 1 << 32];
        log.append(&order.map(|s| change(s, None))).unwrap();
        let mut sorted = order.to_vec();
        sorted.sort_unstable();
        assert_eq!(seqs(&collect(&log, 0, u64::MAX)), sorted);
    }

    #[test]
    fn for_each_in_excludes_after_and_includes_through() {
        let (_dir, log) = open_temp();
        log.append(&(1..=10).map(|s| change(s, None)).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(seqs(&collect(&log, 3, 6)), [4, 5, 6]);
        assert_eq!(seqs(&collect(&log, 0, 1)), [1]);
        assert_eq!(seqs(&collect(&log, 9, u64::MAX)), [10]);
        assert!(collect(&log, 6, 6).is_empty());
        assert!(collect(&log, 7, 3).is_empty());
        assert!(collect(&log, u64::MAX, u64::MAX).is_empty());
        let mut seen = 0;
        let stopped = log.for_each_in(0, 10, &mut |_| {
            seen += 1;
            Err(Error::Data {
                table: "t".into(),
                reason: "stop".into(),
            })
        });
        assert!(
            stopped.is_err() && seen == 1,
            "an error from f stops the walk"
        );
    }

    #[test]
    fn appending_a_seq_again_overwrites_it() {
        let (_dir, log) = open_temp();
        log.append(&[change(5, None)]).unwrap();
        log.append(&[change(5, Some(vec![RawValue::Integer(2)]))])
            .unwrap();
        let read = collect(&log, 0, 10);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].image, Some(vec![RawValue::Integer(2)]));
        assert_eq!(log.size().unwrap().changes, 1);
    }

    #[test]
    fn boundaries_after_is_ascending_exclusive_and_limited() {
        let (_dir, log) = open_temp();
        assert_eq!(log.last_boundary().unwrap(), None);
        for end in [30, 10, 20, 40] {
            log.commit_boundary(&boundary(end, 1)).unwrap();
        }
        let ends = |after, limit| -> Vec<u64> {
            log.boundaries_after(after, limit)
                .unwrap()
                .iter()
                .map(|b| b.end_seq)
                .collect()
        };
        assert_eq!(ends(0, usize::MAX), [10, 20, 30, 40]);
        assert_eq!(ends(10, 2), [20, 30]);
        assert!(ends(40, 5).is_empty());
        assert!(ends(u64::MAX, 5).is_empty());
        assert_eq!(log.last_boundary().unwrap(), Some(boundary(40, 1)));
    }

    #[test]
    fn trim_never_moves_backwards() {
        let (_dir, log) = open_temp();
        log.append(&(1..=30).map(|s| change(s, None)).collect::<Vec<_>>())
            .unwrap();
        for end in [10, 20, 30] {
            log.commit_boundary(&boundary(end, 10)).unwrap();
        }
        assert_eq!(log.trimmed_through().unwrap(), 0);
        log.trim_through(20).unwrap();
        assert_eq!(log.trimmed_through().unwrap(), 20);
        log.trim_through(5).unwrap();
        log.trim_through(20).unwrap();
        assert_eq!(log.trimmed_through().unwrap(), 20);
        assert_eq!(
            seqs(&collect(&log, 0, u64::MAX)),
            (21..=30).collect::<Vec<_>>()
        );
        assert_eq!(log.boundaries_after(0, 10).unwrap(), [boundary(30, 10)]);
        let size = log.size().unwrap();
        assert_eq!((size.changes, size.boundaries), (10, 1));
    }

    #[test]
    fn last_boundary_outlives_the_trim_that_removed_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = SledChangeLog::open(dir.path()).unwrap();
            log.append(&(1..=12).map(|s| change(s, None)).collect::<Vec<_>>())
                .unwrap();
            log.commit_boundary(&boundary(10, 10)).unwrap();
            log.trim_through(10).unwrap();
            assert!(log.boundaries_after(0, 10).unwrap().is_empty());
            assert_eq!(log.last_boundary().unwrap(), Some(boundary(10, 10)));
        }
        let log = SledChangeLog::open(dir.path()).unwrap();
        assert_eq!(log.last_boundary().unwrap(), Some(boundary(10, 10)));
        assert_eq!(log.trimmed_through().unwrap(), 10);
        log.discard_after(0).unwrap();
        assert!(
            collect(&log, 0, u64::MAX).is_empty(),
            "11 and 12 had no boundary"
        );
    }

    #[test]
    fn discard_after_removes_only_changes_without_a_boundary() {
        let (_dir, log) = open_temp();
        log.append(&(1..=15).map(|s| change(s, None)).collect::<Vec<_>>())
            .unwrap();
        log.commit_boundary(&boundary(10, 10)).unwrap();
        log.discard_after(5).unwrap();
        assert_eq!(
            seqs(&collect(&log, 0, u64::MAX)),
            (1..=10).collect::<Vec<_>>()
        );
        log.append(&(11..=15).map(|s| change(s, None)).collect::<Vec<_>>())
            .unwrap();
        log.discard_after(12).unwrap();
        assert_eq!(
            seqs(&collect(&log, 0, u64::MAX)),
            (1..=12).collect::<Vec<_>>()
        );
        assert_eq!(log.boundaries_after(0, 10).unwrap(), [boundary(10, 10)]);
        assert_eq!(log.size().unwrap().changes, 12);
    }

    #[test]
    fn reopening_recounts_and_keeps_everything_committed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = SledChangeLog::open(dir.path()).unwrap();
            log.append(&(1..=5).map(|s| change(s, None)).collect::<Vec<_>>())
                .unwrap();
            log.commit_boundary(&boundary(5, 5)).unwrap();
            assert!(log.size().unwrap().disk_bytes > 0);
        }
        let log = SledChangeLog::open(dir.path()).unwrap();
        let size = log.size().unwrap();
        assert_eq!((size.changes, size.boundaries), (5, 1));
        assert_eq!(seqs(&collect(&log, 0, 5)), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_second_open_of_the_same_log_is_refused() {
        let (dir, _log) = open_temp();
        let err = SledChangeLog::open(&dir.path().join("changelog"))
            .err()
            .expect("the log is locked");
        assert!(
            matches!(err, Error::ChangeLog { op: "open", .. }),
            "{err:?}"
        );
        assert!(err.hint().unwrap().contains("only one"));
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_its_seq() {
        let (_dir, log) = open_temp();
        log.append(&[change(1, None)]).unwrap();
        let segment = log.changes.get_or_create(42).unwrap();
        segment
            .tree
            .insert(42u64.to_be_bytes(), &[1u8, 200][..])
            .unwrap();
        let err = log.for_each_in(0, 100, &mut |_| Ok(())).unwrap_err();
        assert!(
            matches!(err, Error::ChangeLogCorrupt { seq: Some(42), .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("seq 42"), "{err}");
        log.boundaries
            .insert(7u64.to_be_bytes(), &[9u8][..])
            .unwrap();
        let err = log.boundaries_after(0, 10).unwrap_err();
        assert!(
            err.to_string().contains("unknown record version 9"),
            "{err}"
        );
        assert!(err.hint().is_some());
    }

    #[test]
    fn the_fault_wrapper_passes_through_when_unarmed() {
        assert!(
            std::env::var(fault::FAULT_ENV).is_err(),
            "tests run unarmed"
        );
        let (_dir, inner) = open_temp();
        let log = FaultyChangeLog::new(inner);
        log.append(&(1..=4).map(|s| change(s, None)).collect::<Vec<_>>())
            .unwrap();
        log.commit_boundary(&boundary(3, 3)).unwrap();
        log.discard_after(3).unwrap();
        assert_eq!(log.last_boundary().unwrap(), Some(boundary(3, 3)));
        assert_eq!(log.boundaries_after(0, 9).unwrap(), [boundary(3, 3)]);
        assert_eq!(seqs(&collect(&log, 0, 9)), [1, 2, 3]);
        log.trim_through(2).unwrap();
        assert_eq!(log.trimmed_through().unwrap(), 2);
        assert_eq!(log.size().unwrap().changes, 1);
        assert_eq!(seqs(&collect(&log.into_inner(), 0, 9)), [3]);
    }

    #[test]
    fn blocks_are_cut_by_trims_discards_and_appends_again() {
        let dir = tempfile::tempdir().unwrap();
        let image = |s: u64| Some(vec![RawValue::Text(vec![b'x'; 100 + s as usize % 50])]);
        {
            let log = SledChangeLog::open(dir.path()).unwrap();
            // ~120 bytes a change: 1000 changes make several blocks of BLOCK_BYTES.
            log.append(&(1..=1000).map(|s| change(s, image(s))).collect::<Vec<_>>())
                .unwrap();
            let blocks = log.changes.get_or_create(1).unwrap().tree.len();
            assert!((20..100).contains(&blocks), "{blocks} blocks");
            log.commit_boundary(&boundary(900, 900)).unwrap();
            // Mid-block: keeps 901..=950 of the blocks that straddle 950.
            log.discard_after(950).unwrap();
            assert_eq!(log.size().unwrap().changes, 950);
            assert_eq!(
                seqs(&collect(&log, 940, u64::MAX)),
                (941..=950).collect::<Vec<_>>()
            );
            log.discard_after(0).unwrap();
            assert_eq!(log.last_change_seq().unwrap(), Some(900));
            log.trim_through(333).unwrap();
            assert_eq!(
                seqs(&collect(&log, 0, 340)),
                (334..=340).collect::<Vec<_>>()
            );
            // A seq appended again replaces its change inside a block; new seqs interleave.
            log.append(&[
                change(500, Some(vec![RawValue::Integer(7)])),
                change(950, None),
            ])
            .unwrap();
            let read = collect(&log, 499, 501);
            assert_eq!(seqs(&read), [500, 501]);
            assert_eq!(read[0].image, Some(vec![RawValue::Integer(7)]));
            assert_eq!(read[1].image, image(501));
            assert_eq!(log.size().unwrap().changes, 900 - 333 + 1);
        }
        let log = SledChangeLog::open(dir.path()).unwrap();
        assert_eq!(log.size().unwrap().changes, 900 - 333 + 1);
        let all = seqs(&collect(&log, 0, u64::MAX));
        assert_eq!(all, (334..=900).chain([950]).collect::<Vec<_>>());
    }

    #[test]
    fn entries_of_one_change_each_read_and_trim_beside_blocks() {
        let (_dir, log) = open_temp();
        log.append(&(10..=20).map(|s| change(s, None)).collect::<Vec<_>>())
            .unwrap();
        // As a log written before blocks keeps them: one change per entry, keyed by its seq.
        let segment = log.changes.get_or_create(0).unwrap();
        let mut buf = Vec::new();
        for seq in [3, 5, 30] {
            record::encode_change(&change(seq, Some(vec![RawValue::Integer(1)])), &mut buf);
            segment
                .insert_block(&u64::to_be_bytes(seq), &buf, 1)
                .unwrap();
        }
        let expected: Vec<u64> = [3, 5].into_iter().chain(10..=20).chain([30]).collect();
        assert_eq!(seqs(&collect(&log, 0, u64::MAX)), expected);
        log.commit_boundary(&boundary(30, 14)).unwrap();
        log.trim_through(12).unwrap();
        assert_eq!(
            seqs(&collect(&log, 0, u64::MAX)),
            [13, 14, 15, 16, 17, 18, 19, 20, 30]
        );
        assert_eq!(log.size().unwrap().changes, 9);
    }

    fn segment_trees(log: &SledChangeLog) -> usize {
        log.db
            .tree_names()
            .iter()
            .filter(|n| n.starts_with(b"changes."))
            .count()
    }

    #[test]
    fn trims_and_discards_drop_the_segments_they_cover_and_keep_exact_counts() {
        let s = segments::SEGMENT_SEQS;
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<u64> = vec![1, s - 1, s, s + 1, 2 * s - 1, 2 * s, 2 * s + 5, 3 * s + 1];
        {
            let log = SledChangeLog::open(dir.path()).unwrap();
            log.append(&all.iter().map(|&q| change(q, None)).collect::<Vec<_>>())
                .unwrap();
            log.commit_boundary(&boundary(2 * s + 5, 7)).unwrap();
            assert_eq!(segment_trees(&log), 4);
            assert_eq!(
                seqs(&collect(&log, s - 1, 2 * s)),
                [s, s + 1, 2 * s - 1, 2 * s]
            );
            assert_eq!(log.last_change_seq().unwrap(), Some(3 * s + 1));
            // 3s+1 has no boundary: its segment goes whole.
            log.discard_after(0).unwrap();
            assert_eq!(segment_trees(&log), 3);
            assert_eq!(log.last_change_seq().unwrap(), Some(2 * s + 5));
            // Segments 0 and 1 lie within the trim and go whole; 2s leaves segment 2 by key.
            log.trim_through(2 * s).unwrap();
            assert_eq!(segment_trees(&log), 1);
            assert_eq!(seqs(&collect(&log, 0, u64::MAX)), [2 * s + 5]);
            assert_eq!(log.size().unwrap().changes, 1);
        }
        let log = SledChangeLog::open(dir.path()).unwrap();
        assert_eq!(log.size().unwrap().changes, 1);
        assert_eq!(seqs(&collect(&log, 0, u64::MAX)), [2 * s + 5]);
        log.append(&[change(4 * s, None)]).unwrap();
        assert_eq!(seqs(&collect(&log, 2 * s + 5, u64::MAX)), [4 * s]);
        log.trim_through(2 * s + 5).unwrap();
        assert_eq!(log.last_change_seq().unwrap(), Some(4 * s));
        assert_eq!(log.size().unwrap().changes, 1);
    }

    #[test]
    fn a_log_written_before_segments_is_moved_into_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = segments::SEGMENT_SEQS;
        let written: Vec<Change> = [3, s + 2, 5 * s].iter().map(|&q| change(q, None)).collect();
        {
            let db = open_db(dir.path()).unwrap();
            let legacy = db.open_tree("changes").unwrap();
            let mut buf = Vec::new();
            for c in &written {
                record::encode_change(c, &mut buf);
                legacy.insert(c.seq.to_be_bytes(), buf.as_slice()).unwrap();
            }
            db.open_tree(BOUNDARIES_TREE)
                .unwrap()
                .insert(
                    (5 * s).to_be_bytes(),
                    &record::encode_boundary(&boundary(5 * s, 3))[..],
                )
                .unwrap();
            db.flush().unwrap();
        }
        let log = SledChangeLog::open(dir.path()).unwrap();
        assert!(!log.db.tree_names().iter().any(|n| n == b"changes"));
        assert_eq!(segment_trees(&log), 3);
        let read = collect(&log, 0, u64::MAX);
        assert!(read.len() == 3 && read.iter().zip(&written).all(|(r, w)| same_change(r, w)));
        assert_eq!(log.size().unwrap().changes, 3);
        assert_eq!(log.boundaries_after(0, 9).unwrap(), [boundary(5 * s, 3)]);
    }

    // ---- crash tests: a child process (this test binary, re-run) writes; the parent kills it ----

    /// Selects what the re-run test binary does in `crash_child`: `<role>:<dir>`.
    const CHILD_ENV: &str = "SQLITE2PG_CHANGELOG_CHILD";
    /// The line a child prints after `commit_boundary` returned `Ok`.
    const COMMITTED: &str = "committed ";
    /// How long a child writer runs at most, so a lost parent never leaves it running.
    const CHILD_MAX_RUN: Duration = Duration::from_secs(30);

    /// Boundary `i` (1-based) of the deterministic capture the children write: it ends at
    /// `i * 1000`, and its changes have gaps in their seqs (like coalesced capture cycles).
    fn planned(i: u64) -> (Boundary, Vec<Change>) {
        let start = (i - 1) * 1000 + 1;
        let n = 1 + (i * 37) % 300;
        let changes = (0..n)
            .map(|j| {
                let seq = start + 3 * j;
                let image = (seq % 5 != 0).then(|| {
                    vec![
                        RawValue::Integer(seq as i64),
                        RawValue::Text(format!("row {seq}").into_bytes()),
                        RawValue::Blob(vec![seq as u8; 200]),
                    ]
                });
                Change {
                    table: format!("t{}", i % 3),
                    ..change(seq, image)
                }
            })
            .collect();
        (boundary(i * 1000, n), changes)
    }

    fn write_planned(log: &dyn ChangeLog, i: u64) -> Boundary {
        let (b, changes) = planned(i);
        for chunk in changes.chunks(64) {
            log.append(chunk).unwrap();
        }
        log.commit_boundary(&b).unwrap();
        b
    }

    /// The child's side of the crash tests; does nothing unless `CHILD_ENV` is set.
    #[test]
    fn crash_child() {
        let Ok(spec) = std::env::var(CHILD_ENV) else {
            return;
        };
        let (role, dir) = spec.split_once(':').unwrap();
        let log = FaultyChangeLog::new(SledChangeLog::open(Path::new(dir)).unwrap());
        let mut out = std::io::stdout().lock();
        let started = Instant::now();
        let mut i = log.last_boundary().unwrap().map_or(0, |b| b.end_seq / 1000);
        while started.elapsed() < CHILD_MAX_RUN && (role == "writer" || i < 10) {
            i += 1;
            let b = write_planned(&log, i);
            writeln!(out, "{COMMITTED}{}", b.end_seq).unwrap();
            out.flush().unwrap();
        }
        if role == "trimmer" {
            log.trim_through(2000).unwrap();
        }
    }

    fn spawn_child(role: &str, dir: &Path, fault: Option<&str>) -> std::process::Child {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "changelog::tests::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{role}:{}", dir.display()))
        .env_remove(fault::FAULT_ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if let Some(point) = fault {
            cmd.env(fault::FAULT_ENV, point);
        }
        cmd.spawn().unwrap()
    }

    /// Forwards each committed end_seq the child prints; the channel closes at its EOF.
    fn committed_lines(child: &mut std::process::Child) -> crossbeam_channel::Receiver<u64> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
            {
                // libtest's "test crash_child ... " may precede the first line.
                if let Some((_, seq)) = line.split_once(COMMITTED) {
                    let _ = tx.send(seq.trim().parse::<u64>().unwrap());
                }
            }
        });
        rx
    }

    /// Checks the reopened log after a crash: every visible boundary is a planned one, in order,
    /// with exactly its changes; at least `printed` of them (at most one more: committed but
    /// killed before printing); nothing past the last one after `discard_after`. Returns the
    /// boundaries found and how many unbounded changes `discard_after` dropped.
    fn check_after_crash(dir: &Path, printed: &[u64]) -> (u64, usize) {
        let log = SledChangeLog::open(dir).unwrap();
        let found = log.boundaries_after(0, usize::MAX).unwrap();
        assert!(
            found.len() >= printed.len() && found.len() <= printed.len() + 1,
            "{} boundaries found, {} printed as committed",
            found.len(),
            printed.len()
        );
        let mut prev = 0;
        for (k, b) in found.iter().enumerate() {
            let (want, changes) = planned(k as u64 + 1);
            assert_eq!(*b, want);
            assert!(printed.get(k).is_none_or(|&seq| seq == b.end_seq));
            let read = collect(&log, prev, b.end_seq);
            assert_eq!(
                read.len(),
                changes.len(),
                "boundary {} lost changes",
                b.end_seq
            );
            assert!(read.iter().zip(&changes).all(|(r, c)| same_change(r, c)));
            prev = b.end_seq;
        }
        let last = log.last_boundary().unwrap().map_or(0, |b| b.end_seq);
        assert_eq!(last, prev);
        let unbounded = collect(&log, last, u64::MAX).len();
        log.discard_after(last).unwrap();
        assert!(collect(&log, last, u64::MAX).is_empty());
        (found.len() as u64, unbounded)
    }

    #[test]
    fn a_killed_writer_leaves_every_committed_boundary_with_all_its_changes() {
        for run in 0..5u64 {
            let dir = tempfile::tempdir().unwrap();
            let mut child = spawn_child("writer", dir.path(), None);
            let lines = committed_lines(&mut child);
            let kill_at = Instant::now() + Duration::from_millis(150 + 25 * run);
            let mut printed = vec![lines
                .recv_timeout(Duration::from_secs(30))
                .expect("child commits")];
            while let Ok(seq) = lines.recv_deadline(kill_at) {
                printed.push(seq);
            }
            child.kill().unwrap();
            child.wait().unwrap();
            printed.extend(lines.iter());
            let (kept, unbounded) = check_after_crash(dir.path(), &printed);
            // The log resumes where it stopped.
            let log = SledChangeLog::open(dir.path()).unwrap();
            write_planned(&log, kept + 1);
            drop(log);
            let committed: Vec<u64> = (1..=kept + 1).map(|i| i * 1000).collect();
            assert_eq!(check_after_crash(dir.path(), &committed), (kept + 1, 0));
            eprintln!(
                "run {run}: {} boundaries printed, {kept} found, {unbounded} unbounded changes dropped",
                printed.len()
            );
        }
    }

    fn run_armed(role: &str, point: &str) -> (tempfile::TempDir, Vec<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_child(role, dir.path(), Some(point));
        let lines = committed_lines(&mut child);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGABRT),
            "{point} must abort the child: {status}"
        );
        (dir, lines.iter().collect())
    }

    #[test]
    fn an_armed_fault_after_the_boundary_aborts_with_it_durable() {
        let (dir, printed) = run_armed("faulty", "changelog.after_boundary@3");
        assert_eq!(printed, [1000, 2000]);
        assert_eq!(check_after_crash(dir.path(), &printed).0, 3);
    }

    #[test]
    fn an_armed_fault_before_the_boundary_aborts_without_it() {
        let (dir, printed) = run_armed("faulty", "changelog.before_boundary@3");
        assert_eq!(printed, [1000, 2000]);
        assert_eq!(check_after_crash(dir.path(), &printed).0, 2);
    }

    #[test]
    fn an_armed_fault_before_the_trim_leaves_the_log_untrimmed() {
        let (dir, printed) = run_armed("trimmer", "changelog.before_trim");
        assert_eq!(printed.len(), 10);
        let log = SledChangeLog::open(dir.path()).unwrap();
        assert_eq!(log.trimmed_through().unwrap(), 0);
        assert_eq!(log.boundaries_after(0, 100).unwrap().len(), 10);
    }

    fn percentile(sorted: &[Duration], p: f64) -> Duration {
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }

    /// Throughput and flush latency; run with
    /// `cargo test --release --lib changelog::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn throughput() {
        let (_dir, log) = open_temp();
        let image = |seq: u64| {
            vec![
                RawValue::Integer(seq as i64),
                RawValue::Text(vec![b'x'; 60]),
                RawValue::Blob(vec![seq as u8; 120]),
                RawValue::Real(seq as f64),
            ]
        };
        let (boundaries, per) = (20u64, 10_000u64);
        let (mut appending, mut committing) = (Duration::ZERO, Duration::ZERO);
        for i in 0..boundaries {
            let batch: Vec<Change> = (1..=per)
                .map(|j| change(i * per + j, Some(image(j))))
                .collect();
            let t = Instant::now();
            log.append(&batch).unwrap();
            appending += t.elapsed();
            let t = Instant::now();
            log.commit_boundary(&boundary((i + 1) * per, per)).unwrap();
            committing += t.elapsed();
        }
        let secs = (appending + committing).as_secs_f64();
        let mut rec = Vec::new();
        record::encode_change(&change(1, Some(image(1))), &mut rec);
        eprintln!(
            "large: {boundaries} boundaries x {per} changes ({} B records): {:.0} changes/s, \
             {:.1} MB/s (append {:.2} s, commit_boundary {:.2} s)",
            rec.len(),
            (boundaries * per) as f64 / secs,
            (boundaries * per * rec.len() as u64) as f64 / secs / 1e6,
            appending.as_secs_f64(),
            committing.as_secs_f64(),
        );
        let mut latencies = Vec::new();
        let base = boundaries * per;
        for i in 0..1000u64 {
            let batch: Vec<Change> = (1..=10)
                .map(|j| change(base + i * 10 + j, Some(image(j))))
                .collect();
            log.append(&batch).unwrap();
            let t = Instant::now();
            log.commit_boundary(&boundary(base + (i + 1) * 10, 10))
                .unwrap();
            latencies.push(t.elapsed());
        }
        latencies.sort_unstable();
        eprintln!(
            "small: 1000 boundaries x 10 changes: commit_boundary p50 {:?}, p99 {:?}, max {:?}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1]
        );
        eprintln!("size: {:?}", log.size().unwrap());
    }
    fn changed(log: &dyn ChangeLog, table: &str, after: u64) -> Option<Vec<(Vec<RawValue>, u64)>> {
        let mut out = Vec::new();
        let whole = log
            .changed_keys(table, after, &mut |k, seq| {
                out.push((k, seq));
                Ok(())
            })
            .unwrap();
        whole.then_some(out)
    }

    #[test]
    fn changed_keys_outlive_the_trim_keep_the_latest_seq_and_can_be_forgotten() {
        let (_dir, log) = open_temp();
        let text = |s: &str| RawValue::Text(s.as_bytes().to_vec());
        let on = |seq, table: &str, key: Vec<RawValue>| Change {
            seq,
            table: table.into(),
            key,
            image: None,
        };
        // "t" and "t2" share a prefix of their names, not of their encodings.
        log.append(&[
            on(1, "t", vec![RawValue::Integer(7)]),
            on(2, "t2", vec![text("x"), RawValue::Null]),
            on(3, "t", vec![RawValue::Integer(8)]),
        ])
        .unwrap();
        log.commit_boundary(&boundary(3, 3)).unwrap();
        log.append(&[on(4, "t", vec![RawValue::Integer(7)])])
            .unwrap();
        log.commit_boundary(&boundary(4, 1)).unwrap();
        log.trim_through(4).unwrap();

        let mut t = changed(&log, "t", 0).unwrap();
        t.sort_by_key(|(_, seq)| *seq);
        assert_eq!(
            t,
            vec![
                (vec![RawValue::Integer(8)], 3),
                (vec![RawValue::Integer(7)], 4)
            ]
        );
        assert_eq!(
            changed(&log, "t", 3).unwrap(),
            vec![(vec![RawValue::Integer(7)], 4)]
        );
        assert_eq!(
            changed(&log, "t2", 0).unwrap(),
            vec![(vec![text("x"), RawValue::Null], 2)]
        );
        assert_eq!(changed(&log, "nope", 0).unwrap(), vec![]);
        assert_eq!(log.changed_key_count("t", 0).unwrap(), Some(2));
        assert_eq!(log.changed_key_count("t", 3).unwrap(), Some(1));

        log.forget_changed_keys("t", 3).unwrap();
        assert_eq!(
            changed(&log, "t", 2),
            None,
            "forgotten past 2: cannot vouch"
        );
        assert_eq!(log.changed_key_count("t", 2).unwrap(), None);
        assert_eq!(
            changed(&log, "t", 3).unwrap(),
            vec![(vec![RawValue::Integer(7)], 4)]
        );
        assert_eq!(
            changed(&log, "t2", 0).unwrap().len(),
            1,
            "other tables untouched"
        );

        // Reopened, the log still vouches from 0: it recorded every change it ever held.
        let dir = log.path.clone();
        drop(log);
        let log = SledChangeLog::open(&dir).unwrap();
        assert_eq!(changed(&log, "t2", 0).unwrap().len(), 1);
        assert_eq!(changed(&log, "t", 2), None);
    }

    #[test]
    fn a_log_without_changed_keys_vouches_only_from_its_upgrade() {
        let (dir, log) = open_temp();
        log.append(&[change(5, None)]).unwrap();
        log.commit_boundary(&boundary(5, 1)).unwrap();
        // As a log written by a version without the changed-key store: no mark, no keys.
        log.changed().clear().unwrap();
        drop(log);
        let log = SledChangeLog::open(&dir.path().join("changelog")).unwrap();
        assert_eq!(changed(&log, "t", 4), None);
        assert_eq!(changed(&log, "t", 5).unwrap(), vec![]);
        log.append(&[change(6, None)]).unwrap();
        assert_eq!(
            changed(&log, "t", 5).unwrap(),
            vec![(vec![RawValue::Integer(6)], 6)]
        );
    }
}
