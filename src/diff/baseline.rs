//! The diff's baselines: per table, the newest diff that found it identical, with the change seq
//! its SQLite read saw. A later `diff --changed` builds on it: every row whose key no change after
//! that seq touched is as it was then on the SQLite side (capture's triggers log every write), and
//! on the PostgreSQL side too as long as only sync writes there; so comparing the rows of the
//! changed keys (the change log keeps them, see `ChangeLog::changed_keys`) is comparing the table.
//!
//! A baseline counts only for the same comparison: the same hash version, the same column mapping
//! snapshot and conversion settings (`signature`). Saved as `<state dir>/diff-baseline.json`, written
//! whole to a temporary file and renamed, so a crash never leaves half a file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::buckets::TableBuckets;
use super::canonical::HASH_VERSION;
use crate::convert::ConvertOptions;
use crate::error::{Error, Result};
use crate::target::mapping::TableMap;

pub const BASELINE_FILE: &str = "diff-baseline.json";

/// One table's baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableBaseline {
    /// The source table's name, as SQLite spells it.
    pub table: String,
    /// See [`signature`].
    pub signature: String,
    /// The change seq the identical comparison's SQLite read saw.
    pub source_seq: u64,
    /// When that comparison ran (RFC 3339).
    pub generated_at: String,
    /// Rows on each side then.
    pub source_rows: u64,
    pub target_rows: u64,
    /// The source's bucket summaries, from a full comparison (a `changed` one has none).
    pub buckets: Option<TableBuckets>,
}

/// Every table's baseline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Baselines {
    pub hash_version: String,
    pub tables: Vec<TableBaseline>,
}

/// What a baseline must match to count: the hash version, the snapshot (its blake3), the
/// conversion settings, and each compared column's name and type on both sides, the key and the
/// target table.
pub fn signature(map: &TableMap, opts: ConvertOptions, snapshot: Option<&str>) -> String {
    let mut h = blake3::Hasher::new_derive_key(HASH_VERSION);
    h.update(snapshot.unwrap_or("").as_bytes());
    h.update(b"\0");
    let columns: Vec<_> = map
        .columns
        .iter()
        .map(|c| (&c.source_expr, &c.target, c.ty.sql(), c.generated))
        .collect();
    h.update(format!("{:?}", (&map.target, columns, &map.key, opts)).as_bytes());
    h.finalize().to_hex().to_string()
}

impl Baselines {
    /// The saved baselines, or none when the file is missing, unreadable or from another hash
    /// version (a baseline only ever saves work, so a bad file costs a full comparison, with a
    /// warning, not an error).
    pub fn load(dir: &Path) -> Baselines {
        let path = dir.join(BASELINE_FILE);
        let Ok(bytes) = std::fs::read(&path) else {
            return Baselines::default();
        };
        match serde_json::from_slice::<Baselines>(&bytes) {
            Ok(b) if b.hash_version == HASH_VERSION => b,
            Ok(b) => {
                tracing::warn!(path = %path.display(), version = %b.hash_version, "diff baselines from another hash version: ignored");
                Baselines::default()
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable diff baselines: ignored");
                Baselines::default()
            }
        }
    }

    /// The baseline of `table` that counts for a comparison of `signature`.
    pub fn get(&self, table: &str, signature: &str) -> Option<&TableBaseline> {
        self.tables
            .iter()
            .find(|b| b.table == table && b.signature == signature)
    }

    pub fn set(&mut self, baseline: TableBaseline) {
        self.forget(&baseline.table);
        self.tables.push(baseline);
    }

    pub fn forget(&mut self, table: &str) {
        self.tables.retain(|b| b.table != table);
    }

    pub fn save(&mut self, dir: &Path) -> Result<()> {
        self.hash_version = HASH_VERSION.to_string();
        let path = dir.join(BASELINE_FILE);
        let tmp = dir.join(format!("{BASELINE_FILE}.tmp"));
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { op, path, source }
        };
        let bytes = serde_json::to_vec(self).expect("baselines always serialise");
        std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))
    }
}
