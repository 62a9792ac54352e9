//! `logtest` with the real rule phase over Palisade's ruleset: Phase 3 as
//! ossec-logtest prints it, `-U` exit codes, and `-a` (alerts only, state
//! kept, alerts.log layout).

// Test and measurement code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use palisade_engine::default_ruleset;
use palisade_engine::engine::{EngineConfig, Ruleset};
use palisade_engine::logtest::{Logtest, UnitTest};
use palisade_engine::logtest_rules::{AlertsOnly, EngineRulePhase};

fn rs() -> Arc<Ruleset> {
    Arc::new(default_ruleset::load().unwrap())
}

fn now() -> Timestamp {
    "2024-03-13T10:00:00Z".parse().unwrap()
}

const FAILED: &[u8] =
    b"Nov 14 22:13:20 web01 sshd[2232]: Failed password for root from 203.0.113.99 port 40022 ssh2";

#[test]
fn phase_3_text_and_unit_test_exit_code() {
    let rs = rs();
    let mut phase = EngineRulePhase::new(Arc::clone(&rs), EngineConfig::default(), now());
    let mut lt = Logtest::new(&rs.decoders, "manager")
        .with_rules(&mut phase)
        .with_unit_test(UnitTest::parse("5716:5:sshd").unwrap());
    let r = lt.line(FAILED).unwrap();
    assert!(
        r.text.ends_with(
            "\n**Phase 3: Completed filtering (rules).\n\
             \x20      Rule id: '5716'\n\
             \x20      Level: '5'\n\
             \x20      Description: 'sshd: a login attempt failed.'\n\
             **Alert to be generated.\n\n\n"
        ),
        "{}",
        r.text
    );
    assert_eq!(lt.exit_code(), 0);
    // A level-0 rule is shown, without an alert.
    let r = lt
        .line(br#"203.0.113.7 - - [10/Mar/2024:13:55:36 +0000] "GET / HTTP/1.1" 200 5 "-" "x""#)
        .unwrap();
    assert!(
        r.text
            .contains("       Rule id: '31100'\n       Level: '0'\n")
    );
    assert!(!r.text.contains("**Alert to be generated."));
    assert_eq!(lt.exit_code(), 3, "decoder differs from the -U expectation");
}

#[test]
fn logtest_keeps_state_across_lines() {
    let rs = rs();
    let mut phase = EngineRulePhase::new(Arc::clone(&rs), EngineConfig::default(), now());
    let mut lt = Logtest::new(&rs.decoders, "manager").with_rules(&mut phase);
    let mut last = None;
    for i in 0..8 {
        let line = format!(
            "Nov 14 22:13:2{i} web01 sshd[2232]: Failed password for root from 203.0.113.99 port 4002{i} ssh2"
        );
        last = lt
            .line(line.as_bytes())
            .and_then(|r| r.outcome)
            .map(|o| o.id);
    }
    assert_eq!(last, Some(5720));
}

#[test]
fn alerts_only_mode_prints_alerts_log_entries() {
    let rs = rs();
    let phase = EngineRulePhase::new(Arc::clone(&rs), EngineConfig::default(), now());
    let mut a = AlertsOnly::new(phase, "manager");
    let mut out = Vec::new();
    let mut ids = Vec::new();
    let mut t = now();
    // A 200 (silent), then 14 scanner 404s.
    let silent = br#"198.51.100.23 - - [13/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "Mozilla/5.0""#;
    assert!(a.line(silent, t, &mut out).unwrap().is_none());
    assert!(out.is_empty());
    for i in 1..=14 {
        t += SignedDuration::from_secs(2);
        let line = format!(
            r#"198.51.100.23 - - [13/Mar/2024:10:00:{:02} +0000] "GET /p{i}/scripts/setup.php HTTP/1.1" 404 300 "-" "ZmEu""#,
            i * 2
        );
        let before = out.len();
        let alert = a.line(line.as_bytes(), t, &mut out).unwrap().unwrap();
        ids.push(alert.rule_id);
        let entry = String::from_utf8_lossy(&out[before..]).into_owned();
        // The alert id's offset is where the entry starts in the output.
        assert!(
            entry.starts_with(&format!("** Alert {}.{before}:", t.as_second())),
            "{entry}"
        );
    }
    assert_eq!(&ids[..13], &[31184; 13]);
    assert_eq!(ids[13], 31151);
    let text = String::from_utf8(out).unwrap();
    let last = &text[text.rfind("** Alert").unwrap()..];
    let lines: Vec<&str> = last.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "** Alert {}.{}: mail  - web,accesslog,web_scan,recon,",
            t.as_second(),
            text.rfind("** Alert").unwrap()
        )
    );
    assert_eq!(lines[1], "2024 Mar 13 10:00:28 manager->stdin");
    assert_eq!(
        lines[2],
        "Rule: 31151 (level 10) -> 'Many 4xx answers to one address in 90 seconds (web scan).'"
    );
    assert_eq!(lines[3], "Src IP: 198.51.100.23");
    assert!(lines[4].contains("/p14/scripts/setup.php"));
    // At most 11 earlier lines, newest first, then the blank separator.
    assert_eq!(lines.len(), 5 + 11 + 1);
    assert_eq!(lines[16], "");
    assert!(lines[5].contains("/p13/"));
    assert!(last.ends_with("\n\n"));
    // The first entry: a scanner 404, level 6, no mail flag.
    assert!(text.starts_with(&format!(
        "** Alert {}.0: - web,accesslog,web_scan,recon,web_4xx,\n",
        (now() + SignedDuration::from_secs(2)).as_second()
    )));
}
