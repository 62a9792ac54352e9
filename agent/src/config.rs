//! `agent.toml`: read in two stages, like the manager's. Serde refuses
//! unknown keys (with line and column); [`AgentConfig::parse`] then checks
//! meanings and reports every problem at once, each naming its key
//! (the problems and their lines: `palisade_common::config`).
//! Relative paths are taken from the directory that holds the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_common::config::Problems;
use palisade_common::units::{parse_duration, parse_size};
use serde::Deserialize;

pub use palisade_common::config::ConfigError;

/// `[spool] batch_events` when not set: events per batch sent.
pub const DEFAULT_BATCH_EVENTS: u32 = 2000;
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
    #[serde(default)]
    active_response: crate::respond::config::RawRespondConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManager {
    address: RawAddresses,
    /// While connected to a later address of the list, how often the
    /// earlier ones are tried.
    failback_interval: Option<String>,
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
    /// Bound on disk: `"256MiB"`, `"1GiB"` or a number of bytes.
    max_size: Option<RawSize>,
    /// Most events sent in one batch.
    batch_events: Option<u32>,
    /// How long a batch that is not full may wait for more events.
    batch_age: Option<String>,
}

impl Default for RawSpool {
    fn default() -> Self {
        Self {
            database: default_database(),
            max_size: None,
            batch_events: None,
            batch_age: None,
        }
    }
}

/// One manager address, or a list in order of preference.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAddresses {
    One(String),
    Many(Vec<String>),
}

impl RawAddresses {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(a) => vec![a],
            Self::Many(list) => list,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
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
    /// How long a rotated or deleted file is still read after it last grew.
    rotate_wait: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocalfile {
    /// A file or a glob pattern (file formats).
    location: Option<String>,
    #[serde(default = "default_format")]
    log_format: String,
    /// The command to run (`command` and `full_command`), split into
    /// arguments like a shell would but never run by one.
    command: Option<String>,
    /// The name its output is reported under (default: the command).
    alias: Option<String>,
    /// How often the command runs.
    frequency: Option<String>,
}

/// How often an agent on a later manager address tries the earlier ones.
pub const DEFAULT_FAILBACK_INTERVAL: Duration = Duration::from_secs(60);

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

/// The formats that run a command instead of reading a file.
pub const COMMAND_FORMATS: &[&str] = &["command", "full_command"];

/// Whether `format` is `multi-line:N` (OSSEC also writes `multi-line: N`)
/// with a usable N.
fn multi_line_count(format: &str) -> Option<Result<usize, String>> {
    let rest = format.strip_prefix("multi-line")?;
    let n = rest.trim_start().strip_prefix(':').map(str::trim);
    Some(match n.and_then(|n| n.parse::<usize>().ok()) {
        Some(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!(
            "{format:?} needs a line count from 1 to 1024, like \"multi-line:3\""
        )),
    })
}

/// A command whose output is shipped (OSSEC's `command`/`full_command`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSource {
    /// The command line as written.
    pub command: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Reported as the events' location (the alias, else the command).
    pub location: String,
    /// `full_command`: the whole output is one event; `command`: each
    /// line is one.
    pub full: bool,
    /// How often it runs.
    pub frequency: Duration,
}

/// Splits a command line into arguments with shell quoting rules (single
/// and double quotes, backslash escapes, `#` comments) but no expansion of
/// any kind, as `shell-words` does.
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let args = shell_words::split(line).map_err(|e| e.to_string())?;
    if args.is_empty() {
        return Err("is empty".into());
    }
    Ok(args)
}

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
    /// The managers' host:port, in order of preference: the agent
    /// connects to the first that answers ([`crate::uplink`]).
    pub manager_addresses: Vec<String>,
    /// While connected to a later address, how often the earlier ones are
    /// tried (`[manager] failback_interval`).
    pub failback_interval: Duration,
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
    /// The files to watch (paths or glob patterns).
    pub localfiles: Vec<Localfile>,
    /// The commands to run.
    pub commands: Vec<CommandSource>,
    /// How long a rotated or deleted file is still read after it last grew.
    pub rotate_wait: Duration,
    /// Bound of the spool on disk, in bytes.
    pub spool_max_size: u64,
    /// Most events sent in one batch.
    pub batch_events: u32,
    /// How long a batch that is not full may wait for more events.
    pub batch_age: Duration,
    /// How active responses are carried out here (`[active_response]`).
    pub respond: crate::respond::config::RespondConfig,
    /// The wall clock the certificate's renewal is due by (the system's;
    /// not in the file: tests move a manual one).
    pub clock: std::sync::Arc<dyn palisade_common::clock::Clock>,
}

impl AgentConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&ConfigError::read(path)?, path)
    }

    /// Validates configuration text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = ConfigError::deserialize(path, text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut errors = Problems::new();
        let mut duration = |key: &str, v: Option<&str>, default: Duration, min: Duration| match v {
            None => default,
            Some(v) => match parse_duration(v) {
                Ok(d) if d >= min => d,
                Ok(_) => {
                    errors.push(key, format!("{v:?} is below the minimum {min:?}"));
                    default
                }
                Err(e) => {
                    errors.push(key, e);
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
        let rotate_wait = duration(
            "agent.rotate_wait",
            raw.agent.rotate_wait.as_deref(),
            Duration::from_secs(5),
            Duration::ZERO,
        );
        let batch_age = duration(
            "spool.batch_age",
            raw.spool.batch_age.as_deref(),
            Duration::from_millis(200),
            Duration::ZERO,
        );
        let failback_interval = duration(
            "manager.failback_interval",
            raw.manager.failback_interval.as_deref(),
            DEFAULT_FAILBACK_INTERVAL,
            Duration::from_secs(1),
        );
        let manager_addresses = raw.manager.address.into_vec();
        if manager_addresses.is_empty() {
            errors.push("manager.address", "the list is empty");
        }
        for (i, address) in manager_addresses.iter().enumerate() {
            match address.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => errors.push("manager.address", format!("{address:?} is not host:port")),
            }
            if manager_addresses[..i].contains(address) {
                errors.push("manager.address", format!("{address:?} is listed twice"));
            }
        }
        if raw.manager.server_name.is_empty() {
            errors.push("manager.server_name", "must not be empty");
        }
        let max_line_length = raw.agent.max_line_length.unwrap_or(64 * 1024);
        if max_line_length < 256 {
            errors.push(
                "agent.max_line_length",
                format!("{max_line_length} is below the minimum 256"),
            );
        } else if max_line_length > 16 << 20 {
            errors.push(
                "agent.max_line_length",
                format!("{max_line_length} is above the maximum 16777216"),
            );
        }
        let spool_max_size = match &raw.spool.max_size {
            None => crate::spool::DEFAULT_MAX_SIZE,
            Some(size) => {
                let parsed = match size {
                    RawSize::Bytes(n) => Ok(*n),
                    RawSize::Text(t) => parse_size(t),
                };
                match parsed {
                    Ok(n) if n >= 1 << 20 => n,
                    Ok(n) => {
                        errors.push(
                            "spool.max_size",
                            format!("{n} bytes is below the minimum \"1MiB\""),
                        );
                        crate::spool::DEFAULT_MAX_SIZE
                    }
                    Err(e) => {
                        errors.push("spool.max_size", e);
                        crate::spool::DEFAULT_MAX_SIZE
                    }
                }
            }
        };
        // 2000 rather than 500: per batch the agent reads the spool, the
        // manager wakes its decoders, the engine and the committer and
        // acknowledges; with batches of 2000 a burst costs the manager
        // ~20 % and the agent ~15 % less CPU (e2e_throughput), and a
        // batch of Apache lines is still about half a megabyte.
        let batch_events = raw.spool.batch_events.unwrap_or(DEFAULT_BATCH_EVENTS);
        if !(1..=10_000).contains(&batch_events) {
            errors.push(
                "spool.batch_events",
                format!("{batch_events} is not between 1 and 10000"),
            );
        }
        let mut localfiles = Vec::new();
        let mut commands = Vec::new();
        for (i, lf) in raw.localfile.iter().enumerate() {
            let format = lf.log_format.trim();
            if COMMAND_FORMATS.contains(&format) {
                if lf.location.is_some() {
                    errors.push(
                        format!("localfile[{i}].location"),
                        format!("a {format} source runs `command` and reads no file"),
                    );
                }
                let frequency = match lf.frequency.as_deref() {
                    None => Duration::from_secs(60),
                    Some(v) => match parse_duration(v) {
                        Ok(d) if d >= Duration::from_secs(1) => d,
                        Ok(_) => {
                            errors.push(
                                format!("localfile[{i}].frequency"),
                                format!("{v:?} is below the minimum 1s"),
                            );
                            Duration::from_secs(60)
                        }
                        Err(e) => {
                            errors.push(format!("localfile[{i}].frequency"), e);
                            Duration::from_secs(60)
                        }
                    },
                };
                match lf.command.as_deref().map(split_command) {
                    None => errors.push(
                        format!("localfile[{i}].command"),
                        format!("a {format} source needs the command to run"),
                    ),
                    Some(Err(e)) => errors.push(format!("localfile[{i}].command"), e),
                    Some(Ok(argv)) => {
                        let command = lf.command.clone().unwrap_or_default();
                        commands.push(CommandSource {
                            location: lf.alias.clone().unwrap_or_else(|| command.clone()),
                            command,
                            argv,
                            full: format == "full_command",
                            frequency,
                        });
                    }
                }
                continue;
            }
            for (key, set) in [
                ("command", lf.command.is_some()),
                ("alias", lf.alias.is_some()),
                ("frequency", lf.frequency.is_some()),
            ] {
                if set {
                    errors.push(
                        format!("localfile[{i}].{key}"),
                        "only for the command and full_command formats",
                    );
                }
            }
            match multi_line_count(format) {
                Some(Err(e)) => errors.push(format!("localfile[{i}].log_format"), e),
                Some(Ok(_)) => {}
                None if LINE_FORMATS.contains(&format) => {}
                None => errors.push(
                    format!("localfile[{i}].log_format"),
                    format!(
                        "{:?} is not supported (one of: {}, {}, multi-line:N)",
                        lf.log_format,
                        LINE_FORMATS.join(", "),
                        COMMAND_FORMATS.join(", ")
                    ),
                ),
            }
            match lf.location.as_deref() {
                None | Some("") => {
                    errors.push(format!("localfile[{i}].location"), "must not be empty");
                }
                Some(location) => localfiles.push(Localfile {
                    location: base.join(location),
                    log_format: format.to_string(),
                }),
            }
        }
        let respond =
            match crate::respond::config::RespondConfig::from_raw(raw.active_response, base) {
                Ok(r) => Some(r),
                Err(e) => {
                    errors.append(e);
                    None
                }
            };
        let Some(respond) = respond.filter(|_| errors.is_empty()) else {
            return Err(errors.into_error(path, text));
        };
        Ok(Self {
            source: path.to_path_buf(),
            manager_addresses,
            failback_interval,
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
            commands,
            rotate_wait,
            spool_max_size,
            batch_events,
            batch_age,
            respond,
            clock: std::sync::Arc::new(palisade_common::clock::SystemClock),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(err: &ConfigError) -> Vec<&str> {
        err.problems.iter().map(|p| p.key.as_str()).collect()
    }

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
    fn the_manager_address_may_be_a_list_in_order_of_preference() {
        let one = AgentConfig::parse(
            "[manager]\naddress = \"m.example.net:1514\"\n[[localfile]]\nlocation = \"/x\"\n",
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!(one.manager_addresses, ["m.example.net:1514"]);
        assert_eq!(one.failback_interval, DEFAULT_FAILBACK_INTERVAL);
        let two = AgentConfig::parse(
            "[manager]\naddress = [\"a:1514\", \"b:1514\"]\nfailback_interval = \"30s\"\n[[localfile]]\nlocation = \"/x\"\n",
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!(two.manager_addresses, ["a:1514", "b:1514"]);
        assert_eq!(two.failback_interval, Duration::from_secs(30));
        for (address, problem) in [
            ("[]", "the list is empty"),
            ("[\"a:1514\", \"b\"]", "\"b\" is not host:port"),
            ("[\"a:1514\", \"a:1514\"]", "\"a:1514\" is listed twice"),
        ] {
            let err = AgentConfig::parse(
                &format!("[manager]\naddress = {address}\n[[localfile]]\nlocation = \"/x\"\n"),
                Path::new("a.toml"),
            )
            .unwrap_err();
            assert_eq!(keys(&err), ["manager.address"], "{err}");
            assert!(err.to_string().contains(problem), "{err}");
        }
        let err = AgentConfig::parse(
            "[manager]\naddress = \"a:1\"\nfailback_interval = \"10ms\"\n[[localfile]]\nlocation = \"/x\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert_eq!(keys(&err), ["manager.failback_interval"], "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let err = AgentConfig::parse(
            "[manager]\naddress = \"nohost\"\n[agent]\npoll_interval = \"soon\"\n[[localfile]]\nlocation = \"/x\"\nlog_format = \"klingon\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert_eq!(
            keys(&err),
            [
                "agent.poll_interval",
                "manager.address",
                "localfile[0].log_format"
            ],
            "{err}"
        );
        // Each is shown where it is written.
        let lines: Vec<_> = err.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(4), Some(2), Some(7)], "{err}");
        assert!(
            err.to_string()
                .starts_with("a.toml:4: agent.poll_interval: \"soon\" is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn spool_commands_and_multi_line() {
        let c = AgentConfig::parse(
            r#"
[manager]
address = "m:1514"
[spool]
max_size = "8MiB"
batch_age = "50ms"
[[localfile]]
location = "/var/log/nginx/*.log"
log_format = "nginx"
[[localfile]]
location = "/var/log/app.log"
log_format = "multi-line: 3"
[[localfile]]
log_format = "full_command"
command = "netstat -tan 'a b'"
alias = "netstat"
frequency = "360s"
"#,
            Path::new("/etc/palisade/agent.toml"),
        )
        .unwrap();
        assert_eq!(c.spool_max_size, 8 << 20);
        assert_eq!(c.batch_age, Duration::from_millis(50));
        assert_eq!(c.batch_events, DEFAULT_BATCH_EVENTS);
        assert_eq!(c.localfiles.len(), 2);
        assert_eq!(c.localfiles[1].log_format, "multi-line: 3");
        assert_eq!(c.commands.len(), 1);
        assert_eq!(c.commands[0].argv, vec!["netstat", "-tan", "a b"]);
        assert_eq!(c.commands[0].location, "netstat");
        assert!(c.commands[0].full);
        assert_eq!(c.commands[0].frequency, Duration::from_secs(360));
    }

    #[test]
    fn source_problems_are_named() {
        let err = AgentConfig::parse(
            r#"
[manager]
address = "m:1514"
[spool]
max_size = "12 parsecs"
[[localfile]]
log_format = "command"
[[localfile]]
location = "/x"
log_format = "multi-line:0"
[[localfile]]
location = "/y"
command = "ls"
"#,
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert_eq!(
            keys(&err),
            [
                "spool.max_size",
                "localfile[0].command",
                "localfile[1].log_format",
                "localfile[2].command"
            ],
            "{err}"
        );
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            split_command(r#"grep -c "a \"b\"" 'c d' e\ f"#).unwrap(),
            vec!["grep", "-c", "a \"b\"", "c d", "e f"]
        );
        assert!(split_command("echo 'open").is_err());
        assert!(split_command("  ").is_err());
        // No shell: operators are plain arguments.
        assert_eq!(
            split_command("echo a; rm -rf /").unwrap(),
            vec!["echo", "a;", "rm", "-rf", "/"]
        );
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.toml");
        let agent = AgentConfig::load(&path).unwrap();
        assert_eq!(agent.localfiles.len(), 2);
        assert_eq!(agent.commands.len(), 1);
        assert!(agent.respond.commands.contains_key("notify-edge"));
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
