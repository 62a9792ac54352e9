//! Which decoders and rules the manager judges with: Palisade's own
//! ruleset, embedded in the binary, or an OSSEC `etc` directory in its
//! place; then any local files (`[ruleset] dirs`), loaded after the base so
//! that local rules can refer to and overwrite it, as OSSEC's
//! `local_rules.xml` does.
//!
//! OSSEC's decoders are kept as they are, including those known to take
//! an address or a user from text the client writes
//! ([`steerable_decoders`], warned about once at start-up and by
//! `check-config`).
//!
//! And how the engine judges with them ([`Judging`]: the barrier and the
//! clock of `[ruleset]`), read here once for the daemon and for
//! `logtest -c` / `ruletest -c`, so that a preview shows the alerts the
//! manager raises.

use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;
use palisade_engine::correlate::{Barrier, CorrelateLimits};
use palisade_engine::default_ruleset;
use palisade_engine::dialect::RulesetDialect;
use palisade_engine::engine::{EngineConfig, Ruleset, ossec_etc_files};
use palisade_engine::error::{LoadError, LoadErrors};
use palisade_engine::timestamp::TimeSource;
use palisade_engine::wazuh::{test_runner_rewrite, wazuh_ruleset_files};

use crate::config::ManagerConfig;

/// The `[ruleset]` settings that decide how rules judge, besides which
/// rules: OSSEC's by default (no manager.toml).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Judging {
    /// How a frequency rule restarts its count after firing.
    pub barrier: Barrier,
    /// The clock correlation runs on.
    pub time_source: TimeSource,
    /// The correlation memory's bounds (`[limits]`).
    pub limits: CorrelateLimits,
}

impl Judging {
    /// What `config`'s `[ruleset]` says.
    pub fn of(config: &ManagerConfig) -> Self {
        Self {
            barrier: config.barrier,
            time_source: config.time_source,
            limits: config.limits.correlation,
        }
    }

    /// The engine's settings, in the manager's local zone (OSSEC reads
    /// `<time>` and `<weekday>` in local time).
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            zone: TimeZone::system(),
            barrier: self.barrier,
            limits: self.limits,
        }
    }
}

/// Where the ruleset comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesetSource {
    /// Replace the embedded set with an OSSEC `etc` directory.
    pub ossec_etc: Option<PathBuf>,
    /// Replace the embedded set with a Wazuh `ruleset/` directory (read in
    /// the Wazuh dialect).
    pub wazuh_ruleset: Option<PathBuf>,
    /// The rule language of every file (`wazuh_ruleset` implies Wazuh's).
    pub dialect: RulesetDialect,
    /// Local directories, each with `decoders/*.xml` and `rules/*.xml`
    /// (loaded in file-name order after the base set).
    pub dirs: Vec<PathBuf>,
}

type Sources = Vec<(String, String)>;

fn read_all(paths: &[PathBuf], out: &mut Sources, errors: &mut Vec<LoadError>) {
    for p in paths {
        match std::fs::read(p) {
            Ok(bytes) => out.push((
                p.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )),
            Err(e) => errors.push(LoadError::new(
                p.display().to_string(),
                0,
                format!("cannot read: {e}"),
            )),
        }
    }
}

fn xml_files(dir: &Path, errors: &mut Vec<LoadError>) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "xml"))
                .collect();
            files.sort();
            files
        }
        Err(e) => {
            errors.push(LoadError::new(
                dir.display().to_string(),
                0,
                format!("cannot list: {e}"),
            ));
            Vec::new()
        }
    }
}

/// The embedded default ruleset's files: (name, text), decoders then rules.
pub fn embedded() -> (Sources, Sources) {
    let own = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(n, t)| (format!("ruleset/{n}"), t.to_string()))
            .collect()
    };
    (own(default_ruleset::DECODERS), own(default_ruleset::RULES))
}

/// Loads the ruleset; every problem in every file is reported at once.
pub fn load(source: &RulesetSource) -> Result<Ruleset, LoadErrors> {
    load_with(source, &[], None, false)
}

/// The decoders of `ruleset` known to be steerable by the client (OSSEC's
/// stock ones, kept as they are for compatibility), each once: the
/// manager logs them at start-up and `check-config` prints them.
pub fn steerable_decoders(ruleset: &Ruleset) -> Vec<palisade_engine::steerable::Finding> {
    palisade_engine::steerable::find(&ruleset.decoders)
}

/// Like [`load`], but `decoder_files` and the rule files of `rules_dir`
/// (file-name order) replace the base set's decoders and rules when given
/// (`logtest --decoders --rules-dir`); `test_runner` makes the changes
/// Wazuh's test runner makes to a Wazuh ruleset
/// ([`palisade_engine::wazuh::test_runner_rewrite`], for `ruletest`).
pub fn load_with(
    source: &RulesetSource,
    decoder_files: &[PathBuf],
    rules_dir: Option<&Path>,
    test_runner: bool,
) -> Result<Ruleset, LoadErrors> {
    let mut errors = Vec::new();
    let dialect = source.dialect();
    let (mut decoders, mut rules, list_dir) = match (&source.wazuh_ruleset, &source.ossec_etc) {
        (Some(dir), _) => {
            let files = wazuh_ruleset_files(dir)?;
            let (mut ds, mut rs) = (Vec::new(), Vec::new());
            read_all(&files.decoders, &mut ds, &mut errors);
            read_all(&files.rules, &mut rs, &mut errors);
            if test_runner {
                for (name, text) in &mut rs {
                    *text = test_runner_rewrite(name, text);
                }
            }
            (ds, rs, Some(files.list_dir))
        }
        (None, Some(dir)) => {
            let (d, r) = ossec_etc_files(dir)?;
            let (mut ds, mut rs) = (Vec::new(), Vec::new());
            read_all(&d, &mut ds, &mut errors);
            read_all(&r, &mut rs, &mut errors);
            (ds, rs, Some(dir.clone()))
        }
        (None, None) if dialect.is_wazuh() => (Vec::new(), Vec::new(), None),
        (None, None) => {
            let (d, r) = embedded();
            (d, r, None)
        }
    };
    if !decoder_files.is_empty() {
        decoders.clear();
        read_all(decoder_files, &mut decoders, &mut errors);
    }
    if let Some(dir) = rules_dir {
        rules.clear();
        let files = xml_files(dir, &mut errors);
        if files.is_empty() {
            errors.push(LoadError::new(
                dir.display().to_string(),
                0,
                "no *.xml rule files here",
            ));
        }
        read_all(&files, &mut rules, &mut errors);
    }
    for dir in &source.dirs {
        let d = xml_files(&dir.join("decoders"), &mut errors);
        let r = xml_files(&dir.join("rules"), &mut errors);
        if d.is_empty() && r.is_empty() {
            errors.push(LoadError::new(
                dir.display().to_string(),
                0,
                "no decoders/*.xml or rules/*.xml here",
            ));
        }
        read_all(&d, &mut decoders, &mut errors);
        read_all(&r, &mut rules, &mut errors);
    }
    let list_dir = list_dir.or_else(|| source.dirs.first().cloned());
    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }
    Ruleset::load_sources_in(dialect, &decoders, &rules, list_dir.as_deref())
}

impl RulesetSource {
    /// The rule language the files are read in.
    pub fn dialect(&self) -> RulesetDialect {
        if self.wazuh_ruleset.is_some() {
            RulesetDialect::Wazuh
        } else {
            self.dialect
        }
    }
}
