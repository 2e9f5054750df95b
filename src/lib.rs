//! sqlite2pg: move a live application from SQLite to PostgreSQL with a write pause measured in
//! milliseconds. See DESIGN.md for the pipeline and the promises each module keeps.

// `Error` carries the operation, path, table and the driver's own error so messages can name
// them; it is returned on cold paths only, so its size is not worth boxing every cause for.
#![allow(clippy::result_large_err)]

pub mod change;
pub mod changelog;
pub mod check;
pub mod cli;
pub mod config;
pub mod convert;
pub mod cutover;
pub mod demo;
pub mod diff;
pub mod error;
pub mod fault;
pub mod metrics;
pub mod pipeline;
pub mod private_pg;
pub mod sample_app;
pub mod snapshot;
pub mod source;
pub mod status;
pub mod target;
pub mod translate;

pub use error::{Error, Result};
