//! A scanner's burst of 404s, written to a real access log, travels from
//! the agent to the manager and raises rule 31151 there, stored with its
//! log lines; the control API returns it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use palisade_manager::store::AlertFilter;
use palisade_tests::{AgentHandle, ManagerHandle, append_lines, eventually, scan_lines};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_raises_31151_on_the_manager() -> anyhow::Result<()> {
    let manager = ManagerHandle::start().await?;
    let (id, config, log) = manager.add_access_log_agent("web01").await?;
    let mut agent = AgentHandle::start(config);

    let lines = scan_lines("198.51.100.23");
    // Thirteen 404s are not enough.
    append_lines(&log, lines[..13].iter().cloned())?;
    let store = manager.store().await?;
    let filter = AlertFilter {
        rule_id: Some(31151),
        ..AlertFilter::default()
    };
    eventually(Duration::from_secs(20), "13 archived lines", || async {
        Ok((store.archived_events(Some(&id)).await?.len() == 13).then_some(()))
    })
    .await?;
    assert!(
        store.alerts(&filter).await?.is_empty(),
        "31151 fired before the 14th 404"
    );

    append_lines(&log, lines[13..].iter().cloned())?;
    let alerts = eventually(Duration::from_secs(20), "rule 31151", || async {
        let a = store.alerts(&filter).await?;
        Ok((!a.is_empty()).then_some(a))
    })
    .await?;
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0].alert;
    assert_eq!(alert.level, 10);
    assert_eq!(alert.srcip.as_deref(), Some("198.51.100.23"));
    assert_eq!(alerts[0].origin.agent_id.as_deref(), Some(id.as_str()));
    assert_eq!(alert.location, format!("(web01) any->{}", log.display()));
    assert_eq!(alerts[0].event_sequence, Some(14));
    // The triggering line first, then the correlated ones.
    assert_eq!(alert.full_log, lines[13].as_bytes());
    assert!(
        alert.correlated.len() >= 12,
        "{} lines",
        alert.correlated.len()
    );
    agent.stop().await?;
    Ok(())
}
