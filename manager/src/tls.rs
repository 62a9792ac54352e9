//! The manager's TLS endpoint: mutual TLS with client certificates
//! required, accepted by our own loop rather than tonic's so that every
//! refused handshake is logged with the peer address and the reason (tonic
//! drops them silently). Accepted streams keep their peer certificates, which
//! the services read through `Request::peer_certs`. The limits of
//! [`crate::connections`] apply here: connections held, unfinished
//! handshakes per address, the handshake timeout.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

use crate::connections::{ConnectionLimits, Handshakes, RefusalLog};

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
    without_resumption(&mut config);
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
    without_resumption(&mut config);
    Ok(Arc::new(config))
}

/// Every connection presents and proves its certificate: no session
/// tickets or session cache. Agents and `palisadectl` never resume (each
/// connection builds its TLS configuration afresh, to pick up a renewed
/// certificate), so rustls's default of two tickets after each handshake
/// was work for nothing on both sides: 2 % of the manager's CPU in a
/// reconnect storm of 10,000 agents, and an extra write to each.
fn without_resumption(config: &mut rustls::ServerConfig) {
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
}

/// Accepted, verified TLS connections for tonic's `serve_with_incoming`.
pub type Incoming = ReceiverStream<Result<TlsStream<Counted>, std::io::Error>>;

/// A connection counted against `[connections] max_connections` while it
/// is open: the count is given back when tonic drops the connection.
#[derive(Debug)]
pub struct Counted {
    tcp: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
    }
}

/// Accepts connections until `shutdown`, handshaking each in its own task
/// within `limits` and logging every refusal (summarised per address).
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
    limits: ConnectionLimits,
) -> Incoming {
    incoming_with(listener, config, shutdown, explain_handshake_error, limits)
}

/// [`incoming`], with `explain` turning handshake errors into the reasons
/// logged.
pub fn incoming_with(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
    explain: fn(&str) -> &'static str,
    limits: ConnectionLimits,
) -> Incoming {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Handshakes::default();
    let refusals = RefusalLog::default();
    tokio::spawn(refusals.clone().run("connections", shutdown.clone()));
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
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                refuse(
                    &refusals,
                    peer,
                    "the manager holds [connections] max_connections already",
                    "",
                );
                continue;
            };
            let Some(slot) = handshakes.begin(peer.ip(), limits.max_handshakes_per_address) else {
                refuse(
                    &refusals,
                    peer,
                    "too many unfinished handshakes from this address ([connections] max_handshakes_per_address)",
                    "",
                );
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let refusals = refusals.clone();
            let counted = Counted {
                tcp,
                _permit: permit,
            };
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(
                    limits.handshake_timeout,
                    acceptor.accept(counted).into_fallible(),
                )
                .await;
                drop(slot);
                match handshake {
                    Ok(Ok(stream)) => {
                        debug!(%peer, "TLS connection accepted.");
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err((error, counted))) => {
                        let error = error.to_string();
                        refuse(&refusals, peer, explain(&error), &error);
                        linger(counted.tcp).await;
                    }
                    Err(_) => refuse(
                        &refusals,
                        peer,
                        explain("handshake timed out"),
                        "handshake timed out",
                    ),
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

/// Logs a refused connection: in full the first time in a minute for
/// its address and reason, then only counted ([`RefusalLog`]).
fn refuse(refusals: &RefusalLog, peer: SocketAddr, reason: &'static str, error: &str) {
    if refusals.refused(peer.ip(), reason) {
        warn!(%peer, %reason, %error, "Refused TLS connection.");
    } else {
        debug!(%peer, %reason, %error, "Refused TLS connection.");
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::setup::{InitOptions, init};
    use rustls::HandshakeKind;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Two connections of one client configuration (which keeps what the
    /// server offers for resumption) to `server`; each answers with a few
    /// bytes, read after the handshake, so that anything the server sent
    /// after its handshake (tickets) reached the client first. Returns
    /// the second connection's handshake, as the client saw it.
    async fn second_handshake(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> HandshakeKind {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(server);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = acceptor.accept(tcp).await.unwrap();
                tls.write_all(b"hi").await.unwrap();
                tls.flush().await.unwrap();
                let mut rest = Vec::new();
                let _ = tls.read_to_end(&mut rest).await;
            }
        });
        let connector = tokio_rustls::TlsConnector::from(client);
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut kind = None;
        for _ in 0..2 {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
            let mut hi = [0u8; 2];
            tls.read_exact(&mut hi).await.unwrap();
            kind = tls.get_ref().1.handshake_kind();
            tls.shutdown().await.unwrap();
        }
        kind.unwrap()
    }

    #[tokio::test]
    async fn every_connection_proves_its_certificate_again() {
        palisade_common::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        init(&InitOptions {
            dir: dir.path().to_path_buf(),
            sans: vec![],
            listen: "127.0.0.1:1514".parse().unwrap(),
            advertise: None,
            force: false,
        })
        .await
        .unwrap();
        let (pki, operator) = (dir.path().join("pki"), dir.path().join("operator"));
        let server = server_config(
            &pki.join("ca.pem"),
            &pki.join("manager.pem"),
            &pki.join("manager.key"),
        )
        .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(load_certs(&pki.join("ca.pem")).unwrap());
        // rustls's default: sessions kept in memory, offered again.
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                load_certs(&operator.join("operator.pem")).unwrap(),
                load_key(&operator.join("operator.key")).unwrap(),
            )
            .unwrap();
        assert_eq!(
            second_handshake(server, Arc::new(client)).await,
            HandshakeKind::Full,
            "the second connection resumed the first one's session"
        );
    }
}
