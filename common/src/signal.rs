//! Stopping on SIGTERM (systemd, `kill`) or SIGINT (Ctrl-C): the signal
//! cancels a `CancellationToken`, and the daemon's `run` winds down from
//! there as it does when a test cancels it.

use tokio_util::sync::CancellationToken;

/// Waits for SIGTERM or SIGINT, then cancels `shutdown`. Spawn it beside
/// the daemon. Without signal handlers (they cannot be installed) it
/// returns at once and the process stops the default way.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = shutdown.cancelled() => return,
    }
    tracing::info!("Shutting down.");
    shutdown.cancel();
}
