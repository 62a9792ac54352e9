//! Palisade's own ruleset (`ruleset/`): it loads, every file on disk is in
//! the embedded load order, and its INI tests (one-line cases and the
//! multi-line `sequence` cases) all pass through `ruletest`.

// Test and measurement code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use jiff::tz::TimeZone;
use palisade_engine::default_ruleset;
use palisade_engine::engine::Ruleset;
use palisade_engine::ruletest;

const RULESET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruleset");

fn load() -> Arc<Ruleset> {
    match default_ruleset::load() {
        Ok(r) => Arc::new(r),
        Err(e) => panic!("the default ruleset does not load:\n{e}"),
    }
}

#[test]
fn every_file_on_disk_is_embedded_in_load_order() {
    for (dir, listed) in [
        ("decoders", default_ruleset::DECODERS),
        ("rules", default_ruleset::RULES),
        ("tests", default_ruleset::TESTS),
    ] {
        let mut on_disk: Vec<String> = std::fs::read_dir(Path::new(RULESET).join(dir))
            .unwrap()
            .map(|e| format!("{dir}/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        on_disk.sort();
        let mut names: Vec<String> = listed.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        assert_eq!(on_disk, names, "{dir}");
        // The embedded copy is the file on disk.
        for (n, text) in listed {
            assert_eq!(
                std::fs::read_to_string(Path::new(RULESET).join(n)).unwrap(),
                *text
            );
        }
    }
    // The same files load from disk in the same order.
    let (d, r) = default_ruleset::files_in(Path::new(RULESET));
    assert!(Ruleset::load_files(&d, &r, None).is_ok());
}

#[test]
fn own_ini_tests_all_pass() {
    let rs = load();
    let zone = TimeZone::UTC;
    let mut out = Vec::new();
    let s = ruletest::run_sources(
        &rs,
        default_ruleset::TESTS,
        ruletest::business_hours(&zone),
        &in_zone(zone),
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out);
    println!("{text}");
    assert_eq!(s.failed, 0, "{text}");
    assert!(s.passed >= 60, "{} cases", s.passed);
    assert!(text.ends_with(&format!("{} passed, 0 failed\n", s.passed)));
}

#[test]
fn own_ini_tests_pass_from_disk_too() {
    let rs = load();
    let files: Vec<_> = default_ruleset::TESTS
        .iter()
        .map(|(n, _)| Path::new(RULESET).join(n))
        .collect();
    let mut out = Vec::new();
    let zone = TimeZone::UTC;
    let s = ruletest::run_files(
        &rs,
        &files,
        ruletest::business_hours(&zone),
        &in_zone(zone),
        &mut out,
    )
    .unwrap();
    assert_eq!(s.failed, 0, "{}", String::from_utf8_lossy(&out));
}

/// 31170 is a speed gate in front of the URL attack rules: it must search
/// for exactly their patterns, or an attack would slip past it.
#[test]
fn the_url_gate_lists_exactly_the_attack_patterns() {
    let rs = load();
    let patterns = |id: u32| -> Vec<String> {
        let rule = rs.rules.rule(id).unwrap();
        let mut v: Vec<String> = rule
            .cond
            .url
            .as_ref()
            .unwrap()
            .pattern()
            .source()
            .split('|')
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let mut attacks: Vec<String> = [31103, 31104, 31105]
        .into_iter()
        .flat_map(patterns)
        .collect();
    attacks.sort();
    assert_eq!(patterns(31170), attacks);
    assert_eq!(rs.rules.child_ids(31170), vec![31103, 31104, 31105]);
}

/// The engine's default configuration in `zone`.
fn in_zone(zone: TimeZone) -> palisade_engine::engine::EngineConfig {
    palisade_engine::engine::EngineConfig {
        zone,
        ..Default::default()
    }
}
