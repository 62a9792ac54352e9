//! The manager on PostgreSQL, end to end: a real nginx, a real agent and a
//! real manager whose `[storage] database` is a PostgreSQL URL. Every
//! access-log line is archived exactly once, the scan raises rule 31151's
//! alert, and the block is recorded and installed on the web server.
//!
//! Needs root (network namespaces), nginx and PostgreSQL (the server
//! `PALISADE_TEST_POSTGRES` names; `scripts/test` starts one with
//! `scripts/pg-test-cluster`): otherwise ignored with the reason, or failed
//! under `PALISADE_REQUIRE_ROOT=1` (see palisade-test-needs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use palisade_manager::store::AlertFilter;
use palisade_tests::netns::http_get;
use palisade_tests::programs;
use palisade_tests::site::{Extras, Policy, SCAN, Site, wait};

#[test]
#[cfg_attr(
    not(all(palisade_root, palisade_postgres)),
    ignore = "needs root (network namespaces) and PostgreSQL (PALISADE_TEST_POSTGRES; scripts/test)"
)]
fn a_manager_on_postgresql_stores_each_line_once_alerts_and_blocks() {
    palisade_test_needs::root();
    let db = palisade_test_needs::postgres_database();
    let policy = Policy {
        command: "route-null",
        timeout: "600s",
        repeated_offenders: vec![],
        white_list: vec![],
    };
    let extras = Extras {
        database: Some(db.socket_url()),
        ..Extras::default()
    };
    let site = Site::start_with(programs!(), &policy, &extras).unwrap();
    assert!(
        site.config.database.sqlite_path().is_none(),
        "the manager is not on PostgreSQL"
    );
    let ip = site.attacker_ip(false);
    for n in 0..20 {
        let page = format!("/?page={n}");
        assert_eq!(
            http_get(
                &site.attacker,
                &site.url(false, &page),
                Duration::from_secs(2)
            ),
            Some(200)
        );
    }
    for path in SCAN {
        assert_eq!(
            http_get(
                &site.attacker,
                &site.url(false, path),
                Duration::from_secs(2)
            ),
            Some(404),
            "{path}"
        );
    }
    wait(Duration::from_secs(10), "the block", || {
        site.is_blocked("route-null", ip)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", site.logs()))
    .unwrap();

    let lines = std::fs::read_to_string(&site.nginx.access_log)
        .unwrap()
        .lines()
        .count();
    // Every request, and any the site made to see nginx up.
    assert!(lines >= 20 + SCAN.len(), "nginx logged {lines} requests");
    wait(Duration::from_secs(10), "every line archived", || {
        site.with_store(async |s| Ok(s.archived_events(Some(&site.agent_id)).await?.len() >= lines))
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", site.logs()))
    .unwrap();
    let archived = site
        .with_store(async |s| Ok(s.archived_events(Some(&site.agent_id)).await?))
        .unwrap();
    let mut sequences: Vec<u64> = archived.iter().map(|e| e.sequence).collect();
    sequences.sort_unstable();
    sequences.dedup();
    assert_eq!(sequences.len(), archived.len(), "a line stored twice");
    assert_eq!(archived.len(), lines, "each line once");

    let alerts = site
        .with_store(async |s| {
            Ok(s.alerts(&AlertFilter {
                rule_id: Some(31151),
                ..AlertFilter::default()
            })
            .await?)
        })
        .unwrap();
    assert!(!alerts.is_empty(), "no scan alert\n{}", site.logs());
    assert_eq!(alerts[0].alert.srcip.as_deref(), Some(ip));
    assert_eq!(
        alerts[0].origin.agent_id.as_deref(),
        Some(site.agent_id.as_str())
    );
    let blocks = site
        .with_store(async |s| Ok(s.blocks(Some(ip), None).await?))
        .unwrap();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0].agent_id, site.agent_id);
    assert_eq!(blocks[0].response, policy.name());
    drop(site);
}
