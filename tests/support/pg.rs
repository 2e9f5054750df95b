//! The PostgreSQL server the tests share, and a fresh database per test (dropped on `Drop`).
//!
//! With `TEST_DATABASE_URL` set (a URL whose user may CREATE and DROP DATABASE), tests use that
//! server. Otherwise each test process starts one private cluster on first use. Clusters
//! started here live until the process exits: an `atexit` hook stops them by PID at a normal
//! exit, and each cluster's watchdog stops it if the process is killed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once, OnceLock, TryLockError};

use sqlite2pg::private_pg::{ClusterOptions, PrivateCluster};
use sqlite2pg::target::connect::TargetUrl;

use super::error_chain;

/// Names an existing server to test against instead of a private cluster.
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// Clusters that live until this process exits.
static PROCESS_CLUSTERS: Mutex<Vec<PrivateCluster>> = Mutex::new(Vec::new());
static STOP_AT_EXIT: Once = Once::new();
static SHARED_ADMIN: OnceLock<TargetUrl> = OnceLock::new();
static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How to reach a cluster kept by `keep_until_exit`.
#[derive(Debug, Clone)]
pub struct ClusterAddr {
    pub port: u16,
    pub password: String,
}

impl ClusterAddr {
    /// `postgres://postgres:PASSWORD@HOST:PORT/DB`; `host` must reach 127.0.0.1.
    pub fn url(&self, host: &str, db: &str) -> String {
        format!(
            "postgres://postgres:{}@{host}:{}/{db}",
            self.password, self.port
        )
    }
}

/// Starts a private cluster that lives until this test process exits.
pub fn start_process_cluster(opts: &ClusterOptions) -> ClusterAddr {
    let cluster = PrivateCluster::start(opts)
        .unwrap_or_else(|e| panic!("start a private cluster: {}", error_chain(&e)));
    keep_until_exit(cluster)
}

/// Keeps `cluster` running until this process exits, then stops it by PID.
pub fn keep_until_exit(cluster: PrivateCluster) -> ClusterAddr {
    let addr = ClusterAddr {
        port: cluster.port(),
        password: cluster.password().to_string(),
    };
    lock_clusters().push(cluster);
    STOP_AT_EXIT.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn` that never unwinds.
        unsafe { libc::atexit(stop_process_clusters) };
    });
    addr
}

fn lock_clusters() -> std::sync::MutexGuard<'static, Vec<PrivateCluster>> {
    PROCESS_CLUSTERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

extern "C" fn stop_process_clusters() {
    let mut clusters = match PROCESS_CLUSTERS.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        // A thread died holding the lock; the watchdogs take over.
        Err(TryLockError::WouldBlock) => return,
    };
    for mut cluster in clusters.drain(..) {
        let _ = cluster.stop();
    }
}

/// The admin URL of the shared server (database `postgres` on a private cluster).
pub fn admin_url() -> &'static TargetUrl {
    SHARED_ADMIN.get_or_init(|| {
        let url = std::env::var(TEST_DATABASE_URL).unwrap_or_else(|_| {
            start_process_cluster(&ClusterOptions::default()).url("127.0.0.1", "postgres")
        });
        TargetUrl::parse(&url)
            .unwrap_or_else(|e| panic!("{TEST_DATABASE_URL}: {}", error_chain(&e)))
    })
}

/// A fresh, uniquely named database on the shared server, dropped (WITH (FORCE)) on `Drop`.
pub struct TestDb {
    url: TargetUrl,
    name: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        let admin = admin_url();
        let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("t_{}_{n}", std::process::id());
        run_admin(admin, format!("CREATE DATABASE {}", quote_ident(&name)))
            .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
        TestDb {
            url: admin.with_dbname(&name),
            name,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &TargetUrl {
        &self.url
    }

    /// The full URL, password included, for passing to the CLI.
    #[allow(dead_code)] // for the CLI tests
    pub fn url_string(&self) -> String {
        self.url.to_connection_string()
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        self.url.connect().await.unwrap_or_else(|e| {
            panic!(
                "connect to test database {}: {}",
                self.name,
                error_chain(&e)
            )
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&self.name)
        );
        if let Err(e) = run_admin(admin_url(), sql) {
            eprintln!("cannot drop test database {}: {e}", self.name);
        }
    }
}

/// Runs `sql` on the admin connection from a thread of its own, so it works from sync code,
/// async tests and `Drop` alike.
fn run_admin(admin: &TargetUrl, sql: String) -> Result<(), String> {
    let admin = admin.clone();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let client = admin.connect().await.map_err(|e| error_chain(&e))?;
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| error_chain(&e))
        })
    });
    worker
        .join()
        .unwrap_or_else(|_| Err("the admin thread panicked".into()))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[tokio::test]
async fn test_db_is_fresh_and_dropped_even_with_open_connections() {
    let db = TestDb::new();
    let client = db.client().await;
    let row = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), db.name());
    assert_eq!(db.url().dbname(), Some(db.name()));
    let name = db.name().to_string();
    drop(db);
    let admin = admin_url().connect().await.unwrap();
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
}
