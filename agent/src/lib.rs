//! Palisade's agent: follows log files, keeps every line in a durable
//! spool until the manager has stored it, and carries out the manager's
//! active responses.
//!
//! # Layout
//!
//! - [`config`]: `agent.toml`, validated in one pass.
//! - [`spool`]: the SQLite spool and file checkpoints, bounded on disk.
//! - [`tail`]: polling file follower (globs, rotation, fingerprints).
//! - [`command`]: OSSEC's `command`/`full_command` sources.
//! - [`uplink`]: the mutual-TLS stream to the manager.
//! - [`enroll`]: `palisade-agent enroll`, an identity from a one-time token.
//! - [`renew`]: the certificate renewed over the stream before it expires.
//! - [`respond`]: active responses (route-null, firewall-drop, host-deny,
//!   scripts), their ledger and timeouts.
//! - [`cli`]: the command line (`run`, `check-config`, `enroll`).
//!
//! What the agent shares with the manager and `palisadectl` lives in
//! `palisade_common`: configuration problems and their lines, durations
//! and sizes, the address policy every block is checked against, the
//! client side of mutual TLS, the agent bundle's `agent.toml`, systemd
//! readiness, tracing, signals and exit codes.
//!
//! [`run`] is the daemon; `main.rs` only parses the command line and
//! installs signal handlers, so tests run the same code in-process.
#![forbid(unsafe_code)]

pub mod cli;
pub mod command;
pub mod config;
pub mod enroll;
pub mod renew;
pub mod respond;
pub mod spool;
pub mod tail;
pub mod uplink;

use std::sync::Arc;

use palisade_common::systemd;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::AgentConfig;

/// The agent failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    /// The uplink cannot work at all (bad TLS files).
    #[error(transparent)]
    Uplink(#[from] uplink::UplinkError),
    /// Active responses cannot be carried out (no netlink).
    #[error(transparent)]
    Respond(#[from] respond::RespondError),
}

/// Runs the agent until `shutdown` is cancelled (or the manager asks it
/// to restart: it then stops as on shutdown).
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    run_until(config, shutdown).await.map(|_| ())
}

/// Runs the agent until `shutdown` is cancelled or the manager asks it to
/// restart; says which. Everything is stopped cleanly either way: the
/// spool keeps what the manager has not acknowledged, the ledger keeps the
/// blocks in force, so the caller can start the agent again (`main`
/// re-executes the binary).
pub async fn run_until(
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<uplink::Stop, RunError> {
    let started_at = std::time::SystemTime::now();
    let spool = spool::Spool::open_with(
        &config.spool_database,
        spool::SpoolOptions {
            max_size: config.spool_max_size,
        },
    )
    .await?;
    let spooled = Arc::new(Notify::new());
    let stats = uplink::AgentStats::default();
    let tailer = tail::Tailer::new(
        &config.localfiles,
        spool.clone(),
        tail::TailOptions {
            poll_interval: config.poll_interval,
            read_from_start: config.read_from_start,
            max_line_length: config.max_line_length,
            rotate_wait: config.rotate_wait,
            ..tail::TailOptions::default()
        },
        spooled.clone(),
        stats.read_lag.clone(),
    );
    let runners: Vec<command::CommandRunner> = config
        .commands
        .iter()
        .map(|c| {
            command::CommandRunner::new(
                c.clone(),
                spool.clone(),
                spooled.clone(),
                config.max_line_length,
            )
        })
        .collect();
    // Every configured manager is protected from this agent's blocks.
    let mut managers: Vec<std::net::IpAddr> = Vec::new();
    for address in &config.manager_addresses {
        if let Ok(addrs) = tokio::net::lookup_host(address).await {
            managers.extend(addrs.map(|a| a.ip()));
        }
    }
    let responder = respond::Responder::new(
        config.respond.clone(),
        respond::ledger::Ledger::new(spool.pool()),
        managers,
    )?;
    let stop = shutdown.child_token();
    let (_report, timer) = responder.start(stop.clone()).await;
    let uplink = uplink::Uplink::new(
        config.clone(),
        spool.clone(),
        spooled,
        stats,
        responder,
        started_at,
    );
    systemd::ready();
    systemd::spawn_watchdog(stop.clone());
    info!(
        managers = %config.manager_addresses.join(", "),
        files = config.localfiles.len(),
        commands = config.commands.len(),
        "Agent started."
    );
    // Any task failing stops the agent; the others are told to stop.
    let mut collectors = tokio::task::JoinSet::new();
    collectors.spawn({
        let stop = stop.clone();
        async move {
            let r = tailer.run(stop.clone()).await;
            stop.cancel();
            r
        }
    });
    for runner in runners {
        let stop = stop.clone();
        collectors.spawn(async move {
            let r = runner.run(stop.clone()).await;
            stop.cancel();
            r
        });
    }
    let uplink_result = uplink.run(stop.clone()).await;
    stop.cancel();
    let mut tail_result = Ok(());
    while let Some(r) = collectors.join_next().await {
        if let Ok(Err(e)) = r {
            tail_result = Err(e);
        }
    }
    let restart = matches!(uplink_result, Ok(uplink::Stop::Restart));
    if restart {
        systemd::reloading();
    } else {
        systemd::stopping();
    }
    let _ = timer.await;
    spool.close().await;
    info!(restart, "Agent stopped.");
    let stop = uplink_result?;
    tail_result?;
    Ok(stop)
}
