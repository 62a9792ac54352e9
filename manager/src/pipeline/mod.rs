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
//! This is where checks on what a source may send (sequences, sizes) and
//! how fast it may send belong, and how commits are grouped: in front of
//! the store, behind every transport.

pub mod analysis;
pub mod fair;
pub mod flow;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::outputs::Outputs;
use crate::responder::Responder;
use crate::sessions::AgentSender;
use crate::store::{AgentRecord, IncomingEvent, Store, StoreError, StoredAlert};
use analysis::{AnalysisStopped, Analyzer, Origin};
use flow::{FlowConfig, Ready, Stream};

/// Why a batch was not processed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The engine thread has stopped (the manager is going down).
    #[error(transparent)]
    Analysis(#[from] AnalysisStopped),
    /// Storing the batch or deciding its responses failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stream was ended after a failure (the agent was told why).
    #[error("stream ended: {0}")]
    Ended(String),
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
    /// Cut at the agent's line limit.
    pub truncated: bool,
    /// The raw line.
    pub line: Vec<u8>,
}

impl ReceivedEvent {
    /// The event as the store takes it.
    pub fn as_incoming(&self) -> IncomingEvent<'_> {
        IncomingEvent {
            sequence: self.sequence,
            location: &self.location,
            log_format: &self.log_format,
            read_at: self.read_at,
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
    /// The highest sequence stored, so only new events are judged.
    stored_upto: u64,
}

impl Source {
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
    flow: FlowConfig,
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
        }
    }

    /// Opens `source`'s stream: acknowledgements (and a failure that ends
    /// it) go to `acks`; waits for admission end when `cancel` is.
    pub fn open(&self, source: Source, acks: AgentSender, cancel: CancellationToken) -> Stream {
        Stream::open(self.clone(), source, acks, cancel)
    }

    /// Stores judged batches of `source` in one transaction, responds to
    /// and publishes their alerts; returns the highest sequence stored.
    async fn commit(&self, source: &Source, mut group: Vec<Ready>) -> Result<u64, PipelineError> {
        let judged: Vec<analysis::Judged> = group
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.judged))
            .collect();
        let events: Vec<IncomingEvent<'_>> = group
            .iter()
            .flat_map(|r| r.events.iter().map(ReceivedEvent::as_incoming))
            .collect();
        let stored = self
            .store
            .store_events(&source.agent_id, &events, &judged, self.archive)
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
