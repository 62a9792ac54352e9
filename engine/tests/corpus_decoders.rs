//! The decoder part of OSSEC's own ruleset tests: for each of the 236 cases
//! in `contrib/ossec-testing/tests/*.ini`, pre-decode and decode the line
//! with OSSEC 3.8.0's `decoder.xml` (PCRE2) and with 3.3.0's (OS_Regex), and
//! judge the decoder name as `ossec-logtest -U` does (`Event::decoder_name`,
//! case-insensitive).
//!
//! `pass` cases must produce the expected decoder. `fail` cases only require
//! that the whole (decoder, rule, level) triple differs, so without rules
//! (they come later) a `fail` case is settled here only when the decoder
//! already differs (e.g. the deliberately misspelled `vimserver` or `rhsd`
//! program names, or an empty expected decoder: no decoded event has an
//! empty name); when the decoder matches, the case waits for the rule part
//! and is counted as pending, not judged. The counts are printed.

use std::path::Path;

use palisade_engine::decoder::DecoderSet;
use palisade_engine::ini;
use palisade_engine::predecode::predecode;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/ossec");

fn load(rel: &str) -> DecoderSet {
    let path = Path::new(CORPUS).join(rel);
    match DecoderSet::load_files(&[path]) {
        Ok(s) => s,
        Err(e) => panic!("{rel} does not load:\n{e}"),
    }
}

struct Case {
    file: String,
    case: ini::TestCase,
}

fn cases() -> Vec<Case> {
    let dir = Path::new(CORPUS).join("contrib/ossec-testing/tests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ini"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let parsed = ini::parse(&text);
        let name = f.display().to_string();
        let name = name.rsplit('/').next().unwrap_or(&name).to_string();
        for case in ini::test_cases(&parsed) {
            out.push(Case {
                file: name.clone(),
                case,
            });
        }
    }
    out
}

fn run(set_rel: &str) {
    let set = load(set_rel);
    let cases = cases();
    assert_eq!(cases.len(), 236, "the OSSEC corpus has 236 cases");
    let mut failures = Vec::new();
    let mut passed = 0;
    let (mut fail_settled, mut fail_pending) = (0, 0);
    for Case { file, case } in &cases {
        let mut ev = predecode(case.log.as_bytes(), "stdin", "palisade-test");
        set.decode(&mut ev);
        let got = ev.decoder_name.clone();
        let matches = got
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(&case.decoder));
        if !case.expect_match {
            if matches {
                fail_pending += 1;
            } else {
                fail_settled += 1;
            }
            continue;
        }
        if matches {
            passed += 1;
        } else {
            failures.push(format!(
                "{file}:{} [{}] {}: expected decoder {:?}, got {:?} (own name {:?})\n    {}",
                case.line, case.section, case.key, case.decoder, got, ev.decoder_own_name, case.log
            ));
        }
    }
    let pass_cases = cases.iter().filter(|c| c.case.expect_match).count();
    eprintln!(
        "{set_rel}: {passed}/{pass_cases} pass cases decode as expected; \
         fail cases: {fail_settled} settled by the decoder, {fail_pending} pending the rule part"
    );
    assert_eq!(pass_cases + fail_settled + fail_pending, 236);
    assert!(
        failures.is_empty(),
        "{set_rel}: {} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn ossec_3_8_decoders() {
    run("etc/decoder.xml");
}

#[test]
fn ossec_3_3_decoders() {
    run("legacy-3.3.0/etc/decoder.xml");
}
