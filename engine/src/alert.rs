//! The one alert model: what the rules decided about one event, with
//! every field an output shows. The engine makes it; the manager stores it
//! as it is, hands it to the responder and the outputs, and maps it onto
//! the control API; [`crate::alert_format`] renders it for alerts.log,
//! alerts.json, e-mail and `logtest -a`. Keeping one shape means a field
//! added here reaches every output, and no output can print what another
//! lost on the way.

use std::borrow::Cow;

use jiff::Timestamp;

use crate::dialect::RulesetDialect;
use crate::event::{Event, FieldName};
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
    /// What an alert judged in the Wazuh dialect carries beyond OSSEC's
    /// fields, for alerts.json in Wazuh's shape; `None` in the OSSEC
    /// dialect, whose outputs stay OSSEC's.
    pub wazuh: Option<Box<WazuhDetail>>,
}

/// The part of an alert only Wazuh's alerts.json shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WazuhDetail {
    /// The rule's `<mitre><id>` technique ids.
    pub mitre: Vec<String>,
    /// How many times the rule has fired in this engine, this alert
    /// included (Wazuh's `firedtimes`); `None` with `<options>no_counter`.
    pub firedtimes: Option<u64>,
    /// The rule's `frequency`, when it is a frequency rule.
    pub frequency: Option<u32>,
    /// The parent decoder's name, when a child decoder matched.
    pub decoder_parent: Option<String>,
    /// Every decoded field by its Wazuh name (`srcip`, `extra_data`,
    /// `win.system.eventID`), the static ones first; no empty value.
    pub data: Vec<(String, String)>,
    /// The syslog header's program name.
    pub program_name: Option<String>,
    /// The syslog header's timestamp text.
    pub header_time: Option<String>,
    /// The syslog header's host name.
    pub header_host: Option<String>,
    /// The line carries no `full_log` (`<options>no_full_log`).
    pub no_full_log: bool,
}

impl WazuhDetail {
    /// What `rule` adds for `event`, the rule having fired `firedtimes`
    /// times so far.
    pub fn new(rule: &Rule, event: &Event, firedtimes: u64) -> Self {
        let f = &event.fields;
        let mut data: Vec<(String, String)> = [
            ("srcip", &f.srcip),
            ("srcport", &f.srcport),
            ("dstip", &f.dstip),
            ("dstport", &f.dstport),
            ("protocol", &f.protocol),
            ("action", &f.action),
            ("srcuser", &f.srcuser),
            ("dstuser", &f.dstuser),
            ("id", &f.id),
            ("status", &f.status),
            ("url", &f.url),
            ("extra_data", &f.data),
            ("system_name", &f.system_name),
            ("filename", &f.filename),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.clone()?)))
        .chain(f.dynamic.iter().map(|(k, v)| (k.clone(), v.clone())))
        .filter(|(_, v)| !v.is_empty())
        .collect();
        data.shrink_to_fit();
        let header = event.header_time.is_some();
        Self {
            mitre: rule.mitre.clone(),
            firedtimes: (!rule.options.no_counter).then_some(firedtimes),
            frequency: (rule.frequency > 0).then_some(rule.frequency),
            decoder_parent: event.decoder_parent.clone(),
            data,
            program_name: event.program_name.clone(),
            header_time: event.header_time.clone(),
            header_host: event.hostname.clone().filter(|_| header),
            no_full_log: rule.options.no_full_log,
        }
    }
}

/// A Wazuh rule description with every `$(field)` replaced by the event's
/// value of that field (nothing when the event lacks it), as Wazuh's
/// analysisd does; an unclosed `$(` is kept as it is.
pub fn fill_description(description: &str, event: &Event) -> String {
    let mut out = String::with_capacity(description.len());
    let mut rest = description;
    while let Some(start) = rest.find("$(") {
        let Some(len) = rest[start + 2..].find(')') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..start + 2 + len];
        let field = FieldName::parse_in(name, RulesetDialect::Wazuh);
        if let Some(v) = event.fields.get(&field) {
            out.push_str(v);
        }
        rest = &rest[start + 2 + len + 1..];
    }
    out.push_str(rest);
    out
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
            wazuh: None,
        }
    }

    /// An alert the system raises itself, with no event behind it (the
    /// manager's active-response circuit breaker), judged now: its
    /// description is also its log line.
    pub fn without_event(
        rule_id: u32,
        level: u32,
        description: String,
        groups: &str,
        options: RuleOptions,
        location: &str,
    ) -> Self {
        Self {
            time: Timestamp::now(),
            rule_id,
            level,
            full_log: description.clone().into_bytes(),
            description,
            groups: groups.into(),
            options,
            location: location.into(),
            hostname: None,
            decoder: None,
            srcip: None,
            srcport: None,
            dstip: None,
            dstport: None,
            srcuser: None,
            dstuser: None,
            url: None,
            correlated: Vec::new(),
            wazuh: None,
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
            wazuh: None,
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
    fn wazuh_descriptions_take_the_events_fields() {
        let mut ev = Event::default();
        ev.fields.srcip = Some("192.0.2.1".into());
        ev.fields.dynamic.insert("a.b".into(), "x".into());
        ev.fields.data = Some("extra".into());
        assert_eq!(
            fill_description("$(srcip) did $(a.b) ($(extra_data)), $(missing)!", &ev),
            "192.0.2.1 did x (extra), !"
        );
        assert_eq!(fill_description("no field", &ev), "no field");
        assert_eq!(fill_description("open $(srcip", &ev), "open $(srcip");
        assert_eq!(fill_description("$(srcip)$(", &ev), "192.0.2.1$(");
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
