//! A small driver for instruction-count profiling (`valgrind --tool=callgrind`):
//! runs N lines of the generated access log or of a generated sshd log
//! through pre-decoding, decoders, rules and correlation. Callgrind counts
//! are stable on a loaded machine where wall-clock benchmarks are not; run
//! it with N and with 0 lines and divide the difference by N for the
//! instructions per line.
//!
//! `cargo build --release -p palisade-engine --example profile_lines`, then
//! `profile_lines palisade|ossec access|sshd N [access.log]`.

// A measurement driver: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/workload/mod.rs"]
mod workload;

use std::path::Path;
use std::sync::Arc;

use palisade_engine::default_ruleset;
use palisade_engine::engine::{Engine, EngineConfig, Ruleset};
use palisade_engine::predecode::predecode;
use workload::{ACCESS_LOG_LOCATION, AUTH_LOG_LOCATION, SHARED, judge_all, sshd_log};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let set = args.get(1).map_or("palisade", String::as_str);
    let log = args.get(2).map_or("access", String::as_str);
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let rs = Arc::new(match set {
        "ossec" => {
            let etc = Path::new(SHARED).join("corpus/ossec/legacy-3.3.0/etc");
            Ruleset::load_ossec_etc(&etc).unwrap()
        }
        _ => default_ruleset::load().unwrap(),
    });
    let (lines, location) = match log {
        "sshd" => (sshd_log(n), AUTH_LOG_LOCATION),
        _ => {
            let path = args
                .get(4)
                .map_or_else(workload::access_log_path, Into::into);
            let text = std::fs::read(path).unwrap();
            (workload::lines(&text, n), ACCESS_LOG_LOCATION)
        }
    };
    if std::env::var_os("PROFILE_TRACE").is_some() {
        // Which rules one line walks through (`logtest -v`'s view).
        let mut engine = Engine::new(Arc::clone(&rs), EngineConfig::default());
        for l in lines.iter().take(2) {
            let mut ev = predecode(l, location, "manager");
            rs.decoders.decode(&mut ev);
            let (v, trace) = engine.judge_traced(&ev, "2024-03-10T00:00:00Z".parse().unwrap());
            println!("{} -> {:?}", String::from_utf8_lossy(l), v.rule_and_level());
            for t in trace {
                println!("{t}");
            }
        }
    }
    let t0 = std::time::Instant::now();
    let (_, alerts) = judge_all(&rs, lines.iter().map(Vec::as_slice), location);
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{set} {log}: {} lines, {alerts} alerts, {:.0} events/s",
        lines.len(),
        lines.len() as f64 / secs.max(1e-9)
    );
}
