//! The start-up warning about OSSEC's steerable decoders
//! (`palisade_engine::steerable`): every known one is found in OSSEC 3.8.0's
//! and 3.3.0's stock `decoder.xml` (from `../shared/corpus`, required like
//! the other corpus tests), none in Palisade's own ruleset, and a copy
//! whose pattern was fixed is not flagged.

use std::path::Path;

use palisade_engine::decoder::DecoderSet;
use palisade_engine::default_ruleset;
use palisade_engine::steerable::{self, KNOWN};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/ossec");

fn load(rel: &str) -> DecoderSet {
    let path = Path::new(CORPUS).join(rel);
    match DecoderSet::load_files(&[path]) {
        Ok(s) => s,
        Err(e) => panic!("{rel} does not load:\n{e}"),
    }
}

fn names(set: &DecoderSet) -> Vec<&'static str> {
    steerable::find(set)
        .iter()
        .map(|f| f.known.decoder)
        .collect()
}

/// Prints each known decoder's fingerprints, for updating the list
/// (`cargo test -p palisade-engine --test steerable -- --nocapture`).
fn show_fingerprints(rel: &str, set: &DecoderSet) {
    for k in KNOWN {
        let fps: Vec<String> = set
            .decoders()
            .iter()
            .filter(|d| d.own_name == k.decoder)
            .map(|d| format!("{:#018x}", steerable::fingerprint(d)))
            .collect();
        println!("{rel}: {}: {}", k.decoder, fps.join(" "));
    }
}

#[test]
fn every_known_decoder_is_found_in_ossecs_releases() {
    let all: Vec<&str> = KNOWN.iter().map(|k| k.decoder).collect();
    for rel in ["etc/decoder.xml", "legacy-3.3.0/etc/decoder.xml"] {
        let set = load(rel);
        show_fingerprints(rel, &set);
        let mut found = names(&set);
        found.sort_unstable();
        let mut want = all.clone();
        want.sort_unstable();
        assert_eq!(found, want, "{rel}");
        let finding = &steerable::find(&set)[0];
        let text = finding.to_string();
        assert!(
            text.contains(rel) && text.contains(finding.known.safer),
            "{text}"
        );
    }
}

#[test]
fn palisades_ruleset_has_none() {
    let rs = default_ruleset::load().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&rs.decoders), Vec::<&str>::new());
}

#[test]
fn a_fixed_copy_is_not_flagged() {
    let text = std::fs::read_to_string(Path::new(CORPUS).join("etc/decoder.xml"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The user anchored ssh-invalid-user at the end of the line.
    let stock = r#"<pcre2 offset="after_prematch"> from (\S+)</pcre2>"#;
    assert!(text.contains(stock), "the stock pattern moved");
    let fixed = text.replacen(
        stock,
        r#"<pcre2 offset="after_prematch"> from (\S+) port \d+ ssh\d$</pcre2>"#,
        1,
    );
    let set = match DecoderSet::load(&[("decoder.xml".into(), fixed)]) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let found = names(&set);
    assert!(!found.contains(&"ssh-invalid-user"), "{found:?}");
    assert!(found.contains(&"ssh-kbd"));
}
