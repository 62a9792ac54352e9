//! The manager's TLS endpoint: mutual TLS with client certificates
//! required, accepted by our own loop rather than tonic's so that every
//! refused handshake is logged with the peer address and the reason (tonic
//! drops them silently). Accepted streams keep their peer certificates, which
//! the services read through `Request::peer_certs`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing or unreadable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in file"));
    }
    Ok(certs)
}

/// Reads a private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

/// The server's rustls configuration: our certificate, client
/// certificates required and verified against our CA, HTTP/2 only.
pub fn server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots.add(c)?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The enrollment endpoint's rustls configuration: our certificate
/// followed by the CA's (agents that pin the CA by fingerprint find it in
/// the chain), no client certificates (enrolling agents have none yet),
/// HTTP/2 only.
pub fn enrollment_server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut chain = load_certs(cert)?;
    chain.extend(load_certs(ca)?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, load_key(key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepted, verified TLS connections for tonic's `serve_with_incoming`.
pub type Incoming = ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

/// Accepts connections until `shutdown`, handshaking each in its own task
/// and logging every refusal.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> Incoming {
    incoming_with(listener, config, shutdown, explain_handshake_error)
}

/// [`incoming`], with `explain` turning handshake errors into the reasons
/// logged.
pub fn incoming_with(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
    explain: fn(&str) -> &'static str,
) -> Incoming {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(error) => {
                    warn!(%error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp).into_fallible())
                    .await
                {
                    Ok(Ok(stream)) => {
                        debug!(%peer, "TLS connection accepted.");
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err((error, tcp))) => {
                        log_refusal(peer, &error.to_string(), explain);
                        linger(tcp).await;
                    }
                    Err(_) => log_refusal(peer, "handshake timed out", explain),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Closes a refused connection gently: our alert has been written; send
/// FIN and drain what the client still sends, so that the kernel does not
/// answer with a reset that would destroy the alert before the client
/// reads the reason.
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

fn log_refusal(peer: SocketAddr, error: &str, explain: fn(&str) -> &'static str) {
    let reason = explain(error);
    warn!(%peer, %reason, %error, "Refused TLS connection.");
}

/// Turns a rustls handshake error into an operator's reason.
pub fn explain_handshake_error(error: &str) -> &'static str {
    if error.contains("peer sent no certificates") || error.contains("NoCertificatesPresented") {
        "no client certificate"
    } else if error.contains("UnknownIssuer") || error.contains("BadSignature") {
        "client certificate not issued by this manager's CA"
    } else if error.contains("Expired") {
        "client certificate expired"
    } else if error.contains("NotValidYet") {
        "client certificate not yet valid"
    } else if error.contains("InvalidPurpose") {
        "certificate not meant for client authentication"
    } else if error.contains("timed out") {
        "handshake timed out"
    } else {
        "TLS handshake failed"
    }
}
