//! Commands before bulk: the order in which writers take the database.
//!
//! Why: every agent's committer writes a transaction per group of batches,
//! and with ten thousand agents sending a few lines each those are
//! thousands of transactions a second, all queued for the write pool's
//! few connections. A block or unblock (an operator's fan-out, or a rule's
//! response) queued behind them: on the fleet bench, recording a fan-out
//! to 10,000 agents took 0.2 s idle and 1.4 s under that traffic. Commands
//! are few and small, and the time to block is what Palisade is for, so
//! while one waits ingestion does not start another transaction: it takes
//! a slot here first ([`WriteGate::ingest`]), at most as many as the pool
//! has connections, and no slot is given while a command is waiting
//! ([`WriteGate::urgent`]). A command then waits for the transactions
//! already running, not for the queue. Other writers (heartbeats, Hellos,
//! results) are few and pass as before.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, Semaphore, SemaphorePermit};

/// The ingestion slots and the count of commands waiting or writing.
#[derive(Debug)]
pub(crate) struct WriteGate {
    ingest: Semaphore,
    urgent: AtomicUsize,
    clear: Notify,
}

impl WriteGate {
    /// A gate letting `slots` ingestion transactions run at once.
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            ingest: Semaphore::new(slots.max(1)),
            urgent: AtomicUsize::new(0),
            clear: Notify::new(),
        }
    }

    /// Waits until no command is waiting and a slot is free; the slot is
    /// held for the transaction's life (drop it after the commit).
    pub(crate) async fn ingest(&self) -> SemaphorePermit<'_> {
        loop {
            self.until_clear().await;
            // Never closed: the gate lives as long as its store.
            let Ok(slot) = self.ingest.acquire().await else {
                unreachable!("the ingestion semaphore is never closed")
            };
            if self.urgent.load(Ordering::SeqCst) == 0 {
                return slot;
            }
            // A command came while this waited for the slot: it goes first.
            drop(slot);
        }
    }

    /// Marks a command write as waiting until the guard is dropped (after
    /// its commit).
    pub(crate) fn urgent(&self) -> Urgent<'_> {
        self.urgent.fetch_add(1, Ordering::SeqCst);
        Urgent(self)
    }

    async fn until_clear(&self) {
        loop {
            let notified = self.clear.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.urgent.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A command write in progress ([`WriteGate::urgent`]).
#[derive(Debug)]
pub(crate) struct Urgent<'a>(&'a WriteGate);

impl Drop for Urgent<'_> {
    fn drop(&mut self) {
        if self.0.urgent.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.clear.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn ingestion_waits_while_a_command_does() {
        let gate = Arc::new(WriteGate::new(2));
        let command = gate.urgent();
        let g = gate.clone();
        let waiting = tokio::spawn(async move {
            let _slot = g.ingest().await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "ingestion started beside a command");
        drop(command);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("ingestion resumed after the command")
            .unwrap();
    }

    #[tokio::test]
    async fn at_most_the_slots_run_at_once() {
        let gate = WriteGate::new(2);
        let a = gate.ingest().await;
        let _b = gate.ingest().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), gate.ingest())
                .await
                .is_err()
        );
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(10), gate.ingest())
            .await
            .expect("a slot freed is taken");
    }
}
