//! Alerts as people and their tools read them, from the one
//! [`Alert`](crate::alert::Alert) model: OSSEC's `alerts.log` entry
//! (`src/analysisd/alerts/log.c:OS_Log`, for `logtest -a` and the manager's
//! alerts.log), Wazuh's alerts.json object, and OSSEC maild's e-mail
//! notification and SMS layouts (with "Palisade" where OSSEC prints "OSSEC
//! HIDS"). Operators grep and parse these with tools written for OSSEC, so
//! the bytes matter; every layout is here so that they cannot drift apart.
//!
//! Every field is printed through [`crate::escape`]: the line, the
//! location and the decoded fields come from agents and the clients they
//! log, and a newline or an escape sequence in them must not forge an
//! entry or drive a terminal. alerts.json keeps the values exact (JSON
//! escapes, [`escape::json_safe`]).
//!
//! ```text
//! ** Alert 1700000000.0: - syslog,sshd,authentication_failed,
//! 2023 Nov 14 22:13:20 web01->/var/log/auth.log
//! Rule: 5716 (level 5) -> 'sshd: a login attempt failed.'
//! Src IP: 1.2.3.4
//! User: root
//! Nov 14 22:13:19 web01 sshd[123]: Failed password for root from 1.2.3.4 port 22 ssh2
//!
//! ```

use jiff::tz::TimeZone;
use serde_json::{Map, Value, json};

use crate::alert::{Alert, WazuhDetail};
use crate::escape::{self, escape_text};
use crate::mitre;

/// OSSEC prints at most this many bytes of the event's line.
pub const FULL_LOG_LIMIT: usize = 1256;

/// OSSEC keeps at most this many earlier lines of a correlation alert.
pub const CONTEXT_LINES: usize = 11;

/// OSSEC's limit on a mail subject and an SMS body.
pub const SUBJECT_LIMIT: usize = 127;

/// OSSEC's alert id: `<epoch seconds>.<n>`, where `n` is the entry's byte
/// offset in alerts.log for OSSEC and `logtest -a`, and the alert's id in
/// the manager's store.
pub fn alert_id(alert: &Alert, n: u64) -> String {
    format!("{}.{n}", alert.time.as_second())
}

/// Where the event came from as alerts.log's second line prints it:
/// `host->location` when the host is not the location itself (a local
/// syslog line), else the location (an agent's event); escaped.
pub fn source(alert: &Alert) -> String {
    match alert.hostname.as_deref() {
        Some(h) if h != alert.location => {
            format!("{}->{}", escape_text(h), escape_text(&alert.location))
        }
        _ => escape_text(&alert.location).into_owned(),
    }
}

fn date(alert: &Alert, zone: &TimeZone) -> String {
    zone.to_datetime(alert.time)
        .strftime("%Y %b %d %H:%M:%S")
        .to_string()
}

/// One alerts.log entry, ending with the empty line that separates
/// entries. `n` completes the alert id (see [`alert_id`]); `mail` is the
/// mail flag ([`Alert::mail_flag`]); `zone` is the manager's local zone
/// for the date line. Lines are cut at OSSEC's 1256 bytes (then
/// escaped), correlated lines at its 11.
pub fn alerts_log_entry(alert: &Alert, n: u64, mail: bool, zone: &TimeZone) -> String {
    let mut s = String::with_capacity(256 + alert.full_log.len());
    let mailflag = if mail { " mail " } else { "" };
    s.push_str(&format!(
        "** Alert {}:{mailflag} - {}\n",
        alert_id(alert, n),
        escape_text(&alert.groups)
    ));
    s.push_str(&format!("{} {}\n", date(alert, zone), source(alert)));
    s.push_str(&format!(
        "Rule: {} (level {}) -> '{}'\n",
        alert.rule_id,
        alert.level,
        escape_text(&alert.description)
    ));
    let optional = [
        ("Src IP", &alert.srcip),
        ("Src Port", &alert.srcport),
        ("Dst IP", &alert.dstip),
        ("Dst Port", &alert.dstport),
        ("User", &alert.dstuser),
    ];
    for (label, v) in optional {
        if let Some(v) = v {
            s.push_str(&format!("{label}: {}\n", escape_text(v)));
        }
    }
    for line in alert.log_lines().take(1 + CONTEXT_LINES) {
        s.push_str(&escape_text(truncate(&line, FULL_LOG_LIMIT)));
        s.push('\n');
    }
    s.push('\n');
    s
}

/// The agent an alert's event came from, as alerts.json names it.
#[derive(Debug, Clone, Copy)]
pub struct JsonAgent<'a> {
    /// Agent id.
    pub id: &'a str,
    /// Agent name.
    pub name: &'a str,
    /// Registered address (`any`: not printed).
    pub ip: &'a str,
}

/// An alert as one line of Wazuh's alerts.json (no line end): `timestamp`
/// (`%FT%T.mmm%z`), `rule{level, description, id, mail, groups}`,
/// `agent{id, name, ip}` (`000` and the manager's name for its own events,
/// `agent` `None`; no `ip` when registered as `any`), `manager{name}`,
/// `id`, `full_log`, `previous_output` (the correlated lines, when there
/// are), `decoder{name}`, `data{srcip, srcport, dstip, dstport, srcuser,
/// dstuser, url}` (the decoded ones) and `location` (the file path only).
/// The values are exact; the text shows no control character (C0 as JSON
/// escapes, the rest through [`escape::json_safe`]). An alert judged in the
/// Wazuh dialect ([`Alert::wazuh`]) gets the rest of Wazuh's shape (see
/// `add_wazuh_detail`); an OSSEC one is exactly the above.
pub fn alert_json(
    alert: &Alert,
    n: u64,
    agent: Option<JsonAgent<'_>>,
    mail: bool,
    manager: &str,
    zone: &TimeZone,
) -> String {
    let agent = match agent {
        Some(a) => {
            let mut agent = json!({ "id": a.id, "name": a.name });
            if a.ip != "any" {
                agent["ip"] = json!(a.ip);
            }
            agent
        }
        None => json!({ "id": "000", "name": manager }),
    };
    let mut data = Map::new();
    for (key, value) in [
        ("srcip", &alert.srcip),
        ("srcport", &alert.srcport),
        ("dstip", &alert.dstip),
        ("dstport", &alert.dstport),
        ("srcuser", &alert.srcuser),
        ("dstuser", &alert.dstuser),
        ("url", &alert.url),
    ] {
        if let Some(v) = value {
            data.insert(key.into(), json!(v));
        }
    }
    let location = alert
        .location
        .split_once("->")
        .map_or(alert.location.as_str(), |(_, path)| path);
    let mut o = json!({
        "timestamp": alert.time.to_zoned_datetime(zone.clone()).strftime("%Y-%m-%dT%H:%M:%S%.3f%z").to_string(),
        "rule": {
            "level": alert.level,
            "description": alert.description,
            "id": alert.rule_id.to_string(),
            "mail": mail,
            "groups": alert.group_list().collect::<Vec<_>>(),
        },
        "agent": agent,
        "manager": { "name": manager },
        "id": alert_id(alert, n),
        "full_log": String::from_utf8_lossy(&alert.full_log),
        "location": location,
    });
    if !alert.correlated.is_empty() {
        o["previous_output"] = json!(alert.correlated.join("\n"));
    }
    if let Some(decoder) = &alert.decoder {
        o["decoder"] = json!({ "name": decoder });
    }
    if !data.is_empty() {
        o["data"] = Value::Object(data);
    }
    if let Some(w) = &alert.wazuh {
        add_wazuh_detail(&mut o, alert, w);
    }
    escape::json_safe(o.to_string())
}

/// The group prefixes Wazuh's alerts.json moves out of `rule.groups` into
/// arrays of their own (`pci_dss_10.2.4` → `rule.pci_dss: ["10.2.4"]`), in
/// the order it tries them (`json_extended.c:W_JSON_ParseGroups`).
const COMPLIANCE_GROUPS: [(&str, &str); 7] = [
    ("pci_dss_", "pci_dss"),
    ("cis_", "cis"),
    ("gdpr_", "gdpr"),
    ("gpg13_", "gpg13"),
    ("hipaa_", "hipaa"),
    ("nist_800_53_", "nist_800_53"),
    ("tsc_", "tsc"),
];

/// What Wazuh's alerts.json adds for an alert judged in its dialect:
/// `rule.mitre{id, tactic, technique}` (ids ATT&CK does not know are left
/// out, as Wazuh does when its database lacks them), `rule.firedtimes`,
/// `rule.frequency`, the compliance groups apart, `decoder.parent`, every
/// decoded field under `data` (dotted names as nested objects, a value
/// that is a JSON array as that array), `predecoder` and no `full_log`
/// for `no_full_log` rules.
fn add_wazuh_detail(o: &mut Value, alert: &Alert, w: &WazuhDetail) {
    let rule = &mut o["rule"];
    let mut groups = Vec::new();
    for g in alert.group_list() {
        match COMPLIANCE_GROUPS
            .iter()
            .find_map(|(prefix, key)| Some((*key, g.strip_prefix(prefix)?)))
        {
            Some((key, value)) => match &mut rule[key] {
                Value::Array(list) => list.push(json!(value)),
                slot => *slot = json!([value]),
            },
            None => groups.push(g),
        }
    }
    rule["groups"] = json!(groups);
    let (mut ids, mut tactics, mut techniques) = (Vec::new(), Vec::<&str>::new(), Vec::new());
    for id in &w.mitre {
        if let Some(t) = mitre::technique(id) {
            ids.push(id.as_str());
            techniques.push(t.name);
            for tactic in t.tactic_list() {
                if !tactics.contains(&tactic) {
                    tactics.push(tactic);
                }
            }
        }
    }
    if !ids.is_empty() {
        rule["mitre"] = json!({ "id": ids, "tactic": tactics, "technique": techniques });
    }
    if let Some(n) = w.firedtimes {
        rule["firedtimes"] = json!(n);
    }
    if let Some(n) = w.frequency {
        rule["frequency"] = json!(n);
    }
    if let (Some(parent), Some(decoder)) = (&w.decoder_parent, o.get_mut("decoder")) {
        decoder["parent"] = json!(parent);
    }
    let mut data = Map::new();
    for (name, value) in &w.data {
        add_field(&mut data, name, value);
    }
    if let Some(m) = o.as_object_mut() {
        if data.is_empty() {
            m.remove("data");
        } else {
            m.insert("data".into(), Value::Object(data));
        }
        if w.no_full_log {
            m.remove("full_log");
        }
    }
    let mut predecoder = Map::new();
    for (key, value) in [
        ("program_name", &w.program_name),
        ("timestamp", &w.header_time),
        ("hostname", &w.header_host),
    ] {
        if let Some(v) = value {
            predecoder.insert(key.into(), json!(v));
        }
    }
    if !predecoder.is_empty() {
        o["predecoder"] = Value::Object(predecoder);
    }
}

/// How deep `data` nests a dotted name; the rest of a longer name is one
/// key. JSON keys are the sender's and may hold dots themselves: without
/// a bound, `{"a.a.a....": 1}` would nest as deep as the line is long (and
/// overflow the stack when printed or freed).
const MAX_DATA_NESTING: usize = 32;

/// Wazuh's `W_JSON_AddField`: `a.b.c` becomes `{"a": {"b": {"c": ..}}}`;
/// a name already taken keeps its first value (a part that is a value,
/// not an object, drops the field); a value that reads whole as a JSON
/// array is that array, anything else a string. Nesting stops at
/// [`MAX_DATA_NESTING`].
fn add_field(root: &mut Map<String, Value>, name: &str, value: &str) {
    let mut object = root;
    let mut rest = name;
    for _ in 0..MAX_DATA_NESTING {
        let Some((head, tail)) = rest.split_once('.') else {
            break;
        };
        let slot = object
            .entry(head)
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(inner) = slot else {
            return;
        };
        object = inner;
        rest = tail;
    }
    if object.contains_key(rest) {
        return;
    }
    // An array nested deeper than the names may stays text, so that the
    // line stays within what JSON readers accept (serde_json: 128 levels).
    let parsed = (value.starts_with('[') && json_depth(value) <= MAX_DATA_NESTING)
        .then(|| serde_json::from_str::<Value>(value).ok())
        .flatten();
    object.insert(rest.into(), parsed.unwrap_or_else(|| json!(value)));
}

/// How deep the brackets of JSON text nest (those inside strings not
/// counted).
fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The body of OSSEC's e-mail notification (`\n` line ends; a mailer
/// turns them into CRLF), every field escaped.
pub fn notification_body(alert: &Alert, zone: &TimeZone) -> String {
    let mut s = format!(
        "\nPalisade Notification.\n{}\n\nReceived From: {}\nRule: {} fired (level {}) -> \"{}\"\n",
        date(alert, zone),
        source(alert),
        alert.rule_id,
        alert.level,
        escape_text(&alert.description)
    );
    if let Some(ip) = &alert.srcip {
        s.push_str(&format!("Src IP: {}\n", escape_text(ip)));
    }
    if let Some(user) = &alert.dstuser {
        s.push_str(&format!("User: {}\n", escape_text(user)));
    }
    s.push_str("Portion of the log(s):\n\n");
    for line in alert.log_lines() {
        s.push_str(&escape_text(&line));
        s.push('\n');
    }
    s.push_str("\n\n --END OF NOTIFICATION\n\n\n");
    s
}

/// The notification's subject: `Palisade Alert - <source before "->"> -
/// Level <L> - <description>`, at most 127 bytes, escaped (a header line
/// cannot be ended by the fields).
pub fn notification_subject(alert: &Alert) -> String {
    let source = source(alert);
    let host = source.split("->").next().unwrap_or(&source);
    truncate_owned(
        format!(
            "Palisade Alert - {host} - Level {} - {}",
            alert.level,
            escape_text(&alert.description)
        ),
        SUBJECT_LIMIT,
    )
}

/// The subject of OSSEC's SMS layout: `Palisade <L> - <rule> - <description>`,
/// at most 127 bytes, escaped.
pub fn sms_subject(alert: &Alert) -> String {
    truncate_owned(
        format!(
            "Palisade {} - {} - {}",
            alert.level,
            alert.rule_id,
            escape_text(&alert.description)
        ),
        SUBJECT_LIMIT,
    )
}

/// The body of OSSEC's SMS layout: the first 127 bytes of the log lines
/// (each escaped).
pub fn sms_body(alert: &Alert) -> String {
    truncate_owned(
        alert
            .log_lines()
            .map(|l| escape_text(&l).into_owned())
            .collect::<Vec<_>>()
            .join("\n"),
        SUBJECT_LIMIT,
    )
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// [`truncate`] for an owned string.
pub fn truncate_owned(mut s: String, max: usize) -> String {
    let keep = truncate(&s, max).len();
    s.truncate(keep);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Alert;
    use crate::event::Event;
    use crate::predecode::predecode;
    use crate::rule::RuleOptions;

    fn from_event(ev: Event, level: u32, correlated: Vec<String>) -> Alert {
        Alert {
            time: "2023-11-14T22:13:20Z".parse().unwrap(),
            rule_id: 5716,
            level,
            description: "sshd: a login attempt failed.".into(),
            groups: "syslog,sshd,authentication_failed,".into(),
            options: RuleOptions::default(),
            location: ev.location,
            hostname: ev.hostname,
            decoder: ev.decoder_name,
            srcip: ev.fields.srcip,
            srcport: ev.fields.srcport,
            dstip: ev.fields.dstip,
            dstport: ev.fields.dstport,
            srcuser: ev.fields.srcuser,
            dstuser: ev.fields.dstuser,
            url: ev.fields.url,
            full_log: ev.full_log,
            correlated,
            wazuh: None,
        }
    }

    /// An agent's web scan alert, as the manager stores it.
    fn scan() -> Alert {
        Alert {
            time: jiff::Timestamp::from_millisecond(1_764_324_001_000).unwrap(),
            rule_id: 31151,
            level: 10,
            description: "Many 4xx answers to one address in 90 seconds (web scan).".into(),
            groups: "web,accesslog,web_scan,recon,".into(),
            options: RuleOptions::default(),
            location: "(web01) any->/var/log/nginx/access.log".into(),
            hostname: Some("(web01) any->/var/log/nginx/access.log".into()),
            decoder: Some("web-accesslog".into()),
            srcip: Some("203.0.113.7".into()),
            srcport: None,
            dstip: None,
            dstport: None,
            srcuser: None,
            dstuser: None,
            url: None,
            full_log: b"line 14".to_vec(),
            correlated: vec!["line 13".into()],
            wazuh: None,
        }
    }

    /// An alert whose every outside field tries to forge an entry, a
    /// header or a terminal sequence.
    fn hostile() -> Alert {
        const FORGE: &str = "\n** Alert 1.2: - fake,\r\x1b[2J\x1b]0;owned\x07\u{9b}31m";
        let mut a = scan();
        a.location = format!("(web01) any->/var/log/x{FORGE}");
        a.hostname = Some(format!("evil{FORGE}"));
        a.srcip = Some(format!("203.0.113.7{FORGE}"));
        a.dstuser = Some(format!("root{FORGE}"));
        a.url = Some(format!("/x{FORGE}"));
        a.description = format!("desc{FORGE}");
        a.full_log = format!("line{FORGE}").into_bytes();
        a.correlated = vec![format!("earlier{FORGE}")];
        a
    }

    /// No control character but the layout's own line ends.
    fn assert_only_layout_newlines(text: &str) {
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && crate::escape::needs_escape(c)),
            "{text:?}"
        );
    }

    #[test]
    fn hostile_fields_cannot_forge_an_entry() {
        let a = hostile();
        let entry = alerts_log_entry(&a, 3, true, &TimeZone::UTC);
        assert_only_layout_newlines(&entry);
        let lines: Vec<&str> = entry.lines().collect();
        // Header, source, rule, Src IP, User, the line, one context line, "".
        assert_eq!(lines.len(), 8, "{entry}");
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("** Alert")).count(),
            1
        );
        assert!(
            lines[1].ends_with(
                r"evil\n** Alert 1.2: - fake,\r\x1b[2J\x1b]0;owned\x07\u{009b}31m->(web01) any->/var/log/x\n** Alert 1.2: - fake,\r\x1b[2J\x1b]0;owned\x07\u{009b}31m"
            ),
            "{}",
            lines[1]
        );
        assert!(lines[5].starts_with(r"line\n** Alert 1.2"), "{}", lines[5]);
    }

    #[test]
    fn hostile_fields_cannot_forge_mail() {
        let a = hostile();
        let body = notification_body(&a, &TimeZone::UTC);
        assert_only_layout_newlines(&body);
        assert_eq!(
            body.lines()
                .filter(|l| l.starts_with("** Alert") || l.starts_with("Src IP"))
                .count(),
            1
        );
        for subject in [notification_subject(&a), sms_subject(&a)] {
            assert!(
                !subject.chars().any(crate::escape::needs_escape),
                "{subject:?}"
            );
        }
        assert_only_layout_newlines(&sms_body(&a));
        assert!(notification_subject(&a).starts_with(r"Palisade Alert - evil\n** Alert"));
    }

    #[test]
    fn hostile_fields_stay_exact_in_json() {
        let a = hostile();
        let agent = JsonAgent {
            id: "001",
            name: "web01\nfake",
            ip: "any",
        };
        let line = alert_json(&a, 7, Some(agent), true, "central", &TimeZone::UTC);
        assert!(!line.chars().any(crate::escape::needs_escape), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["full_log"], String::from_utf8_lossy(&a.full_log).as_ref());
        assert_eq!(v["data"]["url"], a.url.as_deref().unwrap());
        assert_eq!(v["agent"]["name"], "web01\nfake");
    }

    #[test]
    fn local_syslog_entry() {
        let mut ev = predecode(
            b"Nov 14 22:13:19 web01 sshd[123]: Failed password for root from 1.2.3.4 port 22 ssh2",
            "/var/log/auth.log",
            "mgr",
        );
        ev.fields.srcip = Some("1.2.3.4".into());
        ev.fields.dstuser = Some("root".into());
        let a = from_event(ev, 5, vec![]);
        assert_eq!(
            alerts_log_entry(&a, 0, a.mail_flag(7), &TimeZone::UTC),
            "** Alert 1700000000.0: - syslog,sshd,authentication_failed,\n\
             2023 Nov 14 22:13:20 web01->/var/log/auth.log\n\
             Rule: 5716 (level 5) -> 'sshd: a login attempt failed.'\n\
             Src IP: 1.2.3.4\n\
             User: root\n\
             Nov 14 22:13:19 web01 sshd[123]: Failed password for root from 1.2.3.4 port 22 ssh2\n\n"
        );
    }

    #[test]
    fn ports_are_printed_between_the_addresses() {
        let mut ev = predecode(
            b"Nov 14 22:13:19 fw01 kernel: DROP SRC=1.2.3.4 DST=10.0.0.1 SPT=5555 DPT=22",
            "/var/log/kern.log",
            "mgr",
        );
        ev.fields.srcip = Some("1.2.3.4".into());
        ev.fields.srcport = Some("5555".into());
        ev.fields.dstip = Some("10.0.0.1".into());
        ev.fields.dstport = Some("22".into());
        let a = from_event(ev, 5, vec![]);
        let entry = alerts_log_entry(&a, 0, false, &TimeZone::UTC);
        let lines: Vec<&str> = entry.lines().collect();
        assert_eq!(
            &lines[3..7],
            [
                "Src IP: 1.2.3.4",
                "Src Port: 5555",
                "Dst IP: 10.0.0.1",
                "Dst Port: 22"
            ]
        );
        let v: Value =
            serde_json::from_str(&alert_json(&a, 0, None, false, "mgr", &TimeZone::UTC)).unwrap();
        assert_eq!(v["data"]["srcport"], "5555");
        assert_eq!(v["data"]["dstport"], "22");
    }

    #[test]
    fn agent_event_mail_flag_and_context() {
        let loc = "(web01) 10.0.0.5->/var/log/apache2/access.log";
        let mut ev = predecode(b"x y z", loc, "mgr");
        ev.hostname = Some(loc.into());
        let ctx: Vec<String> = (0..15).map(|i| format!("line {i}")).collect();
        let a = from_event(ev, 10, ctx);
        let text = alerts_log_entry(&a, 4242, a.mail_flag(7), &TimeZone::UTC);
        assert!(text.starts_with("** Alert 1700000000.4242: mail  - syslog,"));
        assert!(text.contains(&format!("\n2023 Nov 14 22:13:20 {loc}\n")));
        assert!(text.contains("line 10\n") && !text.contains("line 11\n"));
        assert!(text.ends_with("line 10\n\n"));
    }

    #[test]
    fn long_lines_are_cut() {
        let long = "é".repeat(1000);
        assert_eq!(truncate(&long, FULL_LOG_LIMIT).len(), 1256);
        assert_eq!(truncate("short", 3), "sho");
        let mut a = scan();
        a.full_log = vec![b'x'; 2000];
        a.dstip = Some("192.0.2.1".into());
        a.dstuser = Some("root".into());
        a.correlated = (0..20).map(|i| format!("context {i}")).collect();
        let entry = alerts_log_entry(&a, 7, false, &TimeZone::UTC);
        let lines: Vec<&str> = entry.lines().collect();
        assert_eq!(
            &lines[3..6],
            ["Src IP: 203.0.113.7", "Dst IP: 192.0.2.1", "User: root"]
        );
        assert_eq!(lines[6].len(), FULL_LOG_LIMIT);
        assert_eq!(lines[7], "context 0");
        // Header, date, rule, three fields, the line, the context, the empty line.
        assert_eq!(lines.len(), 7 + CONTEXT_LINES + 1);
        assert!(entry.ends_with("context 10\n\n"));
    }

    #[test]
    fn notification_follows_ossecs_layout() {
        let body = notification_body(&scan(), &TimeZone::UTC);
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines[0], "");
        assert_eq!(lines[1], "Palisade Notification.");
        assert_eq!(lines[2], "2025 Nov 28 10:00:01");
        assert_eq!(lines[3], "");
        assert_eq!(
            lines[4],
            "Received From: (web01) any->/var/log/nginx/access.log"
        );
        assert_eq!(
            lines[5],
            "Rule: 31151 fired (level 10) -> \"Many 4xx answers to one address in 90 seconds (web scan).\""
        );
        assert_eq!(lines[6], "Src IP: 203.0.113.7");
        assert_eq!(lines[7], "Portion of the log(s):");
        assert_eq!(&lines[9..11], ["line 14", "line 13"]);
        assert!(body.ends_with("\n\n --END OF NOTIFICATION\n\n\n"));
        assert_eq!(
            notification_subject(&scan()),
            "Palisade Alert - (web01) any - Level 10 - Many 4xx answers to one address in 90 seconds (web scan)."
        );
    }

    #[test]
    fn sms_layout() {
        assert_eq!(
            sms_subject(&scan()),
            "Palisade 10 - 31151 - Many 4xx answers to one address in 90 seconds (web scan)."
        );
        assert_eq!(sms_body(&scan()), "line 14\nline 13");
    }

    #[test]
    fn wazuh_fields_nest_as_wazuh_adds_them() {
        let mut data = Map::new();
        for (k, v) in [
            ("a.b.c", "1"),
            ("a.b.d", "[1, \"x\"]"),
            ("a.b", "taken: a.b is an object"),
            ("x", "plain"),
            ("x.y", "dropped: x is a value"),
            ("x", "second"),
            ("list", "[not json"),
        ] {
            add_field(&mut data, k, v);
        }
        assert_eq!(
            Value::Object(data),
            json!({"a": {"b": {"c": "1", "d": [1, "x"]}}, "x": "plain", "list": "[not json"})
        );
    }

    #[test]
    fn a_hostile_dotted_key_nests_only_so_deep() {
        let name = "a.".repeat(100_000) + "z";
        let mut a = scan();
        a.wazuh = Some(Box::new(WazuhDetail {
            data: vec![(name, "x".into())],
            ..WazuhDetail::default()
        }));
        let line = alert_json(&a, 7, None, false, "central", &TimeZone::UTC);
        let mut v = &serde_json::from_str::<Value>(&line).unwrap()["data"];
        for _ in 0..MAX_DATA_NESTING {
            v = &v["a"];
        }
        let rest = "a.".repeat(100_000 - MAX_DATA_NESTING) + "z";
        assert_eq!(v[rest.as_str()], "x");
        // A deep array stays text; one within the bound is an array.
        let deep = "[".repeat(100) + &"]".repeat(100);
        let shallow = r#"[["]]]]]]"], 1]"#;
        assert_eq!(json_depth(shallow), 2);
        assert_eq!(json_depth(r#"["\"[[[["]"#), 1);
        let mut data = Map::new();
        add_field(&mut data, "deep", &deep);
        add_field(&mut data, "shallow", shallow);
        assert_eq!(data["deep"], json!(deep));
        assert_eq!(data["shallow"], json!([["]]]]]]"], 1]));
    }

    #[test]
    fn the_ossec_json_line_has_no_wazuh_detail() {
        let mut a = scan();
        a.groups = "web,pci_dss_10.2.4,".into();
        let v: Value =
            serde_json::from_str(&alert_json(&a, 7, None, false, "central", &TimeZone::UTC))
                .unwrap();
        assert_eq!(v["rule"]["groups"], json!(["web", "pci_dss_10.2.4"]));
        for key in ["pci_dss", "firedtimes", "mitre"] {
            assert!(v["rule"].get(key).is_none(), "{key}");
        }
        a.wazuh = Some(Box::new(WazuhDetail {
            mitre: vec!["T1110".into(), "T0000".into()],
            firedtimes: None,
            ..WazuhDetail::default()
        }));
        let v: Value =
            serde_json::from_str(&alert_json(&a, 7, None, false, "central", &TimeZone::UTC))
                .unwrap();
        assert_eq!(v["rule"]["groups"], json!(["web"]));
        assert_eq!(v["rule"]["pci_dss"], json!(["10.2.4"]));
        // An id ATT&CK does not know is left out; no_counter: no count.
        assert_eq!(v["rule"]["mitre"]["id"], json!(["T1110"]));
        assert!(v["rule"].get("firedtimes").is_none());
        assert!(v.get("data").is_none(), "no decoded field: {v}");
    }

    #[test]
    fn the_json_line_has_wazuhs_field_names() {
        let mut a = scan();
        a.url = Some("/wp-login.php".into());
        let agent = JsonAgent {
            id: "001",
            name: "web01",
            ip: "10.0.0.5",
        };
        let zone = TimeZone::fixed(jiff::tz::offset(1));
        let line = alert_json(&a, 7, Some(agent), true, "central", &zone);
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["timestamp"], "2025-11-28T11:00:01.000+0100");
        assert_eq!(v["rule"]["level"], 10);
        assert_eq!(v["rule"]["id"], "31151");
        assert_eq!(v["rule"]["mail"], true);
        assert_eq!(
            v["rule"]["groups"],
            json!(["web", "accesslog", "web_scan", "recon"])
        );
        assert_eq!(
            v["agent"],
            json!({"id": "001", "name": "web01", "ip": "10.0.0.5"})
        );
        assert_eq!(v["manager"]["name"], "central");
        assert_eq!(v["id"], "1764324001.7");
        assert_eq!(v["full_log"], "line 14");
        assert_eq!(v["previous_output"], "line 13");
        assert_eq!(v["decoder"]["name"], "web-accesslog");
        assert_eq!(
            v["data"],
            json!({"srcip": "203.0.113.7", "url": "/wp-login.php"})
        );
        assert_eq!(v["location"], "/var/log/nginx/access.log");
        // The manager's own events, a single line, nothing decoded.
        a.correlated.clear();
        a.srcip = None;
        a.url = None;
        a.decoder = None;
        a.location = "/var/log/auth.log".into();
        let v: Value =
            serde_json::from_str(&alert_json(&a, 7, None, false, "central", &zone)).unwrap();
        assert_eq!(v["agent"], json!({"id": "000", "name": "central"}));
        assert!(v.get("previous_output").is_none());
        assert!(v.get("data").is_none());
        assert!(v.get("decoder").is_none());
        assert_eq!(v["location"], "/var/log/auth.log");
    }
}
