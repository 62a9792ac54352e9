//! Start-up: blocks that expired while the agent was down are undone,
//! then each backend makes the host match the ledger's live blocks (see
//! [`super::Backend::reconcile`]), and the expiry timer starts.

use std::collections::BTreeMap;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::backend::{self, BackendError, Reconciled, Registered};
use super::{BlockState, LedgerError, Responder};

/// Something start-up could not put right.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The ledger could not be read.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A backend could not be reconciled with the ledger.
    #[error("{response}: {source}")]
    Reconcile {
        /// The response name.
        response: String,
        /// What failed.
        source: BackendError,
    },
}

/// What start-up did.
#[derive(Debug, Default)]
pub struct StartReport {
    /// Blocks that expired while the agent was down, now undone.
    pub expired_undone: usize,
    /// Per response name: blocks put back and orphans removed.
    pub reconciled: BTreeMap<String, Reconciled>,
    /// What could not be put right.
    pub errors: Vec<StartError>,
}

impl StartReport {
    /// Blocks of `response` missing from the host, applied again.
    pub fn readded(&self, response: &str) -> usize {
        self.reconciled.get(response).map_or(0, |r| r.readded)
    }

    /// Blocks of `response` on the host that the ledger did not hold,
    /// removed.
    pub fn removed(&self, response: &str) -> usize {
        self.reconciled.get(response).map_or(0, |r| r.removed)
    }
}

impl Responder {
    /// Makes the host match the ledger, backend by backend: re-adds blocks
    /// still due that vanished, removes what a backend installed that the
    /// ledger does not hold, never touches anything Palisade did not
    /// install. Call after [`Responder::undo_expired`].
    pub async fn reconcile(&self) -> StartReport {
        let mut report = StartReport::default();
        if self.inner.config.dry_run {
            // Nothing was ever installed.
            return report;
        }
        let blocks = match self.inner.ledger.list().await {
            Ok(b) => b,
            Err(e) => {
                report.errors.push(e.into());
                return report;
            }
        };
        let now = self.now_ms();
        for Registered { name, backend } in &self.inner.backends {
            let live = blocks
                .iter()
                .filter(|b| {
                    b.response == *name
                        && b.state == BlockState::Active
                        && b.expires_at.is_none_or(|e| e > now)
                })
                .collect();
            let cx =
                backend::Reconcile::new(name, live, now, &self.inner.ledger, &self.inner.locks);
            let mut done = backend.reconcile(&cx).await;
            report
                .errors
                .extend(done.errors.drain(..).map(|source| StartError::Reconcile {
                    response: name.clone(),
                    source,
                }));
            if done.readded > 0 || done.removed > 0 {
                report.reconciled.insert(name.clone(), done);
            }
        }
        report
    }

    /// Start-up: undoes blocks that expired while the agent was down,
    /// reconciles, and starts the timer that lifts blocks at their expiry.
    /// The timer stops when `shutdown` is cancelled; blocks stay in force.
    pub async fn start(&self, shutdown: CancellationToken) -> (StartReport, JoinHandle<()>) {
        let expired = self.undo_expired().await;
        let mut report = self.reconcile().await;
        match expired {
            Ok(n) => report.expired_undone = n,
            Err(e) => report.errors.push(e.into()),
        }
        for e in &report.errors {
            warn!(error = %e, "Active-response reconciliation problem.");
        }
        for (response, done) in &report.reconciled {
            info!(
                response,
                readded = done.readded,
                removed = done.removed,
                "Blocks reconciled with the host."
            );
        }
        info!(
            expired_undone = report.expired_undone,
            errors = report.errors.len(),
            "Active responses reconciled."
        );
        (report, self.spawn_timer(shutdown))
    }
}
