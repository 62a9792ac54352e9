//! The `[active_response]` section of `agent.toml`. It is read in two stages
//! like the rest of the file: serde refuses unknown keys, then
//! [`RespondConfig::from_raw`] checks meanings and reports every problem at
//! once, each naming its key (`active_response.white_list[2]: ...`), so an
//! operator fixes a file in one round.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::hostdeny::HostDeny;
use super::netlink::RouteNull;
use super::nft::FirewallDrop;
use palisade_common::config::Problems;
use palisade_common::network::parse_network;
use palisade_common::units::parse_duration;

/// The section as written in `agent.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespondConfig {
    /// Refuse every command (OSSEC's `<active-response><disabled>yes`).
    #[serde(default)]
    pub disabled: bool,
    /// Decide, log and report as usual, but change nothing on the host:
    /// results say "would block" (for trying Palisade out without root).
    #[serde(default)]
    pub dry_run: bool,
    /// Addresses and CIDRs this agent never blocks.
    #[serde(default)]
    pub white_list: Vec<String>,
    /// `"unreachable"` (default, OSSEC's `route add IP reject`) or `"blackhole"`.
    pub route_type: Option<String>,
    /// The tcp-wrappers file `host-deny` edits.
    pub hosts_deny: Option<PathBuf>,
    /// The `inet` nftables table `firewall-drop` owns.
    pub nft_table: Option<String>,
    /// OSSEC's `active-responses.log`.
    pub log_file: Option<PathBuf>,
    /// How long a custom script may run before it is killed.
    pub script_timeout: Option<String>,
    /// Custom commands: name = executable.
    #[serde(default)]
    pub commands: BTreeMap<String, PathBuf>,
}

/// What kind of route `route-null` installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NullRouteType {
    /// `ip route add unreachable IP`: what OSSEC's `route add IP reject`
    /// makes on Linux; local replies fail with EHOSTUNREACH.
    #[default]
    Unreachable,
    /// `ip route add blackhole IP`: replies are silently dropped.
    Blackhole,
}

impl NullRouteType {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Blackhole => "blackhole",
        }
    }
}

/// The names of the built-in responses; custom commands may not reuse them.
pub const BUILTIN_RESPONSES: &[&str] = &[RouteNull::NAME, FirewallDrop::NAME, HostDeny::NAME];

/// A validated `[active_response]` section.
#[derive(Debug, Clone)]
pub struct RespondConfig {
    /// Refuse every command.
    pub disabled: bool,
    /// Change nothing on the host; say what would be done.
    pub dry_run: bool,
    /// Never blocked.
    pub white_list: Vec<IpNet>,
    /// What `route-null` installs.
    pub route_type: NullRouteType,
    /// The file `host-deny` edits.
    pub hosts_deny_path: PathBuf,
    /// The nftables table (family `inet`) `firewall-drop` owns.
    pub nft_table: String,
    /// `active-responses.log`.
    pub ar_log_path: PathBuf,
    /// Time limit for custom scripts.
    pub script_timeout: Duration,
    /// Custom command name -> executable.
    pub commands: BTreeMap<String, PathBuf>,
}

impl Default for RespondConfig {
    fn default() -> Self {
        Self {
            disabled: false,
            dry_run: false,
            white_list: Vec::new(),
            route_type: NullRouteType::Unreachable,
            hosts_deny_path: PathBuf::from("/etc/hosts.deny"),
            nft_table: "palisade".into(),
            ar_log_path: PathBuf::from("active-responses.log"),
            script_timeout: Duration::from_secs(30),
            commands: BTreeMap::new(),
        }
    }
}

/// The prefix of every key in error messages.
const SECTION: &str = "active_response";

fn valid_command_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// nftables identifiers: a letter, then letters, digits, `_`; short.
fn valid_nft_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && name.len() <= 32
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl RespondConfig {
    /// Validates the section; relative paths are taken from `base` (the
    /// directory holding `agent.toml`). Every error names its key.
    pub fn from_raw(raw: RawRespondConfig, base: &Path) -> Result<Self, Problems> {
        let mut errors = Problems::new();
        let defaults = Self::default();
        let mut white_list = Vec::new();
        for (i, entry) in raw.white_list.iter().enumerate() {
            match parse_network(entry) {
                Ok(net) => white_list.push(net),
                Err(e) => errors.push(format!("{SECTION}.white_list[{i}]"), e),
            }
        }
        let route_type = match raw.route_type.as_deref() {
            None | Some("unreachable") => NullRouteType::Unreachable,
            Some("blackhole") => NullRouteType::Blackhole,
            Some(other) => {
                errors.push(
                    format!("{SECTION}.route_type"),
                    format!("{other:?} is not \"unreachable\" or \"blackhole\""),
                );
                NullRouteType::Unreachable
            }
        };
        let hosts_deny_path = match raw.hosts_deny {
            None => defaults.hosts_deny_path,
            Some(p) if p.as_os_str().is_empty() => {
                errors.push(format!("{SECTION}.hosts_deny"), "must not be empty");
                p
            }
            Some(p) => base.join(p),
        };
        let nft_table = raw.nft_table.unwrap_or(defaults.nft_table);
        if !valid_nft_identifier(&nft_table) {
            errors.push(format!("{SECTION}.nft_table"), format!("{nft_table:?} is not an nftables name (a letter, then letters, digits or _, at most 32)"));
        }
        let ar_log_path = match raw.log_file {
            None => base.join(defaults.ar_log_path),
            Some(p) if p.as_os_str().is_empty() => {
                errors.push(format!("{SECTION}.log_file"), "must not be empty");
                p
            }
            Some(p) => base.join(p),
        };
        let script_timeout = match raw.script_timeout.as_deref() {
            None => defaults.script_timeout,
            Some(v) => match parse_duration(v) {
                Ok(d) if d >= Duration::from_millis(100) => d,
                Ok(_) => {
                    errors.push(
                        format!("{SECTION}.script_timeout"),
                        format!("{v:?} is below the minimum 100ms"),
                    );
                    defaults.script_timeout
                }
                Err(e) => {
                    errors.push(format!("{SECTION}.script_timeout"), e);
                    defaults.script_timeout
                }
            },
        };
        let mut commands = BTreeMap::new();
        for (name, path) in raw.commands {
            if BUILTIN_RESPONSES.contains(&name.as_str()) {
                errors.push(
                    format!("{SECTION}.commands.{name}"),
                    format!("{name:?} is built in and cannot be redefined"),
                );
            } else if !valid_command_name(&name) {
                errors.push(
                    format!("{SECTION}.commands.{name:?}"),
                    "a command name is letters, digits, '-', '_' or '.'",
                );
            } else if path.as_os_str().is_empty() {
                errors.push(
                    format!("{SECTION}.commands.{name}"),
                    "the executable must not be empty",
                );
            } else {
                commands.insert(name, base.join(path));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            disabled: raw.disabled,
            dry_run: raw.dry_run,
            white_list,
            route_type,
            hosts_deny_path,
            nft_table,
            ar_log_path,
            script_timeout,
            commands,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(text: &str) -> Result<RespondConfig, Vec<String>> {
        let raw: RawRespondConfig = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        RespondConfig::from_raw(raw, Path::new("/etc/palisade")).map_err(|problems| {
            problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect()
        })
    }

    #[test]
    fn an_empty_section_gets_defaults() {
        let c = parse("").unwrap();
        assert!(!c.disabled);
        assert!(c.white_list.is_empty());
        assert_eq!(c.route_type, NullRouteType::Unreachable);
        assert_eq!(c.hosts_deny_path, Path::new("/etc/hosts.deny"));
        assert_eq!(c.nft_table, "palisade");
        assert_eq!(
            c.ar_log_path,
            Path::new("/etc/palisade/active-responses.log")
        );
        assert_eq!(c.script_timeout, Duration::from_secs(30));
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            r#"
disabled = true
white_list = ["192.0.2.1", "10.0.0.0/8", "2001:db8::/32", "::ffff:198.51.100.1", "10.1.2.3/16"]
route_type = "blackhole"
hosts_deny = "deny"
nft_table = "ar_table"
log_file = "/var/log/palisade/active-responses.log"
script_timeout = "5s"
[commands]
notify-edge = "bin/notify.sh"
"#,
        )
        .unwrap();
        assert!(c.disabled);
        let wl: Vec<String> = c.white_list.iter().map(ToString::to_string).collect();
        assert_eq!(
            wl,
            [
                "192.0.2.1/32",
                "10.0.0.0/8",
                "2001:db8::/32",
                "198.51.100.1/32",
                "10.1.0.0/16"
            ]
        );
        assert_eq!(c.route_type, NullRouteType::Blackhole);
        assert_eq!(c.hosts_deny_path, Path::new("/etc/palisade/deny"));
        assert_eq!(c.nft_table, "ar_table");
        assert_eq!(
            c.ar_log_path,
            Path::new("/var/log/palisade/active-responses.log")
        );
        assert_eq!(c.script_timeout, Duration::from_secs(5));
        assert_eq!(
            c.commands.get("notify-edge").unwrap(),
            Path::new("/etc/palisade/bin/notify.sh")
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let errors = parse(
            r#"
white_list = ["192.0.2.1", "10.0.0.0/8", "not-an-ip", "10.0.0.0/33"]
route_type = "prohibit"
nft_table = "bad table; flush ruleset"
script_timeout = "soon"
[commands]
route-null = "/bin/true"
"bad name" = "/bin/true"
"#,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 7, "{errors:#?}");
        assert!(
            errors[0].starts_with("active_response.white_list[2]: \"not-an-ip\""),
            "{errors:#?}"
        );
        assert!(
            errors[1].starts_with("active_response.white_list[3]: "),
            "{errors:#?}"
        );
        assert!(
            errors[2].starts_with("active_response.route_type: \"prohibit\""),
            "{errors:#?}"
        );
        assert!(
            errors[3].starts_with("active_response.nft_table: "),
            "{errors:#?}"
        );
        assert!(
            errors[4].starts_with("active_response.script_timeout: "),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("active_response.commands.route-null: "))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("active_response.commands.\"bad name\": "))
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<RawRespondConfig>("whitelist = []\n").unwrap_err();
        assert!(err.to_string().contains("whitelist"), "{err}");
    }

    #[test]
    fn a_too_short_script_timeout_is_refused() {
        let errors = parse("script_timeout = \"10ms\"\n").unwrap_err();
        assert_eq!(
            errors,
            ["active_response.script_timeout: \"10ms\" is below the minimum 100ms"]
        );
    }
}
