//! The sample application's "dirty but valid" values: timestamps in the several formats real
//! apps mix in one DATETIME column, unicode display names and notes with quotes and newlines,
//! JSON documents of varied shapes, tokens and scopes. Every value is valid for its column's
//! intent (dates parse with SQLite's `datetime()`, JSON passes `json_valid`, booleans are 0/1);
//! the dirtiness is the variety of formats, never garbage. Shared by the generator and the live
//! writer so both produce the same kinds of values.

use chrono::{DateTime, FixedOffset, Offset, Utc};
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, RngCore};
use rusqlite::types::Value;
use serde_json::json;

/// How one timestamp is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateFormat {
    /// `2024-03-01 12:34:56`: SQLite's own `CURRENT_TIMESTAMP` style (UTC).
    SpaceUtc,
    /// `2024-03-01 12:34:56.123456`: what Python's `str(datetime)` writes (UTC).
    SpaceMicros,
    /// `2024-03-01T12:34:56Z`: ISO-8601 / RFC 3339 from JavaScript and Go apps.
    IsoZulu,
    /// `2024-03-01T12:34:56.123+02:00`: local time with its offset.
    IsoMillisOffset,
    /// `1709296496`: Unix epoch seconds stored as an INTEGER.
    UnixEpoch,
}

/// The formats one column mixes, with weights summing to 100.
pub(crate) type DateMix = &'static [(DateFormat, u32)];

use DateFormat::{IsoMillisOffset, IsoZulu, SpaceMicros, SpaceUtc, UnixEpoch};

pub(crate) const USER_CREATED_MIX: DateMix = &[
    (SpaceUtc, 55),
    (IsoZulu, 20),
    (IsoMillisOffset, 10),
    (UnixEpoch, 15),
];
pub(crate) const USER_LOGIN_MIX: DateMix = &[(SpaceMicros, 50), (IsoZulu, 30), (UnixEpoch, 20)];
pub(crate) const CONFIG_UPDATED_MIX: DateMix =
    &[(SpaceUtc, 60), (IsoMillisOffset, 25), (UnixEpoch, 15)];
pub(crate) const TOKEN_CREATED_MIX: DateMix = &[(SpaceUtc, 80), (IsoZulu, 20)];
pub(crate) const RATE_RESET_MIX: DateMix = &[(UnixEpoch, 40), (IsoZulu, 40), (SpaceUtc, 20)];
pub(crate) const JOB_SCHEDULED_MIX: DateMix = &[
    (SpaceUtc, 70),
    (IsoZulu, 15),
    (IsoMillisOffset, 5),
    (UnixEpoch, 10),
];
pub(crate) const HISTORY_AT_MIX: DateMix = &[
    (SpaceUtc, 50),
    (SpaceMicros, 20),
    (IsoZulu, 15),
    (UnixEpoch, 15),
];

/// Offsets (seconds east of UTC) used by [`DateFormat::IsoMillisOffset`].
const OFFSETS: &[i32] = &[7200, -18000, 19800, 0, 32400, -28800, 3600];

/// A timestamp for `secs` (Unix epoch seconds) in a format drawn from `mix`.
pub(crate) fn timestamp(rng: &mut SmallRng, secs: i64, mix: DateMix) -> Value {
    match pick_format(rng, mix) {
        UnixEpoch => Value::Integer(secs),
        format => Value::Text(format_text(rng, secs, format)),
    }
}

/// `secs` as SQLite's `CURRENT_TIMESTAMP` writes it.
pub(crate) fn sqlite_timestamp(secs: i64) -> String {
    utc(secs, 0).format("%Y-%m-%d %H:%M:%S").to_string()
}

fn pick_format(rng: &mut SmallRng, mix: DateMix) -> DateFormat {
    let mut roll = rng.random_range(0..100u32);
    for &(format, weight) in mix {
        if roll < weight {
            return format;
        }
        roll -= weight;
    }
    SpaceUtc
}

fn format_text(rng: &mut SmallRng, secs: i64, format: DateFormat) -> String {
    match format {
        SpaceMicros => {
            let micros = rng.random_range(0..1_000_000u32);
            utc(secs, micros * 1000)
                .format("%Y-%m-%d %H:%M:%S%.6f")
                .to_string()
        }
        IsoZulu => utc(secs, 0).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        IsoMillisOffset => {
            let millis = rng.random_range(0..1000u32);
            let east = OFFSETS.choose(rng).copied().unwrap_or(0);
            let offset = FixedOffset::east_opt(east).unwrap_or(Utc.fix());
            let local = utc(secs, millis * 1_000_000).with_timezone(&offset);
            local.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
        }
        SpaceUtc | UnixEpoch => sqlite_timestamp(secs),
    }
}

fn utc(secs: i64, nanos: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, nanos).unwrap_or_default()
}

const FIRST_NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "nina", "oscar", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yuki", "jose",
    "zoe", "soren", "lukasz", "mei", "hiro", "priya", "omar", "fatima", "chen",
];
const LAST_NAMES: &[&str] = &[
    "smith", "martin", "garcia", "muller", "rossi", "tanaka", "kim", "nguyen", "obrien", "silva",
    "kowalski", "dubois", "ivanova", "haddad", "okafor",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "Example.org",
    "mail.test",
    "corp.example",
    "web.example",
];

/// A unique e-mail address for user `id`; some have capitals (hence the NOCASE index).
pub(crate) fn email(rng: &mut SmallRng, id: i64) -> String {
    let first = FIRST_NAMES.choose(rng).copied().unwrap_or("user");
    let last = LAST_NAMES.choose(rng).copied().unwrap_or("name");
    let domain = DOMAINS.choose(rng).copied().unwrap_or("example.com");
    let address = format!("{first}.{last}{id}@{domain}");
    if rng.random_bool(0.15) {
        capitalize(&address)
    } else {
        address
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

const DISPLAY_NAMES: &[&str] = &[
    "Alice Smith",
    "José García",
    "Zoë Dubois",
    "Søren Kierkegaard",
    "Łukasz Kowalski",
    "Renée O'Connor",
    "Dwayne \"The Rock\" Johnson",
    "山田太郎",
    "李小龙",
    "김민준",
    "Мария Иванова",
    "محمد حداد",
    "Ñandú Pérez",
    "🚀 Rocket Dev",
    "Chloé 👩‍💻",
    "Bob's Burgers",
    "  padded name  ",
    "François-Xavier Müller",
    "Ωmega",
    "नमस्ते दुनिया",
    "back\\slash",
    "",
];

/// A display name: unicode, quotes, the odd empty string, and NULL about 8% of the time.
pub(crate) fn display_name(rng: &mut SmallRng) -> Option<&'static str> {
    if rng.random_bool(0.08) {
        return None;
    }
    DISPLAY_NAMES.choose(rng).copied()
}

const LOCALES: &[&str] = &["en", "en-US", "fr_FR", "de", "ja-JP", "pt-BR", "zh-Hans"];

pub(crate) fn locale(rng: &mut SmallRng) -> &'static str {
    LOCALES.choose(rng).copied().unwrap_or("en")
}

const NOTES: &[&str] = &[
    "",
    "retry after timeout",
    "it's done",
    "worker said \"ok\"",
    "line one\nline two",
    "übermäßig langsam",
    "任务完成 ✅",
    "trailing space ",
    "50% done; ETA 5'",
    "semi;colon,comma",
    "tab\tseparated",
    "back\\slash",
    "' OR 1=1 --",
    "emoji 🔥🔥",
    "\r\nwindows newline",
];

/// A job-history note: NULL about 35% of the time, otherwise text that may be empty or hold
/// quotes, newlines, tabs, backslashes or unicode.
pub(crate) fn note(rng: &mut SmallRng) -> Option<&'static str> {
    if rng.random_bool(0.35) {
        return None;
    }
    NOTES.choose(rng).copied()
}

/// Job kinds; each has its own payload shape.
pub(crate) const JOB_KINDS: &[&str] = &[
    "send_email",
    "resize_image",
    "sync_calendar",
    "webhook",
    "export_csv",
    "cleanup",
];

const TEMPLATES: &[&str] = &["welcome", "reset", "digest"];

/// A job payload as JSON text (NULL about 3% of the time). Shapes vary by kind: nested objects,
/// arrays, floats, a JSON `null`, unicode strings and now and then an integer above 2^53.
pub(crate) fn job_payload(rng: &mut SmallRng, kind: &str, n: i64) -> Option<String> {
    if rng.random_bool(0.03) {
        return None;
    }
    let value = match kind {
        "send_email" => json!({
            "to": format!("user{n}@example.com"),
            "template": TEMPLATES.choose(rng),
            "vars": {"name": display_name(rng), "count": rng.random_range(0..100)},
            "attachments": [],
        }),
        "resize_image" => json!({
            "src": format!("s3://uploads/img/{n}.png"),
            "sizes": [64, 128, 256],
            "quality": 0.85,
        }),
        "sync_calendar" => {
            json!({"calendar_id": format!("cal_{n:08x}"), "full": rng.random_bool(0.1)})
        }
        "webhook" => webhook_payload(rng, n),
        "export_csv" => json!({
            "table": "orders",
            "filters": {"status": ["open", "closed"], "min_total": 12.5},
            "columns": null,
        }),
        _ => json!({"older_than_days": rng.random_range(1..90), "dry_run": false}),
    };
    Some(value.to_string())
}

fn webhook_payload(rng: &mut SmallRng, n: i64) -> serde_json::Value {
    let big_id: i64 = if rng.random_bool(0.05) {
        9_007_199_254_740_993
    } else {
        n
    };
    json!({
        "url": format!("https://hooks.example.com/{n}"),
        "method": "POST",
        "headers": {"X-Signature": format!("{:016x}", rng.next_u64())},
        "body": {"event": "job.done", "data": {"id": big_id, "tags": ["a", "b"], "msg": note(rng)}},
    })
}

/// Integrations a user can configure; at most one config per (user, tool).
pub(crate) const TOOLS: &[&str] = &[
    "github",
    "slack",
    "linear",
    "jira",
    "notion",
    "pagerduty",
    "zapier",
    "sentry",
];

const TOOL_EVENTS: &[&str] = &["push", "issue.opened", "déploiement"];

/// A tool configuration: a nested JSON object.
pub(crate) fn tool_config(rng: &mut SmallRng, tool: &str) -> String {
    let events = &TOOL_EVENTS[..rng.random_range(0..=TOOL_EVENTS.len())];
    json!({
        "tool": tool,
        "events": events,
        "webhook": {"url": format!("https://{tool}.example.com/hook"), "secret": null},
        "retries": {"max": rng.random_range(0..6), "backoff_ms": 250.5},
        "labels": {"team": "платформа", "emoji": "✨"},
        "version": 2,
    })
    .to_string()
}

/// An `app_state` value: any JSON document, including bare numbers, strings, booleans and
/// `null` (a declared JSON column has NUMERIC affinity, so SQLite stores `42` as an INTEGER).
pub(crate) fn app_state_value(rng: &mut SmallRng, i: i64) -> String {
    let value = match rng.random_range(0..6) {
        0 => json!(i * 7),
        1 => json!(format!("value \"{i}\" ünïcode")),
        2 => json!(rng.random_bool(0.5)),
        3 => serde_json::Value::Null,
        4 => json!([i, 1.5, "x", null, {"nested": [true]}]),
        _ => {
            json!({"enabled": rng.random_bool(0.5), "rollout": rng.random_range(0..=100), "seen": i})
        }
    };
    value.to_string()
}

pub(crate) const PROVIDERS: &[(&str, &str)] = &[
    ("google", "ya29."),
    ("github", "gho_"),
    ("microsoft", "EwB"),
    ("slack", "xoxp-"),
];

const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// An opaque token: the provider's prefix and 32 to 59 URL-safe characters.
pub(crate) fn token(rng: &mut SmallRng, prefix: &str) -> String {
    let len = rng.random_range(32..60);
    let mut token = String::with_capacity(prefix.len() + len);
    token.push_str(prefix);
    token.extend((0..len).map(|_| char::from(TOKEN_ALPHABET[rng.random_range(0..64)])));
    token
}

const SCOPES: &[&str] = &[
    "openid email profile",
    "repo,user:email",
    "read write",
    "https://www.googleapis.com/auth/calendar.readonly",
    "channels:read chat:write",
];

pub(crate) fn scopes(rng: &mut SmallRng) -> &'static str {
    SCOPES.choose(rng).copied().unwrap_or("read")
}

/// A job priority for a NUMERIC column: mostly integers, sometimes fractional reals.
pub(crate) fn priority(rng: &mut SmallRng) -> Value {
    if rng.random_bool(0.7) {
        Value::Integer(rng.random_range(0..10))
    } else {
        let quarters = f64::from(rng.random_range(1..4u8)) * 0.25;
        Value::Real(f64::from(rng.random_range(0..10u8)) + quarters)
    }
}

/// A job result: usually NULL, sometimes a few hundred random bytes.
pub(crate) fn job_result(rng: &mut SmallRng, probability: f64) -> Option<Vec<u8>> {
    if !rng.random_bool(probability) {
        return None;
    }
    let mut bytes = vec![0u8; rng.random_range(16..400)];
    rng.fill_bytes(&mut bytes);
    Some(bytes)
}

/// Rate-limit buckets, the last part of keys like `user:123:api`.
pub(crate) const BUCKETS: &[&str] = &["api", "login", "upload", "export"];
