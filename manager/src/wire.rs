//! The one place where the manager's types meet the generated protobuf
//! types of `palisade.proto`: alerts, agents, blocks, refusals and commands
//! as the control API and the agents' stream carry them, times, and the
//! errors a call answers with. The services only call these, so a field
//! added to the model is mapped once, for every caller.

use palisade_proto::v1 as pb;
use tonic::Status;

use crate::config::ResponseSpec;
use crate::pipeline::PipelineError;
use crate::responder::ResponseError;
use crate::store::{
    Action, AgentRecord, BlockRow, RefusalRow, ResponseRow, StoreError, StoredAlert, now_ms,
};

/// Epoch milliseconds to and from protobuf timestamps (the shared
/// conversions, under the names this module's callers use).
pub use palisade_common::time::{millis_from_proto as millis, proto_from_millis as timestamp};

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Status::not_found(m),
            StoreError::Conflict(m) => Status::failed_precondition(m),
            StoreError::LeaseLost(m) => Status::aborted(m),
            // Busy, not broken: the caller may try again.
            StoreError::Sqlx(sqlx::Error::PoolTimedOut) => Status::unavailable(
                "the manager's database is busy (no connection, or no turn to write, free in time); try again",
            ),
            e @ (StoreError::Sqlx(_) | StoreError::Migrate(_)) => Status::internal(e.to_string()),
        }
    }
}

impl From<PipelineError> for Status {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Analysis(e) => Status::unavailable(e.to_string()),
            PipelineError::Store(e) => e.into(),
            PipelineError::Ended(m) => Status::aborted(m),
            PipelineError::Refused(v) => Status::invalid_argument(v.to_string()),
        }
    }
}

impl From<ResponseError> for Status {
    fn from(e: ResponseError) -> Self {
        match e {
            ResponseError::Invalid(m) => Status::invalid_argument(m),
            ResponseError::Refused(m) => Status::failed_precondition(m),
            ResponseError::Store(e) => e.into(),
        }
    }
}

/// The action an agent reports (anything but `delete` is an add).
pub fn action(wire: i32) -> Action {
    Action::from_wire(wire).unwrap_or(Action::Add)
}

/// A recorded command as the agent receives it.
pub fn command(row: &ResponseRow) -> pb::Command {
    let r = &row.request;
    pb::Command {
        id: row.id.to_string(),
        response: r.command.clone(),
        action: pb::CommandAction::from(r.action) as i32,
        srcip: r.srcip.clone().unwrap_or_default(),
        user: r.user.clone().unwrap_or_default(),
        timeout_seconds: r.timeout_s.and_then(|t| u32::try_from(t).ok()).unwrap_or(0),
        alert_id: r.alert_id.map(|a| a.to_string()).unwrap_or_default(),
        rule_id: r.rule_id.unwrap_or(0),
        agent_id: r.agent_id.clone(),
        location: r.location.clone().unwrap_or_default(),
    }
}

/// An agent's event as the pipeline keeps it, moved out of the message
/// (now, when the agent did not say when it read the line).
pub fn received_event(e: pb::Event) -> crate::pipeline::ReceivedEvent {
    crate::pipeline::ReceivedEvent {
        sequence: e.sequence,
        read_at: e.read_at.as_ref().map(millis).unwrap_or_else(now_ms),
        read_at_clamped: false,
        location: e.location,
        log_format: e.log_format,
        truncated: e.truncated,
        line: e.line,
    }
}

/// A stored alert for the control API, with the responses it caused;
/// `manager` names the agent of the manager's own events.
pub fn alert(stored: &StoredAlert, responses: Vec<pb::AlertResponse>, manager: &str) -> pb::Alert {
    let a = &stored.alert;
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let agent_name = match stored.origin.agent_id {
        Some(_) => stored.origin.name.clone(),
        None => manager.to_string(),
    };
    pb::Alert {
        id: stored.id.to_string(),
        time: Some(timestamp(a.time.as_millisecond())),
        rule_id: a.rule_id,
        level: a.level,
        description: a.description.clone(),
        groups: a.group_list().map(str::to_string).collect(),
        agent_id: text(&stored.origin.agent_id),
        location: a.location.clone(),
        srcip: text(&a.srcip),
        srcport: text(&a.srcport),
        user: a
            .dstuser
            .clone()
            .or_else(|| a.srcuser.clone())
            .unwrap_or_default(),
        dstip: text(&a.dstip),
        dstport: text(&a.dstport),
        url: text(&a.url),
        decoder: text(&a.decoder),
        agent_name,
        responses,
        // The line as received (bytes: logs are not always UTF-8).
        log: std::iter::once(a.full_log.clone())
            .chain(a.correlated.iter().map(|l| l.clone().into_bytes()))
            .collect(),
    }
}

/// A response an alert caused, for its alert.
pub fn alert_response(r: ResponseRow) -> pb::AlertResponse {
    pb::AlertResponse {
        command_id: r.id.to_string(),
        response: r.request.response,
        agent_id: r.request.agent_id,
        status: r.status,
    }
}

/// An agent as the control API shows it, in `status`.
pub fn agent_info(a: &AgentRecord, status: pb::AgentStatus) -> pb::AgentInfo {
    pb::AgentInfo {
        id: a.id.clone(),
        name: a.name.clone(),
        registered_ip: a.registered_ip.clone(),
        last_address: a.last_address.clone().unwrap_or_default(),
        status: status as i32,
        version: a.version.clone().unwrap_or_default(),
        os: a.os.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        last_seen: a.last_seen.map(timestamp),
        registered_at: Some(timestamp(a.registered_at)),
        last_sequence: a.last_sequence,
        spool_depth: a.spool_depth,
        dropped_events: a.dropped_events,
        read_lag_bytes: a.read_lag_bytes,
        started_at: a.started_at.map(timestamp),
        last_refused_at: a.last_refused_at.map(timestamp),
        last_refusal: a.last_refusal.clone().unwrap_or_default(),
        // The control service fills it in (it knows the managers).
        manager: String::new(),
    }
}

/// A configured response, as `agent_control -L` lists it.
pub fn response_info(r: &ResponseSpec) -> pb::ResponseInfo {
    pb::ResponseInfo {
        name: r.name.clone(),
        command: r.command.name.clone(),
        timeout_seconds: r
            .timeout
            .map(|t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(0),
        executable: r.command.executable.clone(),
        location: r.location.as_str().to_string(),
    }
}

/// A block in force.
pub fn block(b: BlockRow) -> pb::Block {
    pb::Block {
        srcip: b.srcip,
        agent_id: b.agent_id,
        response: b.response,
        rule_id: b.rule_id.unwrap_or(0),
        expires_at: b.expires_at.map(timestamp),
        added_at: Some(timestamp(b.issued_at)),
        alert_id: b.alert_id.map(|a| a.to_string()).unwrap_or_default(),
        state: b.state.to_string(),
    }
}

/// A response decided but refused.
pub fn refusal(r: RefusalRow) -> pb::Refusal {
    pb::Refusal {
        time: Some(timestamp(r.time)),
        response: r.response,
        agent_id: r.agent_id.unwrap_or_default(),
        rule_id: r.rule_id.unwrap_or(0),
        srcip: r.srcip.unwrap_or_default(),
        reason: r.reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_in_milliseconds() {
        for ms in [0, 1_764_324_001_234, -1] {
            assert_eq!(millis(&timestamp(ms)), ms);
        }
    }

    #[test]
    fn an_alert_keeps_every_field_on_the_wire() {
        let mut stored = crate::store::fixtures::stored_alert(7, 10);
        stored.alert.srcport = Some("51234".into());
        stored.alert.dstport = Some("443".into());
        stored.alert.srcuser = Some("alice".into());
        stored.alert.correlated = vec!["earlier".into()];
        let a = alert(&stored, Vec::new(), "central");
        assert_eq!(a.id, "7");
        assert_eq!(a.agent_name, "web01");
        assert_eq!((a.srcport.as_str(), a.dstport.as_str()), ("51234", "443"));
        assert_eq!(a.user, "alice");
        assert_eq!(a.groups, ["web", "accesslog", "web_scan", "recon"]);
        assert_eq!(a.log, [b"a line".to_vec(), b"earlier".to_vec()]);
        stored.origin.agent_id = None;
        assert_eq!(alert(&stored, Vec::new(), "central").agent_name, "central");
    }

    #[test]
    fn store_errors_answer_with_their_codes() {
        let s: Status = StoreError::NotFound("no agent".into()).into();
        assert_eq!(s.code(), tonic::Code::NotFound);
        let s: Status = StoreError::Conflict("removed".into()).into();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        let s: Status = StoreError::Sqlx(sqlx::Error::RowNotFound).into();
        assert_eq!(s.code(), tonic::Code::Internal);
    }
}
