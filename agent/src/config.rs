//! `agent.toml`: read in two stages, like the manager's. Serde refuses
//! unknown keys (with line and column); [`AgentConfig::parse`] then checks
//! meanings and reports every problem at once, each naming its key.
//! Relative paths are taken from the directory that holds the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration that cannot be used, with every reason. Shared by the
/// agent's and the manager's configuration files.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// One line per problem, each naming the key.
    pub errors: Vec<String>,
    /// The line of each problem's key in the file, where it was found.
    pub lines: Vec<Option<usize>>,
}

impl ConfigError {
    /// Problems with no line to point at (the file cannot be read or parsed).
    pub fn new(file: impl Into<String>, errors: Vec<String>) -> Self {
        let lines = vec![None; errors.len()];
        Self {
            file: file.into(),
            errors,
            lines,
        }
    }

    /// Reads a configuration file; a file that cannot be read is an error
    /// of its own.
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                path.display().to_string(),
                vec![format!("cannot read: {e}")],
            )
        })
    }

    /// A file TOML cannot read (bad syntax, unknown key, wrong type), with
    /// the line TOML points at.
    pub fn from_toml(file: impl Into<String>, text: &str, error: &toml::de::Error) -> Self {
        let line = error
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        Self {
            file: file.into(),
            errors: vec![error.message().trim().replace('\n', " ")],
            lines: vec![line],
        }
    }

    /// Problems found in `text`, each starting with its key path
    /// (`localfile[1].log_format: ...`), located in the text.
    pub fn located(file: impl Into<String>, text: &str, errors: Vec<String>) -> Self {
        let lines = errors
            .iter()
            .map(|e| {
                e.split_once(": ")
                    .and_then(|(key, _)| locate_key(text, key))
            })
            .collect();
        Self {
            file: file.into(),
            errors,
            lines,
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match self.lines.get(i).copied().flatten() {
                Some(line) => write!(f, "{}:{line}: {e}", self.file)?,
                None => write!(f, "{}: {e}", self.file)?,
            }
        }
        Ok(())
    }
}

/// The 1-based line where a key path (`server.listen`,
/// `localfile[1].log_format`, `global.white_list[2]`, `active_response[0]`)
/// is written in a TOML text, if it is.
pub fn locate_key(text: &str, path: &str) -> Option<usize> {
    // The index of an array value (`global.white_list[2]`) points at its
    // key; an array table's index (`localfile[1]`) names the table.
    let path = match path.rsplit_once('.') {
        Some((_, last)) if last.ends_with(']') => {
            path.rsplit_once('[').map_or(path, |(head, _)| head)
        }
        _ => path,
    };
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut header_hit = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_string();
            let n = counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{n}]");
            *n += 1;
            if table == path {
                header_hit = Some(i + 1);
            }
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = name.trim().to_string();
            if table == path {
                header_hit = Some(i + 1);
            }
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim().trim_matches('"');
            let full = if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            };
            if full == path {
                return Some(i + 1);
            }
        }
    }
    header_hit
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
    #[serde(default)]
    active_response: crate::respond::config::RawRespondConfig,
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

/// Parses a size such as `"256MiB"`, `"512KiB"`, `"1GiB"`, `"10MB"` or
/// `"1000"` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit_size: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("{s:?} is not a size like \"256MiB\"")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_size))
        .ok_or_else(|| format!("{s:?} is not a size like \"256MiB\""))
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
}

/// Parses a duration written as `"600s"`, `"10m"`, `"250ms"`, `"1h30m"`
/// or `"90d"` (days of 24 hours: retention periods and token lifetimes
/// are given in days).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |e: jiff::Error| format!("{s:?} is not a duration like \"30s\" or \"10m\" ({e})");
    let span: jiff::Span = s.parse().map_err(bad)?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(bad)?;
    Duration::try_from(d).map_err(|_| format!("{s:?} must not be negative"))
}

impl AgentConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&ConfigError::read(path)?, path)
    }

    /// Validates configuration text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(file.clone(), text, &e))?;
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
        } else if max_line_length > 16 << 20 {
            errors.push(format!(
                "agent.max_line_length: {max_line_length} is above the maximum 16777216"
            ));
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
                        errors.push(format!(
                            "spool.max_size: {n} bytes is below the minimum \"1MiB\""
                        ));
                        crate::spool::DEFAULT_MAX_SIZE
                    }
                    Err(e) => {
                        errors.push(format!("spool.max_size: {e}"));
                        crate::spool::DEFAULT_MAX_SIZE
                    }
                }
            }
        };
        let batch_events = raw.spool.batch_events.unwrap_or(500);
        if !(1..=10_000).contains(&batch_events) {
            errors.push(format!(
                "spool.batch_events: {batch_events} is not between 1 and 10000"
            ));
        }
        let mut localfiles = Vec::new();
        let mut commands = Vec::new();
        for (i, lf) in raw.localfile.iter().enumerate() {
            let format = lf.log_format.trim();
            if COMMAND_FORMATS.contains(&format) {
                if lf.location.is_some() {
                    errors.push(format!(
                        "localfile[{i}].location: a {format} source runs `command` and reads no file"
                    ));
                }
                let frequency = match lf.frequency.as_deref() {
                    None => Duration::from_secs(60),
                    Some(v) => match parse_duration(v) {
                        Ok(d) if d >= Duration::from_secs(1) => d,
                        Ok(_) => {
                            errors.push(format!(
                                "localfile[{i}].frequency: {v:?} is below the minimum 1s"
                            ));
                            Duration::from_secs(60)
                        }
                        Err(e) => {
                            errors.push(format!("localfile[{i}].frequency: {e}"));
                            Duration::from_secs(60)
                        }
                    },
                };
                match lf.command.as_deref().map(split_command) {
                    None => errors.push(format!(
                        "localfile[{i}].command: a {format} source needs the command to run"
                    )),
                    Some(Err(e)) => errors.push(format!("localfile[{i}].command: {e}")),
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
                    errors.push(format!(
                        "localfile[{i}].{key}: only for the command and full_command formats"
                    ));
                }
            }
            match multi_line_count(format) {
                Some(Err(e)) => errors.push(format!("localfile[{i}].log_format: {e}")),
                Some(Ok(_)) => {}
                None if LINE_FORMATS.contains(&format) => {}
                None => errors.push(format!(
                    "localfile[{i}].log_format: {:?} is not supported (one of: {}, {}, multi-line:N)",
                    lf.log_format,
                    LINE_FORMATS.join(", "),
                    COMMAND_FORMATS.join(", ")
                )),
            }
            match lf.location.as_deref() {
                None | Some("") => {
                    errors.push(format!("localfile[{i}].location: must not be empty"));
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
                Err(mut e) => {
                    errors.append(&mut e);
                    None
                }
            };
        let Some(respond) = respond.filter(|_| errors.is_empty()) else {
            return Err(ConfigError::located(file, text, errors));
        };
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
            commands,
            rotate_wait,
            spool_max_size,
            batch_events,
            batch_age,
            respond,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units_and_whole_days() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("600s"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert!(
            parse_duration("1 month").is_err(),
            "months have no fixed length"
        );
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn key_paths_are_located_in_the_text() {
        let text = "[manager]\naddress = \"m:1\"\n\n[[localfile]]\nlocation = \"/a\"\n[[localfile]]\nlocation = \"/b\"\nlog_format = \"x\"\n[active_response]\nwhite_list = [\"a\", \"b\"]\n";
        assert_eq!(locate_key(text, "manager.address"), Some(2));
        assert_eq!(locate_key(text, "localfile[1].log_format"), Some(8));
        assert_eq!(locate_key(text, "localfile[1]"), Some(6));
        assert_eq!(locate_key(text, "active_response.white_list[1]"), Some(10));
        assert_eq!(locate_key(text, "agent.poll_interval"), None);
        let e = ConfigError::located(
            "a.toml",
            text,
            vec!["localfile[1].log_format: bad".into(), "spool: x".into()],
        );
        assert_eq!(
            e.to_string(),
            "a.toml:8: localfile[1].log_format: bad\na.toml: spool: x"
        );
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
        assert_eq!(c.batch_events, 500);
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
        assert_eq!(err.errors.len(), 4, "{err}");
        assert!(err.errors[0].starts_with("spool.max_size"), "{err}");
        assert!(err.errors[1].starts_with("localfile[0].command"), "{err}");
        assert!(
            err.errors[2].starts_with("localfile[1].log_format"),
            "{err}"
        );
        assert!(err.errors[3].starts_with("localfile[2].command"), "{err}");
    }

    #[test]
    fn sizes_and_command_lines() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(parse_size("MiB").is_err());
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
    fn unknown_keys_are_refused() {
        let err = AgentConfig::parse(
            "[manager]\naddress = \"m:1\"\nadress = \"x\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");
    }
}
