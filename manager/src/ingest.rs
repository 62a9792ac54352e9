//! `AgentService`: one bidirectional stream per agent, the gRPC transport
//! of the [`crate::pipeline`].
//!
//! The agent's identity comes from its verified client certificate and is
//! checked against the database when the stream opens (registered, not
//! removed, this very certificate). Each event batch goes to the pipeline
//! and is acknowledged only after it is committed, with the agent's
//! highest stored sequence number, so a batch sent twice is stored once.
//! Hellos, heartbeats and command results update the agent's record.
//!
//! The identity's life cycle is enforced here too: a stream must come from
//! the address or network the agent was registered with (`agent add
//! --ip`); a second stream while the agent's stream is live is refused (see
//! [`crate::sessions`]); an agent asks for a renewed certificate over its
//! stream, and its first stream with that certificate makes it the agent's
//! and revokes the old one. Every refusal is logged with the peer address
//! and recorded on the agent, where `palisadectl` shows it.

use palisade_proto::identity::{self, Role};
use palisade_proto::v1::agent_message::Kind as AgentKind;
use palisade_proto::v1::agent_service_server::AgentService;
use palisade_proto::v1::manager_message::Kind as ManagerKind;
use palisade_proto::v1::{Ack, AgentMessage, ManagerMessage, RenewRequest, Renewed, Welcome};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::pipeline::{Pipeline, Source};
use crate::pki::CertificateAuthority;
use crate::responder::Responder;
use crate::sessions::{AgentSender, EndReason, NewStream, SessionGuard, Sessions};
use crate::store::{AgentHello, IncomingEvent, Store};
use crate::wire;

/// The agent stream service.
#[derive(Debug, Clone)]
pub struct Ingest {
    store: Store,
    sessions: Sessions,
    pipeline: Pipeline,
    responder: Responder,
    shutdown: CancellationToken,
    /// Signs renewed agent certificates; `None` when the CA key is not on
    /// this host (renewals are then refused with that reason).
    ca: Option<Arc<CertificateAuthority>>,
    /// A live stream silent this long may be taken over.
    agent_timeout: Duration,
}

/// An agent stream the database admits.
struct Admitted {
    agent_id: String,
    name: String,
    serial: String,
    /// The certificate is the agent's renewed one, first used now.
    renewed: bool,
}

impl Ingest {
    /// A service over `store`, registering streams in `sessions`, feeding
    /// event batches to `pipeline` and command results to `responder`.
    pub fn new(
        store: Store,
        sessions: Sessions,
        pipeline: Pipeline,
        responder: Responder,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            sessions,
            pipeline,
            responder,
            shutdown,
            ca: None,
            agent_timeout: crate::config::DEFAULT_AGENT_TIMEOUT,
        }
    }

    /// Renews agents' certificates with `ca`.
    pub fn with_ca(mut self, ca: Option<Arc<CertificateAuthority>>) -> Self {
        self.ca = ca;
        self
    }

    /// A live stream silent for `timeout` may be taken over by a new one.
    pub fn with_agent_timeout(mut self, timeout: Duration) -> Self {
        self.agent_timeout = timeout;
        self
    }

    /// Logs a refused stream and records it on the agent.
    async fn refuse(&self, peer: &str, agent_id: &str, status: Status) -> Status {
        warn!(%peer, agent = %agent_id, reason = status.message(), "Refused agent stream.");
        if let Err(error) = self.store.agent_refused(agent_id, status.message()).await {
            warn!(agent = %agent_id, %error, "Cannot record the refusal.");
        }
        status
    }

    /// Checks a peer against the database.
    async fn admit(&self, request: &Request<Streaming<AgentMessage>>) -> Result<Admitted, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let refuse = |status: Status| {
            warn!(%peer, reason = status.message(), "Refused agent stream.");
            status
        };
        let id = identity::identity_from_request(request)
            .map_err(|e| refuse(Status::unauthenticated(e.to_string())))?;
        let (agent_id, name) = match id.role {
            Role::Agent { id, name } => (id, name),
            other => {
                return Err(refuse(Status::permission_denied(format!(
                    "{other} certificate cannot open an agent stream"
                ))));
            }
        };
        let record = self.store.agent(&agent_id).await?.ok_or_else(|| {
            refuse(Status::permission_denied(format!(
                "agent {agent_id} is not registered with this manager"
            )))
        })?;
        if record.removed_at.is_some() {
            return Err(refuse(Status::permission_denied(format!(
                "agent {agent_id} was removed; its certificate is revoked"
            ))));
        }
        if self.store.is_revoked(&id.serial).await? {
            return Err(refuse(Status::permission_denied(format!(
                "certificate {} of agent {agent_id} is revoked (replaced by a renewed one, or revoked by an operator)",
                id.serial
            ))));
        }
        let renewed = record.pending_serial.as_deref() == Some(id.serial.as_str());
        if record.cert_serial != id.serial && !renewed {
            return Err(refuse(Status::permission_denied(format!(
                "certificate {} is not the one issued to agent {agent_id}",
                id.serial
            ))));
        }
        if record.name != name {
            return Err(refuse(Status::permission_denied(format!(
                "certificate names agent {agent_id} {name:?}, registered as {:?}",
                record.name
            ))));
        }
        if let Err(reason) = address_allowed(
            &agent_id,
            &record.registered_ip,
            request.remote_addr().map(|a| a.ip()),
        ) {
            return Err(self
                .refuse(&peer, &agent_id, Status::permission_denied(reason))
                .await);
        }
        Ok(Admitted {
            agent_id,
            name,
            serial: id.serial,
            renewed,
        })
    }
}

#[tonic::async_trait]
impl AgentService for Ingest {
    type SessionStream = ReceiverStream<Result<ManagerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let Admitted {
            agent_id,
            name,
            serial,
            renewed,
        } = self.admit(&request).await?;
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let address = request.remote_addr().map(|a| a.ip().to_string());
        if renewed {
            let old = self.store.switch_to_renewed(&agent_id, &serial).await?;
            info!(agent = %agent_id, %serial, revoked = %old, "Agent connected with its renewed certificate; the old one is revoked.");
        }
        let record = self
            .store
            .agent(&agent_id)
            .await?
            .ok_or_else(|| Status::internal("agent vanished"))?;
        let (tx, rx) = mpsc::channel(64);
        let welcome = ManagerMessage {
            kind: Some(ManagerKind::Welcome(Welcome {
                agent_id: agent_id.clone(),
                agent_name: name.clone(),
                last_sequence: record.last_sequence,
                protocol_version: palisade_proto::PROTOCOL_VERSION,
            })),
        };
        tx.send(Ok(welcome))
            .await
            .map_err(|_| Status::internal("stream closed"))?;
        let registered = self.sessions.register(
            NewStream {
                agent_id: &agent_id,
                serial: &serial,
                address: address.clone(),
                stale_after: self.agent_timeout,
                takeover: renewed,
            },
            tx.clone(),
            &self.shutdown,
        );
        let guard = match registered {
            Ok((guard, None)) => guard,
            Ok((guard, Some(old))) => {
                if !renewed {
                    warn!(agent = %agent_id, %peer, old_address = old.address.as_deref().unwrap_or("-"), silent_s = old.silent_for.as_secs(), "Agent's stream was silent past the agent timeout; a new stream took over.");
                }
                guard
            }
            Err(live) => {
                let live_address = live.address.as_deref().unwrap_or("-");
                warn!(agent = %agent_id, %peer, %live_address, "A second stream for the agent was refused: it has a live one (possible stolen certificate).");
                let reason = format!(
                    "agent {agent_id} already has a live stream (from {live_address}, heard {} s ago); a second one is refused: is its certificate in use elsewhere?",
                    live.silent_for.as_secs()
                );
                return Err(self
                    .refuse(&peer, &agent_id, Status::already_exists(reason))
                    .await);
            }
        };
        info!(agent = %agent_id, %name, address = address.as_deref().unwrap_or("-"), "Agent stream opened.");
        let task = SessionTask {
            store: self.store.clone(),
            sessions: self.sessions.clone(),
            pipeline: self.pipeline.clone(),
            responder: self.responder.clone(),
            source: Source::agent(&record),
            agent_id,
            name,
            address,
            ca: self.ca.clone(),
            renewals: 0,
            tx,
            guard,
        };
        tokio::spawn(task.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct SessionTask {
    store: Store,
    sessions: Sessions,
    pipeline: Pipeline,
    responder: Responder,
    /// The agent as the pipeline knows it.
    source: Source,
    agent_id: String,
    name: String,
    address: Option<String>,
    ca: Option<Arc<CertificateAuthority>>,
    /// Renewed certificates issued on this stream (one is allowed).
    renewals: u32,
    tx: AgentSender,
    guard: SessionGuard,
}

impl SessionTask {
    async fn run(mut self, mut inbound: Streaming<AgentMessage>) {
        let agent = self.agent_id.clone();
        if let Err(error) = self.responder.deliver_pending(&agent).await {
            warn!(%agent, %error, "Cannot deliver queued active responses.");
        }
        loop {
            let message = tokio::select! {
                biased;
                _ = self.guard.token.cancelled() => {
                    match self.guard.reason() {
                        Some(EndReason::Revoked(why)) => {
                            warn!(%agent, reason = %why, "Ended agent stream.");
                            let _ = self.tx.send(Err(Status::permission_denied(why))).await;
                        }
                        Some(EndReason::Replaced) => {
                            info!(%agent, "Agent stream replaced by a newer one.");
                            let _ = self.tx.send(Err(Status::aborted("replaced by a newer stream from the same agent"))).await;
                        }
                        Some(EndReason::Shutdown) | None => {
                            let _ = self.tx.send(Err(Status::unavailable("manager is shutting down"))).await;
                        }
                    }
                    break;
                }
                m = inbound.message() => m,
            };
            match message {
                Ok(Some(m)) => {
                    self.guard.heard();
                    if let Err(status) = self.handle(m).await {
                        warn!(%agent, error = %status.message(), "Agent stream failed.");
                        let _ = self.tx.send(Err(status)).await;
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    debug!(%agent, error = %status, "Agent stream broke.");
                    break;
                }
            }
        }
        self.sessions.unregister(&agent, self.guard.generation);
        if let Err(error) = self.store.agent_seen(&agent).await {
            warn!(%agent, %error, "Cannot record last seen.");
        }
        info!(%agent, "Agent stream closed.");
    }

    async fn handle(&mut self, message: AgentMessage) -> Result<(), Status> {
        match message.kind {
            Some(AgentKind::Hello(hello)) => {
                info!(
                    agent = %self.agent_id,
                    version = %hello.agent_version,
                    hostname = %hello.hostname,
                    os = %hello.os,
                    "Agent said hello."
                );
                self.store
                    .agent_connected(
                        &self.agent_id,
                        &AgentHello {
                            version: &hello.agent_version,
                            hostname: &hello.hostname,
                            os: &hello.os,
                            address: self.address.clone(),
                            started_at: hello.started_at.as_ref().map(wire::millis),
                        },
                    )
                    .await?;
            }
            Some(AgentKind::Events(batch)) => {
                let events: Vec<IncomingEvent<'_>> =
                    batch.events.iter().map(wire::incoming_event).collect();
                let highest = self.pipeline.process(&mut self.source, &events).await?;
                let ack = ManagerMessage {
                    kind: Some(ManagerKind::Ack(Ack { sequence: highest })),
                };
                self.tx
                    .send(Ok(ack))
                    .await
                    .map_err(|_| Status::cancelled("stream closed"))?;
            }
            Some(AgentKind::Heartbeat(hb)) => {
                self.store
                    .agent_heartbeat(
                        &self.agent_id,
                        hb.spool_depth,
                        hb.dropped_events,
                        hb.read_lag_bytes,
                    )
                    .await?;
            }
            Some(AgentKind::CommandResult(result)) => {
                self.responder.on_result(&self.agent_id, &result).await?;
            }
            Some(AgentKind::Renew(request)) => {
                let answer = self.renew(&request).await?;
                self.tx
                    .send(Ok(ManagerMessage {
                        kind: Some(ManagerKind::Renewed(answer)),
                    }))
                    .await
                    .map_err(|_| Status::cancelled("stream closed"))?;
            }
            None => return Err(Status::invalid_argument("empty message")),
        }
        Ok(())
    }

    /// A renewed certificate for the agent's new key, recorded as its
    /// pending certificate; or why not. One per stream: the agent
    /// reconnects with the new certificate.
    async fn renew(&mut self, request: &RenewRequest) -> Result<Renewed, Status> {
        let agent = &self.agent_id;
        let issued = match (&self.ca, self.renewals) {
            (_, 1..) => Err("one renewal per stream: connect with the renewed certificate".into()),
            (None, _) => {
                Err("this manager cannot renew certificates: its CA key is not readable".into())
            }
            (Some(ca), _) => ca
                .issue_agent_for_request(agent, &self.name, &request.csr_der)
                .map_err(|e| e.to_string()),
        };
        match issued {
            Ok(cert) => {
                self.store.set_pending_serial(agent, &cert.serial).await?;
                self.renewals += 1;
                info!(%agent, serial = %cert.serial, "Issued the agent a renewed certificate.");
                Ok(Renewed {
                    certificate_pem: cert.cert_pem,
                    error: String::new(),
                })
            }
            Err(error) => {
                warn!(%agent, %error, "Refused to renew the agent's certificate.");
                Ok(Renewed {
                    certificate_pem: String::new(),
                    error,
                })
            }
        }
    }
}

/// Whether an agent registered with `registered` (`any`, an address or a
/// CIDR) may connect from `peer`; the refusal says why.
fn address_allowed(agent_id: &str, registered: &str, peer: Option<IpAddr>) -> Result<(), String> {
    if registered == "any" {
        return Ok(());
    }
    let network = palisade_common::network::parse_network(registered)
        .map_err(|e| format!("agent {agent_id}'s registered address is unusable: {e}"))?;
    let Some(peer) = peer.map(|ip| ip.to_canonical()) else {
        return Err(format!(
            "agent {agent_id} may connect only from {network}; this connection's address is unknown"
        ));
    };
    if network.contains(&peer) {
        Ok(())
    } else {
        Err(format!(
            "agent {agent_id} may connect only from {network} (agent add --ip); this connection came from {peer}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registered_address_is_enforced() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(address_allowed("001", "any", None).is_ok());
        assert!(address_allowed("001", "10.0.0.0/8", ip("10.1.2.3")).is_ok());
        assert!(address_allowed("001", "10.0.0.5/32", ip("::ffff:10.0.0.5")).is_ok());
        assert!(address_allowed("001", "2001:db8::/32", ip("2001:db8::1")).is_ok());
        let refused = address_allowed("001", "10.0.0.0/8", ip("127.0.0.1")).unwrap_err();
        assert_eq!(
            refused,
            "agent 001 may connect only from 10.0.0.0/8 (agent add --ip); this connection came from 127.0.0.1"
        );
        assert!(address_allowed("001", "10.0.0.0/8", None).is_err());
        assert!(address_allowed("001", "10.0.0.5/32", ip("10.0.0.6")).is_err());
    }
}
