//! Building OSSEC's rule tree (`src/analysisd/rules_list.c`).
//!
//! The placement search mirrors `_AddtoRule` exactly, because its quirks
//! decide which rules are ever tried: an `if_sid` child is attached to the
//! first node of the parent that a depth-first walk meets in each sibling
//! list (not to every node of a rule that has several parents); `if_group`
//! and `if_level` attach to every node that qualifies; level-0 rules sort
//! first among siblings (their load-time level is 9900).

use super::parse::{is_overwrite, parse_rule};
use super::{LoadOptions, Node, Rule, RuleIdx, RuleSet, cond};
use crate::error::{LoadError, LoadErrors};
use crate::xml::{self, Element};

/// Which list a context rule searches (`event_search` in OSSEC), fixed when
/// the rule is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Search {
    /// Not a context rule (or its `if_matched_sid` target was not loaded:
    /// it can never match, as in OSSEC).
    #[default]
    None,
    /// `Search_LastSids`: the sid list of this rule.
    Sids(RuleIdx),
    /// `Search_LastGroups`: the rule's own group list.
    Groups,
    /// `Search_LastEvents`: the global history (`if_matched_regex`).
    Events,
}

enum Target<'a> {
    Sid(u32),
    Group(&'a str),
    Level(u32),
    Category,
}

/// OSSEC `OS_WordMatch`: `|` alternatives, leading `^` = prefix, otherwise
/// substring; case-insensitive.
pub(crate) fn word_match(pattern: &str, text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    pattern.split('|').any(|alt| {
        let alt = alt.to_ascii_lowercase();
        match alt.strip_prefix('^') {
            Some(p) => text.starts_with(p),
            None => text.contains(&alt),
        }
    })
}

pub(crate) struct Builder {
    opts: LoadOptions,
    rs: RuleSet,
    errors: Vec<LoadError>,
    /// Wazuh: `if_sid` ids not found while placing the current rule.
    missing_sids: Vec<String>,
}

impl Builder {
    pub(crate) fn new(opts: LoadOptions) -> Self {
        Self {
            opts,
            rs: RuleSet::default(),
            errors: Vec::new(),
            missing_sids: Vec::new(),
        }
    }

    fn err(&mut self, file: &str, line: usize, reason: impl Into<String>) {
        self.errors.push(LoadError::new(file, line, reason));
    }

    fn warn(&mut self, file: &str, line: usize, reason: impl Into<String>) {
        self.rs.warnings.push(LoadError::new(file, line, reason));
    }

    pub(crate) fn add_file(&mut self, file: &str, text: &str) {
        let roots = match xml::parse_in(text, self.opts.dialect) {
            Ok(r) => r,
            Err(e) => {
                self.err(file, e.line, e.message);
                return;
            }
        };
        for root in &roots {
            if root.name.eq_ignore_ascii_case("var") {
                continue;
            }
            if !root.name.eq_ignore_ascii_case("group") {
                self.err(
                    file,
                    root.line,
                    format!(
                        "invalid root element <{}>: only <group> is allowed",
                        root.name
                    ),
                );
                continue;
            }
            let name = match root.attrs.as_slice() {
                [(k, v)] if k.eq_ignore_ascii_case("name") => v.clone(),
                _ => {
                    self.err(
                        file,
                        root.line,
                        "a <group> takes exactly one attribute, name",
                    );
                    continue;
                }
            };
            if root.children.is_empty() {
                self.err(file, root.line, format!("group '{name}' without any rule"));
                continue;
            }
            for el in &root.children {
                if !el.name.eq_ignore_ascii_case("rule") {
                    self.err(
                        file,
                        el.line,
                        format!("<{}> is not a valid element in a group", el.name),
                    );
                    continue;
                }
                self.add_rule_element(el, &name, file);
            }
        }
    }

    fn add_rule_element(&mut self, el: &Element, group: &str, file: &str) {
        let mut warnings = Vec::new();
        let parsed = parse_rule(
            el,
            group,
            file,
            self.opts.default_timeframe,
            self.opts.decoder_names.as_ref(),
            self.opts.dialect,
            &mut warnings,
        );
        for (line, reason) in warnings {
            self.warn(file, line, reason);
        }
        let rule = match parsed {
            Ok(r) => r,
            Err(problems) => {
                for (line, reason) in problems {
                    self.err(file, line, reason);
                }
                return;
            }
        };
        let overwrite = is_overwrite(el);
        if !overwrite && self.rs.by_id.contains_key(&rule.id) {
            if self.opts.dialect.is_wazuh() {
                // Wazuh (7612): only the first occurrence is considered.
                self.warn(
                    file,
                    rule.line,
                    format!("rule id {} is duplicated; the first one is kept", rule.id),
                );
            } else {
                self.err(file, rule.line, format!("duplicate rule id {}", rule.id));
            }
            return;
        }
        if !self.load_lists(&rule) {
            return;
        }
        let id = rule.id;
        let line = rule.line;
        if id < 10 {
            let idx = self.push_rule(rule);
            let node = self.new_node(idx);
            let mut top = std::mem::take(&mut self.rs.top);
            self.insert_sorted(&mut top, node);
            self.rs.top = top;
            self.rs.by_id.insert(id, idx);
            self.wire(idx);
        } else if overwrite {
            match self.rs.by_id.get(&id).copied() {
                Some(existing) if self.opts.dialect.is_wazuh() => {
                    overwrite_wazuh_rule(&mut self.rs.rules[existing], rule)
                }
                Some(existing) => overwrite_rule(&mut self.rs.rules[existing], rule),
                None => self.err(
                    file,
                    line,
                    format!("overwrite rule {id} not found (it must be loaded first)"),
                ),
            }
        } else {
            let idx = self.push_rule(rule);
            let placed = self.place(idx);
            for reason in std::mem::take(&mut self.missing_sids) {
                self.warn(file, line, reason);
            }
            match placed {
                Ok(()) => {
                    self.rs.by_id.insert(id, idx);
                    self.wire(idx);
                }
                // Wazuh leaves a rule it cannot place out, with a warning.
                Err(reason) if self.opts.dialect.is_wazuh() => self.warn(file, line, reason),
                Err(reason) => {
                    self.err(file, line, reason);
                    // Keep indices stable: the rule stays unplaced and unknown.
                }
            }
        }
    }

    /// Loads the lists `rule` reads; false when the rule must be left out
    /// (Wazuh leaves out a rule whose list is missing, with a warning).
    fn load_lists(&mut self, rule: &Rule) -> bool {
        for lc in &rule.cond.lists {
            if self.rs.lists.contains_key(&lc.path) {
                continue;
            }
            let candidates = super::resolve_list_path(self.opts.list_dir.as_deref(), &lc.path);
            let text = candidates.iter().find_map(|p| std::fs::read(p).ok());
            match text {
                Some(bytes) => {
                    let list = cond::parse_list(&String::from_utf8_lossy(&bytes));
                    self.rs.lists.insert(lc.path.clone(), list);
                }
                None if self.opts.dialect.is_wazuh() => {
                    self.rs.warnings.push(LoadError::new(
                        rule.file.clone(),
                        rule.line,
                        format!(
                            "rule {}: list '{}' not found; the rule is ignored, as Wazuh does",
                            rule.id, lc.path
                        ),
                    ));
                    return false;
                }
                None => {
                    let tried: Vec<String> =
                        candidates.iter().map(|p| p.display().to_string()).collect();
                    self.errors.push(LoadError::new(
                        rule.file.clone(),
                        rule.line,
                        format!(
                            "rule {}: cannot read list '{}' (tried {})",
                            rule.id,
                            lc.path,
                            tried.join(", ")
                        ),
                    ));
                }
            }
        }
        true
    }

    fn push_rule(&mut self, rule: Rule) -> RuleIdx {
        self.rs.rules.push(rule);
        self.rs.search.push(Search::None);
        self.rs.feeds_groups.push(Vec::new());
        self.rs.rules.len() - 1
    }

    fn new_node(&mut self, rule: RuleIdx) -> usize {
        self.rs.nodes.push(Node {
            rule,
            children: Vec::new(),
        });
        self.rs.nodes.len() - 1
    }

    /// `_OS_AddRule`: before the first sibling with a lower load-time level.
    fn insert_sorted(&self, list: &mut Vec<usize>, node: usize) {
        let lvl = self.rs.rules[self.rs.nodes[node].rule].sort_level;
        let pos = list
            .iter()
            .position(|&n| lvl > self.rs.rules[self.rs.nodes[n].rule].sort_level)
            .unwrap_or(list.len());
        list.insert(pos, node);
    }

    fn add_child(&mut self, parent: usize, rule: RuleIdx) {
        let node = self.new_node(rule);
        let mut kids = std::mem::take(&mut self.rs.nodes[parent].children);
        self.insert_sorted(&mut kids, node);
        self.rs.nodes[parent].children = kids;
    }

    /// `OS_AddChild`.
    fn place(&mut self, idx: RuleIdx) -> Result<(), String> {
        let r = &self.rs.rules[idx];
        let id = r.id;
        if !r.if_sid.is_empty() {
            let mut placed = false;
            for sid in r.if_sid.clone() {
                let top = self.rs.top.clone();
                if self.add_to_rule(&top, &Target::Sid(sid), idx) {
                    placed = true;
                } else if self.opts.dialect.is_wazuh() {
                    // Wazuh ignores the missing id and keeps the others.
                    self.missing_sids.push(format!(
                        "rule {id}: signature id {sid} not found in if_sid; ignored"
                    ));
                } else {
                    return Err(format!(
                        "rule {id}: signature id {sid} not found (invalid if_sid)"
                    ));
                }
            }
            if !placed {
                return Err(format!(
                    "rule {id}: no signature id of if_sid was found; the rule is ignored"
                ));
            }
        } else if let Some(lvl) = r.if_level {
            let top = self.rs.top.clone();
            if !self.add_to_rule(&top, &Target::Level(lvl * 100), idx) {
                return Err(format!(
                    "rule {id}: no rule of level {lvl} or more (invalid if_level)"
                ));
            }
        } else if let Some(g) = r.if_group.clone() {
            let top = self.rs.top.clone();
            if !self.add_to_rule(&top, &Target::Group(&g), idx) {
                return Err(format!(
                    "rule {id}: group '{g}' not found (invalid if_group)"
                ));
            }
        } else {
            let top = self.rs.top.clone();
            if !self.add_to_rule(&top, &Target::Category, idx) {
                return Err(format!(
                    "rule {id}: no template rule for category '{}'",
                    self.rs.rules[idx].category.as_str()
                ));
            }
        }
        Ok(())
    }

    /// `_AddtoRule`, walking one sibling list and recursing into children.
    fn add_to_rule(&mut self, list: &[usize], t: &Target<'_>, new: RuleIdx) -> bool {
        let mut found = false;
        let new_id = self.rs.rules[new].id;
        for &n in list {
            let r = self.rs.nodes[n].rule;
            match t {
                Target::Sid(sid) => {
                    if self.rs.rules[r].id == *sid {
                        self.rs.rules[new].category = self.rs.rules[r].category;
                        self.add_child(n, new);
                        return true;
                    }
                }
                Target::Group(g) => {
                    if word_match(g, &self.rs.rules[r].group) && self.rs.rules[r].id != new_id {
                        self.add_child(n, new);
                        found = true;
                    }
                }
                Target::Level(l) => {
                    if self.rs.rules[r].sort_level >= *l && self.rs.rules[r].id != new_id {
                        self.add_child(n, new);
                        found = true;
                    }
                }
                Target::Category => {
                    if self.rs.rules[new].category != self.rs.rules[r].category {
                        continue;
                    }
                    self.add_child(n, new);
                    return true;
                }
            }
            let kids = self.rs.nodes[n].children.clone();
            if !kids.is_empty() && self.add_to_rule(&kids, t, new) {
                found = true;
            }
        }
        found
    }

    /// `OS_MarkID` / `OS_MarkGroup` and the `event_search` choice.
    fn wire(&mut self, idx: RuleIdx) {
        let ctx = &self.rs.rules[idx].ctx;
        if let Some(sid) = ctx.if_matched_sid {
            if let Some(&target) = self.rs.by_id.get(&sid) {
                self.rs.search[idx] = Search::Sids(target);
            }
        } else if let Some(p) = &ctx.if_matched_group {
            self.rs.search[idx] = Search::Groups;
            // Every rule in the tree (placed before or this one) whose group
            // string matches feeds this rule's list.
            let mut placed: Vec<RuleIdx> = self.rs.nodes.iter().map(|n| n.rule).collect();
            placed.sort_unstable();
            placed.dedup();
            let hits: Vec<RuleIdx> = placed
                .into_iter()
                .filter(|&r| p.is_match(self.rs.rules[r].group.as_bytes()))
                .collect();
            for r in hits {
                if !self.rs.feeds_groups[r].contains(&idx) {
                    self.rs.feeds_groups[r].push(idx);
                }
            }
        } else if ctx.if_matched_regex.is_some() {
            self.rs.search[idx] = Search::Events;
        }
    }

    pub(crate) fn finish(mut self) -> Result<RuleSet, LoadErrors> {
        let n = self.rs.rules.len();
        self.rs.has_sid_list = vec![false; n];
        self.rs.list_horizon = vec![0; n];
        for i in 0..n {
            match self.rs.search[i] {
                Search::Sids(t) => {
                    self.rs.has_sid_list[t] = true;
                    self.rs.list_horizon[t] =
                        self.rs.list_horizon[t].max(self.rs.rules[i].timeframe);
                }
                Search::Groups => {
                    self.rs.list_horizon[i] =
                        self.rs.list_horizon[i].max(self.rs.rules[i].timeframe);
                }
                _ => {}
            }
        }
        self.rs.keeps_fields = self.rs.rules.iter().any(|r| !r.ctx.filters.is_empty());
        self.rs.dialect = self.opts.dialect;
        self.rs.events_horizon = (0..n)
            .filter(|&i| self.rs.search[i] == Search::Events)
            .map(|i| self.rs.rules[i].timeframe)
            .max()
            .unwrap_or(0);
        if self.errors.is_empty() {
            Ok(self.rs)
        } else {
            Err(LoadErrors(self.errors))
        }
    }
}

/// Wazuh's overwrite: every condition, option and annotation of the new
/// rule replaces the old one's; the tree position, the category and the
/// context wiring stay (as in OSSEC).
fn overwrite_wazuh_rule(old: &mut Rule, new: Rule) {
    old.level = new.level;
    old.sort_level = new.sort_level;
    old.maxsize = new.maxsize;
    old.frequency = new.frequency;
    old.fires_after = new.fires_after;
    old.timeframe = new.timeframe;
    old.ignore_secs = new.ignore_secs;
    old.noalert = new.noalert;
    old.group = new.group;
    old.description = new.description;
    old.info = new.info;
    old.mitre = new.mitre;
    old.options = new.options;
    old.cond = new.cond;
    old.ctx = new.ctx;
    old.ignore_fields = new.ignore_fields;
    old.check_if_ignored = new.check_if_ignored;
}

/// `OS_AddRuleInfo`: copy what OSSEC copies onto the existing rule. Not
/// copied: tree position, category, `*_pcre2` matchers, `<list>`,
/// `<field>`, `<ignore>`/`<check_if_ignored>`, and the context wiring.
fn overwrite_rule(old: &mut Rule, new: Rule) {
    old.level = new.level;
    old.sort_level = new.sort_level;
    old.maxsize = new.maxsize;
    old.frequency = new.frequency;
    old.timeframe = new.timeframe;
    old.ignore_secs = new.ignore_secs;
    old.noalert = new.noalert;
    old.group = new.group;
    old.description = new.description;
    old.info = new.info;
    old.options = new.options;
    let c = new.cond;
    old.cond.matches = c.matches;
    old.cond.regex = c.regex;
    old.cond.time = c.time;
    old.cond.weekday = c.weekday;
    old.cond.srcip = c.srcip;
    old.cond.dstip = c.dstip;
    old.cond.srcport = c.srcport;
    old.cond.dstport = c.dstport;
    old.cond.user = c.user;
    old.cond.url = c.url;
    old.cond.id = c.id;
    old.cond.status = c.status;
    old.cond.hostname = c.hostname;
    old.cond.program_name = c.program_name;
    old.cond.extra_data = c.extra_data;
    old.cond.action = c.action;
    old.cond.decoded_as = c.decoded_as;
    old.cond.compiled = c.compiled;
    old.cond.check_diff = c.check_diff;
    old.cond.if_fts = c.if_fts;
    old.ctx = new.ctx;
}
