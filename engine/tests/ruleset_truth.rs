//! The truth oracle: a log made by `shared/tools/gen_access_log.py`
//! (generated into a temp dir at test time, never committed) judged with
//! Palisade's ruleset in event-time mode. 31151 must fire for every scanner
//! burst that the `--truth` file lists with 14 or more 404s within 90 s,
//! and never for a slow prober, a smaller burst or a normal client.
//!
//! The generator starts every burst within the first second when the log
//! is short (its span is shorter than its 4000 s margin), so the small run
//! below is the hard case: ~150 scanners interleaved in the same minute.
//! That is where OSSEC's barrier (a firing for one address stops the count
//! for every other address) loses scanners; the larger run spreads them.

// Test and measurement code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use jiff::Timestamp;
use palisade_engine::correlate::Barrier;
use palisade_engine::default_ruleset;
use palisade_engine::engine::{EngineConfig, Verdict};
use palisade_engine::logtest_rules::EngineRulePhase;
use palisade_engine::predecode::predecode;
use palisade_engine::timestamp::TimeSource;

const TOOL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/tools/gen_access_log.py"
);

struct Burst {
    ip: String,
    kind: String,
    max_404_in_window: u64,
}

fn generate(lines: usize, seed: u32) -> (PathBuf, Vec<Burst>) {
    let dir = std::env::temp_dir().join(format!(
        "palisade-truth-{}-{lines}-{seed}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let truth = dir.join("truth.jsonl");
    let st = Command::new("python3")
        .arg(TOOL)
        .args(["-n", &lines.to_string(), "--seed", &seed.to_string()])
        .arg("-o")
        .arg(&log)
        .arg("--truth")
        .arg(&truth)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let bursts = std::fs::read_to_string(&truth)
        .unwrap()
        .lines()
        .map(|l| Burst {
            ip: field(l, "ip"),
            kind: field(l, "kind"),
            max_404_in_window: field(l, "max_404_in_window").parse().unwrap(),
        })
        .collect();
    (log, bursts)
}

/// A value from one flat JSON object line (the truth file's own format:
/// `json.dumps` of strings and numbers).
fn field(line: &str, key: &str) -> String {
    let pat = format!("\"{key}\": ");
    let start = line.find(&pat).unwrap_or_else(|| panic!("{key} in {line}")) + pat.len();
    let rest = &line[start..];
    if let Some(s) = rest.strip_prefix('"') {
        s[..s.find('"').unwrap()].to_string()
    } else {
        rest[..rest.find([',', '}']).unwrap()].trim().to_string()
    }
}

/// Source addresses that drew 31151, with how often.
fn judge(log: &Path, barrier: Barrier) -> (HashMap<String, usize>, u64) {
    let rs = Arc::new(default_ruleset::load().unwrap());
    let arrival: Timestamp = "2024-04-01T00:00:00Z".parse().unwrap();
    let config = EngineConfig {
        barrier,
        ..EngineConfig::default()
    };
    let mut phase =
        EngineRulePhase::new(Arc::clone(&rs), config, arrival).with_time_source(TimeSource::Event);
    let text = std::fs::read(log).unwrap();
    let mut fired: HashMap<String, usize> = HashMap::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let mut ev = predecode(line, "/var/log/apache2/access.log", "web01");
        rs.decoders.decode(&mut ev);
        assert_eq!(ev.decoder_name.as_deref(), Some("web-accesslog"));
        if let Verdict::Alert(a) = phase.judge(&ev)
            && a.rule_id == 31151
        {
            let ip = a.srcip.clone().unwrap_or_default();
            *fired.entry(ip).or_default() += 1;
        }
    }
    (fired, phase.fell_back())
}

struct Outcome {
    scanners: usize,
    missed: Vec<String>,
    false_positives: Vec<String>,
}

fn score(bursts: &[Burst], fired: &HashMap<String, usize>) -> Outcome {
    let scanners: Vec<&Burst> = bursts
        .iter()
        .filter(|b| b.max_404_in_window >= 14)
        .collect();
    let known: HashSet<&str> = scanners.iter().map(|b| b.ip.as_str()).collect();
    Outcome {
        scanners: scanners.len(),
        missed: scanners
            .iter()
            .filter(|b| !fired.contains_key(&b.ip))
            .map(|b| b.ip.clone())
            .collect(),
        false_positives: fired
            .keys()
            .filter(|ip| !known.contains(ip.as_str()))
            .cloned()
            .collect(),
    }
}

/// Judges the log under both barrier semantics: with Palisade's
/// per-source barrier every scanner must be flagged; OSSEC's global
/// barrier is reported (it loses scanners when bursts interleave) and must
/// not flag anyone else either.
fn check(lines: usize, seed: u32) {
    let (log, bursts) = generate(lines, seed);
    let slow = bursts.iter().filter(|b| b.kind == "slow").count();
    let (fired, fell_back) = judge(&log, Barrier::PerSource);
    let (fired_ossec, _) = judge(&log, Barrier::Global);
    let _ = std::fs::remove_dir_all(log.parent().unwrap());
    assert_eq!(fell_back, 0, "every line has its own time");
    let ours = score(&bursts, &fired);
    let ossec = score(&bursts, &fired_ossec);
    println!(
        "-n {lines} --seed {seed}: {} bursts, {slow} slow probers, {} scanners with >= 14 404s in 90 s; \
         31151 flagged {}/{} with barrier = per-source, {}/{} with OSSEC's global barrier; \
         false positives {} / {}",
        bursts.len(),
        ours.scanners,
        ours.scanners - ours.missed.len(),
        ours.scanners,
        ossec.scanners - ossec.missed.len(),
        ossec.scanners,
        ours.false_positives.len(),
        ossec.false_positives.len(),
    );
    assert!(ours.scanners >= 10, "the log has scanners to find");
    assert!(slow > 0, "the log has slow probers to ignore");
    assert!(ours.missed.is_empty(), "missed: {:?}", ours.missed);
    assert!(
        ours.false_positives.is_empty(),
        "{:?}",
        ours.false_positives
    );
    assert!(
        ossec.false_positives.is_empty(),
        "{:?}",
        ossec.false_positives
    );
}

/// All bursts in the same minute (the generator's short-log case).
#[test]
fn every_scanner_flagged_when_bursts_overlap() {
    check(40_000, 7);
}

/// Bursts spread over hours.
#[test]
fn every_scanner_flagged_when_bursts_are_spread() {
    check(200_000, 11);
}
