//! A private, throwaway PostgreSQL cluster: initdb into a fresh temporary directory, a postmaster
//! on a free 127.0.0.1 port, a random superuser password, and a guaranteed stop. Used by the test
//! harness, by `demo` when no target is given, and by the TLS tests.
//!
//! Its promise: a cluster started here never outlives the process that started it. `stop` (and
//! `Drop`) stop the postmaster by PID and remove the directory; if the owning process dies
//! without running destructors, a watchdog process does the same (see `Watchdog`).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Environment variable naming the directory with `initdb` and `postgres`.
pub const PG_BIN_ENV: &str = "SQLITE2PG_PG_BIN";

/// How long a starting postmaster may take to accept connections: generous, because CI machines
/// running many test binaries at once are slow, and a healthy start takes well under a second.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown (SIGINT) may take before SIGKILL: a fast shutdown aborts open
/// transactions and needs no checkpoint flush worth waiting for (fsync is off).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often start and stop look at the postmaster while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Port races (another process takes the port between our probe and the postmaster's bind) are
/// rare; a few retries make them invisible.
const PORT_ATTEMPTS: u32 = 5;
/// The superuser that initdb creates.
const SUPERUSER: &str = "postgres";

/// What kind of cluster to start.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Serve TLS with this certificate as well as plain connections. Default: no TLS.
    pub tls: Option<ServerTls>,
}

/// The server certificate (chain) and private key, PEM encoded.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("key_pem", &"****")
            .finish_non_exhaustive()
    }
}

/// A running private cluster. Stopped and deleted by [`PrivateCluster::stop`] or on drop.
pub struct PrivateCluster {
    root: PathBuf,
    port: u16,
    password: String,
    postmaster: Option<Child>,
    pid: u32,
    watchdog: Option<Watchdog>,
    removed: bool,
}

impl std::fmt::Debug for PrivateCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateCluster")
            .field("root", &self.root)
            .field("port", &self.port)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl PrivateCluster {
    /// Creates and starts a cluster. `Ok` means the postmaster accepts connections on
    /// `127.0.0.1:port()` as `postgres` with the password in `url()`, and the watchdog is armed.
    pub fn start(opts: &ClusterOptions) -> Result<PrivateCluster> {
        let bin = find_bin_dir()?;
        let run_as = RunAs::for_current_user()?;
        let root = make_root_dir(run_as)?;
        let mut cluster = PrivateCluster {
            root,
            port: 0,
            password: random_hex(16)?,
            postmaster: None,
            pid: 0,
            watchdog: None,
            removed: false,
        };
        // On any error below, dropping `cluster` stops what was started and removes the root;
        // if this process dies first, the watchdog (armed before initdb) does.
        cluster.watchdog = Some(Watchdog::arm(&cluster.root)?);
        cluster.init(&bin, run_as, opts)?;
        cluster.launch(&bin, run_as)?;
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The superuser password (the cluster is private and throwaway; it is still never logged).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The data directory (`postgresql.conf`, `pg_hba.conf`, `postmaster.pid`).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The directory holding the data directory, the Unix socket and the server log.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The server's log (its stderr).
    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/DBNAME`, without sslmode (libpq's default,
    /// prefer, applies).
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{dbname}",
            self.password, self.port
        )
    }

    /// Restarts the server on the same port and data (fast shutdown, then start): what a
    /// PostgreSQL restart looks like to clients, for tests of transient failures.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(child) = self.postmaster.take() {
            stop_postmaster(child)?;
        }
        let bin = find_bin_dir()?;
        let run_as = RunAs::for_current_user()?;
        let child = self.spawn_postmaster(&bin, run_as, self.port)?;
        self.pid = child.id();
        self.postmaster = Some(child);
        match self.wait_ready()? {
            Ready::Yes => Ok(()),
            Ready::Exited(status) => Err(cluster_err(
                "restart postgres",
                format!(
                    "postgres exited ({status}); server log:\n{}",
                    log_tail(&self.log_path(), 0)
                ),
            )),
        }
    }

    /// Stops the postmaster (SIGINT = fast shutdown, SIGKILL after `STOP_TIMEOUT`) and removes
    /// the directory. Idempotent: `Ok` means nothing of the cluster is left.
    pub fn stop(&mut self) -> Result<()> {
        // Disarm first: the watchdog must never signal a PID after we reaped the postmaster.
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
        if let Some(child) = self.postmaster.take() {
            stop_postmaster(child)?;
        }
        if !self.removed {
            match fs::remove_dir_all(&self.root) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        op: "remove the private cluster directory",
                        path: self.root.clone(),
                        source,
                    })
                }
            }
            self.removed = true;
        }
        Ok(())
    }

    fn init(&self, bin: &Path, run_as: Option<RunAs>, opts: &ClusterOptions) -> Result<()> {
        let pwfile = self.root.join("pwfile");
        write_owned(&pwfile, &self.password, run_as)?;
        let data = self.data_dir();
        let output = server_command(bin.join("initdb"), run_as)
            .current_dir(&self.root)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["-A", "scram-sha-256", "--auth-local=trust"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| cluster_err("run initdb", format!("{}: {e}", bin.display())))?;
        let _ = fs::remove_file(&pwfile);
        if !output.status.success() {
            let text = String::from_utf8_lossy(&output.stderr);
            return Err(cluster_err(
                "initdb",
                format!("{}: {}", output.status, text.trim()),
            ));
        }
        if let Some(tls) = &opts.tls {
            write_owned(&data.join("server.crt"), &tls.cert_pem, run_as)?;
            write_owned(&data.join("server.key"), &tls.key_pem, run_as)?;
        }
        append(
            &data.join("postgresql.conf"),
            &server_settings(&self.root, opts),
        )?;
        let hba = hba_rules(opts.tls.is_some());
        fs::write(data.join("pg_hba.conf"), hba).map_err(|source| Error::Io {
            op: "write pg_hba.conf",
            path: data.join("pg_hba.conf"),
            source,
        })
    }

    /// Starts the postmaster on a free port, retrying when another process wins the port.
    fn launch(&mut self, bin: &Path, run_as: Option<RunAs>) -> Result<()> {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let log = self.log_path();
            let log_offset = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let child = self.spawn_postmaster(bin, run_as, port)?;
            self.pid = child.id();
            self.port = port;
            self.postmaster = Some(child);
            match self.wait_ready()? {
                Ready::Yes => return Ok(()),
                Ready::Exited(status) => {
                    self.postmaster = None;
                    last = log_tail(&log, log_offset);
                    if !is_port_conflict(&last) {
                        let detail = format!("postgres exited ({status}); server log:\n{last}");
                        return Err(cluster_err("start postgres", detail));
                    }
                }
            }
        }
        Err(cluster_err(
            "start postgres",
            format!("no free port after {PORT_ATTEMPTS} attempts; server log:\n{last}"),
        ))
    }

    fn spawn_postmaster(&self, bin: &Path, run_as: Option<RunAs>, port: u16) -> Result<Child> {
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| Error::Io {
                op: "open the server log",
                path: log_path.clone(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| Error::Io {
            op: "open the server log",
            path: log_path,
            source,
        })?;
        server_command(bin.join("postgres"), run_as)
            .current_dir(&self.root)
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C aimed at the owner must not race our shutdown.
            .process_group(0)
            .spawn()
            .map_err(|e| cluster_err("spawn postgres", format!("{}: {e}", bin.display())))
    }

    /// Polls `postmaster.pid` until its status line says "ready" (what pg_ctl waits for), or
    /// the postmaster exits.
    fn wait_ready(&mut self) -> Result<Ready> {
        let pidfile = self.data_dir().join("postmaster.pid");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self
                .postmaster
                .as_mut()
                .expect("postmaster was just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(Ready::Exited(status));
            }
            if postmaster_is_ready(&pidfile, self.pid) {
                return Ok(Ready::Yes);
            }
            if Instant::now() > deadline {
                let tail = log_tail(&self.log_path(), 0);
                let detail = format!("not ready after {START_TIMEOUT:?}; server log:\n{tail}");
                return Err(cluster_err("start postgres", detail));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

enum Ready {
    Yes,
    Exited(std::process::ExitStatus),
}

/// Line 8 of postmaster.pid is the postmaster's status; "ready" once it accepts connections.
fn postmaster_is_ready(pidfile: &Path, pid: u32) -> bool {
    let Ok(text) = fs::read_to_string(pidfile) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
        && lines.get(7).map(|l| l.trim()) == Some("ready")
}

fn is_port_conflict(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("could not create any TCP/IP sockets")
}

fn stop_postmaster(mut child: Child) -> Result<()> {
    let pid = child.id();
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our unreaped child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
            Ok(None) => break,
            Err(e) => {
                return Err(cluster_err(
                    "stop postgres",
                    format!("wait for PID {pid}: {e}"),
                ))
            }
        }
    }
    let _ = child.kill();
    child.wait().map(|_| ()).map_err(|e| {
        cluster_err(
            "stop postgres",
            format!("wait for PID {pid} after SIGKILL: {e}"),
        )
    })
}

/// A `sh` process that stops the cluster once the owning process is gone. It reads its stdin, a
/// pipe whose only write end lives in the owner (close-on-exec, so no other child inherits it);
/// the read returns end-of-file the moment the owner exits, however it dies. It then sends
/// SIGINT to the PID in `data/postmaster.pid` (if there is one and it is still a postgres),
/// waits up to 10 s, sends SIGKILL, and removes the cluster directory. It is armed before
/// initdb runs, so a directory is never left behind. It runs in its own process group
/// so a signal aimed at the owner's group does not take it down with the owner. `stop` kills it
/// first (SIGKILL, then reaps it), so it never acts on a PID the owner already reaped.
struct Watchdog {
    child: Child,
    _owner_end: OwnedFd,
}

const WATCHDOG_SCRIPT: &str = r#"
trap '' INT HUP TERM
while read -r _line; do :; done
root=$1
alive() {
    if [ -r "/proc/$1/stat" ]; then
        read -r _pid _comm state _rest < "/proc/$1/stat" && [ "$state" != Z ]
    else
        return 1
    fi
}
pid=$(head -n 1 "$root/data/postmaster.pid" 2>/dev/null)
case "$pid" in ''|*[!0-9]*) pid= ;; esac
if [ -n "$pid" ] && alive "$pid" && grep -q postgres "/proc/$pid/comm" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null
    i=0
    while alive "$pid" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$root"
"#;

impl Watchdog {
    fn arm(root: &Path) -> Result<Watchdog> {
        let (read_end, write_end) = cloexec_pipe()?;
        let child = Command::new("/bin/sh")
            .args(["-c", WATCHDOG_SCRIPT, "sqlite2pg-pg-watchdog"])
            .arg(root)
            .stdin(Stdio::from(read_end))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| cluster_err("spawn the watchdog", format!("/bin/sh: {e}")))?;
        Ok(Watchdog {
            child,
            _owner_end: write_end,
        })
    }

    /// Kills and reaps the watchdog; the owner is now responsible for the cluster.
    fn disarm(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(cluster_err("create the watchdog pipe", e.to_string()));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The system user the server runs as: `None` = ourselves; as root, the `postgres` user
/// (initdb and postgres refuse to run as root).
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// A command that runs as the server user.
fn server_command(program: PathBuf, run_as: Option<RunAs>) -> Command {
    let mut cmd = Command::new(program);
    if let Some(user) = run_as {
        // std also drops supplementary groups (setgroups) when uid is set.
        cmd.uid(user.uid).gid(user.gid);
    }
    cmd
}

impl RunAs {
    fn for_current_user() -> Result<Option<RunAs>> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        lookup_user(SUPERUSER).map(Some).ok_or_else(|| {
            cluster_err(
                "find the postgres system user",
                "running as root, and initdb refuses to run as root; create a `postgres` user \
                 (installing the postgresql package does) or run as an ordinary user"
                    .into(),
            )
        })
    }
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid out-parameter for getpwnam_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the duration of the call; buf's length is passed.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some(RunAs {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// The directory with initdb and postgres: `$SQLITE2PG_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian/Ubuntu layout), else `pg_config --bindir`.
fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        let dir = PathBuf::from(dir);
        return has_server_binaries(&dir)
            .then_some(dir.clone())
            .ok_or_else(|| {
                let detail = format!("{PG_BIN_ENV}={} has no initdb and postgres", dir.display());
                cluster_err("find the PostgreSQL server binaries", detail)
            });
    }
    if let Some(dir) = newest_debian_bin_dir() {
        return Ok(dir);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    from_pg_config
        .filter(|d| has_server_binaries(d))
        .ok_or_else(|| {
            cluster_err(
                "find the PostgreSQL server binaries",
                format!(
                "no initdb in ${PG_BIN_ENV}, /usr/lib/postgresql/*/bin or `pg_config --bindir`; \
                 install the server (apt install postgresql) or set {PG_BIN_ENV}"
            ),
            )
        })
}

fn newest_debian_bin_dir() -> Option<PathBuf> {
    let entries = fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<f64>().ok()?;
            let bin = e.path().join("bin");
            has_server_binaries(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, bin)| bin)
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

static ROOT_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Creates `sqlite2pg-pg-PID-N-RANDOM` (mode 0700, owned by the server user) in the temp dir,
/// or in /tmp if the server user could not reach the temp dir or the socket path would be too
/// long (Unix socket paths are limited to ~107 bytes).
fn make_root_dir(run_as: Option<RunAs>) -> Result<PathBuf> {
    let mut base = std::env::temp_dir();
    if base.as_os_str().len() > 60 || (run_as.is_some() && !world_traversable(&base)) {
        base = PathBuf::from("/tmp");
    }
    let n = ROOT_COUNTER.fetch_add(1, Ordering::Relaxed);
    let root = base.join(format!(
        "sqlite2pg-pg-{}-{n}-{}",
        std::process::id(),
        random_hex(4)?
    ));
    let io_err = |source| Error::Io {
        op: "create the private cluster directory",
        path: root.clone(),
        source,
    };
    fs::create_dir(&root).map_err(io_err)?;
    fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).map_err(io_err)?;
    chown(&root, run_as)?;
    Ok(root)
}

fn world_traversable(dir: &Path) -> bool {
    dir.ancestors()
        .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

fn chown(path: &Path, run_as: Option<RunAs>) -> Result<()> {
    match run_as {
        None => Ok(()),
        Some(user) => {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|source| {
                Error::Io {
                    op: "hand over to the postgres user",
                    path: path.into(),
                    source,
                }
            })
        }
    }
}

/// Writes a file readable only by the server user (server.key must be 0600 for postgres).
fn write_owned(path: &Path, contents: &str, run_as: Option<RunAs>) -> Result<()> {
    let io_err = |source| Error::Io {
        op: "write",
        path: path.into(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err)?;
    file.write_all(contents.as_bytes()).map_err(io_err)?;
    chown(path, run_as)
}

fn append(path: &Path, text: &str) -> Result<()> {
    let io_err = |source| Error::Io {
        op: "append to",
        path: path.into(),
        source,
    };
    let mut file = OpenOptions::new().append(true).open(path).map_err(io_err)?;
    file.write_all(text.as_bytes()).map_err(io_err)
}

/// Settings for a throwaway cluster that many parallel tests share: durability off (the data is
/// thrown away), 200 connections (tests run in parallel and each may hold several), modest
/// memory (several clusters may run on one small machine).
fn server_settings(root: &Path, opts: &ClusterOptions) -> String {
    let socket_dir = root.display().to_string().replace('\'', "''");
    let mut conf = format!(
        "\n# sqlite2pg private cluster\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{socket_dir}'\n\
         max_connections = 200\n\
         shared_buffers = 32MB\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         logging_collector = off\n"
    );
    if opts.tls.is_some() {
        conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    }
    conf
}

/// Password (SCRAM) over TCP, with and without TLS; trust over the private Unix socket.
fn hba_rules(tls: bool) -> String {
    let mut hba = String::from("# sqlite2pg private cluster\nlocal all all trust\n");
    if tls {
        hba.push_str("hostssl all all 127.0.0.1/32 scram-sha-256\n");
    }
    hba.push_str("host all all 127.0.0.1/32 scram-sha-256\n");
    hba.push_str("local replication all trust\nhost replication all 127.0.0.1/32 scram-sha-256\n");
    hba
}

fn free_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| cluster_err("find a free port", e.to_string()))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|source| Error::Io {
            op: "read",
            path: "/dev/urandom".into(),
            source,
        })?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The last ~40 lines of the server log written after `from`.
fn log_tail(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.seek(SeekFrom::Start(from));
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn cluster_err(op: &'static str, detail: String) -> Error {
    Error::Cluster { op, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    const OWNER_ENV: &str = "SQLITE2PG_TEST_CLUSTER_OWNER";

    fn process_gone(pid: u32) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z')),
        }
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    #[test]
    fn stop_ends_the_postmaster_and_removes_the_directory() {
        let mut cluster = PrivateCluster::start(&ClusterOptions::default()).unwrap();
        let (pid, root) = (cluster.pid(), cluster.root_dir().to_path_buf());
        assert!(std::net::TcpStream::connect(("127.0.0.1", cluster.port())).is_ok());
        cluster.stop().unwrap();
        assert!(process_gone(pid), "postmaster {pid} still running");
        assert!(!root.exists());
        cluster.stop().unwrap();
    }

    /// Runs as the child of `watchdog_stops_the_cluster_when_the_owner_is_killed`; a no-op
    /// in a normal test run.
    #[test]
    fn owner_process() {
        if std::env::var_os(OWNER_ENV).is_none() {
            return;
        }
        let cluster = PrivateCluster::start(&ClusterOptions::default()).unwrap();
        println!("CLUSTER {} {}", cluster.pid(), cluster.root_dir().display());
        std::io::stdout().flush().unwrap();
        let _ = std::io::stdin().read(&mut [0u8; 1]); // until the parent kills us
        std::mem::forget(cluster);
    }

    #[test]
    fn watchdog_stops_the_cluster_when_the_owner_is_killed() {
        let mut owner = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "private_pg::tests::owner_process", "--nocapture"])
            .env(OWNER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(owner.stdout.take().unwrap());
        let line = stdout
            .lines()
            .map(|l| l.unwrap())
            .find(|l| l.starts_with("CLUSTER "));
        let line = line.expect("the owner process printed its cluster");
        let mut words = line.split(' ').skip(1);
        let pid: u32 = words.next().unwrap().parse().unwrap();
        let root = PathBuf::from(words.next().unwrap());
        assert!(!process_gone(pid));
        owner.kill().unwrap(); // SIGKILL: no destructors run
        owner.wait().unwrap();
        wait_for("the orphaned postmaster to stop", || process_gone(pid));
        wait_for("the cluster directory to be removed", || !root.exists());
    }
}
