//! How a certificate says who its holder is.
//!
//! Every certificate Palisade issues carries URI subject alternative names
//! that state the holder's role:
//!
//! - `urn:palisade:agent:083` and `urn:palisade:name:web01` for an agent,
//! - `urn:palisade:operator:alice` for an operator (`palisadectl`),
//! - `urn:palisade:manager` for the manager's server certificate.
//!
//! The manager reads these from the verified peer certificate of each
//! connection and nothing else: an agent cannot claim another id, an agent
//! certificate cannot call the control API and an operator certificate
//! cannot open an agent stream.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const AGENT_PREFIX: &str = "urn:palisade:agent:";
const NAME_PREFIX: &str = "urn:palisade:name:";
const OPERATOR_PREFIX: &str = "urn:palisade:operator:";
/// The URI SAN of the manager's server certificate.
pub const MANAGER_URI: &str = "urn:palisade:manager";

/// What a certificate entitles its holder to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// An agent, with the id and name it was registered under.
    Agent {
        /// OSSEC-style id, e.g. `083`.
        id: String,
        /// The name given at `agent add`.
        name: String,
    },
    /// An operator allowed to use the control API.
    Operator {
        /// The operator's name.
        name: String,
    },
    /// The manager itself.
    Manager,
}

/// The identity read from a verified peer certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The role the certificate grants.
    pub role: Role,
    /// The certificate's serial number in lower-case hex, so that one
    /// certificate can be revoked while its holder gets a new one.
    pub serial: String,
}

/// Why a peer certificate does not name a Palisade identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The connection carried no client certificate.
    #[error("no client certificate was presented")]
    NoCertificate,
    /// The certificate could not be parsed.
    #[error("the client certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// The certificate has no Palisade role, or an inconsistent one.
    #[error("the client certificate names no Palisade role: {0}")]
    NoRole(String),
}

/// True for OSSEC-style agent ids: three or more digits (`001`, `083`, `1024`).
pub fn is_valid_agent_id(id: &str) -> bool {
    id.len() >= 3 && id.len() <= 8 && id.bytes().all(|b| b.is_ascii_digit())
}

/// True for agent and operator names: 1 to 64 of `A-Z a-z 0-9 . _ -`,
/// not starting with `-` or `.` (so a name never looks like a flag or a
/// hidden file).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The URI SANs to put in an agent's certificate.
pub fn agent_uris(id: &str, name: &str) -> Vec<String> {
    vec![
        format!("{AGENT_PREFIX}{id}"),
        format!("{NAME_PREFIX}{name}"),
    ]
}

/// The URI SAN to put in an operator's certificate.
pub fn operator_uri(name: &str) -> String {
    format!("{OPERATOR_PREFIX}{name}")
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Agent { id, name } => write!(f, "agent {id} ({name})"),
            Role::Operator { name } => write!(f, "operator {name}"),
            Role::Manager => f.write_str("manager"),
        }
    }
}

/// Reads the identity from a DER certificate (the leaf the TLS layer
/// already verified against the CA).
pub fn identity_from_der(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let serial = cert.tbs_certificate.raw_serial_as_string().replace(':', "");
    let mut agent = None;
    let mut name = None;
    let mut operator = None;
    let mut manager = false;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for general in &san.value.general_names {
            if let GeneralName::URI(uri) = general {
                if let Some(id) = uri.strip_prefix(AGENT_PREFIX) {
                    agent = Some(id.to_string());
                } else if let Some(n) = uri.strip_prefix(NAME_PREFIX) {
                    name = Some(n.to_string());
                } else if let Some(n) = uri.strip_prefix(OPERATOR_PREFIX) {
                    operator = Some(n.to_string());
                } else if *uri == MANAGER_URI {
                    manager = true;
                }
            }
        }
    }
    let role = match (agent, operator, manager) {
        (Some(id), None, false) => {
            if !is_valid_agent_id(&id) {
                return Err(IdentityError::NoRole(format!("invalid agent id {id:?}")));
            }
            let name = name
                .filter(|n| is_valid_name(n))
                .ok_or_else(|| IdentityError::NoRole(format!("agent {id} has no valid name")))?;
            Role::Agent { id, name }
        }
        (None, Some(name), false) if is_valid_name(&name) => Role::Operator { name },
        (None, None, true) => Role::Manager,
        (None, None, false) => {
            return Err(IdentityError::NoRole(
                "no urn:palisade: subject alternative name".into(),
            ));
        }
        _ => {
            return Err(IdentityError::NoRole(
                "conflicting or invalid urn:palisade: names".into(),
            ));
        }
    };
    Ok(PeerIdentity {
        role,
        serial: serial.to_ascii_lowercase(),
    })
}

/// When a DER certificate's validity begins and ends, in epoch
/// milliseconds.
pub fn validity_from_der(der: &[u8]) -> Result<(i64, i64), IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let validity = cert.validity();
    let ms = |t: &x509_parser::time::ASN1Time| t.timestamp().saturating_mul(1000);
    Ok((ms(&validity.not_before), ms(&validity.not_after)))
}

/// Reads the identity of the peer of a gRPC request (mutual TLS).
pub fn identity_from_request<T>(
    request: &tonic::Request<T>,
) -> Result<PeerIdentity, IdentityError> {
    let certs = request.peer_certs().ok_or(IdentityError::NoCertificate)?;
    let leaf = certs.first().ok_or(IdentityError::NoCertificate)?;
    identity_from_der(leaf.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_follow_ossec() {
        assert!(is_valid_agent_id("001"));
        assert!(is_valid_agent_id("083"));
        assert!(is_valid_agent_id("1024"));
        assert!(!is_valid_agent_id("83"));
        assert!(!is_valid_agent_id("08a"));
        assert!(!is_valid_agent_id(""));
    }

    #[test]
    fn names_are_restricted() {
        assert!(is_valid_name("web01"));
        assert!(is_valid_name("web-01.example_net"));
        assert!(!is_valid_name("-rf"));
        assert!(!is_valid_name(".hidden"));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name("a/b"));
        assert!(!is_valid_name(""));
    }
}
