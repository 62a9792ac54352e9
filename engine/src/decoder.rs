//! `decoder.xml` semantics, as OSSEC 3.x loads (`decode-xml.c`,
//! `decoders_list.c`) and runs (`decoder.c:DecodeEvent`) them; spec 4.
//!
//! Decoders are kept in two parent lists, as in OSSEC: those with a
//! `program_name` matcher and those without. An event that has a program
//! name is only tried against the first list, any other event only against
//! the second. The first parent whose program name and prematch match ends
//! the search, even if none of its children or its regex then match; file
//! order therefore decides. Children are tried in file order; same-name
//! children under one parent form a "get_next" chain whose regexes all run.
//! A child is reported under its parent's name (and id) unless it has
//! `use_own_name`, but it keeps its own `type`.
//!
//! Loading collects every validation error (spec 4.1) with file and line
//! instead of stopping at the first, and never panics.
//!
//! Knowing differences: `accumulate` is accepted but multi-line
//! accumulation is not performed; OSSEC's fixed size limits on pattern
//! fragments and on the number of `order` fields are not enforced; a decoder
//! that mixes the OS_Regex and PCRE2 forms of the same element is rejected.

use std::path::PathBuf;

use crate::error::{LoadError, LoadErrors};
use crate::event::{Category, Event, FieldName};
use crate::pattern::{Dialect, Pattern};
use crate::xml::{self, Element};

/// Where a decoder's `regex` starts matching (`offset` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegexOffset {
    /// From the start of `log`.
    #[default]
    None,
    /// After the parent's prematch (`after_parent`).
    AfterParent,
    /// After this decoder's own prematch (`after_prematch`).
    AfterPrematch,
    /// After the previous regex of a get_next chain (`after_regex`).
    AfterRegex,
}

/// The compiled C plugin decoders OSSEC offers through `<plugin_decoder>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// `PF_Decoder`: OpenBSD pf logs.
    Pf,
    /// `SymantecWS_Decoder`: Symantec Web Security.
    SymantecWs,
    /// `SonicWall_Decoder`: SonicWall firewall.
    SonicWall,
    /// `OSSECAlert_Decoder`: OSSEC alerts forwarded by syslog.
    OssecAlert,
}

impl Plugin {
    fn parse(s: &str) -> Option<Plugin> {
        Some(match s {
            "PF_Decoder" => Plugin::Pf,
            "SymantecWS_Decoder" => Plugin::SymantecWs,
            "SonicWall_Decoder" => Plugin::SonicWall,
            "OSSECAlert_Decoder" => Plugin::OssecAlert,
            _ => return None,
        })
    }
}

/// One `<decoder>` block after validation.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// The name written in the file.
    pub own_name: String,
    /// The name events report: the parent's unless `use_own_name`.
    pub name: String,
    /// The `parent` element, if any.
    pub parent: Option<String>,
    /// `program_name` / `program_name_pcre2`.
    pub program_name: Option<Pattern>,
    /// `prematch` / `prematch_pcre2`.
    pub prematch: Option<Pattern>,
    /// Prematch `offset="after_parent"`.
    pub prematch_after_parent: bool,
    /// `regex` / `pcre2`, fragments concatenated.
    pub regex: Option<Pattern>,
    /// The regex offset.
    pub regex_offset: RegexOffset,
    /// The `order` fields, in capture order.
    pub order: Vec<FieldName>,
    /// The `fts` field names, trimmed.
    pub fts: Vec<String>,
    /// `type` (OSSEC event category).
    pub category: Category,
    /// `use_own_name` is `true`.
    pub use_own_name: bool,
    /// `plugin_decoder`.
    pub plugin: Option<Plugin>,
    /// `accumulate` was given (accepted, not acted upon).
    pub accumulate: bool,
    /// This block continues into the next sibling (same-name chain).
    pub get_next: bool,
    /// File the block came from.
    pub file: String,
    /// Line of the `<decoder>` element.
    pub line: usize,
}

#[derive(Debug, Clone)]
struct Node {
    dec: usize,
    children: Vec<usize>,
}

/// What `decode` did, for `ossec-logtest`'s Phase 2 output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeTrace {
    /// Name of the parent decoder that matched (what logtest prints as
    /// `decoder:`), `None` when no decoder matched.
    pub parent_name: Option<String>,
    /// Every field assignment in order, with OSSEC's logtest label
    /// (`proto` for protocol, `extra_data` for data).
    pub assigned: Vec<(String, String)>,
}

/// All decoders of one ruleset, ready to decode events.
#[derive(Debug, Clone, Default)]
pub struct DecoderSet {
    decoders: Vec<Decoder>,
    with_pname: Vec<Node>,
    without_pname: Vec<Node>,
    /// For each first byte of `log`: the positions in `without_pname` of
    /// the parents whose prematch can match a log starting with it (or
    /// that have no such bound), in file order. An access-log line is
    /// otherwise tried against every prematch-only parent before its own
    /// (15 in OSSEC 3.3.0); here most are skipped on one table lookup.
    without_by_first: Vec<Vec<usize>>,
}

fn elem_text(e: &Element) -> &str {
    &e.text
}

fn offset_attr(e: &Element) -> Result<RegexOffset, String> {
    let mut off = RegexOffset::None;
    for (n, v) in &e.attrs {
        if n != "offset" {
            return Err(format!("invalid attribute '{n}' on <{}>", e.name));
        }
        off = match v.as_str() {
            "after_parent" => RegexOffset::AfterParent,
            "after_prematch" => RegexOffset::AfterPrematch,
            "after_regex" => RegexOffset::AfterRegex,
            other => return Err(format!("invalid offset '{other}' on <{}>", e.name)),
        };
    }
    Ok(off)
}

/// The raw, not yet compiled content of one `<decoder>`.
#[derive(Default)]
struct Raw {
    parent: Option<String>,
    program_name: Option<(Dialect, String)>,
    prematch: Option<(Dialect, String)>,
    prematch_offset: RegexOffset,
    regex: Option<(Dialect, String)>,
    regex_offset: RegexOffset,
}

fn append(
    slot: &mut Option<(Dialect, String)>,
    dialect: Dialect,
    text: &str,
    what: &str,
) -> Result<(), String> {
    match slot {
        None => *slot = Some((dialect, text.to_string())),
        Some((d, s)) if *d == dialect => s.push_str(text),
        Some(_) => {
            return Err(format!(
                "mixes the OS_Regex and PCRE2 forms of <{what}>; use one"
            ));
        }
    }
    Ok(())
}

impl DecoderSet {
    /// Loads decoder files given as (file name, text), in order (OSSEC:
    /// `decoder.xml` then `local_decoder.xml`). Every problem is reported.
    pub fn load(sources: &[(String, String)]) -> Result<DecoderSet, LoadErrors> {
        let mut set = DecoderSet::default();
        let mut errors = Vec::new();
        for (file, text) in sources {
            let roots = match xml::parse(text).and_then(xml::apply_variables) {
                Ok(r) => r,
                Err(e) => {
                    errors.push(LoadError::new(file, e.line, e.message));
                    continue;
                }
            };
            for root in &roots {
                if let Err(reason) = set.add(file, root) {
                    errors.push(LoadError::new(file, root.line, reason));
                }
            }
        }
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        set.set_names();
        set.index_first_bytes();
        Ok(set)
    }

    /// Reads and loads decoder files from disk, in order.
    pub fn load_files(paths: &[PathBuf]) -> Result<DecoderSet, LoadErrors> {
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            let name = p.display().to_string();
            match std::fs::read(p) {
                Ok(bytes) => sources.push((name, String::from_utf8_lossy(&bytes).into_owned())),
                Err(e) => errors.push(LoadError::new(name, 0, format!("cannot read: {e}"))),
            }
        }
        match DecoderSet::load(&sources) {
            Ok(set) if errors.is_empty() => Ok(set),
            Ok(_) => Err(LoadErrors(errors)),
            Err(LoadErrors(more)) => {
                errors.extend(more);
                Err(LoadErrors(errors))
            }
        }
    }

    /// Every decoder block, in load order.
    pub fn decoders(&self) -> &[Decoder] {
        &self.decoders
    }

    /// Whether any parent decoder is tried for `event` (with a program name:
    /// the program_name list, else the other). `ossec-logtest` prints its
    /// Phase 2 only then.
    pub fn has_list_for(&self, event: &Event) -> bool {
        if event.program_name.is_some() {
            !self.with_pname.is_empty()
        } else {
            !self.without_pname.is_empty()
        }
    }

    /// Whether any decoder reports `name` (for rule `decoded_as`).
    pub fn has_name(&self, name: &str) -> bool {
        self.decoders.iter().any(|d| d.name == name)
    }

    fn add(&mut self, file: &str, root: &Element) -> Result<(), String> {
        if !root.name.eq_ignore_ascii_case("decoder") {
            return Err(format!(
                "invalid root element <{}>: only <decoder> is allowed",
                root.name
            ));
        }
        let name = match root.attrs.first() {
            Some((n, v)) if n.eq_ignore_ascii_case("name") => v.clone(),
            _ => return Err("<decoder> needs a name attribute first".into()),
        };
        if let Some((n, _)) = root.attrs.get(1)
            && (!n.eq_ignore_ascii_case("status") || root.attrs.len() > 2)
        {
            return Err(format!("decoder '{name}': invalid attribute '{n}'"));
        }
        let ctx = |m: String| format!("decoder '{name}': {m}");

        let mut raw = Raw::default();
        let mut order: Option<Vec<FieldName>> = None;
        let mut fts: Option<Vec<String>> = None;
        let mut category = Category::Syslog;
        let mut use_own_name = false;
        let mut plugin = None;
        let mut accumulate = false;

        for e in &root.children {
            let n = e.name.to_ascii_lowercase();
            let text = elem_text(e);
            match n.as_str() {
                "parent" => raw.parent.get_or_insert_with(String::new).push_str(text),
                "program_name" | "program_name_pcre2" => {
                    let d = if n == "program_name" {
                        Dialect::OsMatch
                    } else {
                        Dialect::Pcre2
                    };
                    append(&mut raw.program_name, d, text, "program_name").map_err(ctx)?;
                }
                "prematch" | "prematch_pcre2" => {
                    let off = offset_attr(e).map_err(ctx)?;
                    if raw.prematch.is_some() && off != RegexOffset::None {
                        return Err(ctx("only the first prematch may have an offset".into()));
                    }
                    if off != RegexOffset::None {
                        raw.prematch_offset = off;
                    }
                    let d = if n == "prematch" {
                        Dialect::OsRegex
                    } else {
                        Dialect::Pcre2
                    };
                    append(&mut raw.prematch, d, text, "prematch").map_err(ctx)?;
                }
                "regex" | "pcre2" => {
                    let off = offset_attr(e).map_err(ctx)?;
                    if raw.regex.is_some() && off != RegexOffset::None {
                        return Err(ctx("only the first regex may have an offset".into()));
                    }
                    if off != RegexOffset::None {
                        raw.regex_offset = off;
                    }
                    let d = if n == "regex" {
                        Dialect::OsRegex
                    } else {
                        Dialect::Pcre2
                    };
                    append(&mut raw.regex, d, text, "regex").map_err(ctx)?;
                }
                "ftscomment" => {}
                "use_own_name" => use_own_name = text == "true",
                "plugin_decoder" => {
                    plugin = Some(
                        Plugin::parse(text)
                            .ok_or_else(|| ctx(format!("invalid plugin_decoder '{text}'")))?,
                    );
                }
                "order" => {
                    let mut fields = Vec::new();
                    for f in text.split(',') {
                        let f = f.trim();
                        if f.is_empty() {
                            return Err(ctx(format!("empty field in order '{text}'")));
                        }
                        fields.push(FieldName::parse(f));
                    }
                    order = Some(fields);
                }
                "accumulate" => accumulate = true,
                "fts" => {
                    let mut fields = Vec::new();
                    for f in text.split(',') {
                        let f = f.trim();
                        let known = [
                            "user",
                            "srcip",
                            "dstip",
                            "id",
                            "location",
                            "data",
                            "system_name",
                            "name",
                        ];
                        if !known.iter().any(|k| f.contains(k)) {
                            return Err(ctx(format!("wrong field '{f}' in fts")));
                        }
                        fields.push(f.to_string());
                    }
                    fts = Some(fields);
                }
                _ if e.name == "type" => {
                    category = Category::parse(text)
                        .ok_or_else(|| ctx(format!("invalid decoder type '{text}'")))?;
                }
                _ => {
                    return Err(ctx(format!("invalid element <{}>", e.name)));
                }
            }
        }

        // Validation, in OSSEC's order (spec 4.1).
        if raw.prematch.is_none() && raw.parent.is_none() && raw.program_name.is_none() {
            return Err(ctx(
                "a decoder without parent needs a prematch or a program_name".into(),
            ));
        }
        if raw.regex.is_none() && (fts.is_some() || order.is_some()) {
            return Err(ctx("order and fts need a regex".into()));
        }
        if raw.regex.is_some() && order.is_none() {
            return Err(ctx("a regex needs an order".into()));
        }
        let mut regex_offset = raw.regex_offset;
        if regex_offset == RegexOffset::AfterParent && raw.parent.is_none() {
            return Err(ctx("offset after_parent needs a parent".into()));
        }
        if regex_offset == RegexOffset::AfterPrematch {
            if raw.parent.is_none() {
                regex_offset = RegexOffset::AfterParent;
            } else if raw.prematch.is_none() {
                return Err(ctx("offset after_prematch needs a prematch".into()));
            }
        }
        if regex_offset == RegexOffset::AfterRegex && (raw.parent.is_none() || raw.regex.is_none())
        {
            return Err(ctx("offset after_regex needs a parent and a regex".into()));
        }
        match raw.prematch_offset {
            RegexOffset::None => {}
            RegexOffset::AfterParent if raw.parent.is_some() => {}
            RegexOffset::AfterParent => {
                return Err(ctx("prematch offset after_parent needs a parent".into()));
            }
            _ => return Err(ctx("a prematch offset can only be after_parent".into())),
        }
        let compile =
            |slot: &Option<(Dialect, String)>, what: &str| -> Result<Option<Pattern>, String> {
                match slot {
                    None => Ok(None),
                    Some((d, s)) => Pattern::new(*d, s)
                        .map(Some)
                        .map_err(|e| ctx(format!("<{what}>: {e}"))),
                }
            };
        let program_name = compile(&raw.program_name, "program_name")?;
        let prematch = compile(&raw.prematch, "prematch")?;
        let regex = compile(&raw.regex, "regex")?;
        if plugin.is_some() && (regex.is_some() || order.is_some()) {
            return Err(ctx(
                "a plugin_decoder cannot have a regex or an order".into()
            ));
        }

        let dec = Decoder {
            own_name: name.clone(),
            name: name.clone(),
            parent: raw.parent.clone(),
            program_name,
            prematch,
            prematch_after_parent: raw.prematch_offset == RegexOffset::AfterParent,
            regex,
            regex_offset,
            order: order.unwrap_or_default(),
            fts: fts.unwrap_or_default(),
            category,
            use_own_name,
            plugin,
            accumulate,
            get_next: false,
            file: file.to_string(),
            line: root.line,
        };
        self.insert(dec)
    }

    /// `OS_AddOSDecoder`: a parent goes to one of the two lists; a child is
    /// attached under every parent of that name, with the same-name chain
    /// checks of `_OS_AddOSDecoder`.
    fn insert(&mut self, dec: Decoder) -> Result<(), String> {
        let idx = self.decoders.len();
        let Some(parent) = dec.parent.clone() else {
            if dec.regex_offset == RegexOffset::AfterRegex {
                return Err(format!(
                    "decoder '{}': offset after_regex needs a previous regex",
                    dec.own_name
                ));
            }
            let list = if dec.program_name.is_some() {
                &mut self.with_pname
            } else {
                &mut self.without_pname
            };
            list.push(Node {
                dec: idx,
                children: Vec::new(),
            });
            self.decoders.push(dec);
            return Ok(());
        };
        // Find every parent node with that name, in both lists.
        let mut targets = Vec::new();
        for (li, list) in [&self.with_pname, &self.without_pname]
            .into_iter()
            .enumerate()
        {
            for (ni, node) in list.iter().enumerate() {
                if self.decoders[node.dec].own_name == parent {
                    targets.push((li, ni));
                }
            }
        }
        if targets.is_empty() {
            return Err(format!(
                "decoder '{}': parent decoder '{parent}' not found (parents must come first)",
                dec.own_name
            ));
        }
        // Check the chain rules against each parent's children first, so
        // that a rejected decoder changes nothing.
        let mut chain_prev = Vec::new();
        for &(li, ni) in &targets {
            let node = if li == 0 {
                &self.with_pname[ni]
            } else {
                &self.without_pname[ni]
            };
            let mut has_prev_regex = false;
            for &c in &node.children {
                let prev = &self.decoders[c];
                if prev.own_name != dec.own_name {
                    continue;
                }
                if (prev.prematch.is_some() || prev.regex.is_some())
                    && dec.regex_offset != RegexOffset::None
                {
                    has_prev_regex = true;
                }
                if dec.prematch.is_some() {
                    return Err(format!(
                        "decoder '{}': a repeated (multi-regex) decoder cannot have a prematch",
                        dec.own_name
                    ));
                }
                if !dec.fts.is_empty() {
                    return Err(format!(
                        "decoder '{}': a repeated (multi-regex) decoder cannot have fts",
                        dec.own_name
                    ));
                }
                let same_family = match (&prev.regex, &dec.regex) {
                    (Some(a), Some(b)) => {
                        (a.dialect() == Dialect::Pcre2) == (b.dialect() == Dialect::Pcre2)
                    }
                    _ => false,
                };
                if !same_family {
                    return Err(format!(
                        "decoder '{}': every repeated decoder block needs a regex of the same dialect",
                        dec.own_name
                    ));
                }
                chain_prev.push(c);
            }
            if !has_prev_regex && dec.regex_offset == RegexOffset::AfterRegex {
                return Err(format!(
                    "decoder '{}': offset after_regex needs a previous same-name decoder",
                    dec.own_name
                ));
            }
        }
        for c in chain_prev {
            self.decoders[c].get_next = true;
        }
        for (li, ni) in targets {
            let node = if li == 0 {
                &mut self.with_pname[ni]
            } else {
                &mut self.without_pname[ni]
            };
            node.children.push(idx);
        }
        self.decoders.push(dec);
        Ok(())
    }

    fn index_first_bytes(&mut self) {
        let sets: Vec<Option<[bool; 256]>> = self
            .without_pname
            .iter()
            .map(|n| {
                let d = &self.decoders[n.dec];
                // A parent with a program name never sits in this list; one
                // without a prematch matches everything.
                d.prematch.as_ref().and_then(Pattern::first_bytes)
            })
            .collect();
        self.without_by_first = (0..256)
            .map(|b| {
                sets.iter()
                    .enumerate()
                    .filter(|(_, s)| s.is_none_or(|s| s[b]))
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
    }

    /// `os_setdecoderids`: children report their parent's name unless
    /// `use_own_name`.
    fn set_names(&mut self) {
        let mut renames = Vec::new();
        for node in self.with_pname.iter().chain(&self.without_pname) {
            let pname = self.decoders[node.dec].own_name.clone();
            for &c in &node.children {
                if !self.decoders[c].use_own_name {
                    renames.push((c, pname.clone()));
                }
            }
        }
        for (c, n) in renames {
            self.decoders[c].name = n;
        }
    }

    /// Decodes `event` in place: decoder names, category and fields. The
    /// hot path: captured values go straight into `event.fields`, nothing
    /// is recorded for logtest.
    pub fn decode(&self, event: &mut Event) {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.decode_with(event, &mut scratch, None),
            Err(_) => self.decode_with(event, &mut Scratch::default(), None),
        });
    }

    /// Decodes `event` and reports what logtest prints for Phase 2.
    pub fn decode_traced(&self, event: &mut Event) -> DecodeTrace {
        let mut trace = DecodeTrace::default();
        self.decode_with(event, &mut Scratch::default(), Some(&mut trace));
        trace
    }

    fn decode_with(
        &self,
        event: &mut Event,
        scratch: &mut Scratch,
        trace: Option<&mut DecodeTrace>,
    ) {
        event.decoder_name = None;
        event.decoder_own_name = None;
        event.category = Category::Syslog;
        scratch.assigned.clear();
        let outcome = {
            let log = event.log();
            if event.program_name.is_some() {
                self.run(
                    self.with_pname.iter(),
                    event.program_name.as_deref(),
                    log,
                    scratch,
                )
            } else {
                match log
                    .first()
                    .and_then(|&b| self.without_by_first.get(usize::from(b)))
                {
                    Some(candidates) => self.run(
                        candidates.iter().filter_map(|&i| self.without_pname.get(i)),
                        None,
                        log,
                        scratch,
                    ),
                    None => self.run(self.without_pname.iter(), None, log, scratch),
                }
            }
        };
        let Some((parent, info, plugin)) = outcome else {
            return;
        };
        let d = &self.decoders[info];
        event.decoder_name = Some(d.name.clone());
        event.decoder_own_name = Some(d.own_name.clone());
        event.category = d.category;
        let log_start = event.log_range().start;
        let mut trace = trace;
        if let Some(t) = trace.as_deref_mut() {
            t.parent_name = Some(self.decoders[parent].own_name.clone());
        }
        for &(dec, k, s, e) in &scratch.assigned {
            let Some(field) = self.decoders[dec].order.get(k) else {
                continue;
            };
            let bytes = event
                .full_log
                .get(log_start + s..log_start + e)
                .unwrap_or_default();
            let value = bytes_to_string(bytes);
            if let Some(t) = trace.as_deref_mut() {
                t.assigned.push((label(field), value.clone()));
            }
            event.fields.set(field, value);
        }
        if let Some(p) = plugin {
            // Plugins print nothing in logtest.
            plugins::run(p, event);
        }
    }

    /// The matching walk of `DecodeEvent`. Returns (parent, decoder_info,
    /// plugin to run) and leaves the field assignments, as (decoder,
    /// `order` index, byte range in `log`), in `scratch.assigned`.
    fn run<'n>(
        &self,
        list: impl Iterator<Item = &'n Node>,
        program_name: Option<&str>,
        log: &[u8],
        scratch: &mut Scratch,
    ) -> Option<(usize, usize, Option<Plugin>)> {
        for node in list {
            let p = &self.decoders[node.dec];
            let mut pmatch = 0;
            if let Some(pn) = program_name {
                match &p.program_name {
                    Some(m) if m.is_match(pn.as_bytes()) => {}
                    _ => continue,
                }
            }
            if let Some(pre) = &p.prematch {
                match pre.find_span(log) {
                    Some((_, end)) => pmatch = end,
                    None => continue,
                }
            }
            let mut info = node.dec;
            // The decoder whose regex runs first, its index in the child
            // list (None for a childless parent), and the prematch end.
            let (first, mut pos, cmatch) = if node.children.is_empty() {
                (node.dec, None, pmatch)
            } else {
                let mut i = 0;
                let mut picked = None;
                while i < node.children.len() {
                    let c = node.children[i];
                    let cd = &self.decoders[c];
                    match &cd.prematch {
                        Some(pre) => {
                            let base = if cd.prematch_after_parent { pmatch } else { 0 };
                            if let Some((_, end)) = pre.find_span(&log[base..]) {
                                info = c;
                                picked = Some((i, base + end));
                                break;
                            }
                        }
                        None => {
                            picked = Some((i, pmatch));
                            break;
                        }
                    }
                    if cd.get_next {
                        // Skip the rest of this chain.
                        while i < node.children.len() && self.decoders[node.children[i]].get_next {
                            i += 1;
                        }
                    }
                    i += 1;
                }
                match picked {
                    Some((i, cm)) => (node.children[i], Some(i), cm),
                    None => return Some((node.dec, info, None)),
                }
            };
            let mut cur = first;
            if let Some(plugin) = self.decoders[cur].plugin {
                return Some((node.dec, info, Some(plugin)));
            }
            let mut regex_prev: Option<usize> = None;
            loop {
                let d = &self.decoders[cur];
                let Some(re) = &d.regex else { break };
                let base = match d.regex_offset {
                    RegexOffset::None => 0,
                    RegexOffset::AfterParent => pmatch,
                    RegexOffset::AfterPrematch => cmatch,
                    RegexOffset::AfterRegex => regex_prev.unwrap_or(cmatch),
                };
                let hay = &log[base..];
                match re.find_into(hay, &mut scratch.groups) {
                    None => regex_prev = None,
                    Some((_, end)) => {
                        info = cur;
                        regex_prev = Some(base + end);
                        // Extra captures beyond `order` are dropped.
                        let n = d.order.len();
                        for (k, r) in scratch.groups.iter().flatten().take(n).enumerate() {
                            scratch
                                .assigned
                                .push((cur, k, base + r.start, base + r.end));
                        }
                    }
                }
                match pos {
                    Some(i) if d.get_next && i + 1 < node.children.len() => {
                        pos = Some(i + 1);
                        cur = node.children[i + 1];
                    }
                    _ => break,
                }
            }
            return Some((node.dec, info, None));
        }
        None
    }
}

/// Per-thread buffers of the decoding walk, reused from event to event.
#[derive(Default)]
struct Scratch {
    /// Capture groups of the last regex.
    groups: Vec<Option<std::ops::Range<usize>>>,
    /// (decoder, `order` index, start, end in `log`).
    assigned: Vec<(usize, usize, usize, usize)>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// A decoded value: the bytes as text, invalid UTF-8 replaced.
fn bytes_to_string(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// The label `ossec-logtest` prints for a field (`decoder.c` `*_FP`).
fn label(f: &FieldName) -> String {
    match f {
        FieldName::SrcIp => "srcip",
        FieldName::DstIp => "dstip",
        FieldName::SrcPort => "srcport",
        FieldName::DstPort => "dstport",
        FieldName::Protocol => "proto",
        FieldName::Action => "action",
        FieldName::SrcUser => "srcuser",
        FieldName::DstUser => "dstuser",
        FieldName::Id => "id",
        FieldName::Url => "url",
        FieldName::Data => "extra_data",
        FieldName::Status => "status",
        FieldName::SystemName => "system_name",
        FieldName::Filename => "filename",
        FieldName::Dynamic(n) => return n.clone(),
    }
    .to_string()
}

pub mod plugins;

#[cfg(test)]
mod tests {
    use super::*;

    fn load(xml: &str) -> Result<DecoderSet, LoadErrors> {
        DecoderSet::load(&[("d.xml".into(), xml.into())])
    }

    fn ev(log: &str, program: Option<&str>) -> Event {
        Event {
            full_log: log.as_bytes().to_vec(),
            program_name: program.map(str::to_string),
            ..Event::default()
        }
    }

    #[test]
    fn first_byte_index_keeps_file_order() {
        let xml = r#"
<decoder name="digits"><prematch>^\d+ x</prematch></decoder>
<decoder name="lit"><prematch>^Abc|^zz</prematch></decoder>
<decoder name="anywhere"><prematch>needle</prematch></decoder>
<decoder name="suffix"><prematch>end$</prematch></decoder>
<decoder name="late-digits"><prematch>^\d</prematch></decoder>
"#;
        let set = load(xml).unwrap();
        let name = |log: &str| {
            let mut e = ev(log, None);
            set.decode(&mut e);
            e.decoder_name
        };
        assert_eq!(name("12 x").as_deref(), Some("digits"));
        assert_eq!(name("12 y").as_deref(), Some("late-digits"));
        assert_eq!(name("abcd").as_deref(), Some("lit"));
        assert_eq!(name("ZZ top").as_deref(), Some("lit"));
        assert_eq!(name("1 needle").as_deref(), Some("anywhere"));
        assert_eq!(name("q the end").as_deref(), Some("suffix"));
        assert_eq!(name("q"), None);
        assert_eq!(name(""), None);
    }

    #[test]
    fn every_validation_error_with_line() {
        let xml = "<decoder name=\"a\">\n  <order>x</order>\n</decoder>\n\
                   <decoder name=\"b\"><parent>nope</parent><regex>(x)</regex><order>id</order></decoder>\n\
                   <decoder name=\"c\"><prematch>x</prematch><regex offset=\"after_regex\">(x)</regex><order>id</order></decoder>\n\
                   <decoder name=\"d\"><prematch>\\q</prematch></decoder>\n\
                   <decoder name=\"e\"><prematch>x</prematch><type>Firewall</type></decoder>\n\
                   <decoder name=\"f\"><prematch>x</prematch><bogus/></decoder>\n\
                   <rule name=\"g\"/>\n";
        let errs = load(xml).unwrap_err().0;
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 4, 5, 6, 7, 8, 9], "{errs:?}");
        assert!(errs.iter().all(|e| e.file == "d.xml"));
        assert!(errs[1].reason.contains("parent decoder 'nope' not found"));
    }

    #[test]
    fn lists_children_chains_and_names() {
        let xml = r#"
<decoder name="app"><program_name>^app</program_name></decoder>
<decoder name="app-kv"><parent>app</parent><prematch>^kv: </prematch>
  <regex offset="after_prematch">^user=(\S+) </regex><order>user</order></decoder>
<decoder name="app-kv"><parent>app</parent>
  <regex offset="after_regex">^ip=(\S+)</regex><order>srcip</order></decoder>
<decoder name="app-own"><parent>app</parent><use_own_name>true</use_own_name>
  <prematch>^own</prematch><type>firewall</type></decoder>
<decoder name="bare"><prematch>^GET </prematch><type>web-log</type></decoder>
"#;
        let set = load(xml).unwrap();
        let mut e = ev("kv: user=bob ip=1.2.3.4", Some("app"));
        set.decode(&mut e);
        assert_eq!(e.decoder_name.as_deref(), Some("app"));
        assert_eq!(e.decoder_own_name.as_deref(), Some("app-kv"));
        assert_eq!(e.fields.dstuser.as_deref(), Some("bob"));
        assert_eq!(e.fields.srcip.as_deref(), Some("1.2.3.4"));
        // A failing first link does not stop the chain; after_regex then
        // restarts at the prematch end.
        let mut e = ev("kv: ip=9.9.9.9", Some("app"));
        set.decode(&mut e);
        assert_eq!(e.fields.dstuser, None);
        assert_eq!(e.fields.srcip.as_deref(), Some("9.9.9.9"));
        let mut e = ev("own", Some("app"));
        set.decode(&mut e);
        assert_eq!(e.decoder_name.as_deref(), Some("app-own"));
        assert_eq!(e.category, Category::Firewall);
        // A line with a program name never reaches the prematch-only list.
        let mut e = ev("GET /", Some("x"));
        set.decode(&mut e);
        assert_eq!(e.decoder_name, None);
        let mut e = ev("GET /", None);
        set.decode(&mut e);
        assert_eq!(e.decoder_name.as_deref(), Some("bare"));
        assert_eq!(e.category, Category::WebLog);
        // Parent matched, no child: decoded as the parent, no fields.
        let mut e = ev("nothing", Some("app"));
        set.decode(&mut e);
        assert_eq!(e.decoder_own_name.as_deref(), Some("app"));
        assert_eq!(e.fields, Default::default());
    }
}
