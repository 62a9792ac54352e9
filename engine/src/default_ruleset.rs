//! Palisade's own default ruleset (`ruleset/` at the top of the
//! repository), compiled into the crate so that `logtest`, `ruletest` and a
//! fresh manager work from any directory without an OSSEC installation.
//!
//! The files are written for Palisade in OSSEC's XML format; OSSEC's own
//! files are GPL and stay out of the project. The order below is the load
//! order (it matters: `if_sid` may only name rules loaded earlier, and
//! sibling ties are broken by load order); `ruleset/README.md` documents it
//! and a test checks that every file under `ruleset/` is listed.

use std::path::{Path, PathBuf};

use crate::engine::Ruleset;
use crate::error::LoadErrors;

macro_rules! ruleset_file {
    ($dir:literal, $name:literal) => {
        (
            concat!($dir, "/", $name),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../ruleset/",
                $dir,
                "/",
                $name
            )),
        )
    };
}

/// Decoder files, in load order: `(path under ruleset/, content)`.
pub const DECODERS: &[(&str, &str)] = &[
    ruleset_file!("decoders", "10-web.xml"),
    ruleset_file!("decoders", "20-auth.xml"),
];

/// Rule files, in load order: `(path under ruleset/, content)`.
pub const RULES: &[(&str, &str)] = &[
    ruleset_file!("rules", "00-templates.xml"),
    ruleset_file!("rules", "10-syslog.xml"),
    ruleset_file!("rules", "20-pam.xml"),
    ruleset_file!("rules", "21-sudo-su.xml"),
    ruleset_file!("rules", "30-sshd.xml"),
    ruleset_file!("rules", "40-web-access.xml"),
    ruleset_file!("rules", "41-web-errors.xml"),
];

/// Test files of the default ruleset (`ruleset/tests/*.ini`), for
/// `ruletest` without arguments and for CI.
pub const TESTS: &[(&str, &str)] = &[
    ruleset_file!("tests", "web.ini"),
    ruleset_file!("tests", "web_sequences.ini"),
    ruleset_file!("tests", "sshd.ini"),
    ruleset_file!("tests", "auth.ini"),
    ruleset_file!("tests", "syslog.ini"),
    ruleset_file!("tests", "hostile_sshd.ini"),
    ruleset_file!("tests", "hostile_auth.ini"),
    ruleset_file!("tests", "hostile_web.ini"),
];

fn owned(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(n, t)| (format!("ruleset/{n}"), (*t).to_string()))
        .collect()
}

/// Loads the embedded default ruleset.
pub fn load() -> Result<Ruleset, LoadErrors> {
    Ruleset::load_sources(&owned(DECODERS), &owned(RULES), None)
}

/// The default ruleset's decoder and rule file paths under a `ruleset/`
/// directory on disk, in load order (for a user who copied and edited it).
pub fn files_in(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    (
        DECODERS.iter().map(|(n, _)| dir.join(n)).collect(),
        RULES.iter().map(|(n, _)| dir.join(n)).collect(),
    )
}
