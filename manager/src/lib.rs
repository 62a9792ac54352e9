//! Palisade's manager: agents stream their log lines here over mutual TLS;
//! the manager stores them, judges them with the engine, keeps alerts and
//! sends active responses back. Operators drive it with `palisadectl`.
//!
//! # Layout
//!
//! - [`config`]: `manager.toml`, validated in one pass.
//! - [`pki`]: the private CA and the certificates it issues.
//! - [`setup`]: `init`, `agent add`, `agent remove`.
//! - [`store`]: the SQLite database.
//! - [`ruleset`]: the embedded default ruleset, or an OSSEC `etc`, and the
//!   engine settings of `[ruleset]` (the daemon's and logtest's).
//! - [`limits`]: `[limits]`, the sizes taken in from agents.
//! - [`connections`]: `[connections]`, the limits on connections and
//!   handshakes, and the summarised log of refused ones.
//! - [`protocol`]: what an agent may send on its stream, checked before
//!   use (Hello first, sequences, field lengths, times).
//! - [`pipeline`]: a batch of events through the engine thread
//!   ([`pipeline::analysis`]), the store, the responder and the outputs.
//! - [`responder`]: active-response decisions, delivery and results.
//! - [`wakeups`]: other managers on the same PostgreSQL database waking
//!   this one for their commands to agents held here, and revocations.
//! - [`grouped`]: small writes of many streams (command results, Hellos)
//!   committed together.
//! - [`tls`]: the mutual-TLS endpoint that logs every refused handshake.
//! - [`sessions`]: open agent streams, one live stream per agent.
//! - [`cluster`]: `[manager]`, this manager among several on one database:
//!   its heartbeat row, the agents' leases (one live stream per agent in
//!   the whole cluster).
//! - [`heartbeats`]: agents' heartbeats and last-seen times, written
//!   together every few seconds.
//! - [`memory`]: freed memory given back after many agents left.
//! - [`identities`]: registered operators (`operator add/remove/list`),
//!   who may call the control API, and the CA that renews agents'
//!   certificates.
//! - [`ingest`]: `AgentService`, the agents' stream, feeding the pipeline.
//! - [`control`]: `ControlService`, the operators' API (and its alert
//!   follower).
//! - [`wire`]: the mapping to and from the protobuf messages.
//! - [`outputs`]: where committed alerts go (files, mail, followers); the
//!   layouts are the engine's (`palisade_engine::alert_format`).
//! - [`alert_files`]: `alerts.log` and `alerts.json`, rotated daily.
//! - [`mail`]: e-mail notifications.
//! - [`retention`]: pruning old alerts and events.
//! - [`metrics`]: the Prometheus endpoint.
//! - [`stats`]: the running counters status and metrics read.
//! - [`enroll`]: agent enrollment with one-time tokens.
//! - [`logtest_cli`]: `logtest` and `ruletest`.
//! - [`import_ossec`]: an OSSEC configuration's responses as TOML.
//! - [`cli`]: the command line.
//!
//! What the manager shares with the agent and `palisadectl` lives in
//! `palisade_common` (configuration problems and their lines, durations,
//! CIDRs, the address policy the [`responder`] applies, time conversions,
//! the CA fingerprint, the agent bundle's `agent.toml`, systemd, tracing,
//! signals, exit codes); the manager does not depend on the agent. The
//! quickstart, which runs both, is a crate of its own
//! (`palisade-quickstart`).
//!
//! [`run`] is the daemon; `main.rs` only parses the command line, binds the
//! listeners ([`Listeners::bind`]) and installs signal handlers, so tests
//! run the same code on listeners bound to `127.0.0.1:0`.
#![forbid(unsafe_code)]

pub mod alert_files;
pub mod breaker;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod control;
pub mod enroll;
pub mod grouped;
pub mod heartbeats;
pub mod identities;
pub mod import_ossec;
pub mod ingest;
pub mod limits;
pub mod logtest_cli;
pub mod mail;
pub mod memory;
pub mod metrics;
pub mod outputs;
pub mod pipeline;
pub mod pki;
pub mod protocol;
pub mod responder;
pub mod retention;
pub mod ruleset;
pub mod sessions;
pub mod setup;
pub mod stats;
pub mod store;
pub mod tls;
pub mod wakeups;
pub mod wire;

use std::time::Duration;

use palisade_proto::v1::agent_service_server::AgentServiceServer;
use palisade_proto::v1::control_service_server::ControlServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::ManagerConfig;

/// How often the manager looks for agents removed by another process
/// (on PostgreSQL a notification wakes it at once; this is the safety
/// net).
const REVOCATION_POLL: Duration = Duration::from_secs(1);
/// HTTP/2 streams one connection may have open at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// The listen backlog of the agents' socket: a reconnect storm of
/// thousands of agents (after a manager restart) overflows the usual 128.
/// The kernel caps it at `net.core.somaxconn` (4096 on current kernels).
pub const LISTEN_BACKLOG: u32 = 4096;
/// How long open streams get to end after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The gRPC server failed.
    #[error("server: {0}")]
    Server(#[from] tonic::transport::Error),
    /// The decoders or rules cannot be loaded.
    #[error("ruleset:\n{0}")]
    Ruleset(#[from] palisade_engine::error::LoadErrors),
    /// The mailer could not be set up.
    #[error(transparent)]
    Mail(#[from] mail::MailError),
    /// The enrollment endpoint could not start.
    #[error(transparent)]
    Enroll(#[from] enroll::EnrollError),
    /// The engine thread could not start.
    #[error("cannot start the analysis thread: {0}")]
    Thread(#[from] std::io::Error),
    /// alerts.log or alerts.json cannot be opened.
    #[error("alert files: {0}")]
    AlertFiles(std::io::Error),
    /// A section is on but the caller bound no listener for it.
    #[error("{0} is on, but no listener was bound for it")]
    Unbound(&'static str),
    /// The caller bound a listener for a section that is off.
    #[error("a listener was bound for {0}, which is off")]
    Unwanted(&'static str),
}

/// The sockets the manager serves, bound by its caller: `main` binds the
/// configured addresses ([`Listeners::bind`]), tests bind `127.0.0.1:0`
/// and read the ports back, with no free-port probing.
#[derive(Debug)]
pub struct Listeners {
    /// Agents and palisadectl (mutual TLS), `[server] listen`.
    pub agents: TcpListener,
    /// Agent enrollment, when `[enrollment] enabled`.
    pub enrollment: Option<TcpListener>,
    /// The Prometheus endpoint, when `[metrics] listen` is set.
    pub metrics: Option<TcpListener>,
}

/// An address cannot be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} ({what}): {source}")]
pub struct BindError {
    /// The configuration key that names the address.
    pub what: &'static str,
    /// The address.
    pub address: std::net::SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

impl Listeners {
    /// Binds every address `config` has the manager listen on.
    pub async fn bind(config: &ManagerConfig) -> Result<Self, BindError> {
        async fn bind(
            what: &'static str,
            address: std::net::SocketAddr,
        ) -> Result<TcpListener, BindError> {
            listen(address, LISTEN_BACKLOG).map_err(|source| BindError {
                what,
                address,
                source,
            })
        }
        let enrollment = match config.enrollment.enabled {
            true => Some(bind("enrollment.listen", config.enrollment.listen).await?),
            false => None,
        };
        let metrics = match config.metrics.listen {
            Some(address) => Some(bind("metrics.listen", address).await?),
            None => None,
        };
        Ok(Self {
            agents: bind("server.listen", config.listen).await?,
            enrollment,
            metrics,
        })
    }

    /// Refuses listeners that `config` would leave unserved, or sections
    /// that `config` turns on without a listener.
    fn check(&self, config: &ManagerConfig) -> Result<(), RunError> {
        for (section, on, bound) in [
            (
                "[enrollment]",
                config.enrollment.enabled,
                self.enrollment.is_some(),
            ),
            (
                "[metrics]",
                config.metrics.listen.is_some(),
                self.metrics.is_some(),
            ),
        ] {
            match (on, bound) {
                (true, false) => return Err(RunError::Unbound(section)),
                (false, true) => return Err(RunError::Unwanted(section)),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Binds `address` with a listen backlog of `backlog` (tokio's
/// `TcpListener::bind` uses 128).
pub fn listen(address: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match address {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// Only the agents' listener: for a configuration without enrollment or
/// metrics.
impl From<TcpListener> for Listeners {
    fn from(agents: TcpListener) -> Self {
        Self {
            agents,
            enrollment: None,
            metrics: None,
        }
    }
}

/// Runs the manager on `listeners` until `shutdown` is cancelled.
pub async fn run(
    config: ManagerConfig,
    listeners: impl Into<Listeners>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let Listeners {
        agents: listener,
        enrollment: enrollment_listener,
        metrics: metrics_listener,
    } = {
        let listeners = listeners.into();
        listeners.check(&config)?;
        listeners
    };
    let tls = tls::server_config(&config.ca_cert, &config.cert, &config.key)?;
    let ruleset = std::sync::Arc::new(ruleset::load(&config.ruleset)?);
    for finding in ruleset::steerable_decoders(&ruleset) {
        tracing::warn!(decoder = finding.known.decoder, "{finding}");
    }
    // What Wazuh's analysisd only warns about (logtest/ruletest print it too).
    for warning in &ruleset.rules.warnings {
        tracing::warn!("ruleset: {warning}");
    }
    let hostname = setup::host_name();
    let judging = ruleset::Judging::of(&config);
    let analyzer = pipeline::analysis::Analyzer::start(
        ruleset,
        judging.engine_config(),
        judging.time_source,
        hostname.clone(),
    )?;
    let store = store::Store::open(&config.database).await?;
    identities::adopt_legacy_operator(&config, &store).await;
    let sessions = sessions::Sessions::default();
    let stats = std::sync::Arc::new(stats::Stats::default());
    let mut sinks: Vec<Box<dyn outputs::AlertSink>> = Vec::new();
    let alert_files = alert_files::AlertFiles::start(
        &config.alert_files,
        alert_files::Rendering {
            email_alert_level: config.email.alert_level,
            manager: hostname.clone(),
            zone: jiff::tz::TimeZone::system(),
        },
        alert_files::system_clock(),
    )
    .map_err(RunError::AlertFiles)?;
    if let Some(files) = &alert_files {
        sinks.push(Box::new(files.clone()));
    }
    let mailer = match config.email.enabled {
        true => Some(mail::Mailer::start(
            config.email.clone(),
            stats.clone(),
            shutdown.clone(),
        )?),
        false => None,
    };
    if let Some(mailer) = &mailer {
        sinks.push(Box::new(mailer.clone()));
    }
    let outputs = outputs::Outputs::new(sinks, stats.clone());
    let local = listener.local_addr().ok();
    let cluster = cluster::Cluster::join(
        store.clone(),
        config
            .cluster
            .name
            .clone()
            .unwrap_or_else(|| hostname.clone()),
        &local.map_or_else(|| config.listen.to_string(), |a| a.to_string()),
        config.cluster.clone(),
        config.agent_timeout,
    )
    .await?;
    let cluster_heartbeat = tokio::spawn(cluster.clone().run(
        sessions.clone(),
        stats.clone(),
        shutdown.clone(),
    ));

    let checkpoints = tokio::spawn(store.clone().run_checkpoints(shutdown.clone()));
    let retention = tokio::spawn(retention::run(
        store.clone(),
        config.retention.clone(),
        shutdown.clone(),
    ));

    // The interfaces' addresses are read by the responder, again when
    // they change; the listen address is protected besides.
    let own: Vec<std::net::IpAddr> = Some(config.listen.ip())
        .filter(|ip| !ip.is_unspecified())
        .into_iter()
        .collect();
    let responder = responder::Responder::new(
        config.responses.clone(),
        config.white_list.clone(),
        own,
        store.clone(),
        sessions.clone(),
    )
    .with_stats(stats.clone())
    .with_mailer(mailer)
    .with_breaker_limit(config.max_new_blocks_per_minute)
    .with_outputs(outputs.clone())
    .with_cluster(cluster.clone());
    let metrics = match metrics_listener {
        Some(listener) => {
            let sources = metrics::Sources {
                stats: stats.clone(),
                analyzer: analyzer.clone(),
                sessions: sessions.clone(),
                store: store.clone(),
            };
            Some(tokio::spawn(metrics::serve(
                listener,
                sources,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let pipeline = pipeline::Pipeline::new(
        store.clone(),
        analyzer,
        responder.clone(),
        outputs.clone(),
        config.logall,
        config.flow,
    )
    .with_max_line_length(config.limits.max_line_length);
    let heartbeats = heartbeats::Heartbeats::default();
    let heartbeat_writer = tokio::spawn(heartbeats.clone().run(store.clone(), shutdown.clone()));
    let ingest = ingest::Ingest::new(
        store.clone(),
        sessions.clone(),
        pipeline,
        responder.clone(),
        shutdown.clone(),
    )
    .with_max_batch_bytes(config.limits.max_batch_bytes)
    .with_ca(identities::renewing_ca(&config))
    .with_agent_timeout(config.agent_timeout)
    .with_heartbeats(heartbeats.clone())
    .with_cluster(cluster.clone());
    let stream_tasks = ingest.tasks();
    let memory = tokio::spawn(memory::release_after_drops(
        sessions.clone(),
        shutdown.clone(),
    ));
    let wakeups = wakeups::Wakeups::start(&store, shutdown.clone()).await?;
    let cross_delivery = tokio::spawn(wakeups::deliver_on_wakeups(
        wakeups.clone(),
        responder.clone(),
        shutdown.clone(),
    ));
    let cross_restarts = tokio::spawn(wakeups::restart_on_wakeups(
        wakeups.clone(),
        sessions.clone(),
        shutdown.clone(),
    ));
    let control = control::Control::new(
        store.clone(),
        sessions.clone(),
        responder,
        outputs,
        hostname,
        config.agent_timeout,
        shutdown.clone(),
    )
    .with_cluster(cluster.clone());
    let revocations = tokio::spawn(watch_revocations(
        store.clone(),
        sessions.clone(),
        control.operators(),
        wakeups.clone(),
        shutdown.clone(),
    ));
    let incoming = tls::incoming(listener, tls, shutdown.clone(), config.connections);
    let enrollment = match enrollment_listener {
        Some(listener) => Some(enroll::start(
            &config,
            listener,
            store.clone(),
            shutdown.clone(),
        )?),
        None => None,
    };
    info!(listen = ?local, database = %config.database, "Manager started.");
    palisade_common::systemd::ready();
    palisade_common::systemd::spawn_watchdog(shutdown.clone());
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        // An agent opens one stream, palisadectl one call at a time.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .add_service(
            // Explicit: an agent batches below max_batch_bytes, and this
            // leaves headroom above it ([limits]).
            AgentServiceServer::new(ingest)
                .max_decoding_message_size(config.limits.max_message_size),
        )
        .add_service(ControlServiceServer::new(control))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    let result = tokio::select! {
        r = server => r,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            warn!("Streams did not end in time; stopping anyway.");
            Ok(())
        }
    };
    palisade_common::systemd::stopping();
    // The streams end (each records its agent's last-seen time) before
    // the database closes.
    stream_tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, stream_tasks.wait())
        .await
        .is_err()
    {
        warn!(
            open = stream_tasks.len(),
            "Agent streams did not end in time."
        );
    }
    let _ = heartbeat_writer.await;
    match heartbeats.flush(&store).await {
        Ok(agents) if agents > 0 => info!(agents, "Recorded the agents' last-seen times."),
        Ok(_) => {}
        Err(error) => warn!(%error, "Cannot record the agents' last-seen times."),
    }
    let _ = cluster_heartbeat.await;
    cluster.leave().await;
    if let Some(enrollment) = enrollment {
        enrollment.stopped().await;
    }
    revocations.abort();
    // Not aborted: a command it claimed is sent or handed back whole.
    let _ = cross_delivery.await;
    let _ = cross_restarts.await;
    let _ = memory.await;
    // Cancelled with the rest: it stops after the batch in hand.
    let _ = retention.await;
    let _ = checkpoints.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    if let Some(files) = alert_files {
        // Streams have ended: write out what is queued.
        let _ = tokio::task::spawn_blocking(move || files.close()).await;
    }
    store.close().await;
    info!("Manager stopped.");
    Ok(result?)
}

/// Ends the open streams and alert feeds of revoked identities. It reads
/// the revocation generation (one row) every [`REVOCATION_POLL`], and at
/// once when another manager's revocation wakes it (PostgreSQL), and the
/// revoked identities only when it changed, so that a large idle fleet
/// costs nothing here.
async fn watch_revocations(
    store: store::Store,
    sessions: sessions::Sessions,
    operators: identities::Operators,
    wakeups: wakeups::Wakeups,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(REVOCATION_POLL);
    let mut loaded: Option<i64> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = wakeups.revoked() => {}
        }
        let generation = match store.revocation_generation().await {
            Ok(g) => g,
            Err(error) => {
                warn!(%error, "Cannot read the revocation generation.");
                continue;
            }
        };
        if loaded == Some(generation) {
            continue;
        }
        let (removed, serials) =
            match tokio::try_join!(store.removed_agent_ids(), store.revoked_serials()) {
                Ok(both) => both,
                Err(error) => {
                    // Read again at the next tick.
                    warn!(%error, "Cannot read revoked identities.");
                    continue;
                }
            };
        for agent in sessions.revoke(&removed, &serials) {
            warn!(%agent, "Agent removed; its open stream was ended.");
        }
        operators.revoke(&serials);
        loaded = Some(generation);
    }
}
