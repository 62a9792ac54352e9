//! The mail about an active response an agent carried out or failed
//! ("E-mail alerts on active responses"), in the layout of OSSEC's
//! notification; its log line is the one OSSEC writes to
//! active-responses.log. Alert mails are laid out by
//! [`palisade_engine::alert_format`].

use jiff::tz::TimeZone;
use palisade_engine::alert_format::{SUBJECT_LIMIT, truncate_owned};
use palisade_engine::escape::escape_text;

use crate::store::Action;

/// An agent's report on an active response.
#[derive(Debug, Clone)]
pub struct ResponseReport<'a> {
    /// When the agent carried it out (epoch ms).
    pub time: i64,
    /// The agent.
    pub agent_id: &'a str,
    /// The response's name (`route-null600`).
    pub response: &'a str,
    /// Block or lift.
    pub action: Action,
    /// The address it was about.
    pub srcip: Option<&'a str>,
    /// The rule that caused it (none for an operator's).
    pub rule_id: Option<u32>,
    /// It worked.
    pub ok: bool,
    /// What the agent said.
    pub message: &'a str,
}

/// The subject of an active-response mail (fields escaped).
pub fn response_subject(r: &ResponseReport<'_>) -> String {
    truncate_owned(
        format!(
            "Palisade Active Response - ({}) - {} {} {} - {}",
            escape_text(r.agent_id),
            escape_text(r.response),
            r.action,
            escape_text(r.srcip.unwrap_or("-")),
            if r.ok { "executed" } else { "failed" }
        ),
        SUBJECT_LIMIT,
    )
}

/// The body of an active-response mail, in `zone`'s local time; what the
/// agent said (and every other field) escaped.
pub fn response_body(r: &ResponseReport<'_>, zone: &TimeZone) -> String {
    let agent_id = escape_text(r.agent_id);
    let response = escape_text(r.response);
    let srcip = escape_text(r.srcip.unwrap_or("-"));
    let t = jiff::Timestamp::from_millisecond(r.time)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned_datetime(zone.clone());
    format!(
        "\nPalisade Notification.\n{}\n\nReceived From: ({}) active-response\nActive response: {} {} {}\nSrc IP: {}\nAgent said: {}\nPortion of the log(s):\n\n{} {} {} - {} {} {}\n\n\n --END OF NOTIFICATION\n\n\n",
        t.strftime("%Y %b %d %H:%M:%S"),
        agent_id,
        response,
        r.action,
        if r.ok { "executed" } else { "failed" },
        srcip,
        if r.message.is_empty() {
            "-".into()
        } else {
            escape_text(r.message)
        },
        t.strftime("%a %b %e %H:%M:%S %Z %Y"),
        response,
        r.action,
        srcip,
        r.time.div_euclid(1000),
        r.rule_id
            .map(|id| id.to_string())
            .unwrap_or_else(|| "-".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_layout() {
        let report = ResponseReport {
            time: 1_764_324_001_000,
            agent_id: "001",
            response: "route-null600",
            action: Action::Add,
            srcip: Some("203.0.113.7"),
            rule_id: Some(31151),
            ok: false,
            message: "netlink: permission denied",
        };
        assert_eq!(
            response_subject(&report),
            "Palisade Active Response - (001) - route-null600 add 203.0.113.7 - failed"
        );
        let body = response_body(&report, &TimeZone::UTC);
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines[1], "Palisade Notification.");
        assert_eq!(lines[2], "2025 Nov 28 10:00:01");
        assert_eq!(lines[4], "Received From: (001) active-response");
        assert_eq!(lines[5], "Active response: route-null600 add failed");
        assert_eq!(lines[6], "Src IP: 203.0.113.7");
        assert_eq!(lines[7], "Agent said: netlink: permission denied");
        assert_eq!(lines[8], "Portion of the log(s):");
        assert_eq!(
            lines[10],
            "Fri Nov 28 10:00:01 UTC 2025 route-null600 add - 203.0.113.7 1764324001 31151"
        );
        assert!(body.ends_with("\n\n --END OF NOTIFICATION\n\n\n"));
    }

    #[test]
    fn what_the_agent_said_cannot_forge_lines() {
        let report = ResponseReport {
            time: 1_764_324_001_000,
            agent_id: "001",
            response: "route-null600",
            action: Action::Add,
            srcip: Some("203.0.113.7"),
            rule_id: None,
            ok: false,
            message: "denied\r\nSrc IP: 10.0.0.1\x1b[2J",
        };
        let body = response_body(&report, &TimeZone::UTC);
        assert_eq!(body.lines().filter(|l| l.starts_with("Src IP")).count(), 1);
        assert!(body.contains("Agent said: denied\\r\\nSrc IP: 10.0.0.1\\x1b[2J\n"));
        assert!(!body.contains(['\r', '\x1b']));
    }
}
