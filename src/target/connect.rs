//! Connecting to the PostgreSQL target. Owns the target URL (libpq `postgres://` URLs and
//! `key=value` strings), TLS with libpq's `sslmode` semantics on rustls, and the promise that
//! the password never reaches a message: every message names the target by `redacted()`, and
//! `tokio_postgres::Config` is never Debug-printed.
//!
//! tokio-postgres knows only sslmode disable, prefer and require, and no sslrootcert, so
//! `TargetUrl::parse` takes both out of the string before tokio-postgres sees it, and
//! `connect` builds the rustls verifier they ask for:
//!
//! | sslmode            | TLS                       | certificate chain       | host name |
//! |--------------------|---------------------------|-------------------------|-----------|
//! | disable            | never                     | –                       | –         |
//! | allow, prefer (default) | if the server offers it | not checked         | no        |
//! | require            | always                    | only if sslrootcert set | no        |
//! | verify-ca          | always                    | sslrootcert or ~/.postgresql/root.crt | no |
//! | verify-full        | always                    | sslrootcert, ~/.postgresql/root.crt or webpki-roots | yes |
//!
//! `sslrootcert=system` means the webpki (Mozilla) roots. `allow` is treated as `prefer`
//! (tokio-postgres cannot try plain first); both accept either kind of connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The single-threaded tokio runtime each PostgreSQL client of sqlite2pg runs on (the work
/// around it is blocking: SQLite, sled, threads of our own).
pub fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            op: "start the async runtime for",
            path: PathBuf::from("PostgreSQL"),
            source,
        })
}

/// Connect timeout when the URL sets none: long enough for a far-away server under load, short
/// enough that a wrong host or a firewall that drops packets fails while the operator watches.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What replaces the password in every message.
const MASK: &str = "****";
const SSLMODE: &str = "sslmode";
const SSLROOTCERT: &str = "sslrootcert";
const PASSWORD: &str = "password";
const DBNAME: &str = "dbname";

/// libpq's sslmode. `allow` parses as `Prefer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    /// libpq's default: TLS if the server offers it, without verifying the certificate.
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCerts {
    File(PathBuf),
    /// `sslrootcert=system`: the webpki (Mozilla) roots.
    System,
}

/// A parsed PostgreSQL target. Debug and `redacted()` never show the password.
#[derive(Clone)]
pub struct TargetUrl {
    form: Form,
    config: tokio_postgres::Config,
    sslmode: SslMode,
    sslrootcert: Option<RootCerts>,
}

impl fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TargetUrl").field(&self.redacted()).finish()
    }
}

impl TargetUrl {
    /// Accepts `postgres://` and `postgresql://` URLs and libpq `key=value` strings. Understands
    /// `sslmode=disable|allow|prefer|require|verify-ca|verify-full` and `sslrootcert=PATH`. A URL
    /// without `connect_timeout` gets [`DEFAULT_CONNECT_TIMEOUT`]. `Ok` means the string is
    /// well-formed and names a host and a user; nothing is contacted or read yet.
    pub fn parse(s: &str) -> Result<TargetUrl> {
        let s = s.trim();
        let form = Form::parse(s)?;
        let (sslmode, sslrootcert) = form.ssl_settings()?;
        let url_err = |reason: String| Error::TargetUrl {
            target: form.render(Show::Redacted),
            reason,
        };
        let mut config: tokio_postgres::Config = form
            .render(Show::Driver)
            .parse()
            .map_err(|e: tokio_postgres::Error| url_err(e.to_string()))?;
        if config.get_hosts().is_empty() {
            let addrs = config.get_hostaddrs().to_vec();
            if addrs.is_empty() {
                return Err(url_err(
                    "no host: name the server, as in postgres://USER@HOST/DBNAME".into(),
                ));
            }
            // The host name is what TLS verifies; with only hostaddr, libpq verifies the address.
            for addr in addrs {
                config.host(addr.to_string());
            }
        }
        if config.get_user().is_none() {
            return Err(url_err(
                "no user: name one, as in postgres://USER@HOST/DBNAME".into(),
            ));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        config.ssl_mode(match sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        Ok(TargetUrl {
            form,
            config,
            sslmode,
            sslrootcert,
        })
    }

    /// The target as written, with the password replaced by `****`. Use it in every message.
    pub fn redacted(&self) -> String {
        self.form.render(Show::Redacted)
    }

    /// The target as written, password included: only for handing to another program that
    /// connects (a child process, psql). Never for messages or logs.
    pub fn to_connection_string(&self) -> String {
        self.form.render(Show::Secret)
    }

    pub fn dbname(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// The same server, user, password and TLS settings, another database.
    pub fn with_dbname(&self, db: &str) -> TargetUrl {
        let mut other = self.clone();
        other.form.set_dbname(db);
        other.config.dbname(db);
        other
    }

    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// The driver's settings. It holds the password: never Debug-print it.
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Connects, spawns the connection task on the current tokio runtime and returns the
    /// client. `Ok` means the server authenticated us with the TLS the sslmode demands. Errors:
    /// `Error::Tls` when the root certificates cannot be loaded, `Error::TargetConnect` for
    /// everything the server or the network says (including the connect timeout).
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        let tls = self.tls_connector()?;
        let target = self.redacted();
        let (client, connection) =
            self.config
                .connect(tls)
                .await
                .map_err(|source| Error::TargetConnect {
                    target: target.clone(),
                    source,
                })?;
        tokio::spawn(async move {
            // The client sees the same failure as a closed connection on its next call.
            if let Err(error) = connection.await {
                tracing::debug!(%target, %error, "PostgreSQL connection ended with an error");
            }
        });
        Ok(client)
    }

    fn tls_connector(&self) -> Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("choose TLS protocol versions".into(), e))?;
        let config = match self.verification()? {
            Verification::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
            Verification::Chain(roots) => {
                let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| tls_err("build the certificate verifier".into(), e))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
            }
            Verification::ChainAndName(roots) => builder.with_root_certificates(roots),
        };
        Ok(MakeRustlsConnect::new(config.with_no_client_auth()))
    }

    fn verification(&self) -> Result<Verification> {
        let given = self.sslrootcert.clone();
        Ok(match (self.sslmode, given) {
            (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => {
                Verification::Nothing
            }
            // libpq: require with a root certificate behaves like verify-ca.
            (SslMode::Require | SslMode::VerifyCa, Some(roots)) => {
                Verification::Chain(load_roots(&roots)?)
            }
            (SslMode::VerifyCa, None) => match default_root_file() {
                Some(path) if path.exists() => {
                    Verification::Chain(load_roots(&RootCerts::File(path))?)
                }
                other => return Err(missing_default_roots(other)),
            },
            (SslMode::VerifyFull, given) => {
                let default = default_root_file()
                    .filter(|p| p.exists())
                    .map(RootCerts::File);
                let roots = given.or(default).unwrap_or(RootCerts::System);
                Verification::ChainAndName(load_roots(&roots)?)
            }
        })
    }
}

enum Verification {
    Nothing,
    Chain(RootCertStore),
    ChainAndName(RootCertStore),
}

/// libpq's default root certificate file: ~/.postgresql/root.crt.
fn default_root_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".postgresql").join("root.crt"))
}

fn missing_default_roots(path: Option<PathBuf>) -> Error {
    let path = path.map_or_else(
        || "~/.postgresql/root.crt".into(),
        |p| p.display().to_string(),
    );
    Error::Tls {
        reason: format!(
            "sslmode=verify-ca needs the server's CA certificate: no sslrootcert given and \
             {path} does not exist (pass sslrootcert=PATH, or sslrootcert=system for the \
             public web roots)"
        ),
        source: None,
    }
}

fn load_roots(roots: &RootCerts) -> Result<RootCertStore> {
    let path = match roots {
        RootCerts::System => {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        }
        RootCerts::File(path) => path,
    };
    let shown = path.display();
    let pem =
        std::fs::read(path).map_err(|e| tls_err(format!("cannot read sslrootcert {shown}"), e))?;
    let mut store = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| tls_err(format!("sslrootcert {shown} is not valid PEM"), e))?;
        store.add(cert).map_err(|e| {
            tls_err(
                format!("sslrootcert {shown} holds an unusable certificate"),
                e,
            )
        })?;
    }
    if store.is_empty() {
        let reason = format!("sslrootcert {shown} holds no PEM certificate");
        return Err(Error::Tls {
            reason,
            source: None,
        });
    }
    Ok(store)
}

fn tls_err(reason: String, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Tls {
        reason,
        source: Some(Box::new(source)),
    }
}

type VerifyResult<T> = std::result::Result<T, rustls::Error>;

/// sslmode prefer/require without roots: encryption without authentication of the server, as
/// libpq does. Handshake signatures are still checked against the presented certificate.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> VerifyResult<ServerCertVerified> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> VerifyResult<HandshakeSignatureValid> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> VerifyResult<HandshakeSignatureValid> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// verify-ca: the full webpki check (chain, validity, usage), except that a certificate issued
/// for another name is accepted. webpki checks the chain before the name, so "not valid for
/// name" implies the chain was verified.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> VerifyResult<ServerCertVerified> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> VerifyResult<HandshakeSignatureValid> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> VerifyResult<HandshakeSignatureValid> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// How to render the target.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Show {
    /// Everything, password included.
    Secret,
    /// Password masked: for messages.
    Redacted,
    /// Password included, sslmode and sslrootcert left out: for tokio-postgres.
    Driver,
}

impl Show {
    fn keeps(self, key: &str) -> bool {
        self != Show::Driver || (key != SSLMODE && key != SSLROOTCERT)
    }

    fn password(self, password: &str) -> &str {
        if self == Show::Redacted {
            MASK
        } else {
            password
        }
    }
}

/// The target as the user wrote it, split the way tokio-postgres splits it, so that rendering
/// it back gives the same string (minus what `Show` leaves out).
#[derive(Clone)]
enum Form {
    Url(UrlForm),
    /// Decoded keys and values, in order.
    KeyValue(Pairs),
}

/// (key, value) pairs in the order written.
type Pairs = Vec<(String, String)>;

/// A URL's parts, still percent-encoded.
#[derive(Clone)]
struct UrlForm {
    scheme: &'static str,
    user: Option<String>,
    password: Option<String>,
    hosts: String,
    dbname: Option<String>,
    params: Vec<(String, String)>,
}

impl Form {
    fn parse(s: &str) -> Result<Form> {
        if s.is_empty() {
            return Err(Error::TargetUrl {
                target: "\"\"".into(),
                reason: "empty".into(),
            });
        }
        for scheme in ["postgres://", "postgresql://"] {
            if let Some(rest) = s.strip_prefix(scheme) {
                return Ok(Form::Url(UrlForm::split(scheme, rest)));
            }
        }
        parse_key_values(s)
            .map(Form::KeyValue)
            .map_err(|(parsed, reason)| Error::TargetUrl {
                target: format!("{} …", Form::KeyValue(parsed).render(Show::Redacted)),
                reason,
            })
    }

    /// Decoded (key, value) pairs of the parameters (URL query or key=value).
    fn params(&self) -> Vec<(String, String)> {
        match self {
            Form::Url(url) => url
                .params
                .iter()
                .map(|(k, v)| (percent_decode(k), percent_decode(v)))
                .collect(),
            Form::KeyValue(pairs) => pairs.clone(),
        }
    }

    fn ssl_settings(&self) -> Result<(SslMode, Option<RootCerts>)> {
        let (mut mode, mut roots) = (SslMode::default(), None);
        for (key, value) in self.params() {
            if key == SSLMODE {
                mode = SslMode::parse(&value).ok_or_else(|| Error::TargetUrl {
                    target: self.render(Show::Redacted),
                    reason: format!(
                        "sslmode must be disable, allow, prefer, require, verify-ca or \
                         verify-full, not {value:?}"
                    ),
                })?;
            } else if key == SSLROOTCERT {
                roots = Some(match value.as_str() {
                    "system" => RootCerts::System,
                    _ => RootCerts::File(PathBuf::from(value)),
                });
            }
        }
        Ok((mode, roots))
    }

    fn render(&self, show: Show) -> String {
        match self {
            Form::Url(url) => url.render(show),
            Form::KeyValue(pairs) => pairs
                .iter()
                .filter(|(k, _)| show.keeps(k))
                .map(|(k, v)| {
                    let v = if k == PASSWORD { show.password(v) } else { v };
                    format!("{k}={}", quote_value(v))
                })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    fn set_dbname(&mut self, db: &str) {
        match self {
            Form::Url(url) => match url
                .params
                .iter_mut()
                .find(|(k, _)| percent_decode(k) == DBNAME)
            {
                Some((_, v)) => *v = percent_encode(db),
                None => url.dbname = Some(percent_encode(db)),
            },
            Form::KeyValue(pairs) => match pairs.iter_mut().find(|(k, _)| k == DBNAME) {
                Some((_, v)) => *v = db.to_string(),
                None => pairs.push((DBNAME.to_string(), db.to_string())),
            },
        }
    }
}

impl UrlForm {
    /// Splits like tokio-postgres: credentials up to the first '@', hosts up to '/' or '?',
    /// the database up to '?', then '&'-separated key=value parameters.
    fn split(scheme: &'static str, rest: &str) -> UrlForm {
        let (credentials, rest) = match rest.split_once('@') {
            Some((c, r)) => (Some(c), r),
            None => (None, rest),
        };
        let (user, password) = match credentials.map(|c| c.split_once(':')) {
            Some(Some((u, p))) => (Some(u.to_string()), Some(p.to_string())),
            Some(None) => (credentials.map(str::to_string), None),
            None => (None, None),
        };
        let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (hosts, rest) = rest.split_at(host_end);
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let dbname = path.strip_prefix('/').map(str::to_string);
        let params = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (p.to_string(), String::new()),
            })
            .collect();
        UrlForm {
            scheme,
            user,
            password,
            hosts: hosts.to_string(),
            dbname,
            params,
        }
    }

    fn render(&self, show: Show) -> String {
        let mut s = String::from(self.scheme);
        if let Some(user) = &self.user {
            s.push_str(user);
            if let Some(password) = &self.password {
                s.push(':');
                s.push_str(show.password(password));
            }
            s.push('@');
        }
        s.push_str(&self.hosts);
        if let Some(db) = &self.dbname {
            s.push('/');
            s.push_str(db);
        }
        let params: Vec<String> = self
            .params
            .iter()
            .filter(|(k, _)| show.keeps(&percent_decode(k)))
            .map(|(k, v)| {
                let v = if percent_decode(k) == PASSWORD {
                    show.password(v)
                } else {
                    v
                };
                format!("{k}={v}")
            })
            .collect();
        if !params.is_empty() {
            s.push('?');
            s.push_str(&params.join("&"));
        }
        s
    }
}

/// libpq key=value syntax as tokio-postgres reads it: `key = value` pairs separated by
/// whitespace; values bare or in single quotes, backslash escapes the next character. On error,
/// returns the pairs read so far (for a redacted message) and the reason.
fn parse_key_values(s: &str) -> std::result::Result<Pairs, (Pairs, String)> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut chars);
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            if chars.peek().is_some() {
                return Err((pairs, "expected a key before '='".into()));
            }
            return Ok(pairs);
        }
        skip_ws(&mut chars);
        if chars.next() != Some('=') {
            return Err((pairs, format!("expected '=' after {key:?}")));
        }
        skip_ws(&mut chars);
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\'') if quoted => break,
                Some(c) if !quoted && c.is_whitespace() => break,
                Some('\\') => value.extend(chars.next()),
                Some(c) => value.push(c),
                None if quoted => {
                    return Err((pairs, format!("unterminated quoted value of {key:?}")))
                }
                None => break,
            }
        }
        if value.is_empty() && !quoted {
            return Err((pairs, format!("missing value of {key:?}")));
        }
        pairs.push((key, value));
    }
}

fn quote_value(v: &str) -> String {
    if !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Decodes %XX sequences; malformed ones stay as written (as in the percent-encoding crate).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_round_trips_and_strips_ssl_settings_for_the_driver() {
        let s = "postgresql://u:p%40ss@h1:5433,h2/db?sslmode=verify-ca&sslrootcert=%2Ftmp%2Fca.pem&application_name=x";
        let url = TargetUrl::parse(s).unwrap();
        assert_eq!(url.to_connection_string(), s);
        assert_eq!(
            url.form.render(Show::Driver),
            "postgresql://u:p%40ss@h1:5433,h2/db?application_name=x"
        );
        assert_eq!(url.sslmode(), SslMode::VerifyCa);
        assert_eq!(url.sslrootcert, Some(RootCerts::File("/tmp/ca.pem".into())));
        assert_eq!(url.pg_config().get_password(), Some(&b"p@ss"[..]));
        assert_eq!(
            url.pg_config().get_connect_timeout(),
            Some(&DEFAULT_CONNECT_TIMEOUT)
        );
    }

    #[test]
    fn key_values_round_trip_with_quoting() {
        let url = TargetUrl::parse(r"host=h user=u password='it\'s secret' dbname=d sslmode=allow")
            .unwrap();
        assert_eq!(url.pg_config().get_password(), Some(&b"it's secret"[..]));
        assert_eq!(url.sslmode(), SslMode::Prefer);
        assert_eq!(
            url.redacted(),
            "host=h user=u password=**** dbname=d sslmode=allow"
        );
        assert_eq!(
            url.with_dbname("o t").redacted(),
            "host=h user=u password=**** dbname='o t' sslmode=allow"
        );
    }

    #[test]
    fn with_dbname_replaces_the_path_or_the_dbname_parameter() {
        let url = TargetUrl::parse("postgres://u@h/a")
            .unwrap()
            .with_dbname("b c");
        assert_eq!(url.redacted(), "postgres://u@h/b%20c");
        assert_eq!(url.dbname(), Some("b c"));
        let url = TargetUrl::parse("postgres://u@h?dbname=a")
            .unwrap()
            .with_dbname("b");
        assert_eq!(url.redacted(), "postgres://u@h?dbname=b");
    }

    #[test]
    fn hostaddr_alone_becomes_the_tls_host_name() {
        let url = TargetUrl::parse("hostaddr=127.0.0.1 user=u").unwrap();
        assert_eq!(url.pg_config().get_hosts().len(), 1);
    }

    #[test]
    fn parse_errors_never_show_the_password() {
        for s in [
            "postgres://u:hunter2@h/db?sslmode=sometimes",
            "postgres://u:hunter2@h:notaport/db",
            "host=h password=hunter2 sslmode=sometimes",
            "host=h password='hunter2",
            "postgres://:hunter2@/db",
        ] {
            let e = TargetUrl::parse(s).unwrap_err();
            assert!(matches!(e, Error::TargetUrl { .. }), "{s}: {e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }
}
