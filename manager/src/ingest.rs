//! `AgentService`: one bidirectional stream per agent.
//!
//! The agent's identity comes from its verified client certificate and is
//! checked against the database when the stream opens (registered, not
//! removed, this very certificate). Event batches are acknowledged only
//! after they are committed, together with the agent's highest stored
//! sequence number, so a batch sent twice is stored once.

use palisade_proto::identity::{self, Role};
use palisade_proto::v1::agent_message::Kind as AgentKind;
use palisade_proto::v1::agent_service_server::AgentService;
use palisade_proto::v1::manager_message::Kind as ManagerKind;
use palisade_proto::v1::{Ack, AgentMessage, EventBatch, ManagerMessage, Welcome};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::analysis::{Analyzer, Input, Origin};
use crate::outputs::{Outputs, PublishedAlert};
use crate::responder::Responder;
use crate::sessions::{AgentSender, EndReason, SessionGuard, Sessions};
use crate::store::{AgentHello, IncomingEvent, Store};

/// The agent stream service.
#[derive(Debug, Clone)]
pub struct Ingest {
    store: Store,
    sessions: Sessions,
    analyzer: Analyzer,
    responder: Responder,
    outputs: Outputs,
    archive: bool,
    shutdown: CancellationToken,
}

impl Ingest {
    /// A service over `store`, registering streams in `sessions` and
    /// judging events with `analyzer`; `archive` keeps every event.
    pub fn new(
        store: Store,
        sessions: Sessions,
        analyzer: Analyzer,
        responder: Responder,
        outputs: Outputs,
        archive: bool,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            sessions,
            analyzer,
            responder,
            outputs,
            archive,
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
        let record = self
            .store
            .agent(&agent_id)
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| {
                refuse(Status::permission_denied(format!(
                    "agent {agent_id} is not registered with this manager"
                )))
            })?;
        if record.removed_at.is_some()
            || self
                .store
                .is_revoked(&id.serial)
                .await
                .map_err(|e| Status::internal(e.to_string()))?
        {
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
            .await
            .map_err(|e| Status::internal(e.to_string()))?
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
        let task = SessionTask {
            store: self.store.clone(),
            sessions: self.sessions.clone(),
            analyzer: self.analyzer.clone(),
            responder: self.responder.clone(),
            outputs: self.outputs.clone(),
            archive: self.archive,
            origin: Origin {
                agent_id: Some(agent_id.clone()),
                name,
                ip: record.registered_ip.clone(),
            },
            stored_upto: std::sync::atomic::AtomicU64::new(record.last_sequence),
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
    analyzer: Analyzer,
    responder: Responder,
    outputs: Outputs,
    archive: bool,
    origin: Origin,
    /// The highest sequence stored for this agent, so only new events are
    /// judged when a batch is resent.
    stored_upto: std::sync::atomic::AtomicU64,
    agent_id: String,
    address: Option<String>,
    tx: AgentSender,
    guard: SessionGuard,
}

impl SessionTask {
    async fn run(self, mut inbound: Streaming<AgentMessage>) {
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

    async fn handle(&self, message: AgentMessage) -> Result<(), Status> {
        let internal = |e: crate::store::StoreError| Status::internal(e.to_string());
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
                            started_at: hello
                                .started_at
                                .map(|t| palisade_common::time::millis_from_proto(&t)),
                        },
                    )
                    .await
                    .map_err(internal)?;
            }
            Some(AgentKind::Events(batch)) => {
                let highest = self.store_batch(&batch).await?;
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
                    .await
                    .map_err(internal)?;
            }
            Some(AgentKind::CommandResult(result)) => {
                self.responder
                    .on_result(&self.agent_id, &result)
                    .await
                    .map_err(internal)?;
            }
            None => return Err(Status::invalid_argument("empty message")),
        }
        Ok(())
    }

    /// Judges the batch's new events, then stores events and alerts in one
    /// transaction; returns the highest stored sequence to acknowledge.
    async fn store_batch(&self, batch: &EventBatch) -> Result<u64, Status> {
        use std::sync::atomic::Ordering;
        let upto = self.stored_upto.load(Ordering::Relaxed);
        let inputs: Vec<Input> = batch
            .events
            .iter()
            .filter(|e| e.sequence > upto)
            .map(|e| Input {
                sequence: e.sequence,
                path: e.location.clone(),
                line: e.line.clone(),
            })
            .collect();
        self.outputs.stats().events(inputs.len() as u64);
        let alerts = if inputs.is_empty() {
            Vec::new()
        } else {
            self.analyzer
                .analyze(self.origin.clone(), inputs)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?
        };
        let events: Vec<IncomingEvent<'_>> = batch
            .events
            .iter()
            .map(|e| IncomingEvent {
                sequence: e.sequence,
                location: &e.location,
                log_format: &e.log_format,
                read_at: e
                    .read_at
                    .as_ref()
                    .map(palisade_common::time::millis_from_proto)
                    .unwrap_or_else(crate::store::now_ms),
                truncated: e.truncated,
                line: &e.line,
            })
            .collect();
        let stored = self
            .store
            .store_events(&self.agent_id, &events, &alerts, self.archive)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        for (id, alert) in stored.alert_ids.iter().zip(&alerts) {
            info!(
                alert = id,
                agent = %self.agent_id,
                rule = alert.rule_id,
                level = alert.level,
                srcip = alert.srcip.as_deref().unwrap_or("-"),
                description = %alert.description,
                "Alert."
            );
        }
        self.stored_upto.store(stored.highest, Ordering::Relaxed);
        let stored_alerts: Vec<_> = stored.alert_ids.iter().copied().zip(alerts).collect();
        // Responses first, so that followers (`alerts --follow`) see the
        // responses each alert caused; the alerts go out even if that fails.
        let responded = self.responder.on_alerts(&stored_alerts).await;
        self.outputs.publish(
            stored_alerts
                .iter()
                .map(|(id, alert)| PublishedAlert {
                    id: *id,
                    alert: alert.clone(),
                    origin: self.origin.clone(),
                })
                .collect(),
        );
        responded.map_err(|e| Status::internal(e.to_string()))?;
        Ok(stored.highest)
    }
}
