//! Events per second through the whole engine (pre-decoding, decoders,
//! rules and correlation) with Palisade's ruleset and with OSSEC 3.3.0's
//! full set, on an Apache access log made by
//! `shared/tools/gen_access_log.py -n 1000000` (generated once at bench
//! time into the target directory, never committed) and on a generated
//! sshd log. Criterion samples a prefix of each log ([`PREFIX`] lines) to
//! keep a run short; `engine/tests/ruleset_million.rs` (ignored, run by
//! hand in release mode) times the full million once.
//!
//! Run: `cargo bench -p palisade-engine --bench rules`.
//! Targets on one core (issue #4): >= 500,000 events/s with ours, >=
//! 420,000 with OSSEC's 3.3.0 set (3x OSSEC's own ossec-logtest).

// Test and measurement code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

mod workload;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_engine::default_ruleset;
use palisade_engine::engine::Ruleset;
use workload::{ACCESS_LOG_LOCATION, AUTH_LOG_LOCATION, SHARED, access_log, judge_all, sshd_log};

const PREFIX: usize = 100_000;

fn ossec_330() -> Arc<Ruleset> {
    let etc = Path::new(SHARED).join("corpus/ossec/legacy-3.3.0/etc");
    Arc::new(Ruleset::load_ossec_etc(&etc).unwrap_or_else(|e| panic!("{e}")))
}

/// Wazuh 4.14.7's ruleset, in the Wazuh dialect.
fn wazuh() -> Arc<Ruleset> {
    let dir = Path::new(SHARED).join("corpus/wazuh/ruleset");
    let files = palisade_engine::wazuh::wazuh_ruleset_files(&dir).unwrap();
    let read = |paths: &[std::path::PathBuf]| -> Vec<(String, String)> {
        paths
            .iter()
            .map(|p| (p.display().to_string(), std::fs::read_to_string(p).unwrap()))
            .collect()
    };
    Arc::new(
        Ruleset::load_sources_in(
            palisade_engine::dialect::RulesetDialect::Wazuh,
            &read(&files.decoders),
            &read(&files.rules),
            Some(&files.list_dir),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    )
}

fn palisade() -> Arc<Ruleset> {
    Arc::new(default_ruleset::load().unwrap_or_else(|e| panic!("{e}")))
}

fn bench_one(c: &mut Criterion, name: &str, rs: &Arc<Ruleset>, lines: &[Vec<u8>], loc: &str) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.sample_size(10);
    g.bench_function("predecode+decode+rules", |b| {
        b.iter(|| black_box(judge_all(rs, lines.iter().map(Vec::as_slice), loc)))
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let ours = palisade();
    let ossec = ossec_330();
    let access = access_log(PREFIX);
    let sshd = sshd_log(PREFIX);
    let web = ACCESS_LOG_LOCATION;
    let auth = AUTH_LOG_LOCATION;
    bench_one(c, "access_log/palisade", &ours, &access, web);
    bench_one(c, "access_log/ossec_3.3.0", &ossec, &access, web);
    bench_one(c, "sshd/palisade", &ours, &sshd, auth);
    bench_one(c, "sshd/ossec_3.3.0", &ossec, &sshd, auth);
    let wazuh = wazuh();
    bench_one(c, "access_log/wazuh_4.14.7", &wazuh, &access, web);
    bench_one(c, "sshd/wazuh_4.14.7", &wazuh, &sshd, auth);
}

criterion_group!(rules, benches);
criterion_main!(rules);
