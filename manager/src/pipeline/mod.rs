//! The pipeline: what becomes of a batch of an agent's events, whichever
//! transport received it. A transport (today the gRPC stream in
//! [`crate::ingest`]) only admits the agent, hands each batch to
//! [`Pipeline::process`] and acknowledges the sequence number it returns.
//!
//! For each batch, in order:
//!
//! 1. the events not stored yet (a batch resent after a lost
//!    acknowledgement repeats some) are judged by the engine thread
//!    ([`analysis`]);
//! 2. the events (with `logall`) and the alerts they raised are stored in
//!    one transaction, which also advances the agent's stored sequence;
//! 3. the responder decides and sends the active responses of the alerts;
//! 4. the alerts are published ([`crate::outputs`]: alert files, mail,
//!    followers), only now that they are committed.
//!
//! This is where checks on what a source may send belong, in front of
//! the store, behind every transport: before step 1 a batch's sequence
//! numbers are checked ([`crate::protocol::check_sequences`]; a gap or a
//! jump refuses the batch), and its lines are cut at `[limits]
//! max_line_length`, its locations cleaned and its times checked
//! ([`crate::protocol`]), so the engine, the archive and the alerts only
//! ever see bounded text. How fast a source may send, and how commits are
//! grouped, belong here too.

pub mod analysis;

use tracing::{info, warn};

use crate::outputs::Outputs;
use crate::protocol::{self, SequenceCheck, Violation};
use crate::responder::Responder;
use crate::store::{AgentRecord, IncomingEvent, Store, StoreError, StoredAlert};
use analysis::{AnalysisStopped, Analyzer, Input, Origin};

/// Why a batch was not processed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The engine thread has stopped (the manager is going down).
    #[error(transparent)]
    Analysis(#[from] AnalysisStopped),
    /// Storing the batch or deciding its responses failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The batch breaks the protocol (a gap or a jump in its sequence
    /// numbers); nothing of it was stored.
    #[error("refused: {0}")]
    Refused(#[from] Violation),
}

/// One source of events (an agent's stream): who sends them, and how far
/// its events are stored.
#[derive(Debug, Clone)]
pub struct Source {
    agent_id: String,
    origin: Origin,
    /// The highest sequence stored, so only new events are judged.
    stored_upto: u64,
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
        }
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
    /// Lines are cut here (`[limits] max_line_length`).
    max_line_length: usize,
}

impl Pipeline {
    /// A pipeline judging with `analyzer`, storing in `store` (every event
    /// when `archive`), responding with `responder` and publishing to
    /// `outputs`.
    pub fn new(
        store: Store,
        analyzer: Analyzer,
        responder: Responder,
        outputs: Outputs,
        archive: bool,
    ) -> Self {
        Self {
            store,
            analyzer,
            responder,
            outputs,
            archive,
            max_line_length: crate::limits::DEFAULT_MAX_LINE_LENGTH,
        }
    }

    /// Lines longer than `max` bytes are cut and flagged.
    pub fn with_max_line_length(mut self, max: usize) -> Self {
        self.max_line_length = max;
        self
    }

    /// Checks a batch's sequence numbers against what is stored (read
    /// again once when the source's view fails: a stream replaced by a
    /// newer one may have stored meanwhile).
    async fn check_sequences(
        &self,
        source: &mut Source,
        events: &[IncomingEvent<'_>],
        lost_before: u64,
    ) -> Result<(), PipelineError> {
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        let check = match protocol::check_sequences(source.stored_upto, lost_before, &sequences) {
            Ok(check) => check,
            Err(violation) => {
                let fresh = self
                    .store
                    .agent(&source.agent_id)
                    .await?
                    .map(|a| a.last_sequence);
                match fresh {
                    Some(fresh) if fresh != source.stored_upto => {
                        source.stored_upto = fresh;
                        protocol::check_sequences(fresh, lost_before, &sequences)?
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
                stored = source.stored_upto,
                "A batch already stored was sent again; acknowledged, nothing stored twice."
            ),
            SequenceCheck::AfterLoss { lost } => warn!(
                agent = %source.agent_id,
                lost,
                from = source.stored_upto + 1,
                to = source.stored_upto + lost,
                "The agent lost events before sending them (its spool was full)."
            ),
            _ => {}
        }
        Ok(())
    }

    /// Judges, stores, responds to and publishes one batch of `source`'s
    /// events (`lost_before` events lost by the source before it); returns
    /// the highest sequence stored, to acknowledge. A batch whose sequence
    /// numbers break the protocol is refused whole.
    pub async fn process(
        &self,
        source: &mut Source,
        events: &[IncomingEvent<'_>],
        lost_before: u64,
    ) -> Result<u64, PipelineError> {
        self.check_sequences(source, events, lost_before).await?;
        let locations: Vec<Option<String>> = events
            .iter()
            .map(|e| match protocol::clean_location(e.location) {
                Ok(_) => None,
                Err((cleaned, reason)) => {
                    warn!(agent = %source.agent_id, sequence = e.sequence, location = %cleaned, reason, "An event's location was adjusted.");
                    Some(cleaned)
                }
            })
            .collect();
        let arrival = crate::store::now_ms();
        let (mut cut, mut longest, mut clamped) = (0u64, 0usize, 0u64);
        let admitted: Vec<IncomingEvent<'_>> = events
            .iter()
            .zip(&locations)
            .map(|(e, location)| {
                let (line, was_cut) = protocol::cut_line(e.line, self.max_line_length);
                let (read_at, was_clamped) = protocol::sane_read_at(e.read_at, arrival);
                if was_cut {
                    cut += 1;
                    longest = longest.max(e.line.len());
                }
                clamped += u64::from(was_clamped);
                IncomingEvent {
                    location: location.as_deref().unwrap_or(e.location),
                    line,
                    truncated: e.truncated || was_cut,
                    read_at,
                    read_at_clamped: e.read_at_clamped || was_clamped,
                    ..e.clone()
                }
            })
            .collect();
        if cut > 0 {
            warn!(agent = %source.agent_id, lines = cut, longest, limit = self.max_line_length, "Cut lines longer than max_line_length (flagged truncated).");
        }
        if clamped > 0 {
            warn!(agent = %source.agent_id, events = clamped, "Events read more than a year before or a day after arrival: their time is the arrival time (flagged read_at_clamped).");
        }
        let events = &admitted[..];
        let inputs: Vec<Input> = events
            .iter()
            .filter(|e| e.sequence > source.stored_upto)
            .map(|e| Input {
                sequence: e.sequence,
                path: e.location.to_string(),
                line: e.line.to_vec(),
            })
            .collect();
        self.outputs.stats().events(inputs.len() as u64);
        let judged = if inputs.is_empty() {
            Vec::new()
        } else {
            self.analyzer.analyze(source.origin.clone(), inputs).await?
        };
        let stored = self
            .store
            .store_events(&source.agent_id, events, &judged, self.archive)
            .await?;
        source.stored_upto = stored.highest;
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
