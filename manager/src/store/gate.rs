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
//!
//! The turn to write. SQLite has one writer at a time, and a connection
//! that finds the lock taken waits in SQLite's busy handler, which sleeps
//! (1, 2, 5, 10 ... 100 ms) and tries again: it wakes late when the lock
//! was freed early, and a writer that just arrived may take the lock
//! first. In a reconnect storm of 10,000 agents after a restart, with the
//! Hellos, the agents' results and the commands sent again all writing,
//! the manager slept 1,500 to 1,800 times in 9 s while its cores were
//! partly idle. So this process's SQLite writers take their turn here
//! first ([`WriteGate::turn`]), in order, and start their transaction
//! when the previous one ended; the busy handler is left for other
//! processes (`palisade-manager agent add` beside a running daemon).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, SemaphorePermit};

/// How long a writer waits for its turn before it is told the database is
/// busy: SQLite's busy timeout, which it replaces in this process.
pub(crate) const TURN_TIMEOUT: Duration = Duration::from_secs(10);

/// The ingestion slots and the count of commands waiting or writing.
#[derive(Debug)]
pub(crate) struct WriteGate {
    ingest: Semaphore,
    urgent: AtomicUsize,
    clear: Notify,
    /// One SQLite write transaction of this process at a time.
    turn: Arc<Semaphore>,
}

impl WriteGate {
    /// A gate letting `slots` ingestion transactions run at once.
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            ingest: Semaphore::new(slots.max(1)),
            urgent: AtomicUsize::new(0),
            clear: Notify::new(),
            turn: Arc::new(Semaphore::new(1)),
        }
    }

    /// Waits for this process's turn to write to SQLite (in the order the
    /// writers came), held until the transaction ends; a database busy
    /// for [`TURN_TIMEOUT`] answers as a full pool does.
    pub(crate) async fn turn(&self) -> Result<OwnedSemaphorePermit, sqlx::Error> {
        self.turn_within(TURN_TIMEOUT).await
    }

    async fn turn_within(&self, wait: Duration) -> Result<OwnedSemaphorePermit, sqlx::Error> {
        match tokio::time::timeout(wait, self.turn.clone().acquire_owned()).await {
            Ok(Ok(turn)) => Ok(turn),
            Ok(Err(_)) => unreachable!("the turn semaphore is never closed"),
            Err(_) => Err(sqlx::Error::PoolTimedOut),
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

    // One thread: each writer runs, and queues, while this one sleeps.
    #[tokio::test(flavor = "current_thread")]
    async fn writers_take_their_turn_in_order() {
        let gate = Arc::new(WriteGate::new(4));
        let first = gate.turn().await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut writers = Vec::new();
        for i in 0..3 {
            let (g, order) = (gate.clone(), order.clone());
            writers.push(tokio::spawn(async move {
                let _turn = g.turn().await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            order.lock().unwrap().is_empty(),
            "a writer went beside the first"
        );
        drop(first);
        for w in writers {
            tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    }

    #[tokio::test]
    async fn a_writer_kept_waiting_past_the_timeout_is_told_busy() {
        let gate = WriteGate::new(1);
        let held = gate.turn().await.unwrap();
        let wait = Duration::from_millis(50);
        assert!(matches!(
            gate.turn_within(wait).await,
            Err(sqlx::Error::PoolTimedOut)
        ));
        drop(held);
        assert!(gate.turn_within(wait).await.is_ok());
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
