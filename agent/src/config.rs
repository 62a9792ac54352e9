//! `agent.toml`: read in two stages, like the manager's. Serde refuses
//! unknown keys (with line and column); [`AgentConfig::parse`] then checks
//! meanings and reports every problem at once, each naming its key.
//! Relative paths are taken from the directory that holds the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    manager: RawManager,
    #[serde(default)]
    spool: RawSpool,
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    localfile: Vec<RawLocalfile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManager {
    address: String,
    #[serde(default = "default_server_name")]
    server_name: String,
    #[serde(default = "default_ca")]
    ca_cert: PathBuf,
    #[serde(default = "default_cert")]
    cert: PathBuf,
    #[serde(default = "default_key")]
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    #[serde(default = "default_database")]
    database: PathBuf,
}

impl Default for RawSpool {
    fn default() -> Self {
        Self {
            database: default_database(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    /// How often files are checked for new lines.
    poll_interval: Option<String>,
    /// How often the agent reports its status when otherwise idle.
    heartbeat_interval: Option<String>,
    /// Read files seen for the first time from their start, not their end.
    #[serde(default)]
    read_from_start: bool,
    /// Longer lines are cut and flagged.
    max_line_length: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocalfile {
    location: String,
    #[serde(default = "default_format")]
    log_format: String,
}

fn default_server_name() -> String {
    "localhost".into()
}
fn default_ca() -> PathBuf {
    "ca.pem".into()
}
fn default_cert() -> PathBuf {
    "agent.pem".into()
}
fn default_key() -> PathBuf {
    "agent.key".into()
}
fn default_database() -> PathBuf {
    "agent.db".into()
}
fn default_format() -> String {
    "syslog".into()
}

/// The log formats this agent reads as one line per event (OSSEC names).
pub const LINE_FORMATS: &[&str] = &[
    "syslog",
    "apache",
    "nginx",
    "snort-full",
    "squid",
    "iis",
    "mysql_log",
    "postgresql_log",
    "djb-multilog",
];

/// One watched file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Localfile {
    /// The path.
    pub location: PathBuf,
    /// OSSEC's log_format; travels with every event.
    pub log_format: String,
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the file was read from.
    pub source: PathBuf,
    /// The manager's host:port.
    pub manager_address: String,
    /// The TLS name verified in the manager's certificate.
    pub server_name: String,
    /// The CA that signed the manager's and this agent's certificates.
    pub ca_cert: PathBuf,
    /// This agent's certificate.
    pub cert: PathBuf,
    /// This agent's private key.
    pub key: PathBuf,
    /// The spool database.
    pub spool_database: PathBuf,
    /// How often files are checked.
    pub poll_interval: Duration,
    /// How often status is reported.
    pub heartbeat_interval: Duration,
    /// Read first-seen files from the start.
    pub read_from_start: bool,
    /// Longer lines are cut and flagged.
    pub max_line_length: usize,
    /// The files to watch.
    pub localfiles: Vec<Localfile>,
}

/// Parses a duration written as `"600s"`, `"10m"`, `"250ms"` or `"1h30m"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like \"30s\" or \"10m\" ({e})"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?} must not be negative"))
}

impl AgentConfig {
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
            errors: vec![
                e.to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            ],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut errors = Vec::new();
        let mut duration = |key: &str, v: Option<&str>, default: Duration, min: Duration| match v {
            None => default,
            Some(v) => match parse_duration(v) {
                Ok(d) if d >= min => d,
                Ok(_) => {
                    errors.push(format!("{key}: {v:?} is below the minimum {min:?}"));
                    default
                }
                Err(e) => {
                    errors.push(format!("{key}: {e}"));
                    default
                }
            },
        };
        let poll_interval = duration(
            "agent.poll_interval",
            raw.agent.poll_interval.as_deref(),
            Duration::from_millis(100),
            Duration::from_millis(10),
        );
        let heartbeat_interval = duration(
            "agent.heartbeat_interval",
            raw.agent.heartbeat_interval.as_deref(),
            Duration::from_secs(30),
            Duration::from_millis(100),
        );
        match raw.manager.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => errors.push(format!(
                "manager.address: {:?} is not host:port",
                raw.manager.address
            )),
        }
        if raw.manager.server_name.is_empty() {
            errors.push("manager.server_name: must not be empty".into());
        }
        let max_line_length = raw.agent.max_line_length.unwrap_or(64 * 1024);
        if max_line_length < 256 {
            errors.push(format!(
                "agent.max_line_length: {max_line_length} is below the minimum 256"
            ));
        }
        let mut localfiles = Vec::new();
        for (i, lf) in raw.localfile.iter().enumerate() {
            if lf.location.is_empty() {
                errors.push(format!("localfile[{i}].location: must not be empty"));
            }
            if !LINE_FORMATS.contains(&lf.log_format.as_str()) {
                errors.push(format!(
                    "localfile[{i}].log_format: {:?} is not supported (one of: {})",
                    lf.log_format,
                    LINE_FORMATS.join(", ")
                ));
            }
            localfiles.push(Localfile {
                location: base.join(&lf.location),
                log_format: lf.log_format.clone(),
            });
        }
        if !errors.is_empty() {
            return Err(ConfigError { file, errors });
        }
        Ok(Self {
            source: path.to_path_buf(),
            manager_address: raw.manager.address,
            server_name: raw.manager.server_name,
            ca_cert: base.join(raw.manager.ca_cert),
            cert: base.join(raw.manager.cert),
            key: base.join(raw.manager.key),
            spool_database: base.join(raw.spool.database),
            poll_interval,
            heartbeat_interval,
            read_from_start: raw.agent.read_from_start,
            max_line_length,
            localfiles,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_gets_defaults() {
        let c = AgentConfig::parse(
            "[manager]\naddress = \"m.example.net:1514\"\n[[localfile]]\nlocation = \"/var/log/auth.log\"\n",
            Path::new("/etc/palisade/agent.toml"),
        )
        .unwrap();
        assert_eq!(c.ca_cert, Path::new("/etc/palisade/ca.pem"));
        assert_eq!(c.localfiles[0].log_format, "syslog");
        assert_eq!(c.poll_interval, Duration::from_millis(100));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let err = AgentConfig::parse(
            "[manager]\naddress = \"nohost\"\n[agent]\npoll_interval = \"soon\"\n[[localfile]]\nlocation = \"/x\"\nlog_format = \"klingon\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert_eq!(err.errors.len(), 3, "{err}");
        assert!(err.errors[0].starts_with("agent.poll_interval"), "{err}");
        assert!(err.errors[1].starts_with("manager.address"), "{err}");
        assert!(
            err.errors[2].starts_with("localfile[0].log_format"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = AgentConfig::parse(
            "[manager]\naddress = \"m:1\"\nadress = \"x\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");
    }
}
