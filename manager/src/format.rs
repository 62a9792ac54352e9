//! Alerts as people read them: OSSEC's alerts.log entry, Wazuh's
//! alerts.json object and OSSEC's e-mail notification layout (with
//! "Palisade" where OSSEC prints "OSSEC HIDS"), from a stored alert.

use palisade_engine::alert_format::{CONTEXT_LINES, FULL_LOG_LIMIT, truncate};

use crate::analysis::{NewAlert, Origin};
use crate::store::StoredAlert;

/// OSSEC's default `email_alert_level`.
pub const DEFAULT_EMAIL_ALERT_LEVEL: u32 = 7;

/// Whether an alert carries OSSEC's mail flag: level at or above
/// `email_alert_level` or the rule's `alert_by_email`, and neither its
/// `no_email_alert` nor `no_log` (maild reads only what is logged).
pub fn mail_flag(alert: &NewAlert, email_alert_level: u32) -> bool {
    alert.log_it
        && !alert.no_email_alert
        && (alert.level >= email_alert_level || alert.alert_by_email)
}

fn local_time(ms: i64) -> jiff::ZonedDateTime {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned_datetime(jiff::tz::TimeZone::system())
}

fn log_lines(alert: &StoredAlert) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
    alert
        .alert
        .log
        .split(|b| *b == b'\n')
        .map(String::from_utf8_lossy)
}

/// An alert in OSSEC's alerts.log layout, ending with the empty line that
/// separates entries. `mail` is OSSEC's mail flag (see [`mail_flag`]). The
/// alert id is `<epoch seconds>.<store id>` where OSSEC has the byte offset.
/// Lines are cut at OSSEC's 1256 bytes, correlated lines at its 11.
pub fn alerts_log_entry(stored: &StoredAlert, mail: bool) -> String {
    let a = &stored.alert;
    let mut s = format!(
        "** Alert {}.{}:{} - {},\n{} {}\nRule: {} (level {}) -> '{}'\n",
        a.time.div_euclid(1000),
        stored.id,
        if mail { " mail " } else { "" },
        a.groups,
        local_time(a.time).strftime("%Y %b %d %H:%M:%S"),
        a.location,
        a.rule_id,
        a.level,
        a.description
    );
    if let Some(ip) = &a.srcip {
        s.push_str(&format!("Src IP: {ip}\n"));
    }
    if let Some(ip) = &a.dstip {
        s.push_str(&format!("Dst IP: {ip}\n"));
    }
    if let Some(user) = &a.dstuser {
        s.push_str(&format!("User: {user}\n"));
    }
    for line in log_lines(stored).take(1 + CONTEXT_LINES) {
        s.push_str(truncate(&line, FULL_LOG_LIMIT));
        s.push('\n');
    }
    s.push('\n');
    s
}

/// An alert as one line of Wazuh's alerts.json (no line end): `timestamp`
/// (`%FT%T.mmm%z`), `rule{level, description, id, mail, groups}`,
/// `agent{id, name, ip}` (`000` and the manager's name for its own events;
/// no `ip` when registered as `any`), `manager{name}`, `id`, `full_log`,
/// `previous_output` (the correlated lines, when there are),
/// `decoder{name}`, `data{srcip, dstip, srcuser, dstuser, url}` (the
/// decoded ones) and `location` (the file path only).
pub fn alert_json(stored: &StoredAlert, origin: &Origin, mail: bool, manager: &str) -> String {
    use serde_json::{Map, Value, json};
    let a = &stored.alert;
    let mut lines = log_lines(stored);
    let full_log = lines.next().unwrap_or_default();
    let previous: Vec<_> = lines.collect();
    let agent = match &origin.agent_id {
        Some(id) => {
            let mut agent = json!({ "id": id, "name": origin.name });
            if origin.ip != "any" {
                agent["ip"] = json!(origin.ip);
            }
            agent
        }
        None => json!({ "id": "000", "name": manager }),
    };
    let mut data = Map::new();
    for (key, value) in [
        ("srcip", &a.srcip),
        ("dstip", &a.dstip),
        ("srcuser", &a.srcuser),
        ("dstuser", &a.dstuser),
        ("url", &a.url),
    ] {
        if let Some(v) = value {
            data.insert(key.into(), json!(v));
        }
    }
    let mut o = json!({
        "timestamp": local_time(a.time).strftime("%Y-%m-%dT%H:%M:%S%.3f%z").to_string(),
        "rule": {
            "level": a.level,
            "description": a.description,
            "id": a.rule_id.to_string(),
            "mail": mail,
            "groups": a.groups.split(',').filter(|g| !g.is_empty()).collect::<Vec<_>>(),
        },
        "agent": agent,
        "manager": { "name": manager },
        "id": format!("{}.{}", a.time.div_euclid(1000), stored.id),
        "full_log": full_log,
        "location": a.location.split_once("->").map_or(a.location.as_str(), |(_, path)| path),
    });
    if !previous.is_empty() {
        o["previous_output"] = json!(previous.join("\n"));
    }
    if let Some(decoder) = &a.decoder {
        o["decoder"] = json!({ "name": decoder });
    }
    if !data.is_empty() {
        o["data"] = Value::Object(data);
    }
    o.to_string()
}

/// The body of OSSEC's e-mail notification (`\n` line ends; a mailer
/// turns them into CRLF).
pub fn notification_body(stored: &StoredAlert) -> String {
    let a = &stored.alert;
    let mut s = format!(
        "\nPalisade Notification.\n{}\n\nReceived From: {}\nRule: {} fired (level {}) -> \"{}\"\n",
        local_time(a.time).strftime("%Y %b %d %H:%M:%S"),
        a.location,
        a.rule_id,
        a.level,
        a.description
    );
    if let Some(ip) = &a.srcip {
        s.push_str(&format!("Src IP: {ip}\n"));
    }
    if let Some(user) = &a.dstuser {
        s.push_str(&format!("User: {user}\n"));
    }
    s.push_str("Portion of the log(s):\n\n");
    for line in log_lines(stored) {
        s.push_str(&line);
        s.push('\n');
    }
    s.push_str("\n\n --END OF NOTIFICATION\n\n\n");
    s
}

/// The notification's subject: `Palisade Alert - <location before "->"> - Level <L> - <description>`, at most 127 characters.
pub fn notification_subject(stored: &StoredAlert) -> String {
    let a = &stored.alert;
    let location = a.location.split("->").next().unwrap_or(&a.location);
    truncate_owned(
        format!(
            "Palisade Alert - {location} - Level {} - {}",
            a.level, a.description
        ),
        127,
    )
}

/// The subject of OSSEC's SMS layout: `Palisade <L> - <rule> - <description>`,
/// at most 127 characters.
pub fn sms_subject(stored: &StoredAlert) -> String {
    let a = &stored.alert;
    truncate_owned(
        format!("Palisade {} - {} - {}", a.level, a.rule_id, a.description),
        127,
    )
}

/// The body of OSSEC's SMS layout: the first 127 characters of the log.
pub fn sms_body(stored: &StoredAlert) -> String {
    truncate_owned(String::from_utf8_lossy(&stored.alert.log).into_owned(), 127)
}

/// Notifications that waited for the end of an `email_maxperhour` period,
/// sent as one mail: the bodies one after the other, as OSSEC's maild
/// joins grouped messages.
pub fn digest_body<'a>(bodies: impl IntoIterator<Item = &'a str>) -> String {
    bodies.into_iter().collect()
}

/// An agent's report on an active response, for "E-mail alerts on active
/// responses".
#[derive(Debug, Clone)]
pub struct ResponseReport<'a> {
    /// When the agent carried it out (epoch ms).
    pub time: i64,
    /// The agent.
    pub agent_id: &'a str,
    /// The response's name (`route-null600`).
    pub response: &'a str,
    /// `add` or `delete`.
    pub action: &'a str,
    /// The address it was about.
    pub srcip: Option<&'a str>,
    /// The rule that caused it (none for an operator's).
    pub rule_id: Option<u32>,
    /// It worked.
    pub ok: bool,
    /// What the agent said.
    pub message: &'a str,
}

/// The subject of an active-response mail.
pub fn response_subject(r: &ResponseReport<'_>) -> String {
    truncate_owned(
        format!(
            "Palisade Active Response - ({}) - {} {} {} - {}",
            r.agent_id,
            r.response,
            r.action,
            r.srcip.unwrap_or("-"),
            if r.ok { "executed" } else { "failed" }
        ),
        127,
    )
}

/// The body of an active-response mail, in the notification layout; the
/// log line is the one OSSEC writes to active-responses.log.
pub fn response_body(r: &ResponseReport<'_>) -> String {
    let t = local_time(r.time);
    format!(
        "\nPalisade Notification.\n{}\n\nReceived From: ({}) active-response\nActive response: {} {} {}\nSrc IP: {}\nAgent said: {}\nPortion of the log(s):\n\n{} {} {} - {} {} {}\n\n\n --END OF NOTIFICATION\n\n\n",
        t.strftime("%Y %b %d %H:%M:%S"),
        r.agent_id,
        r.response,
        r.action,
        if r.ok { "executed" } else { "failed" },
        r.srcip.unwrap_or("-"),
        if r.message.is_empty() { "-" } else { r.message },
        t.strftime("%a %b %e %H:%M:%S %Z %Y"),
        r.response,
        r.action,
        r.srcip.unwrap_or("-"),
        r.time.div_euclid(1000),
        r.rule_id
            .map(|id| id.to_string())
            .unwrap_or_else(|| "-".into()),
    )
}

fn truncate_owned(mut s: String, max: usize) -> String {
    let keep = truncate(&s, max).len();
    s.truncate(keep);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> StoredAlert {
        StoredAlert {
            id: 7,
            alert: NewAlert {
                time: 1_764_324_001_000,
                rule_id: 31151,
                level: 10,
                description: "Many 4xx answers to one address in 90 seconds (web scan).".into(),
                groups: "web,accesslog,web_scan,recon".into(),
                agent_id: Some("001".into()),
                location: "(web01) any->/var/log/nginx/access.log".into(),
                decoder: Some("web-accesslog".into()),
                srcip: Some("203.0.113.7".into()),
                dstip: None,
                srcuser: None,
                dstuser: None,
                url: None,
                event_sequence: Some(14),
                log: b"line 14\nline 13".to_vec(),
                log_it: true,
                no_ar: false,
                alert_by_email: false,
                no_email_alert: false,
            },
        }
    }

    #[test]
    fn notification_follows_ossecs_layout() {
        let body = notification_body(&alert());
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines[0], "");
        assert_eq!(lines[1], "Palisade Notification.");
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
            notification_subject(&alert()),
            "Palisade Alert - (web01) any - Level 10 - Many 4xx answers to one address in 90 seconds (web scan)."
        );
    }

    #[test]
    fn sms_and_response_layouts() {
        assert_eq!(
            sms_subject(&alert()),
            "Palisade 10 - 31151 - Many 4xx answers to one address in 90 seconds (web scan)."
        );
        assert_eq!(sms_body(&alert()), "line 14\nline 13");
        let report = ResponseReport {
            time: 1_764_324_001_000,
            agent_id: "001",
            response: "route-null600",
            action: "add",
            srcip: Some("203.0.113.7"),
            rule_id: Some(31151),
            ok: false,
            message: "netlink: permission denied",
        };
        assert_eq!(
            response_subject(&report),
            "Palisade Active Response - (001) - route-null600 add 203.0.113.7 - failed"
        );
        let body = response_body(&report);
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines[1], "Palisade Notification.");
        assert_eq!(lines[4], "Received From: (001) active-response");
        assert_eq!(lines[5], "Active response: route-null600 add failed");
        assert_eq!(lines[6], "Src IP: 203.0.113.7");
        assert_eq!(lines[7], "Agent said: netlink: permission denied");
        assert_eq!(lines[8], "Portion of the log(s):");
        assert!(
            lines[10].ends_with(" route-null600 add - 203.0.113.7 1764324001 31151"),
            "{}",
            lines[10]
        );
        assert!(body.ends_with("\n\n --END OF NOTIFICATION\n\n\n"));
    }

    #[test]
    fn alerts_log_entry_has_ossecs_header() {
        let stored = alert();
        let entry = alerts_log_entry(&stored, false);
        let lines: Vec<&str> = entry.split('\n').collect();
        assert_eq!(
            lines[0],
            "** Alert 1764324001.7: - web,accesslog,web_scan,recon,"
        );
        let date = local_time(stored.alert.time)
            .strftime("%Y %b %d %H:%M:%S")
            .to_string();
        assert_eq!(
            lines[1],
            format!("{date} (web01) any->/var/log/nginx/access.log")
        );
        assert_eq!(
            lines[2],
            "Rule: 31151 (level 10) -> 'Many 4xx answers to one address in 90 seconds (web scan).'"
        );
        assert_eq!(
            &lines[3..],
            ["Src IP: 203.0.113.7", "line 14", "line 13", "", ""]
        );
        let mailed = alerts_log_entry(&stored, true);
        assert!(
            mailed.starts_with("** Alert 1764324001.7: mail  - web,accesslog,web_scan,recon,\n"),
            "{mailed}"
        );
    }

    #[test]
    fn alerts_log_entry_cuts_long_lines_and_context_as_ossec() {
        let mut stored = alert();
        stored.alert.dstip = Some("192.0.2.1".into());
        stored.alert.dstuser = Some("root".into());
        let mut log = vec![b'x'; 2000];
        for i in 0..20 {
            log.extend_from_slice(format!("\ncontext {i}").as_bytes());
        }
        stored.alert.log = log;
        let entry = alerts_log_entry(&stored, false);
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
    fn the_mail_flag_follows_level_and_rule_options() {
        let mut a = alert().alert;
        assert!(mail_flag(&a, 7));
        assert!(!mail_flag(&a, 11));
        a.alert_by_email = true;
        assert!(mail_flag(&a, 11));
        a.no_email_alert = true;
        assert!(!mail_flag(&a, 7));
    }

    #[test]
    fn the_json_line_has_wazuhs_field_names() {
        let mut stored = alert();
        stored.alert.url = Some("/wp-login.php".into());
        let origin = Origin {
            agent_id: Some("001".into()),
            name: "web01".into(),
            ip: "10.0.0.5".into(),
        };
        let line = alert_json(&stored, &origin, true, "central");
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let ts = v["timestamp"].as_str().unwrap();
        let parsed = jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%.f%z", ts).unwrap();
        assert_eq!(parsed.as_millisecond(), stored.alert.time);
        assert_eq!(ts.len(), "2025-11-28T10:00:01.000+0000".len(), "{ts}");
        assert_eq!(v["rule"]["level"], 10);
        assert_eq!(v["rule"]["id"], "31151");
        assert_eq!(v["rule"]["mail"], true);
        assert_eq!(
            v["rule"]["groups"],
            serde_json::json!(["web", "accesslog", "web_scan", "recon"])
        );
        assert_eq!(
            v["agent"],
            serde_json::json!({"id": "001", "name": "web01", "ip": "10.0.0.5"})
        );
        assert_eq!(v["manager"]["name"], "central");
        assert_eq!(v["id"], "1764324001.7");
        assert_eq!(v["full_log"], "line 14");
        assert_eq!(v["previous_output"], "line 13");
        assert_eq!(v["decoder"]["name"], "web-accesslog");
        assert_eq!(
            v["data"],
            serde_json::json!({"srcip": "203.0.113.7", "url": "/wp-login.php"})
        );
        assert_eq!(v["location"], "/var/log/nginx/access.log");
        // The manager's own events, a single line, nothing decoded.
        stored.alert.log = b"only".to_vec();
        stored.alert.srcip = None;
        stored.alert.url = None;
        stored.alert.decoder = None;
        stored.alert.location = "/var/log/auth.log".into();
        let own = Origin {
            agent_id: None,
            name: "central".into(),
            ip: "any".into(),
        };
        let v: serde_json::Value =
            serde_json::from_str(&alert_json(&stored, &own, false, "central")).unwrap();
        assert_eq!(
            v["agent"],
            serde_json::json!({"id": "000", "name": "central"})
        );
        assert!(v.get("previous_output").is_none());
        assert!(v.get("data").is_none());
        assert!(v.get("decoder").is_none());
        assert_eq!(v["location"], "/var/log/auth.log");
    }
}
