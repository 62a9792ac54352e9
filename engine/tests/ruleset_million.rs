//! The one-million-line figure (issue #4): events per second through
//! pre-decoding, decoders, rules and correlation on the full log made by
//! `gen_access_log.py -n 1000000`, with Palisade's ruleset and OSSEC
//! 3.3.0's. A measurement, not a check: ignored by default, run by hand in
//! release mode on an idle core:
//!
//! `cargo test --release -p palisade-engine --test ruleset_million -- --ignored --nocapture`
//!
//! `PALISADE_BENCH_LINES=N` limits the run to the first N lines and
//! `PALISADE_BENCH_SET=palisade|ossec` to one ruleset (for profiling under
//! callgrind).

// Test and measurement code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

#[path = "../benches/workload/mod.rs"]
mod workload;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use palisade_engine::default_ruleset;
use palisade_engine::engine::Ruleset;
use workload::{ACCESS_LOG_LOCATION, SHARED, access_log_path, judge_all};

fn measure(name: &str, rs: &Arc<Ruleset>, text: &[u8], limit: usize) {
    let t0 = Instant::now();
    let lines = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .take(limit);
    let (n, alerts) = judge_all(rs, lines, ACCESS_LOG_LOCATION);
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{name}: {n} lines in {secs:.2} s = {:.0} events/s ({alerts} alerts)",
        n as f64 / secs
    );
}

#[test]
#[ignore = "a measurement; run by hand with --release"]
fn one_million_access_log_lines() {
    let limit = std::env::var("PALISADE_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let only = std::env::var("PALISADE_BENCH_SET").unwrap_or_default();
    let text = std::fs::read(access_log_path()).unwrap();
    if only != "ossec" {
        let ours = Arc::new(default_ruleset::load().unwrap());
        measure("palisade", &ours, &text, limit);
    }
    if only != "palisade" {
        let etc = Path::new(SHARED).join("corpus/ossec/legacy-3.3.0/etc");
        let ossec = Arc::new(Ruleset::load_ossec_etc(&etc).unwrap());
        measure("ossec 3.3.0", &ossec, &text, limit);
    }
}
