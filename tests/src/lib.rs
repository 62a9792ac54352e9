//! Harness for Palisade's end-to-end tests: a real manager and real agents
//! in this process (their `run()` functions, as `main` calls them), real
//! certificates from a real `init`, real SQLite files, loopback TCP.
//!
//! # Layout
//!
//! - [`ManagerHandle`]: `init` in a temp dir, then the manager on
//!   listeners it binds on `127.0.0.1:0` (agents, and enrollment or
//!   metrics when asked for); can be stopped and restarted on the same
//!   ports.
//! - [`AgentHandle`]: an agent registered with `agent add`, running from
//!   its bundle.
//! - [`LogCapture`]: the tracing output of the process, to assert on the
//!   reasons the daemons log.
//! - [`raw_agent`]: a client speaking the agents' protocol directly with
//!   a real agent certificate (a compromised agent).
//! - [`fleet`]: many simulated agents with real identities and streams,
//!   for the fleet benchmark and fan-out tests.
//! - [`cluster`]: two manager processes on one PostgreSQL database with
//!   one CA, and agents listing both.
//! - [`measure`]: CPU and memory figures from `/proc`, the generated
//!   access log and configuration the benchmarks use.
//! - [`netns`]: test hosts in network namespaces, nginx, curl.
//! - [`site`]: a web server with nginx, manager and agent, and an attacker.
//! - [`smtp`]: a real SMTP server (aiosmtpd) on loopback.
//! - [`two_managers`]: two managers on one PostgreSQL database, an agent
//!   on each, nginx and an attacker.
//!
//! Everything that needs more than one of the programs lives in this
//! crate, so that no daemon crate depends on another: the end-to-end
//! tests (`tests/`, among them `palisadectl`'s against a real manager,
//! `ctl_*`, and the documentation's command lines, `docs.rs`), the
//! benchmarks (`benches/`: block latency, the file-to-database pipeline)
//! and the daemons built under test names (`src/bin/e2e-*`).
//!
//! # Tests that need root
//!
//! The tests that change the host (namespaces, routes, nft) follow the
//! convention of `palisade-test-needs` (`tests/needs`): the crate's
//! `build.rs` sets the `palisade_root` cfg when the build runs as root (or
//! `PALISADE_REQUIRE_ROOT=1`), and each such test reads
//!
//! ```text
//! #[test]
//! #[cfg_attr(not(palisade_root), ignore = "needs root: network namespaces")]
//! fn a_test() {
//!     palisade_test_needs::root();
//!     // ...
//! }
//! ```
//!
//! so that as another user it is listed as ignored with its reason, and
//! built to run it fails when root or a program it drives is missing.
//! None returns early and reports `ok`.
//!
//! # Waiting
//!
//! Tests wait for a condition ([`eventually`], [`site::wait`]), or, to
//! show that nothing more arrives, write one more line and wait for it
//! (everything sent before it has then been stored). Fixed waits remain
//! only where time is the subject (a block's timeout, a token's expiry,
//! the mail budget's period, a thirty-second outage), to pace a writer,
//! and in `collect_rotation`'s quiet window, where a last line would
//! wait a whole poll interval.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod fleet;
pub mod measure;
pub mod netns;
pub mod process;
pub mod raw_agent;
pub mod relay;
pub mod site;
pub mod smtp;
pub mod two_managers;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use palisade_agent::AgentConfig;
use palisade_manager::setup::{self, InitOptions};
use palisade_manager::store::Store;
use palisade_manager::{Listeners, ManagerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A manager set up in its own temporary directory.
pub struct ManagerHandle {
    /// The temporary directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// Its configuration.
    pub config: ManagerConfig,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its enrollment endpoint listens, when started with one.
    pub enroll_addr: Option<SocketAddr>,
    /// Where its /metrics endpoint listens, when started with one.
    pub metrics_addr: Option<SocketAddr>,
    running: Option<(
        CancellationToken,
        JoinHandle<Result<(), palisade_manager::RunError>>,
    )>,
}

impl ManagerHandle {
    /// `init` in a fresh temp dir and start the manager on loopback.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_inner(Endpoints::default(), |_| {}).await
    }

    /// As [`Self::start`], with `adjust` applied to the configuration first.
    pub async fn start_with(adjust: impl FnOnce(&mut ManagerConfig)) -> anyhow::Result<Self> {
        Self::start_inner(Endpoints::default(), adjust).await
    }

    /// [`Self::start`], with the enrollment endpoint on its own loopback
    /// port ([`Self::enroll_addr`]).
    pub async fn start_enrolling() -> anyhow::Result<Self> {
        let endpoints = Endpoints {
            enrollment: true,
            ..Endpoints::default()
        };
        Self::start_inner(endpoints, |_| {}).await
    }

    /// [`Self::start`], with the Prometheus endpoint on its own loopback
    /// port ([`Self::metrics_addr`]).
    pub async fn start_with_metrics() -> anyhow::Result<Self> {
        let endpoints = Endpoints {
            metrics: true,
            ..Endpoints::default()
        };
        Self::start_inner(endpoints, |_| {}).await
    }

    async fn start_inner(
        endpoints: Endpoints,
        adjust: impl FnOnce(&mut ManagerConfig),
    ) -> anyhow::Result<Self> {
        install_crypto();
        let dir = tempfile::tempdir()?;
        let report = setup::init(&InitOptions {
            dir: dir.path().to_path_buf(),
            sans: vec![],
            listen: "127.0.0.1:0".parse()?,
            advertise: Some("127.0.0.1:1514".into()),
            force: false,
        })
        .await?;
        let mut config = ManagerConfig::load(&report.config)?;
        let loopback = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let agents = loopback().await?;
        let addr = agents.local_addr()?;
        config.listen = addr;
        config.advertise = addr.to_string();
        // Tests see what was delivered in the archive (off by default).
        config.logall = true;
        adjust(&mut config);
        let enrollment = match endpoints.enrollment {
            true => Some(loopback().await?),
            false => None,
        };
        if let Some(l) = &enrollment {
            config.enrollment.enabled = true;
            config.enrollment.listen = l.local_addr()?;
        }
        let metrics = match endpoints.metrics {
            true => Some(loopback().await?),
            false => None,
        };
        if let Some(l) = &metrics {
            config.metrics.listen = Some(l.local_addr()?);
        }
        let mut handle = Self {
            dir,
            enroll_addr: config
                .enrollment
                .enabled
                .then_some(config.enrollment.listen),
            metrics_addr: config.metrics.listen,
            config,
            addr,
            running: None,
        };
        handle.spawn(Listeners {
            agents,
            enrollment,
            metrics,
        });
        Ok(handle)
    }

    fn spawn(&mut self, listeners: Listeners) {
        let shutdown = CancellationToken::new();
        let config = self.config.clone();
        let task = tokio::spawn(palisade_manager::run(config, listeners, shutdown.clone()));
        self.running = Some((shutdown, task));
    }

    /// Registers agent `name` tailing `access.log` in the manager's
    /// directory (Apache format, read from its start); returns its id, its
    /// configuration (not started) and the log's path.
    pub async fn add_access_log_agent(
        &self,
        name: &str,
    ) -> anyhow::Result<(String, AgentConfig, PathBuf)> {
        let (id, mut config) = self.add_agent(name).await?;
        let log = self.dir.path().join("access.log");
        config.localfiles.push(palisade_agent::config::Localfile {
            location: log.clone(),
            log_format: "apache".into(),
        });
        config.read_from_start = true;
        Ok((id, config, log))
    }

    /// Stops the manager and waits for it to finish.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some((shutdown, task)) = self.running.take() {
            shutdown.cancel();
            task.await??;
        }
        Ok(())
    }

    /// Starts the manager again on the same addresses (with whatever
    /// `config` now says).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        // The configuration is bound as is: the addresses of a restart
        // are the ones a daemon's `main` would bind.
        let listeners = Listeners::bind(&self.config).await?;
        self.enroll_addr = listeners
            .enrollment
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        self.metrics_addr = listeners
            .metrics
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        self.spawn(listeners);
        Ok(())
    }

    /// Registers an agent and returns its bundle's configuration, pointed
    /// at this manager.
    pub async fn add_agent(&self, name: &str) -> anyhow::Result<(String, AgentConfig)> {
        let bundle = setup::add_agent(&self.config, name, None, None).await?;
        let mut config = AgentConfig::load(&bundle.config)?;
        config.manager_addresses = vec![self.addr.to_string()];
        config.localfiles.clear();
        config.poll_interval = Duration::from_millis(20);
        config.heartbeat_interval = Duration::from_millis(500);
        Ok((bundle.id, config))
    }

    /// The operator bundle directory written by `init`.
    pub fn operator_dir(&self) -> PathBuf {
        self.dir.path().join("operator")
    }

    /// Opens the manager's database (a second connection, as a tool would).
    pub async fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::open(&self.config.database).await?)
    }
}

/// Which endpoints beside the agents' a test manager serves.
#[derive(Debug, Default, Clone, Copy)]
struct Endpoints {
    enrollment: bool,
    metrics: bool,
}

impl Drop for ManagerHandle {
    fn drop(&mut self) {
        if let Some((shutdown, task)) = self.running.take() {
            shutdown.cancel();
            task.abort();
        }
    }
}

/// A running agent.
pub struct AgentHandle {
    /// Its configuration.
    pub config: AgentConfig,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), palisade_agent::RunError>>>,
}

impl AgentHandle {
    /// Runs an agent with `config`.
    pub fn start(config: AgentConfig) -> Self {
        install_crypto();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(palisade_agent::run(config.clone(), shutdown.clone()));
        Self {
            config,
            shutdown,
            task: Some(task),
        }
    }

    /// Stops the agent and waits for it.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `manager.toml` as `init` writes it, with `logall` turned on (tests
/// see what was delivered in the archive; it is off by default).
pub fn with_logall(toml: String) -> String {
    let on = toml.replace("\nlogall = false\n", "\nlogall = true\n");
    assert!(on.contains("\nlogall = true\n"), "init wrote no logall key");
    on
}

/// Selects the ring provider for rustls once per process.
pub fn install_crypto() {
    palisade_common::tls::install_crypto_provider();
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after
/// `limit` with `what` in the message.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One number from a manager's database (opened read-only beside the
/// running manager): `sql` with the agent id bound as `$1`.
pub async fn db_number(db: &Path, sql: &'static str, agent: &str) -> anyhow::Result<i64> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await?;
    let v = sqlx::query_scalar(sql).bind(agent).fetch_one(&pool).await;
    pool.close().await;
    Ok(v?)
}

/// The bytes a SQLite database holds on disk: the file, its WAL and its
/// shared-memory index (what a spool's bound is about).
pub fn sqlite_bytes(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| {
            std::fs::metadata(format!("{}{s}", db.display()))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum()
}

/// Appends lines to a file, creating it if needed.
pub fn append_lines(path: &Path, lines: impl IntoIterator<Item = String>) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut buf = Vec::new();
    for l in lines {
        buf.extend_from_slice(l.as_bytes());
        buf.push(b'\n');
    }
    f.write_all(&buf)
}

/// The process's log output, captured for assertions.
#[derive(Clone)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Installs a global subscriber (once per process) that also writes
    /// to stderr, and returns the capture: `info`, and the mailer's
    /// `debug` (each retry), which tests wait for.
    pub fn install() -> Self {
        static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let capture = LogCapture(Arc::new(Mutex::new(Vec::new())));
                let writer = capture.clone();
                let _ = tracing_subscriber::fmt()
                    .with_env_filter("info,palisade_manager::mail=debug")
                    .with_ansi(false)
                    .with_writer(move || writer.clone())
                    .try_init();
                capture
            })
            .clone()
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// Waits up to 5 s for a log line containing every one of `needles`.
    pub async fn wait_for(&self, needles: &[&str]) -> anyhow::Result<String> {
        eventually(
            Duration::from_secs(5),
            &format!("a log line with {needles:?}"),
            || async {
                Ok(self
                    .text()
                    .lines()
                    .find(|l| needles.iter().all(|n| l.contains(n)))
                    .map(str::to_string))
            },
        )
        .await
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(buf)?;
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The seed's scan from `ip`: one Apache access line, answered 404, per
/// path of [`site::SCAN`] (14, enough for rule 31151).
pub fn scan_lines(ip: &str) -> Vec<String> {
    site::SCAN
        .iter()
        .map(|path| {
            format!(
                "{ip} - - [28/Nov/2026:10:00:01 +0000] \"GET {path} HTTP/1.1\" 404 303 \"-\" \"ZmEu\""
            )
        })
        .collect()
}
