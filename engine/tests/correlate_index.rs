//! The per-address index of the correlation lists (`correlate.rs`) must
//! give exactly what OSSEC's full walk of a list gives: same verdicts, same
//! correlated lines, same barrier effects. Random streams of web 4xx/2xx
//! lines and sshd failures from a handful of addresses, with time steps
//! that sometimes go backwards (event-time replay), are judged by two
//! engines over our default ruleset and over OSSEC 3.3.0's, one with the
//! index and one walking in full, with both barrier semantics. (With
//! these step sizes 31151 and 5720 fire about ten times per case.)

use std::path::Path;
use std::sync::{Arc, LazyLock};

use jiff::{SignedDuration, Timestamp};
use palisade_engine::correlate::{Barrier, CorrelateLimits};
use palisade_engine::default_ruleset;
use palisade_engine::engine::{Engine, EngineConfig, Ruleset, Verdict};
use palisade_engine::predecode::predecode;
use proptest::prelude::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/ossec");

/// Both rule sets, loaded once for every case (loading dominates a case's
/// time in a debug build).
static SETS: LazyLock<Vec<Arc<Ruleset>>> = LazyLock::new(sets);

fn sets() -> Vec<Arc<Ruleset>> {
    let ours = match default_ruleset::load() {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let ossec = match Ruleset::load_ossec_etc(&Path::new(CORPUS).join("legacy-3.3.0/etc")) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    vec![Arc::new(ours), Arc::new(ossec)]
}

fn line(kind: u8, ip: u8, n: u16) -> String {
    let ip = format!("203.0.113.{}", 1 + ip % 4);
    match kind % 4 {
        0 | 1 => format!(
            r#"{ip} - - [13/Mar/2024:10:00:00 +0000] "GET /x{n}.php HTTP/1.1" 404 512 "-" "Mozilla/5.0""#
        ),
        2 => format!(
            r#"{ip} - - [13/Mar/2024:10:00:00 +0000] "GET /ok HTTP/1.1" 200 512 "-" "Mozilla/5.0""#
        ),
        _ => format!(
            "Mar 13 10:00:00 web01 sshd[{n}]: Failed password for root from {ip} port {} ssh2",
            30000 + n
        ),
    }
}

fn verdict_key(v: &Verdict) -> (Option<(u32, u32)>, Vec<String>) {
    let lines = match v {
        Verdict::Alert(a) => a.correlated.clone(),
        _ => Vec::new(),
    };
    (v.rule_and_level(), lines)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn index_equals_full_walk(
        events in prop::collection::vec((0u8..4, 0u8..3, -1i64..3), 50..400),
        per_source in any::<bool>(),
        small_memory in any::<bool>(),
    ) {
        let barrier = if per_source { Barrier::PerSource } else { Barrier::Global };
        let limits = CorrelateLimits {
            memory_size: if small_memory { 16 } else { 8192 },
            ..CorrelateLimits::default()
        };
        for rs in SETS.iter() {
            let config = EngineConfig { limits, barrier, ..EngineConfig::default() };
            let mut indexed = Engine::new(Arc::clone(rs), config.clone());
            let mut full = Engine::new(Arc::clone(rs), config);
            full.state_mut().set_full_walk(true);
            let mut now: Timestamp = match "2024-03-13T10:00:00Z".parse() {
                Ok(t) => t,
                Err(e) => panic!("{e}"),
            };
            for (i, &(kind, ip, step)) in events.iter().enumerate() {
                now += SignedDuration::from_secs(step);
                let text = line(kind, ip, u16::try_from(i).unwrap_or(0));
                let mut ev = predecode(text.as_bytes(), "/var/log/x.log", "manager");
                rs.decoders.decode(&mut ev);
                let a = indexed.judge(&ev, now);
                let b = full.judge(&ev, now);
                prop_assert_eq!(verdict_key(&a), verdict_key(&b), "event {}: {}", i, text);
            }
        }
    }
}
