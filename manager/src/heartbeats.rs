//! Agents' heartbeats and last-seen times, gathered in memory and written
//! to the database together every [`FLUSH_EVERY`] (and once more at
//! shutdown, after the streams have ended) instead of one write per
//! heartbeat: ten thousand agents beating every few seconds would
//! otherwise queue thousands of writes a second on the connections that
//! ingestion needs. Whether an agent is active is read from its open
//! stream ([`crate::sessions`]), never from these figures, so the delay
//! only shows in `last_seen` and the spool figures `palisadectl` prints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::store::{Store, StoreError};

/// How often gathered heartbeats are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// The status figures of an agent's heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// Events in its spool.
    pub spool_depth: u64,
    /// Events it dropped.
    pub dropped_events: u64,
    /// Bytes behind the ends of its files.
    pub read_lag_bytes: u64,
}

/// What is known of an agent since the last write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// When it was last heard from (epoch ms).
    pub at: i64,
    /// Its latest heartbeat's figures, if one came.
    pub figures: Option<Figures>,
}

/// Heartbeats not written yet, by agent.
#[derive(Debug, Clone, Default)]
pub struct Heartbeats {
    pending: Arc<Mutex<HashMap<String, Seen>>>,
}

impl Heartbeats {
    fn update(&self, agent_id: &str, figures: Option<Figures>) {
        let at = crate::store::now_ms();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match pending.get_mut(agent_id) {
            Some(seen) => {
                seen.at = at;
                seen.figures = figures.or(seen.figures);
            }
            None => {
                pending.insert(agent_id.to_string(), Seen { at, figures });
            }
        }
    }

    /// An agent's heartbeat, with its figures.
    pub fn heartbeat(&self, agent_id: &str, figures: Figures) {
        self.update(agent_id, Some(figures));
    }

    /// An agent was heard from (its stream closed, say).
    pub fn seen(&self, agent_id: &str) {
        self.update(agent_id, None);
    }

    /// Writes what was gathered in one transaction; returns how many
    /// agents. On failure the figures are kept for the next attempt
    /// (newer ones win).
    pub async fn flush(&self, store: &Store) -> Result<usize, StoreError> {
        let taken: Vec<(String, Seen)> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
                .into_iter()
                .collect();
        if taken.is_empty() {
            return Ok(0);
        }
        match store.record_heartbeats(&taken).await {
            Ok(()) => Ok(taken.len()),
            Err(error) => {
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                for (agent, seen) in taken {
                    pending.entry(agent).or_insert(seen);
                }
                Err(error)
            }
        }
    }

    /// Writes every [`FLUSH_EVERY`] until `shutdown`; the last write is
    /// the caller's, once the streams have ended.
    pub async fn run(self, store: Store, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(error) = self.flush(&store).await {
                warn!(%error, "Cannot record agents' heartbeats; will try again.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;

    both_backends! {
        async fn heartbeats_are_written_together_and_keep_their_figures(db) {
            let store = db.open().await;
            for name in ["a", "b"] {
                store
                    .add_agent(name, "any", |_| Ok((format!("serial-{name}"), ())))
                    .await
                    .unwrap();
            }
            let beats = Heartbeats::default();
            let figures = Figures {
                spool_depth: 7,
                dropped_events: 2,
                read_lag_bytes: 99,
            };
            beats.heartbeat("001", figures);
            // A later "seen" keeps the figures of the heartbeat before it.
            beats.seen("001");
            beats.seen("002");
            assert_eq!(beats.flush(&store).await.unwrap(), 2);
            assert_eq!(beats.flush(&store).await.unwrap(), 0);
            let a = store.agent("001").await.unwrap().unwrap();
            assert_eq!(
                (a.spool_depth, a.dropped_events, a.read_lag_bytes),
                (7, 2, 99)
            );
            assert!(a.last_seen.is_some());
            let b = store.agent("002").await.unwrap().unwrap();
            assert!(b.last_seen.is_some());
            assert_eq!(b.spool_depth, 0);
        }
    }
}
