//! Flow control per stream: how many of an agent's batches the manager
//! holds, how fast it takes them, and the stages a batch moves through
//! while the next ones are read.
//!
//! A [`Stream`] admits at most [`FlowConfig::in_flight`] batches that are
//! not committed yet; while that many wait (for the decoders, the engine
//! or the database), the session stops reading the agent's stream, HTTP/2
//! flow control stops the agent's sends, and the backlog stays in the
//! agent's spool and, behind it, in the file. Nothing is buffered for an
//! agent beyond those batches, whatever it offers, and nothing is dropped.
//!
//! A per-agent rate limit ([`FlowConfig::events_per_second`], a token
//! bucket holding one second of events) delays the next read the same
//! way: it slows an agent, it never drops its events.
//!
//! Within a stream, batches overlap: one is decoded (pre-decoding and
//! decoders are stateless and run on the blocking pool, in parallel with
//! everything else) while an earlier one is judged by the engine thread
//! (rules and correlation, in arrival order, behind the fair queue of
//! [`super::fair`]) and an even earlier one is committed. The committer
//! takes every batch that is judged by the time it is free into one
//! transaction, so a busy agent costs few commits; each commit is
//! acknowledged with the agent's highest stored sequence, as before.

use std::sync::Arc;
use std::time::Duration;

use palisade_common::config::Problems;
use palisade_proto::v1::manager_message::Kind as ManagerKind;
use palisade_proto::v1::{Ack, ManagerMessage};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::warn;

use super::analysis::{AnalysisStopped, Judged, Verdict};
use super::{Pipeline, PipelineError, ReceivedEvent, Source};
use crate::sessions::AgentSender;

/// Batches of one stream admitted and not yet committed, by default.
pub const DEFAULT_IN_FLIGHT: usize = 4;
/// Most events the committer puts into one transaction.
const GROUP_EVENTS: usize = 8_192;

/// `[flow]` as written in manager.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlow {
    /// Most events per second taken from one agent (absent or 0: no limit).
    pub agent_events_per_second: Option<u64>,
    /// Batches of one stream held at once.
    pub in_flight_batches: Option<u64>,
}

/// The validated `[flow]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowConfig {
    /// Most events per second taken from one agent; `None`: no limit.
    pub events_per_second: Option<u32>,
    /// Batches of one stream admitted and not yet committed.
    pub in_flight: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            events_per_second: None,
            in_flight: DEFAULT_IN_FLIGHT,
        }
    }
}

/// Checks `[flow]`; problems go to `errors`, each naming its key.
pub fn compile(raw: RawFlow, errors: &mut Problems) -> FlowConfig {
    let events_per_second = match raw.agent_events_per_second {
        None | Some(0) => None,
        Some(n) => match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(
                    "flow.agent_events_per_second",
                    format!("{n} is above the most, {}", u32::MAX),
                );
                None
            }
        },
    };
    let in_flight = match raw.in_flight_batches {
        None => DEFAULT_IN_FLIGHT,
        Some(n @ 1..=64) => n as usize,
        Some(n) => {
            errors.push("flow.in_flight_batches", format!("{n} is outside 1 to 64"));
            DEFAULT_IN_FLIGHT
        }
    };
    FlowConfig {
        events_per_second,
        in_flight,
    }
}

/// A token bucket of events: one second's worth at most; a batch may take
/// it into debt, and the next one waits until the debt is paid.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// A full bucket for `per_second` events per second.
    pub fn new(per_second: u32, now: Instant) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            tokens: f64::from(per_second.max(1)),
            at: now,
        }
    }

    /// Takes `events` at `now`; returns how long to wait before reading on.
    pub fn take(&mut self, events: usize, now: Instant) -> Duration {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.per_second);
        self.at = now;
        self.tokens -= events as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

/// A batch admitted, on its way to the commit.
struct Pending {
    events: Vec<ReceivedEvent>,
    /// The engine's answer; `None` when every event was stored before.
    judged: Option<oneshot::Receiver<Verdict>>,
    _permit: OwnedSemaphorePermit,
}

/// A judged batch, ready to commit.
pub(super) struct Ready {
    pub(super) events: Vec<ReceivedEvent>,
    pub(super) judged: Vec<Judged>,
    _permit: OwnedSemaphorePermit,
}

impl Pending {
    async fn ready(self) -> Result<Ready, AnalysisStopped> {
        let judged = match self.judged {
            Some(rx) => rx.await.map_err(|_| AnalysisStopped)?.into_alerts(),
            None => Vec::new(),
        };
        Ok(Ready {
            events: self.events,
            judged,
            _permit: self._permit,
        })
    }

    /// The batch, if the engine has answered already; otherwise itself.
    fn ready_now(mut self) -> Result<Result<Ready, AnalysisStopped>, Self> {
        let judged = match &mut self.judged {
            None => Vec::new(),
            Some(rx) => match rx.try_recv() {
                Ok(verdict) => verdict.into_alerts(),
                Err(oneshot::error::TryRecvError::Empty) => return Err(self),
                Err(oneshot::error::TryRecvError::Closed) => return Ok(Err(AnalysisStopped)),
            },
        };
        Ok(Ok(Ready {
            events: self.events,
            judged,
            _permit: self._permit,
        }))
    }
}

/// One agent's stream through the pipeline (see the module docs).
#[derive(Debug)]
pub struct Stream {
    pipeline: Pipeline,
    lane: u64,
    source: Source,
    /// Highest sequence accepted on this stream (handed to the engine, or
    /// stored before): the next batch's sequence numbers follow it.
    accepted_upto: u64,
    credits: Arc<Semaphore>,
    rate: Option<RateLimit>,
    cancel: CancellationToken,
    /// Boxed batches: a channel holds a block of 32 slots from its
    /// creation on, and 32 unboxed ones (56 bytes each) were 1.8 KiB of
    /// every idle agent.
    commits: Option<mpsc::Sender<Box<Pending>>>,
    committer: Option<JoinHandle<Result<(), PipelineError>>>,
}

/// Why [`Stream::submit`] took no batch.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The stream is being ended (cancelled while it waited); the
    /// session says why.
    #[error("the stream is ending")]
    Ending,
    /// A stage failed; the agent has been told.
    #[error(transparent)]
    Failed(#[from] PipelineError),
}

impl Stream {
    pub(super) fn open(
        pipeline: Pipeline,
        source: Source,
        acks: AgentSender,
        cancel: CancellationToken,
    ) -> Self {
        let flow = pipeline.flow;
        let (tx, rx) = mpsc::channel(flow.in_flight);
        let committer = tokio::spawn(commit_loop(pipeline.clone(), source.clone(), rx, acks));
        Self {
            lane: pipeline.analyzer.new_lane(),
            accepted_upto: source.stored_upto,
            source,
            credits: Arc::new(Semaphore::new(flow.in_flight)),
            rate: flow
                .events_per_second
                .map(|n| RateLimit::new(n, Instant::now())),
            cancel,
            commits: Some(tx),
            committer: Some(committer),
            pipeline,
        }
    }

    /// Admits one batch (`lost_before` events lost by the agent before
    /// it): checks it ([`Pipeline::admit`]; a batch that breaks the
    /// protocol is refused whole), waits for the rate limit and for a free
    /// place (the session reads nothing meanwhile), decodes it and hands it
    /// to the engine; the committer stores and acknowledges it later.
    pub async fn submit(
        &mut self,
        mut events: Vec<ReceivedEvent>,
        lost_before: u64,
    ) -> Result<(), SubmitError> {
        let upto = self
            .pipeline
            .admit(
                &self.source,
                &mut self.accepted_upto,
                &mut events,
                lost_before,
            )
            .await?;
        if let Some(rate) = &mut self.rate {
            let wait = rate.take(events.len(), Instant::now());
            if !wait.is_zero() {
                tokio::select! {
                    _ = self.cancel.cancelled() => return Err(SubmitError::Ending),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        let permit = tokio::select! {
            _ = self.cancel.cancelled() => return Err(SubmitError::Ending),
            p = self.credits.clone().acquire_owned() => p.map_err(|_| SubmitError::Ending)?,
        };
        let fresh = events.iter().filter(|e| e.sequence > upto).count();
        self.pipeline.outputs.stats().events(fresh as u64);
        if fresh == 0 {
            return self.send(events, None, permit).await;
        }
        let analyzer = self.pipeline.analyzer.clone();
        let origin = self.source.origin.clone();
        let (events, origin, prepared) = tokio::task::spawn_blocking(move || {
            let prepared = analyzer.prepare(
                &origin,
                events
                    .iter()
                    .filter(|e| e.sequence > upto)
                    .map(|e| (e.sequence, e.location.as_str(), &e.line[..])),
            );
            (events, origin, prepared)
        })
        .await
        .map_err(|_| PipelineError::Analysis(AnalysisStopped))?;
        let rx = self
            .pipeline
            .analyzer
            .submit(self.lane, origin, prepared)
            .map_err(PipelineError::Analysis)?;
        self.send(events, Some(rx), permit).await
    }

    async fn send(
        &mut self,
        events: Vec<ReceivedEvent>,
        judged: Option<oneshot::Receiver<Verdict>>,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), SubmitError> {
        let pending = Box::new(Pending {
            events,
            judged,
            _permit: permit,
        });
        let sent = match &self.commits {
            Some(tx) => tx.send(pending).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The committer ended: it failed (and told the agent).
        Err(SubmitError::Failed(
            self.finish()
                .await
                .err()
                .unwrap_or_else(|| PipelineError::Ended("the stream's committer stopped".into())),
        ))
    }

    /// Waits until every admitted batch is committed and acknowledged (or
    /// the first failure); the stream takes no more batches.
    pub async fn finish(&mut self) -> Result<(), PipelineError> {
        self.commits = None;
        match self.committer.take() {
            Some(task) => task
                .await
                .unwrap_or(Err(PipelineError::Analysis(AnalysisStopped))),
            None => Ok(()),
        }
    }
}

/// Commits judged batches in order, grouping those that are ready, and
/// acknowledges each commit. A failure ends the agent's stream with its
/// reason (the agent reconnects and sends the rest again).
async fn commit_loop(
    pipeline: Pipeline,
    source: Source,
    mut rx: mpsc::Receiver<Box<Pending>>,
    acks: AgentSender,
) -> Result<(), PipelineError> {
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => *p,
                None => return Ok(()),
            },
        };
        // Boxed: between batches (an idle agent's whole life) the task
        // holds only its wait for the next one, not room for a commit's
        // database work (7 to 16 KiB per agent in a heap profile).
        let result = Box::pin(async {
            let mut group = vec![first.ready().await?];
            let mut events = group[0].events.len();
            while events < GROUP_EVENTS {
                let Ok(next) = rx.try_recv() else { break };
                match next.ready_now() {
                    Ok(ready) => {
                        let ready = ready?;
                        events += ready.events.len();
                        group.push(ready);
                    }
                    Err(not_yet) => {
                        carry = Some(not_yet);
                        break;
                    }
                }
            }
            pipeline.commit(&source, group).await
        })
        .await;
        match result {
            Ok(highest) => {
                let ack = ManagerMessage {
                    kind: Some(ManagerKind::Ack(Ack { sequence: highest })),
                };
                if acks.send(Ok(Box::new(ack))).await.is_err() {
                    return Ok(());
                }
            }
            Err(error) => {
                warn!(agent = %source.agent_id, %error, "Cannot store a batch; ending the agent's stream.");
                let status = Status::from(error);
                let _ = acks.send(Err(status.clone())).await;
                return Err(PipelineError::Ended(status.message().to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_delays_by_the_debt_and_refills_over_time() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(1000, t0);
        // A full bucket: one second of events passes at once.
        assert_eq!(r.take(1000, t0), Duration::ZERO);
        // 500 more: half a second of debt.
        assert_eq!(r.take(500, t0), Duration::from_millis(500));
        // After the wait the debt is paid; the next batch waits its own time.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(r.take(100, t1), Duration::from_millis(100));
        // A long pause refills one second at most.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(r.take(1000, t2), Duration::ZERO);
        assert_eq!(r.take(1, t2), Duration::from_millis(1));
    }

    #[test]
    fn the_section_is_read_and_checked() {
        let mut errors = Problems::new();
        let c = compile(
            RawFlow {
                agent_events_per_second: Some(20_000),
                in_flight_batches: None,
            },
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.events_per_second, Some(20_000));
        assert_eq!(c.in_flight, DEFAULT_IN_FLIGHT);
        let off = compile(
            RawFlow {
                agent_events_per_second: Some(0),
                in_flight_batches: Some(0),
            },
            &mut errors,
        );
        assert_eq!(off.events_per_second, None);
        assert_eq!(errors.keys(), ["flow.in_flight_batches"], "{errors:?}");
    }
}
