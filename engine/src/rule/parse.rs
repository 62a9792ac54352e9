//! One `<rule>` element to a [`Rule`], as `Rules_OP_ReadRules` reads it:
//! repeated elements concatenated without separator, `*_pcre2` twins used
//! only when the OS_Match/OS_Regex element is absent (except `url_pcre2`),
//! unknown elements and attributes rejected, `if_matched_*` implying the
//! parent.

use std::collections::HashSet;

use super::cond::{CompiledRule, IpEntry, IpList, ListCheck, TimeRange, Weekdays};
use super::{ContextSpec, IgnoreFields, InfoEntry, Rule, RuleOptions};
use crate::event::{Category, FieldName};
use crate::pattern::{Dialect, Pattern};
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

/// Concatenation buffers (`loadmemory`).
#[derive(Default)]
struct Texts {
    regex: Option<String>,
    pcre2: Option<String>,
    matches: Option<String>,
    match_pcre2: Option<String>,
    user: Option<String>,
    user_pcre2: Option<String>,
    url: Option<String>,
    url_pcre2: Option<String>,
    id: Option<String>,
    id_pcre2: Option<String>,
    srcport: Option<String>,
    srcport_pcre2: Option<String>,
    dstport: Option<String>,
    dstport_pcre2: Option<String>,
    status: Option<String>,
    status_pcre2: Option<String>,
    hostname: Option<String>,
    hostname_pcre2: Option<String>,
    extra_data: Option<String>,
    extra_data_pcre2: Option<String>,
    program_name: Option<String>,
    program_name_pcre2: Option<String>,
    action: Option<String>,
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

fn compile(
    d: Dialect,
    src: Option<&String>,
    what: &str,
    problems: &mut Problems,
    line: usize,
) -> Option<Pattern> {
    let src = src?;
    match Pattern::new(d, src) {
        Ok(p) => Some(p),
        Err(e) => {
            problems.push((line, format!("invalid <{what}> pattern '{src}': {e:?}")));
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
                noalert = true;
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
        file: file.to_string(),
        line,
    };
    let mut srcip = Vec::new();
    let mut dstip = Vec::new();
    let mut context_opts = false;

    for c in &el.children {
        let l = c.line;
        let text = c.text.as_str();
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
            "regex" => append(&mut t.regex, text),
            "pcre2" => append(&mut t.pcre2, text),
            "match" => append(&mut t.matches, text),
            "match_pcre2" => append(&mut t.match_pcre2, text),
            "user" => append(&mut t.user, text),
            "user_pcre2" => append(&mut t.user_pcre2, text),
            "url" => append(&mut t.url, text),
            "url_pcre2" => append(&mut t.url_pcre2, text),
            "id" => append(&mut t.id, text),
            "id_pcre2" => append(&mut t.id_pcre2, text),
            "srcport" => append(&mut t.srcport, text),
            "srcport_pcre2" => append(&mut t.srcport_pcre2, text),
            "dstport" => append(&mut t.dstport, text),
            "dstport_pcre2" => append(&mut t.dstport_pcre2, text),
            "status" => append(&mut t.status, text),
            "status_pcre2" => append(&mut t.status_pcre2, text),
            "hostname" => append(&mut t.hostname, text),
            "hostname_pcre2" => append(&mut t.hostname_pcre2, text),
            "extra_data" => append(&mut t.extra_data, text),
            "extra_data_pcre2" => append(&mut t.extra_data_pcre2, text),
            "program_name" => append(&mut t.program_name, text),
            "program_name_pcre2" => append(&mut t.program_name_pcre2, text),
            "action" => append(&mut t.action, text),
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
            "srcip" => match IpEntry::parse(text) {
                Ok(e) => srcip.push(e),
                Err(e) => problems.push((l, format!("{who}: <srcip>: {e}"))),
            },
            "dstip" => match IpEntry::parse(text) {
                Ok(e) => dstip.push(e),
                Err(e) => problems.push((l, format!("{who}: <dstip>: {e}"))),
            },
            "compiled_rule" => match CompiledRule::parse(text) {
                Some(f) => rule.cond.compiled = Some(f),
                None => problems.push((l, format!("{who}: unknown compiled_rule '{text}'"))),
            },
            "list" => match ListCheck::parse(
                text,
                c.attr("field"),
                c.attr("lookup"),
                c.attr("check_value"),
            ) {
                Ok(lc) => rule.cond.lists.push(lc),
                Err(e) => problems.push((l, format!("{who}: {e}"))),
            },
            "field" => {
                let Some(fname) = c.attr("name") else {
                    problems.push((l, format!("{who}: <field> without a name")));
                    continue;
                };
                match Pattern::new(Dialect::OsRegex, text) {
                    Ok(p) => rule.cond.fields.push((FieldName::parse(fname), p)),
                    Err(e) => problems
                        .push((l, format!("{who}: invalid <field> pattern '{text}': {e:?}"))),
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
    rule.cond.action = t.action.clone();
    if !srcip.is_empty() {
        rule.cond.srcip = Some(IpList(srcip));
    }
    if !dstip.is_empty() {
        rule.cond.dstip = Some(IpList(dstip));
    }
    rule.ctx.if_matched_group = compile(
        Dialect::OsMatch,
        t.if_matched_group.as_ref(),
        "if_matched_group",
        p,
        ln,
    );
    rule.ctx.if_matched_group_text = t.if_matched_group.clone();
    rule.ctx.if_matched_regex = compile(
        Dialect::OsRegex,
        t.if_matched_regex.as_ref(),
        "if_matched_regex",
        p,
        ln,
    );

    // if_sid: comma/space separated ids.
    if let Some(s) = &t.if_sid {
        for tok in s.split([',', ' ']).filter(|x| !x.is_empty()) {
            match tok.parse::<u32>() {
                Ok(v) => rule.if_sid.push(v),
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
