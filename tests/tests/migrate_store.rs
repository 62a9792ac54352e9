//! Growing out of SQLite, end to end: a manager process on its SQLite
//! store with agents, an alert, a queued response and a token is stopped;
//! `palisade-manager migrate-store --to postgres://...` copies the store;
//! the manager starts again on PostgreSQL with `[storage] database`
//! changed as `migrate-store` says, and every agent reconnects with its
//! existing certificate and carries on from its stored sequence: the
//! lines written while the manager was down are stored once, after the
//! ones copied.
//!
//! Needs PostgreSQL (the server `PALISADE_TEST_POSTGRES` names;
//! `scripts/test` starts one): otherwise ignored with the reason, or
//! failed under `PALISADE_REQUIRE_ROOT=1` (see palisade-test-needs). The
//! response is for an agent that never connects, so nothing is installed
//! on this host.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_manager::config::ManagerConfig;
use palisade_manager::store::{AlertFilter, Store};
use palisade_tests::process::{AgentProcess, AgentSetup, ManagerProcess, write_agent_config};
use palisade_tests::{append_lines, eventually, scan_lines, with_logall};

const MANAGER: &str = env!("CARGO_BIN_EXE_e2e-manager");
const AGENT: &str = env!("CARGO_BIN_EXE_e2e-agent");
const CTL: &str = env!("CARGO_BIN_EXE_e2e-ctl");

/// Agent `n`'s line `i` (answered 200: no rule counts it).
fn lines(n: usize, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("192.0.2.{n} - - [28/Nov/2026:10:00:01 +0000] \"GET /page{i:06} HTTP/1.1\" 200 303 \"-\" \"curl\""))
        .collect()
}

/// Whether `palisadectl agent ID --json` says Active.
fn active(manager: &ManagerProcess, id: &str) -> bool {
    let out = manager
        .ctl(Path::new(CTL), &["agent", id, "--json"])
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|v| v["status"] == "Active")
}

/// Waits until agent `id` has `n` events archived; returns their
/// sequences and lines.
async fn archived(store: &Store, id: &str, n: usize) -> (Vec<u64>, Vec<String>) {
    let events = eventually(
        Duration::from_secs(60),
        &format!("{n} events of agent {id}"),
        || async {
            let e = store.archived_events(Some(id)).await?;
            Ok((e.len() >= n).then_some(e))
        },
    )
    .await
    .unwrap();
    (
        events.iter().map(|e| e.sequence).collect(),
        events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.line).into_owned())
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(palisade_postgres),
    ignore = "needs PostgreSQL (PALISADE_TEST_POSTGRES; scripts/test)"
)]
async fn a_sqlite_store_moved_to_postgresql_keeps_agents_alerts_responses_and_tokens() {
    let db = palisade_test_needs::postgres_database();
    // The scan's response goes to agent 003, which never connects: it
    // stays queued, and nothing touches this host's routes.
    let mut manager = ManagerProcess::start_with(Path::new(MANAGER), |toml| {
        let toml = with_logall(toml);
        let moved = toml.replacen(
            "location = \"local\"\n",
            "location = \"defined-agent\"\nagent_id = \"003\"\n",
            1,
        );
        assert_ne!(moved, toml, "init wrote no local active response");
        moved
    })
    .await
    .unwrap();
    assert!(manager.config.database.sqlite_path().is_some());

    let mut agents = Vec::new();
    let mut logs: Vec<PathBuf> = Vec::new();
    for (n, name) in [(1, "web01"), (2, "web02")] {
        let (id, bundle) = manager.add_agent(name).await.unwrap();
        assert_eq!(id, format!("00{n}"));
        let log = manager.dir.path().join(format!("access-{n}.log"));
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
        agents.push(AgentProcess::start(Path::new(AGENT), &config).unwrap());
        logs.push(log);
    }
    manager.add_agent("web03").await.unwrap();
    let token = std::process::Command::new(MANAGER)
        .args(["token", "create", "--ttl", "1d", "--name", "web04", "-c"])
        .arg(&manager.config.source)
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );

    append_lines(&logs[0], lines(1, 0..100)).unwrap();
    append_lines(&logs[0], scan_lines("203.0.113.50")).unwrap();
    append_lines(&logs[1], lines(2, 0..100)).unwrap();
    let before = manager.store().await.unwrap();
    archived(&before, "001", 100 + scan_lines("x").len()).await;
    archived(&before, "002", 100).await;
    eventually(Duration::from_secs(30), "the scan's response", || async {
        Ok((!before.pending_responses("003").await?.is_empty()).then_some(()))
    })
    .await
    .unwrap();
    let alerts_before = before.alerts(&AlertFilter::default()).await.unwrap();
    assert!(alerts_before.iter().any(|a| a.alert.rule_id == 31151));
    let tokens_before = before.tokens().await.unwrap();
    assert_eq!(tokens_before.len(), 1);
    before.close().await;

    // Down for the move; the agents keep reading into their spools.
    manager.kill();
    append_lines(&logs[0], lines(1, 100..200)).unwrap();
    append_lines(&logs[1], lines(2, 100..200)).unwrap();
    let out = std::process::Command::new(MANAGER)
        .args(["migrate-store", "--to", &db.url, "-c"])
        .arg(&manager.config.source)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("Now set, in"), "{said}");
    assert!(
        said.contains(&format!("database = \"{}\"", db.url)),
        "{said}"
    );

    // What migrate-store says to change, changed.
    let text = std::fs::read_to_string(&manager.config.source).unwrap();
    let text = text.replacen(
        "database = \"palisade.db\"",
        &format!("database = \"{}\"", db.url),
        1,
    );
    std::fs::write(&manager.config.source, &text).unwrap();
    manager.config = ManagerConfig::load(&manager.config.source).unwrap();
    assert!(manager.config.database.sqlite_path().is_none());
    manager.restart().await.unwrap();

    for id in ["001", "002"] {
        eventually(
            Duration::from_secs(60),
            &format!("agent {id} Active on PostgreSQL"),
            || async { Ok(active(&manager, id).then_some(())) },
        )
        .await
        .unwrap();
    }
    append_lines(&logs[0], lines(1, 200..300)).unwrap();
    append_lines(&logs[1], lines(2, 200..300)).unwrap();
    let after = manager.store().await.unwrap();
    let scan = scan_lines("203.0.113.50");
    let (sequences, texts) = archived(&after, "001", 300 + scan.len()).await;
    assert_eq!(
        sequences,
        (1..=(300 + scan.len() as u64)).collect::<Vec<_>>()
    );
    let mut expected = lines(1, 0..100);
    expected.extend(scan);
    expected.extend(lines(1, 100..300));
    assert_eq!(texts, expected);
    let (sequences, texts) = archived(&after, "002", 300).await;
    assert_eq!(sequences, (1..=300).collect::<Vec<_>>());
    assert_eq!(texts, lines(2, 0..300));

    let alerts_after = after.alerts(&AlertFilter::default()).await.unwrap();
    let ids = |alerts: &[palisade_manager::store::StoredAlert]| {
        alerts.iter().map(|a| a.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(&alerts_after), ids(&alerts_before));
    let pending = after.pending_responses("003").await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].request.srcip.as_deref(), Some("203.0.113.50"));
    let tokens_after = after.tokens().await.unwrap();
    assert_eq!(tokens_after.len(), tokens_before.len());
    assert_eq!(tokens_after[0].name, tokens_before[0].name);
    // Operators' tools work against the moved store.
    let list = manager.ctl(Path::new(CTL), &["-l"]).unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(listing.contains("web01"), "{listing}");
    assert!(listing.contains("web03"), "{listing}");
    after.close().await;
    drop(agents);
}
