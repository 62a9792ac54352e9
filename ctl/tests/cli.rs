//! `palisadectl` against a running manager: agent_control's `-l` layout
//! line by line, its CSV and JSON forms, the `agents` subcommand, and the
//! error lines for an unreachable manager and a non-operator certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use palisade_manager::ManagerConfig;
use palisade_manager::setup::{self, InitOptions};
use tokio_util::sync::CancellationToken;

struct Running {
    dir: tempfile::TempDir,
    config: ManagerConfig,
    ctl: PathBuf,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Running {
    let _ = rustls::crypto::ring::default_provider().install_default();
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

fn write_ctl(template: &Path, manager: &str, cert: &str, key: &str) -> PathBuf {
    let path = template.with_file_name(format!("ctl-{}.toml", cert.replace(['/', '.'], "_")));
    std::fs::write(
        &path,
        format!("manager = \"{manager}\"\nserver_name = \"localhost\"\nca_cert = \"ca.pem\"\ncert = \"{cert}\"\nkey = \"{key}\"\n"),
    )
    .unwrap();
    path
}

async fn ctl(config: &Path, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisadectl"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("PALISADE_CTL_CONFIG");
    cmd.output().await.expect("runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_matches_agent_control_line_by_line() {
    let m = start().await;
    setup::add_agent(&m.config, "web01", Some("10.0.0.5"), None)
        .await
        .unwrap();
    setup::add_agent(&m.config, "web02", None, None)
        .await
        .unwrap();
    let host = setup::host_name();

    let out = ctl(&m.ctl, &["-l"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = [
        "".to_string(),
        "Palisade agent_control. List of available agents:".to_string(),
        format!("   ID: 000, Name: {host} (server), IP: 127.0.0.1, Active/Local"),
        "   ID: 001, Name: web01, IP: 10.0.0.5/32, Never connected".to_string(),
        "   ID: 002, Name: web02, IP: any, Never connected".to_string(),
        "".to_string(),
        "List of agentless devices:".to_string(),
        "".to_string(),
    ];
    let text = stdout(&out);
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got, expected.iter().map(String::as_str).collect::<Vec<_>>());

    // -lc: connected only (none yet), no agentless section.
    let out = ctl(&m.ctl, &["-lc"]).await;
    assert_eq!(
        stdout(&out),
        format!(
            "\nPalisade agent_control. List of available agents:\n   ID: 000, Name: {host} (server), IP: 127.0.0.1, Active/Local\n\n"
        )
    );

    let out = ctl(&m.ctl, &["-l", "-s"]).await;
    assert_eq!(
        stdout(&out),
        format!(
            "000,{host} (server),127.0.0.1,Active/Local,\n001,web01,10.0.0.5/32,Never connected,\n002,web02,any,Never connected,\n"
        )
    );

    let out = ctl(&m.ctl, &["-lj"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["error"], 0);
    assert_eq!(json["response"][1]["id"], "001");
    assert_eq!(json["response"][1]["status"], "Never connected");

    let out = ctl(&m.ctl, &["agents", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[0]["name"], "web01");
    assert_eq!(json[0]["ip"], "10.0.0.5/32");

    let out = ctl(&m.ctl, &["agents"]).await;
    let table = stdout(&out);
    let mut lines = table.lines();
    assert!(
        lines.next().unwrap().starts_with("ID   NAME   IP"),
        "{table}"
    );
    assert!(
        lines.next().unwrap().starts_with("001  web01  10.0.0.5/32"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_clear_line() {
    let m = start().await;
    // An agent's certificate is not an operator's.
    let bundle = setup::add_agent(&m.config, "web01", None, None)
        .await
        .unwrap();
    std::fs::copy(
        m.dir.path().join("operator/ca.pem"),
        bundle.dir.join("ca.pem"),
    )
    .unwrap();
    let agent_ctl = write_ctl(
        &bundle.dir.join("agent.toml"),
        &m.config.advertise,
        "agent.pem",
        "agent.key",
    );
    let out = ctl(&agent_ctl, &["-l"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );

    // Nobody listens on port 1.
    let nowhere = write_ctl(&m.ctl, "127.0.0.1:1", "operator.pem", "operator.key");
    let out = ctl(&nowhere, &["-l"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach the manager at 127.0.0.1:1"),
        "{}",
        stderr(&out)
    );

    let out = ctl(&m.ctl, &["-c"]).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let out = ctl(&m.dir.path().join("absent.toml"), &["-l"]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("absent.toml"), "{}", stderr(&out));
}
