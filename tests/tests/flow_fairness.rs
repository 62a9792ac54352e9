//! Fairness between agents: while one agent floods the manager with a
//! backlog, another agent's alert is judged and stored ahead of that
//! backlog, not behind it. The flooding agent's batches wait in their own
//! lane of the fair queue (and, beyond its few admitted batches, in its
//! spool and file), so the quiet agent's batch is next but one turn.
//! Asserted on order (how much of the flood was stored when the quiet
//! agent's alert was), not on time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_manager::store::{AlertFilter, Store};
use palisade_tests::process::{AgentProcess, AgentSetup, ManagerProcess, write_agent_config};
use palisade_tests::{append_lines, eventually, scan_lines};

const MANAGER: &str = env!("CARGO_BIN_EXE_e2e-manager");
const AGENT: &str = env!("CARGO_BIN_EXE_e2e-agent");
const FLOOD: u64 = 100_000;

fn benign(i: u64) -> String {
    format!(
        "198.51.100.{} - - [28/Nov/2026:10:00:01 +0000] \"GET /page/{i} HTTP/1.1\" 200 512 \"-\" \"Mozilla/5.0\"",
        i % 200 + 1
    )
}

async fn stored(store: &Store, id: &str) -> u64 {
    store
        .agent(id)
        .await
        .unwrap()
        .map_or(0, |r| r.last_sequence)
}

async fn agent(manager: &ManagerProcess, name: &str) -> (String, PathBuf, AgentProcess) {
    let (id, bundle) = manager.add_agent(name).await.unwrap();
    let log = manager.dir.path().join(format!("{name}.log"));
    std::fs::write(&log, format!("{}\n", benign(0))).unwrap();
    let config = write_agent_config(
        &bundle,
        manager.addr,
        &AgentSetup {
            files: vec![(log.clone(), "apache".into())],
            ..AgentSetup::default()
        },
    )
    .unwrap();
    let process = AgentProcess::start(Path::new(AGENT), &config).unwrap();
    (id, log, process)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agent_does_not_hold_back_another_agents_alert() {
    let manager = ManagerProcess::start(Path::new(MANAGER)).await.unwrap();
    let (flood_id, flood_log, _flood) = agent(&manager, "flood").await;
    let (quiet_id, quiet_log, _quiet) = agent(&manager, "quiet").await;
    let store = manager.store().await.unwrap();
    for id in [&flood_id, &quiet_id] {
        eventually(
            Duration::from_secs(30),
            "each agent's first line",
            || async { Ok((stored(&store, id).await >= 1).then_some(())) },
        )
        .await
        .unwrap();
    }

    append_lines(&flood_log, (1..=FLOOD).map(benign)).unwrap();
    eventually(
        Duration::from_secs(60),
        "the flood to be under way",
        || async { Ok((stored(&store, &flood_id).await > 1).then_some(())) },
    )
    .await
    .unwrap();
    let flood_at_scan = stored(&store, &flood_id).await;
    append_lines(&quiet_log, scan_lines("203.0.113.77").into_iter().take(1)).unwrap();
    eventually(
        Duration::from_secs(60),
        "the quiet agent's alert",
        || async {
            let alerts = store
                .alerts(&AlertFilter {
                    agent_id: Some(quiet_id.clone()),
                    limit: 10,
                    ..Default::default()
                })
                .await?;
            Ok((!alerts.is_empty()).then_some(()))
        },
    )
    .await
    .unwrap();
    let flood_at_alert = stored(&store, &flood_id).await;
    assert!(
        flood_at_alert < FLOOD + 1,
        "the quiet agent's alert was stored only after the whole flood \
         ({flood_at_scan} of the flood stored when it was written, {flood_at_alert} when it was stored)"
    );
    // The flood itself is complete in the end.
    eventually(Duration::from_secs(300), "the whole flood", || async {
        Ok((stored(&store, &flood_id).await > FLOOD).then_some(()))
    })
    .await
    .unwrap();
}
