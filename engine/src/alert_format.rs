//! OSSEC's `alerts.log` entry layout (`src/analysisd/alerts/log.c:OS_Log`),
//! for `logtest -a` and the manager's alerts.log output: operators grep
//! and parse that file with tools written for OSSEC, so the bytes matter.
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

use crate::engine::Alert;

/// OSSEC prints at most this many bytes of the event's line.
pub const FULL_LOG_LIMIT: usize = 1256;

/// OSSEC keeps at most this many earlier lines of a correlation alert.
pub const CONTEXT_LINES: usize = 11;

/// OSSEC's default `<email_alert_level>`.
pub const DEFAULT_EMAIL_ALERT_LEVEL: u32 = 7;

/// Whether an alert carries OSSEC's mail flag: level at or above
/// `email_alert_level` or `alert_by_email`, and not `no_email_alert`.
pub fn mail_flag(alert: &Alert, email_alert_level: u32) -> bool {
    (alert.level >= email_alert_level || alert.options.alert_by_email)
        && !alert.options.no_email_alert
}

/// One alerts.log entry, ending with the empty line that separates entries.
/// `offset` is the byte offset of the entry in the file (OSSEC's alert id is
/// `<epoch>.<offset>`); `zone` is the manager's local zone for the date line.
pub fn alerts_log_entry(alert: &Alert, offset: u64, mail: bool, zone: &TimeZone) -> String {
    let ev = &alert.event;
    let f = &ev.fields;
    let mut s = String::with_capacity(256 + ev.full_log.len());
    let mailflag = if mail { " mail " } else { "" };
    s.push_str(&format!(
        "** Alert {}.{offset}:{mailflag} - {}\n",
        alert.time.as_second(),
        alert.group_text
    ));
    let local = zone.to_datetime(alert.time);
    let date = local.strftime("%Y %b %d %H:%M:%S");
    match ev.hostname.as_deref() {
        Some(h) if h != ev.location => s.push_str(&format!("{date} {h}->{}\n", ev.location)),
        _ => s.push_str(&format!("{date} {}\n", ev.location)),
    }
    s.push_str(&format!(
        "Rule: {} (level {}) -> '{}'\n",
        alert.rule_id, alert.level, alert.description
    ));
    let optional = [
        ("Src IP", &f.srcip),
        ("Src Port", &f.srcport),
        ("Dst IP", &f.dstip),
        ("Dst Port", &f.dstport),
        ("User", &f.dstuser),
    ];
    for (label, v) in optional {
        if let Some(v) = v {
            s.push_str(&format!("{label}: {v}\n"));
        }
    }
    let full = String::from_utf8_lossy(&ev.full_log);
    s.push_str(truncate(&full, FULL_LOG_LIMIT));
    s.push('\n');
    for line in alert.correlated.iter().take(CONTEXT_LINES) {
        s.push_str(truncate(line, FULL_LOG_LIMIT));
        s.push('\n');
    }
    s.push('\n');
    s
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::predecode::predecode;
    use crate::rule::RuleOptions;

    fn alert(ev: Event, level: u32, correlated: Vec<String>) -> Alert {
        Alert {
            rule_id: 5716,
            level,
            description: "sshd: a login attempt failed.".into(),
            group_text: "syslog,sshd,authentication_failed,".into(),
            groups: vec![],
            options: RuleOptions::default(),
            info: vec![],
            time: "2023-11-14T22:13:20Z".parse().unwrap(),
            event: ev,
            correlated,
            rule_file: String::new(),
            rule_line: 0,
        }
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
        let a = alert(ev, 5, vec![]);
        assert_eq!(
            alerts_log_entry(&a, 0, mail_flag(&a, 7), &TimeZone::UTC),
            "** Alert 1700000000.0: - syslog,sshd,authentication_failed,\n\
             2023 Nov 14 22:13:20 web01->/var/log/auth.log\n\
             Rule: 5716 (level 5) -> 'sshd: a login attempt failed.'\n\
             Src IP: 1.2.3.4\n\
             User: root\n\
             Nov 14 22:13:19 web01 sshd[123]: Failed password for root from 1.2.3.4 port 22 ssh2\n\n"
        );
    }

    #[test]
    fn agent_event_mail_flag_and_context() {
        let loc = "(web01) 10.0.0.5->/var/log/apache2/access.log";
        let mut ev = predecode(b"x y z", loc, "mgr");
        ev.hostname = Some(loc.into());
        let ctx: Vec<String> = (0..15).map(|i| format!("line {i}")).collect();
        let a = alert(ev, 10, ctx);
        let text = alerts_log_entry(&a, 4242, mail_flag(&a, 7), &TimeZone::UTC);
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
    }
}
