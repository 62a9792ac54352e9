//! The top level: a [`Ruleset`] (decoders + rules, loaded once, shared) and
//! an [`Engine`] (a ruleset plus correlation state) that turns pre-decoded
//! events into alerts the way `ossec-analysisd`'s main loop does.
//!
//! Time is always a parameter: `now` is the arrival time (OSSEC `c_time`),
//! used for correlation windows, `ignore` and, converted with the engine's
//! zone, for `<time>` and `<weekday>`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;

pub use crate::alert::Alert;
use crate::alert::{WazuhDetail, fill_description};
use crate::correlate::{Barrier, CorrelateLimits, Correlator};
use crate::decoder::DecoderSet;
use crate::dialect::RulesetDialect;
use crate::error::{LoadError, LoadErrors};
use crate::event::Event;
use crate::rule::{IgnoreFields, LoadOptions, Matcher, RuleIdx, RuleSet};
use crate::xml;

/// Decoders and rules, loaded together so that `decoded_as` is checked.
#[derive(Debug)]
pub struct Ruleset {
    /// The decoders.
    pub decoders: DecoderSet,
    /// The rules.
    pub rules: RuleSet,
    /// `<fts>` fields by decoder own name (first block that has them).
    fts_by_decoder: HashMap<String, Vec<String>>,
    /// The rule language the files were read in.
    pub dialect: RulesetDialect,
}

impl Ruleset {
    /// Combines loaded decoders and rules.
    pub fn new(decoders: DecoderSet, rules: RuleSet) -> Self {
        let mut fts_by_decoder: HashMap<String, Vec<String>> = HashMap::new();
        for d in decoders.decoders() {
            if !d.fts.is_empty() {
                fts_by_decoder
                    .entry(d.own_name.clone())
                    .or_insert_with(|| d.fts.clone());
            }
        }
        Self {
            dialect: decoders.dialect(),
            decoders,
            rules,
            fts_by_decoder,
        }
    }

    /// Decodes a pre-decoded event in place. Needs no state, so callers
    /// may decode on any thread before handing the event to the engine's
    /// rules ([`Engine::judge`]); [`Engine::process`] is both steps.
    pub fn decode(&self, event: &mut Event) {
        #[cfg(feature = "test-panic-trigger")]
        test_panic_trigger::before_decoding(event);
        self.decoders.decode(event);
    }

    /// Loads decoder files, then rule files (in order), checking
    /// `decoded_as` against the decoders. `list_dir` is where `<list>`
    /// paths are resolved. Every problem of both steps is returned at once.
    pub fn load_files(
        decoders: &[PathBuf],
        rules: &[PathBuf],
        list_dir: Option<&Path>,
    ) -> Result<Ruleset, LoadErrors> {
        Self::load_with(
            DecoderSet::load_files(decoders),
            RulesetDialect::Ossec,
            list_dir,
            |opts| RuleSet::load_files(rules, opts),
        )
    }

    /// Like [`Ruleset::load_files`], from `(name, content)` pairs already
    /// in memory (the default ruleset is compiled into the binaries, so
    /// `logtest` and `ruletest` work from any directory).
    pub fn load_sources(
        decoders: &[(String, String)],
        rules: &[(String, String)],
        list_dir: Option<&Path>,
    ) -> Result<Ruleset, LoadErrors> {
        Self::load_sources_in(RulesetDialect::Ossec, decoders, rules, list_dir)
    }

    /// [`Ruleset::load_sources`] for files written in `dialect`.
    pub fn load_sources_in(
        dialect: RulesetDialect,
        decoders: &[(String, String)],
        rules: &[(String, String)],
        list_dir: Option<&Path>,
    ) -> Result<Ruleset, LoadErrors> {
        Self::load_with(
            DecoderSet::load_in(dialect, decoders),
            dialect,
            list_dir,
            |opts| RuleSet::load(rules, opts),
        )
    }

    /// Loads the rules once the decoders are loaded (or failed to), so
    /// that `decoded_as` is checked against them, and returns the problems
    /// of both steps together.
    fn load_with(
        decoders: Result<DecoderSet, LoadErrors>,
        dialect: RulesetDialect,
        list_dir: Option<&Path>,
        load_rules: impl FnOnce(&LoadOptions) -> Result<RuleSet, LoadErrors>,
    ) -> Result<Ruleset, LoadErrors> {
        let mut errors = Vec::new();
        let dec = match decoders {
            Ok(d) => Some(d),
            Err(LoadErrors(mut e)) => {
                errors.append(&mut e);
                None
            }
        };
        let opts = LoadOptions {
            decoder_names: dec.as_ref().map(decoder_names),
            list_dir: list_dir.map(Path::to_path_buf),
            dialect,
            ..LoadOptions::default()
        };
        let rs = match load_rules(&opts) {
            Ok(r) => Some(r),
            Err(LoadErrors(mut e)) => {
                errors.append(&mut e);
                None
            }
        };
        match (dec, rs) {
            (Some(d), Some(r)) if errors.is_empty() => Ok(Ruleset::new(d, r)),
            _ => Err(LoadErrors(errors)),
        }
    }

    /// Loads an OSSEC `etc` directory: `DIR/decoder.xml` (plus
    /// `DIR/local_decoder.xml` if present, or the `<decoder>` entries of the
    /// config) and `DIR/rules/*.xml` in the `<include>` order of
    /// `DIR/ossec-server.conf` or `DIR/ossec.conf`. `<list>` paths resolve
    /// against DIR (and DIR's parent for `etc/...` paths).
    pub fn load_ossec_etc(dir: &Path) -> Result<Ruleset, LoadErrors> {
        let (decoders, rules) = ossec_etc_files(dir)?;
        Self::load_files(&decoders, &rules, Some(dir))
    }
}

/// Names analysisd registers itself before reading `decoder.xml`
/// (`ReadDecodeXML`): the syscheck, rootcheck and host-information events
/// that rules may name in `decoded_as`.
pub const BUILTIN_DECODERS: [&str; 8] = [
    "rootcheck",
    "syscheck_integrity_changed",
    "syscheck_integrity_changed_2nd",
    "syscheck_integrity_changed_3rd",
    "syscheck_new_entry",
    "syscheck_deleted",
    "hostinfo_modified",
    "hostinfo_new",
];

/// Names Wazuh's analysisd registers besides OSSEC's: decoders of its
/// agent modules (FIM registry, inventory, CIS-CAT, SCA, Windows event
/// channel). Palisade's agents send no such events, so rules on them load
/// and never match.
pub const WAZUH_BUILTIN_DECODERS: [&str; 10] = [
    "syscheck_registry_key_modified",
    "syscheck_registry_key_deleted",
    "syscheck_registry_key_added",
    "syscheck_registry_value_modified",
    "syscheck_registry_value_deleted",
    "syscheck_registry_value_added",
    "syscollector",
    "ciscat",
    "sca",
    "windows_eventchannel",
];

fn decoder_names(d: &DecoderSet) -> HashSet<String> {
    let wazuh: &[&str] = if d.dialect().is_wazuh() {
        &WAZUH_BUILTIN_DECODERS
    } else {
        &[]
    };
    d.decoders()
        .iter()
        .map(|x| x.name.clone())
        .chain(BUILTIN_DECODERS.iter().chain(wazuh).map(|s| s.to_string()))
        .collect()
}

/// The decoder and rule files of an OSSEC `etc` directory, in load order.
pub fn ossec_etc_files(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), LoadErrors> {
    let conf = ["ossec-server.conf", "ossec.conf"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file());
    let Some(conf) = conf else {
        return Err(LoadErrors(vec![LoadError::new(
            dir.display().to_string(),
            0,
            "no ossec-server.conf or ossec.conf in this directory",
        )]));
    };
    let file = conf.display().to_string();
    let text = std::fs::read(&conf).map_err(|e| {
        LoadErrors(vec![LoadError::new(
            file.clone(),
            0,
            format!("cannot read: {e}"),
        )])
    })?;
    let roots = xml::parse(&String::from_utf8_lossy(&text))
        .map_err(|e| LoadErrors(vec![LoadError::new(file.clone(), e.line, e.message)]))?;
    let home = dir.parent().unwrap_or(dir);
    let resolve = |p: &str, default_dir: &Path| -> PathBuf {
        let p = p.trim();
        if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else if p.contains('/') {
            home.join(p)
        } else {
            default_dir.join(p)
        }
    };
    let mut rules = Vec::new();
    let mut decoders = Vec::new();
    let mut stack: Vec<&xml::Element> = roots.iter().collect();
    let mut in_order = Vec::new();
    while let Some(e) = stack.pop() {
        in_order.push(e);
        for c in e.children.iter().rev() {
            stack.push(c);
        }
    }
    // Only `<rules>` blocks (anywhere) carry includes.
    let mut rules_blocks: Vec<&xml::Element> = Vec::new();
    for e in &in_order {
        if e.name == "rules" {
            rules_blocks.push(e);
        }
    }
    for b in rules_blocks {
        for c in &b.children {
            match c.name.as_str() {
                "include" | "rule" => rules.push(resolve(&c.text, &dir.join("rules"))),
                "decoder" => decoders.push(resolve(&c.text, dir)),
                _ => {}
            }
        }
    }
    if decoders.is_empty() {
        decoders.push(dir.join("decoder.xml"));
        let local = dir.join("local_decoder.xml");
        if local.is_file() {
            decoders.push(local);
        }
    }
    if rules.is_empty() {
        return Err(LoadErrors(vec![LoadError::new(
            file,
            0,
            "no <rules><include> entries",
        )]));
    }
    Ok((decoders, rules))
}

/// What the rules made of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// No rule matched (logtest exit 255 when a decoder matched).
    NoMatch,
    /// A level-0 rule matched: the event is silently swallowed.
    Silent {
        /// The rule id.
        rule_id: u32,
    },
    /// The rule matched but the event was dropped by `ignore="N"` or
    /// `<check_if_ignored>`: nothing is alerted, not even a parent.
    Suppressed {
        /// The rule id.
        rule_id: u32,
        /// Its level.
        level: u32,
    },
    /// An alert.
    Alert(Box<Alert>),
}

impl Verdict {
    /// The final rule id and level, as `ossec-logtest` reports them.
    pub fn rule_and_level(&self) -> Option<(u32, u32)> {
        match self {
            Verdict::NoMatch => None,
            Verdict::Silent { rule_id } => Some((*rule_id, 0)),
            Verdict::Suppressed { rule_id, level } => Some((*rule_id, *level)),
            Verdict::Alert(a) => Some((a.rule_id, a.level)),
        }
    }

    /// The alert, if any.
    pub fn into_alert(self) -> Option<Alert> {
        match self {
            Verdict::Alert(a) => Some(*a),
            _ => None,
        }
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Zone for `<time>` and `<weekday>` (OSSEC uses the manager's local time).
    pub zone: TimeZone,
    /// Memory bounds.
    pub limits: CorrelateLimits,
    /// Barrier semantics of frequency rules (OSSEC's by default).
    pub barrier: Barrier,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            zone: TimeZone::UTC,
            limits: CorrelateLimits::default(),
            barrier: Barrier::default(),
        }
    }
}

/// A ruleset plus correlation state. One per stream of events that should
/// correlate together (OSSEC: one per manager).
#[derive(Debug)]
pub struct Engine {
    ruleset: Arc<Ruleset>,
    zone: TimeZone,
    state: Correlator,
    lower_buf: Vec<u8>,
    /// How many alerts each rule raised (Wazuh's `firedtimes`; counted in
    /// the Wazuh dialect only).
    fired: HashMap<RuleIdx, u64>,
}

/// Per-event evaluation scratch.
struct Ctx<'e> {
    ev: &'e Event,
    now: i64,
    minute: u32,
    weekday: u8,
    matched: u32,
    fts: Option<bool>,
    lines: HashMap<RuleIdx, Vec<String>>,
    /// `log` lower-cased, made on first use and shared by every `<match>`
    /// and `<regex>` of the walk (the literal matchers search lower-cased
    /// text; see `pattern.rs`). The buffer is the engine's, reused.
    lower: Vec<u8>,
    lower_ready: bool,
}

impl Ctx<'_> {
    fn lower_log(&mut self) -> &[u8] {
        if !self.lower_ready {
            self.lower.clear();
            self.lower
                .extend(self.ev.log().iter().map(u8::to_ascii_lowercase));
            self.lower_ready = true;
        }
        &self.lower
    }
}

impl Engine {
    /// A fresh engine over `ruleset`.
    pub fn new(ruleset: Arc<Ruleset>, config: EngineConfig) -> Self {
        Self {
            ruleset,
            zone: config.zone,
            state: Correlator::with_barrier(config.limits, config.barrier),
            lower_buf: Vec::new(),
            fired: HashMap::new(),
        }
    }

    /// The ruleset.
    pub fn ruleset(&self) -> &Arc<Ruleset> {
        &self.ruleset
    }

    /// The correlation state (for metrics and tests).
    pub fn state(&self) -> &Correlator {
        &self.state
    }

    /// The correlation state, mutable (tests switch its index off).
    #[doc(hidden)]
    pub fn state_mut(&mut self) -> &mut Correlator {
        &mut self.state
    }

    /// Decodes a pre-decoded event in place, then runs the rules; returns
    /// the alert if one is due.
    pub fn process(&mut self, event: &mut Event, now: Timestamp) -> Option<Alert> {
        self.ruleset.decode(event);
        self.judge(event, now).into_alert()
    }

    /// Makes the engine fit to go on after a panic was caught in
    /// [`process`](Self::process) (the manager contains one to its event):
    /// the per-event scratch is rebuilt on the next event anyway, and the
    /// correlation memory is kept when its links hold
    /// ([`Correlator::check_consistency`]; see [`crate::correlate`] on why
    /// they do) and started afresh when not. Returns why it was reset, if
    /// it was.
    pub fn recover_after_panic(&mut self) -> Option<String> {
        self.lower_buf = Vec::new();
        let broken = self.state.check_consistency().err()?;
        self.state.reset();
        Some(broken)
    }

    /// Runs only the rules on an already decoded event (`ossec-logtest`'s
    /// Phase 3, and tests that build events by hand).
    pub fn judge(&mut self, event: &Event, now: Timestamp) -> Verdict {
        self.judge_with(event, now, &mut NoTrace)
    }

    /// [`judge`](Self::judge), also reporting every rule tried, as
    /// `ossec-logtest -v` prints it under `**Rule debugging:`. The walk and
    /// the verdict are exactly `judge`'s (state changes included); only
    /// this entry point pays for recording.
    pub fn judge_traced(&mut self, event: &Event, now: Timestamp) -> (Verdict, Vec<TraceLine>) {
        let mut trace = Vec::new();
        let verdict = self.judge_with(event, now, &mut trace);
        (verdict, trace)
    }

    fn judge_with<T: Tracer>(&mut self, event: &Event, now: Timestamp, tr: &mut T) -> Verdict {
        let rs = Arc::clone(&self.ruleset);
        let local = self.zone.to_datetime(now);
        let mut ctx = Ctx {
            ev: event,
            now: now.as_second(),
            minute: u32::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute()))
                .unwrap_or(0),
            weekday: u8::try_from(local.weekday().to_sunday_zero_offset()).unwrap_or(0),
            matched: 0,
            fts: None,
            lines: HashMap::new(),
            lower: std::mem::take(&mut self.lower_buf),
            lower_ready: false,
        };
        let rules = &rs.rules;
        let mut verdict = Verdict::NoMatch;
        for &top in &rules.top {
            let r = rules.nodes[top].rule;
            if rules.rules[r].category != event.category {
                continue;
            }
            let Some(fin) = self.check(&rs, top, &mut ctx, tr) else {
                continue;
            };
            verdict = self.finish(&rs, fin, &mut ctx, now);
            break;
        }
        self.lower_buf = ctx.lower;
        verdict
    }

    fn finish(&mut self, rs: &Ruleset, fin: RuleIdx, ctx: &mut Ctx<'_>, now: Timestamp) -> Verdict {
        let rule = &rs.rules.rules[fin];
        if rule.level == 0 {
            return Verdict::Silent { rule_id: rule.id };
        }
        if self.state.ignored_by_time(fin, rule.ignore_secs, ctx.now) {
            return Verdict::Suppressed {
                rule_id: rule.id,
                level: rule.level,
            };
        }
        if rule.check_if_ignored.any() {
            let key = ignore_key(ctx.ev, rule.check_if_ignored, rule.ignore_fields.data);
            if self.state.in_ignore_list(&key) {
                return Verdict::Suppressed {
                    rule_id: rule.id,
                    level: rule.level,
                };
            }
        }
        if rule.ignore_fields.any() {
            let key = ignore_key(ctx.ev, rule.ignore_fields, rule.ignore_fields.data);
            self.state.add_to_ignore_list(key);
        }
        self.state
            .store(&rs.rules, fin, ctx.ev, ctx.now, ctx.matched);
        let correlated = ctx.lines.remove(&fin).unwrap_or_default();
        let mut alert = Alert::new(rule, ctx.ev, now, correlated);
        if rs.dialect.is_wazuh() {
            let fired = self.fired.entry(fin).or_default();
            *fired += 1;
            alert.description = fill_description(&rule.description, ctx.ev);
            alert.wazuh = Some(Box::new(WazuhDetail::new(rule, ctx.ev, *fired)));
        }
        Verdict::Alert(Box::new(alert))
    }

    /// OSSEC's recursive `OS_CheckIfRuleMatch` + child walk.
    fn check<T: Tracer>(
        &mut self,
        rs: &Ruleset,
        node: usize,
        ctx: &mut Ctx<'_>,
        tr: &mut T,
    ) -> Option<RuleIdx> {
        let r = rs.rules.nodes[node].rule;
        tr.trying(&rs.rules.rules[r]);
        if !self.conditions(rs, r, ctx) {
            return None;
        }
        tr.matched(rs.rules.rules[r].id);
        let children = &rs.rules.nodes[node].children;
        if !children.is_empty() {
            tr.trying_children();
        }
        for &c in children {
            if let Some(hit) = self.check(rs, c, ctx, tr) {
                return Some(hit);
            }
        }
        if rs.rules.rules[r].noalert {
            return None;
        }
        Some(r)
    }

    fn conditions(&mut self, rs: &Ruleset, r: RuleIdx, ctx: &mut Ctx<'_>) -> bool {
        let rule = &rs.rules.rules[r];
        let c = &rule.cond;
        let ev = ctx.ev;
        let f = &ev.fields;
        let log = ev.log();
        let pat = |p: &Option<Matcher>, v: Option<&str>| -> bool {
            match p {
                None => true,
                Some(p) => p.holds(v),
            }
        };
        // Plain element, else its pcre2 twin.
        let twin = |p: &Option<Matcher>, q: &Option<Matcher>, v: Option<&str>| -> bool {
            if p.is_some() { pat(p, v) } else { pat(q, v) }
        };
        if let Some(d) = &c.decoded_as
            && ev.decoder_name.as_deref() != Some(d.as_str())
        {
            return false;
        }
        if !twin(
            &c.program_name,
            &c.pcre2.program_name,
            ev.program_name.as_deref(),
        ) {
            return false;
        }
        if !twin(&c.id, &c.pcre2.id, f.id.as_deref()) {
            return false;
        }
        if let Some(a) = &c.action
            && f.action.as_deref() != Some(a.as_str())
        {
            return false;
        }
        if !pat(&c.action_match, f.action.as_deref()) || !pat(&c.location, Some(&ev.location)) {
            return false;
        }
        if !pat(&c.url, f.url.as_deref()) || !pat(&c.url_pcre2, f.url.as_deref()) {
            return false;
        }
        for (name, p) in &c.fields {
            if !p.holds(f.get(name)) {
                return false;
            }
        }
        if let Some(l) = &c.srcip
            && !l.matches(f.srcip.as_deref())
        {
            return false;
        }
        if let Some(l) = &c.dstip
            && !l.matches(f.dstip.as_deref())
        {
            return false;
        }
        if !twin(&c.srcport, &c.pcre2.srcport, f.srcport.as_deref())
            || !twin(&c.dstport, &c.pcre2.dstport, f.dstport.as_deref())
        {
            return false;
        }
        if let Some(cr) = c.compiled
            && !cr.matches(ev)
        {
            return false;
        }
        let user = f.dstuser.as_deref().or(f.srcuser.as_deref());
        if !twin(&c.user, &c.pcre2.user, user) {
            return false;
        }
        if c.geoip {
            return false;
        }
        if rule.maxsize > 0 && log.len() < rule.maxsize as usize {
            return false;
        }
        if let Some(t) = &c.time
            && !t.matches(ctx.minute)
        {
            return false;
        }
        if let Some(w) = &c.weekday
            && !w.matches(ctx.weekday)
        {
            return false;
        }
        if !twin(&c.extra_data, &c.pcre2.extra_data, f.data.as_deref())
            || !twin(&c.hostname, &c.pcre2.hostname, ev.hostname.as_deref())
            || !twin(&c.status, &c.pcre2.status, f.status.as_deref())
        {
            return false;
        }
        // The searches of the whole `log` come after every check of a
        // decoded field, being the dearest; all checks so far are pure, so
        // the order does not change the outcome (OSSEC checks `match` and
        // `regex` right after `id`). What follows has side effects and
        // keeps OSSEC's order.
        if let Some(m) = c.matches.as_ref().or(c.pcre2.matches.as_ref())
            && !m.is_match_lowered(log, || ctx.lower_log())
        {
            return false;
        }
        if let Some(m) = c.regex.as_ref().or(c.pcre2.regex.as_ref())
            && !m.is_match_lowered(log, || ctx.lower_log())
        {
            return false;
        }
        if c.check_diff && !self.state.output_changed(r, &ev.location, log) {
            return false;
        }
        if c.if_fts && !self.fts(rs, ctx) {
            return false;
        }
        for lc in &c.lists {
            if !lc.matches(ev, rs.rules.lists.get(&lc.path)) {
                return false;
            }
        }
        if rule.ctx.is_context() {
            match self
                .state
                .search(&rs.rules, r, ev, ctx.now, &mut ctx.matched)
            {
                Some(lines) => {
                    ctx.lines.insert(r, lines);
                }
                None => return false,
            }
        }
        true
    }

    /// First-time-seen, once per event (OSSEC's `FTS_DONE`).
    fn fts(&mut self, rs: &Ruleset, ctx: &mut Ctx<'_>) -> bool {
        if let Some(done) = ctx.fts {
            return done;
        }
        let ev = ctx.ev;
        let Some(fields) = ev
            .decoder_own_name
            .as_ref()
            .and_then(|n| rs.fts_by_decoder.get(n))
        else {
            ctx.fts = Some(false);
            return false;
        };
        let has = |w: &str| fields.iter().any(|f| f == w);
        let f = &ev.fields;
        // `srcuser` sets the dstuser bit (OSSEC quirk); srcuser is never keyed.
        let user = has("user") || has("dstuser") || has("srcuser");
        let key = [
            ev.decoder_name.clone().unwrap_or_default(),
            pick(has("id"), &f.id),
            pick(user, &f.dstuser),
            String::new(),
            pick(has("srcip"), &f.srcip),
            pick(has("dstip"), &f.dstip),
            pick(has("data") || has("extra_data"), &f.data),
            pick(has("system_name"), &f.system_name),
            if has("location") {
                ev.location.clone()
            } else {
                String::new()
            },
        ]
        .join(" ");
        let first = self.state.first_time_seen(key);
        ctx.fts = Some(first);
        first
    }
}

/// One line of `ossec-logtest -v`'s rule debugging (`rules.c`,
/// `OS_CheckIfRuleMatch` under `TESTRULE`). `Display` gives OSSEC's text,
/// indentation included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceLine {
    /// `    Trying rule: <id> - <description>`: the rule's conditions are
    /// about to be checked.
    Trying {
        /// Rule id.
        id: u32,
        /// Rule description.
        description: String,
    },
    /// `       *Rule <id> matched.`: every condition held (context search
    /// included).
    Matched {
        /// Rule id.
        id: u32,
    },
    /// `       *Trying child rules.`: the matched rule has children.
    TryingChildren,
}

impl std::fmt::Display for TraceLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TraceLine::Trying { id, description } => {
                write!(f, "    Trying rule: {id} - {description}")
            }
            TraceLine::Matched { id } => write!(f, "       *Rule {id} matched."),
            TraceLine::TryingChildren => f.write_str("       *Trying child rules."),
        }
    }
}

/// What the rule walk reports; the untraced walk is monomorphised with
/// [`NoTrace`], whose calls compile to nothing.
trait Tracer {
    fn trying(&mut self, rule: &crate::rule::Rule);
    fn matched(&mut self, id: u32);
    fn trying_children(&mut self);
}

struct NoTrace;

impl Tracer for NoTrace {
    #[inline(always)]
    fn trying(&mut self, _: &crate::rule::Rule) {}
    #[inline(always)]
    fn matched(&mut self, _: u32) {}
    #[inline(always)]
    fn trying_children(&mut self) {}
}

impl Tracer for Vec<TraceLine> {
    fn trying(&mut self, rule: &crate::rule::Rule) {
        self.push(TraceLine::Trying {
            id: rule.id,
            description: rule.description.clone(),
        });
    }
    fn matched(&mut self, id: u32) {
        self.push(TraceLine::Matched { id });
    }
    fn trying_children(&mut self) {
        self.push(TraceLine::TryingChildren);
    }
}

/// A field's value in an fts or ignore key: blank when the field is not
/// selected or not set.
fn pick(on: bool, v: &Option<String>) -> String {
    if on {
        v.clone().unwrap_or_default()
    } else {
        String::new()
    }
}

/// The `<ignore>` line: decoder name, id, dstuser, srcip, dstip, data,
/// system name, location, blank where not selected. `data` comes from the
/// ignore mask even in the check (OSSEC quirk).
fn ignore_key(ev: &Event, sel: IgnoreFields, data_from_ignore: bool) -> String {
    let f = &ev.fields;
    [
        pick(sel.name, &ev.decoder_name),
        pick(sel.id, &f.id),
        pick(sel.user, &f.dstuser),
        pick(sel.srcip, &f.srcip),
        pick(sel.dstip, &f.dstip),
        pick(data_from_ignore, &f.data),
        String::new(),
        if sel.location {
            ev.location.clone()
        } else {
            String::new()
        },
    ]
    .join(" ")
}

/// Test-only panic triggers (cargo feature `test-panic-trigger`, never
/// enabled in a build that ships): no input makes the engine panic, so the
/// manager's containment of a panic is tested with these. A line holding
/// [`BEFORE_DECODING`] panics before the decoders run; one holding
/// [`IN_STORE`] panics in the middle of storing its alert in the
/// correlation memory, leaving it inconsistent (the worst case).
#[cfg(feature = "test-panic-trigger")]
pub mod test_panic_trigger {
    use crate::event::Event;

    /// Panics before decoding.
    pub const BEFORE_DECODING: &[u8] = b"PALISADE-TEST-PANIC-BEFORE-DECODING";
    /// Panics half-way through storing the event's alert.
    pub const IN_STORE: &[u8] = b"PALISADE-TEST-PANIC-IN-STORE";

    pub(crate) fn holds(event: &Event, trigger: &[u8]) -> bool {
        memchr::memmem::find(&event.full_log, trigger).is_some()
    }

    pub(crate) fn before_decoding(event: &Event) {
        if holds(event, BEFORE_DECODING) {
            panic!("test panic trigger: before decoding");
        }
    }
}
