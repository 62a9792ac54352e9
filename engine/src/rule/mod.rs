//! OSSEC rules: reading rule XML, building OSSEC's rule tree, and the
//! per-event conditions.
//!
//! Rule sets written for OSSEC depend on its exact evaluation order, so this
//! module reproduces `src/analysisd/rules.c` (parsing), `rules_list.c` (the
//! tree: sibling order by level with level 0 first, several parents per
//! rule, `if_sid`/`if_group`/`if_level`/category placement, `overwrite`) and
//! `OS_CheckIfRuleMatch` (conditions). The stateful part (frequency,
//! `if_matched_*`, `ignore`) lives in [`crate::correlate`]; the top-level
//! loop in [`crate::engine`].
//!
//! Submodules: [`cond`] (IP lists, time, weekday, CDB lists, compiled
//! rules), `parse` (XML to [`Rule`]), `tree` (placement).

pub mod cond;
pub mod matcher;
mod parse;
mod tree;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::dialect::RulesetDialect;
use crate::error::{LoadErrors, load_files_with};
use crate::event::{Category, FieldName};
use crate::pattern::Pattern;

pub use cond::{CompiledRule, IpList, KeyList, ListCheck, TimeRange, Weekdays};
pub use matcher::Matcher;
pub use tree::Search;

/// `<options>` of a rule (one keyword per element, OSSEC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleOptions {
    /// `alert_by_email`: mail even below `email_alert_level`.
    pub alert_by_email: bool,
    /// `no_email_alert`: never mail.
    pub no_email_alert: bool,
    /// `log_alert`.
    pub log_alert: bool,
    /// `no_log`: no alerts.log/alerts.json line (AR and correlation still happen).
    pub no_log: bool,
    /// `no_ar`: no active response.
    pub no_ar: bool,
    /// `no_full_log` (Wazuh): the alert carries no `full_log`.
    pub no_full_log: bool,
    /// `no_counter` (Wazuh): the alert carries no firing count.
    pub no_counter: bool,
}

/// One `<info>` or `<cve>` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoEntry {
    /// `text`, `link`, `cve` or `osvdb`.
    pub kind: String,
    /// The content.
    pub value: String,
}

/// `same_*` / `different_*` filters of a context rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SameFlags {
    /// `same_source_ip` (also accepted as `same_srcip`).
    pub source_ip: bool,
    /// `same_src_port`.
    pub src_port: bool,
    /// `same_dst_port`.
    pub dst_port: bool,
    /// `same_user` (compares dstuser only, as OSSEC).
    pub user: bool,
    /// `same_location` (compares the host name, OSSEC's behaviour).
    pub location: bool,
    /// `same_id`.
    pub id: bool,
    /// `different_url`.
    pub different_url: bool,
    /// `different_srcgeoip` (no GeoIP data: never filters).
    pub different_srcgeoip: bool,
}

/// What a Wazuh static filter compares between the current event and an
/// earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterField {
    /// A decoded field, static or dynamic.
    Field(FieldName),
    /// The event's location.
    Location,
    /// The source address's GeoIP location (no GeoIP data: never known).
    SrcGeoip,
    /// The destination address's GeoIP location (never known either).
    DstGeoip,
}

/// One Wazuh static filter (`same_*`, `different_*`): an earlier event
/// counts only if the field is known on both and equal (`same`) or
/// different.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticFilter {
    /// The field compared.
    pub field: FilterField,
    /// `same_*` (else `different_*`).
    pub same: bool,
}

/// Fields selected by `<ignore>` / `<check_if_ignored>` (substring words,
/// as OSSEC reads them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IgnoreFields {
    /// `name`: decoder name.
    pub name: bool,
    /// `id`.
    pub id: bool,
    /// `user`: dstuser.
    pub user: bool,
    /// `srcip`.
    pub srcip: bool,
    /// `dstip`.
    pub dstip: bool,
    /// `data`.
    pub data: bool,
    /// `location`.
    pub location: bool,
}

impl IgnoreFields {
    pub(crate) fn any(&self) -> bool {
        self.name || self.id || self.user || self.srcip || self.dstip || self.data || self.location
    }
}

/// The `*_pcre2` twins of the OS_Match/OS_Regex conditions. Kept apart
/// because OSSEC uses a twin only when the plain element is absent, and
/// `overwrite` copies the plain ones but not these.
#[derive(Debug, Default)]
pub struct Pcre2Twins {
    /// `match_pcre2`.
    pub matches: Option<Matcher>,
    /// `pcre2`.
    pub regex: Option<Matcher>,
    /// `user_pcre2`.
    pub user: Option<Matcher>,
    /// `id_pcre2`.
    pub id: Option<Matcher>,
    /// `srcport_pcre2`.
    pub srcport: Option<Matcher>,
    /// `dstport_pcre2`.
    pub dstport: Option<Matcher>,
    /// `status_pcre2`.
    pub status: Option<Matcher>,
    /// `hostname_pcre2`.
    pub hostname: Option<Matcher>,
    /// `extra_data_pcre2`.
    pub extra_data: Option<Matcher>,
    /// `program_name_pcre2`.
    pub program_name: Option<Matcher>,
}

/// Every per-event condition of one rule.
#[derive(Debug, Default)]
pub struct Conditions {
    /// The `*_pcre2` twins.
    pub pcre2: Pcre2Twins,
    /// `decoded_as`: decoder name.
    pub decoded_as: Option<String>,
    /// `program_name`.
    pub program_name: Option<Matcher>,
    /// `id` / `id_pcre2`.
    pub id: Option<Matcher>,
    /// `match` / `match_pcre2`.
    pub matches: Option<Matcher>,
    /// `regex` / `pcre2`.
    pub regex: Option<Matcher>,
    /// `action` (exact, case-sensitive; OSSEC).
    pub action: Option<String>,
    /// `action` (a pattern, Wazuh).
    pub action_match: Option<Matcher>,
    /// `location` (Wazuh).
    pub location: Option<Matcher>,
    /// `url`.
    pub url: Option<Matcher>,
    /// `url_pcre2` (checked in addition to `url`).
    pub url_pcre2: Option<Matcher>,
    /// `<field name="x">` (OS_Regex on the dynamic field by default), and
    /// Wazuh's `<protocol>`, `<system_name>`, `<data>`.
    pub fields: Vec<(FieldName, Matcher)>,
    /// `srcip`.
    pub srcip: Option<IpList>,
    /// `dstip`.
    pub dstip: Option<IpList>,
    /// `srcport` / `srcport_pcre2`.
    pub srcport: Option<Matcher>,
    /// `dstport` / `dstport_pcre2`.
    pub dstport: Option<Matcher>,
    /// `compiled_rule`.
    pub compiled: Option<CompiledRule>,
    /// `user` / `user_pcre2` (dstuser, else srcuser).
    pub user: Option<Matcher>,
    /// `srcgeoip` / `dstgeoip`: no GeoIP data here, so a rule with one never
    /// matches (as an OSSEC build without GeoIP).
    pub geoip: bool,
    /// `time`.
    pub time: Option<TimeRange>,
    /// `weekday`.
    pub weekday: Option<Weekdays>,
    /// `extra_data` / `extra_data_pcre2`.
    pub extra_data: Option<Matcher>,
    /// `hostname` / `hostname_pcre2`.
    pub hostname: Option<Matcher>,
    /// `status` / `status_pcre2`.
    pub status: Option<Matcher>,
    /// `check_diff`.
    pub check_diff: bool,
    /// `if_fts`.
    pub if_fts: bool,
    /// `list` lookups.
    pub lists: Vec<ListCheck>,
}

/// The stateful part of a rule.
#[derive(Debug, Default)]
pub struct ContextSpec {
    /// `if_matched_sid`.
    pub if_matched_sid: Option<u32>,
    /// `if_matched_group` (OS_Match on group strings).
    pub if_matched_group: Option<Pattern>,
    /// `if_matched_group` text (for placement and display).
    pub if_matched_group_text: Option<String>,
    /// `if_matched_regex` (OS_Regex on earlier events' `log`).
    pub if_matched_regex: Option<Pattern>,
    /// Filters.
    pub same: SameFlags,
    /// Wazuh's static filters on any field (besides `same.source_ip`).
    pub filters: Vec<StaticFilter>,
    /// `<global_frequency/>` (Wazuh): count earlier events of every agent,
    /// not only the current event's agent.
    pub global_frequency: bool,
}

impl ContextSpec {
    /// Whether the rule is a context (stateful) rule.
    pub fn is_context(&self) -> bool {
        self.if_matched_sid.is_some()
            || self.if_matched_group.is_some()
            || self.if_matched_regex.is_some()
    }
}

/// One rule as loaded.
#[derive(Debug)]
pub struct Rule {
    /// `id`.
    pub id: u32,
    /// `level`.
    pub level: u32,
    /// OSSEC's load-time level used for sibling order: `level × 100`,
    /// level 0 as 9900, `accuracy="0"` not multiplied.
    pub sort_level: u32,
    /// `maxsize`.
    pub maxsize: u32,
    /// `frequency` as written (fires on `frequency + 2` events).
    pub frequency: u32,
    /// `timeframe` in seconds.
    pub timeframe: u32,
    /// `ignore` attribute in seconds (0 = none).
    pub ignore_secs: u32,
    /// `noalert`.
    pub noalert: bool,
    /// Category (template under which the rule sits).
    pub category: Category,
    /// The group string: `<group name>` then every `<group>`, verbatim.
    pub group: String,
    /// `description` fragments concatenated.
    pub description: String,
    /// `info` and `cve` entries.
    pub info: Vec<InfoEntry>,
    /// `options`.
    pub options: RuleOptions,
    /// Conditions.
    pub cond: Conditions,
    /// Context (frequency) part.
    pub ctx: ContextSpec,
    /// `<ignore>` fields.
    pub ignore_fields: IgnoreFields,
    /// `<check_if_ignored>` fields.
    pub check_if_ignored: IgnoreFields,
    /// `if_sid` ids, in order.
    pub if_sid: Vec<u32>,
    /// `if_group` text.
    pub if_group: Option<String>,
    /// `if_level`.
    pub if_level: Option<u32>,
    /// `<mitre><id>` technique ids (Wazuh).
    pub mitre: Vec<String>,
    /// How many earlier matching events complete a context search: OSSEC
    /// `frequency + 1` (fires on the `frequency + 2`-th event), Wazuh
    /// `frequency - 1` (on the N-th), at least 1.
    pub fires_after: u32,
    /// File the rule came from.
    pub file: String,
    /// Line of the `<rule>` element.
    pub line: usize,
}

impl Rule {
    /// The group string split at commas, empty parts dropped.
    pub fn groups(&self) -> Vec<String> {
        self.group
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(String::from)
            .collect()
    }
}

/// Index of a rule in [`RuleSet::rules`].
pub type RuleIdx = usize;

/// A node of the rule tree. A rule with several parents has one node per
/// parent, as in OSSEC (children added later go to the node OSSEC's search
/// finds, not necessarily to all of them).
#[derive(Debug, Clone)]
pub struct Node {
    /// The rule.
    pub rule: RuleIdx,
    /// Children in evaluation order.
    pub children: Vec<usize>,
}

/// Options for loading rules.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Names of the loaded decoders, for checking `decoded_as`; `None`
    /// skips the check.
    pub decoder_names: Option<HashSet<String>>,
    /// Directory that `<list>` paths are relative to (an OSSEC `etc`
    /// directory, or its parent for paths written as `etc/lists/x`).
    pub list_dir: Option<PathBuf>,
    /// `analysisd.default_timeframe` (OSSEC: 360).
    pub default_timeframe: u32,
    /// The rule language of the files.
    pub dialect: RulesetDialect,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            decoder_names: None,
            list_dir: None,
            default_timeframe: 360,
            dialect: RulesetDialect::Ossec,
        }
    }
}

/// A loaded rule set: the rules, the tree and the correlation wiring.
#[derive(Debug, Default)]
pub struct RuleSet {
    /// Every rule, in load order.
    pub rules: Vec<Rule>,
    /// Tree nodes.
    pub nodes: Vec<Node>,
    /// Top-level nodes (the id < 10 templates), in order.
    pub top: Vec<usize>,
    /// Rule index by id.
    pub by_id: HashMap<u32, RuleIdx>,
    /// Rules whose final alerts feed a sid list (some rule's
    /// `if_matched_sid` names them).
    pub has_sid_list: Vec<bool>,
    /// For each rule, the frequency rules whose group list it feeds.
    pub feeds_groups: Vec<Vec<RuleIdx>>,
    /// How long entries of each rule's lists can matter (max timeframe of
    /// the rules reading them), in seconds.
    pub list_horizon: Vec<u32>,
    /// Which list each rule's context search reads.
    pub search: Vec<Search>,
    /// How long the global history matters for `if_matched_regex` rules.
    pub events_horizon: u32,
    /// Loaded `<list>` files, by the path text used in the rules.
    pub lists: HashMap<String, KeyList>,
    /// Problems Wazuh only warns about (a rule left out, an `if_sid`
    /// target ignored): the rest of the set loads.
    pub warnings: Vec<crate::error::LoadError>,
    /// Whether a context rule compares fields beyond OSSEC's few
    /// (Wazuh static filters): stored events then keep all their fields.
    pub keeps_fields: bool,
    /// The rule language the set was read in (Wazuh's context searches
    /// mark events differently, see [`crate::correlate`]).
    pub dialect: RulesetDialect,
}

impl RuleSet {
    /// Loads rule files given as `(name, content)` pairs, in order.
    /// Returns every problem at once.
    pub fn load(sources: &[(String, String)], opts: &LoadOptions) -> Result<RuleSet, LoadErrors> {
        let mut b = tree::Builder::new(opts.clone());
        for (name, text) in sources {
            b.add_file(name, text);
        }
        b.finish()
    }

    /// Reads and loads rule files in order.
    pub fn load_files(paths: &[PathBuf], opts: &LoadOptions) -> Result<RuleSet, LoadErrors> {
        load_files_with(paths, |sources| Self::load(sources, opts))
    }

    /// The rule with this id.
    pub fn rule(&self, id: u32) -> Option<&Rule> {
        self.by_id.get(&id).map(|&i| &self.rules[i])
    }

    /// Children of the first node of rule `id`, as rule ids, in evaluation
    /// order (for tests and `ruletest` explanations).
    pub fn child_ids(&self, id: u32) -> Vec<u32> {
        let Some(&ri) = self.by_id.get(&id) else {
            return Vec::new();
        };
        self.nodes
            .iter()
            .find(|n| n.rule == ri)
            .map(|n| {
                n.children
                    .iter()
                    .map(|&c| self.rules[self.nodes[c].rule].id)
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub(crate) fn resolve_list_path(dir: Option<&Path>, path: &str) -> Vec<PathBuf> {
    let p = Path::new(path);
    let mut out = Vec::new();
    if p.is_absolute() {
        out.push(p.to_path_buf());
        return out;
    }
    if let Some(d) = dir {
        out.push(d.join(p));
        if let Some(rest) = path.strip_prefix("etc/") {
            out.push(d.join(rest));
        }
    } else {
        out.push(p.to_path_buf());
    }
    out
}
