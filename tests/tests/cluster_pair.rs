//! Issue #16's scenario across a manager crash: two managers on one
//! PostgreSQL database and two agents listing both (web01 prefers A,
//! web02 prefers B). 20,000 lines are written a quarter at a time: before
//! manager A is SIGKILLed, while it is dead, after its restart while
//! web01 is still on B, and after web01 came back to A on its own. Every
//! line of both agents is stored exactly once, in order. A scan
//! seen by web01 on A is blocked, and `palisadectl` against B lists the
//! block. (Responses and removals crossing from one manager to the
//! other's agents, with real routes in network namespaces, are
//! `cluster_delivery`'s.)
//!
//! The agents run their responses as dry runs: they are on this host's
//! loopback. Needs PostgreSQL (`PALISADE_TEST_POSTGRES`; `scripts/test`
//! starts one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_manager::store::{Store, StoreLocation};
use palisade_tests::cluster::ManagerPair;
use palisade_tests::process::{AgentProcess, AgentSetup};
use palisade_tests::{append_lines, eventually, scan_lines};
use serde_json::Value;

const MANAGER: &str = env!("CARGO_BIN_EXE_e2e-manager");
const AGENT: &str = env!("CARGO_BIN_EXE_e2e-agent");
const CTL: &str = env!("CARGO_BIN_EXE_e2e-ctl");
const LIMIT: Duration = Duration::from_secs(90);
/// Lines per agent (20,000 in all), a multiple of 4 * [`CHUNK`].
const LINES: usize = 10_000;
/// Lines per append.
const CHUNK: usize = 250;
const SCANNER: &str = "203.0.113.77";

/// Agent `n`'s line `i` (answered 200: no rule counts it).
fn line(n: usize, i: usize) -> String {
    format!(
        "192.0.2.{n} - - [28/Nov/2026:10:00:01 +0000] \"GET /page{i:05} HTTP/1.1\" 200 303 \"-\" \"curl\""
    )
}

/// An agent of the pair: its log, its responses dry runs, listing `first`
/// then the other manager.
fn agent_config(pair: &ManagerPair, bundle: &Path, log: &Path, b_first: bool) -> PathBuf {
    let setup = AgentSetup {
        files: vec![(log.to_path_buf(), "apache".into())],
        ..AgentSetup::default()
    };
    let config = pair.agent_config(bundle, &setup, "1s").unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    if b_first {
        let (a, b) = (pair.a.addr.to_string(), pair.b.addr.to_string());
        text = text.replace(
            &format!("[\"{a}\", \"{b}\"]"),
            &format!("[\"{b}\", \"{a}\"]"),
        );
        assert!(text.contains(&format!("[\"{b}\", \"{a}\"]")), "{text}");
    }
    text.push_str("\n[active_response]\ndry_run = true\n");
    std::fs::write(&config, text).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(palisade_postgres),
    ignore = "needs PostgreSQL (PALISADE_TEST_POSTGRES; scripts/test)"
)]
async fn two_managers_two_agents_a_crash_every_line_once_and_blocks_seen_from_both() {
    let db = palisade_test_needs::postgres_database();
    let mut pair = ManagerPair::start(Path::new(MANAGER), &db.url, |t| t)
        .await
        .unwrap();
    let store = Store::open(StoreLocation::Postgres(db.url.clone()))
        .await
        .unwrap();
    let mut ids = Vec::new();
    let mut logs = Vec::new();
    let mut agents = Vec::new();
    for (n, name) in [(1, "web01"), (2, "web02")] {
        let (id, bundle) = pair.add_agent(name).await.unwrap();
        let log = bundle.join("access.log");
        std::fs::write(&log, "").unwrap();
        let config = agent_config(&pair, &bundle, &log, n == 2);
        agents.push(AgentProcess::start(Path::new(AGENT), &config).unwrap());
        ids.push(id);
        logs.push(log);
    }
    pair.lease_on(&store, &ids[0], "mgr-a", LIMIT)
        .await
        .unwrap();
    pair.lease_on(&store, &ids[1], "mgr-b", LIMIT)
        .await
        .unwrap();

    // A quarter of the lines in each phase: before the crash, while A is
    // dead, while web01 is on B with A back, after web01 came back to A.
    let quarter = |q: usize| {
        for start in (q * LINES / 4..(q + 1) * LINES / 4).step_by(CHUNK) {
            for (k, log) in logs.iter().enumerate() {
                append_lines(log, (start..start + CHUNK).map(|i| line(k + 1, i))).unwrap();
            }
        }
    };
    quarter(0);
    pair.a.kill();
    quarter(1);
    // web01 moves to B, which takes its lease once A counts as dead.
    pair.lease_on(&store, &ids[0], "mgr-b", LIMIT)
        .await
        .unwrap();
    pair.a.restart().await.unwrap();
    quarter(2);
    // And comes back to A on its own (failback_interval 1 s).
    pair.lease_on(&store, &ids[0], "mgr-a", LIMIT)
        .await
        .unwrap();
    quarter(3);
    for (k, id) in ids.iter().enumerate() {
        let lines: Vec<String> = pair
            .stored(&store, id, LINES, LIMIT)
            .await
            .unwrap()
            .iter()
            .map(|e| String::from_utf8_lossy(&e.line).into_owned())
            .collect();
        let expected: Vec<String> = (0..LINES).map(|i| line(k + 1, i)).collect();
        assert!(
            lines == expected,
            "agent {id}: stored lines differ from the written ones (first difference at {:?})",
            lines.iter().zip(&expected).position(|(a, b)| a != b)
        );
    }
    assert!(
        pair.logs()
            .contains("Took over the agent's lease from another manager"),
        "{}",
        pair.logs()
    );
    pair.lease_on(&store, &ids[1], "mgr-b", LIMIT)
        .await
        .unwrap();

    // A scan seen by web01, on A: blocked, and listed by B.
    append_lines(&logs[0], scan_lines(SCANNER)).unwrap();
    let on_b = pair.ctl_config(&pair.b).unwrap();
    let blocks = eventually(LIMIT, "B to list the scanner's block", || async {
        let out = tokio::process::Command::new(CTL)
            .arg("--config")
            .arg(&on_b)
            .args(["blocks", "--json"])
            .env_remove("PALISADE_CTL_CONFIG")
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let blocks: Value = serde_json::from_slice(&out.stdout)?;
        let listed = blocks.as_array().is_some_and(|b| {
            b.iter()
                .any(|b| b["srcip"] == SCANNER && b["state"] == "active")
        });
        Ok(listed.then_some(blocks))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", pair.logs()))
    .unwrap();
    let block = blocks
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["srcip"] == SCANNER)
        .unwrap();
    assert_eq!(block["agent"], ids[0].as_str(), "{blocks}");
    assert_eq!(block["rule"], 31151, "{blocks}");
    store.close().await;
    drop(agents);
}
