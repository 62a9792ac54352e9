//! `AgentService`: one bidirectional stream per agent, the gRPC transport
//! of the [`crate::pipeline`].
//!
//! The agent's identity comes from its verified client certificate and is
//! checked against the database when the stream opens (registered, not
//! removed, this very certificate). Each event batch goes to the pipeline
//! and is acknowledged only after it is committed, with the agent's
//! highest stored sequence number, so a batch sent twice is stored once.
//! Hellos, heartbeats and command results update the agent's record.

use palisade_proto::identity::{self, Role};
use palisade_proto::v1::agent_message::Kind as AgentKind;
use palisade_proto::v1::agent_service_server::AgentService;
use palisade_proto::v1::manager_message::Kind as ManagerKind;
use palisade_proto::v1::{AgentMessage, ManagerMessage, Welcome};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::pipeline::flow::{Stream, SubmitError};
use crate::pipeline::{Pipeline, Source};
use crate::responder::Responder;
use crate::sessions::{AgentSender, EndReason, SessionGuard, Sessions};
use crate::store::{AgentHello, Store};
use crate::wire;

/// The agent stream service.
#[derive(Debug, Clone)]
pub struct Ingest {
    store: Store,
    sessions: Sessions,
    pipeline: Pipeline,
    responder: Responder,
    shutdown: CancellationToken,
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
        }
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
        let guard = self
            .sessions
            .register(&agent_id, &serial, tx.clone(), &self.shutdown);
        info!(agent = %agent_id, %name, address = address.as_deref().unwrap_or("-"), "Agent stream opened.");
        let stream = self
            .pipeline
            .open(Source::agent(&record), tx.clone(), guard.token.clone());
        let task = SessionTask {
            store: self.store.clone(),
            sessions: self.sessions.clone(),
            responder: self.responder.clone(),
            stream,
            agent_id,
            address,
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
    responder: Responder,
    /// The agent's events through the pipeline (flow control, acks).
    stream: Stream,
    agent_id: String,
    address: Option<String>,
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
        // What was admitted is stored and acknowledged before the stream
        // is let go (a failure was logged and told to the agent).
        let _ = self.stream.finish().await;
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
                // Returns once the batch is admitted; the stream commits and
                // acknowledges it. While it waits, nothing more is read.
                let events = batch.events.into_iter().map(wire::received_event).collect();
                match self.stream.submit(events).await {
                    Ok(()) => {}
                    // The session's own select says why it ends.
                    Err(SubmitError::Ending) => {}
                    Err(SubmitError::Failed(e)) => return Err(e.into()),
                }
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
