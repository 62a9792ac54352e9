//! An agent that lists two manager addresses, `[A, B]`: it connects to
//! the first that answers (B, while A is down), moves back to A on its
//! own once A answers again (`failback_interval`), and moves to B when A
//! goes away; every line arrives exactly once throughout. One real
//! manager serves both addresses through two TCP relays that the test
//! opens and closes, so one store sees every line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use palisade_tests::process::{AgentProcess, AgentSetup, ManagerProcess, write_agent_config};
use palisade_tests::relay::Relay;
use palisade_tests::{append_lines, eventually};

const MANAGER: &str = env!("CARGO_BIN_EXE_e2e-manager");
const AGENT: &str = env!("CARGO_BIN_EXE_e2e-agent");
const LIMIT: Duration = Duration::from_secs(60);

fn lines(tag: &str) -> Vec<String> {
    (0..100)
        .map(|i| format!("{tag} {i:03} GET /index.html 200"))
        .collect()
}

/// Waits until the agent's stream goes through `on` and nothing through
/// `off`.
async fn stream_through(on: &Relay, off: &Relay, what: &str) {
    eventually(LIMIT, what, || async {
        Ok((on.connections() >= 1 && off.connections() == 0).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_fails_over_between_manager_addresses_and_back_losing_nothing() {
    let manager = ManagerProcess::start(Path::new(MANAGER)).await.unwrap();
    let (id, bundle) = manager.add_agent("web01").await.unwrap();
    let mut a = Relay::new(manager.addr).unwrap();
    let mut b = Relay::new(manager.addr).unwrap();
    b.open().await.unwrap();
    let log = manager.dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config = write_agent_config(
        &bundle,
        a.addr,
        &AgentSetup {
            files: vec![(log.clone(), "apache".into())],
            ..AgentSetup::default()
        },
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("address = \"{}\"", a.addr),
        &format!(
            "address = [\"{}\", \"{}\"]\nfailback_interval = \"1s\"",
            a.addr, b.addr
        ),
    );
    std::fs::write(&config, text).unwrap();
    let _agent = AgentProcess::start(Path::new(AGENT), &config).unwrap();
    let store = manager.store().await.unwrap();
    let mut written = Vec::new();
    let mut arrived = |tag: &'static str| {
        let batch = lines(tag);
        written.extend(batch.clone());
        append_lines(&log, batch).unwrap();
        let expected = written.clone();
        let (store, id) = (&store, &id);
        async move {
            eventually(LIMIT, &format!("the {tag} lines"), || async {
                let events = store.archived_events(Some(id)).await?;
                anyhow::ensure!(
                    events.len() <= expected.len(),
                    "{} events stored for {} lines",
                    events.len(),
                    expected.len()
                );
                Ok((events.len() == expected.len()).then_some(events))
            })
            .await
            .unwrap()
        }
    };

    // A does not answer: the agent connects to B.
    stream_through(&b, &a, "the stream through B (A down)").await;
    arrived("first").await;

    // A answers again: the agent leaves B and moves back to A.
    a.open().await.unwrap();
    stream_through(&a, &b, "the stream back on A").await;
    arrived("second").await;

    // A goes away: the agent moves on to B.
    a.close();
    stream_through(&b, &a, "the stream on B after A went away").await;
    let events = arrived("third").await;

    let lines: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.line).into_owned())
        .collect();
    let distinct: HashSet<&String> = lines.iter().collect();
    assert_eq!(distinct.len(), 300, "every line stored once");
    assert_eq!(lines, written, "in the order written");
    let agent_log = std::fs::read_to_string(config.with_extension("out")).unwrap();
    assert!(
        agent_log.contains("An earlier manager address answers again; moving back to it."),
        "{agent_log}"
    );
    // The agent left B before it reached A: the manager never saw two
    // streams at once.
    let manager_log = std::fs::read_to_string(manager.dir.path().join("manager.out")).unwrap();
    assert!(
        !manager_log.contains("A second stream for the agent was refused"),
        "{manager_log}"
    );
    store.close().await;
}
