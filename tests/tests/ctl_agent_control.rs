//! agent_control's `-i`, `-R`, `-lc` with a connected agent, the new
//! subcommands (`agent`, `agent remove`, `alerts`, `status`), agent
//! lifecycle timing and the error lines, against a running manager with a
//! real agent connected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ctl_common;

use std::time::{Duration, Instant};

use assert_cmd::Command;
use ctl_common::{
    Agent, access_line, assert_json_snapshot, ctl, eventually, start, start_with, stderr, stdout,
};
use palisade_manager::setup;

/// `palisadectl` through assert_cmd (blocking; run off the runtime).
async fn assert_ctl(config: &std::path::Path, args: &[&str]) -> assert_cmd::assert::Assert {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_e2e-ctl"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("PALISADE_CTL_CONFIG")
            .assert()
    })
    .await
    .unwrap()
}

async fn json_of(config: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = ctl(config, args).await;
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// Replaces a `ctime` time at the end of a line with `<time>`.
fn mask_time(line: &str) -> String {
    for label in ["Last keep alive:     ", "Agent started at:    "] {
        if let Some(i) = line.find(label) {
            let rest = &line[i + label.len()..];
            if rest != "Unknown" {
                return format!("{}<time>", &line[..i + label.len()]);
            }
        }
    }
    line.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_agent_in_agent_control_layouts() {
    let m = start().await;
    let agent = Agent::add(&m, "web01", Duration::from_millis(300)).await;
    setup::add_agent(&m.config, "web02", None, None)
        .await
        .unwrap();
    let host = setup::host_name();
    eventually(Duration::from_secs(20), "agent 001 active", || async {
        let out = ctl(&m.ctl, &["-lc"]).await;
        stdout(&out).contains("ID: 001").then_some(())
    })
    .await;

    let out = assert_ctl(&m.ctl, &["-lc"]).await.success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        vec![
            "".to_string(),
            "Palisade agent_control. List of available agents:".into(),
            format!("   ID: 000, Name: {host} (server), IP: 127.0.0.1, Active/Local"),
            "   ID: 001, Name: web01, IP: any, Active".into(),
            "".into(),
        ]
    );
    let out = assert_ctl(&m.ctl, &["-ln"]).await.success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        vec![
            "",
            "Palisade agent_control. List of available agents:",
            "   ID: 002, Name: web02, IP: any, Never connected",
            "",
            "List of agentless devices:",
            "",
        ]
    );

    // -i: agent_control's block, line by line (times masked).
    let out = eventually(Duration::from_secs(10), "a heartbeat", || async {
        let out = ctl(&m.ctl, &["-i", "001"]).await;
        let text = stdout(&out);
        // The start time arrives with the Hello, the depth with a heartbeat.
        (text.contains("Spool depth:         0") && !text.contains("started at:    Unknown"))
            .then_some(out)
    })
    .await;
    let text = stdout(&out);
    let lines: Vec<String> = text.lines().map(mask_time).collect();
    let os = format!("{} {}", std::env::consts::OS, std::env::consts::ARCH);
    assert_eq!(
        lines,
        vec![
            "".to_string(),
            "Palisade agent_control. Agent information:".into(),
            "   Agent ID:   001".into(),
            "   Agent Name: web01".into(),
            "   IP address: any".into(),
            "   Status:     Active".into(),
            "".into(),
            format!("   Operating system:    {os}"),
            format!("   Client version:      {}", env!("CARGO_PKG_VERSION")),
            "   Last keep alive:     <time>".into(),
            "".into(),
            "   Agent started at:    <time>".into(),
            "   Spool depth:         0".into(),
            "   Dropped events:      0".into(),
        ]
    );
    // A never-connected agent: agent_control's "Unknown".
    let out = assert_ctl(&m.ctl, &["-i", "002"]).await.success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains("   Status:     Never connected\n\n   Operating system:    Unknown\n   Client version:      Unknown\n   Last keep alive:     Unknown\n"), "{text}");
    // The manager itself.
    let out = assert_ctl(&m.ctl, &["-i", "000"]).await.success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let lines: Vec<String> = text.lines().take(6).map(String::from).collect();
    assert_eq!(
        lines,
        vec![
            "".to_string(),
            "Palisade agent_control. Agent information:".into(),
            "   Agent ID:   000 (local instance)".into(),
            format!("   Agent Name: {host}"),
            "   IP address: 127.0.0.1".into(),
            "   Status:     Active/Local".into(),
        ]
    );
    // -s and -j forms.
    let out = ctl(&m.ctl, &["-i", "001", "-s"]).await;
    let csv = stdout(&out);
    let fields: Vec<&str> = csv.trim_end().split(',').collect();
    assert_eq!(&fields[..4], &["001", "web01", "any", "Active"], "{csv}");
    assert_eq!(&fields[8..], &["0", "0", ""], "{csv}");
    let out = ctl(&m.ctl, &["-i", "001", "-j"]).await;
    assert_json_snapshot("info_001", &stdout(&out));
    let out = ctl(&m.ctl, &["-lj"]).await;
    assert_json_snapshot("list_connected", &stdout(&out).replace(&host, "<host>"));
    let out = ctl(&m.ctl, &["agent", "001", "--json"]).await;
    // "manager": the one it is connected to (this host's name).
    assert_json_snapshot("agent_001", &stdout(&out).replace(&host, "<host>"));
    let out = ctl(&m.ctl, &["agent", "001"]).await;
    let text = stdout(&out);
    assert!(text.starts_with("ID:             001\nName:           web01\nIP:             any\nStatus:         Active\n"), "{text}");

    // status
    let status = json_of(&m.ctl, &["status", "--json"]).await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["agents"], 2);
    assert_eq!(status["connected_agents"], 1);
    let out = assert_ctl(&m.ctl, &["status"]).await.success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        text.starts_with(&format!(
            "Palisade manager {} on {host}\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(
        text.contains("Agents:            1 connected of 2\n"),
        "{text}"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_listed_and_followed_with_their_responses() {
    let m = start().await;
    let agent = Agent::add(&m, "web01", Duration::from_millis(300)).await;
    eventually(Duration::from_secs(20), "agent 001 active", || async {
        let out = ctl(&m.ctl, &["-lc"]).await;
        stdout(&out).contains("ID: 001").then_some(())
    })
    .await;

    // An alert before the follower starts: `--limit 1` shows it first, so
    // once it is printed the follower is subscribed to the live feed (it
    // subscribes before it reads the store) and nothing later is missed.
    agent.append(&[access_line("198.51.100.8", "/../../etc/passwd", 200)]);
    eventually(
        Duration::from_secs(20),
        "the first alert stored",
        || async {
            let out = ctl(&m.ctl, &["alerts", "--json"]).await;
            stdout(&out).contains("198.51.100.8").then_some(())
        },
    )
    .await;
    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_e2e-ctl"))
        .arg("--config")
        .arg(&m.ctl)
        .args(["alerts", "--follow", "--json", "--limit", "1"])
        .env_remove("PALISADE_CTL_CONFIG")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(follow.stdout.take().unwrap()));
    let backlog = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the backlog within 20 s")
        .unwrap()
        .unwrap();
    assert!(backlog.contains("198.51.100.8"), "{backlog}");
    agent.append(&[access_line("198.51.100.9", "/../../etc/passwd", 200)]);
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("an alert within 20 s")
        .unwrap()
        .unwrap();
    let printed_at = jiff::Timestamp::now();
    let alert: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(alert["rule"], 31106);
    assert_eq!(alert["agent"], "001");
    assert_eq!(alert["agent_name"], "web01");
    assert_eq!(alert["srcip"], "198.51.100.9");
    let judged: jiff::Timestamp = alert["time"].as_str().unwrap().parse().unwrap();
    let latency = printed_at.duration_since(judged);
    println!(
        "FOLLOW LATENCY: {} ms from judged to printed",
        latency.as_millis()
    );

    // A scan: 31151 fires and route-null600 answers; the follower shows
    // the alert with the response it caused.
    let scan: Vec<String> = (0..16)
        .map(|i| access_line("198.51.100.23", &format!("/scan{i}.php"), 404))
        .collect();
    agent.append(&scan);
    let scan_alert = loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("31151 within 20 s")
            .unwrap()
            .unwrap();
        let a: serde_json::Value = serde_json::from_str(&line).unwrap();
        if a["rule"] == 31151 {
            break a;
        }
    };
    assert_eq!(scan_alert["responses"][0]["response"], "route-null600");
    assert_eq!(scan_alert["responses"][0]["agent"], "001");

    // The same through the list, with filters.
    let list = json_of(
        &m.ctl,
        &["alerts", "--json", "--rule", "31151", "--since", "1h"],
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["responses"][0]["response"], "route-null600");
    let list = json_of(&m.ctl, &["alerts", "--json", "--srcip", "198.51.100.9"]).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_json_snapshot("alerts_31106", &list.to_string());
    let list = json_of(&m.ctl, &["alerts", "--json", "--level", "10"]).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|a| a["level"].as_u64().unwrap() >= 10)
    );
    let list = json_of(&m.ctl, &["alerts", "--json", "--agent", "002"]).await;
    assert!(list.as_array().unwrap().is_empty());
    let out = ctl(&m.ctl, &["alerts", "--rule", "31106"]).await;
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("TIME"), "{text}");
    assert!(
        rows[1].contains("001 (web01)") && rows[1].contains("31106"),
        "{text}"
    );
    drop(follow);
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_delivering_with_a_newer_start_time() {
    let m = start_with(|c| c.logall = true).await;
    let mut agent = Agent::add(&m, "web01", Duration::from_millis(300)).await;
    let started = |v: &serde_json::Value| v["started_at"].as_str().unwrap().to_string();
    // Active comes with the stream; the start time with the Hello after it.
    let before = eventually(Duration::from_secs(20), "agent 001 active", || async {
        let v = json_of(&m.ctl, &["agent", "001", "--json"]).await;
        (v["status"] == "Active" && v["started_at"].is_string()).then_some(v)
    })
    .await;
    agent.append(
        &(0..50)
            .map(|i| access_line("192.0.2.1", &format!("/a{i}"), 200))
            .collect::<Vec<_>>(),
    );

    let out = assert_ctl(&m.ctl, &["-R", "001"]).await.success();
    assert_eq!(
        String::from_utf8_lossy(&out.get_output().stdout),
        "\nPalisade agent_control: Restarting agent: 001\n"
    );
    tokio::time::timeout(
        Duration::from_secs(20),
        agent.restarts.wait_for(|n| *n == 1),
    )
    .await
    .expect("the agent restarted")
    .unwrap();
    agent.append(
        &(50..100)
            .map(|i| access_line("192.0.2.1", &format!("/a{i}"), 200))
            .collect::<Vec<_>>(),
    );
    let after = eventually(Duration::from_secs(20), "a newer start", || async {
        let v = json_of(&m.ctl, &["agent", "001", "--json"]).await;
        (v["status"] == "Active" && v["started_at"].is_string() && started(&v) > started(&before))
            .then_some(v)
    })
    .await;
    assert!(started(&after) > started(&before));
    // `-u ID -R` is the same request.
    let out = ctl(&m.ctl, &["-u", "001", "-R"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    tokio::time::timeout(
        Duration::from_secs(20),
        agent.restarts.wait_for(|n| *n == 2),
    )
    .await
    .expect("the agent restarted again")
    .unwrap();
    // Every line arrived once, none lost, none repeated.
    let store = palisade_manager::store::Store::open(&m.config.database)
        .await
        .unwrap();
    let events = eventually(Duration::from_secs(20), "100 events", || async {
        let e = store.archived_events(Some("001")).await.unwrap();
        (e.len() >= 100).then_some(e)
    })
    .await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=100).collect::<Vec<_>>());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_follows_the_agent_timeout() {
    // Heartbeats every minute, a 1.5 s timeout: a quiet agent with its
    // stream still open goes disconnected, and active again when it speaks.
    let m = start_with(|c| c.agent_timeout = Duration::from_millis(1500)).await;
    let mut agent = Agent::add(&m, "web01", Duration::from_secs(60)).await;
    let status = || async {
        json_of(&m.ctl, &["agent", "001", "--json"]).await["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    eventually(Duration::from_secs(20), "active", || async {
        (status().await == "Active").then_some(())
    })
    .await;
    let active_at = Instant::now();
    eventually(
        Duration::from_secs(10),
        "disconnected while connected",
        || async { (status().await == "Disconnected").then_some(()) },
    )
    .await;
    assert!(
        active_at.elapsed() >= Duration::from_millis(1000),
        "too early"
    );
    let out = ctl(&m.ctl, &["-lc"]).await;
    assert!(!stdout(&out).contains("ID: 001"), "{}", stdout(&out));
    agent.append(&[access_line("192.0.2.1", "/x", 200)]);
    eventually(Duration::from_secs(10), "active again", || async {
        (status().await == "Active").then_some(())
    })
    .await;
    // A closed stream is disconnected at once.
    agent.stop().await;
    assert_eq!(status().await, "Disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_revokes_and_ends_the_stream() {
    let logs = palisade_tests::LogCapture::install();
    let m = start().await;
    let agent = Agent::add(&m, "web01", Duration::from_millis(300)).await;
    eventually(Duration::from_secs(20), "agent 001 active", || async {
        let out = ctl(&m.ctl, &["-lc"]).await;
        stdout(&out).contains("ID: 001").then_some(())
    })
    .await;
    let out = assert_ctl(&m.ctl, &["agent", "remove", "001"])
        .await
        .success();
    assert_eq!(
        String::from_utf8_lossy(&out.get_output().stdout),
        "Agent 001 (web01) removed: its certificate is revoked and its stream ended.\n"
    );
    let v = json_of(&m.ctl, &["agent", "001", "--json"]).await;
    assert_eq!(v["status"], "Removed");
    let out = ctl(&m.ctl, &["-l"]).await;
    assert!(!stdout(&out).contains("ID: 001"), "{}", stdout(&out));
    // Its certificate no longer opens a stream: the agent's next attempt
    // is refused, and it stays disconnected.
    logs.wait_for(&["Refused agent stream", "agent 001 was removed"])
        .await
        .unwrap();
    let status = json_of(&m.ctl, &["status", "--json"]).await;
    assert_eq!(status["connected_agents"], 0);
    let store = palisade_manager::store::Store::open(&m.config.database)
        .await
        .unwrap();
    let record = store.agent("001").await.unwrap().unwrap();
    assert!(store.is_revoked(&record.cert_serial).await.unwrap());
    let out = ctl(&m.ctl, &["agent", "remove", "001"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "palisadectl: refused: agent 001 is already removed\n"
    );
    let out = ctl(&m.ctl, &["-R", "001"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "palisadectl: refused: agent 001 was removed\n"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_one_line() {
    let m = start().await;
    setup::add_agent(&m.config, "web01", None, None)
        .await
        .unwrap();
    let other = start().await;
    // An operator certificate from another manager's CA.
    for f in ["operator.pem", "operator.key"] {
        std::fs::copy(
            other.dir.path().join("operator").join(f),
            m.ctl.with_file_name(format!("other-{f}")),
        )
        .unwrap();
    }
    let foreign = ctl_common::write_ctl(
        &m.ctl,
        &m.config.advertise,
        "other-operator.pem",
        "other-operator.key",
    );
    // The other manager's CA: this manager's certificate is not vouched for.
    std::fs::copy(
        other.dir.path().join("operator/ca.pem"),
        m.ctl.with_file_name("other-ca.pem"),
    )
    .unwrap();
    let wrong_ca = m.ctl.with_file_name("ctl-wrong-ca.toml");
    std::fs::write(
        &wrong_ca,
        format!("manager = \"{}\"\nca_cert = \"other-ca.pem\"\ncert = \"operator.pem\"\nkey = \"operator.key\"\n", m.config.advertise),
    )
    .unwrap();
    let nowhere = m.ctl.with_file_name("ctl-nowhere.toml");
    std::fs::write(
        &nowhere,
        "manager = \"127.0.0.1:1\"\nca_cert = \"ca.pem\"\ncert = \"operator.pem\"\nkey = \"operator.key\"\n",
    )
    .unwrap();

    let cases: Vec<(&std::path::Path, Vec<&str>, i32, &str)> = vec![
        (
            &nowhere,
            vec!["status"],
            1,
            "cannot reach the manager at 127.0.0.1:1",
        ),
        (
            &foreign,
            vec!["-l"],
            1,
            "the manager refused this operator certificate",
        ),
        (&wrong_ca, vec!["-l"], 1, "presented a certificate that"),
        (&m.ctl, vec!["-i", "042"], 1, "not found: unknown agent 042"),
        (
            &m.ctl,
            vec!["agent", "042"],
            1,
            "not found: unknown agent 042",
        ),
        (&m.ctl, vec!["-R", "042"], 1, "not found: unknown agent 042"),
        (
            &m.ctl,
            vec!["agent", "remove", "042"],
            1,
            "not found: unknown agent 042",
        ),
        (&m.ctl, vec!["-i", "web"], 1, "invalid agent id \"web\""),
        (&m.ctl, vec!["-R", "001"], 1, "agent 001 is not connected"),
        (&m.ctl, vec!["-R"], 64, "-R needs an agent"),
        (
            &m.ctl,
            vec!["-b", "198.51.100.7", "-f", "nothing600", "-u", "001"],
            1,
            "unknown response \"nothing600\"",
        ),
        (
            &m.ctl,
            vec!["-b", "999.1.2.3", "-f", "route-null600", "-u", "001"],
            64,
            "invalid value '999.1.2.3' for '-b <IP>'",
        ),
        (
            &m.ctl,
            vec!["alerts", "--srcip", "1.2.3"],
            64,
            "invalid value '1.2.3' for '--srcip <IP>'",
        ),
        (
            &m.ctl,
            vec!["alerts", "--since", "yesterday"],
            64,
            "invalid --since \"yesterday\"",
        ),
    ];
    for (config, args, code, message) in cases {
        let out = ctl(config, &args).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.starts_with("palisadectl: ") && err.contains(message),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
}
