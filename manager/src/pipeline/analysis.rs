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
//!
//! A panic in the engine costs one event, not the manager: each event is
//! prepared and judged inside `catch_unwind`; a panic is logged at ERROR
//! with the agent and the line (cut and escaped), counted
//! (`palisade_engine_panics_total`), and the work goes on with the next
//! event. After a panic in the rules the engine keeps its correlation
//! memory when its links still hold and starts it afresh when not
//! ([`Engine::recover_after_panic`]; `palisade_correlation_resets_total`);
//! preparing holds no state to repair.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use palisade_engine::engine::{Alert, Engine, EngineConfig, Ruleset};
use palisade_engine::escape::{Escaped, escape_truncated};
use palisade_engine::event::Event;
use palisade_engine::predecode::predecode_checked_in;
use palisade_engine::timestamp::judge_time;
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use super::fair::{Cost, FairQueue};
use crate::config::TimeSource;

/// The lane of callers that judge one batch at a time ([`Analyzer::analyze`]).
const SHARED_LANE: u64 = 0;

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

/// An event pre-decoded and decoded, with the time it is judged at.
#[derive(Debug)]
pub struct Prepared {
    /// The agent's sequence number.
    pub sequence: u64,
    event: Event,
    time: Timestamp,
}

/// The engine thread's answer for a batch: its alerts, and its events
/// handed back, so that the receiver frees them: freeing a batch's events
/// (their decoded strings) took about a sixth of the one engine thread's
/// time in a profile, and any other thread can do it.
#[derive(Debug)]
pub struct Verdict {
    alerts: Vec<Judged>,
    _spent: Vec<Prepared>,
}

impl Verdict {
    /// The alerts; the events are freed here, on the caller's thread.
    pub fn into_alerts(self) -> Vec<Judged> {
        self.alerts
    }
}

struct Job {
    origin: Origin,
    events: Vec<Prepared>,
    reply: oneshot::Sender<Verdict>,
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
    /// Events whose preparing or judging panicked (each skipped, the work
    /// going on).
    pub panics: AtomicU64,
    /// Times the correlation memory was started afresh after a panic.
    pub correlation_resets: AtomicU64,
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
                    let alerts = judge(&mut engine, &job.origin, &job.events, &thread_stats);
                    let _ = job.reply.send(Verdict {
                        alerts,
                        _spent: job.events,
                    });
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
    /// and counted, as is an event whose preparing panicked.
    pub fn prepare<'a>(
        &self,
        origin: &Origin,
        events: impl IntoIterator<Item = (u64, &'a str, &'a [u8])>,
    ) -> Vec<Prepared> {
        let events = events.into_iter();
        // The callers filter (the events not stored yet): the upper bound
        // is the batch. Growing from the lower one (0) moved every
        // prepared event several times (a profile's largest allocator
        // share on this path).
        let (lower, upper) = events.size_hint();
        let mut prepared = Vec::with_capacity(upper.unwrap_or(lower));
        // Most batches come from one file: its location is made once.
        let mut location: Option<(&str, String)> = None;
        for (sequence, path, line) in events {
            if location.as_ref().is_none_or(|(p, _)| *p != path) {
                location = Some((path, origin.location(path)));
            }
            let loc = location.as_ref().map_or("", |(_, l)| l.as_str());
            match catch_unwind(AssertUnwindSafe(|| self.prepare_one(loc, line))) {
                Ok(Some((event, time))) => prepared.push(Prepared {
                    sequence,
                    event,
                    time,
                }),
                Ok(None) => {}
                Err(panic) => {
                    self.stats.panics.fetch_add(1, Ordering::Relaxed);
                    log_panic(origin, path, sequence, line, panic.as_ref(), None);
                }
            }
        }
        prepared
    }

    /// One event pre-decoded, timed and decoded; `None` when its location
    /// is refused.
    fn prepare_one(&self, location: &str, line: &[u8]) -> Option<(Event, Timestamp)> {
        let arrival = Timestamp::now();
        let dialect = self.ruleset.dialect;
        let mut event = match predecode_checked_in(line, location, &self.manager_host, dialect) {
            Ok(e) => e,
            Err(error) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                warn!(
                    location = %Escaped(location),
                    error = %Escaped(&error.to_string()),
                    "Dropped an event with an invalid location."
                );
                return None;
            }
        };
        let judged = judge_time(&event, arrival, self.time_source, &self.zone);
        if judged.fell_back {
            self.stats.time_fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        self.ruleset.decode(&mut event);
        Some((event, judged.time))
    }

    /// Queues prepared events of `origin` in `lane` for the rules; the
    /// answer is the alerts they raised.
    pub fn submit(
        &self,
        lane: u64,
        origin: Origin,
        events: Vec<Prepared>,
    ) -> Result<oneshot::Receiver<Verdict>, AnalysisStopped> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .push(
                lane,
                Job {
                    origin,
                    events,
                    reply,
                },
            )
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
        self.submit(SHARED_LANE, origin, prepared)?
            .await
            .map(Verdict::into_alerts)
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

fn judge(
    engine: &mut Engine,
    origin: &Origin,
    events: &[Prepared],
    stats: &AnalysisStats,
) -> Vec<Judged> {
    let mut alerts = Vec::new();
    for prepared in events {
        stats.events.fetch_add(1, Ordering::Relaxed);
        // The rules and the correlation run inside the containment.
        let judged = catch_unwind(AssertUnwindSafe(|| {
            engine.judge(&prepared.event, prepared.time).into_alert()
        }));
        let alert = match judged {
            Ok(alert) => alert,
            Err(panic) => {
                stats.panics.fetch_add(1, Ordering::Relaxed);
                let reset = engine.recover_after_panic();
                if reset.is_some() {
                    stats.correlation_resets.fetch_add(1, Ordering::Relaxed);
                }
                let event = &prepared.event;
                log_panic(
                    origin,
                    &event.location,
                    prepared.sequence,
                    &event.full_log,
                    panic.as_ref(),
                    Some(reset.as_deref().unwrap_or("no")),
                );
                continue;
            }
        };
        if let Some(mut alert) = alert {
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

/// Logs a panic contained on one event (`correlation_reset`: what became
/// of the correlation memory, when the rules panicked).
fn log_panic(
    origin: &Origin,
    path: &str,
    sequence: u64,
    line: &[u8],
    panic: &(dyn std::any::Any + Send),
    correlation_reset: Option<&str>,
) {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    error!(
        agent = origin.agent_id.as_deref().unwrap_or("000"),
        name = %Escaped(&origin.name),
        path = %Escaped(path),
        sequence,
        line = %escape_truncated(line, PANIC_LINE_QUOTE),
        panic = %Escaped(message),
        correlation_reset = correlation_reset.unwrap_or("no (while decoding)"),
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
