//! Every XML file of the OSSEC corpus (3.8.0 and 3.3.0 `etc`) must be read
//! by Palisade's lenient XML reader, variables applied.

use std::path::{Path, PathBuf};

use palisade_engine::xml;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/ossec");

fn xml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            xml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "xml" || x == "conf") {
            out.push(p);
        }
    }
}

#[test]
fn reads_every_corpus_xml_file() {
    let mut files = Vec::new();
    for d in ["etc", "legacy-3.3.0/etc"] {
        xml_files(&Path::new(CORPUS).join(d), &mut files);
    }
    assert!(
        files.len() > 170,
        "corpus not found under {CORPUS}: {}",
        files.len()
    );
    let mut failures = Vec::new();
    let mut elements = 0;
    for f in &files {
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        match xml::parse(&text).and_then(xml::apply_variables) {
            Ok(els) => {
                // `internal_options.conf` is not XML; the others have roots.
                if f.extension().is_some_and(|x| x == "xml") {
                    assert!(!els.is_empty(), "{} has no elements", f.display());
                }
                elements += els.len();
            }
            Err(e) if f.ends_with("internal_options.conf") => drop(e),
            Err(e) => failures.push(format!("{}: {e}", f.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "unreadable files:\n{}",
        failures.join("\n")
    );
    assert!(elements > 500);
}

#[test]
fn decoder_xml_structure_and_lines() {
    let text = std::fs::read_to_string(Path::new(CORPUS).join("etc/decoder.xml")).unwrap();
    let els = xml::parse(&text).unwrap();
    assert!(els.iter().all(|e| e.name == "decoder"));
    let web = els
        .iter()
        .find(|e| e.attr("name") == Some("web-accesslog"))
        .unwrap();
    // The line number points at the opening tag.
    let line = text.lines().nth(web.line - 1).unwrap();
    assert!(line.contains("<decoder name=\"web-accesslog\">"), "{line}");
    let pcre: Vec<&str> = web
        .children
        .iter()
        .filter(|c| c.name == "pcre2")
        .map(|c| c.text.as_str())
        .collect();
    assert_eq!(pcre.len(), 2);
    assert!(pcre[0].starts_with("^(\\S+) \\S+ (\\S+) \\["));
}
