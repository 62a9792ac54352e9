//! OS_Regex capture groups are extracted, for speed, by a PCRE2 JIT twin of
//! the translated pattern, and start-anchored patterns are first screened
//! by their leading fixed-width positions (see `pattern.rs`). This checks
//! that the result (match, span and every group) is exactly what the
//! `regex` crate alone gives, for
//! every OS_Regex `<regex>` and `<prematch>` of OSSEC 3.3.0's and 3.8.0's
//! decoders and of our own, on every log line of OSSEC's test corpus (and
//! on each line's tail after every space, since decoders match at offsets).

use std::path::Path;

use palisade_engine::decoder::DecoderSet;
use palisade_engine::default_ruleset;
use palisade_engine::ini;
use palisade_engine::pattern::{Dialect, Pattern};
use palisade_engine::predecode::predecode;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/ossec");

fn decoders(rel: &str) -> DecoderSet {
    match DecoderSet::load_files(&[Path::new(CORPUS).join(rel)]) {
        Ok(d) => d,
        Err(e) => panic!("{rel}: {e}"),
    }
}

fn corpus_lines() -> Vec<Vec<u8>> {
    let dir = Path::new(CORPUS).join("contrib/ossec-testing/tests");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(d) => d,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    for f in entries.filter_map(Result::ok).map(|e| e.path()) {
        let Ok(b) = std::fs::read(&f) else { continue };
        for case in ini::test_cases(&ini::parse(&String::from_utf8_lossy(&b))) {
            let ev = predecode(case.log.as_bytes(), "stdin", "m");
            out.push(ev.log().to_vec());
            out.push(ev.full_log.clone());
        }
    }
    out.extend(
        [
            &b"1.2.3.4 - - [10/Mar/2024:13:55:36 +0000] \"GET /a\"b HTTP/1.1\" 404 5 \"-\" \"x\""[..],
            b"1.2.3.4 - - [10/Mar/2024:13:55:36 +0000] \"GET /a b HTTP/1.1\" 404 5",
            b"\xff\xfe \x00 HTTP/1.1\" 200 ",
        ]
        .map(<[u8]>::to_vec),
    );
    out
}

#[test]
fn pcre2_twin_gives_the_regex_crate_groups() {
    let mut sets = vec![
        decoders("legacy-3.3.0/etc/decoder.xml"),
        decoders("etc/decoder.xml"),
    ];
    match default_ruleset::load() {
        Ok(rs) => sets.push(rs.decoders.clone()),
        Err(e) => panic!("{e}"),
    }
    let mut patterns: Vec<&Pattern> = Vec::new();
    for set in &sets {
        for d in set.decoders() {
            patterns.extend(d.regex.iter().chain(d.prematch.iter()));
        }
    }
    patterns.retain(|p| p.dialect() == Dialect::OsRegex && !p.is_literal());
    assert!(patterns.len() > 300, "{}", patterns.len());
    let lines = corpus_lines();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut checked = 0usize;
    for line in &lines {
        let starts = std::iter::once(0).chain(
            line.iter()
                .enumerate()
                .filter(|(_, c)| **c == b' ')
                .map(|(i, _)| i + 1),
        );
        for s in starts {
            let hay = &line[s..];
            for p in &patterns {
                let x = p.find_into(hay, &mut a);
                let y = p.find_into_reference(hay, &mut b);
                // The groups are only meaningful after a match.
                let (ga, gb) = if x.is_some() { (&a, &b) } else { (&b, &b) };
                assert_eq!(
                    (x, ga),
                    (y, gb),
                    "pattern {:?} on {:?}",
                    p.source(),
                    String::from_utf8_lossy(hay)
                );
                assert_eq!(p.find_span(hay), y, "find_span {:?}", p.source());
                assert_eq!(p.is_match(hay), y.is_some(), "is_match {:?}", p.source());
                checked += usize::from(x.is_some());
            }
        }
    }
    assert!(checked > 1000, "{checked}");
}
