//! Where an alert goes once it is committed: the files (`alerts.log`,
//! `alerts.json`), the mailer, the counters, and every `palisadectl alerts
//! --follow`.
//!
//! The pipeline publishes each batch's alerts right after the batch's
//! transaction commits, so nothing is announced that could still be rolled
//! back. Sinks must not block: a file sink writes a buffered line, the
//! mailer only queues. Followers get a broadcast; one that falls behind
//! catches up from the database (see `control`).

use std::fmt::Debug;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::stats::Stats;
use crate::store::StoredAlert;

/// Alerts a slow follower may lag behind before it must re-read.
const FOLLOW_BUFFER: usize = 4096;

/// Something that takes every stored alert (a file, the mailer).
pub trait AlertSink: Send + Sync + Debug {
    /// Takes one alert. Must not block.
    fn publish(&self, alert: &StoredAlert);
}

/// The fan-out point for stored alerts.
#[derive(Debug, Clone)]
pub struct Outputs {
    bus: broadcast::Sender<Arc<StoredAlert>>,
    sinks: Arc<Vec<Box<dyn AlertSink>>>,
    stats: Arc<Stats>,
}

impl Outputs {
    /// Outputs to `sinks`, counting in `stats`.
    pub fn new(sinks: Vec<Box<dyn AlertSink>>, stats: Arc<Stats>) -> Self {
        let (bus, _) = broadcast::channel(FOLLOW_BUFFER);
        Self {
            bus,
            sinks: Arc::new(sinks),
            stats,
        }
    }

    /// Hands committed alerts to every sink and follower.
    pub fn publish(&self, alerts: Vec<StoredAlert>) {
        for alert in alerts {
            self.stats.alert(alert.alert.level);
            for sink in self.sinks.iter() {
                sink.publish(&alert);
            }
            // No follower is not an error.
            let _ = self.bus.send(Arc::new(alert));
        }
    }

    /// A feed of alerts published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredAlert>> {
        self.bus.subscribe()
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}
