//! Two managers on one PostgreSQL database and an agent listing both
//! (A first): the agent's one live stream in the cluster is A's lease;
//! when A is SIGKILLed the agent moves to B, which takes the lease over
//! once A counts as dead; when A is back the agent returns to it on its
//! own (`failback_interval`). Lines written before, while A is dead and
//! after it restarted are each stored exactly once, in order, whichever
//! manager received them; `palisadectl` against B lists the agent with
//! the manager it is connected to, and `status` shows both managers. A
//! second stream of the agent on B while A holds its live one is refused.
//! `palisadectl -R` asked of B restarts the agent A holds.
//!
//! Needs PostgreSQL (`PALISADE_TEST_POSTGRES`; `scripts/test` starts one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use palisade_manager::store::Store;
use palisade_tests::cluster::ManagerPair;
use palisade_tests::process::{AgentProcess, AgentSetup};
use palisade_tests::raw_agent::{Credentials, RawAgent, refusal};
use palisade_tests::{append_lines, eventually};
use serde_json::Value;

const MANAGER: &str = env!("CARGO_BIN_EXE_e2e-manager");
const AGENT: &str = env!("CARGO_BIN_EXE_e2e-agent");
const CTL: &str = env!("CARGO_BIN_EXE_e2e-ctl");
const LIMIT: Duration = Duration::from_secs(60);

fn lines(tag: &str) -> Vec<String> {
    (0..100)
        .map(|i| format!("{tag} {i:03} GET /index.html 200"))
        .collect()
}

/// Runs `palisadectl --config CONFIG ARGS...`; its standard output as JSON.
async fn ctl_json(config: &Path, args: &[&str]) -> Value {
    let out = tokio::process::Command::new(CTL)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("PALISADE_CTL_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "palisadectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(palisade_postgres),
    ignore = "needs PostgreSQL (PALISADE_TEST_POSTGRES; scripts/test)"
)]
async fn an_agent_moves_between_two_managers_and_each_line_is_stored_once() {
    let db = palisade_test_needs::postgres_database();
    let mut cluster = ManagerPair::start(Path::new(MANAGER), &db.url, |t| t)
        .await
        .unwrap();
    let (id, bundle) = cluster.add_agent("web01").await.unwrap();
    let log = bundle.join("access.log");
    std::fs::write(&log, "").unwrap();
    let setup = AgentSetup {
        files: vec![(log.clone(), "apache".into())],
        ..AgentSetup::default()
    };
    let config = cluster.agent_config(&bundle, &setup, "1s").unwrap();
    let _agent = AgentProcess::start(Path::new(AGENT), &config).unwrap();
    let store = Store::open(palisade_manager::store::StoreLocation::Postgres(
        db.url.clone(),
    ))
    .await
    .unwrap();
    let mut written = Vec::new();
    let mut write = |tag: &'static str| {
        let batch = lines(tag);
        written.extend(batch.clone());
        append_lines(&log, batch).unwrap();
        written.len()
    };
    // The agent's first address: A.
    cluster.lease_on(&store, &id, "mgr-a", LIMIT).await.unwrap();
    let expected = write("first");
    cluster.stored(&store, &id, expected, LIMIT).await.unwrap();

    // A second stream of the agent on B, while A holds the live one (a
    // stolen certificate), is refused as a second stream on one manager is.
    let thief = RawAgent::hello(&Credentials::bundle(&bundle, cluster.b.addr), "other-spool").await;
    let refused = refusal(thief.err().expect("B accepted a second stream")).unwrap();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message().contains("live stream on manager mgr-a"),
        "{refused:?}"
    );
    // Refused before its Hello changed anything (its other spool would
    // have restarted the agent's sequence).
    let record = store.agent(&id).await.unwrap().unwrap();
    assert_eq!(record.last_sequence, 100);

    // A dies; lines go on being written. The agent moves to B, which
    // takes the lease once A's heartbeat is older than dead_after.
    cluster.a.kill();
    let expected = write("second");
    cluster.lease_on(&store, &id, "mgr-b", LIMIT).await.unwrap();
    cluster.stored(&store, &id, expected, LIMIT).await.unwrap();

    let on_b = cluster.ctl_config(&cluster.b).unwrap();
    let agents = ctl_json(&on_b, &["agents", "--json"]).await;
    assert_eq!(agents[0]["id"], id.as_str(), "{agents}");
    assert_eq!(agents[0]["status"], "Active", "{agents}");
    assert_eq!(agents[0]["manager"], "mgr-b", "{agents}");
    let listed = ctl_json(&on_b, &["-l", "-j"]).await;
    assert_eq!(listed["response"][1]["manager"], "mgr-b", "{listed}");
    let status = ctl_json(&on_b, &["status", "--json"]).await;
    assert_eq!(status["manager"], "mgr-b", "{status}");
    assert_eq!(status["connected_agents"], 1, "{status}");
    let state = |status: &Value, name: &str| {
        status["managers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no manager {name}: {status}"))
    };
    assert_eq!(state(&status, "mgr-a")["state"], "dead", "{status}");
    assert_eq!(state(&status, "mgr-b")["state"], "alive", "{status}");
    assert_eq!(state(&status, "mgr-b")["agents"][0], "web01", "{status}");

    // A is back: the agent returns to it on its own; B released the lease
    // when the agent left it.
    cluster.a.restart().await.unwrap();
    let expected = write("third");
    cluster.lease_on(&store, &id, "mgr-a", LIMIT).await.unwrap();
    let events = cluster.stored(&store, &id, expected, LIMIT).await.unwrap();

    let lines: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.line).into_owned())
        .collect();
    let distinct: HashSet<&String> = lines.iter().collect();
    assert_eq!(distinct.len(), 300, "every line stored once");
    assert_eq!(lines, written, "in the order written");
    let status = eventually(LIMIT, "mgr-a alive with web01 in B's status", || async {
        let status = ctl_json(&on_b, &["status", "--json"]).await;
        let a = state(&status, "mgr-a");
        Ok((a["state"] == "alive" && a["agents"][0] == "web01").then_some(status))
    })
    .await
    .unwrap();
    assert_eq!(state(&status, "mgr-b")["connected_agents"], 0, "{status}");
    let logs = cluster.logs();
    assert!(
        logs.contains("Took over the agent's lease from another manager"),
        "{logs}"
    );

    // `-R` asked of B reaches the agent A holds, through A.
    let started = |agent: &Value| agent["started_at"].as_str().map(String::from);
    let before = started(&ctl_json(&on_b, &["agent", "001", "--json"]).await);
    assert!(before.is_some());
    let asked = ctl_json(&on_b, &["-R", "001", "-j"]).await;
    assert_eq!(asked["response"]["restarting"][0], "001", "{asked}");
    assert_eq!(
        asked["response"]["through_other_manager"][0], "001",
        "{asked}"
    );
    eventually(LIMIT, "the agent restarted and Active again", || async {
        let agent = ctl_json(&on_b, &["agent", "001", "--json"]).await;
        let again = agent["status"] == "Active" && started(&agent) != before;
        Ok(again.then_some(()))
    })
    .await
    .unwrap();
    assert!(
        cluster
            .logs()
            .contains("for an operator of another manager"),
        "A asked it"
    );
    store.close().await;
    drop(cluster);
}
