//! The analysis engine's thread: every event received from an agent is
//! pre-decoded, decoded and run through the rules here, in arrival order.
//!
//! One thread owns the engine and its correlation state, so rules that
//! count events across agents (OSSEC's frequency rules) see one ordered
//! stream and need no locks; session tasks hand it whole batches and wait
//! for the alerts, which are stored in the same transaction as the events.
//! It runs on a plain thread, not a tokio worker, so a burst of rule work
//! never stalls network I/O.
//!
//! A panic in the engine costs one event, not the manager: each event is
//! judged inside `catch_unwind`; a panic is logged at ERROR with the agent
//! and the line (cut and escaped), counted
//! (`palisade_engine_panics_total`), and the thread goes on with the next
//! event. The engine keeps its correlation memory when its links still
//! hold and starts it afresh when not
//! ([`Engine::recover_after_panic`]; `palisade_correlation_resets_total`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use palisade_engine::engine::{Alert, Engine, EngineConfig, Ruleset};
use palisade_engine::escape::{Escaped, escape_truncated};
use palisade_engine::predecode::predecode_checked_in;
use palisade_engine::timestamp::judge_time;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, warn};

use crate::config::TimeSource;

/// Batches waiting for the engine.
const QUEUE: usize = 64;

/// How much of the line a panic's log message quotes.
const PANIC_LINE_QUOTE: usize = 256;

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
    /// Events whose judging panicked (each skipped, the thread going on).
    pub panics: AtomicU64,
    /// Times the correlation memory was started afresh after a panic.
    pub correlation_resets: AtomicU64,
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
        // The whole engine path (pre-decoding, time, decoders, rules,
        // correlation) runs inside the containment.
        let judged = catch_unwind(AssertUnwindSafe(|| {
            judge_one(
                engine,
                &job.origin,
                input,
                zone,
                time_source,
                manager_host,
                stats,
            )
        }));
        let alert = match judged {
            Ok(alert) => alert,
            Err(panic) => {
                contain_panic(engine, &job.origin, input, panic.as_ref(), stats);
                continue;
            }
        };
        if let Some(mut alert) = alert {
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

/// One event through the engine; its alert, if any.
fn judge_one(
    engine: &mut Engine,
    origin: &Origin,
    input: &Input,
    zone: &TimeZone,
    time_source: TimeSource,
    manager_host: &str,
    stats: &AnalysisStats,
) -> Option<Alert> {
    let arrival = Timestamp::now();
    let location = origin.location(&input.path);
    let dialect = engine.ruleset().dialect;
    let mut event = match predecode_checked_in(&input.line, &location, manager_host, dialect) {
        Ok(e) => e,
        Err(error) => {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            warn!(
                location = %Escaped(&location),
                error = %Escaped(&error.to_string()),
                "Dropped an event with an invalid location."
            );
            return None;
        }
    };
    let judged = judge_time(&event, arrival, time_source, zone);
    if judged.fell_back {
        stats.time_fallbacks.fetch_add(1, Ordering::Relaxed);
    }
    stats.events.fetch_add(1, Ordering::Relaxed);
    engine.process(&mut event, judged.time)
}

/// After the engine panicked on `input`: counts it, logs it and makes the
/// engine fit for the next event.
fn contain_panic(
    engine: &mut Engine,
    origin: &Origin,
    input: &Input,
    panic: &(dyn std::any::Any + Send),
    stats: &AnalysisStats,
) {
    stats.panics.fetch_add(1, Ordering::Relaxed);
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let reset = engine.recover_after_panic();
    if reset.is_some() {
        stats.correlation_resets.fetch_add(1, Ordering::Relaxed);
    }
    error!(
        agent = origin.agent_id.as_deref().unwrap_or("000"),
        name = %Escaped(&origin.name),
        path = %Escaped(&input.path),
        sequence = input.sequence,
        line = %escape_truncated(&input.line, PANIC_LINE_QUOTE),
        panic = %Escaped(message),
        correlation_reset = reset.as_deref().unwrap_or("no"),
        "The analysis engine panicked on an event; the event is skipped and analysis goes on."
    );
}

#[cfg(test)]
mod tests {
    use palisade_engine::default_ruleset;
    use palisade_engine::engine::test_panic_trigger::{BEFORE_DECODING, IN_STORE};

    use super::*;

    fn failed_login(user: &str, ip: &str) -> Vec<u8> {
        format!(
            "Dec  6 23:59:01 web01 sshd[42]: Failed password for {user} from {ip} port 50022 ssh2"
        )
        .into_bytes()
    }

    fn inputs(lines: Vec<Vec<u8>>, first: u64) -> Vec<Input> {
        lines
            .into_iter()
            .zip(first..)
            .map(|(line, sequence)| Input {
                sequence,
                path: "/var/log/auth.log".into(),
                line,
            })
            .collect()
    }

    fn marker(trigger: &[u8]) -> &str {
        std::str::from_utf8(trigger).unwrap_or_default()
    }

    /// A real engine thread with Palisade's ruleset and the engine's
    /// test-only panic triggers: a panic costs its event only, the thread
    /// goes on, and the sshd brute-force count (rule 5720, on the 8th
    /// failure from one address) survives a panic that left the
    /// correlation memory whole and restarts after one that broke it.
    #[tokio::test]
    async fn a_panic_costs_one_event() {
        let ruleset = Arc::new(default_ruleset::load().unwrap());
        let analyzer = Analyzer::start(
            ruleset,
            EngineConfig::default(),
            TimeSource::Arrival,
            "mgr".into(),
        )
        .unwrap();
        let origin = Origin {
            agent_id: Some("001".into()),
            name: "web01".into(),
            ip: "any".into(),
        };
        let ip = "198.51.100.7";
        // 4 failures, a panic before decoding, 4 failures.
        let mut lines: Vec<Vec<u8>> = (0..4).map(|_| failed_login("root", ip)).collect();
        lines.push(failed_login(
            &format!("x{}\n\x1b[2J", marker(BEFORE_DECODING)),
            ip,
        ));
        lines.extend((0..4).map(|_| failed_login("root", ip)));
        let judged = analyzer
            .analyze(origin.clone(), inputs(lines, 1))
            .await
            .unwrap();
        let stats = analyzer.stats();
        assert_eq!(stats.panics.load(Ordering::Relaxed), 1);
        assert_eq!(stats.correlation_resets.load(Ordering::Relaxed), 0);
        let seqs: Vec<u64> = judged.iter().map(|j| j.sequence).collect();
        assert_eq!(
            seqs,
            [1, 2, 3, 4, 6, 7, 8, 9],
            "only the panicking event is lost"
        );
        let rules: Vec<u32> = judged.iter().map(|j| j.alert.rule_id).collect();
        assert_eq!(
            rules,
            [5716, 5716, 5716, 5716, 5716, 5716, 5716, 5720],
            "the count went on across the panic"
        );

        // A panic half-way through storing: the memory is started afresh,
        // and counting restarts.
        let ip = "198.51.100.8";
        let mut lines: Vec<Vec<u8>> = (0..3).map(|_| failed_login("root", ip)).collect();
        lines.push(failed_login(marker(IN_STORE), ip));
        lines.extend((0..8).map(|_| failed_login("root", ip)));
        let judged = analyzer.analyze(origin, inputs(lines, 10)).await.unwrap();
        assert_eq!(stats.panics.load(Ordering::Relaxed), 2);
        assert_eq!(stats.correlation_resets.load(Ordering::Relaxed), 1);
        let seqs: Vec<u64> = judged.iter().map(|j| j.sequence).collect();
        assert_eq!(seqs, (10..22).filter(|&s| s != 13).collect::<Vec<_>>());
        let fired: Vec<u64> = judged
            .iter()
            .filter(|j| j.alert.rule_id == 5720)
            .map(|j| j.sequence)
            .collect();
        assert_eq!(fired, [21], "the 8th failure after the reset");
    }
}
