//! alerts.json in Wazuh's shape for alerts judged in the Wazuh dialect,
//! on real events of Wazuh 4.14.7's own rules (`shared/corpus/wazuh`,
//! read in place): the field names and nesting Wazuh documents for
//! `rule` (mitre, firedtimes, frequency, the compliance groups apart),
//! `decoder{name, parent}`, `data` (dynamic fields nested), `predecoder`,
//! `full_log` and `location`. Only the few files these events need are
//! loaded, to keep the test cheap; the OSSEC dialect's output keeps its
//! shape.

// Test code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use palisade_engine::alert::Alert;
use palisade_engine::alert_format::{JsonAgent, alert_json};
use palisade_engine::dialect::RulesetDialect;
use palisade_engine::engine::{Engine, EngineConfig, Ruleset};
use palisade_engine::predecode::predecode_in;
use serde_json::{Value, json};

fn corpus() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/wazuh/ruleset");
    assert!(
        dir.is_dir(),
        "the Wazuh corpus is missing: expected {} (see shared/corpus/wazuh/README.md)",
        dir.display()
    );
    dir
}

fn read(dir: &Path, names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| {
            let p = dir.join(n);
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            )
        })
        .collect()
}

/// sshd and JSON (docker) decoders and rules of the Wazuh ruleset.
fn engine() -> Engine {
    let dir = corpus();
    let decoders = read(
        &dir.join("decoders"),
        &["0006-json_decoders.xml", "0310-ssh_decoders.xml"],
    );
    let rules = read(
        &dir.join("rules"),
        &[
            "0010-rules_config.xml",
            "0095-sshd_rules.xml",
            "0560-docker_integration_rules.xml",
        ],
    );
    let ruleset =
        Ruleset::load_sources_in(RulesetDialect::Wazuh, &decoders, &rules, Some(&dir)).unwrap();
    Engine::new(Arc::new(ruleset), EngineConfig::default())
}

fn now() -> Timestamp {
    "2026-12-07T10:00:00Z".parse().unwrap()
}

fn judge(engine: &mut Engine, line: &str) -> Option<Alert> {
    let mut ev = predecode_in(
        line.as_bytes(),
        "/var/log/auth.log",
        "mgr",
        RulesetDialect::Wazuh,
    );
    engine.process(&mut ev, now())
}

fn as_json(alert: &Alert) -> Value {
    let agent = JsonAgent {
        id: "001",
        name: "web01",
        ip: "10.0.0.5",
    };
    let line = alert_json(alert, 9, Some(agent), false, "central", &TimeZone::UTC);
    assert!(!line.contains('\n'), "{line}");
    serde_json::from_str(&line).unwrap()
}

const FAILED: &str =
    "Dec  7 10:00:01 web01 sshd[123]: Failed password for root from 203.0.113.7 port 4242 ssh2";

#[test]
fn an_sshd_alert_has_wazuhs_rule_decoder_and_data() {
    let mut engine = engine();
    let v = as_json(&judge(&mut engine, FAILED).unwrap());
    let rule = &v["rule"];
    assert_eq!(rule["id"], "5760");
    assert_eq!(rule["level"], 5);
    assert_eq!(rule["description"], "sshd: authentication failed.");
    assert_eq!(rule["mail"], false);
    assert_eq!(rule["firedtimes"], 1);
    assert!(rule.get("frequency").is_none());
    // The compliance groups leave `groups` for arrays of their own.
    assert_eq!(
        rule["groups"],
        json!(["syslog", "sshd", "authentication_failed"])
    );
    assert_eq!(rule["pci_dss"], json!(["10.2.4", "10.2.5"]));
    assert_eq!(rule["gdpr"], json!(["IV_35.7.d", "IV_32.2"]));
    assert_eq!(rule["gpg13"], json!(["7.1"]));
    assert_eq!(rule["hipaa"], json!(["164.312.b"]));
    assert_eq!(rule["nist_800_53"], json!(["AU.14", "AC.7"]));
    assert_eq!(rule["tsc"], json!(["CC6.1", "CC6.8", "CC7.2", "CC7.3"]));
    assert_eq!(
        rule["mitre"],
        json!({
            "id": ["T1110.001", "T1021.004"],
            "tactic": ["Credential Access", "Lateral Movement"],
            "technique": ["Password Guessing", "SSH"],
        })
    );
    assert_eq!(v["decoder"], json!({"name": "sshd", "parent": "sshd"}));
    assert_eq!(
        v["data"],
        json!({"srcip": "203.0.113.7", "srcport": "4242", "dstuser": "root"})
    );
    assert_eq!(
        v["predecoder"],
        json!({"program_name": "sshd", "timestamp": "Dec  7 10:00:01", "hostname": "web01"})
    );
    assert_eq!(v["full_log"], FAILED);
    assert_eq!(v["location"], "/var/log/auth.log");
    assert_eq!(
        v["agent"],
        json!({"id": "001", "name": "web01", "ip": "10.0.0.5"})
    );
    assert_eq!(v["manager"], json!({"name": "central"}));
    assert_eq!(v["id"], "1796637600.9");
    assert_eq!(v["timestamp"], "2026-12-07T10:00:00.000+0000");
    // The rule's count goes on with every alert it raises.
    let again = as_json(&judge(&mut engine, FAILED).unwrap());
    assert_eq!(again["rule"]["firedtimes"], 2);
}

#[test]
fn a_frequency_rule_carries_its_frequency_and_the_earlier_lines() {
    let mut engine = engine();
    let mut last = None;
    for _ in 0..8 {
        last = judge(&mut engine, FAILED);
    }
    let v = as_json(&last.unwrap());
    assert_eq!(v["rule"]["id"], "5763", "{v}");
    assert_eq!(v["rule"]["frequency"], 8);
    assert_eq!(v["rule"]["firedtimes"], 1);
    assert_eq!(v["rule"]["mitre"]["technique"], json!(["Brute Force"]));
    assert!(
        v["previous_output"]
            .as_str()
            .unwrap()
            .starts_with("Dec  7 10:00:01 web01 sshd[123]: Failed password")
    );
}

#[test]
fn a_json_event_nests_its_fields_under_data() {
    let mut engine = engine();
    let line = r#"{"integration": "docker", "docker": {"Type": "container", "Action": "create", "Actor": {"ID": "acedf", "Attributes": {"image": "nginx:latest", "name": "web-1"}}, "time": 1766395777}, "tags": ["a", "b"], "gone": null}"#;
    let alert = judge(&mut engine, line).unwrap();
    let v = as_json(&alert);
    assert_eq!(v["rule"]["id"], "87901");
    // $(field) in a Wazuh description is the event's value.
    assert_eq!(v["rule"]["description"], "Docker: Container web-1 created");
    assert_eq!(alert.description, "Docker: Container web-1 created");
    assert_eq!(v["rule"]["groups"], json!(["docker"]));
    assert_eq!(v["rule"]["pci_dss"], json!(["10.2.7"]));
    assert!(v["rule"].get("mitre").is_none());
    assert_eq!(v["decoder"], json!({"name": "json"}));
    assert_eq!(
        v["data"],
        json!({
            "integration": "docker",
            "docker": {
                "Type": "container",
                "Action": "create",
                "Actor": {"ID": "acedf", "Attributes": {"image": "nginx:latest", "name": "web-1"}},
                "time": "1766395777",
            },
            "tags": ["a", "b"],
            // Wazuh's JSON decoder keeps a null as the text "null".
            "gone": "null",
        })
    );
    // <options>no_full_log</options>; no syslog header, no predecoder.
    assert!(v.get("full_log").is_none(), "{v}");
    assert!(v.get("predecoder").is_none(), "{v}");
}

#[test]
fn the_ossec_dialect_keeps_its_shape() {
    let decoders = vec![(
        "d.xml".to_string(),
        r#"<decoder name="app"><prematch>^app: </prematch><regex offset="after_prematch">^(\S+) </regex><order>srcip</order></decoder>"#.to_string(),
    )];
    let rules = vec![(
        "r.xml".to_string(),
        r#"<group name="app,"><rule id="1" level="0" noalert="1"><category>syslog</category><description>Syslog.</description></rule><rule id="100100" level="5"><decoded_as>app</decoded_as><description>From $(srcip)</description><group>pci_dss_10.2.4,</group></rule></group>"#.to_string(),
    )];
    let ruleset = Ruleset::load_sources(&decoders, &rules, None).unwrap();
    let mut engine = Engine::new(Arc::new(ruleset), EngineConfig::default());
    let mut ev = predecode_in(
        b"app: 192.0.2.1 x",
        "/var/log/app",
        "mgr",
        RulesetDialect::Ossec,
    );
    let alert = engine.process(&mut ev, now()).unwrap();
    assert!(alert.wazuh.is_none());
    let v = as_json(&alert);
    assert_eq!(v["rule"]["description"], "From $(srcip)");
    assert_eq!(v["rule"]["groups"], json!(["app", "pci_dss_10.2.4"]));
    assert!(v["rule"].get("firedtimes").is_none());
    assert!(v["rule"].get("pci_dss").is_none());
    assert!(v.get("predecoder").is_none());
    assert_eq!(v["data"], json!({"srcip": "192.0.2.1"}));
}
