//! The change records, split by seq into sled trees of [`SEGMENT_SEQS`] seqs each
//! (`changes.<segment number, 16 hex digits>`), so a trim or discard that covers a whole segment
//! drops its tree instead of removing its records one by one. Removing a key costs sled about
//! 4 µs (a tree operation and the page it rewrites); dropping a tree frees its pages, about ten
//! times faster per record: a catch-up of 475k changes spent 1.45 s trimming them one by one
//! (16% of its wall time), and a tree of as many records drops in 0.2 s. Only the segment a
//! range starts or ends in is still removed entry by entry.
//!
//! A tree's entries are blocks: the changes of one append (up to `BLOCK_BYTES`), keyed by the
//! seq of the last. One entry per change made sled's work grow with the changes rather than
//! the bytes: a leaf page holds at most 16 entries, and sled checks each page it frees against
//! its whole free list, so a trim's cost grew with the square of the pages it freed: 10.8 s to
//! trim a catch-up of 1.94M changes (a quarter of its wall time), against 0.6 s for 440k.
//!
//! Segments partition the seqs, so reading a range is reading the segments it overlaps, in
//! order. A log written before segments kept every record in one tree, `changes`; `open` moves
//! its records into segments (idempotent: a crash before the old tree is dropped redoes it).
//! Entries of one change each (logs written before blocks) are read as they are.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Seqs per segment (a power of two, so the segment is `seq >> SEGMENT_BITS`).
const SEGMENT_BITS: u32 = 16;
pub(super) const SEGMENT_SEQS: u64 = 1 << SEGMENT_BITS;
const PREFIX: &str = "changes.";
/// The one tree of a log written before segments.
const LEGACY_TREE: &[u8] = b"changes";

/// One segment's tree and how many records it holds.
#[derive(Clone)]
pub(super) struct Segment {
    number: u64,
    pub tree: sled::Tree,
    pub count: Arc<AtomicU64>,
}

impl Segment {
    /// Whether `seq` belongs in this segment.
    pub(super) fn holds(&self, seq: u64) -> bool {
        number_of(seq) == self.number
    }

    /// Whether `range` includes every seq this segment can hold.
    pub(super) fn lies_within(&self, range: (Bound<u64>, Bound<u64>)) -> bool {
        covers(range, seqs_of(self.number))
    }

    /// Inserts an entry of `changes` changes (not durable until the caller flushes), counting
    /// them when its key is new. Callers replace an entry only with one of as many changes.
    pub(super) fn insert_block(&self, key: &[u8], value: &[u8], changes: u64) -> sled::Result<()> {
        if self.tree.insert(key, value)?.is_none() {
            self.count.fetch_add(changes, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Removes the entry at `key`, which held `changes` changes.
    pub(super) fn remove_block(&self, key: &[u8], changes: u64) -> sled::Result<()> {
        if self.tree.remove(key)?.is_some() {
            self.count.fetch_sub(changes, Ordering::Relaxed);
        }
        Ok(())
    }
}

pub(super) struct Segments {
    db: sled::Db,
    by_number: Mutex<BTreeMap<u64, Segment>>,
}

fn number_of(seq: u64) -> u64 {
    seq >> SEGMENT_BITS
}

fn tree_name(number: u64) -> String {
    format!("{PREFIX}{number:016x}")
}

/// The seqs segment `number` holds, inclusive.
fn seqs_of(number: u64) -> (u64, u64) {
    let first = number << SEGMENT_BITS;
    (first, first + (SEGMENT_SEQS - 1))
}

/// Whether every seq of `(first, last)` lies in `range`.
fn covers(range: (Bound<u64>, Bound<u64>), (first, last): (u64, u64)) -> bool {
    let low = match range.0 {
        Bound::Unbounded => true,
        Bound::Included(s) => s <= first,
        Bound::Excluded(s) => s < first,
    };
    let high = match range.1 {
        Bound::Unbounded => true,
        Bound::Included(s) => last <= s,
        Bound::Excluded(s) => last < s,
    };
    low && high
}

/// The segment numbers `range` may touch, inclusive (an empty range gives `first > last`).
fn numbers_in(range: (Bound<u64>, Bound<u64>)) -> (u64, u64) {
    let first = match range.0 {
        Bound::Unbounded => 0,
        Bound::Included(s) => number_of(s),
        Bound::Excluded(s) => match s.checked_add(1) {
            Some(s) => number_of(s),
            None => return (1, 0),
        },
    };
    let last = match range.1 {
        Bound::Unbounded => u64::MAX,
        Bound::Included(s) => number_of(s),
        Bound::Excluded(0) => return (1, 0),
        Bound::Excluded(s) => number_of(s - 1),
    };
    (first, last)
}

pub(super) fn key_range(range: (Bound<u64>, Bound<u64>)) -> (Bound<[u8; 8]>, Bound<[u8; 8]>) {
    let be = |b: Bound<u64>| match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(s) => Bound::Included(s.to_be_bytes()),
        Bound::Excluded(s) => Bound::Excluded(s.to_be_bytes()),
    };
    (be(range.0), be(range.1))
}

/// The changes a segment's tree holds (an entry that cannot be decoded counts as one; reading
/// it reports it).
fn changes_in(tree: &sled::Tree) -> sled::Result<u64> {
    let mut n = 0;
    for entry in tree.iter() {
        let (key, value) = entry?;
        let seq = <[u8; 8]>::try_from(&key[..]).map_or(0, u64::from_be_bytes);
        n += super::record::entries(seq, &value).map_or(1, |e| e.len() as u64);
    }
    Ok(n)
}

impl Segments {
    /// Opens every segment of `db` (counting its records, so open takes time in proportion to
    /// the untrimmed log) and moves a pre-segment log's records into segments.
    pub(super) fn open(db: &sled::Db) -> sled::Result<Segments> {
        let segments = Segments {
            db: db.clone(),
            by_number: Mutex::new(BTreeMap::new()),
        };
        let names = db.tree_names();
        for name in &names {
            let Some(number) = std::str::from_utf8(name)
                .ok()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            else {
                continue;
            };
            let tree = db.open_tree(name)?;
            let count = Arc::new(AtomicU64::new(changes_in(&tree)?));
            segments.map().insert(
                number,
                Segment {
                    number,
                    tree,
                    count,
                },
            );
        }
        if names.iter().any(|n| n == LEGACY_TREE) {
            let legacy = db.open_tree(LEGACY_TREE)?;
            for entry in legacy.iter() {
                let (key, value) = entry?;
                // A key that is not 8 bytes stays in the old tree's place in the new layout:
                // seq 0's segment, where reading it reports the corrupt key.
                let seq = <[u8; 8]>::try_from(&key[..]).map_or(0, u64::from_be_bytes);
                segments.get_or_create(seq)?.insert_block(&key, &value, 1)?;
            }
            db.flush()?;
            drop(legacy);
            db.drop_tree(LEGACY_TREE)?;
            db.flush()?;
        }
        Ok(segments)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Segment>> {
        self.by_number.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The segment that holds `seq`, created if missing.
    pub(super) fn get_or_create(&self, seq: u64) -> sled::Result<Segment> {
        let number = number_of(seq);
        if let Some(s) = self.map().get(&number) {
            return Ok(s.clone());
        }
        let tree = self.db.open_tree(tree_name(number))?;
        let segment = Segment {
            number,
            tree,
            count: Arc::new(AtomicU64::new(0)),
        };
        Ok(self.map().entry(number).or_insert(segment).clone())
    }

    /// The segments that may hold seqs in `range`, ascending.
    pub(super) fn overlapping(&self, range: (Bound<u64>, Bound<u64>)) -> Vec<Segment> {
        let (first, last) = numbers_in(range);
        if first > last {
            return Vec::new();
        }
        self.map()
            .range(first..=last)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Drops `segment` and its tree (not durable until the caller flushes). A reader on another
    /// thread still holding the segment gets sled's `CollectionNotFound`.
    pub(super) fn drop_segment(&self, segment: Segment) -> sled::Result<()> {
        self.map().remove(&segment.number);
        self.db.drop_tree(tree_name(segment.number))?;
        Ok(())
    }

    /// Records in every segment.
    pub(super) fn count(&self) -> u64 {
        self.map()
            .values()
            .map(|s| s.count.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_map_to_the_segments_they_touch_and_cover() {
        let s = SEGMENT_SEQS;
        let r = |lo, hi| (lo, hi);
        assert_eq!(
            numbers_in(r(Bound::Excluded(0), Bound::Included(s))),
            (0, 1)
        );
        assert_eq!(
            numbers_in(r(Bound::Excluded(s - 1), Bound::Unbounded)),
            (1, u64::MAX)
        );
        assert_eq!(numbers_in(r(Bound::Unbounded, Bound::Excluded(s))), (0, 0));
        let (first, last) = numbers_in(r(Bound::Excluded(u64::MAX), Bound::Unbounded));
        assert!(first > last);
        assert!(covers(
            r(Bound::Unbounded, Bound::Included(s - 1)),
            seqs_of(0)
        ));
        assert!(!covers(
            r(Bound::Unbounded, Bound::Included(s - 2)),
            seqs_of(0)
        ));
        assert!(covers(
            r(Bound::Excluded(s - 1), Bound::Unbounded),
            seqs_of(1)
        ));
        assert!(!covers(r(Bound::Excluded(s), Bound::Unbounded), seqs_of(1)));
        assert!(!covers(r(Bound::Excluded(0), Bound::Unbounded), seqs_of(0)));
    }
}
