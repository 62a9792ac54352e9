//! Which alerts are mailed, to whom and in which layout.
//!
//! Only alerts with OSSEC's mail flag ([`Alert::mail_flag`], with
//! `email_alert_level`) are mailed. The `to` list gets each of them in the
//! full layout; every `[[email.alerts]]` block whose level, group
//! (OS_Match), location (OS_Match) and rule ids all match adds its
//! recipients, in its own layout.

use jiff::tz::TimeZone;
use palisade_engine::alert::Alert;
use palisade_engine::alert_format;

use super::{EmailConfig, Granular, MailFormat};

/// A mail ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Recipients, sorted, no duplicates.
    pub to: Vec<String>,
    /// Subject.
    pub subject: String,
    /// Body, `\n` line ends.
    pub body: String,
    /// The alert's level (a digest takes the subject of its highest).
    pub level: u32,
    /// Sent even when the period's budget is spent.
    pub do_not_delay: bool,
    /// Never merged into a digest.
    pub do_not_group: bool,
}

fn selects(g: &Granular, alert: &Alert) -> bool {
    alert.level >= g.level
        && g.group
            .as_ref()
            .is_none_or(|p| p.is_match(alert.groups.as_bytes()))
        && g.event_location
            .as_ref()
            .is_none_or(|p| p.is_match(alert.location.as_bytes()))
        && (g.rule_ids.is_empty() || g.rule_ids.contains(&alert.rule_id))
}

fn recipients<'a>(to: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = to.into_iter().cloned().collect();
    v.sort();
    v.dedup();
    v
}

/// The mails one alert causes (none if it has no mail flag); dates are
/// in `zone`.
///
/// Blocks in the full layout without `do_not_delay`/`do_not_group` share
/// one mail with the `to` list; the others get a mail each.
pub fn notifications(config: &EmailConfig, alert: &Alert, zone: &TimeZone) -> Vec<Outgoing> {
    if !alert.mail_flag(config.alert_level) {
        return Vec::new();
    }
    let full = |to: Vec<String>, do_not_delay, do_not_group| Outgoing {
        to,
        subject: alert_format::notification_subject(alert),
        body: alert_format::notification_body(alert, zone),
        level: alert.level,
        do_not_delay,
        do_not_group,
    };
    let mut plain: Vec<&String> = config.to.iter().collect();
    let mut out = Vec::new();
    for g in config.alerts.iter().filter(|g| selects(g, alert)) {
        match g.format {
            MailFormat::Full if !g.do_not_delay && !g.do_not_group => plain.extend(&g.to),
            MailFormat::Full => out.push(full(recipients(&g.to), g.do_not_delay, g.do_not_group)),
            MailFormat::Sms => out.push(Outgoing {
                to: recipients(&g.to),
                subject: alert_format::sms_subject(alert),
                body: alert_format::sms_body(alert),
                level: alert.level,
                do_not_delay: g.do_not_delay,
                do_not_group: g.do_not_group,
            }),
        }
    }
    if !plain.is_empty() {
        out.insert(0, full(recipients(plain), false, false));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::mail::{RawEmail, compile};

    fn config(text: &str) -> EmailConfig {
        let raw: RawEmail = toml::from_str(text).unwrap();
        let mut errors = palisade_common::config::Problems::new();
        let c = compile(raw, Path::new("."), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        c
    }

    fn alert(rule_id: u32, level: u32, groups: &str) -> Alert {
        let mut a = crate::store::fixtures::stored_alert(1, level).alert;
        a.rule_id = rule_id;
        a.groups = groups.into();
        a.description = "Something.".into();
        a
    }

    fn notifications(c: &EmailConfig, a: &Alert) -> Vec<Outgoing> {
        super::notifications(c, a, &TimeZone::UTC)
    }

    #[test]
    fn the_to_list_gets_the_full_layout() {
        let c = config("to = [\"ops@example.net\"]\n");
        let a = alert(31151, 10, "web,accesslog");
        let mails = notifications(&c, &a);
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].to, ["ops@example.net"]);
        assert_eq!(mails[0].subject, alert_format::notification_subject(&a));
        assert_eq!(
            mails[0].body,
            alert_format::notification_body(&a, &TimeZone::UTC)
        );
        assert!(notifications(&c, &alert(1002, 2, "syslog")).is_empty());
    }

    #[test]
    fn granular_blocks_select_by_group_level_rule_and_location() {
        let c = config(
            "to = [\"ops@example.net\"]\n\
             [[alerts]]\nto = [\"web@example.net\"]\ngroup = \"web_scan|attack\"\n\
             [[alerts]]\nto = [\"pager@example.net\"]\nlevel = 12\nformat = \"sms\"\ndo_not_delay = true\n\
             [[alerts]]\nto = [\"ssh@example.net\"]\nrule_id = [5712, 5720]\n\
             [[alerts]]\nto = [\"db@example.net\"]\nevent_location = \"(db01)\"\ndo_not_group = true\n",
        );
        let scan = alert(31151, 10, "web,accesslog,web_scan,recon");
        let mails = notifications(&c, &scan);
        assert_eq!(mails.len(), 1, "{mails:#?}");
        assert_eq!(mails[0].to, ["ops@example.net", "web@example.net"]);

        let brute = alert(5712, 12, "syslog,sshd,authentication_failures");
        let mails = notifications(&c, &brute);
        assert_eq!(mails.len(), 2, "{mails:#?}");
        assert_eq!(mails[0].to, ["ops@example.net", "ssh@example.net"]);
        assert_eq!(mails[1].to, ["pager@example.net"]);
        assert_eq!(mails[1].subject, "Palisade 12 - 5712 - Something.");
        assert_eq!(mails[1].body, "a line");
        assert!(mails[1].do_not_delay);

        let mut db = alert(5712, 8, "syslog,sshd");
        db.location = "(db01) 10.0.0.9->/var/log/auth.log".into();
        let mails = notifications(&c, &db);
        assert_eq!(mails.len(), 2, "{mails:#?}");
        assert_eq!(mails[0].to, ["ops@example.net", "ssh@example.net"]);
        assert_eq!(mails[1].to, ["db@example.net"]);
        assert!(mails[1].do_not_group);
    }

    #[test]
    fn granular_blocks_alone_need_no_to_list() {
        let c = config("[[alerts]]\nto = [\"web@example.net\"]\ngroup = \"web\"\n");
        assert_eq!(notifications(&c, &alert(31151, 10, "web")).len(), 1);
        assert!(notifications(&c, &alert(5712, 10, "sshd")).is_empty());
    }
}
