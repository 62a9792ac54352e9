//! A fleet of simulated agents in one process, for the fleet benchmark
//! (`benches/fleet.rs`) and the fan-out tests: each agent has its own
//! identity (registered in the manager's database and signed by its CA,
//! as `agent add` does, without writing a bundle to disk), its own TCP
//! connection and mutual-TLS handshake and its own stream, speaks the real
//! protocol (Hello, heartbeats, optional event batches) and acknowledges
//! every command with a result, as a real agent does after running it. It
//! reconnects when its stream ends (a manager restart) until the fleet is
//! stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use palisade_manager::ManagerConfig;
use palisade_manager::pki::CertificateAuthority;
use palisade_manager::store::Store;
use palisade_proto::v1::agent_message::Kind as AgentKind;
use palisade_proto::v1::agent_service_client::AgentServiceClient;
use palisade_proto::v1::manager_message::Kind as ManagerKind;
use palisade_proto::v1::{AgentMessage, Command, CommandResult, Heartbeat, ManagerMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A real agent's first wait before connecting again (its uplink's
/// `BACKOFF_MIN`), which it jitters to between half and all of it.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// How long the simulated agent `id` waits before connecting again: as a
/// real agent does the first time (0.25-0.5 s), spread by its id rather
/// than at random so that runs compare.
fn reconnect_after(id: &str) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    id.hash(&mut hasher);
    let spread = (hasher.finish() % 1000) as u32;
    RECONNECT_AFTER / 2 + RECONNECT_AFTER / 2 * spread / 1000
}

/// One simulated agent's identity.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    /// Its id.
    pub id: String,
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Key, PEM.
    pub key_pem: String,
}

/// Registers `n` agents named `{prefix}{i}` in the manager's database, each
/// with a certificate from the manager's CA (the code `agent add` runs,
/// without the bundle files).
pub async fn register(
    config: &ManagerConfig,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<AgentIdentity>> {
    let ca = CertificateAuthority::load(&config.ca_cert, &config.ca_key)?;
    let store = Store::open(&config.database).await?;
    let mut identities = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{prefix}{i}");
        let (id, cert) = store
            .add_agent(&name, "any", |id| {
                let cert = ca.issue_agent(id, &name).map_err(|e| e.to_string())?;
                Ok((cert.serial.clone(), cert))
            })
            .await?;
        identities.push(AgentIdentity {
            id,
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
        });
    }
    store.close().await;
    Ok(identities)
}

/// Where the simulated agents connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The manager's agents' address.
    pub address: SocketAddr,
    /// The name in its certificate.
    pub server_name: String,
    /// Its CA, PEM.
    pub ca_pem: String,
}

impl Target {
    /// The manager of `config`, listening on `address`.
    pub fn of(config: &ManagerConfig, address: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            address,
            server_name: config.server_name.clone(),
            ca_pem: std::fs::read_to_string(&config.ca_cert)?,
        })
    }
}

/// Log lines each agent sends, when it sends any.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    /// Lines per batch.
    pub lines: usize,
    /// Between batches.
    pub every: Duration,
}

/// A command an agent received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The agent.
    pub agent_id: String,
    /// The command.
    pub command: Command,
    /// When it arrived.
    pub at: Instant,
}

/// Counters of the fleet.
#[derive(Debug, Default)]
pub struct Counters {
    /// Agents whose stream is open (Welcome received).
    pub active: AtomicUsize,
    /// Streams opened, reconnections included.
    pub opened: AtomicU64,
    /// Connection or stream failures.
    pub failures: AtomicU64,
    /// Event batches acknowledged.
    pub acks: AtomicU64,
}

/// The running fleet; dropping it stops every agent.
pub struct Fleet {
    /// Its counters.
    pub counters: Arc<Counters>,
    received: mpsc::UnboundedReceiver<Received>,
    stop: CancellationToken,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Fleet {
    /// Starts one task per identity; each connects at once and keeps its
    /// stream open.
    pub fn start(
        target: &Target,
        identities: &[AgentIdentity],
        traffic: Option<Traffic>,
    ) -> anyhow::Result<Self> {
        crate::install_crypto();
        let counters = Arc::new(Counters::default());
        let (tx, received) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        for identity in identities {
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&target.ca_pem))
                .identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem))
                .domain_name(target.server_name.clone());
            let agent = SimulatedAgent {
                id: identity.id.clone(),
                endpoint: palisade_common::tls::endpoint(&target.address.to_string(), tls)?,
                traffic,
                counters: counters.clone(),
                received: tx.clone(),
                stop: stop.clone(),
            };
            tokio::spawn(agent.run());
        }
        Ok(Self {
            counters,
            received,
            stop,
        })
    }

    /// Agents connected now.
    pub fn active(&self) -> usize {
        self.counters.active.load(Ordering::Relaxed)
    }

    /// Waits until `n` agents are connected, or `limit` passed.
    pub async fn wait_active(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while self.active() < n {
            if start.elapsed() > limit {
                anyhow::bail!(
                    "{} of {n} agents connected after {limit:?} ({} failures)",
                    self.active(),
                    self.counters.failures.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The next command an agent received, within `limit`.
    pub async fn next_command(&mut self, limit: Duration) -> anyhow::Result<Received> {
        tokio::time::timeout(limit, self.received.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no command within {limit:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the fleet stopped"))
    }

    /// Stops every agent.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

struct SimulatedAgent {
    id: String,
    endpoint: tonic::transport::Endpoint,
    traffic: Option<Traffic>,
    counters: Arc<Counters>,
    received: mpsc::UnboundedSender<Received>,
    stop: CancellationToken,
}

impl SimulatedAgent {
    async fn run(self) {
        let mut sequence = 0u64;
        while !self.stop.is_cancelled() {
            let stopped = tokio::select! {
                _ = self.stop.cancelled() => true,
                r = self.session(&mut sequence) => { let _ = r; false }
            };
            if stopped {
                break;
            }
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(reconnect_after(&self.id)) => {}
            }
        }
    }

    /// One stream, until it fails.
    async fn session(&self, sequence: &mut u64) -> anyhow::Result<()> {
        let channel = self.endpoint.connect().await?;
        let (tx, rx) = mpsc::channel(8);
        tx.send(crate::raw_agent::hello(&format!("fleet-{}", self.id)))
            .await?;
        let mut inbound = AgentServiceClient::new(channel)
            .session(ReceiverStream::new(rx))
            .await?
            .into_inner();
        match inbound.message().await? {
            Some(ManagerMessage {
                kind: Some(ManagerKind::Welcome(w)),
            }) => *sequence = (*sequence).max(w.last_sequence),
            other => anyhow::bail!("agent {}: answered {other:?}", self.id),
        }
        self.counters.opened.fetch_add(1, Ordering::Relaxed);
        self.counters.active.fetch_add(1, Ordering::Relaxed);
        let result = self.talk(&tx, &mut inbound, sequence).await;
        self.counters.active.fetch_sub(1, Ordering::Relaxed);
        result
    }

    async fn talk(
        &self,
        tx: &mpsc::Sender<AgentMessage>,
        inbound: &mut tonic::Streaming<ManagerMessage>,
        sequence: &mut u64,
    ) -> anyhow::Result<()> {
        let every = self
            .traffic
            .map(|t| t.every)
            .unwrap_or(Duration::from_secs(30));
        let mut beat = tokio::time::interval(every);
        beat.tick().await;
        loop {
            tokio::select! {
                m = inbound.message() => match m? {
                    Some(ManagerMessage { kind: Some(ManagerKind::Command(command)) }) => {
                        let result = CommandResult {
                            command_id: command.id.clone(),
                            ok: true,
                            message: "simulated".into(),
                            action: command.action,
                            executed_at: Some(palisade_common::time::proto_from_jiff(jiff::Timestamp::now())),
                            refusal_reason: String::new(),
                        };
                        let _ = self.received.send(Received {
                            agent_id: self.id.clone(),
                            command,
                            at: Instant::now(),
                        });
                        tx.send(AgentMessage { kind: Some(AgentKind::CommandResult(result)) }).await?;
                    }
                    Some(ManagerMessage { kind: Some(ManagerKind::Ack(_)) }) => {
                        self.counters.acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {}
                    None => anyhow::bail!("the manager closed the stream"),
                },
                _ = beat.tick() => {
                    let message = match self.traffic {
                        Some(t) => {
                            let events = (0..t.lines)
                                .map(|_| {
                                    *sequence += 1;
                                    crate::raw_agent::event(
                                        *sequence,
                                        format!("192.0.2.{} - - [07/Dec/2026:03:00:00 +0000] \"GET /index.html HTTP/1.1\" 200 512 \"-\" \"fleet\"", *sequence % 250 + 1),
                                    )
                                })
                                .collect();
                            crate::raw_agent::batch(events, 0)
                        }
                        None => AgentMessage {
                            kind: Some(AgentKind::Heartbeat(Heartbeat {
                                sent_at: None,
                                spool_depth: 0,
                                dropped_events: 0,
                                read_lag_bytes: 0,
                            })),
                        },
                    };
                    tx.send(message).await?;
                }
            }
        }
    }
}
