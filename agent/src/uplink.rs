//! The agent's one stream to the manager: it connects with the agent's
//! certificate, sends spooled events in order, deletes them when they are
//! acknowledged, reports status in heartbeats and receives commands.
//!
//! A broken or refused stream is retried with exponential backoff and
//! jitter (0.5 s doubling to 60 s), so a fleet does not reconnect in
//! lockstep after a manager restart. After each (re)connection the manager's
//! Welcome says which sequence it already has; everything after it in the
//! spool is sent again, and a heartbeat goes out at once so the manager
//! learns the spool depth and the dropped count as soon as it is back.
//!
//! Events go out in batches of `batch_events`, and of at most the bytes
//! the manager announces in its Welcome (`max_batch_bytes`); a batch that
//! is not full is held until its oldest event is `batch_age` old, so a
//! busy agent sends few large batches and a quiet one still sends within
//! that delay. At most [`WINDOW`] batches are unacknowledged; the spool,
//! not memory, holds everything else.
//!
//! A batch is never larger than the manager takes, so it is never refused
//! and resent forever: an event too large for any batch is sent cut and
//! flagged `truncated` (the spool keeps it whole until acknowledged).
//! Events the full spool dropped before they were sent are declared in the
//! next batch (`lost_before`), so the manager accepts the gap.
//!
//! With several manager addresses (`[manager] address` as a list, in order
//! of preference) the agent connects to the first that answers, starting
//! after the one whose stream just ended, so it moves on when its manager
//! goes away. While on a later address it tries the earlier ones every
//! `failback_interval`; when one answers (TCP and the TLS handshake), it
//! leaves gracefully: it ends its side of the stream, takes the
//! acknowledgements and commands the manager still sends until the manager
//! closes, and only then connects to the earlier address, so the old
//! manager has let go of the agent's stream before the new one sees it.
//!
//! When the certificate is due for renewal ([`crate::renew`]) the session
//! asks for a new one; once it is installed the agent reconnects at once
//! with it. A refused stream (a second stream while this agent's is live,
//! a connection from outside its registered address) is logged with the
//! manager's reason and retried with the same backoff.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use palisade_common::tls::{ClientIdentity, error_chain, refused_certificate_alert};
use palisade_proto::v1::agent_message::Kind as AgentKind;
use palisade_proto::v1::agent_service_client::AgentServiceClient;
use palisade_proto::v1::manager_message::Kind as ManagerKind;
use palisade_proto::v1::{
    AgentMessage, Command, CommandResult, Event, EventBatch, Heartbeat, Hello, RenewRequest,
};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig};
use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::renew;
use crate::respond::Responder;
use crate::spool::{DROPPED_EVENTS, Spool, SpoolError};

/// Batches sent but not yet acknowledged.
pub const WINDOW: usize = 8;
/// The batch limit when the manager announces none (one that predates
/// it): tonic's default 4 MiB message limit, less headroom.
pub const DEFAULT_BATCH_BYTES: u64 = (4 << 20) - (64 << 10);
/// What an event costs in a batch beside its line, location and format
/// (field tags, lengths, sequence, time), rounded up.
const EVENT_OVERHEAD: u64 = 64;
/// What a batch costs beside its events (message tags, `lost_before`).
const BATCH_OVERHEAD: u64 = 64;
/// The smallest batch limit the agent works with, whatever is announced.
const MIN_BATCH_BYTES: u64 = 4096;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long a failback probe may take to connect to an earlier address.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a graceful leave waits for the manager to close the stream.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a refused renewal, ask again this much later (by the agent's clock).
const RENEW_RETRY_MS: i64 = 3_600_000;

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The TLS material is unusable (not retried).
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Connecting failed.
    #[error("cannot connect to the manager at {address}: {reason}")]
    Connect {
        /// The address tried.
        address: String,
        /// Why.
        reason: String,
    },
    /// The manager refused or ended the stream.
    #[error("manager: {0}")]
    Status(#[from] tonic::Status),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The manager broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// How the uplink ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The agent is shutting down.
    Shutdown,
    /// The manager asked the agent to restart itself (`palisadectl -R`).
    Restart,
}

/// Shared counters the uplink reports.
#[derive(Debug, Clone, Default)]
pub struct AgentStats {
    /// Bytes not yet read of the file furthest behind.
    pub read_lag: Arc<AtomicU64>,
}

/// The uplink.
#[derive(Debug)]
pub struct Uplink {
    config: AgentConfig,
    spool: Spool,
    spooled: Arc<Notify>,
    stats: AgentStats,
    responder: Responder,
    /// When this agent started, sent in every Hello.
    started_at: prost_types::Timestamp,
    /// Where results of commands, and of blocks the agent lifted itself,
    /// are queued in the order they happened.
    results_tx: mpsc::UnboundedSender<CommandResult>,
    /// The queue, kept across reconnections; one session holds it.
    results: tokio::sync::Mutex<ResultQueue>,
}

/// Command results waiting to be reported.
#[derive(Debug)]
struct ResultQueue {
    rx: mpsc::UnboundedReceiver<CommandResult>,
    /// Taken from `rx` but not sent because the stream broke.
    unsent: std::collections::VecDeque<CommandResult>,
}

impl Uplink {
    /// An uplink sending from `spool`, woken by `spooled`, carrying out
    /// commands with `responder`.
    pub fn new(
        config: AgentConfig,
        spool: Spool,
        spooled: Arc<Notify>,
        stats: AgentStats,
        responder: Responder,
        started_at: std::time::SystemTime,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        // Blocks lifted at their timeout are reported like command results.
        let mut lifted = responder.subscribe_reports();
        let forward = tx.clone();
        tokio::spawn(async move {
            while let Some(report) = lifted.recv().await {
                if forward.send(report).is_err() {
                    break;
                }
            }
        });
        Self {
            config,
            spool,
            spooled,
            stats,
            responder,
            started_at: prost_types::Timestamp::from(started_at),
            results_tx: tx,
            results: tokio::sync::Mutex::new(ResultQueue {
                rx,
                unsent: std::collections::VecDeque::new(),
            }),
        }
    }

    /// Carries out a command in the background; its result joins the queue.
    async fn execute(&self, command: Command) {
        info!(id = %command.id, response = %command.response, srcip = %command.srcip, "Received a command.");
        let responder = self.responder.clone();
        let tx = self.results_tx.clone();
        tokio::spawn(async move {
            let result = responder.execute_command(&command).await;
            let _ = tx.send(result);
        });
    }

    /// Keeps a stream to the manager open until `shutdown`, or until the
    /// manager asks for a restart.
    pub async fn run(self, shutdown: CancellationToken) -> Result<Stop, UplinkError> {
        let mut backoff = BACKOFF_MIN;
        // Not before this time (the agent's clock): a refused renewal.
        let mut renew_after = i64::MIN;
        // The manager address tried first by the next connection.
        let mut first = 0;
        loop {
            // Read again for every connection: the certificate may have
            // been renewed.
            let tls = self.tls()?;
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Ok(Stop::Shutdown),
                r = self.session(tls, &shutdown, &mut renew_after, &mut first) => r,
            };
            match result {
                Ok(Some(stop)) => return Ok(stop),
                Ok(None) => backoff = BACKOFF_MIN,
                Err(UplinkError::Spool(e)) => return Err(UplinkError::Spool(e)),
                Err(error) => {
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = BACKOFF_MIN;
                    }
                    let wait = jitter(backoff);
                    warn!(%error, retry_in_ms = wait.as_millis() as u64, "Manager stream ended.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(Stop::Shutdown),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// The agent's status now.
    async fn heartbeat(&self) -> Result<Heartbeat, UplinkError> {
        Ok(Heartbeat {
            sent_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            spool_depth: self.spool.depth().await?,
            dropped_events: self.spool.counter(DROPPED_EVENTS).await?,
            read_lag_bytes: self.stats.read_lag.load(Ordering::Relaxed),
        })
    }

    fn tls(&self) -> Result<ClientTlsConfig, UplinkError> {
        renew::recover(&self.config.cert, &self.config.key)
            .map_err(|e| UplinkError::Tls(e.to_string()))?;
        ClientIdentity {
            ca_cert: &self.config.ca_cert,
            cert: &self.config.cert,
            key: &self.config.key,
            server_name: &self.config.server_name,
        }
        .tls_config()
        .map_err(|e| UplinkError::Tls(e.to_string()))
    }

    /// A connection to the first manager address that answers, trying
    /// them in order from `first` round to the start; and its index.
    async fn connect(
        &self,
        tls: &ClientTlsConfig,
        first: usize,
    ) -> Result<(Channel, usize), UplinkError> {
        let addresses = &self.config.manager_addresses;
        let mut reasons = Vec::new();
        for i in (0..addresses.len()).map(|k| (first + k) % addresses.len()) {
            match self
                .connect_to(&addresses[i], tls.clone(), Duration::from_secs(10))
                .await
            {
                Ok(channel) => return Ok((channel, i)),
                Err(reason) if addresses.len() == 1 => {
                    return Err(UplinkError::Connect {
                        address: addresses[i].clone(),
                        reason,
                    });
                }
                Err(reason) => {
                    warn!(address = %addresses[i], %reason, "Cannot connect to this manager; trying the next.");
                    reasons.push(format!("{}: {reason}", addresses[i]));
                }
            }
        }
        Err(UplinkError::Connect {
            address: addresses.join(", "),
            reason: reasons.join("; "),
        })
    }

    async fn connect_to(
        &self,
        address: &str,
        tls: ClientTlsConfig,
        timeout: Duration,
    ) -> Result<Channel, String> {
        palisade_common::tls::endpoint(address, tls)
            .map_err(|e| e.to_string())?
            .connect_timeout(timeout)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect()
            .await
            .map_err(|e| error_chain(&e))
    }

    /// Resolves with the index of an address before `connected` once one
    /// answers, trying every `failback_interval`; never while on the first.
    async fn failback(&self, tls: &ClientTlsConfig, connected: usize) -> usize {
        if connected == 0 {
            return std::future::pending().await;
        }
        let every = self.config.failback_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for (i, address) in self.config.manager_addresses[..connected]
                .iter()
                .enumerate()
            {
                if self
                    .connect_to(address, tls.clone(), PROBE_TIMEOUT)
                    .await
                    .is_ok()
                {
                    return i;
                }
            }
        }
    }

    /// One stream; `Ok(None)` when the agent should connect again at once:
    /// its certificate was renewed, or an earlier manager address answers
    /// again (`first` then names it).
    async fn session(
        &self,
        tls: ClientTlsConfig,
        shutdown: &CancellationToken,
        renew_after: &mut i64,
        first: &mut usize,
    ) -> Result<Option<Stop>, UplinkError> {
        let (channel, connected) = self.connect(&tls, *first).await?;
        // Should this stream break, the next connection starts with the
        // next address.
        *first = (connected + 1) % self.config.manager_addresses.len();
        let mut client = AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel::<AgentMessage>(WINDOW + 4);
        // Cancelled to end this side of the stream when moving back to an
        // earlier manager address.
        let leave = CancellationToken::new();
        let outbound = ReceiverStream::new(rx).take_until(leave.clone().cancelled_owned());
        let send = |m: AgentKind| {
            let tx = tx.clone();
            async move {
                tx.send(AgentMessage { kind: Some(m) })
                    .await
                    .map_err(|_| UplinkError::Protocol("stream closed".into()))
            }
        };
        send(AgentKind::Hello(Hello {
            protocol_version: palisade_proto::PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            started_at: Some(self.started_at),
            spool_id: self.spool.id().await?,
        }))
        .await?;
        let mut inbound = client
            .session(outbound)
            .await
            .map_err(explain_status)?
            .into_inner();
        let welcome = match inbound.message().await.map_err(explain_status)? {
            Some(m) => match m.kind {
                Some(ManagerKind::Welcome(w)) => w,
                _ => {
                    return Err(UplinkError::Protocol(
                        "the first message was not Welcome".into(),
                    ));
                }
            },
            None => {
                return Err(UplinkError::Protocol(
                    "the manager closed the stream".into(),
                ));
            }
        };
        let batch_bytes = match welcome.max_batch_bytes {
            0 => DEFAULT_BATCH_BYTES,
            n => n.max(MIN_BATCH_BYTES),
        };
        let certificate = match renew::Current::read(&self.config.cert) {
            Ok(c) => Some(c),
            Err(error) => {
                warn!(%error, "Cannot read this agent's certificate; it will not be renewed.");
                None
            }
        };
        let renew_at = certificate.as_ref().map(|c| c.due.max(*renew_after));
        info!(
            manager = %self.config.manager_addresses[connected],
            agent = %welcome.agent_id,
            name = %welcome.agent_name,
            stored = welcome.last_sequence,
            batch_bytes,
            renew_at = %renew_at.map(palisade_common::time::show_millis).unwrap_or_default(),
            "Connected to the manager."
        );
        let mut renewing: Option<renew::Pending> = None;
        // What the events of one batch may take.
        let budget = batch_bytes - BATCH_OVERHEAD;
        self.responder
            .set_announced_manager_addresses(&welcome.manager_addresses);
        self.spool.acknowledge(welcome.last_sequence).await?;
        let mut acked = welcome.last_sequence;
        let mut sent = welcome.last_sequence;
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        // Status right after Welcome, then every interval.
        let mut heartbeat = tokio::time::interval(self.config.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let batch_age = i64::try_from(self.config.batch_age.as_millis()).unwrap_or(i64::MAX);
        heartbeat.tick().await;
        send(AgentKind::Heartbeat(self.heartbeat().await?)).await?;
        let mut results = self.results.lock().await;
        let failback = self.failback(&tls, connected);
        tokio::pin!(failback);
        // Moving back to this earlier address, once the manager closed the
        // stream or at this deadline.
        let mut leaving: Option<(usize, tokio::time::Instant)> = None;
        while let Some(r) = results.unsent.pop_front() {
            if send(AgentKind::CommandResult(r.clone())).await.is_err() {
                results.unsent.push_front(r);
                return Err(UplinkError::Protocol("stream closed".into()));
            }
        }
        loop {
            // Re-decided on every wake-up: a partial batch waits for more
            // events or for its age.
            let mut hold_until: Option<tokio::time::Instant> = None;
            // Nothing in flight: send what there is at once, so a quiet
            // agent adds no delay to detection. Under load, acknowledgements
            // take a moment and batches fill up meanwhile (up to
            // `batch_events`, held at most `batch_age`).
            while in_flight.len() < WINDOW && hold_until.is_none() && leaving.is_none() {
                let (batch, full) = self
                    .spool
                    .pending_within(sent, self.config.batch_events, budget, EVENT_OVERHEAD)
                    .await?;
                let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                    break;
                };
                let last = last.sequence;
                let lost_before = first.sequence.saturating_sub(sent + 1);
                let age = jiff::Timestamp::now().as_millisecond() - first.event.read_at;
                if !in_flight.is_empty()
                    && !full
                    && batch.len() < self.config.batch_events as usize
                    && age < batch_age
                {
                    let wait = u64::try_from(batch_age - age.max(0)).unwrap_or(0);
                    hold_until =
                        Some(tokio::time::Instant::now() + Duration::from_millis(wait.max(1)));
                    break;
                }
                if lost_before > 0 {
                    warn!(
                        lost = lost_before,
                        from = sent + 1,
                        to = first.sequence - 1,
                        "Events dropped from the full spool before they were sent; telling the manager."
                    );
                }
                let events = batch
                    .into_iter()
                    .map(|e| {
                        fit_in_batch(
                            Event {
                                sequence: e.sequence,
                                location: e.event.location,
                                read_at: Some(palisade_common::time::proto_from_millis(
                                    e.event.read_at,
                                )),
                                line: e.event.line.into(),
                                log_format: e.event.log_format,
                                truncated: e.event.truncated,
                            },
                            budget,
                        )
                    })
                    .collect();
                send(AgentKind::Events(EventBatch {
                    events,
                    lost_before,
                }))
                .await?;
                sent = last;
                in_flight.push_back(last);
            }
            tokio::select! {
                Some(result) = results.rx.recv(), if leaving.is_none() => {
                    if send(AgentKind::CommandResult(result.clone())).await.is_err() {
                        results.unsent.push_back(result);
                        return Err(UplinkError::Protocol("stream closed".into()));
                    }
                }
                _ = shutdown.cancelled() => return Ok(Some(Stop::Shutdown)),
                _ = sleep_until_clock(&*self.config.clock, renew_at), if renewing.is_none() && leaving.is_none() => {
                    match renew::Pending::new() {
                        Ok(pending) => {
                            info!("This agent's certificate is due for renewal; asking the manager.");
                            send(AgentKind::Renew(RenewRequest { csr_der: pending.csr_der.clone() })).await?;
                            renewing = Some(pending);
                        }
                        Err(error) => {
                            warn!(%error, "Cannot renew this agent's certificate.");
                            *renew_after = self.config.clock.now_ms().saturating_add(RENEW_RETRY_MS);
                            return Err(UplinkError::Protocol(error.to_string()));
                        }
                    }
                }
                index = &mut failback, if leaving.is_none() => {
                    info!(
                        from = %self.config.manager_addresses[connected],
                        to = %self.config.manager_addresses[index],
                        "An earlier manager address answers again; moving back to it."
                    );
                    leaving = Some((index, tokio::time::Instant::now() + LEAVE_TIMEOUT));
                    leave.cancel();
                }
                _ = sleep_until_some(leaving.map(|(_, deadline)| deadline)) => {
                    if let Some((index, _)) = leaving {
                        warn!("The manager did not close the stream in time; moving on.");
                        *first = index;
                        return Ok(None);
                    }
                }
                m = inbound.message() => {
                    if let (Some((index, _)), Err(_) | Ok(None)) = (leaving, &m) {
                        *first = index;
                        return Ok(None);
                    }
                    let Some(m) = m.map_err(explain_status)? else {
                        return Err(UplinkError::Protocol("the manager closed the stream".into()));
                    };
                    match m.kind {
                        Some(ManagerKind::Ack(ack)) => {
                            if ack.sequence > acked {
                                self.spool.acknowledge(ack.sequence).await?;
                                acked = ack.sequence;
                            }
                            while in_flight.front().is_some_and(|&s| s <= acked) {
                                in_flight.pop_front();
                            }
                        }
                        Some(ManagerKind::Command(command)) => self.execute(command).await,
                        Some(ManagerKind::Restart(restart)) => {
                            info!(requested_by = %restart.requested_by, "The manager asked this agent to restart.");
                            return Ok(Some(Stop::Restart));
                        }
                        Some(ManagerKind::Renewed(renewed)) => {
                            let (Some(pending), Some(current)) = (renewing.take(), certificate.as_ref()) else {
                                return Err(UplinkError::Protocol("a renewed certificate that was not asked for".into()));
                            };
                            if !renewed.error.is_empty() {
                                *renew_after = self.config.clock.now_ms().saturating_add(RENEW_RETRY_MS);
                                warn!(reason = %renewed.error, "The manager refused to renew this agent's certificate; asking again in an hour.");
                                continue;
                            }
                            match pending.install(&renewed.certificate_pem, current, &self.config.cert, &self.config.key) {
                                Ok(()) => {
                                    info!("Installed this agent's renewed certificate; reconnecting with it.");
                                    *first = connected;
                                    return Ok(None);
                                }
                                Err(error) => {
                                    *renew_after = self.config.clock.now_ms().saturating_add(RENEW_RETRY_MS);
                                    warn!(%error, "Cannot install the renewed certificate; keeping the current one.");
                                }
                            }
                        }
                        Some(ManagerKind::Welcome(_)) | None => {}
                    }
                }
                _ = self.spooled.notified(), if in_flight.len() < WINDOW => {}
                _ = sleep_until_some(hold_until) => {}
                _ = heartbeat.tick(), if leaving.is_none() => {
                    send(AgentKind::Heartbeat(self.heartbeat().await?)).await?;
                }
            }
        }
    }
}

/// `event`, its line cut (and flagged `truncated`) when the event alone
/// would take more than `budget` bytes of a batch.
fn fit_in_batch(mut event: Event, budget: u64) -> Event {
    use prost::Message;
    // Two bytes of room for the flag, which a cut sets.
    let size = event.encoded_len() as u64 + EVENT_OVERHEAD + 2;
    if size > budget {
        let length = event.line.len();
        let keep = (length as u64).saturating_sub(size - budget);
        event.line.truncate(usize::try_from(keep).unwrap_or(0));
        event.truncated = true;
        warn!(
            sequence = event.sequence,
            length,
            kept = event.line.len(),
            limit = budget,
            "An event is larger than the manager's batch limit; sent cut and flagged truncated."
        );
    }
    event
}

/// Sleeps until `clock` reads `at`, or forever without one.
async fn sleep_until_clock(clock: &dyn palisade_common::clock::Clock, at: Option<i64>) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `t`, or forever without one.
async fn sleep_until_some(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Spreads retries: a random wait between half and all of `d`.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Names the likely cause of a transport failure on the first call: with
/// TLS 1.3 a refused client certificate shows up here, not at connect.
fn explain_status(status: tonic::Status) -> UplinkError {
    let chain = error_chain(&status);
    let transport = matches!(
        status.code(),
        tonic::Code::Unknown | tonic::Code::Unavailable
    );
    // The TLS alert may be only in the debug form of a transport error.
    let refused = refused_certificate_alert(&format!("{chain} {status:?}")).is_some();
    if transport && refused {
        return UplinkError::Status(tonic::Status::unauthenticated(format!(
            "the manager refused this agent's certificate ({chain})"
        )));
    }
    let closed = chain.contains("connection closed") || chain.contains("broken pipe");
    if closed && matches!(status.code(), tonic::Code::Unknown | tonic::Code::Cancelled) {
        return UplinkError::Status(tonic::Status::unavailable(format!(
            "the manager closed the connection right after the TLS handshake; it may have refused this agent's certificate (the manager's log says why): {chain}"
        )));
    }
    UplinkError::Status(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn event(line: usize) -> Event {
        Event {
            sequence: u64::MAX,
            location: "/var/log/nginx/access.log".into(),
            read_at: Some(palisade_common::time::proto_from_millis(i64::MAX)),
            line: vec![b'x'; line].into(),
            log_format: "nginx".into(),
            truncated: false,
        }
    }

    #[test]
    fn an_event_too_large_for_a_batch_is_cut_to_fit_and_flagged() {
        let budget = 100_000;
        let fitted = fit_in_batch(event(4 << 20), budget);
        assert!(fitted.truncated);
        assert!(fitted.encoded_len() as u64 + EVENT_OVERHEAD <= budget);
        assert!(fitted.line.len() > 90_000, "cut no more than needed");
        // One that fits is left alone.
        let small = fit_in_batch(event(1000), budget);
        assert!(!small.truncated);
        assert_eq!(small.line.len(), 1000);
    }

    #[test]
    fn the_overheads_cover_every_field() {
        // Every number at its longest, a line whose length takes 4 bytes.
        let e = event(16 << 20);
        let data = (e.line.len() + e.location.len() + e.log_format.len()) as u64;
        let batch = AgentMessage {
            kind: Some(AgentKind::Events(EventBatch {
                events: vec![e.clone(), e],
                lost_before: u64::MAX,
            })),
        };
        let encoded = batch.encoded_len() as u64;
        assert!(
            encoded <= 2 * (data + EVENT_OVERHEAD) + BATCH_OVERHEAD,
            "{encoded} bytes for {data} bytes of data twice"
        );
    }
}
