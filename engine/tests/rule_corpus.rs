//! OSSEC's own ruleset tests, end to end: all 236 cases of
//! `contrib/ossec-testing/tests/*.ini`, each pre-decoded (location `stdin`),
//! decoded and judged by the rules, against OSSEC 3.8.0's `etc` (PCRE2) and
//! 3.3.0's (OS_Match/OS_Regex), loaded through their `ossec-server.conf`
//! include order. Judged as `ossec-logtest -U rule:alert:decoder` does
//! (`logtest::UnitTest::exit_code`): a `pass` case needs exit 0, a `fail`
//! case anything else. Each case gets a fresh engine (the runner starts one
//! logtest per case). The clock is pinned to a Wednesday, 10:00 UTC, with
//! the engine zone UTC, as the corpus README requires.

use std::path::Path;
use std::sync::Arc;

use palisade_engine::engine::{Engine, EngineConfig, Ruleset};
use palisade_engine::ini;
use palisade_engine::logtest::{RuleOutcome, UnitTest};
use palisade_engine::predecode::predecode;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/ossec");

fn at(t: &str) -> jiff::Timestamp {
    match t.parse() {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

fn load(rel: &str) -> Arc<Ruleset> {
    match Ruleset::load_ossec_etc(&Path::new(CORPUS).join(rel)) {
        Ok(r) => Arc::new(r),
        Err(e) => panic!("{rel} does not load:\n{e}"),
    }
}

/// Runs every case; returns (passed, total, failure descriptions).
fn run_cases(rs: &Arc<Ruleset>, now: jiff::Timestamp) -> (usize, usize, Vec<String>) {
    let dir = Path::new(CORPUS).join("contrib/ossec-testing/tests");
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(d) => d.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    files.sort();
    let (mut total, mut passed) = (0, 0);
    let mut failures = Vec::new();
    for f in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ini"))
    {
        let text = match std::fs::read(f) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => panic!("{}: {e}", f.display()),
        };
        for case in ini::test_cases(&ini::parse(&text)) {
            total += 1;
            let mut engine = Engine::new(Arc::clone(rs), EngineConfig::default());
            let mut ev = predecode(case.log.as_bytes(), "stdin", "ossec-manager");
            rs.decoders.decode(&mut ev);
            let verdict = engine.judge(&ev, now);
            let outcome = verdict.rule_and_level().map(|(id, level)| RuleOutcome {
                id,
                level,
                description: String::new(),
                info: Vec::new(),
                alert: level > 0,
            });
            let ut = UnitTest {
                rule: case.rule.clone(),
                alert: case.alert.clone(),
                decoder: case.decoder.clone(),
            };
            let code = ut.exit_code(&ev, outcome.as_ref());
            let ok = (code == 0) == case.expect_match;
            if ok {
                passed += 1;
            } else {
                failures.push(format!(
                    "{}:{} [{}] {}: expected {}:{}:{} got {:?}:{:?} (exit {code})\n    {}",
                    f.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    case.line,
                    case.section,
                    case.key,
                    case.rule,
                    case.alert,
                    case.decoder,
                    verdict.rule_and_level(),
                    ev.decoder_name,
                    case.log
                ));
            }
        }
    }
    (passed, total, failures)
}

/// A weekday (Wednesday) at 10:00 UTC.
const BUSINESS_HOURS: &str = "2024-03-13T10:00:00Z";

fn run(rel: &str) {
    let rs = load(rel);
    let (passed, total, failures) = run_cases(&rs, at(BUSINESS_HOURS));
    println!("{rel}: {passed}/{total} OSSEC cases pass");
    for f in &failures {
        println!("  FAIL {f}");
    }
    assert_eq!(total, 236, "the corpus has 236 runnable cases");
    assert!(
        failures.is_empty(),
        "{} of {total} cases fail against {rel}",
        failures.len()
    );
}

/// The README's clock check: with `policy_rules.xml` enabled (it is
/// commented out in `ossec-server.conf`), rule 17101 "Successful login
/// during non-business hours" (`<time>6 pm - 8:30 am</time>`) takes six
/// cases at night and none at 10:00.
#[test]
fn policy_rules_make_the_corpus_clock_sensitive() {
    let etc = Path::new(CORPUS).join("etc");
    let (decoders, mut rules) = match palisade_engine::engine::ossec_etc_files(&etc) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    let pos = rules
        .iter()
        .position(|p| p.ends_with("ms-se_rules.xml"))
        .map_or(rules.len(), |i| i + 1);
    rules.insert(pos, etc.join("rules/policy_rules.xml"));
    let rs = match Ruleset::load_files(&decoders, &rules, Some(&etc)) {
        Ok(r) => Arc::new(r),
        Err(e) => panic!("{e}"),
    };
    let (day, total, day_failures) = run_cases(&rs, at(BUSINESS_HOURS));
    assert_eq!((day, total), (236, 236), "{day_failures:#?}");
    let (night, _, failures) = run_cases(&rs, at("2024-03-13T23:00:00Z"));
    assert_eq!(night, 230, "{failures:#?}");
    assert!(
        failures.iter().all(|f| f.contains("Some((17101, 9))")),
        "{failures:#?}"
    );
}

#[test]
fn ossec_3_8_0_all_cases() {
    run("etc");
}

#[test]
fn ossec_3_3_0_all_cases() {
    run("legacy-3.3.0/etc");
}
