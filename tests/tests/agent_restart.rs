//! `palisadectl -R` against real processes: the agent stops cleanly and
//! re-executes its own binary with the same arguments (same process id, as
//! under systemd), reconnects with a newer start time, and every line
//! written before, during and after the restart arrives exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_tests::process::{AgentProcess, AgentSetup, ManagerProcess, write_agent_config};
use palisade_tests::{append_lines, eventually};

const MANAGER: &str = env!("CARGO_BIN_EXE_e2e-manager");
const AGENT: &str = env!("CARGO_BIN_EXE_e2e-agent");
const CTL: &str = env!("CARGO_BIN_EXE_e2e-ctl");

fn lines(range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("192.0.2.1 - - [28/Nov/2026:10:00:01 +0000] \"GET /page{i:06} HTTP/1.1\" 200 303 \"-\" \"curl\""))
        .collect()
}

fn started_at(manager: &ManagerProcess) -> Option<String> {
    let out = manager
        .ctl(Path::new(CTL), &["agent", "001", "--json"])
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    (v["status"] == "Active").then(|| v["started_at"].as_str().map(String::from))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_asked_to_restart_reexecutes_itself_and_loses_nothing() {
    let manager = ManagerProcess::start(Path::new(MANAGER)).await.unwrap();
    let (id, bundle) = manager.add_agent("web01").await.unwrap();
    assert_eq!(id, "001");
    let log: PathBuf = manager.dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config = write_agent_config(
        &bundle,
        manager.addr,
        &AgentSetup {
            files: vec![(log.clone(), "apache".into())],
            ..AgentSetup::default()
        },
    )
    .unwrap();
    let agent = AgentProcess::start(Path::new(AGENT), &config).unwrap();
    let pid = agent.pid().unwrap();
    let before = eventually(Duration::from_secs(30), "the agent to connect", || async {
        Ok(started_at(&manager))
    })
    .await
    .unwrap();

    append_lines(&log, lines(0..200)).unwrap();
    let out = manager.ctl(Path::new(CTL), &["-R", "001"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "\nPalisade agent_control: Restarting agent: 001\n"
    );
    // Lines written while it restarts.
    append_lines(&log, lines(200..400)).unwrap();
    let after = eventually(Duration::from_secs(30), "a newer start time", || async {
        Ok(started_at(&manager).filter(|s| *s > before))
    })
    .await
    .unwrap();
    assert!(after > before);
    append_lines(&log, lines(400..600)).unwrap();

    let store = manager.store().await.unwrap();
    let events = eventually(Duration::from_secs(30), "600 events", || async {
        let e = store.archived_events(Some("001")).await?;
        Ok((e.len() >= 600).then_some(e))
    })
    .await
    .unwrap();
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=600).collect::<Vec<_>>());
    let texts: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.line).into_owned())
        .collect();
    assert_eq!(texts, lines(0..600));
    // The same process, re-executed: the child we started still runs (not
    // a zombie) and its log shows two starts.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
    assert!(matches!(state, Some("S" | "R" | "D")), "{stat}");
    let log_text = std::fs::read_to_string(config.with_extension("out")).unwrap();
    assert!(
        log_text.contains("The manager asked this agent to restart."),
        "{log_text}"
    );
    assert!(log_text.contains("Restarting."), "{log_text}");
    assert_eq!(log_text.matches("Agent started.").count(), 2, "{log_text}");
}
