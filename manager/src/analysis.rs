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
use palisade_engine::predecode::predecode_checked;
use palisade_engine::timestamp::judge_time;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::config::TimeSource;

/// Batches waiting for the engine.
const QUEUE: usize = 64;

/// The agent an event came from, as OSSEC names it in the location.
#[derive(Debug, Clone)]
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

/// An alert ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    /// When it was judged (ms).
    pub time: i64,
    /// Rule id.
    pub rule_id: u32,
    /// Rule level.
    pub level: u32,
    /// Rule description.
    pub description: String,
    /// Groups, comma-separated.
    pub groups: String,
    /// Agent id.
    pub agent_id: Option<String>,
    /// OSSEC location.
    pub location: String,
    /// Decoder name.
    pub decoder: Option<String>,
    /// Decoded source address.
    pub srcip: Option<String>,
    /// Decoded destination address.
    pub dstip: Option<String>,
    /// Decoded source user.
    pub srcuser: Option<String>,
    /// Decoded destination user.
    pub dstuser: Option<String>,
    /// Decoded URL.
    pub url: Option<String>,
    /// The event's sequence number.
    pub event_sequence: Option<u64>,
    /// The line, then the correlated lines, newline-separated.
    pub log: Vec<u8>,
    /// Whether the rule wants it written to alert logs (`no_log` unset).
    pub log_it: bool,
    /// The rule forbids active responses (`<options>no_ar</options>`).
    pub no_ar: bool,
    /// `<options>alert_by_email</options>`: mail even below
    /// `email_alert_level`.
    pub alert_by_email: bool,
    /// `<options>no_email_alert</options>`: never mail.
    pub no_email_alert: bool,
}

impl NewAlert {
    fn from_engine(alert: &Alert, origin: &Origin, sequence: u64) -> Self {
        let f = &alert.event.fields;
        let mut log = alert.event.full_log.clone();
        for line in &alert.correlated {
            log.push(b'\n');
            log.extend_from_slice(line.as_bytes());
        }
        Self {
            time: alert.time.as_millisecond(),
            rule_id: alert.rule_id,
            level: alert.level,
            description: alert.description.clone(),
            groups: alert.groups.join(","),
            agent_id: origin.agent_id.clone(),
            location: alert.event.location.clone(),
            decoder: alert.event.decoder_name.clone(),
            srcip: f.srcip.clone(),
            dstip: f.dstip.clone(),
            srcuser: f.srcuser.clone(),
            dstuser: f.dstuser.clone(),
            url: f.url.clone(),
            event_sequence: Some(sequence),
            log,
            log_it: alert.log_it(),
            no_ar: alert.options.no_ar,
            alert_by_email: alert.options.alert_by_email,
            no_email_alert: alert.options.no_email_alert,
        }
    }
}

struct Job {
    origin: Origin,
    events: Vec<Input>,
    reply: oneshot::Sender<Vec<NewAlert>>,
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
    ) -> Result<Vec<NewAlert>, AnalysisStopped> {
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
) -> Vec<NewAlert> {
    let mut alerts = Vec::new();
    for input in &job.events {
        let arrival = Timestamp::now();
        let location = job.origin.location(&input.path);
        let mut event = match predecode_checked(&input.line, &location, manager_host) {
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
        if let Some(alert) = engine.process(&mut event, now) {
            stats.alerts.fetch_add(1, Ordering::Relaxed);
            alerts.push(NewAlert::from_engine(&alert, &job.origin, input.sequence));
        }
    }
    alerts
}
