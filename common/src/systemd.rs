//! systemd integration for both daemons (`Type=notify` units): readiness
//! once the daemon serves, and watchdog keep-alives while its runtime
//! runs. Without systemd (no `NOTIFY_SOCKET`) these do nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Tells systemd the daemon is ready.
pub fn ready() {
    if let Err(error) = sd_notify::notify(&[NotifyState::Ready]) {
        debug!(%error, "Cannot notify systemd.");
    }
}

/// Tells systemd the daemon is restarting itself (it re-executes and then
/// says it is ready again, under the same process id).
pub fn reloading() {
    let _ = sd_notify::notify(&[NotifyState::Reloading]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Sends watchdog keep-alives at half the unit's `WatchdogSec` until
/// `shutdown`; a runtime that stops scheduling tasks stops sending them,
/// and systemd restarts the service.
pub fn spawn_watchdog(shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                }
            }
        }
    });
}
