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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use palisade_engine::default_ruleset;
use palisade_engine::engine::{Engine, EngineConfig, Ruleset};
use palisade_engine::predecode::predecode;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared");

fn log_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap();
    let dir = target.join("palisade-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("access-1000000-seed42.log");
    if !out.exists() {
        let tmp = out.with_extension("tmp");
        let st = Command::new("python3")
            .arg(Path::new(SHARED).join("tools/gen_access_log.py"))
            .args(["-n", "1000000", "--seed", "42", "-o"])
            .arg(&tmp)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

fn measure(name: &str, rs: &Arc<Ruleset>, text: &[u8], limit: usize) {
    let mut engine = Engine::new(Arc::clone(rs), EngineConfig::default());
    let mut now: Timestamp = "2024-03-10T00:00:00Z".parse().unwrap();
    let step = SignedDuration::from_millis(25);
    let (mut n, mut alerts) = (0usize, 0usize);
    let t0 = Instant::now();
    for l in text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .take(limit)
    {
        now += step;
        let mut ev = predecode(l, "/var/log/apache2/access.log", "manager");
        alerts += usize::from(engine.process(&mut ev, now).is_some());
        n += 1;
    }
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
    let text = std::fs::read(log_path()).unwrap();
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
