//! Agent enrollment with one-time tokens: `[enrollment]` in manager.toml,
//! `palisade-manager token create`, and the enrollment endpoint.
//!
//! In the manner of Wazuh's authd, but the agent's private key never leaves
//! the agent: `palisade-agent enroll` sends a certificate request with a
//! token, and the manager answers with a certificate it makes itself (the
//! agent role, the next agent id, the name the token or the agent gives)
//! for the request's public key.
//!
//! The endpoint is a port of its own (1515 by default, as authd's) with
//! server-authenticated TLS only, since an enrolling agent has no
//! certificate yet; the agents' port stays strictly mutual TLS. It presents
//! the CA certificate after the server certificate, so that an agent that
//! pins the CA by fingerprint finds it. It serves `EnrollmentService` and
//! nothing else.
//!
//! Enrollment is **off by default**: it opens a second port to the network,
//! and an operator who only uses `agent add` bundles should not get one by
//! upgrading. `init` writes the section with `enabled = false`;
//! `token create` says so when it is off. Tokens are 192 random bits, shown
//! once; the database keeps only their SHA-256. A token is spent in the
//! same transaction that registers the agent, and only when enrollment
//! succeeds; an unknown, used or expired token, or a name already taken, is
//! refused with the reason, to the agent and in the manager's log with the
//! peer's address.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use palisade_common::config::Problems;
use palisade_engine::escape::Escaped;
use palisade_proto::identity;
use palisade_proto::v1::enrollment_service_server::{EnrollmentService, EnrollmentServiceServer};
use palisade_proto::v1::{EnrollRequest, EnrollResponse};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::ManagerConfig;
use crate::pki::{CertificateAuthority, PkiError};
use crate::setup::SetupError;
use crate::store::{Store, StoreError, now_ms};

/// The default enrollment port (Wazuh authd's).
pub const DEFAULT_PORT: u16 = palisade_common::bundle::DEFAULT_ENROLL_PORT;
/// How long a token is good for when `--ttl` is not given.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The longest a token may live.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// `[enrollment]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnrollment {
    /// Serve the enrollment endpoint.
    #[serde(default)]
    enabled: bool,
    /// Where (default `0.0.0.0:1515`).
    listen: Option<String>,
    /// How long a new token is good for by default (e.g. `"1h"`).
    token_ttl: Option<String>,
}

/// The validated `[enrollment]` section.
#[derive(Debug, Clone)]
pub struct EnrollmentConfig {
    /// Serve the enrollment endpoint.
    pub enabled: bool,
    /// Where.
    pub listen: SocketAddr,
    /// Default lifetime of a new token.
    pub token_ttl: Duration,
}

impl Default for EnrollmentConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            token_ttl: DEFAULT_TOKEN_TTL,
        }
    }
}

/// Checks `[enrollment]`; problems go to `errors`, each naming its key.
pub fn compile(raw: RawEnrollment, _base: &Path, errors: &mut Problems) -> EnrollmentConfig {
    let mut config = EnrollmentConfig {
        enabled: raw.enabled,
        ..EnrollmentConfig::default()
    };
    if let Some(listen) = raw.listen {
        match listen.parse::<SocketAddr>() {
            Ok(a) => config.listen = a,
            Err(_) => errors.push(
                "enrollment.listen",
                format!("{listen:?} is not an address like \"0.0.0.0:1515\""),
            ),
        }
    }
    if let Some(ttl) = raw.token_ttl {
        match check_ttl(&ttl) {
            Ok(d) => config.token_ttl = d,
            Err(e) => errors.push("enrollment.token_ttl", e),
        }
    }
    config
}

/// Parses a token lifetime: more than nothing, at most 30 days.
pub fn check_ttl(text: &str) -> Result<Duration, String> {
    let d = palisade_common::units::parse_duration(text)?;
    if d.is_zero() || d > MAX_TOKEN_TTL {
        return Err(format!("{text:?} is not a token lifetime from 1s to 30d"));
    }
    Ok(d)
}

/// The SHA-256 the database keeps of a token (lower-case hex).
pub fn token_hash(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The CA's SHA-256 fingerprint, as agents pin it.
pub fn ca_fingerprint(ca_cert: &Path) -> Result<String, SetupError> {
    let der = crate::tls::load_certs(ca_cert)
        .map_err(|e| SetupError::Usage(e.to_string()))?
        .into_iter()
        .next()
        .ok_or_else(|| SetupError::Usage(format!("{}: no certificate", ca_cert.display())))?;
    Ok(palisade_common::tls::fingerprint(der.as_ref()))
}

/// A token just made; it is shown once.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The token.
    pub token: String,
    /// When it expires (ms).
    pub expires_at: i64,
    /// The agent name it is for, if given.
    pub name: Option<String>,
    /// The CA fingerprint agents pin.
    pub ca_fingerprint: String,
    /// host:port of the enrollment endpoint, from `advertise` and the
    /// enrollment port.
    pub enroll_address: String,
}

/// `token create`: a new one-time token, good for `ttl` (default from the
/// configuration), optionally only for agent `name`.
pub async fn create_token(
    config: &ManagerConfig,
    ttl: Option<Duration>,
    name: Option<&str>,
) -> Result<NewToken, SetupError> {
    if let Some(name) = name
        && !identity::is_valid_name(name)
    {
        return Err(SetupError::Usage(format!(
            "invalid agent name {name:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with - or .)"
        )));
    }
    let ttl = ttl.unwrap_or(config.enrollment.token_ttl);
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(SetupError::Usage(
            "--ttl must be from 1s to 30d".to_string(),
        ));
    }
    let ca_fingerprint = ca_fingerprint(&config.ca_cert)?;
    let bytes: [u8; 24] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let expires_at = now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    let store = Store::open(&config.database).await?;
    let result = store
        .insert_token(&token_hash(&token), name, expires_at)
        .await;
    store.close().await;
    result?;
    let host = config
        .advertise
        .rsplit_once(':')
        .map_or(config.advertise.as_str(), |(h, _)| h);
    Ok(NewToken {
        token,
        expires_at,
        name: name.map(str::to_string),
        ca_fingerprint,
        enroll_address: format!("{host}:{}", config.enrollment.listen.port()),
    })
}

/// The enrollment endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The CA (with its key) is needed to issue certificates.
    #[error("enrollment needs the CA key: {0}")]
    Ca(#[from] PkiError),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The running enrollment endpoint.
#[derive(Debug)]
pub struct Enrollment {
    task: JoinHandle<()>,
}

impl Enrollment {
    /// Waits (briefly) for the endpoint to close after shutdown.
    pub async fn stopped(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Starts the enrollment endpoint on `listener` (bound by the caller for
/// `[enrollment] listen`); it runs until `shutdown`.
pub fn start(
    config: &ManagerConfig,
    listener: tokio::net::TcpListener,
    store: Store,
    shutdown: CancellationToken,
) -> Result<Enrollment, EnrollError> {
    let ca = CertificateAuthority::load(&config.ca_cert, &config.ca_key)?;
    let tls = crate::tls::enrollment_server_config(&config.ca_cert, &config.cert, &config.key)?;
    let local = listener.local_addr().ok();
    let service = Enroller {
        store,
        ca: Arc::new(ca),
        manager_address: config.advertise.clone(),
        server_name: config.server_name.clone(),
    };
    let incoming = crate::tls::incoming_with(
        listener,
        tls,
        shutdown.clone(),
        explain_enrollment_handshake,
    );
    info!(listen = ?local, "Enrollment endpoint open.");
    let task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .timeout(Duration::from_secs(30))
            .add_service(EnrollmentServiceServer::new(service))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            error!(%error, "Enrollment endpoint failed.");
        }
    });
    Ok(Enrollment { task })
}

/// Why a handshake on the enrollment port failed, for the log.
fn explain_enrollment_handshake(error: &str) -> &'static str {
    if error.contains("UnknownCA") || error.contains("BadCertificate") {
        "the agent does not trust this manager's CA (wrong --ca-fingerprint or --ca-file?)"
    } else if error.contains("timed out") {
        "handshake timed out"
    } else {
        "TLS handshake failed"
    }
}

/// `EnrollmentService`.
struct Enroller {
    store: Store,
    ca: Arc<CertificateAuthority>,
    manager_address: String,
    server_name: String,
}

#[tonic::async_trait]
impl EnrollmentService for Enroller {
    async fn enroll(
        &self,
        request: tonic::Request<EnrollRequest>,
    ) -> Result<tonic::Response<EnrollResponse>, tonic::Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let request = request.into_inner();
        if request.token.trim().is_empty() {
            warn!(%peer, reason = "no token", "Refused enrollment.");
            return Err(tonic::Status::unauthenticated("no token was given"));
        }
        let requested = Some(request.name.as_str()).filter(|n| !n.is_empty());
        let ca = self.ca.clone();
        let csr = request.csr_der;
        let result = self
            .store
            .redeem_token(
                &token_hash(&request.token),
                requested,
                &request.hostname,
                &peer,
                |id, name| {
                    let cert = ca
                        .issue_agent_for_request(id, name, &csr)
                        .map_err(|e| e.to_string())?;
                    Ok((cert.serial.clone(), cert))
                },
            )
            .await;
        match result {
            Ok(agent) => {
                info!(%peer, agent = %agent.id, name = %Escaped(&agent.name), "Agent enrolled.");
                Ok(tonic::Response::new(EnrollResponse {
                    agent_id: agent.id,
                    agent_name: agent.name,
                    certificate_pem: agent.issued.cert_pem,
                    ca_pem: self.ca.cert_pem().to_string(),
                    manager_address: self.manager_address.clone(),
                    server_name: self.server_name.clone(),
                }))
            }
            Err(StoreError::NotFound(reason) | StoreError::Conflict(reason)) => {
                warn!(%peer, reason = %Escaped(&reason.to_string()), "Refused enrollment.");
                Err(tonic::Status::permission_denied(reason))
            }
            Err(error) => {
                error!(%peer, %error, "Enrollment failed.");
                Err(tonic::Status::internal(
                    "the manager could not register the agent; its log says why",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_checked() {
        let mut errors = Problems::new();
        let c = compile(RawEnrollment::default(), Path::new("."), &mut errors);
        assert!(!c.enabled);
        assert_eq!(c.listen.port(), 1515);
        assert_eq!(c.token_ttl, DEFAULT_TOKEN_TTL);
        assert!(errors.is_empty());

        let raw: RawEnrollment =
            toml::from_str("enabled = true\nlisten = \"127.0.0.1:2515\"\ntoken_ttl = \"10m\"")
                .unwrap();
        let c = compile(raw, Path::new("."), &mut errors);
        assert!(c.enabled);
        assert_eq!(c.listen.to_string(), "127.0.0.1:2515");
        assert_eq!(c.token_ttl, Duration::from_secs(600));
        assert!(errors.is_empty());

        let raw: RawEnrollment =
            toml::from_str("listen = \"nowhere\"\ntoken_ttl = \"90d\"").unwrap();
        compile(raw, Path::new("."), &mut errors);
        assert_eq!(
            errors.keys(),
            ["enrollment.listen", "enrollment.token_ttl"],
            "{errors:?}"
        );
    }

    #[test]
    fn tokens_hash_to_hex() {
        let h = token_hash("abc");
        assert_eq!(h.len(), 64);
        assert_eq!(h, token_hash(" abc\n"));
        assert_ne!(h, token_hash("abd"));
    }
}
