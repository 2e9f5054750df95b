//! A verified backup of the source: SQLite's online backup API copies every page inside one read
//! transaction (so it is consistent and works while the application writes, in WAL mode without
//! blocking it), then the copy passes `integrity_check` (see [`StructureCheck`]), and its blake3,
//! size and per-table row counts are written beside it as a manifest. The snapshot can read this
//! copy in parallel.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::Connection;
use serde::Serialize;

use super::introspect::{read_schema, row_count};
use crate::error::{Error, Result};

/// How often a busy backup step is retried before giving up (with [`BUSY_PAUSE`] between).
const BUSY_RETRIES: u32 = 50;
const BUSY_PAUSE: Duration = Duration::from_millis(100);

/// [`BackupReport::integrity`] of a backup verified with [`StructureCheck::None`].
pub const NOT_CHECKED: &str = "not checked (read whole by the snapshot's copy)";

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub path: PathBuf,
    pub manifest: PathBuf,
    pub bytes: u64,
    pub blake3: String,
    /// What the structure check said (`ok`), or [`NOT_CHECKED`].
    pub integrity: String,
    /// The change sequence read in the backup's read transaction, when asked for.
    pub position: Option<i64>,
    pub row_counts: BTreeMap<String, u64>,
    pub seconds: f64,
}

/// Copies the open source database into `state_dir/backup-YYYYmmdd-HHMMSS.db` and verifies it.
pub fn verified_backup(
    source: &Connection,
    source_path: &Path,
    state_dir: &Path,
) -> Result<BackupReport> {
    verified_backup_at(source, source_path, state_dir, &BackupOptions::default())
}

/// How a backup is taken and verified.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupOptions<'a> {
    /// A query returning one integer, read in the same read transaction as the copy.
    pub position_sql: Option<&'a str>,
    pub check: StructureCheck,
}

/// How the structure of a backup is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StructureCheck {
    /// `PRAGMA integrity_check`: pages, records, and every index against its table. For the
    /// backup `check --backup` keeps for safekeeping.
    #[default]
    Integrity,
    /// `PRAGMA quick_check`: page and record structure, O(N), without the index cross-check.
    Quick,
    /// None. For a backup that is read whole right away: the snapshot's copy reads every
    /// table's b-tree to its last row, and SQLite fails that read (naming the table) on any
    /// corrupt page it meets. What a structure check would add concerns pages the copy never
    /// migrates (index b-trees, which PostgreSQL rebuilds; the free list), and neither check
    /// can see a flipped byte inside a record, as SQLite keeps no checksums.
    None,
}

/// [`verified_backup`], also reading `position_sql` (a single integer) in the same read
/// transaction as the copy: the backup holds exactly the source state at that position (the
/// snapshot's change sequence S, promise 1).
pub fn verified_backup_at(
    source: &Connection,
    source_path: &Path,
    state_dir: &Path,
    opts: &BackupOptions<'_>,
) -> Result<BackupReport> {
    let taken = take_backup(source, source_path, state_dir, opts.position_sql)?;
    let hash = hash_file(&taken.path)?;
    verify_backup(&taken, opts.check, hash)
}

/// A backup copied but not yet verified.
#[derive(Debug, Clone)]
pub struct TakenBackup {
    pub path: PathBuf,
    pub manifest: PathBuf,
    /// The result of `position_sql`, read in the copy's read transaction.
    pub position: Option<i64>,
    started: Instant,
}

impl TakenBackup {
    /// A backup taken by an earlier run (its manifest beside it).
    pub fn existing(path: &Path, position: Option<i64>) -> TakenBackup {
        TakenBackup {
            path: path.to_path_buf(),
            manifest: path.with_extension("json"),
            position,
            started: Instant::now(),
        }
    }
}

/// Copies every page of `source` into a new `state_dir/backup-*.db` in one read transaction,
/// reading `position_sql` in the same transaction.
pub fn take_backup(
    source: &Connection,
    source_path: &Path,
    state_dir: &Path,
    position_sql: Option<&str>,
) -> Result<TakenBackup> {
    let started = Instant::now();
    let (path, manifest) = free_backup_name(state_dir);
    let mut dst = Connection::open(&path).map_err(|e| Error::Source {
        op: "create the backup file",
        path: path.clone(),
        table: None,
        source: e,
    })?;
    // No fsync while copying: [`verify_backup`] syncs the file to disk before it reports the
    // backup verified, off the path of whoever waits for the copy.
    dst.execute_batch("PRAGMA synchronous = OFF")
        .map_err(|e| Error::Source {
            op: "prepare the backup file",
            path: path.clone(),
            table: None,
            source: e,
        })?;
    let position = copy_at_position(source, &mut dst, position_sql).map_err(|e| Error::Source {
        op: "online backup",
        path: source_path.to_path_buf(),
        table: None,
        source: e,
    })?;
    Ok(TakenBackup {
        path,
        manifest,
        position,
        started,
    })
}

/// Checks a taken backup's structure as `check` says, counts its rows, syncs it to disk and
/// writes its manifest; `hash` is [`hash_file`] of it. Uses its own connection, so it can run on
/// another thread while the backup is being read.
pub fn verify_backup(
    taken: &TakenBackup,
    check: StructureCheck,
    hash: (u64, String),
) -> Result<BackupReport> {
    let path = &taken.path;
    let dst_err = |op| {
        let path = path.clone();
        move |source| Error::Source {
            op,
            path,
            table: None,
            source,
        }
    };
    let copy = crate::source::open_with(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        "open the backup",
    )?;
    let pragma = match check {
        StructureCheck::Integrity => Some("PRAGMA integrity_check"),
        StructureCheck::Quick => Some("PRAGMA quick_check"),
        StructureCheck::None => None,
    };
    let integrity: String = match pragma {
        Some(sql) => copy
            .query_row(sql, [], |r| r.get(0))
            .map_err(dst_err("integrity_check the backup"))?,
        None => NOT_CHECKED.to_string(),
    };
    if integrity != "ok" && integrity != NOT_CHECKED {
        return Err(Error::SourceCorrupt {
            path: path.clone(),
            detail: integrity,
        });
    }
    let schema = read_schema(&copy, path)?;
    let mut row_counts = BTreeMap::new();
    for table in &schema.tables {
        let n = row_count(&copy, &table.name).map_err(|source| Error::Source {
            op: "count rows in the backup",
            path: path.clone(),
            table: Some(table.name.clone()),
            source,
        })?;
        row_counts.insert(table.name.clone(), n);
    }
    drop(copy);
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| Error::Io {
            op: "sync to disk",
            path: path.clone(),
            source,
        })?;
    let (bytes, blake3) = hash;
    let report = BackupReport {
        path: path.clone(),
        manifest: taken.manifest.clone(),
        bytes,
        blake3,
        integrity,
        position: taken.position,
        row_counts,
        seconds: taken.started.elapsed().as_secs_f64(),
    };
    write_manifest(&taken.manifest, &report)?;
    Ok(report)
}

/// `backup-YYYYmmdd-HHMMSS.db` (and its `.json` manifest), with `-2`, `-3`… when two backups
/// are taken within one second.
fn free_backup_name(state_dir: &Path) -> (PathBuf, PathBuf) {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    (1..)
        .map(|n| {
            if n == 1 {
                format!("backup-{stamp}")
            } else {
                format!("backup-{stamp}-{n}")
            }
        })
        .map(|base| {
            (
                state_dir.join(format!("{base}.db")),
                state_dir.join(format!("{base}.json")),
            )
        })
        .find(|(db, json)| !db.exists() && !json.exists())
        .expect("an unbounded range always has a free name")
}

/// Reads the position and copies every page inside one read transaction of `source`.
fn copy_at_position(
    source: &Connection,
    dst: &mut Connection,
    position_sql: Option<&str>,
) -> rusqlite::Result<Option<i64>> {
    let Some(sql) = position_sql else {
        copy_all_pages(source, dst)?;
        return Ok(None);
    };
    source.execute_batch("BEGIN")?;
    let copied = source
        .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
        .and_then(|pos| copy_all_pages(source, dst).map(|()| pos.unwrap_or(0)));
    match copied {
        Ok(pos) => source.execute_batch("COMMIT").map(|()| Some(pos)),
        Err(e) => {
            let _ = source.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// One `step(-1)`: every page in a single read transaction, so writers cannot restart it.
fn copy_all_pages(source: &Connection, dst: &mut Connection) -> rusqlite::Result<()> {
    let backup = Backup::new(source, dst)?;
    for _ in 0..BUSY_RETRIES {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More => continue,
            StepResult::Busy | StepResult::Locked => std::thread::sleep(BUSY_PAUSE),
            _ => std::thread::sleep(BUSY_PAUSE),
        }
    }
    Err(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        Some("the source stayed locked for the whole backup retry window".into()),
    ))
}

/// Size and blake3 (hex) of a file, read in 1 MiB chunks.
pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    let io_err = |source| Error::Io {
        op: "hash",
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((bytes, hasher.finalize().to_hex().to_string()))
}

fn write_manifest(path: &Path, report: &BackupReport) -> Result<()> {
    let json = serde_json::to_vec_pretty(report).expect("a backup report always serialises");
    std::fs::write(path, json).map_err(|source| Error::Io {
        op: "write the backup manifest",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy and the position come from one read transaction: a write committed by another
    /// connection after the position was read is not in the backup.
    #[test]
    fn position_and_pages_come_from_one_read_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let app = Connection::open(&db).unwrap();
        app.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        let reader = Connection::open(&db).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let n: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        app.execute_batch("INSERT INTO t VALUES (2)").unwrap();
        let mut dst = Connection::open(dir.path().join("copy.db")).unwrap();
        copy_all_pages(&reader, &mut dst).unwrap();
        reader.execute_batch("COMMIT").unwrap();
        let copied: i64 = dst
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            (n, copied),
            (1, 1),
            "the backup sees the reader's snapshot, not the later write"
        );
    }
}
