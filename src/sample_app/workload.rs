//! The sample app's write transactions, as the live writer runs them: enqueue a job, move a
//! job through its statuses, delete old finished jobs (their history goes by cascade), upsert
//! rate limits and app state, edit tool configs with `json_set`, add and revoke OAuth tokens.
//! Each picks its rows at random among those that exist, so every change respects the foreign
//! keys, and reports the rows it changed. The caller owns the transaction.

use rand::rngs::SmallRng;
use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension};

use super::generate::{insert_token, rate_limit_tokens};
use super::schema::{INSERT_HISTORY, INSERT_TOKEN, WELL_KNOWN_STATE_KEYS};
use super::values::{self as v};

const ENQUEUE_JOB: &str = "INSERT INTO jobs \
    (user_id, kind, status, payload, scheduled_at, attempts, priority) \
    VALUES (?1, ?2, 'queued', ?3, ?4, 0, ?5)";
const JOB_STATUS: &str = "SELECT status FROM jobs WHERE id = ?1";
const ADVANCE_JOB: &str = "UPDATE jobs SET status = ?2, attempts = attempts + ?3, \
    result = coalesce(?4, result) WHERE id = ?1";
const DELETE_JOB: &str = "DELETE FROM jobs WHERE id = ?1";
const DELETE_TOKEN: &str = "DELETE FROM oauth_tokens WHERE id = ?1";
const RATE_LIMIT_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM rate_limits WHERE key = ?1)";
const UPSERT_RATE_LIMIT: &str = "INSERT INTO rate_limits (key, tokens, reset_at) \
    VALUES (?1, ?2, ?3) \
    ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, reset_at = excluded.reset_at";
const APP_STATE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM app_state WHERE key = ?1)";
const UPSERT_APP_STATE: &str = "INSERT INTO app_state (key, value) VALUES (?1, ?2) \
    ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const TOUCH_TOOL_CONFIG: &str = "UPDATE tool_configs SET enabled = 1 - enabled, \
    config = json_set(config, '$.retries.max', ?2, '$.touched_at', ?3), updated_at = ?3 \
    WHERE id = ?1";

/// How to pick a random existing row: `range` gives (min id, max id), `first_from` the first
/// qualifying id in `[?1, ?2)`. (`+status` keeps SQLite on the rowid instead of the status
/// index, which would scan and sort every queued job.)
struct RowPick {
    range: &'static str,
    first_from: &'static str,
}

const USER: RowPick = RowPick {
    range: "SELECT (SELECT min(id) FROM users), (SELECT max(id) FROM users)",
    first_from: "SELECT id FROM users WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 1",
};
const ACTIVE_JOB: RowPick = RowPick {
    range: "SELECT (SELECT min(id) FROM jobs), (SELECT max(id) FROM jobs)",
    first_from: "SELECT id FROM jobs WHERE id >= ?1 AND id < ?2 \
        AND +status IN ('queued', 'running') ORDER BY id LIMIT 1",
};
const FINISHED_JOB: RowPick = RowPick {
    range: ACTIVE_JOB.range,
    first_from: "SELECT id FROM jobs WHERE id >= ?1 AND id < ?2 \
        AND +status IN ('done', 'failed') ORDER BY id LIMIT 1",
};
const TOKEN: RowPick = RowPick {
    range: "SELECT (SELECT min(id) FROM oauth_tokens), (SELECT max(id) FROM oauth_tokens)",
    first_from: "SELECT id FROM oauth_tokens WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 1",
};
const TOOL_CONFIG: RowPick = RowPick {
    range: "SELECT (SELECT min(id) FROM tool_configs), (SELECT max(id) FROM tool_configs)",
    first_from: "SELECT id FROM tool_configs WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 1",
};

/// Every statement the writer runs, prepared at start so a wrong database fails there.
pub(super) const ALL_STATEMENTS: &[&str] = &[
    ENQUEUE_JOB,
    JOB_STATUS,
    ADVANCE_JOB,
    DELETE_JOB,
    DELETE_TOKEN,
    RATE_LIMIT_EXISTS,
    UPSERT_RATE_LIMIT,
    APP_STATE_EXISTS,
    UPSERT_APP_STATE,
    TOUCH_TOOL_CONFIG,
    INSERT_HISTORY,
    INSERT_TOKEN,
    USER.range,
    USER.first_from,
    ACTIVE_JOB.range,
    ACTIVE_JOB.first_from,
    FINISHED_JOB.first_from,
    TOKEN.range,
    TOKEN.first_from,
    TOOL_CONFIG.range,
    TOOL_CONFIG.first_from,
];

/// One kind of application transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    EnqueueJob,
    AddToken,
    AdvanceJob,
    UpsertRateLimit,
    UpdateAppState,
    TouchToolConfig,
    DeleteFinishedJob,
    DeleteToken,
}

/// Weights in percent: 50 insert, 35 update, 15 delete transactions.
const OP_WEIGHTS: &[(Op, u32)] = &[
    (Op::EnqueueJob, 45),
    (Op::AddToken, 5),
    (Op::AdvanceJob, 25),
    (Op::UpsertRateLimit, 5),
    (Op::UpdateAppState, 3),
    (Op::TouchToolConfig, 2),
    (Op::DeleteFinishedJob, 12),
    (Op::DeleteToken, 3),
];

impl Op {
    pub(super) fn pick(rng: &mut SmallRng) -> Op {
        let mut roll = rng.random_range(0..100u32);
        for &(op, weight) in OP_WEIGHTS {
            if roll < weight {
                return op;
            }
            roll -= weight;
        }
        Op::EnqueueJob
    }

    /// The operation named in errors.
    pub(super) fn name(self) -> &'static str {
        match self {
            Op::EnqueueJob => "live writer: enqueue a job",
            Op::AddToken => "live writer: add an OAuth token",
            Op::AdvanceJob => "live writer: advance a job",
            Op::UpsertRateLimit => "live writer: upsert a rate limit",
            Op::UpdateAppState => "live writer: update app state",
            Op::TouchToolConfig => "live writer: update a tool config",
            Op::DeleteFinishedJob => "live writer: delete a finished job",
            Op::DeleteToken => "live writer: delete an OAuth token",
        }
    }
}

/// Rows one transaction changed.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Delta {
    pub(super) inserts: u64,
    pub(super) updates: u64,
    pub(super) deletes: u64,
}

/// Runs `op` inside the caller's transaction; `now` (Unix seconds) stamps the rows.
pub(super) fn run(
    conn: &Connection,
    rng: &mut SmallRng,
    op: Op,
    now: i64,
) -> rusqlite::Result<Delta> {
    match op {
        Op::EnqueueJob => enqueue_job(conn, rng, now),
        Op::AddToken => add_token(conn, rng, now),
        Op::AdvanceJob => advance_job(conn, rng, now),
        Op::UpsertRateLimit => upsert_rate_limit(conn, rng, now),
        Op::UpdateAppState => update_app_state(conn, rng, now),
        Op::TouchToolConfig => touch_tool_config(conn, rng, now),
        Op::DeleteFinishedJob => delete_one(conn, rng, &FINISHED_JOB, DELETE_JOB),
        Op::DeleteToken => delete_one(conn, rng, &TOKEN, DELETE_TOKEN),
    }
}

/// Ids a pick scans from its random start, at most: a rare kind of row (finished jobs, once the
/// writer has deleted most old ones and its queue has grown) then costs a bounded read, not one
/// that grows with the table. Scanning to the first match instead slowed the unthrottled writer
/// from 13.7k to 1.7k transactions/s within two minutes, and the sync bench's "5000/s" lag run
/// to 710/s.
const PICK_WINDOW: i64 = 2048;
/// Windows a pick tries before the transaction does nothing.
const PICK_TRIES: usize = 4;

/// A random existing row id; `fraction` < 1 restricts the start point to the oldest part of
/// the id range. `None` when none of [`PICK_TRIES`] windows of [`PICK_WINDOW`] ids holds a
/// qualifying row (the transaction then changes nothing).
fn pick(
    conn: &Connection,
    rng: &mut SmallRng,
    what: &RowPick,
    fraction: f64,
) -> rusqlite::Result<Option<i64>> {
    let range = conn.prepare_cached(what.range)?.query_row([], |r| {
        Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
    })?;
    let (Some(min), Some(max)) = range else {
        return Ok(None);
    };
    let upper = min + ((max - min) as f64 * fraction) as i64;
    let mut first_from = conn.prepare_cached(what.first_from)?;
    for _ in 0..PICK_TRIES {
        let start = rng.random_range(min..=upper);
        let window = [start, start.saturating_add(PICK_WINDOW)];
        if let Some(id) = first_from.query_row(window, |r| r.get(0)).optional()? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

fn insert_history(
    conn: &Connection,
    rng: &mut SmallRng,
    job_id: i64,
    change: (Option<&str>, &str),
    now: i64,
) -> rusqlite::Result<()> {
    let at = v::timestamp(rng, now, v::HISTORY_AT_MIX);
    conn.prepare_cached(INSERT_HISTORY)?.execute(params![
        job_id,
        at,
        change.0,
        change.1,
        v::note(rng)
    ])?;
    Ok(())
}

fn enqueue_job(conn: &Connection, rng: &mut SmallRng, now: i64) -> rusqlite::Result<Delta> {
    let user = match rng.random_bool(0.04) {
        true => None,
        false => pick(conn, rng, &USER, 1.0)?,
    };
    let kind = v::JOB_KINDS[rng.random_range(0..v::JOB_KINDS.len())];
    let scheduled_at = now + rng.random_range(0..600);
    let scheduled = v::timestamp(rng, scheduled_at, v::JOB_SCHEDULED_MIX);
    let reference = rng.random_range(1..10_000_000);
    let payload = v::job_payload(rng, kind, reference);
    let job_id = conn.prepare_cached(ENQUEUE_JOB)?.insert(params![
        user,
        kind,
        payload,
        scheduled,
        v::priority(rng)
    ])?;
    insert_history(conn, rng, job_id, (None, "queued"), now)?;
    Ok(Delta {
        inserts: 2,
        ..Delta::default()
    })
}

/// queued → running, or running → done (85%) / failed, with a history row.
fn advance_job(conn: &Connection, rng: &mut SmallRng, now: i64) -> rusqlite::Result<Delta> {
    let Some(id) = pick(conn, rng, &ACTIVE_JOB, 1.0)? else {
        return Ok(Delta::default());
    };
    let status: String = conn
        .prepare_cached(JOB_STATUS)?
        .query_row([id], |r| r.get(0))?;
    let (to, attempt, result) = match status.as_str() {
        "queued" => ("running", 1, None),
        _ if rng.random_bool(0.85) => ("done", 0, v::job_result(rng, 0.3)),
        _ => ("failed", 0, None),
    };
    conn.prepare_cached(ADVANCE_JOB)?
        .execute(params![id, to, attempt, result])?;
    insert_history(conn, rng, id, (Some(&status), to), now)?;
    Ok(Delta {
        inserts: 1,
        updates: 1,
        deletes: 0,
    })
}

fn add_token(conn: &Connection, rng: &mut SmallRng, now: i64) -> rusqlite::Result<Delta> {
    let Some(user) = pick(conn, rng, &USER, 1.0)? else {
        return Ok(Delta::default());
    };
    let mut insert = conn.prepare_cached(INSERT_TOKEN)?;
    insert_token(&mut insert, rng, user, now)?;
    Ok(Delta {
        inserts: 1,
        ..Delta::default()
    })
}

/// Deletes one picked row; the old half of the id range, like a retention job would.
fn delete_one(
    conn: &Connection,
    rng: &mut SmallRng,
    what: &RowPick,
    delete: &str,
) -> rusqlite::Result<Delta> {
    let Some(id) = pick(conn, rng, what, 0.5)? else {
        return Ok(Delta::default());
    };
    let deletes = conn.prepare_cached(delete)?.execute([id])? as u64;
    Ok(Delta {
        deletes,
        ..Delta::default()
    })
}

/// An upsert counts as an update when the key existed, an insert otherwise.
fn upsert_delta(existed: bool) -> Delta {
    match existed {
        true => Delta {
            updates: 1,
            ..Delta::default()
        },
        false => Delta {
            inserts: 1,
            ..Delta::default()
        },
    }
}

fn upsert_rate_limit(conn: &Connection, rng: &mut SmallRng, now: i64) -> rusqlite::Result<Delta> {
    let user = pick(conn, rng, &USER, 1.0)?.unwrap_or(1);
    let bucket = v::BUCKETS[rng.random_range(0..v::BUCKETS.len())];
    let key = format!("user:{user}:{bucket}");
    let existed: bool = conn
        .prepare_cached(RATE_LIMIT_EXISTS)?
        .query_row([&key], |r| r.get(0))?;
    let reset = v::timestamp(rng, now + 3_600, v::RATE_RESET_MIX);
    conn.prepare_cached(UPSERT_RATE_LIMIT)?
        .execute(params![key, rate_limit_tokens(rng), reset])?;
    Ok(upsert_delta(existed))
}

fn update_app_state(conn: &Connection, rng: &mut SmallRng, now: i64) -> rusqlite::Result<Delta> {
    let key = WELL_KNOWN_STATE_KEYS[rng.random_range(0..WELL_KNOWN_STATE_KEYS.len())];
    let existed: bool = conn
        .prepare_cached(APP_STATE_EXISTS)?
        .query_row([key], |r| r.get(0))?;
    let value = v::app_state_value(rng, now);
    conn.prepare_cached(UPSERT_APP_STATE)?
        .execute(params![key, value])?;
    Ok(upsert_delta(existed))
}

/// Flips `enabled` and edits the config JSON in SQL (`json_set`), as apps do.
fn touch_tool_config(conn: &Connection, rng: &mut SmallRng, now: i64) -> rusqlite::Result<Delta> {
    let Some(id) = pick(conn, rng, &TOOL_CONFIG, 1.0)? else {
        return Ok(Delta::default());
    };
    let updated_at = v::timestamp(rng, now, v::CONFIG_UPDATED_MIX);
    let updates = conn.prepare_cached(TOUCH_TOOL_CONFIG)?.execute(params![
        id,
        rng.random_range(0..6),
        updated_at
    ])? as u64;
    Ok(Delta {
        updates,
        ..Delta::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_weights_give_half_inserts_a_third_updates_the_rest_deletes() {
        let share = |ops: &[Op]| -> u32 {
            OP_WEIGHTS
                .iter()
                .filter(|(op, _)| ops.contains(op))
                .map(|(_, w)| w)
                .sum()
        };
        assert_eq!(share(&[Op::EnqueueJob, Op::AddToken]), 50);
        assert_eq!(share(&[Op::DeleteFinishedJob, Op::DeleteToken]), 15);
        assert_eq!(OP_WEIGHTS.iter().map(|(_, w)| w).sum::<u32>(), 100);
    }
}
