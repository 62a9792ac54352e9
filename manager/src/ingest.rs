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
//! Each event batch goes to the pipeline's flow control (a few batches in
//! flight per stream; while they wait, the stream is not read) and is
//! acknowledged only after it is committed, with the agent's highest
//! stored sequence number, so a batch sent twice is stored once. Heartbeats and command results update
//! the agent's record. Every refusal is logged at WARN with its reason,
//! which the agent receives too.
//!
//! The identity's life cycle is enforced here too: a stream must come from
//! the address or network the agent was registered with (`agent add
//! --ip`); a second stream while the agent's stream is live is refused (see
//! [`crate::sessions`]); an agent asks for a renewed certificate over its
//! stream, and its first stream with that certificate makes it the agent's
//! and revokes the old one. These refusals are also recorded on the agent,
//! where `palisadectl` shows them.
//!
//! One live stream per agent in the whole cluster: after the Hello the
//! stream takes the agent's lease in the database ([`crate::cluster`]),
//! refused like a second stream while another live manager holds it, and
//! every commit of its batches is fenced by the lease's generation. A new
//! stream that replaces one on this manager is answered only once the old
//! one's batches in flight are committed (or refused by the fence), so the
//! Welcome's sequence is final and nothing is judged twice.

use palisade_engine::escape::Escaped;
use palisade_proto::identity::{self, Role};
use palisade_proto::v1::agent_message::Kind as AgentKind;
use palisade_proto::v1::agent_service_server::AgentService;
use palisade_proto::v1::manager_message::Kind as ManagerKind;
use palisade_proto::v1::{AgentMessage, ManagerMessage, RenewRequest, Renewed, Welcome};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::cluster::Cluster;
use crate::grouped::{AdmissionAsk, Admissions, Grouped, Hello, Hellos};
use crate::heartbeats::{Figures, Heartbeats};
use crate::pipeline::flow::{Stream, SubmitError};
use crate::pipeline::{Pipeline, Source};
use crate::pki::CertificateAuthority;
use crate::protocol::{self, HELLO_TIMEOUT};
use crate::responder::Responder;
use crate::sessions::{
    AgentReceiver, AgentSender, EndReason, NewStream, Replaced, SessionGuard, Sessions,
};
use crate::store::{Connected, SpoolChange, Store};
use crate::wire;

/// How long a new stream waits for the stream it replaces on this manager
/// to finish its batches; past it the new one goes on (the fence still
/// keeps each event stored once).
const REPLACED_STREAM_WAIT: Duration = Duration::from_secs(30);

/// Streams doing their opening database work at once. Their reads and
/// writes (admission, lease, Hello) go in groups ([`crate::grouped`]), as
/// many as wait at once, so this bounds the groups rather than the
/// database's connections: with 64, a restart's reconnect storm of 10,000
/// agents wrote its Hellos and leases in groups of about 20, and the
/// write transactions, one after another, were what the agents waited
/// for; with this, groups of a few hundred.
const OPENINGS_AT_ONCE: usize = 4096;

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
    /// Signs renewed agent certificates; `None` when the CA key is not on
    /// this host (renewals are then refused with that reason).
    ca: Option<Arc<CertificateAuthority>>,
    /// A live stream silent this long may be taken over.
    agent_timeout: Duration,
    /// Heartbeats and last-seen times, written together.
    heartbeats: Heartbeats,
    /// Every stream's task, so that shutdown waits for them (and their
    /// last-seen times) before the database closes.
    tasks: TaskTracker,
    /// Streams doing their opening database work at once: in a reconnect
    /// storm of thousands the others wait their turn here, in order,
    /// instead of timing out on the database's connection pool.
    openings: Arc<tokio::sync::Semaphore>,
    /// Agents' Hellos, written together.
    hellos: Grouped<Hellos>,
    /// Admissions' reads (the agent record, the revocation), together.
    admissions: Grouped<Admissions>,
    /// This manager among others on the database: the agents' leases.
    /// `None`: no leases (one manager alone, in tests).
    cluster: Option<Cluster>,
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
            sessions,
            pipeline,
            responder,
            shutdown,
            max_batch_bytes: crate::limits::DEFAULT_MAX_BATCH_BYTES,
            ca: None,
            agent_timeout: crate::config::DEFAULT_AGENT_TIMEOUT,
            heartbeats: Heartbeats::default(),
            tasks: TaskTracker::new(),
            openings: Arc::new(tokio::sync::Semaphore::new(OPENINGS_AT_ONCE)),
            hellos: Grouped::new(Hellos(store.clone())),
            admissions: Grouped::new(Admissions(store.clone())),
            store,
            cluster: None,
        }
    }

    /// Takes each stream's lease on its agent as `cluster`.
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Gathers heartbeats in `heartbeats` (which the caller writes out).
    pub fn with_heartbeats(mut self, heartbeats: Heartbeats) -> Self {
        self.heartbeats = heartbeats;
        self
    }

    /// The streams' tasks: after the server stops, close it and wait.
    pub fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
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

    /// Records a refusal on the agent, for `palisadectl`.
    async fn record_refusal(&self, agent_id: &str, reason: &str) {
        if let Err(error) = self.store.agent_refused(agent_id, reason).await {
            warn!(agent = %agent_id, %error, "Cannot record the refusal.");
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

    /// Checks a peer against the database.
    async fn admit(&self, request: &Request<Streaming<AgentMessage>>) -> Result<Admitted, Status> {
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
        let facts = self
            .admissions
            .submit(AdmissionAsk {
                agent_id: agent_id.clone(),
                serial: id.serial.clone(),
            })
            .await?;
        let record = facts.record.ok_or_else(|| {
            refuse(Status::permission_denied(format!(
                "agent {agent_id} is not registered with this manager"
            )))
        })?;
        if record.removed_at.is_some() {
            return Err(refuse(Status::permission_denied(format!(
                "agent {agent_id} was removed; its certificate is revoked"
            ))));
        }
        if facts.revoked {
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
            self.record_refusal(&agent_id, &reason).await;
            return Err(refuse(Status::permission_denied(reason)));
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
    type SessionStream = AgentReceiver;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let Admitted {
            agent_id,
            name,
            serial,
            renewed,
        } = {
            let _turn = self.openings.acquire().await;
            self.admit(&request).await
        }
        .inspect_err(|status| {
            // The refusals of admit() are logged there; a database that
            // failed or timed out (the pool) is logged here.
            if matches!(status.code(), tonic::Code::Internal | tonic::Code::Unavailable) {
                let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
                warn!(%peer, reason = %Escaped(status.message()), "Refused agent stream: the database did not answer.");
            }
        })?;
        let address = request.remote_addr().map(|a| a.ip().to_string());
        let manager_addresses = self.announced_addresses(request.local_addr());
        let (tx, rx) = mpsc::channel(64);
        let opening = Opening {
            ingest: self.clone(),
            agent_id,
            name,
            serial,
            renewed,
            address,
            manager_addresses,
            tx,
        };
        self.tasks.spawn(opening.run(request.into_inner()));
        Ok(Response::new(AgentReceiver::new(rx)))
    }
}

/// A stream admitted by its certificate, waiting for its Hello.
struct Opening {
    ingest: Ingest,
    agent_id: String,
    name: String,
    serial: String,
    /// The agent's renewed certificate, used for the first time.
    renewed: bool,
    address: Option<String>,
    /// The manager's addresses, for the Welcome.
    manager_addresses: Vec<String>,
    tx: AgentSender,
}

impl Opening {
    fn new_stream(&self) -> NewStream<'_> {
        NewStream {
            agent_id: &self.agent_id,
            serial: &self.serial,
            address: self.address.clone(),
            stale_after: self.ingest.agent_timeout,
            takeover: self.renewed,
        }
    }

    /// Refuses a second stream while the agent's is live (logged as a
    /// possible stolen certificate, recorded on the agent).
    async fn refuse_second(&self, live: crate::sessions::LiveStream) -> Status {
        let agent = &self.agent_id;
        let live_address = live.address.as_deref().unwrap_or("-");
        warn!(%agent, address = self.address.as_deref().unwrap_or("-"), %live_address, "A second stream for the agent was refused: it has a live one (possible stolen certificate).");
        let reason = format!(
            "agent {agent} already has a live stream (from {live_address}, heard {} s ago); a second one is refused: is its certificate in use elsewhere?",
            live.silent_for.as_secs()
        );
        self.ingest.record_refusal(agent, &reason).await;
        Status::already_exists(reason)
    }

    /// Refuses a stream whose agent's lease another live manager holds
    /// (logged, recorded, answered as a second stream is).
    async fn refuse_held(&self, held: crate::store::LeaseHeld) -> Status {
        let agent = &self.agent_id;
        warn!(%agent, address = self.address.as_deref().unwrap_or("-"), manager = %Escaped(&held.manager), manager_address = %Escaped(&held.address), "A second stream for the agent was refused: it has a live one on another manager (possible stolen certificate).");
        let reason = format!(
            "agent {agent} already has a live stream on manager {} ({}, heard {} s ago); a second one is refused: is its certificate in use elsewhere?",
            held.manager,
            held.address,
            held.silent_for_ms / 1000
        );
        self.ingest.record_refusal(agent, &reason).await;
        Status::already_exists(reason)
    }

    /// Waits (a bounded time) for the stream `replaced` to finish the
    /// batches it has in flight.
    async fn wait_for(&self, replaced: &Replaced) {
        let agent = &self.agent_id;
        tokio::select! {
            _ = replaced.finished.cancelled() => {}
            _ = self.ingest.shutdown.cancelled() => {}
            _ = tokio::time::sleep(REPLACED_STREAM_WAIT) => {
                warn!(%agent, wait_s = REPLACED_STREAM_WAIT.as_secs(), "The stream this one replaces did not finish its batches in time; going on (what it has not committed is refused and sent again).");
            }
        }
    }

    async fn run(self, mut inbound: Streaming<AgentMessage>) {
        let agent = self.agent_id.clone();
        // Boxed: a task's memory is that of its largest state, held for
        // the stream's life; the Hello's database work is needed once.
        let opened = Box::pin(self.open(&mut inbound)).await;
        match opened {
            Ok(task) => {
                // The open stream is a task of its own, and this one ends:
                // a task's memory is that of its whole future, and this
                // one's holds the opening (the service's clone, the wait
                // for the Hello) beside the stream's loop, for the
                // stream's life (9 KiB per agent in a heap profile).
                // Its state is boxed: an async fn keeps its arguments
                // beside the locals they are moved into, and the state by
                // value was there twice (4.3 KiB tasks in a heap profile).
                let tasks = self.ingest.tasks.clone();
                drop(self);
                tasks.spawn(Box::new(task).run(inbound));
            }
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
        // The Hello's database work, among [`OPENINGS_AT_ONCE`].
        let mut turn = Some(ingest.openings.acquire().await);
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
        // One live stream per agent: on this manager (an older stream is
        // ended and its batches finished first), then in the cluster (the
        // lease).
        if let Some(live) = ingest.sessions.live_stream(&self.new_stream()) {
            return Err(self.refuse_second(live).await);
        }
        let (guard, replaced) =
            match ingest
                .sessions
                .register(self.new_stream(), self.tx.clone(), &ingest.shutdown)
            {
                Ok(registered) => registered,
                // Another stream registered since the check above.
                Err(live) => return Err(self.refuse_second(live).await),
            };
        // Until the stream's task owns it: an opening that fails lets go.
        let finished = guard.finished.clone().drop_guard();
        let unregister = |status: Status| {
            ingest.sessions.unregister(agent, guard.generation);
            status
        };
        if let Some(old) = &replaced {
            if !self.renewed {
                warn!(%agent, address = self.address.as_deref().unwrap_or("-"), old_address = old.live.address.as_deref().unwrap_or("-"), silent_s = old.live.silent_for.as_secs(), "Agent's stream was silent past the agent timeout; a new stream took over.");
            }
            // Without a turn: other agents' openings go on meanwhile.
            turn.take();
            self.wait_for(old).await;
            turn.replace(ingest.openings.acquire().await);
        }
        let lease = match &ingest.cluster {
            None => None,
            Some(cluster) => match cluster.take_lease(agent, self.renewed).await {
                Ok(Ok(lease)) => {
                    if let Some(from) = lease.taken_from {
                        warn!(%agent, from_manager = from, generation = lease.generation, "Took over the agent's lease from another manager (dead, or the agent silent there past the agent timeout).");
                    }
                    guard.set_lease(lease.generation);
                    Some(lease.generation)
                }
                Ok(Err(held)) => return Err(unregister(self.refuse_held(held).await)),
                Err(error) => return Err(unregister(error.into())),
            },
        };
        let opened = self.welcome(&hello, &guard, lease).await;
        let stream = match opened {
            Ok(stream) => stream,
            Err(status) => {
                if let (Some(cluster), Some(lease)) = (&ingest.cluster, lease) {
                    cluster.release_lease(agent, lease).await;
                }
                return Err(unregister(status));
            }
        };
        // Commands claimed for this stream are sent at or after this.
        let welcomed_at = crate::store::now_ms();
        guard.welcomed();
        Ok(SessionTask {
            welcomed_at,
            store: ingest.store.clone(),
            heartbeats: ingest.heartbeats.clone(),
            sessions: ingest.sessions.clone(),
            responder: ingest.responder.clone(),
            cluster: ingest.cluster.clone().zip(lease),
            stream,
            agent_id: agent.clone(),
            name: self.name.clone(),
            ca: ingest.ca.clone(),
            renewals: 0,
            tx: self.tx.clone(),
            guard,
            _finished: finished,
        })
    }

    /// The opening's work once the stream holds the agent's lease
    /// (`lease`, when there are leases): records the Hello and the spool,
    /// switches to a renewed certificate, answers with Welcome and opens
    /// the pipeline's stream.
    async fn welcome(
        &self,
        hello: &palisade_proto::v1::Hello,
        guard: &SessionGuard,
        lease: Option<u64>,
    ) -> Result<Stream, Status> {
        let agent = &self.agent_id;
        let ingest = &self.ingest;
        let started_at = hello
            .started_at
            .as_ref()
            .map(wire::millis)
            .map(|t| protocol::sane_read_at(t, crate::store::now_ms()))
            .and_then(|(t, clamped)| (!clamped).then_some(t));
        let vanished = || Status::internal("agent vanished");
        // The record as the Hello left it (its spool recorded, the
        // sequence reset for a new one), read with the group's write.
        let Connected { mut record, spool } = ingest
            .hellos
            .submit(Hello {
                agent_id: agent.clone(),
                version: hello.agent_version.clone(),
                hostname: hello.hostname.clone(),
                os: hello.os.clone(),
                address: self.address.clone(),
                started_at,
                spool_id: hello.spool_id.clone(),
            })
            .await?
            .ok_or_else(vanished)?;
        if let SpoolChange::New { last_sequence } = spool {
            warn!(
                %agent,
                spool = %Escaped(&hello.spool_id),
                stored_until = last_sequence,
                "The agent's spool is new (a reinstalled agent, or its spool was deleted): its sequence numbers start again at 1, and are accepted from there."
            );
        }
        if self.renewed {
            let old = ingest.store.switch_to_renewed(agent, &self.serial).await?;
            info!(%agent, serial = %self.serial, revoked = %old, "Agent connected with its renewed certificate; the old one is revoked.");
            record = ingest.store.agent(agent).await?.ok_or_else(vanished)?;
        }
        let welcome = ManagerMessage {
            kind: Some(ManagerKind::Welcome(Welcome {
                agent_id: agent.clone(),
                agent_name: self.name.clone(),
                last_sequence: record.last_sequence,
                protocol_version: palisade_proto::PROTOCOL_VERSION,
                max_batch_bytes: ingest.max_batch_bytes as u64,
                manager_addresses: self.manager_addresses.clone(),
            })),
        };
        self.tx
            .send(Ok(Box::new(welcome)))
            .await
            .map_err(|_| Status::cancelled("stream closed"))?;
        info!(%agent, name = %Escaped(&self.name), address = self.address.as_deref().unwrap_or("-"), "Agent stream opened.");
        Ok(ingest.pipeline.open(
            Source::agent(&record).with_lease(lease),
            self.tx.clone(),
            guard.token.clone(),
        ))
    }
}

struct SessionTask {
    store: Store,
    heartbeats: Heartbeats,
    sessions: Sessions,
    responder: Responder,
    /// The agent's events through the pipeline (flow control, acks).
    stream: Stream,
    agent_id: String,
    name: String,
    ca: Option<Arc<CertificateAuthority>>,
    /// Renewed certificates issued on this stream (one is allowed).
    renewals: u32,
    tx: AgentSender,
    guard: SessionGuard,
    /// When its Welcome went (ms): commands sent before went to an
    /// earlier stream.
    welcomed_at: i64,
    /// The cluster and the lease generation the stream holds.
    cluster: Option<(Cluster, u64)>,
    /// Tells a newer stream waiting on this one that it has ended.
    _finished: tokio_util::sync::DropGuard,
}

impl SessionTask {
    async fn run(mut self: Box<Self>, mut inbound: Streaming<AgentMessage>) {
        let agent = self.agent_id.clone();
        if let Err(error) = Box::pin(self.responder.deliver_pending(&agent, self.welcomed_at)).await
        {
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
                        Some(EndReason::LeaseLost(why)) => {
                            warn!(%agent, reason = %why, "Ended agent stream.");
                            let _ = self.tx.send(Err(Status::aborted(why))).await;
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
                    // Boxed: an idle stream holds only the wait for its
                    // next message, not room for a batch's work.
                    if let Err(status) = Box::pin(self.handle(m)).await {
                        warn!(%agent, error = %Escaped(status.message()), "Agent stream failed.");
                        // The batches admitted before are stored and
                        // acknowledged before the stream ends.
                        let _ = Box::pin(self.stream.finish()).await;
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
        // What was admitted is stored and acknowledged before the stream
        // is let go (a failure was logged and told to the agent).
        // Boxed, as the lease's release below: the task holds their room
        // for the stream's whole life otherwise.
        let _ = Box::pin(self.stream.finish()).await;
        self.sessions.unregister(&agent, self.guard.generation);
        self.heartbeats.seen(&agent);
        // The agent (or its connection) ended the stream: let it go to
        // another manager at once. A stream the manager ended needs not:
        // at shutdown the manager releases all its leases in one write, a
        // replaced stream's lease is the newcomer's to take.
        if let Some((cluster, lease)) = &self.cluster
            && !self.guard.token.is_cancelled()
        {
            Box::pin(cluster.release_lease(&agent, *lease)).await;
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
                // Returns once the batch is admitted; the stream commits and
                // acknowledges it. While it waits, nothing more is read.
                let events = batch.events.into_iter().map(wire::received_event).collect();
                match self.stream.submit(events, batch.lost_before).await {
                    Ok(()) => {}
                    // The session's own select says why it ends.
                    Err(SubmitError::Ending) => {}
                    Err(SubmitError::Failed(e)) => return Err(e.into()),
                }
            }
            Some(AgentKind::Heartbeat(hb)) => {
                self.heartbeats.heartbeat(
                    &self.agent_id,
                    Figures {
                        spool_depth: hb.spool_depth,
                        dropped_events: hb.dropped_events,
                        read_lag_bytes: hb.read_lag_bytes,
                    },
                );
            }
            Some(AgentKind::CommandResult(result)) => {
                self.responder.on_result(&self.agent_id, &result).await?;
            }
            Some(AgentKind::Renew(request)) => {
                let answer = self.renew(&request).await?;
                self.tx
                    .send(Ok(Box::new(ManagerMessage {
                        kind: Some(ManagerKind::Renewed(answer)),
                    })))
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
