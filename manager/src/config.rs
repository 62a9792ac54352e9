//! `manager.toml`: read in two stages. Serde reads the raw shape and
//! refuses unknown keys (with line and column); [`ManagerConfig::from_raw`]
//! then checks meanings and reports every problem at once, each naming its
//! key and line (`palisade_common::config`), so an operator fixes the file
//! in one pass.
//!
//! Relative paths are taken from the directory that holds the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use palisade_common::config::Problems;
use serde::Deserialize;

pub use palisade_common::bundle::DEFAULT_PORT;
pub use palisade_common::config::ConfigError;

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
    #[serde(default)]
    command: Vec<RawCommand>,
    #[serde(default)]
    active_response: Vec<RawActiveResponse>,
    #[serde(default)]
    alerts: crate::alert_files::RawAlertFiles,
    #[serde(default)]
    email: crate::mail::RawEmail,
    #[serde(default)]
    retention: crate::retention::RawRetention,
    #[serde(default)]
    metrics: crate::metrics::RawMetrics,
    #[serde(default)]
    enrollment: crate::enroll::RawEnrollment,
    #[serde(default)]
    flow: crate::pipeline::flow::RawFlow,
    #[serde(default)]
    limits: crate::limits::RawLimits,
    #[serde(default)]
    connections: crate::connections::RawConnections,
    #[serde(default)]
    manager: crate::cluster::RawCluster,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    name: String,
    /// A built-in (`route-null`, `firewall-drop`, `host-deny`) or a script
    /// path on the agents; defaults to the name.
    executable: Option<String>,
    #[serde(default)]
    expect: Vec<String>,
    #[serde(default)]
    timeout_allowed: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActiveResponse {
    command: String,
    location: String,
    agent_id: Option<String>,
    #[serde(default)]
    rules_id: Vec<u32>,
    rules_group: Option<String>,
    level: Option<u32>,
    timeout: Option<String>,
    #[serde(default)]
    repeated_offenders: Vec<String>,
    #[serde(default)]
    disabled: bool,
}

/// The built-in commands every agent carries out without a script; they
/// need the source address and allow a timeout.
pub const BUILTIN_COMMANDS: [&str; 3] = ["route-null", "firewall-drop", "host-deny"];

/// A `[[command]]`: what an active response runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// Its name, referred to by `[[active_response]] command`.
    pub name: String,
    /// A built-in name or a script path on the agents.
    pub executable: String,
    /// The alert must carry a source address that parses as an IP.
    pub expect_srcip: bool,
    /// The alert must carry a user name.
    pub expect_user: bool,
    /// A timeout (automatic undo) may be set.
    pub timeout_allowed: bool,
}

/// Where an active response runs (OSSEC's `location`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseLocation {
    /// On the agent that saw the event.
    Local,
    /// On the manager's host.
    Server,
    /// On one named agent.
    DefinedAgent(String),
    /// On every agent.
    All,
}

impl ResponseLocation {
    /// OSSEC's word for it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Local => "local",
            Self::Server => "server",
            Self::DefinedAgent(_) => "defined-agent",
            Self::All => "all",
        }
    }
}

/// An enabled `[[active_response]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseSpec {
    /// OSSEC's name: the command plus the timeout in seconds (`route-null600`).
    pub name: String,
    /// The command it runs.
    pub command: CommandSpec,
    /// Where.
    pub location: ResponseLocation,
    /// Rules that trigger it.
    pub rules_id: Vec<u32>,
    /// OS_Regex against the alert's group string.
    pub rules_group: Option<String>,
    /// Alerts at or above this level trigger it (0: none by level).
    pub level: u32,
    /// Undo after this long; `None` never undoes.
    pub timeout: Option<std::time::Duration>,
    /// Longer timeouts for the second, third ... block of one address.
    pub repeated_offenders: Vec<std::time::Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleset {
    /// Use an OSSEC etc directory instead of the embedded ruleset.
    ossec_etc: Option<PathBuf>,
    /// Use a Wazuh ruleset/ directory instead of the embedded ruleset.
    wazuh_ruleset: Option<PathBuf>,
    /// "ossec" (default) or "wazuh": the rule language of every file.
    dialect: Option<String>,
    /// Local rule directories loaded after the base set.
    #[serde(default)]
    dirs: Vec<PathBuf>,
    /// "arrival" (OSSEC) or "event".
    time_source: Option<String>,
    /// "global" (OSSEC) or "per-source".
    barrier: Option<String>,
}

pub use palisade_engine::correlate::Barrier;
pub use palisade_engine::dialect::RulesetDialect;
pub use palisade_engine::timestamp::TimeSource;

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
    /// An agent silent this long is disconnected (OSSEC: 3 keepalives + 30 s).
    agent_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default = "default_database")]
    database: String,
    /// Keep every received event (OSSEC's `logall`, off by default).
    #[serde(default)]
    logall: bool,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            database: default_database(),
            logall: false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    #[serde(default)]
    white_list: Vec<String>,
    max_new_blocks_per_minute: Option<u32>,
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
fn default_database() -> String {
    "palisade.db".into()
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
    /// The store: an SQLite file or a PostgreSQL URL.
    pub database: crate::store::StoreLocation,
    /// Keep every received event in the archive table.
    pub logall: bool,
    /// Addresses and networks never to block.
    pub white_list: Vec<ipnet::IpNet>,
    /// The circuit breaker: more new blocks than this on one agent within
    /// a minute stop new blocks there (0: never).
    pub max_new_blocks_per_minute: u32,
    /// Where decoders and rules come from.
    pub ruleset: crate::ruleset::RulesetSource,
    /// Which clock correlation uses.
    pub time_source: TimeSource,
    /// How a frequency rule's firing restarts its count.
    pub barrier: Barrier,
    /// The enabled active responses.
    pub responses: Vec<ResponseSpec>,
    /// An agent without a heartbeat for this long counts as disconnected.
    pub agent_timeout: std::time::Duration,
    /// `alerts.log` and `alerts.json`.
    pub alert_files: crate::alert_files::AlertFilesConfig,
    /// E-mail notifications.
    pub email: crate::mail::EmailConfig,
    /// Pruning of old alerts and events.
    pub retention: crate::retention::RetentionConfig,
    /// The Prometheus endpoint.
    pub metrics: crate::metrics::MetricsConfig,
    /// Agent enrollment with tokens.
    pub enrollment: crate::enroll::EnrollmentConfig,
    /// Flow control of agents' streams.
    pub flow: crate::pipeline::flow::FlowConfig,
    /// The wall clock certificates are issued by (the system's; not in the
    /// file: tests move a manual one).
    pub clock: std::sync::Arc<dyn palisade_common::clock::Clock>,
    /// Sizes taken in from agents (`[limits]`).
    pub limits: crate::limits::LimitsConfig,
    /// Connections, handshakes per address, the handshake timeout
    /// (`[connections]`).
    pub connections: crate::connections::ConnectionLimits,
    /// This manager among several on one database (`[manager]`).
    pub cluster: crate::cluster::ClusterConfig,
}

/// Three missed heartbeats (30 s each, the agent's default) plus 30 s, as
/// OSSEC computes its threshold from `notify_time`.
pub const DEFAULT_AGENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl ManagerConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&ConfigError::read(path)?, path)
    }

    /// Validates configuration text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = ConfigError::deserialize(path, text)?;
        Self::from_raw(raw, path, text)
    }

    fn from_raw(raw: RawConfig, path: &Path, text: &str) -> Result<Self, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("."));
        let mut errors = Problems::new();
        let listen = raw
            .server
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| {
                errors.push(
                    "server.listen",
                    format!("{:?} is not an address:port ({e})", raw.server.listen),
                )
            })
            .ok();
        let advertise = match raw.server.advertise {
            Some(a) => {
                if !looks_like_host_port(&a) {
                    errors.push("server.advertise", format!("{a:?} is not host:port"));
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
            errors.push("server.server_name", "must not be empty");
        }
        let white_list = parse_networks("global.white_list", &raw.global.white_list, &mut errors);
        let time_source = match raw.ruleset.time_source.as_deref() {
            None | Some("arrival") => TimeSource::Arrival,
            Some("event") => TimeSource::Event,
            Some(other) => {
                errors.push(
                    "ruleset.time_source",
                    format!("{other:?} is not \"arrival\" or \"event\""),
                );
                TimeSource::Arrival
            }
        };
        let barrier = match raw.ruleset.barrier.as_deref() {
            None | Some("global") => Barrier::Global,
            Some("per-source") => Barrier::PerSource,
            Some(other) => {
                errors.push(
                    "ruleset.barrier",
                    format!("{other:?} is not \"global\" or \"per-source\""),
                );
                Barrier::Global
            }
        };
        let dialect = match raw.ruleset.dialect.as_deref() {
            None if raw.ruleset.wazuh_ruleset.is_some() => RulesetDialect::Wazuh,
            None => RulesetDialect::Ossec,
            Some(word) => word.parse().unwrap_or_else(|e: String| {
                errors.push("ruleset.dialect", e);
                RulesetDialect::Ossec
            }),
        };
        if raw.ruleset.wazuh_ruleset.is_some() && !dialect.is_wazuh() {
            errors.push(
                "ruleset.wazuh_ruleset",
                "a Wazuh ruleset is read in dialect = \"wazuh\"",
            );
        }
        if raw.ruleset.ossec_etc.is_some() && dialect.is_wazuh() {
            errors.push(
                "ruleset.ossec_etc",
                "an OSSEC etc directory is read in dialect = \"ossec\"; use wazuh_ruleset",
            );
        }
        let ruleset = crate::ruleset::RulesetSource {
            ossec_etc: raw.ruleset.ossec_etc.map(|p| base.join(p)),
            wazuh_ruleset: raw.ruleset.wazuh_ruleset.map(|p| base.join(p)),
            dialect,
            dirs: raw.ruleset.dirs.iter().map(|p| base.join(p)).collect(),
        };
        if let Some(dir) = &ruleset.wazuh_ruleset
            && !dir.is_dir()
        {
            errors.push(
                "ruleset.wazuh_ruleset",
                format!("{} is not a directory", dir.display()),
            );
        }
        if let Some(dir) = &ruleset.ossec_etc
            && !dir.is_dir()
        {
            errors.push(
                "ruleset.ossec_etc",
                format!("{} is not a directory", dir.display()),
            );
        }
        for (i, dir) in ruleset.dirs.iter().enumerate() {
            if !dir.is_dir() {
                errors.push(
                    format!("ruleset.dirs[{i}]"),
                    format!("{} is not a directory", dir.display()),
                );
            }
        }
        let responses = compile_responses(&raw.command, &raw.active_response, &mut errors);
        let agent_timeout = match raw.server.agent_timeout.as_deref() {
            Some(t) => duration("server.agent_timeout", t, &mut errors),
            None => Some(DEFAULT_AGENT_TIMEOUT),
        }
        .unwrap_or(DEFAULT_AGENT_TIMEOUT);
        let alert_files = crate::alert_files::compile(raw.alerts, base, &mut errors);
        let email = crate::mail::compile(raw.email, base, &mut errors);
        let retention = crate::retention::compile(raw.retention, base, &mut errors);
        let metrics = crate::metrics::compile(raw.metrics, base, &mut errors);
        let enrollment = crate::enroll::compile(raw.enrollment, base, &mut errors);
        let flow = crate::pipeline::flow::compile(raw.flow, &mut errors);
        let limits = crate::limits::compile(raw.limits, &mut errors);
        let connections = crate::connections::compile(raw.connections, &mut errors);
        let cluster = crate::cluster::compile(raw.manager, &mut errors);
        let database = crate::store::StoreLocation::parse(&raw.storage.database, base)
            .map_err(|e| errors.push("storage.database", e))
            .ok();
        let (Some(listen), Some(database)) = (listen, database) else {
            return Err(errors.into_error(path, text));
        };
        if !errors.is_empty() {
            return Err(errors.into_error(path, text));
        }
        Ok(Self {
            source: path.to_path_buf(),
            listen,
            advertise,
            server_name: raw.server.server_name,
            ca_cert: base.join(raw.server.ca_cert),
            ca_key: base.join(raw.server.ca_key),
            cert: base.join(raw.server.cert),
            key: base.join(raw.server.key),
            database,
            logall: raw.storage.logall,
            white_list,
            max_new_blocks_per_minute: raw
                .global
                .max_new_blocks_per_minute
                .unwrap_or(crate::breaker::DEFAULT_MAX_PER_MINUTE),
            ruleset,
            time_source,
            barrier,
            responses,
            agent_timeout,
            alert_files,
            email,
            retention,
            metrics,
            enrollment,
            flow,
            clock: std::sync::Arc::new(palisade_common::clock::SystemClock),
            limits,
            connections,
            cluster,
        })
    }
}

fn compile_commands(raw: &[RawCommand], errors: &mut Problems) -> Vec<CommandSpec> {
    let mut commands: Vec<CommandSpec> = BUILTIN_COMMANDS
        .iter()
        .map(|name| CommandSpec {
            name: name.to_string(),
            executable: name.to_string(),
            expect_srcip: true,
            expect_user: false,
            timeout_allowed: true,
        })
        .collect();
    for (i, c) in raw.iter().enumerate() {
        let key = format!("command[{i}]");
        if !palisade_proto::identity::is_valid_name(&c.name) {
            errors.push(
                format!("{key}.name"),
                format!("{:?} is not a valid name (A-Z a-z 0-9 . _ -)", c.name),
            );
        }
        let mut spec = CommandSpec {
            name: c.name.clone(),
            executable: c.executable.clone().unwrap_or_else(|| c.name.clone()),
            expect_srcip: false,
            expect_user: false,
            timeout_allowed: c.timeout_allowed,
        };
        for (j, e) in c.expect.iter().enumerate() {
            match e.as_str() {
                "srcip" => spec.expect_srcip = true,
                "user" => spec.expect_user = true,
                other => errors.push(
                    format!("{key}.expect[{j}]"),
                    format!("{other:?} is not \"srcip\" or \"user\""),
                ),
            }
        }
        let builtin = BUILTIN_COMMANDS.contains(&spec.executable.as_str());
        if !builtin && !spec.executable.starts_with('/') {
            errors.push(
                format!("{key}.executable"),
                format!(
                    "{:?} is neither a built-in ({}) nor an absolute script path",
                    spec.executable,
                    BUILTIN_COMMANDS.join(", ")
                ),
            );
        }
        if builtin && !spec.expect_srcip {
            errors.push(
                format!("{key}.expect"),
                format!("the built-in {} needs \"srcip\"", spec.executable),
            );
        }
        match commands.iter_mut().find(|x| x.name == spec.name) {
            Some(existing) if BUILTIN_COMMANDS.contains(&existing.name.as_str()) => {
                *existing = spec
            }
            Some(_) => errors.push(
                format!("{key}.name"),
                format!("{:?} is defined twice", c.name),
            ),
            None => commands.push(spec),
        }
    }
    commands
}

fn duration(key: &str, value: &str, errors: &mut Problems) -> Option<std::time::Duration> {
    match palisade_common::units::parse_duration(value) {
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(key, e);
            None
        }
    }
}

fn compile_responses(
    raw_commands: &[RawCommand],
    raw: &[RawActiveResponse],
    errors: &mut Problems,
) -> Vec<ResponseSpec> {
    let commands = compile_commands(raw_commands, errors);
    let mut out: Vec<ResponseSpec> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("active_response[{i}]");
        let Some(command) = commands.iter().find(|c| c.name == r.command) else {
            errors.push(
                format!("{key}.command"),
                format!("no command named {:?}", r.command),
            );
            continue;
        };
        let location = match r.location.as_str() {
            "local" => Some(ResponseLocation::Local),
            "server" => Some(ResponseLocation::Server),
            "all" | "any" => Some(ResponseLocation::All),
            "defined-agent" => match &r.agent_id {
                Some(id) if palisade_proto::identity::is_valid_agent_id(id) => {
                    Some(ResponseLocation::DefinedAgent(id.clone()))
                }
                Some(id) => {
                    errors.push(
                        format!("{key}.agent_id"),
                        format!("{id:?} is not an agent id like \"001\""),
                    );
                    None
                }
                None => {
                    errors.push(
                        format!("{key}.agent_id"),
                        "location \"defined-agent\" needs an agent_id",
                    );
                    None
                }
            },
            other => {
                errors.push(
                    format!("{key}.location"),
                    format!("{other:?} is not local, server, defined-agent or all"),
                );
                None
            }
        };
        if r.agent_id.is_some() && r.location != "defined-agent" {
            errors.push(
                format!("{key}.agent_id"),
                "only used with location \"defined-agent\"",
            );
        }
        let timeout = r
            .timeout
            .as_deref()
            .and_then(|t| duration(&format!("{key}.timeout"), t, errors))
            .filter(|d| !d.is_zero());
        if timeout.is_some() && !command.timeout_allowed {
            errors.push(
                format!("{key}.timeout"),
                format!(
                    "command {:?} does not allow a timeout (timeout_allowed = false)",
                    command.name
                ),
            );
        }
        let repeated_offenders: Vec<_> = r
            .repeated_offenders
            .iter()
            .enumerate()
            .filter_map(|(j, d)| duration(&format!("{key}.repeated_offenders[{j}]"), d, errors))
            .collect();
        if !repeated_offenders.is_empty() && timeout.is_none() {
            errors.push(
                format!("{key}.repeated_offenders"),
                "needs a timeout to escalate from",
            );
        }
        if repeated_offenders.len() > 5 {
            errors.push(
                format!("{key}.repeated_offenders"),
                "at most 5 values, as OSSEC",
            );
        }
        if let Some(group) = &r.rules_group
            && let Err(e) = palisade_engine::pattern::Pattern::new(
                palisade_engine::pattern::Dialect::OsRegex,
                group,
            )
        {
            errors.push(format!("{key}.rules_group"), e.to_string());
        }
        let level = r.level.unwrap_or(0);
        if level > 16 {
            errors.push(
                format!("{key}.level"),
                format!("{level} is above the highest rule level 16"),
            );
        }
        if r.rules_id.is_empty() && r.rules_group.is_none() && level == 0 {
            errors.push(
                &key,
                "binds to no rule; give rules_id, rules_group or level",
            );
        }
        let name = format!(
            "{}{}",
            command.name,
            timeout.map(|t| t.as_secs()).unwrap_or(0)
        );
        if r.disabled {
            continue;
        }
        if out.iter().any(|o| o.name == name) {
            errors.push(
                &key,
                format!("another active response is already named {name}"),
            );
        }
        if let Some(location) = location {
            out.push(ResponseSpec {
                name,
                command: command.clone(),
                location,
                rules_id: r.rules_id.clone(),
                rules_group: r.rules_group.clone(),
                level,
                timeout,
                repeated_offenders,
            });
        }
    }
    out
}

/// Checks that a manager.toml fragment uses only known sections and keys
/// with the right types (no meaning checks: paths need not exist). A
/// fragment without `[server]` is checked as if it had the default one.
pub fn check_keys(fragment: &str) -> Result<(), String> {
    let text = if fragment.lines().any(|l| l.trim() == "[server]") {
        fragment.to_string()
    } else {
        format!("[server]\n{fragment}")
    };
    toml::from_str::<RawConfig>(&text)
        .map(|_| ())
        .map_err(|e| toml_error(&e))
}

/// Parses addresses and CIDRs, a plain address meaning one host.
pub fn parse_networks(key: &str, values: &[String], errors: &mut Problems) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match palisade_common::network::parse_network(v) {
            Ok(net) => out.push(net),
            Err(e) => errors.push(format!("{key}[{i}]"), e),
        }
    }
    out
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
    render_with_white_list(listen, advertise, None)
}

/// [`render_default`], white-listing also `ssh_client`, the address of
/// the operator's SSH session (as fail2ban's `ignoreself`).
pub fn render_with_white_list(
    listen: SocketAddr,
    advertise: &str,
    ssh_client: Option<std::net::IpAddr>,
) -> String {
    let enroll_listen = SocketAddr::new(listen.ip(), crate::enroll::DEFAULT_PORT);
    let mut white_list = vec!["\"127.0.0.1\"".to_string(), "\"::1\"".to_string()];
    let mut ssh_note = String::new();
    if let Some(ip) = ssh_client {
        white_list.push(format!("\"{ip}\""));
        ssh_note = format!(
            "\n# {ip} is the address of the SSH session that ran `init`, so a block\n# never locks its operator out."
        );
    }
    let white_list = white_list.join(", ");
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
# Keep every received event, not only alerts (OSSEC's logall, off by
# default as in OSSEC). [retention] bounds it by age and by size.
logall = false

[global]
# Addresses and networks that are never blocked.{ssh_note}
white_list = [{white_list}]
# The circuit breaker: more new blocks than this on one agent within a
# minute stop new blocks there, raise an alert (rule 690) and wait for
# `palisadectl breaker reset AGENT`. 0 turns it off.
max_new_blocks_per_minute = 60

[ruleset]
# Palisade's own ruleset is built in. To judge with an existing OSSEC
# installation's decoders and rules instead:
# ossec_etc = "/var/ossec/etc"
# or a Wazuh 4.x ruleset/ directory, read in Wazuh's dialect (see
# docs/migrating-from-wazuh.md):
# wazuh_ruleset = "/var/ossec/ruleset"
# The rule language of every file, "ossec" (default) or "wazuh".
# dialect = "ossec"
# Local directories with decoders/*.xml and rules/*.xml, loaded after:
# dirs = ["/etc/palisade/local"]
# "arrival" correlates on the time events arrive (OSSEC); "event" on each
# line's own timestamp (for replaying old logs).
time_source = "arrival"
# How a frequency rule (e.g. 31151, many 4xx from one address) restarts its
# count after firing. OSSEC ("global") restarts it for every address, so a
# scanner whose burst overlaps another's firing can go unflagged;
# "per-source" restarts it only for the address it fired about.
barrier = "per-source"

[alerts]
# OSSEC's alerts.log; earlier days move to logs/alerts/YYYY/Mon/alerts-DD.log.
log_file = "logs/alerts/alerts.log"
# Wazuh-style JSON, one alert per line:
# json_file = "logs/alerts/alerts.json"
log_alert_level = 1

[retention]
# Prune old alerts and archived events in the background.
alerts_max_age = "90d"
archive_max_age = "30d"
archive_max_size = "10GiB"

[flow]
# Most events per second taken from one agent; a faster agent is slowed
# (its backlog waits in its spool and its files), never dropped. 0: no limit.
agent_events_per_second = 50000

[metrics]
# Prometheus /metrics over plain HTTP; off unless set.
# listen = "127.0.0.1:9514"

# Active responses, with OSSEC's concepts and names. Built-in commands:
# route-null (an unreachable route, through netlink), firewall-drop (an
# nftables set whose elements expire in the kernel), host-deny
# (/etc/hosts.deny). A script: [[command]] name = "...", executable =
# "/path/on/agents", expect = ["srcip"], timeout_allowed = true.
# Each response is named command + timeout, e.g. route-null600; that is the
# name palisadectl -L lists and -f takes.
[[active_response]]
command = "route-null"
# local: the agent that saw the event; server; defined-agent (+ agent_id); all
location = "local"
# Many 4xx from one address (web scan), sshd brute force.
rules_id = [31151, 5712, 5720]
timeout = "600s"
# The second and third block of the same address last longer.
repeated_offenders = ["30m", "2h"]

# E-mail notifications in OSSEC's layout (every key: deploy/manager.toml).
# [email]
# enabled = true
# smtp_server = "mail.example.net"
# tls = "starttls"                 # or "tls", or "none" for a local relay
# from = "palisade@example.net"
# to = ["ops@example.net"]
# email_alert_level = 7
# email_maxperhour = 12            # the rest go out as one digest per hour

[enrollment]
# Agents enroll with one-time tokens (palisade-manager token create;
# palisade-agent enroll) on a port of its own with server-authenticated TLS;
# the port above stays mutual TLS only. Off unless you turn it on.
enabled = false
listen = "{enroll_listen}"
# How long a new token is good for unless token create --ttl says.
token_ttl = "1h"
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
        assert_eq!(
            c.database.sqlite_path(),
            Some(Path::new("/etc/palisade/palisade.db"))
        );
        assert_eq!(c.white_list.len(), 2);
        assert_eq!(
            c.alert_files.log_file.as_deref(),
            Some(Path::new("/etc/palisade/logs/alerts/alerts.log"))
        );
        assert!(c.retention.enabled());
        assert_eq!(c.metrics.listen, None);
    }

    #[test]
    fn ruleset_dialect() {
        let dir = std::env::temp_dir();
        let base = dir.join("m.toml");
        let default = render_default("127.0.0.1:1514".parse().unwrap(), "127.0.0.1:1514");
        let parse = |body: &str| {
            let text = default.replacen("[ruleset]\n", &format!("[ruleset]\n{body}\n"), 1);
            ManagerConfig::parse(&text, &base)
        };
        assert_eq!(parse("").unwrap().ruleset.dialect(), RulesetDialect::Ossec);
        let c = parse("dialect = \"wazuh\"").unwrap();
        assert_eq!(c.ruleset.dialect(), RulesetDialect::Wazuh);
        let c = parse(&format!("wazuh_ruleset = {:?}", dir.display().to_string())).unwrap();
        assert_eq!(c.ruleset.dialect(), RulesetDialect::Wazuh);
        assert_eq!(c.ruleset.wazuh_ruleset.as_deref(), Some(dir.as_path()));
        let msg = parse("dialect = \"snort\"").unwrap_err().to_string();
        assert!(msg.contains("ruleset.dialect"), "{msg}");
        let msg = parse(&format!(
            "dialect = \"ossec\"\nwazuh_ruleset = {:?}",
            dir.display().to_string()
        ))
        .unwrap_err()
        .to_string();
        assert!(msg.contains("ruleset.wazuh_ruleset"), "{msg}");
        let msg = parse("dialect = \"wazuh\"\nossec_etc = \"/\"")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("ruleset.ossec_etc"), "{msg}");
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
        assert!(msg.contains("m.toml:3: "), "{msg}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = ManagerConfig::parse(
            "[server]\nlisten = \"nowhere\"\nadvertise = \"x\"\n[global]\nwhite_list = [\"10.0.0.0/8\", \"bogus\"]\n",
            Path::new("m.toml"),
        )
        .unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["server.listen", "server.advertise", "global.white_list[1]"],
            "{err}"
        );
        let lines: Vec<_> = err.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(2), Some(3), Some(5)], "{err}");
    }
}
