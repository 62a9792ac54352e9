//! Where a Wazuh 4.x `ruleset/` directory keeps its files, and the order
//! Wazuh loads them in: `decoders/*.xml` then `rules/*.xml`, each sorted by
//! file name (hence their `NNNN-` prefixes); the test ruleset of
//! `testing/ruleset/` (`test_*_decoders.xml`, `test_*_rules.xml`) after
//! them, as Wazuh's test runner installs it into `etc/decoders` and
//! `etc/rules`; `<list>` paths (`etc/lists/x`) resolve to `lists/x`.

use std::path::{Path, PathBuf};

use crate::error::{LoadError, LoadErrors};

/// The files of a Wazuh ruleset directory, in load order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WazuhFiles {
    /// Decoder files.
    pub decoders: Vec<PathBuf>,
    /// Rule files.
    pub rules: Vec<PathBuf>,
    /// What `<list>` paths are relative to (`etc/lists/x` is `DIR/lists/x`).
    pub list_dir: PathBuf,
}

/// `dir`'s `*.xml` files whose name passes `keep`, sorted by name; a
/// missing directory has none.
fn sorted_xml(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, LoadError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| LoadError::new(dir.display().to_string(), 0, format!("cannot list: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "xml")
                && p.file_name().and_then(|n| n.to_str()).is_some_and(&keep)
        })
        .collect();
    files.sort();
    Ok(files)
}

/// What Wazuh's test runner (`runtests.py`) changes in the installed
/// ruleset before it runs the Windows tests: rule 60000, the root of the
/// Windows rules, takes events of the JSON decoder instead of the
/// Windows event channel's (which only Wazuh's agents produce). Any other
/// file is returned as it is.
pub fn test_runner_rewrite(file_name: &str, text: &str) -> String {
    const ROOT: &str = "<rule id=\"60000\"";
    if !file_name.ends_with("0575-win-base_rules.xml") {
        return text.to_string();
    }
    let Some(start) = text.find(ROOT) else {
        return text.to_string();
    };
    let Some(len) = text[start..].find("</rule>") else {
        return text.to_string();
    };
    let rule = &text[start..start + len];
    let rewritten = rule.replace("<category>ossec</category>", "").replace(
        "<decoded_as>windows_eventchannel</decoded_as>",
        "<decoded_as>json</decoded_as>",
    );
    format!("{}{rewritten}{}", &text[..start], &text[start + len..])
}

/// The files of the Wazuh `ruleset/` directory `dir`, in Wazuh's order.
pub fn wazuh_ruleset_files(dir: &Path) -> Result<WazuhFiles, LoadErrors> {
    let mut errors = Vec::new();
    let mut take = |r: Result<Vec<PathBuf>, LoadError>| match r {
        Ok(v) => v,
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    };
    let mut decoders = take(sorted_xml(&dir.join("decoders"), |_| true));
    let mut rules = take(sorted_xml(&dir.join("rules"), |_| true));
    let testing = dir.join("testing").join("ruleset");
    decoders.extend(take(sorted_xml(&testing, |n| {
        n.starts_with("test_") && n.ends_with("_decoders.xml")
    })));
    rules.extend(take(sorted_xml(&testing, |n| {
        n.starts_with("test_") && n.ends_with("_rules.xml")
    })));
    if errors.is_empty() && (decoders.is_empty() || rules.is_empty()) {
        errors.push(LoadError::new(
            dir.display().to_string(),
            0,
            "not a Wazuh ruleset directory: no decoders/*.xml or rules/*.xml here",
        ));
    }
    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }
    Ok(WazuhFiles {
        decoders,
        rules,
        list_dir: dir.to_path_buf(),
    })
}
