//! `ruletest` as the CLI runs it: OSSEC's 38 test files against OSSEC's
//! own 3.8.0 and 3.3.0 sets (all 236 cases pass), a deliberately wrong
//! expectation reported with both triples, `fail` keys, sequences, and an
//! unreadable file counted as a failure.

// Test and measurement code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::tz::TimeZone;
use palisade_engine::default_ruleset;
use palisade_engine::engine::Ruleset;
use palisade_engine::ruletest::{self, Summary};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/ossec");

fn ossec_files() -> Vec<PathBuf> {
    let dir = Path::new(CORPUS).join("contrib/ossec-testing/tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ini"))
        .collect();
    files.sort();
    files
}

fn run_files(rs: &Arc<Ruleset>, files: &[PathBuf]) -> (Summary, String) {
    let zone = TimeZone::UTC;
    let mut out = Vec::new();
    let s = ruletest::run_files(
        rs,
        files,
        ruletest::business_hours(&zone),
        &in_zone(zone),
        &mut out,
    )
    .unwrap();
    (s, String::from_utf8(out).unwrap())
}

#[test]
fn ossec_corpus_passes_against_both_ossec_sets() {
    for rel in ["etc", "legacy-3.3.0/etc"] {
        let rs = Arc::new(Ruleset::load_ossec_etc(&Path::new(CORPUS).join(rel)).unwrap());
        let (s, text) = run_files(&rs, &ossec_files());
        assert_eq!(
            s,
            Summary {
                passed: 236,
                failed: 0
            },
            "{rel}:\n{text}"
        );
        assert!(text.ends_with("236 passed, 0 failed\n"), "{text}");
    }
}

#[test]
fn business_hours_is_a_wednesday_at_ten_local() {
    let zone = TimeZone::get("America/New_York").unwrap();
    let t = ruletest::business_hours(&zone);
    let local = zone.to_datetime(t);
    assert_eq!((local.hour(), local.minute()), (10, 0));
    assert_eq!(local.weekday(), jiff::civil::Weekday::Wednesday);
}

fn run_text(text: &str) -> (Summary, String) {
    let rs = Arc::new(default_ruleset::load().unwrap());
    let zone = TimeZone::UTC;
    let mut out = Vec::new();
    let s = ruletest::run_sources(
        &rs,
        &[("neg.ini", text)],
        ruletest::business_hours(&zone),
        &in_zone(zone),
        &mut out,
    )
    .unwrap();
    (s, String::from_utf8(out).unwrap())
}

#[test]
fn a_wrong_expectation_is_reported_with_both_triples() {
    let (s, text) = run_text(
        "[wrong level and rule]\n\
         log 1 pass = Nov 14 22:13:20 web01 sshd[2232]: Failed password for root from 203.0.113.99 port 40022 ssh2\n\
         rule = 5710\nalert = 7\ndecoder = sshd\n\n\
         [right one]\n\
         log 1 pass = Nov 14 22:13:20 web01 sshd[2232]: Failed password for root from 203.0.113.99 port 40022 ssh2\n\
         rule = 5716\nalert = 5\ndecoder = sshd\n",
    );
    assert_eq!(
        s,
        Summary {
            passed: 1,
            failed: 1
        },
        "{text}"
    );
    assert_eq!(
        text,
        "FAIL neg.ini:2 [wrong level and rule] log 1 pass\n\
         \x20   log:      Nov 14 22:13:20 web01 sshd[2232]: Failed password for root from 203.0.113.99 port 40022 ssh2\n\
         \x20   expected: rule 5710, level 7, decoder sshd\n\
         \x20   actual:   rule 5716, level 5, decoder sshd\n\
         1 passed, 1 failed\n"
    );
}

#[test]
fn fail_keys_decoders_and_no_match_are_judged() {
    let (s, text) = run_text(
        "[fail key that does match]\n\
         log 1 fail = Nov 14 22:13:20 web01 sshd[2232]: Failed password for root from 203.0.113.99 port 40022 ssh2\n\
         rule = 5716\nalert = 5\ndecoder = sshd\n\n\
         [wrong decoder name]\n\
         log 1 pass = Nov 14 22:13:20 web01 sshd[2232]: Failed password for root from 203.0.113.99 port 40022 ssh2\n\
         rule = 5716\nalert = 5\ndecoder = sshd-failed\n\n\
         [nothing decodes]\n\
         log 1 pass = just some words\n\
         rule = 1002\nalert = 2\ndecoder = sshd\n",
    );
    assert_eq!(
        s,
        Summary {
            passed: 0,
            failed: 3
        },
        "{text}"
    );
    assert!(text.contains("    expected: NOT rule 5716, level 5, decoder sshd\n"));
    assert!(text.contains("    expected: rule 5716, level 5, decoder sshd-failed\n"));
    assert!(text.contains("    actual:   rule none, level none, decoder none\n"));
}

#[test]
fn a_sequence_keeps_state_and_judges_the_last_line() {
    let burst = |n: usize, interval: u32, expect: &str| {
        let mut t = format!("[burst]\nsequence = yes\ninterval = {interval}\n");
        for i in 1..=n {
            t.push_str(&format!(
                "log {i} pass = 192.0.2.7 - - [13/Mar/2024:10:00:00 +0000] \"GET /x{i} HTTP/1.1\" 404 1 \"-\" \"curl/8\"\n"
            ));
        }
        t.push_str(&format!("{expect}\ndecoder = web-accesslog\n"));
        run_text(&t)
    };
    assert_eq!(
        burst(14, 2, "rule = 31151\nalert = 10").0,
        Summary {
            passed: 1,
            failed: 0
        }
    );
    let (s, text) = burst(13, 2, "rule = 31151\nalert = 10");
    assert_eq!(
        s,
        Summary {
            passed: 0,
            failed: 1
        }
    );
    assert!(
        text.contains("log 13 pass (line 13 of the sequence)"),
        "{text}"
    );
    assert!(text.contains("actual:   rule 31101, level 5, decoder web-accesslog"));
    // 14 lines 8 s apart span more than the 90 s window.
    assert_eq!(burst(14, 8, "rule = 31101\nalert = 5").0.failed, 0);
    // Without `sequence`, each key is its own case on a fresh engine.
    let mut plain = String::from("[one by one]\n");
    for i in 1..=14 {
        plain.push_str(&format!(
            "log {i} pass = 192.0.2.7 - - [13/Mar/2024:10:00:00 +0000] \"GET /x{i} HTTP/1.1\" 404 1 \"-\" \"curl/8\"\n"
        ));
    }
    plain.push_str("rule = 31101\nalert = 5\ndecoder = web-accesslog\n");
    assert_eq!(
        run_text(&plain).0,
        Summary {
            passed: 14,
            failed: 0
        }
    );
}

#[test]
fn an_unreadable_file_counts_as_a_failure() {
    let rs = Arc::new(default_ruleset::load().unwrap());
    let (s, text) = run_files(&rs, &[PathBuf::from("/nonexistent/palisade.ini")]);
    assert_eq!(
        s,
        Summary {
            passed: 0,
            failed: 1
        }
    );
    assert!(text.starts_with("FAIL /nonexistent/palisade.ini: cannot read"));
    assert!(text.ends_with("0 passed, 1 failed\n"));
}

/// The engine's default configuration in `zone`.
fn in_zone(zone: TimeZone) -> palisade_engine::engine::EngineConfig {
    palisade_engine::engine::EngineConfig {
        zone,
        ..Default::default()
    }
}
