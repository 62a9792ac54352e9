//! The pipeline: what becomes of a batch of an agent's events, whichever
//! transport received it. A transport (today the gRPC stream in
//! [`crate::ingest`]) only admits the agent, opens a [`flow::Stream`] for
//! it and hands it each batch; the stream acknowledges what it stored.
//!
//! For each batch, in order:
//!
//! 1. flow control admits it ([`flow`]: a bounded number of batches per
//!    stream, the per-agent rate limit), or the transport stops reading;
//! 2. the events not stored yet (a batch resent after a lost
//!    acknowledgement repeats some) are pre-decoded and decoded, then
//!    judged by the engine thread behind a fair queue ([`analysis`],
//!    [`fair`]);
//! 3. the events (with `logall`) and the alerts they raised are stored in
//!    one transaction, which also advances the agent's stored sequence
//!    (batches judged meanwhile are grouped into it);
//! 4. the responder decides and sends the active responses of the alerts;
//! 5. the alerts are published ([`crate::outputs`]: alert files, mail,
//!    followers), only now that they are committed, and the highest stored
//!    sequence is acknowledged.
//!
//! This is where checks on what a source may send belong, in front of
//! the store, behind every transport: before step 1 a batch's sequence
//! numbers are checked ([`crate::protocol::check_sequences`]; a gap or a
//! jump refuses the batch) against the last sequence the stream
//! ACCEPTED (several batches are in flight; the stored one lags), and its
//! lines are cut at `[limits] max_line_length`, its locations cleaned and
//! its times checked ([`crate::protocol`]), so the engine, the archive and
//! the alerts only ever see bounded text. How fast a source may send
//! ([`flow`]), and how commits are grouped, belong here too.

pub mod analysis;
pub mod fair;
pub mod flow;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::outputs::Outputs;
use crate::protocol::{self, SequenceCheck, Violation};
use crate::responder::Responder;
use crate::sessions::AgentSender;
use crate::store::{AgentRecord, IncomingEvent, Store, StoreError, StoredAlert};
use analysis::{AnalysisStopped, Analyzer, Origin};
use flow::{FlowConfig, Ready, Stream};

/// Why a batch was not processed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The engine thread is gone.
    #[error(transparent)]
    Analysis(#[from] AnalysisStopped),
    /// Storing the batch or deciding its responses failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stream was ended after a failure (the agent was told why).
    #[error("stream ended: {0}")]
    Ended(String),
    /// The batch breaks the protocol (a gap or a jump in its sequence
    /// numbers); nothing of it was stored.
    #[error("refused: {0}")]
    Refused(#[from] Violation),
}

/// One event as received, owned: what the stream keeps of it from the
/// wire until it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEvent {
    /// The agent's sequence number.
    pub sequence: u64,
    /// The file it was read from.
    pub location: String,
    /// OSSEC log_format.
    pub log_format: String,
    /// When the agent read it (ms).
    pub read_at: i64,
    /// `read_at` was out of range and is the arrival time instead.
    pub read_at_clamped: bool,
    /// Cut at the agent's (or the manager's) line limit.
    pub truncated: bool,
    /// The raw line: a slice of the batch's message as received (no
    /// copy per line).
    pub line: palisade_proto::Bytes,
}

impl ReceivedEvent {
    /// The event as the store takes it.
    pub fn as_incoming(&self) -> IncomingEvent<'_> {
        IncomingEvent {
            sequence: self.sequence,
            location: &self.location,
            log_format: &self.log_format,
            read_at: self.read_at,
            read_at_clamped: self.read_at_clamped,
            truncated: self.truncated,
            line: &self.line,
        }
    }
}

/// One source of events (an agent's stream): who sends them, and how far
/// its events are stored.
#[derive(Debug, Clone)]
pub struct Source {
    agent_id: String,
    origin: Origin,
    /// The highest sequence stored when the stream opened.
    stored_upto: u64,
    /// The fencing generation of the agent's lease the stream holds
    /// (`crate::cluster`): its commits are refused once it is taken over.
    lease: Option<u64>,
}

impl Source {
    /// The highest sequence stored, as this source last saw it.
    pub fn stored_upto(&self) -> u64 {
        self.stored_upto
    }

    /// The events of a registered agent, stored up to its last sequence.
    pub fn agent(record: &AgentRecord) -> Self {
        Self {
            agent_id: record.id.clone(),
            origin: Origin {
                agent_id: Some(record.id.clone()),
                name: record.name.clone(),
                ip: record.registered_ip.clone(),
            },
            stored_upto: record.last_sequence,
            lease: None,
        }
    }

    /// Commits fenced by the lease generation `lease`.
    pub fn with_lease(mut self, lease: Option<u64>) -> Self {
        self.lease = lease;
        self
    }
}

/// The stages every batch goes through, shared by all sources.
#[derive(Debug, Clone)]
pub struct Pipeline {
    store: Store,
    analyzer: Analyzer,
    responder: Responder,
    outputs: Outputs,
    /// Keep every event (OSSEC's `logall`), not only the alerts.
    archive: bool,
    flow: FlowConfig,
    /// Lines are cut here (`[limits] max_line_length`).
    max_line_length: usize,
}

impl Pipeline {
    /// A pipeline judging with `analyzer`, storing in `store` (every event
    /// when `archive`), responding with `responder`, publishing to
    /// `outputs`, admitting batches as `flow` says.
    pub fn new(
        store: Store,
        analyzer: Analyzer,
        responder: Responder,
        outputs: Outputs,
        archive: bool,
        flow: FlowConfig,
    ) -> Self {
        Self {
            store,
            analyzer,
            responder,
            outputs,
            archive,
            flow,
            max_line_length: crate::limits::DEFAULT_MAX_LINE_LENGTH,
        }
    }

    /// Lines longer than `max` bytes are cut and flagged.
    pub fn with_max_line_length(mut self, max: usize) -> Self {
        self.max_line_length = max;
        self
    }

    /// Opens `source`'s stream: acknowledgements (and a failure that ends
    /// it) go to `acks`; waits for admission end when `cancel` is.
    pub fn open(&self, source: Source, acks: AgentSender, cancel: CancellationToken) -> Stream {
        Stream::open(self.clone(), source, acks, cancel)
    }

    /// Checks a batch's sequence numbers against `accepted`, the highest
    /// sequence the stream has accepted (its batches in flight included),
    /// and moves it on; returns the sequence the batch's new events follow
    /// (the events up to it were received before). The store is read once
    /// when that fails: a stream replaced by a newer one may have stored
    /// past it meanwhile.
    async fn check_sequences(
        &self,
        source: &Source,
        accepted: &mut u64,
        events: &[ReceivedEvent],
        lost_before: u64,
    ) -> Result<u64, PipelineError> {
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        let check = match protocol::check_sequences(*accepted, lost_before, &sequences) {
            Ok(check) => check,
            Err(violation) => {
                let stored = self
                    .store
                    .agent(&source.agent_id)
                    .await?
                    .map(|a| a.last_sequence);
                match stored {
                    // Only ever forward: what this stream accepted and has
                    // not committed yet is above the stored sequence.
                    Some(stored) if stored > *accepted => {
                        *accepted = stored;
                        protocol::check_sequences(stored, lost_before, &sequences)?
                    }
                    _ => return Err(violation.into()),
                }
            }
        };
        let (first, last) = (
            sequences.first().copied().unwrap_or(0),
            sequences.last().copied().unwrap_or(0),
        );
        match check {
            SequenceCheck::Stored if !sequences.is_empty() => warn!(
                agent = %source.agent_id,
                first,
                last,
                accepted = *accepted,
                "A batch already received was sent again; acknowledged, nothing stored twice."
            ),
            SequenceCheck::AfterLoss { lost } => warn!(
                agent = %source.agent_id,
                lost,
                from = *accepted + 1,
                to = *accepted + lost,
                "The agent lost events before sending them (its spool was full)."
            ),
            _ => {}
        }
        let before = *accepted;
        *accepted = before.max(last);
        Ok(before)
    }

    /// Admits a batch of `source`'s events (`lost_before` events lost by
    /// the source before it) after the highest sequence `accepted`: checks
    /// its sequence numbers (a batch that breaks the protocol is refused
    /// whole), cleans its locations, cuts its lines and clamps its times in
    /// place. Returns the sequence its new events follow.
    async fn admit(
        &self,
        source: &Source,
        accepted: &mut u64,
        events: &mut [ReceivedEvent],
        lost_before: u64,
    ) -> Result<u64, PipelineError> {
        let before = self
            .check_sequences(source, accepted, events, lost_before)
            .await?;
        let arrival = crate::store::now_ms();
        let (mut cut, mut longest, mut clamped) = (0u64, 0usize, 0u64);
        for e in events.iter_mut() {
            if let Err((cleaned, reason)) = protocol::clean_location(&e.location) {
                warn!(agent = %source.agent_id, sequence = e.sequence, location = %cleaned, reason, "An event's location was adjusted.");
                e.location = cleaned;
            }
            let (line, was_cut) = protocol::cut_line(&e.line, self.max_line_length);
            if was_cut {
                let len = line.len();
                cut += 1;
                longest = longest.max(e.line.len());
                e.line.truncate(len);
                e.truncated = true;
            }
            let (read_at, was_clamped) = protocol::sane_read_at(e.read_at, arrival);
            if was_clamped {
                clamped += 1;
                e.read_at = read_at;
                e.read_at_clamped = true;
            }
        }
        if cut > 0 {
            warn!(agent = %source.agent_id, lines = cut, longest, limit = self.max_line_length, "Cut lines longer than max_line_length (flagged truncated).");
        }
        if clamped > 0 {
            warn!(agent = %source.agent_id, events = clamped, "Events read more than a year before or a day after arrival: their time is the arrival time (flagged read_at_clamped).");
        }
        Ok(before)
    }

    /// Stores judged batches of `source` in one transaction, responds to
    /// and publishes their alerts; returns the highest sequence stored.
    async fn commit(&self, source: &Source, mut group: Vec<Ready>) -> Result<u64, PipelineError> {
        let judged: Vec<analysis::Judged> = group
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.judged))
            .collect();
        let mut events: Vec<IncomingEvent<'_>> =
            Vec::with_capacity(group.iter().map(|r| r.events.len()).sum());
        events.extend(
            group
                .iter()
                .flat_map(|r| r.events.iter().map(ReceivedEvent::as_incoming)),
        );
        let stored = self
            .store
            .store_fenced_events(
                &source.agent_id,
                source.lease,
                &events,
                &judged,
                self.archive,
            )
            .await?;
        drop(events);
        let alerts: Vec<StoredAlert> = stored
            .alert_ids
            .iter()
            .zip(judged)
            .map(|(&id, j)| StoredAlert {
                id,
                origin: source.origin.clone(),
                event_sequence: Some(j.sequence),
                alert: j.alert,
            })
            .collect();
        for a in &alerts {
            info!(
                alert = a.id,
                agent = %source.agent_id,
                rule = a.alert.rule_id,
                level = a.alert.level,
                srcip = a.alert.srcip.as_deref().unwrap_or("-"),
                description = %a.alert.description,
                "Alert."
            );
        }
        // Responses first, so that followers (`alerts --follow`) see the
        // responses each alert caused; the alerts go out even if that fails.
        let responded = self.responder.on_alerts(&alerts).await;
        self.outputs.publish(alerts);
        responded?;
        Ok(stored.highest)
    }
}
