//! The whole engine path (pre-decoding, decoders, rules, correlation and the
//! alerts.log renderer) never panics on arbitrary bytes, with Palisade's own
//! ruleset and OSSEC's full 3.8.0 and 3.3.0 rulesets, and the alerts.log
//! entry it renders holds no control character but its own line ends.
//!
//! One input is a short stream: its first byte picks the location and the
//! frequency-rule barrier, the rest is split into lines that one engine per
//! ruleset takes in order (so frequency, timeframe and `same_*` state is
//! built and read), the clock moving by a few seconds per line. A fresh
//! engine per input keeps every crash reproducible from its input alone.
//! The rulesets are loaded once, before the first input (`init`).
//!
//! OSSEC's rulesets are read from `../shared/corpus` beside the repository
//! (or `$PALISADE_CORPUS`); when they are missing the target says so on
//! stderr at start-up and fuzzes Palisade's ruleset only.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;
use palisade_engine::correlate::Barrier;
use palisade_engine::engine::{Engine, EngineConfig, Ruleset};
use palisade_engine::{alert_format, default_ruleset, escape, predecode};

const LOCATIONS: [&str; 4] = [
    "/var/log/auth.log",
    "(web01) 203.0.113.5->/var/log/nginx/access.log",
    "stdin",
    "(db) any->/var/log/apache2/error.log",
];

fn corpus() -> PathBuf {
    match std::env::var_os("PALISADE_CORPUS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"),
    }
}

fn rulesets() -> &'static [Arc<Ruleset>] {
    static SETS: OnceLock<Vec<Arc<Ruleset>>> = OnceLock::new();
    SETS.get_or_init(|| {
        let mut sets = Vec::new();
        match default_ruleset::load() {
            Ok(r) => sets.push(Arc::new(r)),
            Err(e) => panic!("Palisade's default ruleset does not load:\n{e}"),
        }
        let root = corpus();
        for (name, etc) in [
            ("OSSEC 3.8.0", "ossec/etc"),
            ("OSSEC 3.3.0", "ossec/legacy-3.3.0/etc"),
        ] {
            let dir = root.join(etc);
            if !dir.is_dir() {
                eprintln!(
                    "\n*** WARNING: {name} ruleset not found at {}: SKIPPED, fuzzing without it \
                     (set PALISADE_CORPUS to the corpus directory) ***\n",
                    dir.display()
                );
                continue;
            }
            match Ruleset::load_ossec_etc(&dir) {
                Ok(r) => {
                    eprintln!(
                        "engine fuzz target: {name} ruleset loaded from {}",
                        dir.display()
                    );
                    sets.push(Arc::new(r));
                }
                Err(e) => panic!("{name} ruleset at {} does not load:\n{e}", dir.display()),
            }
        }
        sets
    })
}

fuzz_target!(
    // Loading three rulesets takes seconds: done before the first input,
    // so that it does not count against libFuzzer's per-input timeout.
    init: {
        rulesets();
    },
    |data: &[u8]| {
        let Some((&opts, rest)) = data.split_first() else {
            return;
        };
        let location = LOCATIONS[usize::from(opts & 3)];
        let barrier = if opts & 4 == 0 {
            Barrier::Global
        } else {
            Barrier::PerSource
        };
        let start: Timestamp = Timestamp::from_second(1_710_324_000).unwrap_or(Timestamp::UNIX_EPOCH);
        for rs in rulesets() {
            let config = EngineConfig {
                barrier,
                ..EngineConfig::default()
            };
            let mut engine = Engine::new(Arc::clone(rs), config);
            let mut now = start;
            for line in rest.split(|&b| b == b'\n').take(64) {
                let mut event = predecode::predecode(line, location, "fuzz");
                if let Some(alert) = engine.process(&mut event, now) {
                    let text =
                        alert_format::alerts_log_entry(&alert, 0, alert.level >= 7, &TimeZone::UTC);
                    // No control character from the line can break a line
                    // or reach a terminal (palisade_engine::escape).
                    assert!(text.starts_with("** Alert ") && text.ends_with("\n\n"));
                    assert!(!text.chars().any(|c| c != '\n' && escape::needs_escape(c)));
                }
                // 0..=7 s between lines: inside and across timeframes.
                now += SignedDuration::from_secs(i64::from(line.first().copied().unwrap_or(0) & 7));
            }
        }
    }
);
