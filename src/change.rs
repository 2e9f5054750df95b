//! The plain data the sync stages exchange: a [`Change`] is the current image of one source row
//! (or its absence) after a change, with the sequence number of the last change to that row; a
//! [`Boundary`] marks a consistent source state — every change up to `end_seq` is captured, so a
//! batch ending there can be applied with foreign keys checked at commit (promise 2).

use rusqlite::types::ValueRef;
use serde::{Deserialize, Serialize};

/// A SQLite value exactly as stored: text keeps its raw bytes (it may not be valid UTF-8), so
/// nothing is lost between capture and apply; conversion happens at apply with the column plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RawValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl RawValue {
    pub fn from_ref(v: ValueRef<'_>) -> RawValue {
        match v {
            ValueRef::Null => RawValue::Null,
            ValueRef::Integer(i) => RawValue::Integer(i),
            ValueRef::Real(f) => RawValue::Real(f),
            ValueRef::Text(t) => RawValue::Text(t.to_vec()),
            ValueRef::Blob(b) => RawValue::Blob(b.to_vec()),
        }
    }

    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            RawValue::Null => ValueRef::Null,
            RawValue::Integer(i) => ValueRef::Integer(*i),
            RawValue::Real(f) => ValueRef::Real(*f),
            RawValue::Text(t) => ValueRef::Text(t),
            RawValue::Blob(b) => ValueRef::Blob(b),
        }
    }
}

/// The state of one source row after its latest captured change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The sequence number of the last change to this row in its capture cycle.
    pub seq: u64,
    /// The source table's name, as SQLite spells it.
    pub table: String,
    /// The row's key values in key order (primary-key columns, or the rowid).
    pub key: Vec<RawValue>,
    /// Every column in source column order; `None` when the row no longer exists.
    pub image: Option<Vec<RawValue>>,
}

/// A consistent source state: all changes with `seq <= end_seq` are in the change log.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Boundary {
    pub end_seq: u64,
    /// When the last change up to `end_seq` was written in SQLite (Unix seconds).
    pub committed_at: f64,
    /// How many changes (rows after coalescing) this capture cycle wrote.
    pub changes: u64,
}
