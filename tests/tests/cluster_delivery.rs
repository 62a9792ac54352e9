//! Responses and removals across two managers on one PostgreSQL
//! database (#16 item 4), end to end: real managers, real agents, real
//! routes in network namespaces, nginx and an attacker
//! (`palisade_tests::two_managers`). Agent `web01` is held by manager A,
//! `web02` by manager B.
//!
//! - `palisadectl -b IP -f route-null600 -a` sent to A installs the route
//!   on B's agent (B is woken by A's NOTIFY and sends what is pending);
//! - `unblock --all` sent to B lifts it on A's agent;
//! - a scan seen by A's agent raises rule 31151 on A, whose response
//!   (`location = "all"`) reaches B's agent;
//! - `agent remove` run on B's host ends web01's stream on A.
//!
//! The elapsed times are printed, not asserted (the tests wait on
//! conditions). Needs root (network namespaces), nginx and PostgreSQL:
//! otherwise ignored with the reason, or failed under
//! `PALISADE_REQUIRE_ROOT=1` (see palisade-test-needs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use palisade_tests::netns::http_get;
use palisade_tests::programs;
use palisade_tests::site::{ATTACKER, SCAN, WEB, wait};
use palisade_tests::two_managers::{A, B, RESPONSE, TwoManagers};

/// Generous: the managers and agents are debug builds on a shared machine.
const LIMIT: Duration = Duration::from_secs(20);

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[cfg_attr(
    not(all(palisade_root, palisade_postgres)),
    ignore = "needs root (network namespaces) and PostgreSQL (PALISADE_TEST_POSTGRES; scripts/test)"
)]
fn responses_and_removals_reach_the_agents_of_the_other_manager() {
    palisade_test_needs::root();
    // Declared first: dropped after the managers.
    let db = palisade_test_needs::postgres_database();
    let cluster = TwoManagers::start(programs!(), &db.socket_url()).unwrap();
    let fail = |e: anyhow::Error| anyhow::anyhow!("{e}\n{}", cluster.logs());
    let [web01, web02] = cluster.agent_ids.clone();

    // An operator's block on every agent, asked of A.
    let ip = "198.51.100.7";
    let asked = Instant::now();
    let said = ok(cluster.ctl(A, &["-b", ip, "-f", RESPONSE, "-a"]).unwrap());
    wait(LIMIT, "the route on B's agent", || {
        cluster.is_null_routed(B, ip)
    })
    .map_err(fail)
    .unwrap();
    eprintln!(
        "-b -a asked of A: route on B's agent after {:?}; palisadectl said: {said:?}",
        asked.elapsed()
    );
    wait(LIMIT, "the route on A's agent", || {
        cluster.is_null_routed(A, ip)
    })
    .map_err(fail)
    .unwrap();
    // Each command was sent once, by the manager holding its agent, and
    // carried out.
    wait(LIMIT, "both blocks confirmed", || {
        cluster.with_store(async |s| {
            let blocks = s.blocks(Some(ip), None).await?;
            Ok(blocks.len() == 2 && blocks.iter().all(|b| b.state == "active"))
        })
    })
    .map_err(fail)
    .unwrap();
    // B logs the delivery after its send returns, which may be after the
    // agent's result is recorded.
    wait(LIMIT, "B's log of the delivery", || {
        Ok(cluster.managers[B]
            .output()
            .contains("Active response of another manager delivered."))
    })
    .map_err(fail)
    .unwrap();

    // Lifted everywhere, asked of B.
    let asked = Instant::now();
    let said = ok(cluster.ctl(B, &["unblock", ip, "--all"]).unwrap());
    wait(LIMIT, "the route gone on A's agent", || {
        Ok(!cluster.is_null_routed(A, ip)?)
    })
    .map_err(fail)
    .unwrap();
    eprintln!(
        "unblock --all asked of B: route gone on A's agent after {:?}; palisadectl said: {said:?}",
        asked.elapsed()
    );
    wait(LIMIT, "the route gone on B's agent", || {
        Ok(!cluster.is_null_routed(B, ip)?)
    })
    .map_err(fail)
    .unwrap();

    // A scan seen by A's agent: A decides, B's agent blocks too.
    let scanner = ATTACKER.0;
    let url = |path: &str| format!("http://{}{path}", WEB.0);
    let scanned = Instant::now();
    for path in SCAN {
        assert_eq!(
            http_get(&cluster.attacker, &url(path), Duration::from_secs(2)),
            Some(404),
            "{path}"
        );
    }
    wait(LIMIT, "the scanner blocked on B's agent", || {
        cluster.is_null_routed(B, scanner)
    })
    .map_err(fail)
    .unwrap();
    eprintln!(
        "rule 31151 on A: route on B's agent {:?} after the scan",
        scanned.elapsed()
    );
    wait(LIMIT, "the scanner blocked on A's agent", || {
        cluster.is_null_routed(A, scanner)
    })
    .map_err(fail)
    .unwrap();
    let blocks = cluster
        .with_store(async |s| Ok(s.blocks(Some(scanner), None).await?))
        .unwrap();
    let mut agents: Vec<&str> = blocks.iter().map(|b| b.agent_id.as_str()).collect();
    agents.sort_unstable();
    assert_eq!(agents, [web01.as_str(), web02.as_str()], "{blocks:?}");
    assert!(
        blocks.iter().all(|b| b.rule_id == Some(31151)),
        "{blocks:?}"
    );

    // web01 (held by A) removed on B's host: A ends its stream.
    let removed = Instant::now();
    ok(cluster
        .manager_command(B, &["agent", "remove", &web01])
        .unwrap());
    wait(LIMIT, "web01's stream ended on A", || {
        Ok(cluster.managers[A]
            .output()
            .contains("Agent removed; its open stream was ended."))
    })
    .map_err(fail)
    .unwrap();
    eprintln!(
        "agent remove on B: web01's stream on A ended after {:?}",
        removed.elapsed()
    );
    // B's agent is untouched.
    assert!(
        !cluster.managers[B]
            .output()
            .contains("Agent removed; its open stream was ended."),
        "{}",
        cluster.logs()
    );
}
