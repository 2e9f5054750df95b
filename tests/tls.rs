//! Connecting to the target as libpq users expect: sslmode disable … verify-full with
//! sslrootcert against a private cluster serving a test CA's certificate, fallback to plain,
//! and errors that explain themselves without ever showing the password.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use sqlite2pg::error::ErrorKind;
use sqlite2pg::private_pg::{ClusterOptions, PrivateCluster, ServerTls};
use sqlite2pg::target::connect::{SslMode, TargetUrl};
use sqlite2pg::Error;

use crate::support::error_chain;
use crate::support::pg::{keep_until_exit, start_process_cluster, ClusterAddr};

const SSL_IN_USE: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
/// A host name that is not in the server certificate; `hostaddr` sends it to 127.0.0.1.
const OTHER_NAME: &str = "db.example.invalid";
/// Upper bound for any connect in these tests, so a regression fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A cluster serving TLS with a certificate for `localhost` and `127.0.0.1` issued by `ca`;
/// `other_ca` is an unrelated CA with the same name.
struct TlsServer {
    addr: ClusterAddr,
    ca: PathBuf,
    other_ca: PathBuf,
}

fn tls_server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let ca = test_ca();
        let other_ca = test_ca();
        let tls = server_cert(&ca);
        let cluster = PrivateCluster::start(&ClusterOptions { tls: Some(tls) })
            .unwrap_or_else(|e| panic!("start the TLS cluster: {}", error_chain(&e)));
        // The CA files live in the cluster's directory and go away with it.
        let ca_path = cluster.root_dir().join("ca.pem");
        let other_ca_path = cluster.root_dir().join("other-ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        std::fs::write(&other_ca_path, other_ca.pem()).unwrap();
        TlsServer {
            addr: keep_until_exit(cluster),
            ca: ca_path,
            other_ca: other_ca_path,
        }
    })
}

/// A cluster without TLS.
fn plain_server() -> &'static ClusterAddr {
    static SERVER: OnceLock<ClusterAddr> = OnceLock::new();
    SERVER.get_or_init(|| start_process_cluster(&ClusterOptions::default()))
}

fn test_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "sqlite2pg test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn server_cert(ca: &CertifiedIssuer<'static, KeyPair>) -> ServerTls {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    ServerTls {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl TlsServer {
    /// URL to `host` with `params` ("sslmode=…&…").
    fn url(&self, host: &str, params: &str) -> String {
        format!("{}?{params}", self.addr.url(host, "postgres"))
    }

    /// key=value string naming OTHER_NAME as the host, connecting to 127.0.0.1.
    fn other_name(&self, params: &str) -> String {
        format!(
            "host={OTHER_NAME} hostaddr=127.0.0.1 port={} user=postgres password={} \
             dbname=postgres {params}",
            self.addr.port, self.addr.password
        )
    }

    fn ca(&self) -> String {
        self.ca.display().to_string()
    }

    fn other_ca(&self) -> String {
        self.other_ca.display().to_string()
    }
}

async fn try_connect(target: &str) -> Result<tokio_postgres::Client, Error> {
    let url = TargetUrl::parse(target).unwrap();
    match tokio::time::timeout(TEST_TIMEOUT, url.connect()).await {
        Ok(result) => result,
        Err(_) => panic!("connect to {} hung", url.redacted()),
    }
}

/// Connects and reports whether the session uses TLS.
async fn uses_tls(target: &str) -> bool {
    let client = try_connect(target).await.unwrap_or_else(|e| {
        let shown = TargetUrl::parse(target).unwrap().redacted();
        panic!("connect to {shown}: {}", error_chain(&e))
    });
    client.query_one(SSL_IN_USE, &[]).await.unwrap().get(0)
}

/// Connects expecting failure; returns the error and its chain.
async fn connect_error(target: &str) -> (Error, String) {
    match try_connect(target).await {
        Ok(_) => panic!(
            "connected to {}, expected a failure",
            TargetUrl::parse(target).unwrap().redacted()
        ),
        Err(e) => {
            let chain = error_chain(&e);
            (e, chain)
        }
    }
}

#[tokio::test]
async fn disable_connects_without_tls() {
    let server = tls_server();
    assert!(!uses_tls(&server.url("127.0.0.1", "sslmode=disable")).await);
}

#[tokio::test]
async fn prefer_is_the_default_and_it_and_require_use_tls() {
    let server = tls_server();
    let default = server.addr.url("127.0.0.1", "postgres");
    assert_eq!(
        TargetUrl::parse(&default).unwrap().sslmode(),
        SslMode::Prefer
    );
    assert!(uses_tls(&default).await);
    assert!(uses_tls(&server.url("127.0.0.1", "sslmode=prefer")).await);
    assert!(uses_tls(&server.url("localhost", "sslmode=require")).await);
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_host_name() {
    let server = tls_server();
    let ca = format!("sslmode=verify-ca&sslrootcert={}", server.ca());
    assert!(uses_tls(&server.url("127.0.0.1", &ca)).await);
    let kv = format!("sslmode=verify-ca sslrootcert={}", server.ca());
    assert!(uses_tls(&server.other_name(&kv)).await);

    let other = format!("sslmode=verify-ca&sslrootcert={}", server.other_ca());
    let (e, chain) = connect_error(&server.url("127.0.0.1", &other)).await;
    assert!(matches!(e, Error::TargetConnect { .. }), "{chain}");
    assert!(chain.contains("certificate"), "{chain}");
}

#[tokio::test]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let server = tls_server();
    let full = format!("sslmode=verify-full&sslrootcert={}", server.ca());
    assert!(uses_tls(&server.url("localhost", &full)).await);
    assert!(uses_tls(&server.url("127.0.0.1", &full)).await);

    let kv = format!("sslmode=verify-full sslrootcert={}", server.ca());
    let (e, chain) = connect_error(&server.other_name(&kv)).await;
    assert!(matches!(e, Error::TargetConnect { .. }), "{chain}");
    assert!(chain.contains("certificate"), "{chain}");
    assert!(chain.contains(OTHER_NAME), "{chain}");
}

#[tokio::test]
async fn verify_full_rejects_a_certificate_from_another_ca() {
    let server = tls_server();
    let other = format!("sslmode=verify-full&sslrootcert={}", server.other_ca());
    let (e, chain) = connect_error(&server.url("localhost", &other)).await;
    assert!(matches!(e, Error::TargetConnect { .. }), "{chain}");
    assert!(chain.contains("certificate"), "{chain}");
    assert!(e.hint().is_some());
}

#[tokio::test]
async fn verify_full_without_sslrootcert_uses_the_public_roots() {
    // Unless ~/.postgresql/root.crt exists, the web roots apply, and they don't know our CA.
    let home_root = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
        .filter(|p| p.exists());
    if home_root.is_some() {
        return;
    }
    let server = tls_server();
    let (_, chain) = connect_error(&server.url("localhost", "sslmode=verify-full")).await;
    assert!(chain.contains("certificate"), "{chain}");
}

#[tokio::test]
async fn require_with_sslrootcert_verifies_the_chain_like_libpq() {
    let server = tls_server();
    let other = format!("sslmode=require&sslrootcert={}", server.other_ca());
    let (_, chain) = connect_error(&server.url("127.0.0.1", &other)).await;
    assert!(chain.contains("certificate"), "{chain}");
    let kv = format!("sslmode=require sslrootcert={}", server.ca());
    assert!(uses_tls(&server.other_name(&kv)).await);
}

#[tokio::test]
async fn an_unreadable_sslrootcert_is_a_tls_error_naming_the_file() {
    let server = tls_server();
    let params = "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem";
    let (e, chain) = connect_error(&server.url("127.0.0.1", params)).await;
    assert!(matches!(e, Error::Tls { .. }), "{chain}");
    assert!(chain.contains("/nonexistent/ca.pem"), "{chain}");
}

#[tokio::test]
async fn require_fails_and_prefer_falls_back_without_server_tls() {
    let server = plain_server();
    let url = |params: &str| format!("{}?{params}", server.url("127.0.0.1", "postgres"));
    let (e, chain) = connect_error(&url("sslmode=require")).await;
    assert!(matches!(e, Error::TargetConnect { .. }), "{chain}");
    assert!(chain.contains("TLS"), "{chain}");
    assert!(!uses_tls(&url("sslmode=prefer")).await);
    assert!(!uses_tls(&url("sslmode=disable")).await);
}

#[tokio::test]
async fn a_wrong_password_is_reported_without_showing_it() {
    let server = plain_server();
    let password = "Wr0ng-Passw0rd-7f3a";
    for target in [
        format!(
            "postgres://postgres:{password}@127.0.0.1:{}/postgres",
            server.port
        ),
        format!(
            "host=127.0.0.1 port={} user=postgres password='{password}'",
            server.port
        ),
    ] {
        let (e, chain) = connect_error(&target).await;
        assert!(matches!(e, Error::TargetConnect { .. }), "{chain}");
        assert!(chain.contains("authentication"), "{chain}");
        let everything = format!("{chain} {e:?} {}", e.hint().unwrap_or_default());
        assert!(!everything.contains(password), "{everything}");
        assert_eq!(e.kind(), ErrorKind::Fatal);
    }
}

#[tokio::test]
async fn a_closed_port_fails_at_once_with_target_connect() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("postgres://u:secret@127.0.0.1:{closed_port}/db");
    let (e, chain) = connect_error(&target).await;
    assert!(matches!(e, Error::TargetConnect { .. }), "{chain}");
    assert!(!chain.contains("secret"), "{chain}");
    assert_eq!(e.kind(), ErrorKind::Transient);
}

#[tokio::test]
async fn a_server_that_never_answers_fails_within_the_connect_timeout() {
    // A listener whose accept queue is full drops further SYNs, like a firewall would.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut queued = Vec::new();
    let mut black_hole = false;
    for _ in 0..64 {
        let probe = tokio::net::TcpStream::connect(("127.0.0.1", port));
        match tokio::time::timeout(Duration::from_millis(300), probe).await {
            Ok(Ok(stream)) => queued.push(stream),
            _ => {
                black_hole = true;
                break;
            }
        }
    }
    let started = Instant::now();
    let target = format!("postgres://u:secret@127.0.0.1:{port}/db?connect_timeout=1");
    let (e, chain) = connect_error(&target).await;
    assert!(matches!(e, Error::TargetConnect { .. }), "{chain}");
    if black_hole {
        assert!(chain.contains("timed out"), "{chain}");
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    }
}

#[test]
fn the_default_connect_timeout_is_set() {
    let url = TargetUrl::parse("postgres://u@h/db").unwrap();
    assert_eq!(
        url.pg_config().get_connect_timeout(),
        Some(&sqlite2pg::target::connect::DEFAULT_CONNECT_TIMEOUT)
    );
}

#[test]
fn redacted_hides_the_password_in_url_and_key_value_forms() {
    let cases = [
        (
            "postgres://app:s3cr%40t@db:5432/prod?sslmode=require",
            "postgres://app:****@db:5432/prod?sslmode=require",
        ),
        (
            "postgresql://app@db/prod?password=s3cr%40t&sslmode=verify-full",
            "postgresql://app@db/prod?password=****&sslmode=verify-full",
        ),
        (
            "host=db user=app password='s3cr@t with space' dbname=prod",
            "host=db user=app password=**** dbname=prod",
        ),
    ];
    for (input, expected) in cases {
        let url = TargetUrl::parse(input).unwrap();
        assert_eq!(url.redacted(), expected);
        assert!(!format!("{url:?}").contains("s3cr"));
        assert_eq!(url.to_connection_string(), input);
        assert_eq!(
            url.with_dbname("other").redacted(),
            expected.replace("prod", "other")
        );
    }
}
