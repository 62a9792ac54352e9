//! What an agent is given to run: the `agent.toml` of an agent bundle
//! (written by the manager's `agent add` and by the agent's `enroll`,
//! read by the agent), and the ports the manager listens on by default.
//! It lives here so that the manager writes the agent's file format
//! without depending on the agent.

/// The port agents and `palisadectl` connect to (mutual TLS), as OSSEC's.
pub const DEFAULT_PORT: u16 = 1514;

/// The enrollment port, beside [`DEFAULT_PORT`] (as Wazuh's authd).
pub const DEFAULT_ENROLL_PORT: u16 = 1515;

/// The `agent.toml` of an agent bundle: the manager's `host:port` and the
/// name to verify in its certificate; the certificate, key and CA beside
/// the file.
pub fn render_agent_config(address: &str, server_name: &str) -> String {
    format!(
        r#"# Palisade agent configuration. Relative paths are relative to this file.

[manager]
address = "{address}"
# The name verified in the manager's certificate.
server_name = "{server_name}"
ca_cert = "ca.pem"
cert = "agent.pem"
key = "agent.key"

[spool]
# Events not yet acknowledged by the manager, and file read positions.
database = "agent.db"

# One block per log to watch (OSSEC's <localfile>).
[[localfile]]
location = "/var/log/apache2/access.log"
log_format = "apache"
"#
    )
}
