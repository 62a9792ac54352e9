//! Lines appended to a tailed file reach the manager's database exactly
//! once, in order, over mutual TLS, also across a manager restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use palisade_agent::spool::Spool;
use palisade_tests::{AgentHandle, ManagerHandle, append_lines, eventually};

fn lines(range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("line {i:05} GET /index.html 200"))
        .collect()
}

async fn wait_for_count(
    manager: &ManagerHandle,
    agent: &str,
    n: usize,
    limit: Duration,
) -> anyhow::Result<Vec<palisade_manager::store::ArchivedEvent>> {
    let store = manager.store().await?;
    let events = eventually(limit, &format!("{n} archived events"), || async {
        let events = store.archived_events(Some(agent)).await?;
        anyhow::ensure!(
            events.len() <= n,
            "more events than lines written: {}",
            events.len()
        );
        Ok((events.len() == n).then_some(events))
    })
    .await;
    store.close().await;
    events
}

fn assert_exact(
    events: &[palisade_manager::store::ArchivedEvent],
    agent: &str,
    location: &str,
    expected: &[String],
) {
    assert_eq!(events.len(), expected.len());
    let mut last = 0;
    for (event, line) in events.iter().zip(expected) {
        assert_eq!(event.agent_id, agent);
        assert_eq!(event.location, location);
        assert_eq!(String::from_utf8_lossy(&event.line), line.as_str());
        assert!(event.sequence > last, "sequence numbers must increase");
        last = event.sequence;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_lines_arrive_exactly_once_in_order() -> anyhow::Result<()> {
    let manager = ManagerHandle::start().await?;
    let (id, mut config) = manager.add_agent("web01").await?;
    let log = manager.dir.path().join("access.log");
    config.localfiles.push(palisade_agent::config::Localfile {
        location: log.clone(),
        log_format: "apache".into(),
    });
    config.read_from_start = true;
    let mut agent = AgentHandle::start(config);

    let expected = lines(0..10_000);
    for chunk in expected.chunks(1000) {
        append_lines(&log, chunk.iter().cloned())?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events = wait_for_count(&manager, &id, expected.len(), Duration::from_secs(60)).await?;
    assert_exact(&events, &id, &log.display().to_string(), &expected);

    // Nothing more arrives later (no duplicates from resends): the next
    // line written is the next event.
    let mut expected = expected;
    expected.extend(lines(10_000..10_001));
    append_lines(&log, expected[10_000..].iter().cloned())?;
    let events = wait_for_count(&manager, &id, expected.len(), Duration::from_secs(60)).await?;
    assert_exact(&events, &id, &log.display().to_string(), &expected);
    let store = manager.store().await?;
    let record = store.agent(&id).await?.expect("agent");
    assert_eq!(
        record.last_sequence,
        events.last().expect("events").sequence
    );
    assert!(record.first_seen.is_some());
    assert_eq!(record.last_address.as_deref(), Some("127.0.0.1"));
    assert_eq!(record.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_restart_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let mut manager = ManagerHandle::start().await?;
    let (id, mut config) = manager.add_agent("web01").await?;
    let log = manager.dir.path().join("access.log");
    config.localfiles.push(palisade_agent::config::Localfile {
        location: log.clone(),
        log_format: "apache".into(),
    });
    config.read_from_start = true;
    let mut agent = AgentHandle::start(config);

    let expected = lines(0..6_000);
    let writer = {
        let log = log.clone();
        let expected = expected.clone();
        tokio::spawn(async move {
            for chunk in expected.chunks(100) {
                append_lines(&log, chunk.iter().cloned())?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok(())
        })
    };
    // Let some lines through, then stop the manager while the agent reads
    // on: its spool grows (unless the writer is already done).
    wait_for_some(&manager, &id).await?;
    manager.stop().await?;
    let spool = Spool::open(&agent.config.spool_database).await?;
    let at_stop = spool.depth().await?;
    eventually(
        Duration::from_secs(30),
        "lines read while the manager is down",
        || async {
            Ok((spool.depth().await? >= at_stop + 200 || writer.is_finished()).then_some(()))
        },
    )
    .await?;
    spool.close().await;
    manager.restart().await?;
    writer.await??;

    let events = wait_for_count(&manager, &id, expected.len(), Duration::from_secs(90)).await?;
    assert_exact(&events, &id, &log.display().to_string(), &expected);
    agent.stop().await?;
    Ok(())
}

async fn wait_for_some(manager: &ManagerHandle, agent: &str) -> anyhow::Result<()> {
    let store = manager.store().await?;
    eventually(Duration::from_secs(30), "the first events", || async {
        Ok((!store.archived_events(Some(agent)).await?.is_empty()).then_some(()))
    })
    .await?;
    store.close().await;
    Ok(())
}
