//! Sizes an attacker chooses, against the real daemons: nginx escapes a
//! big request header into an access-log line of tens of kilobytes, and a
//! compromised agent can send multi-megabyte lines. The lines keep
//! flowing and alerting (batches by bytes below the manager's announced
//! limit, lines cut and flagged), and the manager's memory stays bounded
//! while another agent is still served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use palisade_tests::measure::status_kib;
use palisade_tests::process::{AgentProcess, AgentSetup, ManagerProcess, write_agent_config};
use palisade_tests::raw_agent::{Credentials, RawAgent, event};
use palisade_tests::{AgentHandle, ManagerHandle, append_lines, db_number, eventually, scan_lines};

const MANAGER: &str = env!("CARGO_BIN_EXE_e2e-manager");
const AGENT: &str = env!("CARGO_BIN_EXE_e2e-agent");

/// An access-log line as nginx writes a request with a big header: the
/// user agent escaped (`"` as `\x22`), about `size` bytes long.
fn escaped_header_line(ip: &str, n: usize, status: u16, size: usize) -> String {
    let header = "\\x22\\x5C".repeat(size / 8);
    format!(
        "{ip} - - [28/Nov/2026:10:00:01 +0000] \"GET /item/{n} HTTP/1.1\" {status} 612 \"-\" \"Mozilla/5.0 {header}\""
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_70_kb_escaped_access_lines_keeps_flowing_and_alerting() {
    let manager = ManagerHandle::start().await.unwrap();
    let (id, config, log) = manager.add_access_log_agent("web01").await.unwrap();
    // 150 requests answered 404, with headers that make 70 KB lines:
    // cut at the agent's 64 KiB, about 9.6 MiB in all, more than the
    // manager's message limit in one batch of 500 (the stall of #14).
    let long: Vec<String> = (0..150)
        .map(|n| escaped_header_line("198.51.100.20", n, 404, 70_000))
        .collect();
    append_lines(&log, long).unwrap();
    // Then a scan, after them: it must get through and alert.
    append_lines(&log, scan_lines("203.0.113.9")).unwrap();
    let _agent = AgentHandle::start(config);

    let store = manager.store().await.unwrap();
    let events = eventually(Duration::from_secs(120), "every line stored", || async {
        let events = store.archived_events(Some(&id)).await?;
        Ok((events.len() == 150 + 14).then_some(events))
    })
    .await
    .unwrap();
    for e in &events[..150] {
        assert!(e.truncated, "a 70 KB line is flagged cut");
        assert_eq!(e.line.len(), 64 << 10);
    }
    assert!(events[150..].iter().all(|e| !e.truncated));
    let alerts = eventually(Duration::from_secs(30), "the scan's alert", || async {
        let alerts = store
            .alerts(&palisade_manager::store::AlertFilter {
                agent_id: Some(id.clone()),
                limit: 1000,
                ..Default::default()
            })
            .await?;
        Ok(alerts
            .iter()
            .any(|a| a.alert.rule_id == 31151)
            .then_some(alerts))
    })
    .await
    .unwrap();
    // Each long line alerts (a 4xx, 31101, or the scan it makes, 31151),
    // decoded from its cut head.
    let from = |ip: &str| {
        alerts
            .iter()
            .filter(|a| a.alert.srcip.as_deref() == Some(ip))
            .map(|a| a.alert.rule_id)
            .collect::<Vec<_>>()
    };
    let long_alerts = from("198.51.100.20");
    assert_eq!(long_alerts.len(), 150, "{long_alerts:?}");
    assert!(long_alerts.iter().all(|r| [31101, 31151].contains(r)));
    assert!(long_alerts.contains(&31151));
    assert!(from("203.0.113.9").contains(&31151));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_4_mb_lines_leave_the_manager_bounded_and_another_agent_served() {
    let manager = ManagerProcess::start(Path::new(MANAGER)).await.unwrap();
    let pid = manager.pid().unwrap();

    // Another agent, a real process, tailing its own access log.
    let (other, other_bundle) = manager.add_agent("web02").await.unwrap();
    let other_log = manager.dir.path().join("web02-access.log");
    std::fs::write(&other_log, "").unwrap();
    let other_config = write_agent_config(
        &other_bundle,
        manager.addr,
        &AgentSetup {
            files: vec![(other_log.clone(), "apache".into())],
            ..AgentSetup::default()
        },
    )
    .unwrap();
    let _other_agent = AgentProcess::start(Path::new(AGENT), &other_config).unwrap();
    let db = manager
        .config
        .database
        .sqlite_path()
        .expect("an SQLite store")
        .to_path_buf();
    let count = |agent: String| {
        let db = db.clone();
        async move {
            db_number(
                &db,
                "SELECT CAST(COALESCE(SUM(events), 0) AS BIGINT) FROM archive WHERE agent_id = $1",
                &agent,
            )
            .await
            .unwrap()
        }
    };
    append_lines(&other_log, [escaped_header_line("192.0.2.1", 0, 200, 100)]).unwrap();
    eventually(Duration::from_secs(60), "web02 connected", || async {
        Ok((count(other.clone()).await == 1).then_some(()))
    })
    .await
    .unwrap();
    let rss_before = status_kib(pid, "VmRSS:");

    // A compromised agent, with its real certificate: 500 lines of 4 MB
    // that alert (404s: 31101, and the scan they make, 31151).
    let (attacker, bundle) = manager.add_agent("attacker").await.unwrap();
    let creds = Credentials::bundle(&bundle, manager.addr);
    let (mut raw, welcome) = RawAgent::hello(&creds, "attacker-spool").await.unwrap();
    let padding = "A".repeat(4_000_000);
    let line = format!(
        "203.0.113.66 - - [28/Nov/2026:10:00:01 +0000] \"GET / HTTP/1.1\" 404 1 \"-\" \"{padding}\""
    );
    let mut other_sent = 1;
    let mut other_during = Vec::new();
    for seq in 1..=500u64 {
        let acked = raw
            .send_batch(vec![event(seq, line.clone())], 0)
            .await
            .unwrap();
        assert_eq!(acked, seq);
        if seq % 50 == 0 {
            // The other agent meanwhile.
            append_lines(
                &other_log,
                [escaped_header_line("192.0.2.1", other_sent, 200, 100)],
            )
            .unwrap();
            other_sent += 1;
            other_during.push(count(other.clone()).await);
        }
    }
    let (rss_after, hwm) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
    eventually(Duration::from_secs(60), "web02's lines", || async {
        Ok((count(other.clone()).await == other_sent as i64).then_some(()))
    })
    .await
    .unwrap();
    let stored = count(attacker.clone()).await;
    let store = manager.store().await.unwrap();
    let cut = store
        .archived_events(Some(&attacker))
        .await
        .unwrap()
        .iter()
        .filter(|e| e.truncated && e.line.len() == 65536)
        .count();
    store.close().await;
    let alerts = db_number(
        &db,
        "SELECT COUNT(*) FROM alerts WHERE agent_id = $1 AND rule_id IN (31101, 31151)",
        &attacker,
    )
    .await
    .unwrap();
    eprintln!(
        "4 MB attack: manager VmRSS {rss_before} KiB before, {rss_after} KiB after, \
         VmHWM {hwm} KiB; attacker events stored {stored} (cut {cut}), alerts {alerts}; \
         web02 events stored during the attack {other_during:?}, batch limit {} bytes",
        welcome.max_batch_bytes
    );
    assert_eq!(stored, 500);
    assert_eq!(cut, 500, "every line cut at max_line_length and flagged");
    assert_eq!(alerts, 500);
    assert!(
        hwm < 300 * 1024,
        "the manager peaked at {hwm} KiB (before: {rss_before} KiB)"
    );
}
