//! Palisade's agent: follows log files, keeps every line in a durable
//! spool until the manager has stored it, and carries out the manager's
//! active responses.
//!
//! # Layout
//!
//! - [`config`]: `agent.toml`, validated in one pass.
//! - [`spool`]: the SQLite spool and file checkpoints.
//! - [`tail`]: polling file follower.
//! - [`uplink`]: the mutual-TLS stream to the manager.
//!
//! [`run`] is the daemon; `main.rs` only parses the command line and
//! installs signal handlers, so tests run the same code in-process.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod spool;
pub mod tail;
pub mod uplink;

use std::sync::Arc;

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
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    let spool = spool::Spool::open(&config.spool_database).await?;
    let spooled = Arc::new(Notify::new());
    let stats = uplink::AgentStats::default();
    let tailer = tail::Tailer::new(
        &config.localfiles,
        spool.clone(),
        tail::TailOptions {
            poll_interval: config.poll_interval,
            read_from_start: config.read_from_start,
            max_line_length: config.max_line_length,
        },
        spooled.clone(),
        stats.read_lag.clone(),
    );
    let uplink = uplink::Uplink::new(config.clone(), spool.clone(), spooled, stats);
    info!(manager = %config.manager_address, files = config.localfiles.len(), "Agent started.");
    // Either task failing stops the agent; the other is told to stop.
    let stop = shutdown.child_token();
    let tail_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let r = tailer.run(stop.clone()).await;
            stop.cancel();
            r
        }
    });
    let uplink_result = uplink.run(stop.clone()).await;
    stop.cancel();
    let tail_result = tail_task.await.unwrap_or(Ok(()));
    spool.close().await;
    info!("Agent stopped.");
    uplink_result?;
    tail_result?;
    Ok(())
}
