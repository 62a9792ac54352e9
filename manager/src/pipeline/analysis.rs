//! The analysis engine's thread: every event received from an agent is
//! pre-decoded, decoded and run through the rules here, in arrival order.
//!
//! One thread owns the engine and its correlation state, so rules that
//! count events across agents (OSSEC's frequency rules) see one ordered
//! stream and need no locks; session tasks hand it whole batches and wait
//! for the alerts, which are stored in the same transaction as the events.
//! It runs on a plain thread, not a tokio worker, so a burst of rule work
//! never stalls network I/O.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use palisade_engine::engine::{Alert, Engine, EngineConfig, Ruleset};
use palisade_engine::predecode::predecode_checked_in;
use palisade_engine::timestamp::judge_time;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::config::TimeSource;

/// Batches waiting for the engine.
const QUEUE: usize = 64;

/// The agent an event came from, as OSSEC names it in the location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Agent id (`None` for the manager's own events).
    pub agent_id: Option<String>,
    /// Agent name.
    pub name: String,
    /// The registered address, as OSSEC's client.keys holds it (`any`).
    pub ip: String,
}

impl Origin {
    /// OSSEC's location for an agent's event: `(name) ip->path`.
    pub fn location(&self, path: &str) -> String {
        match self.agent_id {
            Some(_) => format!("({}) {}->{}", self.name, self.ip, path),
            None => path.to_string(),
        }
    }
}

/// One line to judge.
#[derive(Debug, Clone)]
pub struct Input {
    /// The agent's sequence number.
    pub sequence: u64,
    /// The file it was read from.
    pub path: String,
    /// The raw line.
    pub line: Vec<u8>,
}

/// An alert the engine raised, with the sequence number of the event that
/// raised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// The agent's sequence number of the event.
    pub sequence: u64,
    /// The alert.
    pub alert: Alert,
}

struct Job {
    origin: Origin,
    events: Vec<Input>,
    reply: oneshot::Sender<Vec<Judged>>,
}

/// Counters the analysis thread keeps.
#[derive(Debug, Default)]
pub struct AnalysisStats {
    /// Events judged.
    pub events: AtomicU64,
    /// Events dropped for a bad location.
    pub rejected: AtomicU64,
    /// Events without a timestamp of their own in event-time mode.
    pub time_fallbacks: AtomicU64,
    /// Alerts raised.
    pub alerts: AtomicU64,
}

/// The handle session tasks use to reach the engine thread.
#[derive(Debug, Clone)]
pub struct Analyzer {
    tx: mpsc::Sender<Job>,
    stats: Arc<AnalysisStats>,
}

/// The engine thread has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the analysis engine has stopped")]
pub struct AnalysisStopped;

impl Analyzer {
    /// Starts the engine thread (`config.zone` is the zone for `<time>`,
    /// `<weekday>` and event times).
    pub fn start(
        ruleset: Arc<Ruleset>,
        config: EngineConfig,
        time_source: TimeSource,
        manager_host: String,
    ) -> std::io::Result<Self> {
        let zone = config.zone.clone();
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        let stats = Arc::new(AnalysisStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("palisade-analysis".into())
            .spawn(move || {
                let mut engine = Engine::new(ruleset, config);
                while let Some(job) = rx.blocking_recv() {
                    let alerts = judge(
                        &mut engine,
                        &job,
                        &zone,
                        time_source,
                        &manager_host,
                        &thread_stats,
                    );
                    let _ = job.reply.send(alerts);
                }
                debug!("Analysis thread stopped.");
            })?;
        Ok(Self { tx, stats })
    }

    /// Judges a batch of one agent's events; returns the alerts.
    pub async fn analyze(
        &self,
        origin: Origin,
        events: Vec<Input>,
    ) -> Result<Vec<Judged>, AnalysisStopped> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                origin,
                events,
                reply,
            })
            .await
            .map_err(|_| AnalysisStopped)?;
        answer.await.map_err(|_| AnalysisStopped)
    }

    /// The thread's counters.
    pub fn stats(&self) -> &AnalysisStats {
        &self.stats
    }
}

fn judge(
    engine: &mut Engine,
    job: &Job,
    zone: &TimeZone,
    time_source: TimeSource,
    manager_host: &str,
    stats: &AnalysisStats,
) -> Vec<Judged> {
    let mut alerts = Vec::new();
    for input in &job.events {
        let arrival = Timestamp::now();
        let location = job.origin.location(&input.path);
        let dialect = engine.ruleset().dialect;
        let mut event = match predecode_checked_in(&input.line, &location, manager_host, dialect) {
            Ok(e) => e,
            Err(error) => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                warn!(%location, %error, "Dropped an event with an invalid location.");
                continue;
            }
        };
        let judged = judge_time(&event, arrival, time_source, zone);
        if judged.fell_back {
            stats.time_fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        let now = judged.time;
        stats.events.fetch_add(1, Ordering::Relaxed);
        if let Some(mut alert) = engine.process(&mut event, now) {
            stats.alerts.fetch_add(1, Ordering::Relaxed);
            // The store keeps milliseconds; the alert published is the one stored.
            alert.time =
                Timestamp::from_millisecond(alert.time.as_millisecond()).unwrap_or(alert.time);
            alerts.push(Judged {
                sequence: input.sequence,
                alert,
            });
        }
    }
    alerts
}
