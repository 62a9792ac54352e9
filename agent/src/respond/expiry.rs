//! Lifting blocks at their expiry: a timer task sleeps until the ledger's
//! earliest expiry, on the responder's [`Clock`](super::Clock) and woken
//! early by every add and delete, then undoes what is due; an undo that
//! fails is retried later. The ledger holds wall-clock expiries, so this
//! works the same after a restart.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Action, Block, LedgerError, OssecArgs, Responder, Target, ms_of};

/// How long a failed undo waits before it is tried again.
const UNDO_RETRY: Duration = Duration::from_secs(30);
/// The timer re-reads the ledger at least this often (wall-clock jumps).
const TIMER_MAX_SLEEP: Duration = Duration::from_secs(60);
/// How long the timer waits after a ledger failure.
const TIMER_LEDGER_RETRY: Duration = Duration::from_secs(5);

impl Responder {
    /// Undoes one ledger block whose time has come (or every block, for
    /// [`Responder::undo_all`]). Returns whether it was undone.
    pub(super) async fn undo_block(&self, block: &Block, only_if_due: Option<i64>) -> bool {
        let _guard = self.inner.locks.lock(&block.response, block.srcip).await;
        // Re-read under the lock: an add may have extended it meanwhile.
        let current = match self.inner.ledger.get(&block.response, block.srcip).await {
            Ok(Some(b)) => b,
            Ok(None) => return false,
            Err(e) => {
                warn!(ip = %block.srcip, response = %block.response, error = %e, "Cannot read the ledger.");
                return false;
            }
        };
        if let Some(now) = only_if_due
            && current.expires_at.is_none_or(|e| e > now)
        {
            return false;
        }
        let Some(backend) = self.backend(&current.response) else {
            // The command was removed from the configuration: nothing can
            // undo it, so say so once and forget it.
            error!(ip = %current.srcip, response = %current.response, "Cannot undo: the response is no longer configured; forgetting the block.");
            let _ = self
                .inner
                .ledger
                .remove(&current.response, current.srcip)
                .await;
            return false;
        };
        let target = Target {
            ip: current.srcip,
            remaining: None,
            args: OssecArgs::of_block(&current),
        };
        match self.apply(backend.as_ref(), Action::Delete, &target).await {
            Ok(_) => {
                if let Err(e) = self
                    .inner
                    .ledger
                    .remove(&current.response, current.srcip)
                    .await
                {
                    warn!(ip = %current.srcip, response = %current.response, error = %e, "Undone, but not removed from the ledger.");
                }
                self.log_line(
                    backend.as_ref(),
                    Action::Delete,
                    current.srcip,
                    &target.args,
                )
                .await;
                info!(ip = %current.srcip, response = %current.response, "Block lifted.");
                let why = if only_if_due.is_some() {
                    "block lifted at its timeout"
                } else {
                    "block lifted by the agent"
                };
                self.report_lifted(&current.command_id, why);
                true
            }
            Err(e) => {
                let retry = self.now_ms().saturating_add(ms_of(UNDO_RETRY));
                error!(ip = %current.srcip, response = %current.response, error = %e, "Undo failed; retrying later.");
                if let Err(le) = self
                    .inner
                    .ledger
                    .undo_failed(&current.response, current.srcip, retry, &e.to_string())
                    .await
                {
                    warn!(error = %le, "Cannot record the failed undo.");
                }
                false
            }
        }
    }

    /// Undoes every block whose expiry has passed; returns how many.
    pub async fn undo_expired(&self) -> Result<usize, LedgerError> {
        let now = self.now_ms();
        let mut n = 0;
        for block in self.inner.ledger.due(now).await? {
            if self.undo_block(&block, Some(now)).await {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Undoes every block in the ledger now (an operator's flush, or
    /// uninstalling). Not called on shutdown: blocks outlive the agent.
    pub async fn undo_all(&self) -> Result<usize, LedgerError> {
        let mut n = 0;
        for block in self.inner.ledger.list().await? {
            if self.undo_block(&block, None).await {
                n += 1;
            }
        }
        self.inner.wake.notify_one();
        Ok(n)
    }

    /// The task that lifts each block at its expiry, from the ledger's
    /// explicit expiries; woken early whenever a block is added or removed.
    pub fn spawn_timer(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let now = this.now_ms();
                let latest = now.saturating_add(ms_of(TIMER_MAX_SLEEP));
                let deadline = match this.inner.ledger.next_expiry().await {
                    Ok(Some(at)) => at.min(latest),
                    Ok(None) => latest,
                    Err(e) => {
                        warn!(error = %e, "Cannot read the ledger; timer retries.");
                        now.saturating_add(ms_of(TIMER_LEDGER_RETRY))
                    }
                };
                if deadline > now {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = this.inner.wake.notified() => continue,
                        () = this.inner.clock.sleep_until(deadline) => {}
                    }
                }
                if shutdown.is_cancelled() {
                    break;
                }
                match this.undo_expired().await {
                    Ok(n) if n > 0 => debug!(lifted = n, "Expired blocks lifted."),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "Cannot read the ledger; timer retries."),
                }
                // Blocks whose undo failed are due again at once; do not spin.
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
            debug!("Active-response timer stopped; blocks stay in force.");
        })
    }
}
