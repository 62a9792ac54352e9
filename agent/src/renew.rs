//! Certificate renewal: once two thirds of the certificate's lifetime have
//! passed (by the agent's [`Clock`]), the agent makes a new key and asks
//! the manager for a certificate for it over its authenticated stream. The
//! answer is checked (this agent's identity, this new key) and installed in
//! place of `agent.key` and `agent.pem`; the agent then reconnects with it,
//! and the manager revokes the old certificate on that connection.
//!
//! Installing is two renames, key first: the files are written beside
//! their targets as `*.renewed`, synced, then renamed. A crash between the
//! renames leaves the new key with a `agent.pem.renewed` still waiting,
//! which [`recover`] finishes before the next connection; a crash before
//! them leaves both `*.renewed` files, which are discarded (the manager
//! keeps the old certificate until the new one is used, and the agent asks
//! again).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use palisade_common::clock::Clock;
use palisade_proto::identity::{self, Role};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why renewing failed; the agent keeps its certificate and tries again.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// The certificate in use cannot be read.
    #[error("{path}: {reason}")]
    Current {
        /// The certificate file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A key or a request could not be made.
    #[error("cannot make a key and request: {0}")]
    Key(String),
    /// The manager's certificate is not for this agent and key.
    #[error("the renewed certificate is unusable: {0}")]
    BadAnswer(String),
    /// A file could not be written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// When a certificate valid from `not_before` to `not_after` (ms) is due
/// for renewal: two thirds into its lifetime.
pub fn due_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before).max(0) / 3 * 2
}

/// The certificate in use: its identity and when it is due for renewal.
#[derive(Debug, Clone)]
pub struct Current {
    /// The agent it names.
    pub role: Role,
    /// When it expires (ms).
    pub not_after: i64,
    /// When to renew it (ms).
    pub due: i64,
}

impl Current {
    /// Reads the certificate at `path`.
    pub fn read(path: &Path) -> Result<Self, RenewError> {
        let current = |reason: String| RenewError::Current {
            path: path.display().to_string(),
            reason,
        };
        let der = CertificateDer::from_pem_file(path).map_err(|e| current(e.to_string()))?;
        let id = identity::identity_from_der(der.as_ref()).map_err(|e| current(e.to_string()))?;
        let (not_before, not_after) =
            identity::validity_from_der(der.as_ref()).map_err(|e| current(e.to_string()))?;
        Ok(Self {
            role: id.role,
            not_after,
            due: due_at(not_before, not_after),
        })
    }

    /// Whether it is due by `clock`.
    pub fn is_due(&self, clock: &dyn Clock) -> bool {
        clock.now_ms() >= self.due
    }
}

/// A new key and the request for it, waiting for the manager's answer.
pub struct Pending {
    key: rcgen::KeyPair,
    /// The PKCS#10 request (DER).
    pub csr_der: Vec<u8>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl Pending {
    /// A new ECDSA P-256 key and a request for it.
    pub fn new() -> Result<Self, RenewError> {
        let key = rcgen::KeyPair::generate().map_err(|e| RenewError::Key(e.to_string()))?;
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .and_then(|params| params.serialize_request(&key))
            .map_err(|e| RenewError::Key(e.to_string()))?;
        Ok(Self {
            csr_der: csr.der().to_vec(),
            key,
        })
    }

    /// Checks that `cert_pem` names `current`'s agent and is for this key,
    /// then installs key and certificate at `key_path` and `cert_path`.
    pub fn install(
        self,
        cert_pem: &str,
        current: &Current,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<(), RenewError> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| RenewError::BadAnswer(e.to_string()))?;
        let id = identity::identity_from_der(der.as_ref())
            .map_err(|e| RenewError::BadAnswer(e.to_string()))?;
        if id.role != current.role {
            return Err(RenewError::BadAnswer(format!(
                "it names {} instead of {}",
                id.role, current.role
            )));
        }
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref())
            .map_err(|e| RenewError::BadAnswer(e.to_string()))?;
        if cert.public_key().subject_public_key.data.as_ref() != self.key.public_key_raw() {
            return Err(RenewError::BadAnswer(
                "it is not for the key this agent made".into(),
            ));
        }
        let new_key = renewed(key_path);
        let new_cert = renewed(cert_path);
        write_synced(&new_key, &self.key.serialize_pem(), 0o600)?;
        write_synced(&new_cert, cert_pem, 0o644)?;
        rename(&new_key, key_path)?;
        rename(&new_cert, cert_path)?;
        sync_dir(cert_path);
        Ok(())
    }
}

/// Finishes or discards an installation a crash interrupted (see the
/// module docs); call before reading the key and certificate.
pub fn recover(cert_path: &Path, key_path: &Path) -> Result<(), RenewError> {
    let new_key = renewed(key_path);
    let new_cert = renewed(cert_path);
    match (new_key.exists(), new_cert.exists()) {
        (false, true) => rename(&new_cert, cert_path),
        (true, _) => {
            for path in [&new_key, &new_cert] {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(RenewError::File {
                            path: path.display().to_string(),
                            source,
                        });
                    }
                }
            }
            Ok(())
        }
        (false, false) => Ok(()),
    }
}

fn renewed(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".renewed");
    path.with_file_name(name)
}

fn write_synced(path: &Path, contents: &str, mode: u32) -> Result<(), RenewError> {
    let file_error = |source| RenewError::File {
        path: path.display().to_string(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_error(e)),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(file_error)?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(file_error)
}

fn rename(from: &Path, to: &Path) -> Result<(), RenewError> {
    std::fs::rename(from, to).map_err(|source| RenewError::File {
        path: to.display().to_string(),
        source,
    })
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn renewal_is_due_two_thirds_into_the_lifetime() {
        assert_eq!(due_at(0, 900), 600);
        assert_eq!(due_at(1_000, 1_000), 1_000);
        // 825 days from day 0: day 550.
        let day = 86_400_000;
        assert_eq!(due_at(0, 825 * day), 550 * day);
    }

    #[test]
    fn an_interrupted_install_is_finished_or_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("agent.pem");
        let key = dir.path().join("agent.key");
        std::fs::write(&cert, "old cert").unwrap();
        std::fs::write(&key, "new key").unwrap();
        // Crashed between the renames: the certificate follows the key.
        std::fs::write(renewed(&cert), "new cert").unwrap();
        recover(&cert, &key).unwrap();
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), "new cert");
        assert!(!renewed(&cert).exists());
        // Crashed before them: both are dropped, the old pair stays.
        std::fs::write(renewed(&cert), "newer cert").unwrap();
        std::fs::write(renewed(&key), "newer key").unwrap();
        recover(&cert, &key).unwrap();
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), "new cert");
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "new key");
        assert!(!renewed(&key).exists() && !renewed(&cert).exists());
    }
}
