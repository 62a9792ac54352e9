//! The address policy and the decoders, end to end with the real
//! programs in network namespaces (issue #14): an attacker who writes
//! `from <address> port 22` into the sshd user name gets himself blocked,
//! never the address he named; a block of the web server's gateway is
//! refused by the manager, and one of another host's gateway by that
//! host's agent, and both refusals are listed by `palisadectl refusals`.
//!
//! The sshd lines are written to the agent's tailed syslog file as
//! OpenSSH logs a failed password for an unknown user, with the user name
//! the attacker chose; the addresses are the test's namespaces' own.
//!
//! Needs root (namespaces, routes) and nginx: built as another user the
//! tests are ignored, and a missing program fails them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Duration;

use palisade_tests::programs;
use palisade_tests::site::{ATTACKER, Extras, Policy, SCAN, Site, WEB, wait};

/// The web server's default gateway (on the link to the attacker).
const WEB_GATEWAY: &str = "192.0.2.254";
/// The attacker host's gateway, where the second agent runs.
const ATTACKER_GATEWAY: &str = "192.0.2.253";

fn site() -> Site {
    Site::start_with(
        programs!(),
        &Policy {
            command: "route-null",
            timeout: "600s",
            repeated_offenders: vec![],
            white_list: vec![],
        },
        &Extras {
            rules_id: vec![5712],
            auth_log: true,
            web_gateway: Some(WEB_GATEWAY),
            ..Extras::default()
        },
    )
    .unwrap()
}

fn append(path: &std::path::Path, text: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap();
}

fn json(site: &Site, args: &[&str]) -> serde_json::Value {
    let out = site.ctl(args).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The refusals whose source address is `ip`.
fn refusals_of(site: &Site, ip: &str) -> Vec<serde_json::Value> {
    json(site, &["refusals", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["srcip"] == ip)
        .cloned()
        .collect()
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: network namespaces")]
fn a_crafted_sshd_user_name_blocks_the_real_source_never_the_named_address() {
    palisade_test_needs::root();
    let site = site();
    let auth_log = site.dir.path().join("auth.log");
    let real = ATTACKER.0;
    let now = jiff::Timestamp::now()
        .strftime("%b %e %H:%M:%S")
        .to_string();
    // Ten failed logins (5712 fires on the eighth), each naming a
    // protected address (the gateway, the manager) or an unprotected one
    // where a naive decoder takes the source from.
    let named = [WEB_GATEWAY, WEB.0, "198.51.100.99"];
    let lines: String = (0..10)
        .map(|i| {
            let forged = named[i % named.len()];
            format!(
                "{now} web01 sshd[{pid}]: Failed password for invalid user admin from {forged} port 22 ssh2 from {real} port {port} ssh2\n",
                pid = 4000 + i,
                port = 50000 + i
            )
        })
        .collect();
    append(&auth_log, &lines);

    wait(Duration::from_secs(10), "the real source's block", || {
        site.is_blocked("route-null", real)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", site.logs()))
    .unwrap();
    let blocks = json(&site, &["blocks", "--json"]);
    let blocks = blocks.as_array().unwrap();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0]["srcip"], real);
    assert_eq!(blocks[0]["rule"], 5712);
    let alerts = json(&site, &["alerts", "--rule", "5712", "--json"]);
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["srcip"] == real),
        "{alerts}"
    );
    for forged in named {
        assert!(!site.is_blocked("route-null", forged).unwrap(), "{forged}");
        // A steered decoder would have asked to block it (and the policy
        // would have refused the protected ones): no refusal either.
        assert!(refusals_of(&site, forged).is_empty(), "{forged}");
    }
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: network namespaces")]
fn blocks_of_a_gateway_are_refused_by_the_manager_and_by_the_agent_and_listed() {
    palisade_test_needs::root();
    let site = site();

    // A scan that comes from the web server's gateway, as nginx logs it
    // (e.g. behind a NAT): rule 31151 fires, the manager refuses.
    let lines: String = SCAN
        .iter()
        .map(|path| format!("{WEB_GATEWAY} - - [28/Nov/2026:10:00:00 +0000] \"GET {path} HTTP/1.1\" 404 153 \"-\" \"ZmEu\"\n"))
        .collect();
    append(&site.nginx.access_log, &lines);
    wait(Duration::from_secs(10), "the automatic refusal", || {
        Ok(!refusals_of(&site, WEB_GATEWAY).is_empty())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", site.logs()))
    .unwrap();
    let refusal = &refusals_of(&site, WEB_GATEWAY)[0];
    assert_eq!(refusal["rule"], 31151, "{refusal}");
    assert_eq!(
        refusal["reason"],
        format!("{WEB_GATEWAY} is a gateway of this host"),
        "{refusal}"
    );

    // By hand: refused at once, and listed too.
    let out = site
        .ctl(&["-b", WEB_GATEWAY, "-f", "route-null600", "-u", "001"])
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a gateway of this host"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(refusals_of(&site, WEB_GATEWAY).len(), 2);
    assert!(!site.is_blocked("route-null", WEB_GATEWAY).unwrap());

    // The attacker's host has its own gateway, which the manager does not
    // know: its agent refuses, and the manager lists that refusal.
    site.attacker
        .ip(&["route", "add", "default", "via", ATTACKER_GATEWAY])
        .unwrap();
    let (second, _child) = site.start_second_agent().unwrap();
    let out = site
        .ctl(&["-b", ATTACKER_GATEWAY, "-f", "route-null600", "-u", &second])
        .unwrap();
    assert!(
        out.status.success(),
        "the manager sends it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait(Duration::from_secs(10), "the agent's refusal", || {
        Ok(!refusals_of(&site, ATTACKER_GATEWAY).is_empty())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", site.logs()))
    .unwrap();
    let refusal = &refusals_of(&site, ATTACKER_GATEWAY)[0];
    assert_eq!(refusal["agent"], second.as_str(), "{refusal}");
    assert_eq!(
        refusal["reason"],
        format!("agent {second}: refused: {ATTACKER_GATEWAY} is a gateway of this host"),
        "{refusal}"
    );
    assert!(
        !site
            .is_null_routed_on_second_host(ATTACKER_GATEWAY)
            .unwrap()
    );
    let table = site.ctl(&["refusals"]).unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(ATTACKER_GATEWAY), "{table}");
    assert!(table.contains(WEB_GATEWAY), "{table}");
}
