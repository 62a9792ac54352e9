//! Loading decoder XML (`decode-xml.c`, `decoders_list.c`): each
//! `<decoder>` block is read into a [`Decoder`], validated in OSSEC's order
//! (spec 4.1) and placed in one of the two parent lists or under its
//! parents. Every problem is collected with its file and line.

use std::path::PathBuf;

use super::{Decoder, DecoderSet, JsonNull, Node, Plugin, RegexOffset};
use crate::dialect::RulesetDialect;
use crate::error::{LoadError, LoadErrors, load_files_with};
use crate::event::{Category, FieldName};
use crate::pattern::{Dialect, Pattern};
use crate::xml::{self, Element};

impl Plugin {
    fn parse(s: &str, dialect: RulesetDialect) -> Option<Plugin> {
        Some(match s.trim() {
            "PF_Decoder" => Plugin::Pf,
            "SymantecWS_Decoder" => Plugin::SymantecWs,
            "SonicWall_Decoder" => Plugin::SonicWall,
            "OSSECAlert_Decoder" => Plugin::OssecAlert,
            "JSON_Decoder" if dialect.is_wazuh() => Plugin::Json,
            _ => return None,
        })
    }
}

/// Wazuh's `type=` on a decoder pattern (`None`: the element's default);
/// OSSEC's decoders take no such attribute.
fn pattern_type(e: &Element, dialect: RulesetDialect) -> Result<Option<Dialect>, String> {
    let Some(t) = e.attr("type").filter(|_| dialect.is_wazuh()) else {
        return Ok(None);
    };
    match t.to_ascii_lowercase().as_str() {
        "osmatch" => Ok(Some(Dialect::OsMatch)),
        "osregex" => Ok(Some(Dialect::OsRegex)),
        "pcre2" => Ok(Some(Dialect::Pcre2)),
        _ => Err(format!(
            "invalid type '{t}' on <{}> (osmatch, osregex or pcre2)",
            e.name
        )),
    }
}

fn elem_text(e: &Element) -> &str {
    &e.text
}

fn offset_attr(e: &Element, dialect: RulesetDialect) -> Result<RegexOffset, String> {
    let mut off = RegexOffset::None;
    for (n, v) in &e.attrs {
        if n == "type" && dialect.is_wazuh() {
            continue;
        }
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

/// Appends one fragment of a repeatable pattern element (OSSEC
/// concatenates them); all fragments must be of one dialect.
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

/// Wazuh: the joined fragments take the dialect of the newest `type=`.
fn retype(slot: &mut Option<(Dialect, String)>, dialect: Dialect, wazuh: bool) {
    if wazuh && let Some((d, _)) = slot {
        *d = dialect;
    }
}

/// One fragment of a `<prematch>` or `<regex>` (or its PCRE2 form): only
/// the first fragment may carry an `offset`.
fn add_offset_fragment(
    slot: &mut Option<(Dialect, String)>,
    offset: &mut RegexOffset,
    e: &Element,
    dialect: Dialect,
    what: &str,
    rules: RulesetDialect,
) -> Result<(), String> {
    let off = offset_attr(e, rules)?;
    if slot.is_some() && off != RegexOffset::None {
        return Err(format!("only the first {what} may have an offset"));
    }
    if off != RegexOffset::None {
        *offset = off;
    }
    append(slot, dialect, elem_text(e), what)
}

impl DecoderSet {
    /// Loads decoder files given as (file name, text), in order (OSSEC:
    /// `decoder.xml` then `local_decoder.xml`). Every problem is reported.
    pub fn load(sources: &[(String, String)]) -> Result<DecoderSet, LoadErrors> {
        Self::load_in(RulesetDialect::Ossec, sources)
    }

    /// [`DecoderSet::load`] for files written in `dialect`.
    pub fn load_in(
        dialect: RulesetDialect,
        sources: &[(String, String)],
    ) -> Result<DecoderSet, LoadErrors> {
        let mut set = DecoderSet {
            dialect,
            ..DecoderSet::default()
        };
        let mut errors = Vec::new();
        for (file, text) in sources {
            let roots = match xml::parse_in(text, dialect) {
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
        load_files_with(paths, DecoderSet::load)
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
        let mut plugin_offset = RegexOffset::None;
        let mut json_null = JsonNull::default();
        let mut accumulate = false;

        for e in &root.children {
            let n = e.name.to_ascii_lowercase();
            let text = elem_text(e);
            // Wazuh: fragments of one element are joined whatever their
            // `type=`; the last one given decides the dialect.
            let typed = |slot: &Option<(Dialect, String)>, default: Dialect| {
                pattern_type(e, self.dialect)
                    .map(|t| t.or(slot.as_ref().map(|(d, _)| *d)).unwrap_or(default))
            };
            let wazuh = self.dialect.is_wazuh();
            match n.as_str() {
                "parent" => raw.parent.get_or_insert_with(String::new).push_str(text),
                "program_name" | "program_name_pcre2" => {
                    let d = if n == "program_name" {
                        typed(&raw.program_name, Dialect::OsMatch).map_err(ctx)?
                    } else {
                        Dialect::Pcre2
                    };
                    retype(&mut raw.program_name, d, wazuh);
                    append(&mut raw.program_name, d, text, "program_name").map_err(ctx)?;
                }
                "prematch" | "prematch_pcre2" => {
                    let d = if n == "prematch" {
                        typed(&raw.prematch, Dialect::OsRegex).map_err(ctx)?
                    } else {
                        Dialect::Pcre2
                    };
                    retype(&mut raw.prematch, d, wazuh);
                    add_offset_fragment(
                        &mut raw.prematch,
                        &mut raw.prematch_offset,
                        e,
                        d,
                        "prematch",
                        self.dialect,
                    )
                    .map_err(ctx)?;
                }
                "regex" | "pcre2" => {
                    let d = if n == "regex" {
                        typed(&raw.regex, Dialect::OsRegex).map_err(ctx)?
                    } else {
                        Dialect::Pcre2
                    };
                    retype(&mut raw.regex, d, wazuh);
                    add_offset_fragment(
                        &mut raw.regex,
                        &mut raw.regex_offset,
                        e,
                        d,
                        "regex",
                        self.dialect,
                    )
                    .map_err(ctx)?;
                }
                "json_null_field" if self.dialect.is_wazuh() => {
                    json_null = match text.trim() {
                        "discard" => JsonNull::Discard,
                        "empty" => JsonNull::Empty,
                        "string" => JsonNull::String,
                        other => {
                            return Err(ctx(format!(
                                "invalid json_null_field '{other}' (discard, empty or string)"
                            )));
                        }
                    };
                }
                "json_array_structure" if self.dialect.is_wazuh() => {}
                "ftscomment" => {}
                "use_own_name" => use_own_name = text == "true",
                "plugin_decoder" => {
                    plugin = Some(
                        Plugin::parse(text, self.dialect)
                            .ok_or_else(|| ctx(format!("invalid plugin_decoder '{text}'")))?,
                    );
                    if self.dialect.is_wazuh() {
                        plugin_offset = offset_attr(e, self.dialect).map_err(ctx)?;
                    }
                }
                "order" => {
                    let mut fields = Vec::new();
                    for f in text.split(',') {
                        let f = f.trim();
                        if f.is_empty() {
                            return Err(ctx(format!("empty field in order '{text}'")));
                        }
                        fields.push(FieldName::parse_in(f, self.dialect));
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
            plugin_offset,
            json_null,
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
                let same_family = self.dialect.is_wazuh()
                    || match (&prev.regex, &dec.regex) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(xml: &str) -> Result<DecoderSet, LoadErrors> {
        DecoderSet::load(&[("d.xml".into(), xml.into())])
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
}
