//! The manager's private certificate authority.
//!
//! `palisade-manager init` makes a CA and the manager's server certificate;
//! `agent add` and the operator bundle get certificates signed by that CA.
//! Roles travel in URI subject alternative names (see
//! [`palisade_proto::identity`]), so the manager trusts what the CA signed
//! and nothing an agent says. Private keys are ECDSA P-256 and are written
//! with mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use palisade_common::clock::{Clock, SystemClock};
use palisade_proto::identity;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long server, agent and operator certificates are valid. Agents
/// renew theirs over their stream after two thirds of it.
pub const LEAF_VALIDITY: Duration = Duration::days(825);

/// A PKI failure.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Certificate generation or parsing failed.
    #[error("certificate error: {0}")]
    Cert(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A certificate request cannot be read or its signature is wrong.
    #[error("the certificate request is unusable: {0}")]
    Request(String),
    /// A certificate we issued does not read back as the identity we meant.
    #[error("issued certificate does not carry the expected identity: {0}")]
    Identity(String),
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
    /// The serial number as the manager reads it back from a connection.
    pub serial: String,
}

/// The loaded CA, able to sign certificates valid from its clock's now.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Makes a new CA named `common_name`; returns it with its key PEM.
    pub fn generate(common_name: &str) -> Result<(Self, String), PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Palisade");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, OffsetDateTime::now_utc(), CA_VALIDITY);
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        let ca = Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            clock: Arc::new(SystemClock),
        };
        Ok((ca, key_pem))
    }

    /// Loads the CA from its certificate and key PEM files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Self {
            issuer,
            cert_pem,
            clock: Arc::new(SystemClock),
        })
    }

    /// The same CA, issuing certificates valid from `clock`'s now.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> OffsetDateTime {
        let nanos = i128::from(self.clock.now_ms()) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or_else(|_| OffsetDateTime::now_utc())
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The manager's server certificate for the given host names and
    /// addresses.
    pub fn issue_server(&self, names: &[String]) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .subject_alt_names
            .push(SanType::URI(identity::MANAGER_URI.try_into()?));
        params
            .distinguished_name
            .push(DnType::CommonName, "palisade-manager");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issued = self.sign(params)?;
        check_role(&issued, &identity::Role::Manager)?;
        Ok(issued)
    }

    /// An agent's client certificate: its id and name as URI SANs.
    pub fn issue_agent(&self, id: &str, name: &str) -> Result<IssuedCert, PkiError> {
        let issued = self.sign(agent_params(id, name)?)?;
        check_agent(&issued, id, name)?;
        Ok(issued)
    }

    /// An agent's client certificate for the key of an enrolling agent's
    /// certificate request (PKCS#10, DER). The request's signature is
    /// verified (the agent holds the key); its names and extensions are
    /// ignored: the certificate is the same as [`Self::issue_agent`]'s.
    /// `key_pem` is empty, since the key never left the agent.
    pub fn issue_agent_for_request(
        &self,
        id: &str,
        name: &str,
        csr_der: &[u8],
    ) -> Result<IssuedCert, PkiError> {
        let csr = rcgen::CertificateSigningRequestParams::from_der(
            &rustls_pki_types::CertificateSigningRequestDer::from(csr_der),
        )
        .map_err(|e| PkiError::Request(e.to_string()))?;
        let mut params = agent_params(id, name)?;
        leaf_defaults(&mut params, self.now());
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        let issued = IssuedCert {
            cert_pem: cert.pem(),
            key_pem: String::new(),
            serial: serial_of(cert.der()),
        };
        check_agent(&issued, id, name)?;
        Ok(issued)
    }

    /// An operator's client certificate for `palisadectl`.
    pub fn issue_operator(&self, name: &str) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .subject_alt_names
            .push(SanType::URI(identity::operator_uri(name).try_into()?));
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "operators");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let issued = self.sign(params)?;
        check_role(
            &issued,
            &identity::Role::Operator {
                name: name.to_string(),
            },
        )?;
        Ok(issued)
    }

    fn sign(&self, mut params: CertificateParams) -> Result<IssuedCert, PkiError> {
        leaf_defaults(&mut params, self.now());
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial_of(cert.der()),
        })
    }
}

fn agent_params(id: &str, name: &str) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for uri in identity::agent_uris(id, name) {
        params.subject_alt_names.push(SanType::URI(uri.try_into()?));
    }
    params.distinguished_name.push(DnType::CommonName, id);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

fn leaf_defaults(params: &mut CertificateParams, now: OffsetDateTime) {
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyAgreement,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    set_validity(params, now, LEAF_VALIDITY);
}

fn serial_of(der: &[u8]) -> String {
    identity::identity_from_der(der)
        .map(|id| id.serial)
        .unwrap_or_default()
}

fn check_agent(issued: &IssuedCert, id: &str, name: &str) -> Result<(), PkiError> {
    check_role(
        issued,
        &identity::Role::Agent {
            id: id.to_string(),
            name: name.to_string(),
        },
    )
}

fn check_role(issued: &IssuedCert, expected: &identity::Role) -> Result<(), PkiError> {
    let der = rustls_pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
        .map_err(|e| PkiError::Identity(e.to_string()))?;
    let id =
        identity::identity_from_der(der.as_ref()).map_err(|e| PkiError::Identity(e.to_string()))?;
    if &id.role != expected {
        return Err(PkiError::Identity(format!(
            "{} instead of {expected}",
            id.role
        )));
    }
    Ok(())
}

use rustls_pki_types::pem::PemObject;

/// A positive 16-byte serial (the top bit cleared so DER needs no padding).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn set_validity(params: &mut CertificateParams, now: OffsetDateTime, validity: Duration) {
    // Allow for clocks a little behind the issuer's.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + validity;
}

/// Reads a text file, naming it in the error.
pub fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes a public file (certificate, config), mode 0644.
pub fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_mode(path, contents, 0o644)
}

/// Writes a private key, mode 0600 from the moment it exists.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_mode(path, contents, 0o600)
}

fn write_mode(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    };
    // Remove first so an existing file's looser mode is not kept.
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_their_roles() {
        let (ca, _key) = CertificateAuthority::generate("test CA").unwrap();
        let agent = ca.issue_agent("083", "web01").unwrap();
        assert_eq!(agent.serial.len(), 32);
        let other = ca.issue_agent("084", "web02").unwrap();
        assert_ne!(agent.serial, other.serial);
        ca.issue_operator("alice").unwrap();
        ca.issue_server(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
    }

    #[test]
    fn a_request_gets_an_agent_certificate_for_its_own_key_only() {
        let (ca, _key) = CertificateAuthority::generate("test CA").unwrap();
        let key = KeyPair::generate().unwrap();
        // The request asks for an operator role and a server name; both
        // are ignored.
        let mut asked = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        asked.subject_alt_names.push(SanType::URI(
            identity::operator_uri("root").try_into().unwrap(),
        ));
        let csr = asked.serialize_request(&key).unwrap();
        let issued = ca
            .issue_agent_for_request("007", "web07", csr.der())
            .unwrap();
        assert!(issued.key_pem.is_empty());
        let der =
            rustls_pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let id = identity::identity_from_der(der.as_ref()).unwrap();
        assert_eq!(
            id.role,
            identity::Role::Agent {
                id: "007".into(),
                name: "web07".into()
            }
        );
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref()).unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        assert!(!issued.cert_pem.contains("evil"));

        // A request whose signature does not verify is refused.
        let mut tampered = csr.der().to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let err = ca
            .issue_agent_for_request("008", "web08", &tampered)
            .unwrap_err();
        assert!(matches!(err, PkiError::Request(_)), "{err}");
    }

    #[test]
    fn keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_private(&path, "secret").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
