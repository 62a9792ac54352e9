//! One `<rule>` element to a [`Rule`], as `Rules_OP_ReadRules` reads it:
//! repeated elements concatenated without separator, `*_pcre2` twins used
//! only when the OS_Match/OS_Regex element is absent (except `url_pcre2`),
//! unknown elements and attributes rejected, `if_matched_*` implying the
//! parent.

use std::collections::HashSet;

use super::cond::{CompiledRule, IpEntry, IpList, ListCheck, TimeRange, Weekdays};
use super::matcher::Matcher;
use super::{ContextSpec, FilterField, IgnoreFields, InfoEntry, Rule, RuleOptions, StaticFilter};
use crate::dialect::RulesetDialect;
use crate::event::{Category, FieldName};
use crate::pattern::Dialect;
use crate::xml::Element;

/// Errors for one rule: (line, reason).
pub(crate) type Problems = Vec<(usize, String)>;

/// Reads a number the way `sscanf("%Nd")` does after OSSEC's digit check:
/// digits only, at most `width` of them are used.
fn number(attr: &str, value: &str, width: usize) -> Result<u32, String> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid {attr} '{value}': digits expected"));
    }
    let used = &v[..v.len().min(width)];
    used.parse::<u32>()
        .map_err(|_| format!("invalid {attr} '{value}'"))
}

/// One matcher element's text, fragments concatenated (`loadmemory`),
/// with the Wazuh `type=` and `negate=` of its last fragment.
#[derive(Default, Clone)]
struct Frag {
    text: String,
    dialect: Option<Dialect>,
    negate: bool,
    /// Wazuh: a leading `!` negates an OS_Match pattern.
    bang_negates: bool,
}

/// Concatenation buffers (`loadmemory`).
#[derive(Default)]
struct Texts {
    regex: Option<Frag>,
    pcre2: Option<Frag>,
    matches: Option<Frag>,
    match_pcre2: Option<Frag>,
    user: Option<Frag>,
    user_pcre2: Option<Frag>,
    url: Option<Frag>,
    url_pcre2: Option<Frag>,
    id: Option<Frag>,
    id_pcre2: Option<Frag>,
    srcport: Option<Frag>,
    srcport_pcre2: Option<Frag>,
    dstport: Option<Frag>,
    dstport_pcre2: Option<Frag>,
    status: Option<Frag>,
    status_pcre2: Option<Frag>,
    hostname: Option<Frag>,
    hostname_pcre2: Option<Frag>,
    extra_data: Option<Frag>,
    extra_data_pcre2: Option<Frag>,
    program_name: Option<Frag>,
    program_name_pcre2: Option<Frag>,
    action: Option<Frag>,
    protocol: Option<Frag>,
    system_name: Option<Frag>,
    data: Option<Frag>,
    location: Option<Frag>,
    if_sid: Option<String>,
    if_group: Option<String>,
    if_matched_group: Option<String>,
    if_matched_regex: Option<String>,
}

fn append(slot: &mut Option<String>, text: &str) {
    match slot {
        Some(s) => s.push_str(text),
        None => *slot = Some(text.to_string()),
    }
}

fn append_frag(slot: &mut Option<Frag>, text: &str, attrs: (Option<Dialect>, bool, bool)) {
    let f = slot.get_or_insert_with(Frag::default);
    f.text.push_str(text);
    f.dialect = attrs.0.or(f.dialect);
    f.negate = attrs.1;
    f.bang_negates = attrs.2;
}

/// Wazuh's `type=` and `negate=` of a matcher element (`None`, `false`
/// when absent), and whether a leading `!` negates an OS_Match pattern
/// (Wazuh's `OSMatch_Compile`); OSSEC's dialect has none of these.
fn matcher_attrs(
    c: &Element,
    dialect: RulesetDialect,
    who: &str,
    problems: &mut Problems,
) -> (Option<Dialect>, bool, bool) {
    if !dialect.is_wazuh() {
        return (None, false, false);
    }
    let ty = match c.attr("type") {
        None => None,
        Some(t) => match t.to_ascii_lowercase().as_str() {
            "osmatch" => Some(Dialect::OsMatch),
            "osregex" => Some(Dialect::OsRegex),
            "pcre2" => Some(Dialect::Pcre2),
            _ => {
                problems.push((
                    c.line,
                    format!(
                        "{who}: invalid type '{t}' on <{}> (osmatch, osregex or pcre2)",
                        c.name
                    ),
                ));
                None
            }
        },
    };
    let negate = match c.attr("negate") {
        None => false,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "yes" => true,
            "no" => false,
            _ => {
                problems.push((
                    c.line,
                    format!("{who}: invalid negate '{v}' on <{}> (yes or no)", c.name),
                ));
                false
            }
        },
    };
    (ty, negate, true)
}

fn compile(
    d: Dialect,
    src: Option<&Frag>,
    what: &str,
    problems: &mut Problems,
    line: usize,
) -> Option<Matcher> {
    let src = src?;
    let dialect = src.dialect.unwrap_or(d);
    let (text, negate) = match src.text.strip_prefix('!') {
        Some(rest) if src.bang_negates && dialect == Dialect::OsMatch => (rest, !src.negate),
        _ => (src.text.as_str(), src.negate),
    };
    match Matcher::new(dialect, text, negate) {
        Ok(p) => Some(p),
        Err(e) => {
            problems.push((
                line,
                format!("invalid <{what}> pattern '{}': {e:?}", src.text),
            ));
            None
        }
    }
}

/// Parses one `<rule>`; `group` is the enclosing `<group name>`.
pub(crate) fn parse_rule(
    el: &Element,
    group: &str,
    file: &str,
    default_timeframe: u32,
    decoder_names: Option<&HashSet<String>>,
    dialect: RulesetDialect,
    warnings: &mut Problems,
) -> Result<Rule, Problems> {
    let mut problems: Problems = Vec::new();
    let line = el.line;

    // Attributes.
    let mut id: Option<u32> = None;
    let mut level: Option<u32> = None;
    let mut maxsize = 0;
    let mut frequency = 0;
    let mut timeframe = default_timeframe;
    let mut ignore_secs = 0;
    let mut noalert = false;
    let mut overwrite = false;
    let mut accuracy = true;
    for (name, value) in &el.attrs {
        let r = match name.as_str() {
            "id" => number("id", value, 6).map(|v| id = Some(v)),
            "level" => number("level", value, 4).map(|v| level = Some(v)),
            "maxsize" => number("maxsize", value, 4).map(|v| maxsize = v),
            "frequency" => number("frequency", value, 4).map(|v| frequency = v),
            "timeframe" => number("timeframe", value, 5).map(|v| timeframe = v),
            "ignore" => number("ignore", value, 6).map(|v| ignore_secs = v),
            "accuracy" => number("accuracy", value, 4).map(|v| accuracy = v != 0),
            "noalert" => {
                // Wazuh: noalert="0" alerts.
                noalert = !(dialect.is_wazuh() && value.trim() == "0");
                Ok(())
            }
            "overwrite" => match value.as_str() {
                "yes" => {
                    overwrite = true;
                    Ok(())
                }
                "no" => Ok(()),
                _ => Err(format!("invalid overwrite '{value}': yes or no expected")),
            },
            other => Err(format!("invalid rule attribute '{other}'")),
        };
        if let Err(e) = r {
            problems.push((line, e));
        }
    }
    let (Some(id), Some(level)) = (id, level) else {
        problems.push((line, "rule needs an id and a level".to_string()));
        return Err(problems);
    };
    let who = format!("rule {id}");
    if el.children.is_empty() {
        problems.push((line, format!("{who} has no option")));
        return Err(problems);
    }

    let mut t = Texts::default();
    let mut rule = Rule {
        id,
        level,
        sort_level: {
            let l = if level == 0 { 99 } else { level };
            if accuracy { l * 100 } else { l }
        },
        maxsize,
        frequency,
        timeframe,
        ignore_secs,
        noalert,
        category: Category::Syslog,
        group: group.to_string(),
        description: String::new(),
        info: Vec::new(),
        options: RuleOptions::default(),
        cond: Default::default(),
        ctx: ContextSpec::default(),
        ignore_fields: IgnoreFields::default(),
        check_if_ignored: IgnoreFields::default(),
        if_sid: Vec::new(),
        if_group: None,
        if_level: None,
        mitre: Vec::new(),
        fires_after: 0,
        file: file.to_string(),
        line,
    };
    let mut srcip = Vec::new();
    let mut dstip = Vec::new();
    let mut context_opts = false;

    for c in &el.children {
        let l = c.line;
        let text = c.text.as_str();
        if dialect.is_wazuh()
            && let Some(filter) = wazuh_filter(&c.name, text)
        {
            match filter {
                Ok(StaticFilter {
                    field: FilterField::Field(FieldName::SrcIp),
                    same: true,
                }) => rule.ctx.same.source_ip = true,
                Ok(f) => rule.ctx.filters.push(f),
                Err(e) => problems.push((l, format!("{who}: {e}"))),
            }
            context_opts = true;
            continue;
        }
        if dialect.is_wazuh() && c.name == "global_frequency" {
            rule.ctx.global_frequency = true;
            continue;
        }
        // Names compared case-sensitively in OSSEC.
        match c.name.as_str() {
            "same_id" => {
                rule.ctx.same.id = true;
                context_opts = true;
                continue;
            }
            "not_same_id" => {
                rule.ctx.same.id = false;
                continue;
            }
            "different_url" => {
                rule.ctx.same.different_url = true;
                context_opts = true;
                continue;
            }
            "different_srcip" => {
                // Parsed but never evaluated in OSSEC 3.x.
                continue;
            }
            "different_srcgeoip" => {
                rule.ctx.same.different_srcgeoip = true;
                context_opts = true;
                continue;
            }
            _ => {}
        }
        let name = c.name.to_ascii_lowercase();
        match name.as_str() {
            "regex" => append_frag(
                &mut t.regex,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "pcre2" => append_frag(
                &mut t.pcre2,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "match" => append_frag(
                &mut t.matches,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "match_pcre2" => append_frag(
                &mut t.match_pcre2,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "user" => append_frag(
                &mut t.user,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "user_pcre2" => append_frag(
                &mut t.user_pcre2,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "url" => append_frag(
                &mut t.url,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "url_pcre2" => append_frag(
                &mut t.url_pcre2,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "id" => append_frag(
                &mut t.id,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "id_pcre2" => append_frag(
                &mut t.id_pcre2,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "srcport" => append_frag(
                &mut t.srcport,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "srcport_pcre2" => append_frag(
                &mut t.srcport_pcre2,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "dstport" => append_frag(
                &mut t.dstport,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "dstport_pcre2" => append_frag(
                &mut t.dstport_pcre2,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "status" => append_frag(
                &mut t.status,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "status_pcre2" => append_frag(
                &mut t.status_pcre2,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "hostname" => append_frag(
                &mut t.hostname,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "hostname_pcre2" => append_frag(
                &mut t.hostname_pcre2,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "extra_data" => append_frag(
                &mut t.extra_data,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "extra_data_pcre2" => append_frag(
                &mut t.extra_data_pcre2,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "program_name" => append_frag(
                &mut t.program_name,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "program_name_pcre2" => append_frag(
                &mut t.program_name_pcre2,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "action" => append_frag(
                &mut t.action,
                text,
                matcher_attrs(c, dialect, &who, &mut problems),
            ),
            "protocol" | "system_name" | "data" | "location" if dialect.is_wazuh() => {
                let attrs = matcher_attrs(c, dialect, &who, &mut problems);
                let slot = match name.as_str() {
                    "protocol" => &mut t.protocol,
                    "system_name" => &mut t.system_name,
                    "data" => &mut t.data,
                    _ => &mut t.location,
                };
                append_frag(slot, text, attrs);
            }
            "if_sid" => append(&mut t.if_sid, text),
            "if_group" => append(&mut t.if_group, text),
            "if_matched_group" => append(&mut t.if_matched_group, text),
            "if_matched_regex" => append(&mut t.if_matched_regex, text),
            "srcgeoip" | "dstgeoip" | "srcgeoip_pcre2" | "dstgeoip_pcre2" => rule.cond.geoip = true,
            "decoded_as" => {
                let n = text.to_string();
                if let Some(names) = decoder_names
                    && !names.contains(&n)
                {
                    problems.push((
                        l,
                        format!("{who}: invalid decoder name '{n}' in <decoded_as>"),
                    ));
                }
                rule.cond.decoded_as = Some(n);
            }
            "category" => match Category::parse(text) {
                Some(cat) if cat != Category::HostInformation => rule.category = cat,
                _ => problems.push((l, format!("{who}: invalid category '{text}'"))),
            },
            "cve" => {
                rule.info.push(InfoEntry {
                    kind: "cve".into(),
                    value: text.to_string(),
                });
            }
            "info" => {
                let kind = c.attr("type").unwrap_or("text");
                if !matches!(kind, "text" | "link" | "cve" | "osvdb") {
                    problems.push((l, format!("{who}: invalid info type '{kind}'")));
                }
                rule.info.push(InfoEntry {
                    kind: kind.to_string(),
                    value: text.to_string(),
                });
            }
            "time" => match TimeRange::parse(text) {
                Ok(r) => rule.cond.time = Some(r),
                Err(e) => problems.push((l, format!("{who}: {e}"))),
            },
            "weekday" => match Weekdays::parse(text) {
                Ok(w) => rule.cond.weekday = Some(w),
                Err(e) => problems.push((l, format!("{who}: {e}"))),
            },
            "description" => {
                // Only the first newline of a fragment becomes a space.
                rule.description.push_str(&text.replacen('\n', " ", 1));
            }
            "group" => rule.group.push_str(text),
            "srcip" | "dstip" => {
                let (_, negate, _) = matcher_attrs(c, dialect, &who, &mut problems);
                let entry = if negate {
                    IpEntry::parse(&format!("!{}", text.trim()))
                } else {
                    IpEntry::parse(text)
                };
                match (entry, name.as_str()) {
                    (Ok(e), "srcip") => srcip.push(e),
                    (Ok(e), _) => dstip.push(e),
                    (Err(e), _) => problems.push((l, format!("{who}: <{name}>: {e}"))),
                }
            }
            "compiled_rule" => match CompiledRule::parse(text) {
                Some(f) => rule.cond.compiled = Some(f),
                None => problems.push((l, format!("{who}: unknown compiled_rule '{text}'"))),
            },
            "list" => match ListCheck::parse(
                text,
                c.attr("field"),
                c.attr("lookup"),
                c.attr("check_value"),
                dialect,
            ) {
                Ok(lc) => rule.cond.lists.push(lc),
                Err(e) => problems.push((l, format!("{who}: {e}"))),
            },
            "field" => {
                let Some(fname) = c.attr("name") else {
                    problems.push((l, format!("{who}: <field> without a name")));
                    continue;
                };
                let (ty, negate, bang_negates) = matcher_attrs(c, dialect, &who, &mut problems);
                let frag = Frag {
                    text: text.to_string(),
                    dialect: ty,
                    negate,
                    bang_negates,
                };
                if let Some(m) = compile(Dialect::OsRegex, Some(&frag), "field", &mut problems, l) {
                    rule.cond
                        .fields
                        .push((FieldName::parse_in(fname, dialect), m));
                }
            }
            "mitre" if dialect.is_wazuh() => {
                for m in &c.children {
                    if m.name.eq_ignore_ascii_case("id") {
                        let id = m.text.trim();
                        if crate::mitre::technique(id).is_none() {
                            warnings.push((
                                m.line,
                                format!(
                                    "{who}: MITRE ATT&CK technique '{id}' is unknown; alerts.json leaves it out, as Wazuh does"
                                ),
                            ));
                        }
                        rule.mitre.push(id.to_string());
                    } else {
                        problems.push((
                            m.line,
                            format!("{who}: invalid <mitre> option <{}>", m.name),
                        ));
                    }
                }
            }
            "if_level" => match number("if_level", text, 4) {
                Ok(v) if v > 0 => rule.if_level = Some(v),
                _ => problems.push((l, format!("{who}: invalid if_level '{text}'"))),
            },
            "if_fts" => rule.cond.if_fts = true,
            "if_matched_sid" => match number("if_matched_sid", text, 9) {
                Ok(v) => rule.ctx.if_matched_sid = Some(v),
                Err(e) => problems.push((l, format!("{who}: {e}"))),
            },
            "same_source_ip" | "same_srcip" => {
                rule.ctx.same.source_ip = true;
                context_opts = true;
            }
            "same_src_port" => {
                rule.ctx.same.src_port = true;
                context_opts = true;
            }
            "same_dst_port" => {
                rule.ctx.same.dst_port = true;
                context_opts = true;
            }
            "same_user" => {
                rule.ctx.same.user = true;
                context_opts = true;
            }
            "same_location" => {
                rule.ctx.same.location = true;
                context_opts = true;
            }
            "not_same_source_ip" => rule.ctx.same.source_ip = false,
            "not_same_user" => rule.ctx.same.user = false,
            "not_same_agent" => rule.ctx.same.location = false,
            "check_diff" => {
                rule.cond.check_diff = true;
            }
            "options" => match text {
                "alert_by_email" => rule.options.alert_by_email = true,
                "no_email_alert" => rule.options.no_email_alert = true,
                "log_alert" => rule.options.log_alert = true,
                "no_log" => rule.options.no_log = true,
                "no_ar" => rule.options.no_ar = true,
                "no_full_log" if dialect.is_wazuh() => rule.options.no_full_log = true,
                "no_counter" if dialect.is_wazuh() => rule.options.no_counter = true,
                _ => problems.push((
                    l,
                    format!("{who}: invalid option '{text}' (one keyword per <options>)"),
                )),
            },
            "ignore" | "check_if_ignored" => {
                let f = IgnoreFields {
                    user: text.contains("user"),
                    srcip: text.contains("srcip"),
                    dstip: text.contains("dstip"),
                    id: text.contains("id"),
                    location: text.contains("location"),
                    data: text.contains("data"),
                    name: text.contains("name"),
                };
                if !f.any() {
                    problems.push((l, format!("{who}: wrong {name} option '{text}'")));
                }
                if name == "ignore" {
                    rule.ignore_fields = f;
                } else {
                    // OSSEC quirk: `data` from check_if_ignored sets the
                    // ignore mask, and the check reads data from it.
                    rule.ignore_fields.data |= f.data;
                    rule.check_if_ignored = IgnoreFields { data: false, ..f };
                }
            }
            _ => problems.push((l, format!("{who}: invalid option <{}>", c.name))),
        }
    }

    // Compile the patterns: the plain element wins over its pcre2 twin.
    let ln = line;
    let p = &mut problems;
    macro_rules! twin {
        ($field:ident, $plain:ident, $pcre:ident, $dialect:expr) => {
            rule.cond.$field = compile($dialect, t.$plain.as_ref(), stringify!($plain), p, ln);
            rule.cond.pcre2.$field =
                compile(Dialect::Pcre2, t.$pcre.as_ref(), stringify!($pcre), p, ln);
        };
    }
    twin!(matches, matches, match_pcre2, Dialect::OsMatch);
    twin!(regex, regex, pcre2, Dialect::OsRegex);
    twin!(user, user, user_pcre2, Dialect::OsMatch);
    twin!(id, id, id_pcre2, Dialect::OsMatch);
    twin!(srcport, srcport, srcport_pcre2, Dialect::OsMatch);
    twin!(dstport, dstport, dstport_pcre2, Dialect::OsMatch);
    twin!(status, status, status_pcre2, Dialect::OsMatch);
    twin!(hostname, hostname, hostname_pcre2, Dialect::OsMatch);
    twin!(extra_data, extra_data, extra_data_pcre2, Dialect::OsMatch);
    twin!(
        program_name,
        program_name,
        program_name_pcre2,
        Dialect::OsMatch
    );
    rule.cond.url = compile(Dialect::OsMatch, t.url.as_ref(), "url", p, ln);
    rule.cond.url_pcre2 = compile(Dialect::Pcre2, t.url_pcre2.as_ref(), "url_pcre2", p, ln);
    if dialect.is_wazuh() {
        rule.cond.action_match = compile(Dialect::OsMatch, t.action.as_ref(), "action", p, ln);
        for (slot, field, what) in [
            (&t.protocol, FieldName::Protocol, "protocol"),
            (&t.system_name, FieldName::SystemName, "system_name"),
            (&t.data, FieldName::parse_in("data", dialect), "data"),
        ] {
            if let Some(m) = compile(Dialect::OsMatch, slot.as_ref(), what, p, ln) {
                rule.cond.fields.push((field, m));
            }
        }
        rule.cond.location = compile(Dialect::OsMatch, t.location.as_ref(), "location", p, ln);
    } else {
        rule.cond.action = t.action.as_ref().map(|f| f.text.clone());
    }
    if !srcip.is_empty() {
        rule.cond.srcip = Some(IpList(srcip));
    }
    if !dstip.is_empty() {
        rule.cond.dstip = Some(IpList(dstip));
    }
    let plain = |s: &Option<String>| {
        s.as_ref().map(|text| Frag {
            text: text.clone(),
            ..Frag::default()
        })
    };
    rule.ctx.if_matched_group = compile(
        Dialect::OsMatch,
        plain(&t.if_matched_group).as_ref(),
        "if_matched_group",
        p,
        ln,
    )
    .map(|m| m.pattern().clone());
    rule.ctx.if_matched_group_text = t.if_matched_group.clone();
    rule.ctx.if_matched_regex = compile(
        Dialect::OsRegex,
        plain(&t.if_matched_regex).as_ref(),
        "if_matched_regex",
        p,
        ln,
    )
    .map(|m| m.pattern().clone());

    // if_sid: comma/space separated ids.
    if let Some(s) = &t.if_sid {
        for tok in s.split([',', ' ']).filter(|x| !x.is_empty()) {
            match tok.parse::<u32>() {
                Ok(v) => rule.if_sid.push(v),
                // Wazuh warns and leaves the rule out.
                Err(_) if dialect.is_wazuh() => {
                    warnings.push((
                        line,
                        format!(
                            "{who}: invalid if_sid '{tok}'; the rule is ignored, as Wazuh does"
                        ),
                    ));
                    return Err(problems);
                }
                Err(_) => problems.push((
                    line,
                    format!("{who}: invalid if_sid '{tok}': signature ids must be integers"),
                )),
            }
        }
        if rule.if_sid.is_empty() {
            problems.push((line, format!("{who}: empty if_sid")));
        }
    }
    rule.if_group = t.if_group.clone();

    // Frequency and same_* need an if_matched_* element.
    if (context_opts || rule.frequency > 0) && !rule.ctx.is_context() && !rule.cond.check_diff {
        problems.push((
            line,
            format!("{who}: invalid use of frequency/context options: missing if_matched_*"),
        ));
    }
    // if_matched_group implies if_group; if_matched_sid implies if_sid.
    if rule.if_sid.is_empty() && rule.if_group.is_none() {
        if let Some(g) = &t.if_matched_group {
            rule.if_group = Some(g.clone());
        } else if let Some(sid) = rule.ctx.if_matched_sid {
            rule.if_sid.push(sid);
        }
    }
    let _ = overwrite;
    rule.fires_after = if dialect.is_wazuh() {
        // Wazuh fires on the N-th event: N - 1 earlier ones.
        rule.frequency.saturating_sub(1).max(1)
    } else {
        // OSSEC on the (N + 2)-th.
        rule.frequency + 1
    };
    if problems.is_empty() {
        Ok(rule)
    } else {
        Err(problems)
    }
}

/// Whether `<rule overwrite="yes">`.
pub(crate) fn is_overwrite(el: &Element) -> bool {
    el.attr("overwrite") == Some("yes")
}

/// Wazuh's static filters of a context rule: `same_X`, `different_X` and
/// `not_same_X` (an older spelling of `different_X`), X being a static
/// field, `location`, a GeoIP field, or `field` naming a dynamic one.
/// `None` for any other element.
fn wazuh_filter(element: &str, text: &str) -> Option<Result<StaticFilter, String>> {
    let (same, x) = if let Some(x) = element.strip_prefix("same_") {
        (true, x)
    } else if let Some(x) = element.strip_prefix("different_") {
        (false, x)
    } else if let Some(x) = element.strip_prefix("not_same_") {
        (false, x)
    } else {
        return None;
    };
    let field = match x {
        "srcip" | "source_ip" => FilterField::Field(FieldName::SrcIp),
        "dstip" => FilterField::Field(FieldName::DstIp),
        "srcport" | "src_port" => FilterField::Field(FieldName::SrcPort),
        "dstport" | "dst_port" => FilterField::Field(FieldName::DstPort),
        "srcuser" => FilterField::Field(FieldName::SrcUser),
        "dstuser" | "user" => FilterField::Field(FieldName::DstUser),
        "protocol" => FilterField::Field(FieldName::Protocol),
        "action" => FilterField::Field(FieldName::Action),
        "id" => FilterField::Field(FieldName::Id),
        "url" => FilterField::Field(FieldName::Url),
        "data" => FilterField::Field(FieldName::parse_in("data", RulesetDialect::Wazuh)),
        "extra_data" => FilterField::Field(FieldName::Data),
        "status" => FilterField::Field(FieldName::Status),
        "system_name" => FilterField::Field(FieldName::SystemName),
        "location" | "agent" => FilterField::Location,
        "srcgeoip" => FilterField::SrcGeoip,
        "dstgeoip" => FilterField::DstGeoip,
        "field" => {
            let name = text.trim();
            if name.is_empty() {
                return Some(Err(format!("<{element}> needs a field name")));
            }
            FilterField::Field(FieldName::parse_in(name, RulesetDialect::Wazuh))
        }
        _ => return Some(Err(format!("invalid option <{element}>"))),
    };
    Some(Ok(StaticFilter { field, same }))
}
