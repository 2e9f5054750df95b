//! The demo's sample application: a generator for a realistic app database (users, tool
//! configs, OAuth tokens, rate limits, app state, a large jobs table and its history) full of
//! dirty-but-valid values, and a [`LiveWriter`] that keeps writing to it like the real app
//! would while sqlite2pg migrates it. Used by the `demo` command, the tests and the benches; it
//! is the workload behind promise 1 (no gap, no duplicate) and the type-fidelity rules of
//! DESIGN.md. Only SQLite is needed here.

mod generate;
mod schema;
#[cfg(test)]
mod tests;
mod values;
mod workload;
mod writer;

use std::time::Duration;

pub use generate::generate;
pub use writer::{LiveWriter, WriterOptions, WriterStats};

/// The sample app's tables in FK dependency order (parents before children).
pub const TABLES: &[&str] = &[
    "users",
    "tool_configs",
    "oauth_tokens",
    "rate_limits",
    "app_state",
    "jobs",
    "job_history",
];

/// Users at scale 1: enough for realistic FK fan-out without dominating the run time.
const USERS_AT_SCALE_1: f64 = 10_000.0;
/// Jobs at scale 1: the large table, sized so a bulk copy takes measurable time.
const JOBS_AT_SCALE_1: f64 = 1_000_000.0;
/// History rows at scale 1: two transitions per job on average.
const HISTORY_AT_SCALE_1: f64 = 2_000_000.0;
/// `app_state` holds app-wide settings, so it does not grow with users; it shrinks below
/// scale 0.1 so tiny test databases stay tiny.
const APP_STATE_ROWS: f64 = 200.0;

/// How big a sample database to generate, and from which seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateOptions {
    /// 1.0 = 10,000 users, 1,000,000 jobs, 2,000,000 history rows; every table gets at least
    /// one row however small the scale.
    pub scale: f64,
    /// The same seed and scale give the same database, row for row.
    pub seed: u64,
}

impl Default for GenerateOptions {
    /// Scale 1 is the benchmark size; seed 42 so runs are comparable.
    fn default() -> Self {
        GenerateOptions {
            scale: 1.0,
            seed: 42,
        }
    }
}

/// Rows in one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TableCount {
    pub table: &'static str,
    pub rows: u64,
}

/// What [`generate`] created.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenerateSummary {
    /// Rows per table, in [`TABLES`] order.
    pub tables: Vec<TableCount>,
    pub elapsed: Duration,
}

impl GenerateSummary {
    /// Rows in all tables together.
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

impl GenerateOptions {
    /// The rows [`generate`] creates in each table at this scale, in [`TABLES`] order:
    /// users = 10,000 × scale; tool_configs = 2 per user; oauth_tokens and rate_limits = 1 per
    /// user; app_state = 200 (fewer below scale 0.1); jobs = 1,000,000 × scale; job_history =
    /// 2,000,000 × scale. Each is rounded and at least 1.
    pub fn planned_rows(&self) -> Vec<TableCount> {
        let users = scaled(USERS_AT_SCALE_1, self.scale);
        let counts = [
            users,
            2 * users,
            users,
            users,
            scaled(APP_STATE_ROWS * 10.0, self.scale).min(APP_STATE_ROWS as u64),
            scaled(JOBS_AT_SCALE_1, self.scale),
            scaled(HISTORY_AT_SCALE_1, self.scale),
        ];
        TABLES
            .iter()
            .zip(counts)
            .map(|(&table, rows)| TableCount { table, rows })
            .collect()
    }
}

fn scaled(at_scale_1: f64, scale: f64) -> u64 {
    (at_scale_1 * scale).round().max(1.0) as u64
}
