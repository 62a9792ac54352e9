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
//! This is where checks on what a source may send (sequences, sizes) and
//! how fast it may send belong, and how commits are grouped: in front of
//! the store, behind every transport.

pub mod analysis;

use tracing::info;

use crate::outputs::Outputs;
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
        }
    }

    /// Judges, stores, responds to and publishes one batch of `source`'s
    /// events; returns the highest sequence stored, to acknowledge.
    pub async fn process(
        &self,
        source: &mut Source,
        events: &[IncomingEvent<'_>],
    ) -> Result<u64, PipelineError> {
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
