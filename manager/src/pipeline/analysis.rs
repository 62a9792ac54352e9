//! The analysis engine's thread: every event received from an agent is
//! judged by the rules here, in the order the fair queue hands batches
//! out.
//!
//! One thread owns the engine and its correlation state, so rules that
//! count events across agents (OSSEC's frequency rules) see one ordered
//! stream and need no locks. What needs no state, pre-decoding and the
//! decoders, is done before, by the caller ([`Analyzer::prepare`], on any
//! thread, several batches at once), so the one thread only runs the rules.
//! Batches wait in a [`FairQueue`] with one lane per stream, so one
//! agent's backlog cannot hold back another's detection. It runs on a
//! plain thread, not a tokio worker, so a burst of rule work never stalls
//! network I/O.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use palisade_engine::engine::{Alert, Engine, EngineConfig, Ruleset};
use palisade_engine::event::Event;
use palisade_engine::predecode::predecode_checked;
use palisade_engine::timestamp::judge_time;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::fair::{Cost, FairQueue};
use crate::config::TimeSource;

/// The lane of callers that judge one batch at a time ([`Analyzer::analyze`]).
const SHARED_LANE: u64 = 0;

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

/// An event pre-decoded and decoded, with the time it is judged at.
#[derive(Debug)]
pub struct Prepared {
    /// The agent's sequence number.
    pub sequence: u64,
    event: Event,
    time: Timestamp,
}

struct Job {
    events: Vec<Prepared>,
    reply: oneshot::Sender<Vec<Judged>>,
}

impl Cost for Job {
    fn cost(&self) -> usize {
        self.events.len()
    }
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

/// Closes the queue when the last [`Analyzer`] goes, so the thread ends.
#[derive(Debug)]
struct Closer(Arc<FairQueue<Job>>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("events", &self.events.len())
            .finish()
    }
}

/// The handle session tasks use to reach the engine thread.
#[derive(Debug, Clone)]
pub struct Analyzer {
    queue: Arc<FairQueue<Job>>,
    _closer: Arc<Closer>,
    stats: Arc<AnalysisStats>,
    ruleset: Arc<Ruleset>,
    zone: TimeZone,
    time_source: TimeSource,
    manager_host: Arc<str>,
    lanes: Arc<AtomicU64>,
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
        let queue = Arc::new(FairQueue::<Job>::default());
        let stats = Arc::new(AnalysisStats::default());
        let thread_stats = stats.clone();
        let thread_queue = queue.clone();
        let thread_ruleset = ruleset.clone();
        std::thread::Builder::new()
            .name("palisade-analysis".into())
            .spawn(move || {
                let mut engine = Engine::new(thread_ruleset, config);
                while let Some(job) = thread_queue.pop_blocking() {
                    let alerts = judge(&mut engine, job.events, &thread_stats);
                    let _ = job.reply.send(alerts);
                }
                debug!("Analysis thread stopped.");
            })?;
        Ok(Self {
            _closer: Arc::new(Closer(queue.clone())),
            queue,
            stats,
            ruleset,
            zone,
            time_source,
            manager_host: manager_host.into(),
            lanes: Arc::new(AtomicU64::new(SHARED_LANE + 1)),
        })
    }

    /// A lane of its own in the fair queue, for one stream.
    pub fn new_lane(&self) -> u64 {
        self.lanes.fetch_add(1, Ordering::Relaxed)
    }

    /// Pre-decodes and decodes `(sequence, path, line)`s of `origin`, and
    /// fixes the time each is judged at (stateless: any thread, any number
    /// of batches at once). Events with an invalid location are dropped
    /// and counted.
    pub fn prepare<'a>(
        &self,
        origin: &Origin,
        events: impl IntoIterator<Item = (u64, &'a str, &'a [u8])>,
    ) -> Vec<Prepared> {
        let events = events.into_iter();
        let mut prepared = Vec::with_capacity(events.size_hint().0);
        // Most batches come from one file: its location is made once.
        let mut location: Option<(&str, String)> = None;
        for (sequence, path, line) in events {
            if location.as_ref().is_none_or(|(p, _)| *p != path) {
                location = Some((path, origin.location(path)));
            }
            let loc = location.as_ref().map_or("", |(_, l)| l.as_str());
            let arrival = Timestamp::now();
            let mut event = match predecode_checked(line, loc, &self.manager_host) {
                Ok(e) => e,
                Err(error) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    warn!(location = %loc, %error, "Dropped an event with an invalid location.");
                    continue;
                }
            };
            let judged = judge_time(&event, arrival, self.time_source, &self.zone);
            if judged.fell_back {
                self.stats.time_fallbacks.fetch_add(1, Ordering::Relaxed);
            }
            self.ruleset.decoders.decode(&mut event);
            prepared.push(Prepared {
                sequence,
                event,
                time: judged.time,
            });
        }
        prepared
    }

    /// Queues prepared events in `lane` for the rules; the answer is the
    /// alerts they raised.
    pub fn submit(
        &self,
        lane: u64,
        events: Vec<Prepared>,
    ) -> Result<oneshot::Receiver<Vec<Judged>>, AnalysisStopped> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .push(lane, Job { events, reply })
            .map_err(|_| AnalysisStopped)?;
        Ok(answer)
    }

    /// Judges a batch of one agent's events; returns the alerts.
    pub async fn analyze(
        &self,
        origin: Origin,
        events: Vec<Input>,
    ) -> Result<Vec<Judged>, AnalysisStopped> {
        let prepared = self.prepare(
            &origin,
            events
                .iter()
                .map(|e| (e.sequence, e.path.as_str(), e.line.as_slice())),
        );
        self.submit(SHARED_LANE, prepared)?
            .await
            .map_err(|_| AnalysisStopped)
    }

    /// Batches waiting for the engine thread.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The thread's counters.
    pub fn stats(&self) -> &AnalysisStats {
        &self.stats
    }
}

fn judge(engine: &mut Engine, events: Vec<Prepared>, stats: &AnalysisStats) -> Vec<Judged> {
    let mut alerts = Vec::new();
    stats
        .events
        .fetch_add(events.len() as u64, Ordering::Relaxed);
    for prepared in events {
        let verdict = engine.judge(&prepared.event, prepared.time);
        if let Some(mut alert) = verdict.into_alert() {
            stats.alerts.fetch_add(1, Ordering::Relaxed);
            // The store keeps milliseconds; the alert published is the one stored.
            alert.time =
                Timestamp::from_millisecond(alert.time.as_millisecond()).unwrap_or(alert.time);
            alerts.push(Judged {
                sequence: prepared.sequence,
                alert,
            });
        }
    }
    alerts
}
