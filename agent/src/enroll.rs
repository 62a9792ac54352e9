//! `palisade-agent enroll`: get this agent's identity from the manager
//! with a one-time token, without a private key ever leaving this host.
//!
//! The agent makes an ECDSA P-256 key here, connects to the manager's
//! enrollment port (server-authenticated TLS only: the agent has no
//! certificate yet) and sends a certificate request with the token. The
//! manager answers with the agent's id and certificate. The result is the
//! same directory `palisade-manager agent add` writes: `agent.toml`,
//! `agent.pem`, `agent.key` (0600) and `ca.pem`.
//!
//! # Trusting the manager
//!
//! The manager's CA is pinned before the token is sent: either by its
//! SHA-256 fingerprint (`--ca-fingerprint`, which the manager prints at
//! `init`, `token create` and `ca fingerprint`) or by a copy of its
//! certificate (`--ca-file`). With a fingerprint, the CA is looked up among
//! the certificates the manager presents on the enrollment port; either
//! way the manager's certificate must chain to that CA, be meant for server
//! authentication and carry the manager role (`urn:palisade:manager`). Host
//! names are not checked: only the manager's server certificate carries that
//! role under this private CA, and agents often enroll by an address the
//! certificate does not list. A manager that fails any of this is refused
//! during the handshake, so the token never reaches it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use palisade_proto::identity::{self, Role};
use palisade_proto::v1::EnrollRequest;
use palisade_proto::v1::enrollment_service_client::EnrollmentServiceClient;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use palisade_common::bundle::{DEFAULT_ENROLL_PORT, render_agent_config};
use palisade_common::tls::{error_chain, fingerprint, format_fingerprint};

/// How long connecting and the whole exchange may take.
const TIMEOUT: Duration = Duration::from_secs(15);

/// How the agent recognises the manager's CA.
#[derive(Debug, Clone)]
pub enum CaPin {
    /// The SHA-256 of the CA certificate's DER.
    Fingerprint([u8; 32]),
    /// A copy of the CA certificate (PEM).
    File(PathBuf),
}

/// What `enroll` needs.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// The manager's enrollment endpoint, host:port.
    pub manager: String,
    /// The one-time token.
    pub token: String,
    /// The name to ask for (else the token's, else the host name).
    pub name: Option<String>,
    /// The manager's CA.
    pub pin: CaPin,
    /// Where the identity goes.
    pub dir: PathBuf,
    /// Replace an identity already in `dir`.
    pub force: bool,
}

/// What `enroll` made.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The id the manager gave.
    pub id: String,
    /// The name it registered.
    pub name: String,
    /// The written `agent.toml`.
    pub config: PathBuf,
    /// Where the agent will connect (the manager's mutual-TLS port).
    pub manager_address: String,
}

/// Why enrollment failed; each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Bad arguments or a directory that must not be overwritten (exit 64).
    #[error("{0}")]
    Usage(String),
    /// The manager could not be reached.
    #[error("cannot reach the manager at {address}: {reason}")]
    Connect {
        /// The address tried.
        address: String,
        /// Why.
        reason: String,
    },
    /// The manager failed the CA pin; the token was not sent.
    #[error("refusing the manager at {address}: {reason}; the token was not sent")]
    Untrusted {
        /// The address tried.
        address: String,
        /// What did not match.
        reason: String,
    },
    /// The manager refused the request (token unknown, used or expired,
    /// name taken).
    #[error("the manager refused enrollment: {0}")]
    Refused(String),
    /// The answer cannot be used.
    #[error("the manager's answer is unusable: {0}")]
    BadAnswer(String),
    /// A file could not be written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl EnrollError {
    /// Whether this is a usage error (exit 64) rather than a failure (1).
    pub fn is_usage(&self) -> bool {
        matches!(self, EnrollError::Usage(_))
    }
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> EnrollError {
    EnrollError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The files of an agent identity, as `agent add` writes them.
const IDENTITY_FILES: [&str; 4] = ["agent.toml", "agent.pem", "agent.key", "ca.pem"];

/// Enrolls this agent: checks everything that can be checked locally,
/// then connects, verifies the manager against the pin, sends the request
/// and writes the identity to `options.dir`.
pub async fn enroll(options: &EnrollOptions) -> Result<Enrolled, EnrollError> {
    if options.token.trim().is_empty() {
        return Err(EnrollError::Usage(
            "--token is empty; `palisade-manager token create` prints one".into(),
        ));
    }
    if let Some(name) = &options.name
        && !identity::is_valid_name(name)
    {
        return Err(EnrollError::Usage(format!(
            "invalid agent name {name:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with - or .)"
        )));
    }
    if !options.force {
        for file in IDENTITY_FILES {
            let path = options.dir.join(file);
            if path.exists() {
                return Err(EnrollError::Usage(format!(
                    "{} already holds an agent identity ({file}); use --force to replace it",
                    options.dir.display()
                )));
            }
        }
    }
    let pin = match &options.pin {
        CaPin::Fingerprint(f) => Pinned::Fingerprint(*f),
        CaPin::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| EnrollError::Usage(format!("--ca-file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(EnrollError::Usage(format!(
                    "--ca-file {}: no certificate in file",
                    path.display()
                )));
            }
            Pinned::Roots(certs)
        }
    };

    std::fs::create_dir_all(&options.dir).map_err(|e| file_error(&options.dir, e))?;
    let key = rcgen::KeyPair::generate()
        .map_err(|e| EnrollError::BadAnswer(format!("cannot make a key: {e}")))?;
    // The key is written before the token is spent, so an unwritable
    // directory fails here and the token stays good.
    let key_path = options.dir.join("agent.key");
    let pending_key = options.dir.join(".agent.key.pending");
    write_file(&pending_key, &key.serialize_pem(), 0o600)?;
    let result = request(options, pin, &key).await;
    let answer = match result {
        Ok(answer) => answer,
        Err(e) => {
            let _ = std::fs::remove_file(&pending_key);
            return Err(e);
        }
    };
    write_file(&options.dir.join("ca.pem"), &answer.ca_pem, 0o644)?;
    write_file(&options.dir.join("agent.pem"), &answer.cert_pem, 0o644)?;
    std::fs::rename(&pending_key, &key_path).map_err(|e| file_error(&key_path, e))?;
    let config = options.dir.join("agent.toml");
    write_file(
        &config,
        &render_agent_config(&answer.manager_address, &answer.server_name),
        0o644,
    )?;
    Ok(Enrolled {
        id: answer.id,
        name: answer.name,
        config,
        manager_address: answer.manager_address,
    })
}

/// A checked answer from the manager.
struct Answer {
    id: String,
    name: String,
    cert_pem: String,
    ca_pem: String,
    manager_address: String,
    server_name: String,
}

async fn request(
    options: &EnrollOptions,
    pin: Pinned,
    key: &rcgen::KeyPair,
) -> Result<Answer, EnrollError> {
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|params| params.serialize_request(key))
        .map_err(|e| EnrollError::BadAnswer(format!("cannot make a certificate request: {e}")))?;
    let address = options.manager.clone();
    let verifier = Arc::new(PinnedCa::new(pin));
    let channel = connect(&address, verifier.clone()).await?;
    let request = EnrollRequest {
        token: options.token.trim().to_string(),
        name: options.name.clone().unwrap_or_default(),
        csr_der: csr.der().to_vec(),
        hostname: hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
    };
    let mut client = EnrollmentServiceClient::new(channel);
    let call = client.enroll(request);
    let response = match tokio::time::timeout(TIMEOUT, call).await {
        Err(_) => {
            return Err(EnrollError::Connect {
                address,
                reason: "no answer in time".into(),
            });
        }
        Ok(Err(status)) => return Err(status_error(&address, status)),
        Ok(Ok(r)) => r.into_inner(),
    };
    let ca_der = verifier.ca().ok_or_else(|| {
        EnrollError::BadAnswer("the manager's CA was not seen during the handshake".into())
    })?;
    let ca_pem = match &options.pin {
        CaPin::File(path) => std::fs::read_to_string(path).map_err(|e| file_error(path, e))?,
        // The CA the manager sends must be the one the handshake was
        // verified against.
        CaPin::Fingerprint(_) => {
            let sent = CertificateDer::from_pem_slice(response.ca_pem.as_bytes())
                .map_err(|e| EnrollError::BadAnswer(format!("CA certificate: {e}")))?;
            if sent.as_ref() != ca_der.as_ref() {
                return Err(EnrollError::BadAnswer(
                    "the CA certificate sent is not the one pinned".into(),
                ));
            }
            response.ca_pem.clone()
        }
    };
    check_certificate(&response.certificate_pem, &response.agent_id, key)?;
    if response.manager_address.is_empty() {
        return Err(EnrollError::BadAnswer("no manager address".into()));
    }
    Ok(Answer {
        id: response.agent_id,
        name: response.agent_name,
        cert_pem: response.certificate_pem,
        ca_pem,
        manager_address: response.manager_address,
        server_name: response.server_name,
    })
}

/// The issued certificate must name the agent id we were given, as an
/// agent, for the key we made.
fn check_certificate(cert_pem: &str, id: &str, key: &rcgen::KeyPair) -> Result<(), EnrollError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| EnrollError::BadAnswer(format!("certificate: {e}")))?;
    let identity = identity::identity_from_der(der.as_ref())
        .map_err(|e| EnrollError::BadAnswer(e.to_string()))?;
    match identity.role {
        Role::Agent { id: ref got, .. } if got == id => {}
        other => {
            return Err(EnrollError::BadAnswer(format!(
                "the certificate names {other}, not agent {id}"
            )));
        }
    }
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref())
        .map_err(|e| EnrollError::BadAnswer(format!("certificate: {e}")))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(EnrollError::BadAnswer(
            "the certificate is not for the key this agent made".into(),
        ));
    }
    Ok(())
}

fn status_error(address: &str, status: tonic::Status) -> EnrollError {
    match status.code() {
        tonic::Code::PermissionDenied
        | tonic::Code::InvalidArgument
        | tonic::Code::AlreadyExists
        | tonic::Code::FailedPrecondition
        | tonic::Code::Unauthenticated => EnrollError::Refused(status.message().to_string()),
        tonic::Code::Unimplemented => EnrollError::Connect {
            address: address.to_string(),
            reason:
                "that port does not offer enrollment (the agents' port is 1514, enrollment 1515)"
                    .into(),
        },
        _ => EnrollError::Connect {
            address: address.to_string(),
            reason: error_chain(&status),
        },
    }
}

/// TCP, then the TLS handshake with the pinned verifier, then HTTP/2 on
/// that one connection. Nothing is sent over HTTP/2 before the handshake
/// has verified the manager.
async fn connect(
    address: &str,
    verifier: Arc<PinnedCa>,
) -> Result<tonic::transport::Channel, EnrollError> {
    let connect_error = |reason: String| EnrollError::Connect {
        address: address.to_string(),
        reason,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| connect_error(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let host = host_of(address)
        .ok_or_else(|| EnrollError::Usage(format!("--manager {address:?} is not HOST:PORT")))?;
    // SNI only; names are not what is verified (see the module docs).
    let server_name = ServerName::try_from(host.to_string()).map_err(|_| {
        EnrollError::Usage(format!(
            "--manager {address:?}: {host:?} is not a host name or address"
        ))
    })?;
    let tcp = match tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(address)).await {
        Err(_) => return Err(connect_error("timed out".into())),
        Ok(Err(e)) => return Err(connect_error(e.to_string())),
        Ok(Ok(tcp)) => tcp,
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = match tokio::time::timeout(TIMEOUT, connector.connect(server_name, tcp)).await {
        Err(_) => return Err(connect_error("TLS handshake timed out".into())),
        Ok(Err(e)) => {
            return Err(match verifier.problem() {
                Some(reason) => EnrollError::Untrusted {
                    address: address.to_string(),
                    reason,
                },
                None => connect_error(format!("TLS handshake failed: {e}")),
            });
        }
        Ok(Ok(tls)) => tls,
    };
    let slot = Arc::new(Mutex::new(Some(tls)));
    let connector = OneShot(slot);
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| EnrollError::Usage(format!("--manager {address:?}: {e}")))?
        .connect_with_connector(connector)
        .await
        .map_err(|e| connect_error(error_chain(&e)))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A connector that hands tonic the one verified connection.
#[derive(Clone)]
struct OneShot(Arc<Mutex<Option<Tls>>>);

impl tonic::codegen::Service<tonic::codegen::http::Uri> for OneShot {
    type Response = hyper_util::rt::TokioIo<Tls>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let stream = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        std::future::ready(
            stream.map(hyper_util::rt::TokioIo::new).ok_or_else(|| {
                std::io::Error::other("the verified enrollment connection was closed")
            }),
        )
    }
}

/// The host part of host:port (`[::1]:1515` gives `::1`).
fn host_of(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// What the verifier trusts.
#[derive(Debug, Clone)]
enum Pinned {
    Fingerprint([u8; 32]),
    Roots(Vec<CertificateDer<'static>>),
}

/// Verifies the manager against the pinned CA and remembers the CA it
/// found, or why it refused.
#[derive(Debug)]
struct PinnedCa {
    pin: Pinned,
    provider: Arc<CryptoProvider>,
    found: Mutex<Option<CertificateDer<'static>>>,
    problem: Mutex<Option<String>>,
}

impl PinnedCa {
    fn new(pin: Pinned) -> Self {
        Self {
            pin,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            found: Mutex::new(None),
            problem: Mutex::new(None),
        }
    }

    fn ca(&self) -> Option<CertificateDer<'static>> {
        self.found
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn refuse(&self, reason: String, error: rustls::CertificateError) -> rustls::Error {
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
        rustls::Error::InvalidCertificate(error)
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let candidates: Vec<CertificateDer<'static>> = match &self.pin {
            Pinned::Fingerprint(want) => {
                let found = intermediates
                    .iter()
                    .find(|c| ring::digest::digest(&ring::digest::SHA256, c).as_ref() == want);
                match found {
                    Some(ca) => vec![ca.clone().into_owned()],
                    None => {
                        let presented = match intermediates.last() {
                            Some(ca) => format!("its CA has fingerprint {}", fingerprint(ca)),
                            None => format!(
                                "it presented no CA certificate: is this the enrollment port ({DEFAULT_ENROLL_PORT} by default) and not the agents' port?"
                            ),
                        };
                        return Err(self.refuse(
                            format!(
                                "its CA does not match --ca-fingerprint {} ({presented})",
                                format_fingerprint(want)
                            ),
                            rustls::CertificateError::UnknownIssuer,
                        ));
                    }
                }
            }
            Pinned::Roots(roots) => roots.clone(),
        };
        let mut roots = RootCertStore::empty();
        for ca in &candidates {
            roots.add(ca.clone()).map_err(|e| {
                self.refuse(
                    format!("the pinned CA is unusable: {e}"),
                    rustls::CertificateError::BadEncoding,
                )
            })?;
        }
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity).map_err(|e| {
            self.refuse(
                format!("its certificate cannot be read: {e}"),
                rustls::CertificateError::BadEncoding,
            )
        })?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )
        .map_err(|e| {
            self.refuse(
                format!("its certificate does not chain to the pinned CA ({e})"),
                rustls::CertificateError::UnknownIssuer,
            )
        })?;
        match identity::identity_from_der(end_entity.as_ref()) {
            Ok(id) if id.role == Role::Manager => {}
            _ => {
                return Err(self.refuse(
                    "its certificate is not a Palisade manager certificate".into(),
                    rustls::CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        // With a CA file the chain may not include the CA; the file is it.
        let ca = match &self.pin {
            Pinned::Fingerprint(_) => candidates.into_iter().next(),
            Pinned::Roots(roots) => roots.first().cloned(),
        };
        *self.found.lock().unwrap_or_else(PoisonError::into_inner) = ca;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Writes a file with `mode` from the moment it exists, replacing any.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), EnrollError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_error(path, e)),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| file_error(path, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addresses() {
        assert_eq!(
            host_of("manager.example.net:1515"),
            Some("manager.example.net")
        );
        assert_eq!(host_of("[::1]:1515"), Some("::1"));
        assert_eq!(host_of("10.0.0.1:1515"), Some("10.0.0.1"));
        assert_eq!(host_of("nohost"), None);
        assert_eq!(host_of(":1515"), None);
    }
}
