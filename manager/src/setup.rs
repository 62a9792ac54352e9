//! Setting a manager up on disk: `init` (CA, server certificate, the first
//! operator's bundle, `manager.toml`, database) and agent registration (`agent add`
//! writes a bundle an agent can run from; `agent remove` revokes it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use palisade_proto::identity;

use crate::config::{self, ManagerConfig};
use crate::pki::{self, CertificateAuthority, PkiError};
use crate::store::{Store, StoreError};

/// A setup step failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Bad input from the operator (exit 64).
    #[error("{0}")]
    Usage(String),
    /// Certificates or files.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Creating a directory.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// What `init` needs to know.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Where everything goes.
    pub dir: PathBuf,
    /// Extra names and addresses for the server certificate.
    pub sans: Vec<String>,
    /// The listen address written to `manager.toml`.
    pub listen: SocketAddr,
    /// host:port for agent bundles; derived from `listen` when absent.
    pub advertise: Option<String>,
    /// Overwrite an existing setup.
    pub force: bool,
}

/// What `init` made.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The configuration file.
    pub config: PathBuf,
    /// The operator's `ctl.toml`.
    pub ctl_config: PathBuf,
    /// The database.
    pub database: crate::store::StoreLocation,
    /// The address of the operator's SSH session, white-listed.
    pub ssh_client: Option<std::net::IpAddr>,
}

/// The client address of the SSH session this process runs in, from
/// `SSH_CONNECTION` ("client port server port") or the older `SSH_CLIENT`
/// ("client port port"); `None` outside SSH or when it does not parse.
pub fn ssh_session_client(
    ssh_connection: Option<&str>,
    ssh_client: Option<&str>,
) -> Option<std::net::IpAddr> {
    [ssh_connection, ssh_client]
        .into_iter()
        .flatten()
        .find_map(|v| palisade_common::address::parse_ip(v.split_whitespace().next()?).ok())
}

fn mkdir(path: &Path) -> Result<(), SetupError> {
    std::fs::create_dir_all(path).map_err(|source| SetupError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// This machine's host name, or `localhost`.
pub fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Creates a manager in `options.dir`.
pub async fn init(options: &InitOptions) -> Result<InitReport, SetupError> {
    let dir = &options.dir;
    let config_path = dir.join("manager.toml");
    let pki_dir = dir.join("pki");
    if !options.force && (config_path.exists() || pki_dir.join("ca.pem").exists()) {
        return Err(SetupError::Usage(format!(
            "{} already holds a Palisade manager; use --force to replace it (its CA, certificates and database are overwritten)",
            dir.display()
        )));
    }
    mkdir(&pki_dir)?;
    let host = host_name();
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        host.clone(),
    ];
    for san in &options.sans {
        if !names.contains(san) {
            names.push(san.clone());
        }
    }
    names.dedup();
    let (ca, ca_key) = CertificateAuthority::generate(&format!("Palisade CA ({host})"))?;
    pki::write_public(&pki_dir.join("ca.pem"), ca.cert_pem())?;
    pki::write_private(&pki_dir.join("ca.key"), &ca_key)?;
    let server = ca.issue_server(&names)?;
    pki::write_public(&pki_dir.join("manager.pem"), &server.cert_pem)?;
    pki::write_private(&pki_dir.join("manager.key"), &server.key_pem)?;

    let advertise = options.advertise.clone().unwrap_or_else(|| {
        if options.listen.ip().is_unspecified() {
            format!("{host}:{}", options.listen.port())
        } else {
            options.listen.to_string()
        }
    });
    let ssh_client = ssh_session_client(
        std::env::var("SSH_CONNECTION").ok().as_deref(),
        std::env::var("SSH_CLIENT").ok().as_deref(),
    );
    pki::write_public(
        &config_path,
        &config::render_with_white_list(options.listen, &advertise, ssh_client),
    )?;
    let config = ManagerConfig::load(&config_path)?;

    let operator_dir = dir.join("operator");
    mkdir(&operator_dir)?;
    let operator = ca.issue_operator("admin")?;
    pki::write_public(&operator_dir.join("ca.pem"), ca.cert_pem())?;
    pki::write_public(&operator_dir.join("operator.pem"), &operator.cert_pem)?;
    pki::write_private(&operator_dir.join("operator.key"), &operator.key_pem)?;
    let ctl_config = operator_dir.join("ctl.toml");
    pki::write_public(
        &ctl_config,
        &render_ctl_config(&advertise, &config.server_name),
    )?;

    if let Some(database) = config
        .database
        .sqlite_path()
        .filter(|p| options.force && p.exists())
    {
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", database.display()));
            let _ = std::fs::remove_file(p);
        }
    }
    let store = Store::open(&config.database).await?;
    let registered = store
        .add_operator("admin", || Ok((operator.serial.clone(), ())))
        .await;
    store.close().await;
    registered?;
    Ok(InitReport {
        config: config_path,
        ctl_config,
        database: config.database,
        ssh_client,
    })
}

/// The `ctl.toml` of an operator bundle.
pub(crate) fn render_ctl_config(address: &str, server_name: &str) -> String {
    format!(
        r#"# palisadectl configuration. Relative paths are relative to this file.
manager = "{address}"
server_name = "{server_name}"
ca_cert = "ca.pem"
cert = "operator.pem"
key = "operator.key"
"#
    )
}

/// What `agent add` made.
#[derive(Debug, Clone)]
pub struct AgentBundle {
    /// The new id.
    pub id: String,
    /// The agent's name.
    pub name: String,
    /// The bundle directory.
    pub dir: PathBuf,
    /// Its `agent.toml`.
    pub config: PathBuf,
}

/// Registers an agent and writes its bundle (CA, certificate, key,
/// `agent.toml`) to `out`, or to `agents/<id>-<name>` beside the config.
pub async fn add_agent(
    config: &ManagerConfig,
    name: &str,
    ip: Option<&str>,
    out: Option<&Path>,
) -> Result<AgentBundle, SetupError> {
    if !identity::is_valid_name(name) {
        return Err(SetupError::Usage(format!(
            "invalid agent name {name:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with - or .)"
        )));
    }
    let ip = match ip {
        None => "any".to_string(),
        Some("any") => "any".to_string(),
        Some(v) => palisade_common::network::parse_network(v)
            .map(|n| n.to_string())
            .map_err(|e| SetupError::Usage(format!("--ip {e}")))?,
    };
    let ca = CertificateAuthority::load(&config.ca_cert, &config.ca_key)?
        .with_clock(config.clock.clone());
    let store = Store::open(&config.database).await?;
    let result = store
        .add_agent(name, &ip, |id| {
            let cert = ca.issue_agent(id, name).map_err(|e| e.to_string())?;
            Ok((cert.serial.clone(), cert))
        })
        .await;
    store.close().await;
    let (id, cert) = result?;
    let base = config.source.parent().unwrap_or(Path::new("."));
    let dir = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| base.join("agents").join(format!("{id}-{name}")));
    mkdir(&dir)?;
    pki::write_public(&dir.join("ca.pem"), ca.cert_pem())?;
    pki::write_public(&dir.join("agent.pem"), &cert.cert_pem)?;
    pki::write_private(&dir.join("agent.key"), &cert.key_pem)?;
    let agent_toml = dir.join("agent.toml");
    pki::write_public(
        &agent_toml,
        &palisade_common::bundle::render_agent_config(&config.advertise, &config.server_name),
    )?;
    Ok(AgentBundle {
        id,
        name: name.to_string(),
        dir,
        config: agent_toml,
    })
}

/// Removes an agent; its certificate is refused from then on, also on a
/// stream that is already open (the running manager notices within a
/// second).
pub async fn remove_agent(config: &ManagerConfig, id: &str) -> Result<String, SetupError> {
    if !identity::is_valid_agent_id(id) {
        return Err(SetupError::Usage(format!(
            "invalid agent id {id:?}: ids are three or more digits, e.g. 001"
        )));
    }
    let store = Store::open(&config.database).await?;
    let result = store.remove_agent(id, "removed by operator").await;
    store.close().await;
    Ok(result?.name)
}
