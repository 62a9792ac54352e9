//! The one alert model: what the rules decided about one event, with
//! every field an output shows. The engine makes it; the manager stores it
//! as it is, hands it to the responder and the outputs, and maps it onto
//! the control API; [`crate::alert_format`] renders it for alerts.log,
//! alerts.json, e-mail and `logtest -a`. Keeping one shape means a field
//! added here reaches every output, and no output can print what another
//! lost on the way.

use std::borrow::Cow;

use jiff::Timestamp;

use crate::event::Event;
use crate::rule::{Rule, RuleOptions};

/// OSSEC's default `<email_alert_level>`.
pub const DEFAULT_EMAIL_ALERT_LEVEL: u32 = 7;

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// When the event was judged: its arrival time, or its own timestamp
    /// with `time_source = "event"`.
    pub time: Timestamp,
    /// Rule id.
    pub rule_id: u32,
    /// Rule level.
    pub level: u32,
    /// Rule description.
    pub description: String,
    /// The rule's group string as OSSEC builds and prints it
    /// (`syslog,sshd,authentication_failed,`); see [`Alert::group_list`].
    pub groups: String,
    /// The rule's `<options>` (log, mail and active-response flags).
    pub options: RuleOptions,
    /// Where the line came from: a file path, or `(agent) ip->path` for an
    /// agent's event.
    pub location: String,
    /// Host name from the syslog header (the location for agent events);
    /// alerts.log prints `host->location` when the two differ.
    pub hostname: Option<String>,
    /// Name of the decoder that matched.
    pub decoder: Option<String>,
    /// Decoded source address.
    pub srcip: Option<String>,
    /// Decoded source port.
    pub srcport: Option<String>,
    /// Decoded destination address.
    pub dstip: Option<String>,
    /// Decoded destination port.
    pub dstport: Option<String>,
    /// Decoded source user.
    pub srcuser: Option<String>,
    /// Decoded destination user (OSSEC's `User:`).
    pub dstuser: Option<String>,
    /// Decoded URL.
    pub url: Option<String>,
    /// The line as received (OSSEC `full_log`).
    pub full_log: Vec<u8>,
    /// For a correlation alert, the earlier events' lines that made it
    /// fire, newest first.
    pub correlated: Vec<String>,
}

impl Alert {
    /// The alert `rule` raises for `event`, judged at `time`.
    pub fn new(rule: &Rule, event: &Event, time: Timestamp, correlated: Vec<String>) -> Self {
        let f = &event.fields;
        Self {
            time,
            rule_id: rule.id,
            level: rule.level,
            description: rule.description.clone(),
            groups: rule.group.clone(),
            options: rule.options,
            location: event.location.clone(),
            hostname: event.hostname.clone(),
            decoder: event.decoder_name.clone(),
            srcip: f.srcip.clone(),
            srcport: f.srcport.clone(),
            dstip: f.dstip.clone(),
            dstport: f.dstport.clone(),
            srcuser: f.srcuser.clone(),
            dstuser: f.dstuser.clone(),
            url: f.url.clone(),
            full_log: event.full_log.clone(),
            correlated,
        }
    }

    /// Whether an alerts.log / alerts.json line is written (`no_log` unset).
    pub fn log_it(&self) -> bool {
        !self.options.no_log
    }

    /// OSSEC's mail flag: level at or above `email_alert_level`, or the
    /// rule's `alert_by_email`; never with `no_email_alert`, and never for
    /// an alert that is not logged (`no_log`: maild reads alerts.log).
    pub fn mail_flag(&self, email_alert_level: u32) -> bool {
        self.log_it()
            && !self.options.no_email_alert
            && (self.level >= email_alert_level || self.options.alert_by_email)
    }

    /// The groups, one by one (`syslog`, `sshd`, ...).
    pub fn group_list(&self) -> impl Iterator<Item = &str> {
        self.groups
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
    }

    /// The event's line, then the correlated lines.
    pub fn log_lines(&self) -> impl Iterator<Item = Cow<'_, str>> {
        std::iter::once(String::from_utf8_lossy(&self.full_log))
            .chain(self.correlated.iter().map(|l| Cow::Borrowed(l.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(level: u32) -> Alert {
        Alert {
            time: Timestamp::UNIX_EPOCH,
            rule_id: 31151,
            level,
            description: "scan".into(),
            groups: "web, accesslog,web_scan,,".into(),
            options: RuleOptions::default(),
            location: "/var/log/x".into(),
            hostname: None,
            decoder: None,
            srcip: None,
            srcport: None,
            dstip: None,
            dstport: None,
            srcuser: None,
            dstuser: None,
            url: None,
            full_log: b"line".to_vec(),
            correlated: vec!["earlier".into()],
        }
    }

    #[test]
    fn the_mail_flag_is_ossecs() {
        let mut a = alert(10);
        assert!(a.mail_flag(7));
        assert!(!a.mail_flag(11), "below email_alert_level");
        a.options.alert_by_email = true;
        assert!(a.mail_flag(11), "alert_by_email mails below the level");
        a.options.no_email_alert = true;
        assert!(!a.mail_flag(7), "no_email_alert never mails");
        a.options.no_email_alert = false;
        a.options.no_log = true;
        assert!(!a.mail_flag(7), "an alert not logged is not mailed");
    }

    #[test]
    fn groups_and_lines() {
        let a = alert(3);
        assert_eq!(
            a.group_list().collect::<Vec<_>>(),
            ["web", "accesslog", "web_scan"]
        );
        assert_eq!(a.log_lines().collect::<Vec<_>>(), ["line", "earlier"]);
    }
}
