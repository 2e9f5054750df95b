//! The one integration test binary: each module is a test file, `support` is the harness.

// Tests return the library's `Result`, whose error is large by design (see src/lib.rs).
#![allow(clippy::result_large_err)]

mod canonical;
mod check;
mod cli;
mod copy_binary;
mod cutover;
mod cutover_crash;
mod cutover_live;
mod diff;
mod metrics;
mod roundtrip;
mod snapshot;
mod status;
mod support;
mod sync;
mod sync_stream;
mod tls;
mod translate;
mod verify;
