//! E-mail notifications (OSSEC's maild): `[email]` in manager.toml.
//!
//! # Layout
//!
//! - this file: the `[email]` section, read and validated in one pass.
//! - [`decide`]: which alerts mail and to whom (OSSEC's mail flag and its
//!   granular `<email_alerts>` blocks), as [`decide::Outgoing`] mails laid
//!   out by [`palisade_engine::alert_format`].
//! - [`report`]: the mail about an active response an agent carried out.
//! - [`budget`]: `email_maxperhour`: the first N mails of a period go out
//!   one by one, the rest wait and leave as one digest when the period ends.
//! - [`worker`]: the sink the outputs fan-out calls (it only queues, in a
//!   bounded queue that drops the oldest mail when full), and the task that
//!   sends over SMTP with lettre, retrying with exponential backoff.
//!
//! An unreachable mail server never slows ingestion: publishing an alert
//! takes a short lock to push onto the queue and nothing else.

pub mod budget;
pub mod decide;
pub mod report;
pub mod worker;

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_common::config::Problems;
use palisade_engine::pattern::{Dialect, Pattern};
use serde::Deserialize;

pub use worker::{MailError, Mailer};

/// OSSEC's `email_alert_level` default.
pub const DEFAULT_ALERT_LEVEL: u32 = palisade_engine::alert::DEFAULT_EMAIL_ALERT_LEVEL;
/// OSSEC's `email_maxperhour` default.
pub const DEFAULT_MAX_PER_PERIOD: u32 = 12;
/// OSSEC's limit on waiting mails (`MAIL_LIST_SIZE`).
pub const DEFAULT_QUEUE_SIZE: usize = 96;
/// The longest wait between two attempts to reach the mail server.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);

/// `[email]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    /// OSSEC's `email_notification`.
    #[serde(default, alias = "email_notification")]
    pub enabled: bool,
    /// Host name or address of the SMTP server (`host:port` also accepted).
    pub smtp_server: Option<String>,
    /// Port; defaults to 25 (`none`), 587 (`starttls`) or 465 (`tls`).
    pub smtp_port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    pub tls: Option<String>,
    /// A PEM file of extra certificate authorities to trust for the server.
    pub tls_ca_file: Option<PathBuf>,
    /// The name sent in EHLO (OSSEC's `helo_server`); the host name if unset.
    pub helo_server: Option<String>,
    /// SMTP AUTH user name.
    pub username: Option<String>,
    /// A file holding the SMTP AUTH password (first line), read at start.
    pub password_file: Option<PathBuf>,
    /// OSSEC's `email_from`.
    #[serde(alias = "email_from")]
    pub from: Option<String>,
    /// OSSEC's `email_reply_to`.
    #[serde(alias = "email_reply_to")]
    pub reply_to: Option<String>,
    /// OSSEC's `email_to`: who gets every mailed alert.
    #[serde(default, alias = "email_to")]
    pub to: Vec<String>,
    /// OSSEC's `email_idsname`: the `X-IDS-Palisade` header.
    #[serde(alias = "email_idsname")]
    pub idsname: Option<String>,
    /// Alerts at or above this level are mailed.
    pub email_alert_level: Option<u32>,
    /// Mails sent one by one per period; the rest go in one digest.
    pub email_maxperhour: Option<u32>,
    /// The period `email_maxperhour` counts over (OSSEC: one clock hour).
    pub email_period: Option<String>,
    /// Mails waiting to be sent, at most.
    pub queue_size: Option<usize>,
    /// The longest pause between attempts while the server is unreachable.
    pub retry_max: Option<String>,
    /// Mail when an active response is carried out or fails on an agent.
    #[serde(default)]
    pub active_responses: bool,
    /// OSSEC's `<email_alerts>` blocks.
    #[serde(default)]
    pub alerts: Vec<RawGranular>,
}

/// One `[[email.alerts]]` block as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGranular {
    /// Recipients of the alerts this block selects.
    #[serde(default, alias = "email_to")]
    pub to: Vec<String>,
    /// Alerts at or above this level.
    pub level: Option<u32>,
    /// OS_Match on the alert's group string.
    pub group: Option<String>,
    /// OS_Match on the alert's location.
    pub event_location: Option<String>,
    /// Only these rules.
    #[serde(default)]
    pub rule_id: Vec<u32>,
    /// `full` (default) or `sms`.
    pub format: Option<String>,
    /// Send at once, even when the period's budget is spent.
    #[serde(default)]
    pub do_not_delay: bool,
    /// Never merge into a digest.
    #[serde(default)]
    pub do_not_group: bool,
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// Plain SMTP (only for a relay on a trusted network or loopback).
    None,
    /// Plain, then STARTTLS, which must succeed.
    #[default]
    StartTls,
    /// TLS from the first byte (SMTPS, "implicit TLS").
    Tls,
}

/// The layout of a mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MailFormat {
    /// OSSEC's full notification.
    #[default]
    Full,
    /// OSSEC's short SMS layout.
    Sms,
}

/// A secret whose `Debug` does not show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A validated `[[email.alerts]]` block.
#[derive(Debug, Clone)]
pub struct Granular {
    /// Recipients.
    pub to: Vec<String>,
    /// Minimum level (0: any).
    pub level: u32,
    /// OS_Match on the group string.
    pub group: Option<Pattern>,
    /// OS_Match on the location.
    pub event_location: Option<Pattern>,
    /// Rule ids (empty: any).
    pub rule_ids: Vec<u32>,
    /// Layout.
    pub format: MailFormat,
    /// Bypass `email_maxperhour`.
    pub do_not_delay: bool,
    /// Never part of a digest.
    pub do_not_group: bool,
}

/// The validated `[email]` section.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// Send mail at all.
    pub enabled: bool,
    /// SMTP server host.
    pub smtp_server: String,
    /// SMTP server port.
    pub smtp_port: u16,
    /// Connection protection.
    pub tls: SmtpTls,
    /// Extra trusted CAs (PEM), read at start.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// EHLO name.
    pub helo_server: Option<String>,
    /// SMTP AUTH user and password.
    pub credentials: Option<(String, Secret)>,
    /// Sender address.
    pub from: String,
    /// Reply-To address.
    pub reply_to: Option<String>,
    /// Recipients of every mailed alert.
    pub to: Vec<String>,
    /// `X-IDS-Palisade` header value.
    pub idsname: Option<String>,
    /// Alerts at or above this level are mailed.
    pub alert_level: u32,
    /// Mails sent one by one per period.
    pub max_per_period: u32,
    /// The period those are counted over.
    pub period: Duration,
    /// Waiting mails, at most.
    pub queue_size: usize,
    /// Longest pause between attempts.
    pub retry_max: Duration,
    /// Mail active-response results.
    pub active_responses: bool,
    /// Granular recipients.
    pub alerts: Vec<Granular>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            smtp_server: String::new(),
            smtp_port: 587,
            tls: SmtpTls::StartTls,
            tls_ca_pem: None,
            helo_server: None,
            credentials: None,
            from: String::new(),
            reply_to: None,
            to: Vec::new(),
            idsname: None,
            alert_level: DEFAULT_ALERT_LEVEL,
            max_per_period: DEFAULT_MAX_PER_PERIOD,
            period: Duration::from_secs(3600),
            queue_size: DEFAULT_QUEUE_SIZE,
            retry_max: DEFAULT_RETRY_MAX,
            active_responses: false,
            alerts: Vec::new(),
        }
    }
}

fn check_address(key: &str, value: &str, errors: &mut Problems) {
    if value.parse::<lettre::Address>().is_err() {
        errors.push(key, format!("{value:?} is not an e-mail address"));
    }
}

fn pattern(key: &str, source: &Option<String>, errors: &mut Problems) -> Option<Pattern> {
    let source = source.as_deref()?;
    Pattern::new(Dialect::OsMatch, source)
        .map_err(|e| errors.push(key, e.to_string()))
        .ok()
}

fn duration(key: &str, value: Option<&str>, default: Duration, errors: &mut Problems) -> Duration {
    let Some(value) = value else {
        return default;
    };
    match palisade_common::units::parse_duration(value) {
        Ok(d) if d >= Duration::from_secs(1) => d,
        Ok(_) => {
            errors.push(key, format!("{value:?} is shorter than one second"));
            default
        }
        Err(e) => {
            errors.push(key, e);
            default
        }
    }
}

/// Reads the password file: refused if others may read it.
fn read_password(path: &Path) -> Result<Secret, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(format!(
            "{} is readable by every user; chmod o-r it",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret(password))
}

/// Checks `[email]`; problems go to `errors`, each naming its key.
pub fn compile(raw: RawEmail, base: &Path, errors: &mut Problems) -> EmailConfig {
    let tls = match raw.tls.as_deref() {
        None | Some("starttls") => SmtpTls::StartTls,
        Some("none") => SmtpTls::None,
        Some("tls") => SmtpTls::Tls,
        Some(other) => {
            errors.push(
                "email.tls",
                format!("{other:?} is not \"none\", \"starttls\" or \"tls\""),
            );
            SmtpTls::StartTls
        }
    };
    let (mut smtp_server, mut port) = (raw.smtp_server.unwrap_or_default(), raw.smtp_port);
    if let Some((host, p)) = smtp_server.rsplit_once(':')
        && !host.contains(':')
    {
        match p.parse::<u16>() {
            Ok(p) if raw.smtp_port.is_none() || raw.smtp_port == Some(p) => {
                port = Some(p);
                smtp_server = host.to_string();
            }
            Ok(_) => errors.push("email.smtp_server", "its port differs from email.smtp_port"),
            Err(_) => errors.push(
                "email.smtp_server",
                format!("{smtp_server:?} is not a host or host:port"),
            ),
        }
    }
    let smtp_port = port.unwrap_or(match tls {
        SmtpTls::None => 25,
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
    });
    if smtp_port == 0 {
        errors.push("email.smtp_port", "must not be 0");
    }
    if raw.enabled && smtp_server.is_empty() {
        errors.push("email.smtp_server", "needed when email is enabled");
    }
    let tls_ca_pem = raw.tls_ca_file.map(|p| base.join(p)).and_then(|p| {
        let pem = std::fs::read(&p)
            .map_err(|e| {
                errors.push(
                    "email.tls_ca_file",
                    format!("cannot read {}: {e}", p.display()),
                )
            })
            .ok()?;
        lettre::transport::smtp::client::Certificate::from_pem(&pem)
            .map_err(|e| {
                errors.push(
                    "email.tls_ca_file",
                    format!("{} is not a PEM certificate ({e})", p.display()),
                )
            })
            .ok()?;
        Some(pem)
    });
    if tls_ca_pem.is_some() && tls == SmtpTls::None {
        errors.push(
            "email.tls_ca_file",
            "only used with tls = \"starttls\" or \"tls\"",
        );
    }
    let credentials = match (raw.username, raw.password_file) {
        (Some(user), Some(file)) => match read_password(&base.join(file)) {
            Ok(secret) => Some((user, secret)),
            Err(e) => {
                errors.push("email.password_file", e);
                None
            }
        },
        (Some(_), None) => {
            errors.push("email.username", "needs email.password_file");
            None
        }
        (None, Some(_)) => {
            errors.push("email.password_file", "needs email.username");
            None
        }
        (None, None) => None,
    };
    if credentials.is_some() && tls == SmtpTls::None {
        errors.push(
            "email.username",
            "refusing to send a password without TLS (set tls = \"starttls\" or \"tls\")",
        );
    }
    let from = raw.from.unwrap_or_default();
    if !from.is_empty() {
        check_address("email.from", &from, errors);
    } else if raw.enabled {
        errors.push("email.from", "needed when email is enabled");
    }
    if let Some(r) = &raw.reply_to {
        check_address("email.reply_to", r, errors);
    }
    for (i, to) in raw.to.iter().enumerate() {
        check_address(&format!("email.to[{i}]"), to, errors);
    }
    if raw.enabled && raw.to.is_empty() && raw.alerts.is_empty() {
        errors.push(
            "email.to",
            "needed when email is enabled (or give [[email.alerts]] blocks)",
        );
    }
    if let Some(name) = &raw.idsname
        && (name.is_empty() || name.chars().any(|c| c.is_control()))
    {
        errors.push("email.idsname", format!("{name:?} is not a one-line name"));
    }
    let alert_level = raw.email_alert_level.unwrap_or(DEFAULT_ALERT_LEVEL);
    if alert_level > 16 {
        errors.push(
            "email.email_alert_level",
            format!("{alert_level} is above the highest rule level 16"),
        );
    }
    let max_per_period = raw.email_maxperhour.unwrap_or(DEFAULT_MAX_PER_PERIOD);
    if !(1..=9999).contains(&max_per_period) {
        errors.push(
            "email.email_maxperhour",
            format!("{max_per_period} is not within 1..9999"),
        );
    }
    let period = duration(
        "email.email_period",
        raw.email_period.as_deref(),
        Duration::from_secs(3600),
        errors,
    );
    let queue_size = raw.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE);
    if !(1..=100_000).contains(&queue_size) {
        errors.push(
            "email.queue_size",
            format!("{queue_size} is not within 1..100000"),
        );
    }
    let retry_max = duration(
        "email.retry_max",
        raw.retry_max.as_deref(),
        DEFAULT_RETRY_MAX,
        errors,
    );
    let mut alerts = Vec::new();
    for (i, g) in raw.alerts.into_iter().enumerate() {
        let key = format!("email.alerts[{i}]");
        if g.to.is_empty() {
            errors.push(format!("{key}.to"), "needs at least one recipient");
        }
        for (j, to) in g.to.iter().enumerate() {
            check_address(&format!("{key}.to[{j}]"), to, errors);
        }
        let format = match g.format.as_deref() {
            None | Some("full") | Some("default") => MailFormat::Full,
            Some("sms") => MailFormat::Sms,
            Some(other) => {
                errors.push(
                    format!("{key}.format"),
                    format!("{other:?} is not \"full\" or \"sms\""),
                );
                MailFormat::Full
            }
        };
        let level = g.level.unwrap_or(0);
        if level > 16 {
            errors.push(
                format!("{key}.level"),
                format!("{level} is above the highest rule level 16"),
            );
        }
        alerts.push(Granular {
            group: pattern(&format!("{key}.group"), &g.group, errors),
            event_location: pattern(&format!("{key}.event_location"), &g.event_location, errors),
            to: g.to,
            level,
            rule_ids: g.rule_id,
            format,
            do_not_delay: g.do_not_delay,
            do_not_group: g.do_not_group,
        });
    }
    EmailConfig {
        enabled: raw.enabled,
        smtp_server,
        smtp_port,
        tls,
        tls_ca_pem,
        helo_server: raw.helo_server,
        credentials,
        from,
        reply_to: raw.reply_to,
        to: raw.to,
        idsname: raw.idsname,
        alert_level,
        max_per_period,
        period,
        queue_size,
        retry_max,
        active_responses: raw.active_responses,
        alerts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (EmailConfig, Problems) {
        let raw: RawEmail = toml::from_str(text).unwrap();
        let mut errors = Problems::new();
        let c = compile(raw, Path::new("/nonexistent"), &mut errors);
        (c, errors)
    }

    #[test]
    fn defaults_are_ossecs() {
        let (c, errors) = parse(
            "enabled = true\nsmtp_server = \"mail.example.net:25\"\ntls = \"none\"\nfrom = \"p@example.net\"\nto = [\"ops@example.net\"]\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.smtp_server, "mail.example.net");
        assert_eq!(c.smtp_port, 25);
        assert_eq!(c.alert_level, 7);
        assert_eq!(c.max_per_period, 12);
        assert_eq!(c.period, Duration::from_secs(3600));
        assert_eq!(c.queue_size, 96);
        let (c, _) = parse("smtp_server = \"mx\"\n");
        assert_eq!((c.tls, c.smtp_port), (SmtpTls::StartTls, 587));
    }

    #[test]
    fn ossec_names_are_accepted() {
        let (c, errors) = parse(
            "email_notification = true\nsmtp_server = \"mx\"\nemail_from = \"p@example.net\"\nemail_to = [\"a@example.net\"]\nemail_idsname = \"site-1\"\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(c.enabled);
        assert_eq!(c.to, ["a@example.net"]);
        assert_eq!(c.idsname.as_deref(), Some("site-1"));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let (_, errors) = parse(
            "enabled = true\ntls = \"ssl\"\nfrom = \"nobody\"\nto = [\"x@y\", \"bad address\"]\n\
             email_alert_level = 17\nemail_maxperhour = 0\nemail_period = \"soon\"\nqueue_size = 0\n\
             username = \"u\"\n\
             [[alerts]]\nformat = \"pager\"\nlevel = 20\n",
        );
        assert_eq!(
            errors.keys(),
            [
                "email.tls",
                "email.smtp_server",
                "email.username",
                "email.from",
                "email.to[1]",
                "email.email_alert_level",
                "email.email_maxperhour",
                "email.email_period",
                "email.queue_size",
                "email.alerts[0].to",
                "email.alerts[0].format",
                "email.alerts[0].level",
            ],
            "{errors:#?}"
        );
    }

    #[test]
    fn a_world_readable_password_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("smtp.pass");
        std::fs::write(&file, "hunter2\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let raw: RawEmail =
            toml::from_str("username = \"u\"\npassword_file = \"smtp.pass\"\n").unwrap();
        let mut errors = Problems::new();
        compile(raw, dir.path(), &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].message.contains("readable by every user"),
            "{errors:?}"
        );

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let raw: RawEmail =
            toml::from_str("username = \"u\"\npassword_file = \"smtp.pass\"\n").unwrap();
        let mut errors = Problems::new();
        let c = compile(raw, dir.path(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let (user, secret) = c.credentials.unwrap();
        assert_eq!((user.as_str(), secret.0.as_str()), ("u", "hunter2"));
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }
}
