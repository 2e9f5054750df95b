//! Prometheus metrics for a running sync (`sync --metrics-addr 127.0.0.1:9187`): `/metrics` in
//! the text exposition format (every name is `sqlite2pg_*` and is defined once, here) and
//! `/healthz`, which fails when sync is stuck (no batch and no idle report for a while) or its
//! lag is over a threshold. A tiny blocking HTTP server on its own thread: one request per
//! connection, no keep-alive; enough for a scraper and a load balancer.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::pipeline::SyncStatus;

/// Upper bounds (seconds) of the apply batch duration histogram buckets.
const BATCH_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// `/healthz` fails when nothing was published for this long (sync stuck).
const STUCK_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Inner {
    status: SyncStatus,
    updated: Instant,
    batch_counts: Vec<u64>,
    batch_sum: f64,
    batch_count: u64,
}

/// The live numbers sync publishes and the endpoint renders.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// `/healthz` fails above this lag (seconds).
    max_lag_seconds: f64,
}

impl Metrics {
    pub fn new(max_lag_seconds: f64) -> Metrics {
        Metrics {
            inner: Mutex::new(Inner {
                status: SyncStatus::default(),
                updated: Instant::now(),
                batch_counts: vec![0; BATCH_BUCKETS.len()],
                batch_sum: 0.0,
                batch_count: 0,
            }),
            max_lag_seconds,
        }
    }

    /// Records sync's current status (called after every batch and on idle ticks).
    pub fn publish(&self, status: &SyncStatus) {
        let mut inner = self.inner.lock().expect("metrics lock");
        inner.status = status.clone();
        inner.updated = Instant::now();
    }

    /// Records one apply batch's duration.
    pub fn observe_batch(&self, seconds: f64) {
        let mut inner = self.inner.lock().expect("metrics lock");
        for (i, bound) in BATCH_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                inner.batch_counts[i] += 1;
            }
        }
        inner.batch_sum += seconds;
        inner.batch_count += 1;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let inner = self.inner.lock().expect("metrics lock");
        let s = &inner.status;
        let gauges: [(&str, &str, f64); 7] = [
            (
                "sqlite2pg_lag_seconds",
                "Seconds since the oldest unapplied change was committed in SQLite (0 when idle).",
                s.lag_seconds,
            ),
            (
                "sqlite2pg_lag_changes",
                "Captured changes not yet applied to PostgreSQL.",
                s.lag_changes as f64,
            ),
            (
                "sqlite2pg_captured_seq",
                "Highest change sequence written to the change log.",
                s.captured_seq as f64,
            ),
            (
                "sqlite2pg_applied_seq",
                "Change sequence PostgreSQL committed (sqlite2pg.sync_state).",
                s.applied_seq as f64,
            ),
            (
                "sqlite2pg_change_log_changes",
                "Changes waiting in the change log (trimmed once PostgreSQL committed them).",
                s.change_log_changes as f64,
            ),
            (
                "sqlite2pg_change_log_bytes",
                "Size of the change log on disk.",
                s.change_log_bytes as f64,
            ),
            (
                "sqlite2pg_source_wal_bytes",
                "Size of the source database's -wal file.",
                s.source_wal_bytes as f64,
            ),
        ];
        let counters: [(&str, &str, u64); 5] = [
            (
                "sqlite2pg_changes_applied_total",
                "Changes applied to PostgreSQL.",
                s.changes_applied,
            ),
            (
                "sqlite2pg_batches_total",
                "Apply batches committed.",
                s.batches,
            ),
            (
                "sqlite2pg_quarantined_total",
                "Values quarantined by sync.",
                s.quarantined,
            ),
            (
                "sqlite2pg_verification_mismatches_total",
                "Applied rows that did not match their source image (re-enqueued).",
                s.verification_mismatches,
            ),
            (
                "sqlite2pg_retries_total",
                "Batches retried after a transient PostgreSQL failure.",
                s.retries,
            ),
        ];
        let mut out = String::new();
        for (name, help, v) in gauges {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            ));
        }
        for (name, help, v) in counters {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        }
        let t = "sqlite2pg_table_rows_applied_total";
        out.push_str(&format!(
            "# HELP {t} Rows upserted or deleted in PostgreSQL per source table.\n# TYPE {t} counter\n"
        ));
        for (table, rows) in &s.applied_per_table {
            out.push_str(&format!("{t}{{table=\"{}\"}} {rows}\n", label_value(table)));
        }
        let h = "sqlite2pg_apply_batch_seconds";
        out.push_str(&format!("# HELP {h} Duration of apply batches (one PostgreSQL transaction each).\n# TYPE {h} histogram\n"));
        for (bound, count) in BATCH_BUCKETS.iter().zip(&inner.batch_counts) {
            out.push_str(&format!("{h}_bucket{{le=\"{bound}\"}} {count}\n"));
        }
        out.push_str(&format!(
            "{h}_bucket{{le=\"+Inf\"}} {}\n{h}_sum {}\n{h}_count {}\n",
            inner.batch_count, inner.batch_sum, inner.batch_count
        ));
        out
    }

    /// `None` when healthy, else why not.
    pub fn unhealthy(&self) -> Option<String> {
        let inner = self.inner.lock().expect("metrics lock");
        if inner.updated.elapsed() > STUCK_AFTER {
            return Some(format!(
                "no progress report for {:.0} s: sync is stuck",
                inner.updated.elapsed().as_secs_f64()
            ));
        }
        (inner.status.lag_seconds > self.max_lag_seconds).then(|| {
            format!(
                "lag {:.1} s is over {:.1} s",
                inner.status.lag_seconds, self.max_lag_seconds
            )
        })
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until `stop` is set.
pub fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let bind_err = |source| Error::Io {
        op: "listen for metrics on",
        path: addr.into(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 2048];
                    let n = stream.read(&mut buf).unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]);
                    let path = request.split_whitespace().nth(1).unwrap_or("/");
                    let (code, body) = match path {
                        "/metrics" => ("200 OK", metrics.render()),
                        "/healthz" => match metrics.unhealthy() {
                            None => ("200 OK", "ok\n".to_string()),
                            Some(why) => ("503 Service Unavailable", format!("{why}\n")),
                        },
                        _ => ("404 Not Found", "try /metrics or /healthz\n".to_string()),
                    };
                    let _ = write!(stream, "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }))
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
