//! `sync --metrics-addr`: /metrics moves as the application writes; /healthz answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use sqlite2pg::sample_app::{generate, GenerateOptions, LiveWriter, WriterOptions};

use crate::snapshot::{options, snapshot};
use crate::support::pg::TestDb;
use crate::support::{temp_dir, wait_until, ChildGuard};

fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_move_as_the_writer_writes_and_healthz_answers() {
    let dir = temp_dir();
    let src = dir.path().join("app.db");
    generate(
        &src,
        &GenerateOptions {
            scale: 0.001,
            seed: 8,
        },
    )
    .unwrap();
    let db = TestDb::new();
    snapshot(&src, &db, &options()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut sync = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_sqlite2pg"))
            .args([
                "--source",
                src.to_str().unwrap(),
                "sync",
                "--metrics-addr",
                &addr,
            ])
            .env("SQLITE2PG_TARGET", db.url_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(20), "/metrics answers", || {
        get(&addr, "/metrics").is_some_and(|b| b.contains("sqlite2pg_applied_seq"))
    });
    let first = metric(
        &get(&addr, "/metrics").unwrap(),
        "sqlite2pg_changes_applied_total",
    )
    .unwrap();
    let writer = LiveWriter::start(
        &src,
        WriterOptions {
            rate_per_sec: 200.0,
            seed: 3,
        },
    )
    .unwrap();
    wait_until(Duration::from_secs(20), "changes applied grows", || {
        get(&addr, "/metrics")
            .and_then(|b| metric(&b, "sqlite2pg_changes_applied_total"))
            .is_some_and(|n| n > first + 20.0)
    });
    let body = get(&addr, "/metrics").unwrap();
    assert!(metric(&body, "sqlite2pg_batches_total").unwrap() > 0.0);
    assert!(metric(&body, "sqlite2pg_apply_batch_seconds_count").unwrap() > 0.0);
    assert!(body.contains("# TYPE sqlite2pg_lag_seconds gauge"));
    assert!(
        metric(&body, "sqlite2pg_table_rows_applied_total{table=\"jobs\"}").unwrap() > 0.0,
        "{body}"
    );
    assert!(body.contains("# TYPE sqlite2pg_change_log_changes gauge"));
    // The sizes are measured every 2 s: the first measurement may predate the writer's WAL.
    wait_until(
        Duration::from_secs(10),
        "the change log's and the WAL's sizes are measured",
        || {
            get(&addr, "/metrics").is_some_and(|b| {
                metric(&b, "sqlite2pg_change_log_bytes").is_some_and(|n| n > 0.0)
                    && metric(&b, "sqlite2pg_source_wal_bytes").is_some_and(|n| n > 0.0)
            })
        },
    );
    writer.stop().unwrap();
    let health = get(&addr, "/healthz").unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    unsafe { libc::kill(sync.id() as libc::pid_t, libc::SIGTERM) };
    assert!(sync.wait().unwrap().success());
}

#[test]
fn the_grafana_dashboard_only_uses_metrics_sync_exports() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/sqlite2pg-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("valid JSON");
    let exported = sqlite2pg::metrics::Metrics::new(60.0).render();
    let mut used = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("sqlite2pg_"))
            {
                assert!(
                    exported.contains(&format!("{word} "))
                        || exported.contains(&format!("{word}{{")),
                    "{word} is not exported"
                );
                used += 1;
            }
        }
    }
    assert!(used >= 8, "the dashboard charts the metrics");
}
