//! The `Barrier` option. OSSEC's barrier (spec 2.8, reproduced with
//! OSSEC's own logtest): B×7, then A×14, then B×17 404s — A fires on its
//! 14th, B only on its 21st because A's firing hid B's first 7 events.
//! With `Barrier::PerSource` B fires on its 14th, and a single source
//! still fires on events 14 and 28, as in OSSEC. Checked with OSSEC's
//! 3.8.0 rules and with Palisade's.

// Test and measurement code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use palisade_engine::correlate::Barrier;
use palisade_engine::default_ruleset;
use palisade_engine::engine::{Engine, EngineConfig, Ruleset};
use palisade_engine::predecode::predecode;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/ossec");

fn rulesets() -> Vec<(&'static str, Arc<Ruleset>)> {
    vec![
        (
            "OSSEC 3.8.0",
            Arc::new(Ruleset::load_ossec_etc(&Path::new(CORPUS).join("etc")).unwrap()),
        ),
        ("Palisade", Arc::new(default_ruleset::load().unwrap())),
    ]
}

/// Feeds (ip, n) runs of 404s one second apart; returns, per ip, the
/// 1-based ordinals of that ip's requests that alerted as 31151.
fn run(rs: &Arc<Ruleset>, barrier: Barrier, plan: &[(&str, usize)]) -> Vec<(String, Vec<usize>)> {
    let mut e = Engine::new(
        Arc::clone(rs),
        EngineConfig {
            barrier,
            ..EngineConfig::default()
        },
    );
    let mut now: Timestamp = "2024-03-13T10:00:00Z".parse().unwrap();
    let mut seen: Vec<(String, usize, Vec<usize>)> = Vec::new();
    for (ip, n) in plan {
        for _ in 0..*n {
            now += SignedDuration::from_secs(1);
            let idx = match seen.iter().position(|(i, _, _)| i == ip) {
                Some(i) => i,
                None => {
                    seen.push((ip.to_string(), 0, Vec::new()));
                    seen.len() - 1
                }
            };
            seen[idx].1 += 1;
            let k = seen[idx].1;
            let line = format!(
                r#"{ip} - - [13/Mar/2024:10:00:00 +0000] "GET /p{k}.php HTTP/1.1" 404 1 "-" "Mozilla/5.0""#
            );
            let mut ev = predecode(line.as_bytes(), "/var/log/access.log", "m");
            e.ruleset().decoders.decode(&mut ev);
            if e.judge(&ev, now).rule_and_level() == Some((31151, 10)) {
                seen[idx].2.push(k);
            }
        }
    }
    seen.into_iter().map(|(ip, _, f)| (ip, f)).collect()
}

#[test]
fn global_barrier_is_ossecs_per_source_barrier_is_not() {
    let plan = [("10.0.0.2", 7), ("10.0.0.1", 14), ("10.0.0.2", 17)];
    for (name, rs) in rulesets() {
        let got = run(&rs, Barrier::Global, &plan);
        assert_eq!(
            got,
            vec![("10.0.0.2".into(), vec![21]), ("10.0.0.1".into(), vec![14])],
            "{name}, OSSEC barrier"
        );
        let got = run(&rs, Barrier::PerSource, &plan);
        assert_eq!(
            got,
            vec![("10.0.0.2".into(), vec![14]), ("10.0.0.1".into(), vec![14])],
            "{name}, per-source barrier"
        );
        for barrier in [Barrier::Global, Barrier::PerSource] {
            assert_eq!(
                run(&rs, barrier, &[("10.0.0.3", 30)]),
                vec![("10.0.0.3".into(), vec![14, 28])],
                "{name}, {barrier:?}, one source"
            );
        }
    }
}
