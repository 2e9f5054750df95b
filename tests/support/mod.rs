//! The test harness: a PostgreSQL server with a fresh database per test (`pg`), a poller for
//! "wait until" (tests never sleep to synchronise), temporary directories and error chains.

pub mod pg;

use std::time::{Duration, Instant};

/// How often `wait_until` looks at its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `cond` until it holds; panics naming `what` after `timeout`.
#[allow(dead_code)] // for the pipeline tests
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A temporary directory, removed when dropped.
#[allow(dead_code)] // for the pipeline tests
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sqlite2pg-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// An error and all its causes, "outer: inner: innermost", as main.rs prints them.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        chain.push_str(": ");
        chain.push_str(&e.to_string());
        cause = e.source();
    }
    chain
}

/// A child process killed (by its own handle, so by its PID) and reaped when dropped: a test
/// that fails while a spawned `sqlite2pg sync` runs must not leave it running.
pub struct ChildGuard(pub std::process::Child);

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
