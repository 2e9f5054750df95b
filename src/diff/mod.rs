//! `sqlite2pg diff`: are both sides the same, row by row? Keeps promise 5 ("diffs tell the
//! truth"): both sides are hashed from one canonical encoding of the PostgreSQL-typed value —
//! the SQLite side through the same conversion the snapshot used, the PostgreSQL side read with
//! `COPY (SELECT …) TO STDOUT (FORMAT binary)` (`target::copy_out`), which no session setting can
//! change — so a difference is a real difference and equal values never differ by spelling.
//!
//! `canonical` (encoding, row hash), `wire` (canonical bytes straight from a SQLite value or a
//! COPY field), `encoded` (ordering and rendering encoded values), `target::mapping` (what is
//! compared with what), `streams` (both sides read and encoded in parallel), `merge` (the merge
//! and the hashing), `compare` (one table), `buckets` (per-table summaries of row hashes),
//! `baseline` (the last identical comparison of each table) and `changed` (`--changed`: only the
//! rows changed since it), `report` / `html` (what the operator reads), `run` (the command).

pub mod baseline;
pub mod buckets;
pub mod canonical;
pub mod changed;
pub mod compare;
pub mod encoded;
pub mod html;
pub mod merge;
pub mod report;
pub mod run;
pub mod streams;
pub mod wire;

pub use html::render_html;
pub use report::{render_text, DiffReport};
pub use run::{run_diff, run_diff_with_log, DiffOptions, DEFAULT_MAX_DIFFERENCES};
