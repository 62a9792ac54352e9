//! Alerts as people read them: OSSEC's alerts.log entry and its e-mail
//! notification layout (with "Palisade" where OSSEC prints "OSSEC HIDS"),
//! from a stored alert.

use crate::store::StoredAlert;

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

/// An alert in OSSEC's alerts.log layout.
pub fn alerts_log_entry(stored: &StoredAlert) -> String {
    let a = &stored.alert;
    let mut s = format!(
        "** Alert {}.{}: - {},\n{} {}\nRule: {} (level {}) -> '{}'\n",
        a.time.div_euclid(1000),
        stored.id,
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
    if let Some(user) = &a.dstuser {
        s.push_str(&format!("User: {user}\n"));
    }
    for line in log_lines(stored) {
        s.push_str(&line);
        s.push('\n');
    }
    s.push('\n');
    s
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
    truncate(
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
    truncate(
        format!("Palisade {} - {} - {}", a.level, a.rule_id, a.description),
        127,
    )
}

/// The body of OSSEC's SMS layout: the first 127 characters of the log.
pub fn sms_body(stored: &StoredAlert) -> String {
    truncate(String::from_utf8_lossy(&stored.alert.log).into_owned(), 127)
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
    truncate(
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

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::NewAlert;

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
        let entry = alerts_log_entry(&alert());
        assert!(
            entry.starts_with("** Alert 1764324001.7: - web,accesslog,web_scan,recon,\n"),
            "{entry}"
        );
        assert!(
            entry.contains("\nRule: 31151 (level 10) -> 'Many 4xx"),
            "{entry}"
        );
    }
}
