//! A verified backup of the source: SQLite's online backup API copies every page inside one read
//! transaction (so it is consistent and works while the application writes, in WAL mode without
//! blocking it), then the copy passes `integrity_check`, and its blake3, size and per-table row
//! counts are written beside it as a manifest. The snapshot can read this copy in parallel.

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

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub path: PathBuf,
    pub manifest: PathBuf,
    pub bytes: u64,
    pub blake3: String,
    pub integrity: String,
    pub row_counts: BTreeMap<String, u64>,
    pub seconds: f64,
}

/// Copies the open source database into `state_dir/backup-YYYYmmdd-HHMMSS.db` and verifies it.
pub fn verified_backup(
    source: &Connection,
    source_path: &Path,
    state_dir: &Path,
) -> Result<BackupReport> {
    let started = Instant::now();
    let (path, manifest) = free_backup_name(state_dir);
    let src_err = |op| {
        let path = source_path.to_path_buf();
        move |source| Error::Source {
            op,
            path,
            table: None,
            source,
        }
    };
    let dst_err = |op| {
        let path = path.clone();
        move |source| Error::Source {
            op,
            path,
            table: None,
            source,
        }
    };
    {
        let mut dst = Connection::open(&path).map_err(dst_err("create the backup file"))?;
        copy_all_pages(source, &mut dst).map_err(src_err("online backup"))?;
    }
    let copy = Connection::open(&path).map_err(dst_err("open the backup"))?;
    let integrity: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(dst_err("integrity_check the backup"))?;
    if integrity != "ok" {
        return Err(Error::SourceCorrupt {
            path: path.clone(),
            detail: integrity,
        });
    }
    let schema = read_schema(&copy, &path)?;
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
    let (bytes, blake3) = hash_file(&path)?;
    let report = BackupReport {
        path,
        manifest: manifest.clone(),
        bytes,
        blake3,
        integrity,
        row_counts,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_manifest(&manifest, &report)?;
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
