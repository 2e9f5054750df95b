//! Generates the sample application database: creates the schema, bulk-loads every table in one
//! transaction with cached prepared statements (WAL, `synchronous=OFF` while loading), adds the
//! indexes, then leaves the file in WAL mode with `synchronous=NORMAL` and a checkpointed WAL,
//! as a running app would. The same seed and scale always give the same rows, and every foreign
//! key points at an existing row.

use std::fs::OpenOptions;
use std::path::Path;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rusqlite::types::Value;
use rusqlite::{params, Connection, Statement};

use super::schema::{
    CREATE_INDEXES, CREATE_TABLES, INSERT_APP_STATE, INSERT_HISTORY, INSERT_JOB, INSERT_RATE_LIMIT,
    INSERT_TOKEN, INSERT_TOOL_CONFIG, INSERT_USER, WELL_KNOWN_STATE_KEYS,
};
use super::values::{self as v};
use super::{GenerateOptions, GenerateSummary, TableCount};
use crate::error::{Error, Result};

/// Fast and unsafe on power loss, which is fine for a file that is rebuilt on failure; a
/// 128 MiB page cache keeps the growing B-trees in memory during the load.
const BULK_LOAD_PRAGMAS: &str = "PRAGMA journal_mode = WAL;
    PRAGMA synchronous = OFF;
    PRAGMA cache_size = -131072;
    PRAGMA temp_store = MEMORY;";
/// What a running app uses, and a WAL folded back into the main file.
const FINISH_PRAGMAS: &str = "PRAGMA synchronous = NORMAL; PRAGMA wal_checkpoint(TRUNCATE);";

/// 2023-01-01T00:00:00Z: the app's first day.
const BASE_EPOCH: i64 = 1_672_531_200;
/// About two and a half years of history.
const SPAN_SECS: i64 = 900 * 86_400;
/// The most history rows one generated job gets (queued, running, failed, queued again).
const MAX_TRANSITIONS: u64 = 4;
/// Weights (percent) of a job having 0..=4 history rows; the mean is 2.0, matching
/// 2,000,000 history rows per 1,000,000 jobs.
const TRANSITION_WEIGHTS: [u32; 5] = [30, 10, 5, 40, 15];

/// Creates the sample app database at `path`, which must not exist yet (the error says so if
/// it does). On failure the partial file is removed. `Ok` means every table holds the rows
/// [`GenerateOptions::planned_rows`] promises and the data is committed.
pub fn generate(path: &Path, opts: &GenerateOptions) -> Result<GenerateSummary> {
    check_scale(opts.scale)?;
    let started = Instant::now();
    create_empty_file(path)?;
    let tables = populate(path, opts).inspect_err(|_| remove_partial(path))?;
    Ok(GenerateSummary {
        tables,
        elapsed: started.elapsed(),
    })
}

fn check_scale(scale: f64) -> Result<()> {
    if scale.is_finite() && scale > 0.0 && scale <= 1_000.0 {
        return Ok(());
    }
    Err(Error::Config {
        field: "scale".into(),
        reason: format!("must be a number above 0 and at most 1000, got {scale}"),
    })
}

fn create_empty_file(path: &Path) -> Result<()> {
    let created = OpenOptions::new().write(true).create_new(true).open(path);
    created.map(drop).map_err(|source| Error::Io {
        op: "create the sample database (it must not exist yet)",
        path: path.to_path_buf(),
        source,
    })
}

/// Best effort: the caller is already returning the error that made the file useless.
fn remove_partial(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
}

fn populate(path: &Path, opts: &GenerateOptions) -> Result<Vec<TableCount>> {
    let err = |op| {
        move |source| Error::SampleApp {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut conn = Connection::open(path).map_err(err("open the new database"))?;
    conn.execute_batch(BULK_LOAD_PRAGMAS)
        .map_err(err("set the bulk-load pragmas"))?;
    let plan = opts.planned_rows();
    let tx = conn.transaction().map_err(err("begin the load"))?;
    tx.execute_batch(CREATE_TABLES)
        .map_err(err("create the tables"))?;
    load_tables(&tx, opts.seed, &plan).map_err(|(op, source)| err(op)(source))?;
    tx.execute_batch(CREATE_INDEXES)
        .map_err(err("create the indexes"))?;
    tx.commit().map_err(err("commit the load"))?;
    conn.execute_batch(FINISH_PRAGMAS)
        .map_err(err("checkpoint the WAL"))?;
    Ok(plan)
}

type LoadResult = std::result::Result<(), (&'static str, rusqlite::Error)>;

/// Fills every table; each gets its own random stream so one table's shape does not shift
/// another's rows.
fn load_tables(conn: &Connection, seed: u64, plan: &[TableCount]) -> LoadResult {
    let rows = |table: &str| plan.iter().find(|c| c.table == table).map_or(1, |c| c.rows);
    let rng =
        |stream: u64| SmallRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let users = rows("users");
    let op = |op| move |e| (op, e);
    load_users(conn, &mut rng(1), users).map_err(op("insert users"))?;
    load_tool_configs(conn, &mut rng(2), rows("tool_configs"), users)
        .map_err(op("insert tool_configs"))?;
    load_tokens(conn, &mut rng(3), rows("oauth_tokens"), users)
        .map_err(op("insert oauth_tokens"))?;
    load_rate_limits(conn, &mut rng(4), rows("rate_limits")).map_err(op("insert rate_limits"))?;
    load_app_state(conn, &mut rng(5), rows("app_state")).map_err(op("insert app_state"))?;
    let jobs = JobPlan {
        jobs: rows("jobs"),
        history: rows("job_history"),
        users,
    };
    load_jobs(conn, &mut rng(6), &jobs).map_err(op("insert jobs and job_history"))
}

/// A time in the app's life: row `i` of `n` lands at the matching point of the span, jittered.
fn spread(rng: &mut SmallRng, i: u64, n: u64) -> i64 {
    let step = SPAN_SECS / n.max(1) as i64;
    BASE_EPOCH + (i as i64) * step + rng.random_range(0..=step.max(1))
}

/// A user id skewed toward early users (a few power users own many rows), in `1..=users`.
fn skewed_user(rng: &mut SmallRng, users: u64) -> i64 {
    let r: f64 = rng.random();
    1 + (users as f64 * r * r) as i64
}

fn load_users(conn: &Connection, rng: &mut SmallRng, n: u64) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(INSERT_USER)?;
    for id in 1..=n {
        let created = spread(rng, id - 1, n);
        let is_admin = i64::from(id == 1 || rng.random_bool(0.03));
        let last_login = rng
            .random_bool(0.8)
            .then(|| created + rng.random_range(0..SPAN_SECS / 3))
            .map(|at| v::timestamp(rng, at, v::USER_LOGIN_MIX));
        insert.execute(params![
            id as i64,
            v::email(rng, id as i64),
            v::display_name(rng),
            v::timestamp(rng, created, v::USER_CREATED_MIX),
            is_admin,
            v::locale(rng),
            last_login,
        ])?;
    }
    Ok(())
}

/// Two configs per user on average, round-robin so (user_id, name) stays unique; 2% have no
/// user (organisation-wide configs).
fn load_tool_configs(
    conn: &Connection,
    rng: &mut SmallRng,
    n: u64,
    users: u64,
) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(INSERT_TOOL_CONFIG)?;
    let tools = v::TOOLS.len() as u64;
    for i in 0..n {
        let user = i % users + 1;
        let tool = v::TOOLS[((i / users + user) % tools) as usize];
        let user_id = (!rng.random_bool(0.02)).then_some(user as i64);
        let updated = spread(rng, i, n);
        insert.execute(params![
            user_id,
            tool,
            v::tool_config(rng, tool),
            i64::from(rng.random_bool(0.85)),
            v::timestamp(rng, updated, v::CONFIG_UPDATED_MIX),
        ])?;
    }
    Ok(())
}

fn load_tokens(conn: &Connection, rng: &mut SmallRng, n: u64, users: u64) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(INSERT_TOKEN)?;
    for i in 0..n {
        let created = spread(rng, i, n);
        let user = skewed_user(rng, users);
        insert_token(&mut insert, rng, user, created)?;
    }
    Ok(())
}

/// One OAuth token row created at `created`; shared with the live writer.
pub(crate) fn insert_token(
    insert: &mut Statement<'_>,
    rng: &mut SmallRng,
    user_id: i64,
    created: i64,
) -> rusqlite::Result<()> {
    let (provider, prefix) = v::PROVIDERS[rng.random_range(0..v::PROVIDERS.len())];
    let refresh = rng.random_bool(0.6).then(|| v::token(rng, "r_"));
    let lifetime = if rng.random_bool(0.7) {
        3_600
    } else {
        90 * 86_400
    };
    let expires_at = (!rng.random_bool(0.05)).then_some(created + lifetime);
    insert.execute(params![
        user_id,
        provider,
        v::token(rng, prefix),
        refresh,
        expires_at,
        v::scopes(rng),
        v::timestamp(rng, created, v::TOKEN_CREATED_MIX),
    ])?;
    Ok(())
}

/// Keys are unique by construction: `user:{i+1}:{bucket}`, or for one row in ten an IP key
/// derived from `i`.
fn load_rate_limits(conn: &Connection, rng: &mut SmallRng, n: u64) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(INSERT_RATE_LIMIT)?;
    for i in 0..n {
        let key = if rng.random_bool(0.1) {
            format!(
                "ip:10.{}.{}.{}:login",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            )
        } else {
            let bucket = v::BUCKETS[rng.random_range(0..v::BUCKETS.len())];
            format!("user:{}:{bucket}", i + 1)
        };
        let reset = BASE_EPOCH + SPAN_SECS + rng.random_range(0..3_600);
        insert.execute(params![
            key,
            rate_limit_tokens(rng),
            v::timestamp(rng, reset, v::RATE_RESET_MIX)
        ])?;
    }
    Ok(())
}

/// Tokens left in a bucket: a REAL with at most two decimals, sometimes a whole number.
pub(crate) fn rate_limit_tokens(rng: &mut SmallRng) -> f64 {
    (rng.random_range(0.0..100.0f64) * 100.0).round() / 100.0
}

fn load_app_state(conn: &Connection, rng: &mut SmallRng, n: u64) -> rusqlite::Result<()> {
    const CACHES: &[&str] = &["users", "jobs", "search"];
    let mut insert = conn.prepare_cached(INSERT_APP_STATE)?;
    for i in 0..n as usize {
        let key = match WELL_KNOWN_STATE_KEYS.get(i) {
            Some(key) => (*key).to_string(),
            None => format!("cache:{}:{i}", CACHES[i % CACHES.len()]),
        };
        insert.execute(params![key, v::app_state_value(rng, i as i64)])?;
    }
    Ok(())
}

struct JobPlan {
    jobs: u64,
    history: u64,
    users: u64,
}

/// Jobs in id order, each followed by its history rows, so that the history totals exactly
/// `plan.history` while each job's status matches its last transition.
fn load_jobs(conn: &Connection, rng: &mut SmallRng, plan: &JobPlan) -> rusqlite::Result<()> {
    let mut insert_job = conn.prepare_cached(INSERT_JOB)?;
    let mut insert_history = conn.prepare_cached(INSERT_HISTORY)?;
    let mut history_left = plan.history;
    for id in 1..=plan.jobs {
        let transitions = transition_count(rng, history_left, plan.jobs - id);
        history_left -= transitions;
        let created = spread(rng, id - 1, plan.jobs);
        let scheduled = created + rng.random_range(0..3_600);
        let succeeded = rng.random_bool(0.88);
        let user = (!rng.random_bool(0.04)).then(|| skewed_user(rng, plan.users));
        let status = final_status(transitions, succeeded);
        let kind = v::JOB_KINDS[rng.random_range(0..v::JOB_KINDS.len())];
        insert_job.execute(params![
            id as i64,
            user,
            kind,
            status,
            v::job_payload(rng, kind, id as i64),
            v::timestamp(rng, scheduled, v::JOB_SCHEDULED_MIX),
            attempts(transitions),
            v::priority(rng),
            v::job_result(rng, result_probability(status)),
            v::sqlite_timestamp(created),
        ])?;
        let job = HistoryJob {
            id: id as i64,
            transitions,
            succeeded,
            start: scheduled,
        };
        insert_job_history(&mut insert_history, rng, &job)?;
    }
    Ok(())
}

/// Draws how many history rows the next job gets, bounded so that the `jobs_after` remaining
/// jobs can still take exactly the `history_left` rows that remain (at most 4 each).
fn transition_count(rng: &mut SmallRng, history_left: u64, jobs_after: u64) -> u64 {
    let mut roll = rng.random_range(0..100u32);
    let mut drawn = 0u64;
    for (count, weight) in TRANSITION_WEIGHTS.iter().enumerate() {
        if roll < *weight {
            drawn = count as u64;
            break;
        }
        roll -= weight;
    }
    let lowest = history_left.saturating_sub(MAX_TRANSITIONS * jobs_after);
    drawn.max(lowest).min(history_left)
}

/// Transition `k` (0-based) of a job with `count` transitions: queued, then cycles of running →
/// failed → queued, the last running ending in done when the job `succeeded`.
fn transition(k: u64, count: u64, succeeded: bool) -> (Option<&'static str>, &'static str) {
    if k == 0 {
        return (None, "queued");
    }
    match (k - 1) % 3 {
        0 => (Some("queued"), "running"),
        1 if k + 1 == count && succeeded => (Some("running"), "done"),
        1 => (Some("running"), "failed"),
        _ => (Some("failed"), "queued"),
    }
}

/// A job without history predates the history table: it is done.
fn final_status(count: u64, succeeded: bool) -> &'static str {
    match count {
        0 => "done",
        _ => transition(count - 1, count, succeeded).1,
    }
}

/// One attempt per queued → running transition; legacy jobs ran once.
fn attempts(count: u64) -> i64 {
    match count {
        0 => 1,
        _ => ((count + 1) / 3) as i64,
    }
}

fn result_probability(status: &str) -> f64 {
    match status {
        "done" => 0.2,
        "failed" => 0.05,
        _ => 0.0,
    }
}

struct HistoryJob {
    id: i64,
    transitions: u64,
    succeeded: bool,
    start: i64,
}

fn insert_job_history(
    insert: &mut Statement<'_>,
    rng: &mut SmallRng,
    job: &HistoryJob,
) -> rusqlite::Result<()> {
    let mut at = job.start;
    for k in 0..job.transitions {
        let (from, to) = transition(k, job.transitions, job.succeeded);
        at += rng.random_range(1..600);
        let at_value: Value = v::timestamp(rng, at, v::HISTORY_AT_MIX);
        insert.execute(params![job.id, at_value, from, to, v::note(rng)])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_chains_end_in_the_status_the_job_gets() {
        assert_eq!(final_status(1, true), "queued");
        assert_eq!(final_status(2, true), "running");
        assert_eq!(final_status(3, true), "done");
        assert_eq!(final_status(3, false), "failed");
        assert_eq!(final_status(4, true), "queued");
        assert_eq!(transition(3, 4, true), (Some("failed"), "queued"));
        assert_eq!(transition(2, 4, true), (Some("running"), "failed"));
        assert_eq!(
            (attempts(1), attempts(2), attempts(4), attempts(5)),
            (0, 1, 1, 2)
        );
    }

    #[test]
    fn transition_counts_always_fit_what_is_left() {
        let mut rng = SmallRng::seed_from_u64(7);
        for (left, after) in [(0, 0), (3, 0), (8, 1), (9, 2), (1, 5), (400, 100)] {
            let drawn = transition_count(&mut rng, left, after);
            assert!(
                drawn <= left && left - drawn <= MAX_TRANSITIONS * after,
                "{left} {after}"
            );
        }
    }

    #[test]
    fn scale_must_be_positive_and_finite() {
        for scale in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(check_scale(scale), Err(Error::Config { .. })),
                "{scale}"
            );
        }
        assert!(check_scale(0.0001).is_ok());
    }
}
