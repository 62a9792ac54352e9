//! For the `ctl_*` tests: a real manager in this process (its `run()`, from
//! a real `init`), real agents from `agent add` bundles, and `palisadectl`
//! run as a program (built as `e2e-ctl`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use palisade_agent::AgentConfig;
use palisade_agent::uplink::Stop;
use palisade_manager::ManagerConfig;
use palisade_manager::setup::{self, InitOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Running {
    pub dir: tempfile::TempDir,
    pub config: ManagerConfig,
    pub ctl: PathBuf,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start() -> Running {
    start_with(|_| {}).await
}

/// Starts a manager after `adjust` has changed its configuration.
pub async fn start_with(adjust: impl FnOnce(&mut ManagerConfig)) -> Running {
    palisade_common::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let report = setup::init(&InitOptions {
        dir: dir.path().to_path_buf(),
        sans: vec![],
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: Some("127.0.0.1:1".into()),
        force: false,
    })
    .await
    .unwrap();
    let mut config = ManagerConfig::load(&report.config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    config.advertise = addr.to_string();
    config.listen = addr;
    adjust(&mut config);
    let ctl = write_ctl(
        &report.ctl_config,
        &addr.to_string(),
        "operator.pem",
        "operator.key",
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(palisade_manager::run(
        config.clone(),
        listener,
        shutdown.clone(),
    ));
    Running {
        dir,
        config,
        ctl,
        shutdown,
    }
}

pub fn write_ctl(template: &Path, manager: &str, cert: &str, key: &str) -> PathBuf {
    let path = template.with_file_name(format!("ctl-{}.toml", cert.replace(['/', '.'], "_")));
    std::fs::write(
        &path,
        format!("manager = \"{manager}\"\nserver_name = \"localhost\"\nca_cert = \"ca.pem\"\ncert = \"{cert}\"\nkey = \"{key}\"\n"),
    )
    .unwrap();
    path
}

/// Runs `palisadectl --config CONFIG ARGS...`.
pub async fn ctl(config: &Path, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_e2e-ctl"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("PALISADE_CTL_CONFIG");
    cmd.output().await.expect("runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An agent registered with `agent add`, running in this process from its
/// bundle, tailing `access.log` in the bundle, with dry-run responses (no
/// route is changed on the test host). When the manager asks it to
/// restart it starts again, as `main` does by re-executing itself.
pub struct Agent {
    pub id: String,
    pub log: PathBuf,
    pub config: AgentConfig,
    pub restarts: tokio::sync::watch::Receiver<u32>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Agent {
    pub async fn add(m: &Running, name: &str, heartbeat: Duration) -> Self {
        let bundle = setup::add_agent(&m.config, name, None, None).await.unwrap();
        let mut config = AgentConfig::load(&bundle.config).unwrap();
        let log = bundle.dir.join("access.log");
        std::fs::write(&log, "").unwrap();
        config.manager_addresses = vec![m.config.advertise.clone()];
        config.localfiles.clear();
        config.localfiles.push(palisade_agent::config::Localfile {
            location: log.clone(),
            log_format: "apache".into(),
        });
        config.read_from_start = true;
        config.poll_interval = Duration::from_millis(20);
        config.heartbeat_interval = heartbeat;
        config.respond.dry_run = true;
        config.respond.ar_log_path = bundle.dir.join("active-responses.log");
        let shutdown = CancellationToken::new();
        let (restarted, restarts) = tokio::sync::watch::channel(0u32);
        let task = tokio::spawn({
            let config = config.clone();
            let shutdown = shutdown.clone();
            async move {
                let mut n = 0;
                while let Ok(Stop::Restart) =
                    palisade_agent::run_until(config.clone(), shutdown.clone()).await
                {
                    n += 1;
                    let _ = restarted.send(n);
                }
            }
        });
        Self {
            id: bundle.id,
            log,
            config,
            restarts,
            shutdown,
            task: Some(task),
        }
    }

    pub fn append(&self, lines: &[String]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        for line in lines {
            writeln!(f, "{line}").unwrap();
        }
        f.flush().unwrap();
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits (polling every 50 ms) until `check` gives a value; fails the
/// test after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    palisade_tests::eventually(limit, what, || {
        let value = check();
        async move { Ok(value.await) }
    })
    .await
    .unwrap()
}

/// An access-log line from `ip` for `path` with `status`.
pub fn access_line(ip: &str, path: &str, status: u16) -> String {
    format!(
        "{ip} - - [28/Nov/2026:10:00:01 +0000] \"GET {path} HTTP/1.1\" {status} 303 \"-\" \"curl/8.0\""
    )
}

/// Replaces the values that change from run to run (times, host names,
/// versions, ids of certificates) with placeholders.
pub fn normalise(v: &mut serde_json::Value) {
    use serde_json::Value;
    const VOLATILE: &[&str] = &[
        "time",
        "last_seen",
        "registered_at",
        "started_at",
        "last_keepalive",
        "hostname",
        "os",
        "operating_system",
        "version",
        "client_version",
        "address",
        "location",
    ];
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if VOLATILE.contains(&k.as_str()) && !val.is_null() {
                    *val = Value::String(format!("<{k}>"));
                } else {
                    normalise(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// Compares `text` (JSON) with `tests/tests/snapshots/ctl/NAME.json` after
/// normalising; `PALISADE_UPDATE_SNAPSHOTS=1` rewrites the file.
pub fn assert_json_snapshot(name: &str, text: &str) {
    let mut value: serde_json::Value = serde_json::from_str(text).expect("JSON");
    normalise(&mut value);
    let pretty = serde_json::to_string_pretty(&value).unwrap() + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots/ctl")
        .join(format!("{name}.json"));
    if std::env::var_os("PALISADE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &pretty).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run with PALISADE_UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(committed, pretty, "snapshot {name} differs");
}
