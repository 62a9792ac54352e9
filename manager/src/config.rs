//! `manager.toml`: read in two stages. Serde reads the raw shape and
//! refuses unknown keys (with line and column); [`ManagerConfig::from_raw`]
//! then checks meanings and reports every problem at once, each naming its
//! key, so an operator fixes the file in one pass.
//!
//! Relative paths are taken from the directory that holds the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default port, as OSSEC's.
pub const DEFAULT_PORT: u16 = 1514;

/// A configuration that cannot be used, with every reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {}", .errors.join(&format!("\n{}: ", .file)))]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// One line per problem, each naming the key.
    pub errors: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    global: RawGlobal,
    #[serde(default)]
    ruleset: RawRuleset,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleset {
    /// Use an OSSEC etc directory instead of the embedded ruleset.
    ossec_etc: Option<PathBuf>,
    /// Local rule directories loaded after the base set.
    #[serde(default)]
    dirs: Vec<PathBuf>,
    /// "arrival" (OSSEC) or "event".
    time_source: Option<String>,
}

/// Which clock correlation uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeSource {
    /// The time the manager received the event, as OSSEC does.
    #[default]
    Arrival,
    /// The line's own timestamp, falling back to arrival time (counted).
    Event,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: String,
    /// host:port that agent bundles are told to connect to.
    advertise: Option<String>,
    /// The name agents and palisadectl verify in the server certificate.
    #[serde(default = "default_server_name")]
    server_name: String,
    #[serde(default = "default_ca_cert")]
    ca_cert: PathBuf,
    #[serde(default = "default_ca_key")]
    ca_key: PathBuf,
    #[serde(default = "default_cert")]
    cert: PathBuf,
    #[serde(default = "default_key")]
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default = "default_database")]
    database: PathBuf,
    /// Keep every received event (OSSEC's `logall`).
    #[serde(default = "default_true")]
    logall: bool,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            database: default_database(),
            logall: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    #[serde(default)]
    white_list: Vec<String>,
}

fn default_listen() -> String {
    format!("0.0.0.0:{DEFAULT_PORT}")
}
fn default_server_name() -> String {
    "localhost".into()
}
fn default_ca_cert() -> PathBuf {
    "pki/ca.pem".into()
}
fn default_ca_key() -> PathBuf {
    "pki/ca.key".into()
}
fn default_cert() -> PathBuf {
    "pki/manager.pem".into()
}
fn default_key() -> PathBuf {
    "pki/manager.key".into()
}
fn default_database() -> PathBuf {
    "palisade.db".into()
}
fn default_true() -> bool {
    true
}

/// A validated manager configuration.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Where the file was read from (for messages).
    pub source: PathBuf,
    /// Address to listen on for agents and operators.
    pub listen: SocketAddr,
    /// host:port written into agent bundles.
    pub advertise: String,
    /// The TLS name clients verify.
    pub server_name: String,
    /// CA certificate.
    pub ca_cert: PathBuf,
    /// CA private key (needed to issue certificates, not to run).
    pub ca_key: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
    /// SQLite database file.
    pub database: PathBuf,
    /// Keep every received event in the archive table.
    pub logall: bool,
    /// Addresses and networks never to block.
    pub white_list: Vec<ipnet::IpNet>,
    /// Where decoders and rules come from.
    pub ruleset: crate::ruleset::RulesetSource,
    /// Which clock correlation uses.
    pub time_source: TimeSource,
}

impl ManagerConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            errors: vec![format!("cannot read: {e}")],
        })?;
        Self::parse(&text, path)
    }

    /// Validates configuration text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.clone(),
            errors: vec![toml_error(&e)],
        })?;
        Self::from_raw(raw, path)
    }

    fn from_raw(raw: RawConfig, path: &Path) -> Result<Self, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("."));
        let mut errors = Vec::new();
        let listen = raw
            .server
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| {
                errors.push(format!(
                    "server.listen: {:?} is not an address:port ({e})",
                    raw.server.listen
                ))
            })
            .ok();
        let advertise = match raw.server.advertise {
            Some(a) => {
                if !looks_like_host_port(&a) {
                    errors.push(format!("server.advertise: {a:?} is not host:port"));
                }
                a
            }
            None => match listen {
                Some(l) if l.ip().is_unspecified() => format!("127.0.0.1:{}", l.port()),
                Some(l) => l.to_string(),
                None => String::new(),
            },
        };
        if raw.server.server_name.is_empty() {
            errors.push("server.server_name: must not be empty".into());
        }
        let white_list = parse_networks("global.white_list", &raw.global.white_list, &mut errors);
        let time_source = match raw.ruleset.time_source.as_deref() {
            None | Some("arrival") => TimeSource::Arrival,
            Some("event") => TimeSource::Event,
            Some(other) => {
                errors.push(format!(
                    "ruleset.time_source: {other:?} is not \"arrival\" or \"event\""
                ));
                TimeSource::Arrival
            }
        };
        let ruleset = crate::ruleset::RulesetSource {
            ossec_etc: raw.ruleset.ossec_etc.map(|p| base.join(p)),
            dirs: raw.ruleset.dirs.iter().map(|p| base.join(p)).collect(),
        };
        if let Some(dir) = &ruleset.ossec_etc
            && !dir.is_dir()
        {
            errors.push(format!(
                "ruleset.ossec_etc: {} is not a directory",
                dir.display()
            ));
        }
        for (i, dir) in ruleset.dirs.iter().enumerate() {
            if !dir.is_dir() {
                errors.push(format!(
                    "ruleset.dirs[{i}]: {} is not a directory",
                    dir.display()
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ConfigError {
                file: path.display().to_string(),
                errors,
            });
        }
        let Some(listen) = listen else {
            return Err(ConfigError {
                file: path.display().to_string(),
                errors,
            });
        };
        Ok(Self {
            source: path.to_path_buf(),
            listen,
            advertise,
            server_name: raw.server.server_name,
            ca_cert: base.join(raw.server.ca_cert),
            ca_key: base.join(raw.server.ca_key),
            cert: base.join(raw.server.cert),
            key: base.join(raw.server.key),
            database: base.join(raw.storage.database),
            logall: raw.storage.logall,
            white_list,
            ruleset,
            time_source,
        })
    }
}

/// Parses addresses and CIDRs, a plain address meaning one host.
pub fn parse_networks(key: &str, values: &[String], errors: &mut Vec<String>) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match parse_network(v) {
            Some(net) => out.push(net),
            None => errors.push(format!("{key}[{i}]: {v:?} is not an IP address or CIDR")),
        }
    }
    out
}

/// One address or CIDR.
pub fn parse_network(v: &str) -> Option<ipnet::IpNet> {
    v.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| v.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

fn looks_like_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// Formats a TOML error on one line: position and reason.
pub fn toml_error(e: &toml::de::Error) -> String {
    e.to_string()
        .replace('\n', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The manager.toml that `init` writes, every option shown.
pub fn render_default(listen: SocketAddr, advertise: &str) -> String {
    format!(
        r#"# Palisade manager configuration. Relative paths are relative to this file.

[server]
# Agents and palisadectl connect here (mutual TLS). OSSEC's port is 1514.
listen = "{listen}"
# host:port that `palisade-manager agent add` writes into agent bundles.
advertise = "{advertise}"
# The name clients verify in the server certificate.
server_name = "localhost"
ca_cert = "pki/ca.pem"
ca_key = "pki/ca.key"
cert = "pki/manager.pem"
key = "pki/manager.key"

[storage]
database = "palisade.db"
# Keep every received event (OSSEC's logall).
logall = true

[global]
# Addresses and networks that are never blocked.
white_list = ["127.0.0.1", "::1"]

[ruleset]
# Palisade's own ruleset is built in. To judge with an existing OSSEC
# installation's decoders and rules instead:
# ossec_etc = "/var/ossec/etc"
# Local directories with decoders/*.xml and rules/*.xml, loaded after:
# dirs = ["/etc/palisade/local"]
# "arrival" correlates on the time events arrive (OSSEC); "event" on each
# line's own timestamp (for replaying old logs).
time_source = "arrival"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_valid() {
        let text = render_default("127.0.0.1:1514".parse().unwrap(), "127.0.0.1:1514");
        let c = ManagerConfig::parse(&text, Path::new("/etc/palisade/manager.toml")).unwrap();
        assert_eq!(c.database, Path::new("/etc/palisade/palisade.db"));
        assert_eq!(c.white_list.len(), 2);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = ManagerConfig::parse(
            "[server]\nlisten = \"0.0.0.0:1514\"\nlisten_port = 3\n",
            Path::new("m.toml"),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("listen_port"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = ManagerConfig::parse(
            "[server]\nlisten = \"nowhere\"\nadvertise = \"x\"\n[global]\nwhite_list = [\"10.0.0.0/8\", \"bogus\"]\n",
            Path::new("m.toml"),
        )
        .unwrap_err();
        assert_eq!(err.errors.len(), 3, "{err}");
        assert!(err.errors[0].starts_with("server.listen"));
        assert!(err.errors[1].starts_with("server.advertise"));
        assert!(err.errors[2].starts_with("global.white_list[1]"));
    }
}
