//! `AgentService`: one bidirectional stream per agent, the gRPC transport
//! of the [`crate::pipeline`].
//!
//! The agent's identity comes from its verified client certificate and is
//! checked against the database when the stream opens (registered, not
//! removed, this very certificate). The stream's first message must be
//! Hello ([`crate::protocol`] checks it); only then does the manager
//! answer with Welcome (the stored sequence, the batch byte limit) and
//! count the agent as connected. A Hello naming a new spool resets the
//! agent's sequence (a reinstalled agent starts again at 1), said at WARN.
//! Each event batch goes to the pipeline and is acknowledged only after
//! it is committed, with the agent's highest stored sequence number, so a
//! batch sent twice is stored once. Heartbeats and command results update
//! the agent's record. Every refusal is logged at WARN with its reason,
//! which the agent receives too.

use palisade_engine::escape::Escaped;
use palisade_proto::identity::{self, Role};
use palisade_proto::v1::agent_message::Kind as AgentKind;
use palisade_proto::v1::agent_service_server::AgentService;
use palisade_proto::v1::manager_message::Kind as ManagerKind;
use palisade_proto::v1::{Ack, AgentMessage, ManagerMessage, Welcome};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::pipeline::{Pipeline, Source};
use crate::protocol::{self, HELLO_TIMEOUT};
use crate::responder::Responder;
use crate::sessions::{AgentSender, EndReason, SessionGuard, Sessions};
use crate::store::{AgentHello, IncomingEvent, SpoolChange, Store};
use crate::wire;

/// The agent stream service.
#[derive(Debug, Clone)]
pub struct Ingest {
    store: Store,
    sessions: Sessions,
    pipeline: Pipeline,
    responder: Responder,
    shutdown: CancellationToken,
    /// Announced in Welcome (`[limits] max_batch_bytes`).
    max_batch_bytes: usize,
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
            max_batch_bytes: crate::limits::DEFAULT_MAX_BATCH_BYTES,
        }
    }

    /// Announces `bytes` as the batch limit in Welcome.
    pub fn with_max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// What the Welcome tells an agent never to block: the address it
    /// reached, and this host's addresses (at most 64).
    fn announced_addresses(&self, local: Option<std::net::SocketAddr>) -> Vec<String> {
        let mut addresses = self.responder.own_addresses();
        addresses.extend(local.map(|a| a.ip().to_canonical()));
        addresses.sort();
        addresses.dedup();
        addresses.truncate(64);
        addresses.iter().map(ToString::to_string).collect()
    }

    /// Checks a peer against the database; returns its id and name.
    async fn admit(
        &self,
        request: &Request<Streaming<AgentMessage>>,
    ) -> Result<(String, String, String), Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let refuse = |status: Status| {
            warn!(%peer, reason = %Escaped(status.message()), "Refused agent stream.");
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
        if record.removed_at.is_some() || self.store.is_revoked(&id.serial).await? {
            return Err(refuse(Status::permission_denied(format!(
                "agent {agent_id} was removed; its certificate is revoked"
            ))));
        }
        if record.cert_serial != id.serial {
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
        Ok((agent_id, name, id.serial))
    }
}

#[tonic::async_trait]
impl AgentService for Ingest {
    type SessionStream = ReceiverStream<Result<ManagerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let (agent_id, name, serial) = self.admit(&request).await?;
        let address = request.remote_addr().map(|a| a.ip().to_string());
        let (tx, rx) = mpsc::channel(64);
        let opening = Opening {
            ingest: self.clone(),
            agent_id,
            name,
            serial,
            address,
            local: request.local_addr(),
            tx,
        };
        tokio::spawn(opening.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A stream admitted by its certificate, waiting for its Hello.
struct Opening {
    ingest: Ingest,
    agent_id: String,
    name: String,
    serial: String,
    address: Option<String>,
    /// The address the agent reached (announced back in the Welcome).
    local: Option<std::net::SocketAddr>,
    tx: AgentSender,
}

impl Opening {
    async fn run(self, mut inbound: Streaming<AgentMessage>) {
        let agent = self.agent_id.clone();
        match self.open(&mut inbound).await {
            Ok(task) => task.run(inbound).await,
            Err(status) => {
                warn!(%agent, reason = %Escaped(status.message()), "Refused agent stream.");
                let _ = self.tx.send(Err(status)).await;
            }
        }
    }

    /// Reads and checks the Hello, records it, answers with Welcome and
    /// registers the stream.
    async fn open(&self, inbound: &mut Streaming<AgentMessage>) -> Result<SessionTask, Status> {
        let agent = &self.agent_id;
        let ingest = &self.ingest;
        let first = tokio::select! {
            _ = ingest.shutdown.cancelled() => {
                return Err(Status::unavailable("manager is shutting down"));
            }
            m = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()) => match m {
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "no Hello within {} s of opening the stream",
                        HELLO_TIMEOUT.as_secs()
                    )));
                }
                Ok(Err(status)) => return Err(status),
                Ok(Ok(None)) => {
                    return Err(Status::cancelled("the agent closed the stream before its Hello"));
                }
                Ok(Ok(Some(m))) => m,
            },
        };
        let hello = protocol::first_message(first.kind)
            .map_err(|v| Status::failed_precondition(v.to_string()))?;
        protocol::check_hello(&hello).map_err(|v| Status::invalid_argument(v.to_string()))?;
        info!(
            %agent,
            version = %Escaped(&hello.agent_version),
            hostname = %Escaped(&hello.hostname),
            os = %Escaped(&hello.os),
            spool = %Escaped(&hello.spool_id),
            "Agent said hello."
        );
        let started_at = hello
            .started_at
            .as_ref()
            .map(wire::millis)
            .map(|t| protocol::sane_read_at(t, crate::store::now_ms()))
            .and_then(|(t, clamped)| (!clamped).then_some(t));
        ingest
            .store
            .agent_connected(
                agent,
                &AgentHello {
                    version: &hello.agent_version,
                    hostname: &hello.hostname,
                    os: &hello.os,
                    address: self.address.clone(),
                    started_at,
                },
            )
            .await?;
        match ingest.store.agent_spool(agent, &hello.spool_id).await? {
            SpoolChange::New { last_sequence } => warn!(
                %agent,
                spool = %Escaped(&hello.spool_id),
                stored_until = last_sequence,
                "The agent's spool is new (a reinstalled agent, or its spool was deleted): its sequence numbers start again at 1, and are accepted from there."
            ),
            SpoolChange::First | SpoolChange::Same => {}
        }
        let record = ingest
            .store
            .agent(agent)
            .await?
            .ok_or_else(|| Status::internal("agent vanished"))?;
        let welcome = ManagerMessage {
            kind: Some(ManagerKind::Welcome(Welcome {
                agent_id: agent.clone(),
                agent_name: self.name.clone(),
                last_sequence: record.last_sequence,
                protocol_version: palisade_proto::PROTOCOL_VERSION,
                max_batch_bytes: ingest.max_batch_bytes as u64,
                manager_addresses: ingest.announced_addresses(self.local),
            })),
        };
        self.tx
            .send(Ok(welcome))
            .await
            .map_err(|_| Status::cancelled("stream closed"))?;
        let guard =
            ingest
                .sessions
                .register(agent, &self.serial, self.tx.clone(), &ingest.shutdown);
        info!(%agent, name = %Escaped(&self.name), address = self.address.as_deref().unwrap_or("-"), "Agent stream opened.");
        Ok(SessionTask {
            store: ingest.store.clone(),
            sessions: ingest.sessions.clone(),
            pipeline: ingest.pipeline.clone(),
            responder: ingest.responder.clone(),
            source: Source::agent(&record),
            agent_id: agent.clone(),
            tx: self.tx.clone(),
            guard,
        })
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
                        warn!(%agent, error = %Escaped(status.message()), "Agent stream failed.");
                        let _ = self.tx.send(Err(status)).await;
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    // A message over the size limit, a malformed one: the
                    // agent's fault, said at WARN. A connection that went
                    // away is not.
                    if matches!(
                        status.code(),
                        tonic::Code::ResourceExhausted
                            | tonic::Code::InvalidArgument
                            | tonic::Code::Internal
                            | tonic::Code::OutOfRange
                    ) {
                        warn!(%agent, reason = %Escaped(status.message()), "Refused a message; the stream ended.");
                    } else {
                        debug!(%agent, error = %Escaped(&status.to_string()), "Agent stream broke.");
                    }
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
            Some(AgentKind::Hello(_)) => {
                return Err(Status::failed_precondition(
                    "Hello was already said on this stream",
                ));
            }
            Some(AgentKind::Events(batch)) => {
                let events: Vec<IncomingEvent<'_>> =
                    batch.events.iter().map(wire::incoming_event).collect();
                let highest = self
                    .pipeline
                    .process(&mut self.source, &events, batch.lost_before)
                    .await?;
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
            None => return Err(Status::invalid_argument("empty message")),
        }
        Ok(())
    }
}
