//! The client side of mutual TLS, as the agent (its stream) and
//! `palisadectl` (the control API) connect to the manager: the CA to trust,
//! the certificate and key to present, the name to verify, and the words
//! for a failure. Also the CA fingerprint that enrollment pins, printed
//! and read in one place.
//!
//! With TLS 1.3 a manager that refuses the client certificate says so only
//! on the first call, as a TLS alert buried in the transport error's
//! causes; [`error_chain`] and [`refused_certificate_alert`] dig it out.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Installs ring as the process's rustls provider (tonic and lettre would
/// otherwise disagree on one). Call first thing in `main`; a second call
/// does nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct TlsFileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// What a client presents and trusts.
#[derive(Debug, Clone, Copy)]
pub struct ClientIdentity<'a> {
    /// The CA that signed the manager's certificate (and ours).
    pub ca_cert: &'a Path,
    /// Our certificate.
    pub cert: &'a Path,
    /// Our private key.
    pub key: &'a Path,
    /// The name verified in the manager's certificate.
    pub server_name: &'a str,
}

impl ClientIdentity<'_> {
    /// Reads the files into tonic's client TLS configuration.
    pub fn tls_config(&self) -> Result<ClientTlsConfig, TlsFileError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsFileError {
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(self.ca_cert)?))
            .identity(Identity::from_pem(read(self.cert)?, read(self.key)?))
            .domain_name(self.server_name.to_string()))
    }
}

/// Why no endpoint could be made for a manager address.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The address is not `host:port`.
    #[error("manager address {address:?}: {reason}")]
    Address {
        /// As given.
        address: String,
        /// Why.
        reason: String,
    },
    /// tonic refused the TLS configuration.
    #[error("{0}")]
    Tls(String),
}

/// An endpoint for `host:port` over mutual TLS; the caller adds its
/// timeouts and keep-alives, then connects.
pub fn endpoint(address: &str, tls: ClientTlsConfig) -> Result<Endpoint, EndpointError> {
    Channel::from_shared(format!("https://{address}"))
        .map_err(|e| EndpointError::Address {
            address: address.to_string(),
            reason: e.to_string(),
        })?
        .tls_config(tls)
        .map_err(|e| EndpointError::Tls(error_chain(&e)))
}

/// An error and its causes on one line. tonic and hyper often repeat their
/// cause in their own text; a cause already said is not said again.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

/// The TLS alerts that mean "the server refused this client certificate".
const REFUSED_CERTIFICATE_ALERTS: &[&str] = &[
    "CertificateRequired",
    "UnknownCA",
    "BadCertificate",
    "CertificateUnknown",
    "CertificateRevoked",
    "CertificateExpired",
    "DecryptError",
];

/// The TLS alert in an error text (an [`error_chain`], with the debug form
/// of a `tonic::Status`, where the alert hides) that says the server
/// refused our certificate.
pub fn refused_certificate_alert(text: &str) -> Option<&'static str> {
    REFUSED_CERTIFICATE_ALERTS
        .iter()
        .copied()
        .find(|alert| text.contains(alert))
}

/// The SHA-256 fingerprint of a certificate (DER), as
/// `openssl x509 -noout -fingerprint -sha256` prints it: upper-case hex
/// pairs joined by colons.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    format_hex_pairs(digest.as_ref())
}

/// A SHA-256 digest in the form [`fingerprint`] prints.
pub fn format_fingerprint(digest: &[u8; 32]) -> String {
    format_hex_pairs(digest)
}

fn format_hex_pairs(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads a fingerprint in either form: `AB:CD:...` or `abcd...`, in any
/// case, optionally prefixed `sha256:`, `SHA256=` or `sha256 Fingerprint=`
/// (openssl's own output line).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let bad = || {
        format!(
            "--ca-fingerprint {s:?} is not a SHA-256 fingerprint (64 hex digits, with or without colons; `palisade-manager ca fingerprint` prints it)"
        )
    };
    let mut t = s.trim();
    if let Some((head, rest)) = t.split_once('=')
        && head.to_ascii_lowercase().contains("sha256")
    {
        t = rest;
    }
    if t.len() > 7 && t.is_char_boundary(7) && t[..7].eq_ignore_ascii_case("sha256:") {
        t = &t[7..];
    }
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn fingerprints_read_in_every_form() {
        let der = b"not really a certificate";
        let printed = fingerprint(der);
        assert_eq!(printed.len(), 32 * 3 - 1);
        let want = parse_fingerprint(&printed).unwrap();
        assert_eq!(format_fingerprint(&want), printed);
        let plain = printed.replace(':', "").to_lowercase();
        assert_eq!(parse_fingerprint(&plain).unwrap(), want);
        assert_eq!(
            parse_fingerprint(&format!("sha256 Fingerprint={printed}")).unwrap(),
            want
        );
        assert_eq!(parse_fingerprint(&format!("SHA256:{plain}")).unwrap(), want);
        assert!(parse_fingerprint(&plain[..62]).is_err());
        assert!(parse_fingerprint(&format!("{}zz", &plain[..62])).is_err());
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        assert!(parse_fingerprint("sha256é:").is_err());
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn chains_say_each_cause_once() {
        let e = Layer(
            "transport error: connection reset",
            Some(Box::new(Layer(
                "connection reset",
                Some(Box::new(Layer("received fatal alert: UnknownCA", None))),
            ))),
        );
        let chain = error_chain(&e);
        assert_eq!(
            chain,
            "transport error: connection reset: received fatal alert: UnknownCA"
        );
        assert_eq!(refused_certificate_alert(&chain), Some("UnknownCA"));
        assert_eq!(refused_certificate_alert("connection refused"), None);
    }

    #[test]
    fn unreadable_files_are_named() {
        let missing = Path::new("/nonexistent/ca.pem");
        let e = ClientIdentity {
            ca_cert: missing,
            cert: missing,
            key: missing,
            server_name: "localhost",
        }
        .tls_config()
        .unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/ca.pem: "), "{e}");
        assert!(matches!(
            endpoint("no port here/", ClientTlsConfig::new()),
            Err(EndpointError::Address { .. })
        ));
    }
}
