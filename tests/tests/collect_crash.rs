//! The agent killed with SIGKILL while it reads a burst of lines, and
//! started again: its checkpoints advance only with the spooled lines and
//! the manager drops resent sequence numbers, so every line arrives once.
//! A file rotated while the agent is down is finished, from where the
//! agent stopped, before the new file at the path is read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_tests::process::{AgentProcess, AgentSetup, ManagerProcess, write_agent_config};
use palisade_tests::{append_lines, eventually};

const MANAGER: &str = env!("CARGO_BIN_EXE_e2e-manager");
const AGENT: &str = env!("CARGO_BIN_EXE_e2e-agent");

fn lines(tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("{tag} {i:06} GET /index.html 200"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_batch_loses_and_repeats_nothing() {
    let manager = ManagerProcess::start(Path::new(MANAGER)).await.unwrap();
    let (id, bundle) = manager.add_agent("web01").await.unwrap();
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
    let mut agent = AgentProcess::start(Path::new(AGENT), &config).unwrap();
    let store = manager.store().await.unwrap();
    let archived = || async { anyhow::Ok(store.archived_events(Some(&id)).await?.len()) };
    let mut expected = Vec::new();

    // Killed twice while a burst is being read and sent.
    for round in 0..2 {
        let burst = lines(&format!("burst{round}"), 0..60_000);
        let before = archived().await.unwrap();
        append_lines(&log, burst.iter().cloned()).unwrap();
        expected.extend(burst);
        eventually(Duration::from_secs(60), "part of the burst", || async {
            Ok((archived().await? > before).then_some(()))
        })
        .await
        .unwrap();
        agent.kill();
        let at_kill = archived().await.unwrap();
        assert!(
            at_kill < expected.len(),
            "the agent was killed after it had sent everything"
        );
        agent.restart().unwrap();
    }

    // Killed while it reads a third burst; while it is down, lines are
    // added to its file, which is then rotated and a new one started.
    // After the restart the old file is finished first.
    let caught_up = expected.len();
    eventually(Duration::from_secs(60), "the first bursts", || async {
        Ok((archived().await? >= caught_up).then_some(()))
    })
    .await
    .unwrap();
    let burst = lines("burst2", 0..30_000);
    append_lines(&log, burst.iter().cloned()).unwrap();
    expected.extend(burst);
    eventually(
        Duration::from_secs(60),
        "part of the third burst",
        || async { Ok((archived().await? > caught_up).then_some(())) },
    )
    .await
    .unwrap();
    agent.kill();
    let unread = lines("unread", 0..2_000);
    append_lines(&log, unread.iter().cloned()).unwrap();
    expected.extend(unread);
    std::fs::rename(&log, log.with_extension("log.1")).unwrap();
    let fresh = lines("fresh", 0..2_000);
    append_lines(&log, fresh.iter().cloned()).unwrap();
    expected.extend(fresh);
    agent.restart().unwrap();

    let n = expected.len();
    let events = eventually(Duration::from_secs(120), &format!("{n} events"), || async {
        let events = store.archived_events(Some(&id)).await?;
        anyhow::ensure!(events.len() <= n, "{} events for {n} lines", events.len());
        Ok((events.len() == n).then_some(events))
    })
    .await
    .unwrap();
    let got: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.line).into_owned())
        .collect();
    let first_difference = got.iter().zip(&expected).position(|(g, e)| g != e);
    assert_eq!(first_difference, None, "lines out of order or wrong");
    for pair in events.windows(2) {
        assert!(pair[0].sequence < pair[1].sequence);
    }
    for e in &events {
        assert_eq!(e.location, log.display().to_string());
    }
    // Nothing more arrives: a line written now is the next event, so
    // whatever the agent sent before it has been stored (or skipped).
    let barrier = "barrier 000000 GET /index.html 200";
    append_lines(&log, [barrier.to_string()]).unwrap();
    let events = eventually(Duration::from_secs(60), "the barrier line", || async {
        let events = store.archived_events(Some(&id)).await?;
        anyhow::ensure!(
            events.len() <= n + 1,
            "{} events for {n} lines",
            events.len()
        );
        Ok((events.len() == n + 1).then_some(events))
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&events[n].line), barrier);
    store.close().await;
    agent.kill();
}
