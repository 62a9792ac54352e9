//! `palisadectl` against a running manager: agent_control's `-l` layout
//! line by line, its CSV and JSON forms, the `agents` subcommand, and the
//! error lines for an unreachable manager and a non-operator certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ctl_common;

use ctl_common::{ctl, start, stderr, stdout, write_ctl};
use palisade_manager::setup;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_can_be_listed_run_and_lifted() {
    let m = start().await;
    setup::add_agent(&m.config, "web01", None, None)
        .await
        .unwrap();

    let out = ctl(&m.ctl, &["-L"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "\nPalisade agent_control. Available active responses:\n\n   Response name: route-null600, command: route-null\n\n"
    );
    let out = ctl(&m.ctl, &["responses", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json[0]["name"], "route-null600");
    assert_eq!(json[0]["timeout_seconds"], 600);

    // The agent is offline: the command is queued and said so.
    let out = ctl(
        &m.ctl,
        &["-b", "198.51.100.7", "-f", "route-null600", "-u", "001"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(""));
    assert_eq!(
        lines.next(),
        Some("Palisade agent_control: Running active response 'route-null600' on: 001")
    );
    assert_eq!(
        lines.next(),
        Some("   Agent 001 is not connected: queued, it runs when the agent reconnects.")
    );

    let out = ctl(&m.ctl, &["blocks", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json[0]["srcip"], "198.51.100.7");
    assert_eq!(json[0]["agent"], "001");
    assert_eq!(json[0]["response"], "route-null600");
    assert_eq!(json[0]["state"], "pending");
    let out = ctl(&m.ctl, &["blocks"]).await;
    assert!(
        stdout(&out)
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("198.51.100.7  001    route-null600"),
        "{}",
        stdout(&out)
    );

    let out = ctl(&m.ctl, &["unblock", "198.51.100.7"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "unblock 198.51.100.7: agent 001 is not connected; queued until it reconnects\n"
    );
    let out = ctl(&m.ctl, &["unblock", "198.51.100.8"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not blocked"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_errors_are_one_clear_line() {
    let m = start().await;
    setup::add_agent(&m.config, "web01", None, None)
        .await
        .unwrap();
    let cases: [(&[&str], i32, &str); 6] = [
        (
            &["-b", "198.51.100.7", "-f", "route-null600", "-u", "042"],
            1,
            "unknown agent 042",
        ),
        (
            &["-b", "198.51.100.7", "-f", "firewall-drop0", "-u", "001"],
            1,
            "unknown response \"firewall-drop0\"",
        ),
        (
            &["-b", "127.0.0.1", "-f", "route-null600", "-u", "001"],
            1,
            "loopback",
        ),
        (
            &["block", "::1", "-f", "route-null600", "-u", "001"],
            1,
            "loopback",
        ),
        (
            &["-b", "999.1.2.3", "-f", "route-null600", "-u", "001"],
            64,
            "invalid value '999.1.2.3'",
        ),
        (
            &["-b", "198.51.100.7", "-f", "route-null600"],
            64,
            "-b needs -u ID or -a",
        ),
    ];
    for (args, code, message) in cases {
        let out = ctl(&m.ctl, args).await;
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        if code == 1 {
            assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        }
    }
}

/// `palisadectl -l | head`: the reader has gone before palisadectl
/// writes; it ends quietly with success, as Unix tools do, instead of
/// panicking on the broken pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_the_output_quietly() {
    let m = start().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_e2e-ctl"))
        .arg("--config")
        .arg(&m.ctl)
        .arg("-l")
        .env_remove("PALISADE_CTL_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(stderr(&out), "");
    assert!(out.status.success(), "{:?}", out.status);
}
