//! A client that speaks the agents' protocol directly, with a real
//! agent's certificate: what a compromised agent can send (events before
//! Hello, poisoned sequence numbers, forged Hello fields, multi-megabyte
//! lines), without the agent's own checks in the way.

use std::path::Path;
use std::time::Duration;

use palisade_common::tls::ClientIdentity;
use palisade_proto::v1::agent_message::Kind as AgentKind;
use palisade_proto::v1::agent_service_client::AgentServiceClient;
use palisade_proto::v1::manager_message::Kind as ManagerKind;
use palisade_proto::v1::{AgentMessage, Event, EventBatch, Hello, ManagerMessage, Welcome};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// How long to wait for one answer of the manager.
const ANSWER: Duration = Duration::from_secs(60);

/// The TLS files and address of an agent bundle.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// host:port of the manager.
    pub address: String,
    /// The name verified in the manager's certificate.
    pub server_name: String,
    /// The manager's CA.
    pub ca_cert: std::path::PathBuf,
    /// The agent's certificate.
    pub cert: std::path::PathBuf,
    /// Its key.
    pub key: std::path::PathBuf,
}

impl Credentials {
    /// The files of an agent's configuration.
    pub fn of(config: &palisade_agent::AgentConfig) -> Self {
        Self {
            address: config.manager_addresses[0].clone(),
            server_name: config.server_name.clone(),
            ca_cert: config.ca_cert.clone(),
            cert: config.cert.clone(),
            key: config.key.clone(),
        }
    }

    /// The files of a bundle directory written by `agent add`.
    pub fn bundle(dir: &Path, address: std::net::SocketAddr) -> Self {
        Self {
            address: address.to_string(),
            server_name: "localhost".into(),
            ca_cert: dir.join("ca.pem"),
            cert: dir.join("agent.pem"),
            key: dir.join("agent.key"),
        }
    }
}

/// One open stream.
pub struct RawAgent {
    tx: mpsc::Sender<AgentMessage>,
    inbound: Streaming<ManagerMessage>,
}

/// A Hello as an agent would say it, naming spool `spool_id`.
pub fn hello(spool_id: &str) -> AgentMessage {
    AgentMessage {
        kind: Some(AgentKind::Hello(Hello {
            protocol_version: palisade_proto::PROTOCOL_VERSION,
            agent_version: "0.0.0-raw".into(),
            hostname: "raw".into(),
            os: "linux".into(),
            started_at: None,
            spool_id: spool_id.into(),
        })),
    }
}

/// An event read now.
pub fn event(sequence: u64, line: impl Into<Vec<u8>>) -> Event {
    Event {
        sequence,
        location: "/var/log/nginx/access.log".into(),
        read_at: Some(palisade_common::time::proto_from_jiff(
            jiff::Timestamp::now(),
        )),
        line: line.into().into(),
        log_format: "apache".into(),
        truncated: false,
    }
}

/// A batch of `events` (`lost_before` lost before them).
pub fn batch(events: Vec<Event>, lost_before: u64) -> AgentMessage {
    AgentMessage {
        kind: Some(AgentKind::Events(EventBatch {
            events,
            lost_before,
        })),
    }
}

impl RawAgent {
    /// Opens a stream and sends `first` on it.
    pub async fn connect(credentials: &Credentials, first: AgentMessage) -> anyhow::Result<Self> {
        crate::install_crypto();
        let tls = ClientIdentity {
            ca_cert: &credentials.ca_cert,
            cert: &credentials.cert,
            key: &credentials.key,
            server_name: &credentials.server_name,
        }
        .tls_config()?;
        let channel = palisade_common::tls::endpoint(&credentials.address, tls)?
            .connect()
            .await?;
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await?;
        let inbound = AgentServiceClient::new(channel)
            .max_encoding_message_size(usize::MAX)
            .session(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self { tx, inbound })
    }

    /// Opens a stream with a Hello and returns the Welcome.
    pub async fn hello(
        credentials: &Credentials,
        spool_id: &str,
    ) -> anyhow::Result<(Self, Welcome)> {
        let mut agent = Self::connect(credentials, hello(spool_id)).await?;
        match agent.next().await? {
            ManagerKind::Welcome(w) => Ok((agent, w)),
            other => anyhow::bail!("the first answer was {other:?}, not Welcome"),
        }
    }

    /// Sends one message.
    pub async fn send(&self, message: AgentMessage) -> anyhow::Result<()> {
        self.tx
            .send(message)
            .await
            .map_err(|_| anyhow::anyhow!("stream closed"))
    }

    /// The manager's next message, or its refusal as an error
    /// ([`refusal`] reads it back).
    pub async fn next(&mut self) -> anyhow::Result<ManagerKind> {
        match tokio::time::timeout(ANSWER, self.inbound.message()).await? {
            Ok(Some(ManagerMessage { kind: Some(kind) })) => Ok(kind),
            Ok(Some(_)) => anyhow::bail!("an empty message"),
            Ok(None) => anyhow::bail!("the manager closed the stream"),
            Err(status) => Err(status.into()),
        }
    }

    /// Sends a batch and waits for its acknowledgement (skipping commands).
    pub async fn send_batch(
        &mut self,
        events: Vec<Event>,
        lost_before: u64,
    ) -> anyhow::Result<u64> {
        self.send(batch(events, lost_before)).await?;
        loop {
            match self.next().await? {
                ManagerKind::Ack(ack) => return Ok(ack.sequence),
                ManagerKind::Command(_) => continue,
                other => anyhow::bail!("answered {other:?}"),
            }
        }
    }

    /// Sends a batch the manager must refuse; returns the refusal.
    pub async fn refused_batch(
        &mut self,
        events: Vec<Event>,
        lost_before: u64,
    ) -> anyhow::Result<tonic::Status> {
        self.send(batch(events, lost_before)).await?;
        loop {
            match self.next().await {
                Ok(ManagerKind::Command(_)) => continue,
                Ok(other) => anyhow::bail!("accepted: {other:?}"),
                Err(e) => return refusal(e),
            }
        }
    }
}

/// The gRPC status of a refusal.
pub fn refusal(e: anyhow::Error) -> anyhow::Result<tonic::Status> {
    e.downcast::<tonic::Status>()
        .map_err(|e| anyhow::anyhow!("not a refusal: {e}"))
}
