//! `logtest -v`: the rule debugging that `ossec-logtest -v` prints between
//! Phase 2 and Phase 3 (`rules.c`, `OS_CheckIfRuleMatch` under `TESTRULE`):
//! `**Rule debugging:`, then `    Trying rule: <id> - <description>` for
//! every rule whose conditions are checked (top-level rules of the event's
//! category only), `       *Rule <id> matched.` when they all held and
//! `       *Trying child rules.` before its children. Also: the traced
//! judge gives the same verdicts and state changes as the plain one, and
//! without `-v` nothing of it is printed.

// Test code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use palisade_engine::default_ruleset;
use palisade_engine::engine::{Engine, EngineConfig, Ruleset, TraceLine};
use palisade_engine::logtest::Logtest;
use palisade_engine::logtest_rules::EngineRulePhase;
use palisade_engine::predecode::predecode;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/ossec");

fn ossec(rel: &str) -> Arc<Ruleset> {
    Arc::new(Ruleset::load_ossec_etc(&Path::new(CORPUS).join(rel)).unwrap())
}

fn now() -> Timestamp {
    "2024-03-13T10:00:00Z".parse().unwrap()
}

const INVALID: &[u8] = b"Nov 14 22:13:20 web01 sshd[2232]: Failed password for invalid user bob from 203.0.113.99 port 40022 ssh2";

#[test]
fn rule_debugging_text_as_ossec_logtest_v() {
    let rs = ossec("etc");
    let mut phase = EngineRulePhase::new(Arc::clone(&rs), EngineConfig::default(), now());
    let mut lt = Logtest::new(&rs.decoders, "manager")
        .with_rules(&mut phase)
        .with_verbose(true);
    let text = lt.line(INVALID).unwrap().text;
    let debug = text.find("\n**Rule debugging:\n").unwrap();
    let phase2 = text.find("**Phase 2: Completed decoding.").unwrap();
    let phase3 = text
        .find("\n**Phase 3: Completed filtering (rules).")
        .unwrap();
    assert!(phase2 < debug && debug < phase3, "{text}");
    let trace = &text[debug..phase3];
    assert!(
        trace.contains(
            "    Trying rule: 5700 - SSHD messages grouped.\n\
             \x20      *Rule 5700 matched.\n\
             \x20      *Trying child rules.\n"
        ),
        "{trace}"
    );
    assert!(
        trace.starts_with(
            "\n**Rule debugging:\n\
             \x20   Trying rule: 1 - Generic template for all syslog rules.\n\
             \x20      *Rule 1 matched.\n\
             \x20      *Trying child rules.\n\
             \x20   Trying rule: 5500 - Grouping of the pam_unix rules.\n"
        ),
        "{trace}"
    );
    assert!(
        trace.contains(
            "    Trying rule: 5710 - Attempt to login using a non-existent user\n\
             \x20      *Rule 5710 matched.\n\
             \x20      *Trying child rules.\n\
             \x20   Trying rule: 5712 - SSHD brute force trying to get access to the system.\n"
        ),
        "{trace}"
    );
    assert!(text[phase3..].contains("Rule id: '5710'"), "{text}");
    // Every line is one of the three forms.
    for l in trace.lines().skip(2) {
        assert!(
            l.starts_with("    Trying rule: ")
                || (l.starts_with("       *Rule ") && l.ends_with(" matched."))
                || l == "       *Trying child rules.",
            "{l:?}"
        );
    }
}

#[test]
fn only_rules_of_the_event_category_are_tried_at_the_top() {
    let rs = Arc::new(default_ruleset::load().unwrap());
    let mut engine = Engine::new(Arc::clone(&rs), EngineConfig::default());
    let line =
        br#"203.0.113.7 - - [13/Mar/2024:10:00:00 +0000] "GET /x HTTP/1.1" 404 5 "-" "curl/8""#;
    let mut ev = predecode(line, "/var/log/nginx/access.log", "manager");
    rs.decoders.decode(&mut ev);
    let (verdict, trace) = engine.judge_traced(&ev, now());
    assert_eq!(verdict.rule_and_level(), Some((31101, 5)));
    // Our web-log template (rule 4) is the only top-level rule tried: the
    // syslog ones (sshd, PAM ...) have another category.
    assert_eq!(
        trace[..3],
        [
            TraceLine::Trying {
                id: 4,
                description: "Template: web server access logs.".into()
            },
            TraceLine::Matched { id: 4 },
            TraceLine::TryingChildren,
        ]
    );
    let tried: Vec<u32> = trace
        .iter()
        .filter_map(|t| match t {
            TraceLine::Trying { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert!(
        tried.contains(&31100) && tried.contains(&31101),
        "{tried:?}"
    );
    assert!(
        !tried.iter().any(|id| (5700..5800).contains(id)),
        "{tried:?}"
    );
    // 31101 matched; its child 31151 (the burst) was tried and failed.
    let at = trace
        .iter()
        .position(|t| *t == TraceLine::Matched { id: 31101 })
        .unwrap();
    assert_eq!(trace[at + 1], TraceLine::TryingChildren);
    assert!(matches!(
        trace.last(),
        Some(TraceLine::Trying { id: 31151, .. })
    ));
    assert_eq!(
        trace[0].to_string(),
        "    Trying rule: 4 - Template: web server access logs."
    );
    assert_eq!(trace[1].to_string(), "       *Rule 4 matched.");
    assert_eq!(trace[2].to_string(), "       *Trying child rules.");
}

#[test]
fn traced_and_plain_judging_agree_and_plain_prints_no_trace() {
    for rs in [
        ossec("legacy-3.3.0/etc"),
        Arc::new(default_ruleset::load().unwrap()),
    ] {
        let mut plain = Engine::new(Arc::clone(&rs), EngineConfig::default());
        let mut traced = Engine::new(Arc::clone(&rs), EngineConfig::default());
        let mut t = now();
        for i in 0..40 {
            t += SignedDuration::from_secs(2);
            let line = if i % 2 == 0 {
                format!(
                    r#"203.0.113.7 - - [13/Mar/2024:10:00:00 +0000] "GET /p{i}.php HTTP/1.1" 404 5 "-" "x""#
                )
            } else {
                String::from_utf8_lossy(INVALID).into_owned()
            };
            let mut ev = predecode(line.as_bytes(), "/var/log/x.log", "manager");
            rs.decoders.decode(&mut ev);
            let a = plain.judge(&ev, t);
            let (b, trace) = traced.judge_traced(&ev, t);
            assert_eq!(a, b, "line {i}");
            assert!(!trace.is_empty());
        }
    }
    let rs = ossec("etc");
    let mut phase = EngineRulePhase::new(Arc::clone(&rs), EngineConfig::default(), now());
    let mut lt = Logtest::new(&rs.decoders, "manager").with_rules(&mut phase);
    let text = lt.line(INVALID).unwrap().text;
    assert!(!text.contains("Rule debugging") && !text.contains("Trying rule"));
}
