//! `ControlService`: the operator's API behind `palisadectl`. Only
//! certificates with the operator role may call it.

use palisade_proto::identity::{self, Role};
use palisade_proto::v1::control_service_server::ControlService;
use palisade_proto::v1::*;
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::outputs::Outputs;
use crate::responder::{Outcome, Responder, ResponseError, Targets};
use crate::sessions::Sessions;
use crate::store::{AgentRecord, AlertFilter, Store};

/// The control service.
#[derive(Debug, Clone)]
pub struct Control {
    store: Store,
    sessions: Sessions,
    responder: Responder,
    outputs: Outputs,
    hostname: String,
}

impl Control {
    /// A control service over the manager's store and open sessions.
    pub fn new(
        store: Store,
        sessions: Sessions,
        responder: Responder,
        outputs: Outputs,
        hostname: String,
    ) -> Self {
        Self {
            store,
            sessions,
            responder,
            outputs,
            hostname,
        }
    }

    fn status_of(&self, a: &AgentRecord) -> AgentStatus {
        if a.removed_at.is_some() {
            AgentStatus::Removed
        } else if self.sessions.is_connected(&a.id) {
            AgentStatus::Active
        } else if a.first_seen.is_some() {
            AgentStatus::Disconnected
        } else {
            AgentStatus::NeverConnected
        }
    }

    fn info(&self, a: &AgentRecord) -> AgentInfo {
        AgentInfo {
            id: a.id.clone(),
            name: a.name.clone(),
            registered_ip: a.registered_ip.clone(),
            last_address: a.last_address.clone().unwrap_or_default(),
            status: self.status_of(a) as i32,
            version: a.version.clone().unwrap_or_default(),
            os: a.os.clone().unwrap_or_default(),
            hostname: a.hostname.clone().unwrap_or_default(),
            last_seen: a.last_seen.map(timestamp),
            registered_at: Some(timestamp(a.registered_at)),
            last_sequence: a.last_sequence,
            spool_depth: a.spool_depth,
            dropped_events: a.dropped_events,
            read_lag_bytes: a.read_lag_bytes,
        }
    }
}

/// Refuses callers without the operator role.
pub fn require_operator<T>(request: &Request<T>) -> Result<String, Status> {
    let peer = request
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    match identity::identity_from_request(request) {
        Ok(id) => match id.role {
            Role::Operator { name } => Ok(name),
            other => {
                warn!(%peer, caller = %other, "Refused control call.");
                Err(Status::permission_denied(format!(
                    "the control API needs an operator certificate; this is the certificate of {other}"
                )))
            }
        },
        Err(e) => {
            warn!(%peer, reason = %e, "Refused control call.");
            Err(Status::unauthenticated(e.to_string()))
        }
    }
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn internal(e: crate::store::StoreError) -> Status {
    Status::internal(e.to_string())
}

fn response_status(e: ResponseError) -> Status {
    match e {
        ResponseError::Invalid(m) => Status::invalid_argument(m),
        ResponseError::Refused(m) => Status::failed_precondition(m),
        ResponseError::Store(e) => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl ControlService for Control {
    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        require_operator(&request)?;
        let req = request.into_inner();
        let agents = self
            .store
            .agents()
            .await
            .map_err(internal)?
            .iter()
            .filter(|a| req.include_removed || a.removed_at.is_none())
            .map(|a| self.info(a))
            .filter(|a| !req.connected_only || a.status == AgentStatus::Active as i32)
            .filter(|a| !req.disconnected_only || a.status != AgentStatus::Active as i32)
            .collect();
        Ok(Response::new(ListAgentsResponse {
            agents,
            manager_hostname: self.hostname.clone(),
        }))
    }

    async fn get_agent(
        &self,
        request: Request<GetAgentRequest>,
    ) -> Result<Response<AgentInfo>, Status> {
        require_operator(&request)?;
        let id = request.into_inner().agent_id;
        let agent = self
            .store
            .agent(&id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no agent with id {id}")))?;
        Ok(Response::new(self.info(&agent)))
    }

    async fn list_responses(
        &self,
        request: Request<ListResponsesRequest>,
    ) -> Result<Response<ListResponsesResponse>, Status> {
        require_operator(&request)?;
        let responses = self
            .responder
            .specs()
            .iter()
            .map(|r| ResponseInfo {
                name: r.name.clone(),
                command: r.command.name.clone(),
                timeout_seconds: r
                    .timeout
                    .map(|t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX))
                    .unwrap_or(0),
                executable: r.command.executable.clone(),
                location: r.location.as_str().to_string(),
            })
            .collect();
        Ok(Response::new(ListResponsesResponse { responses }))
    }

    async fn run_response(
        &self,
        request: Request<RunResponseRequest>,
    ) -> Result<Response<RunResponseResponse>, Status> {
        require_operator(&request)?;
        let req = request.into_inner();
        let targets = if req.all_agents {
            Targets::All
        } else {
            Targets::Agents(req.agent_ids)
        };
        let outcome = self
            .responder
            .run(&req.srcip, &req.response, targets)
            .await
            .map_err(response_status)?;
        let Outcome {
            command_ids,
            sent_to,
            queued_for,
        } = outcome;
        Ok(Response::new(RunResponseResponse {
            command_ids: command_ids.iter().map(i64::to_string).collect(),
            queued_for,
            sent_to,
        }))
    }

    async fn unblock(
        &self,
        request: Request<UnblockRequest>,
    ) -> Result<Response<UnblockResponse>, Status> {
        require_operator(&request)?;
        let req = request.into_inner();
        let targets = if req.all_agents || req.agent_ids.is_empty() {
            Targets::All
        } else {
            Targets::Agents(req.agent_ids)
        };
        let outcome = self
            .responder
            .unblock(&req.srcip, targets)
            .await
            .map_err(response_status)?;
        Ok(Response::new(UnblockResponse {
            agent_ids: outcome.sent_to,
            queued_for: outcome.queued_for,
        }))
    }

    async fn list_blocks(
        &self,
        request: Request<ListBlocksRequest>,
    ) -> Result<Response<ListBlocksResponse>, Status> {
        require_operator(&request)?;
        let blocks = self
            .store
            .blocks(None, None)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|b| Block {
                srcip: b.srcip,
                agent_id: b.agent_id,
                response: b.response,
                rule_id: b.rule_id.unwrap_or(0),
                expires_at: b.expires_at.map(timestamp),
                added_at: Some(timestamp(b.issued_at)),
                alert_id: b.alert_id.map(|a| a.to_string()).unwrap_or_default(),
                state: b.state.to_string(),
            })
            .collect();
        Ok(Response::new(ListBlocksResponse { blocks }))
    }

    async fn list_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        require_operator(&request)?;
        let req = request.into_inner();
        let filter = AlertFilter {
            since: req
                .since
                .map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000)),
            min_level: req.min_level,
            rule_id: (req.rule_id != 0).then_some(req.rule_id),
            agent_id: (!req.agent_id.is_empty()).then_some(req.agent_id),
            srcip: (!req.srcip.is_empty()).then_some(req.srcip),
            after_id: 0,
            limit: if req.limit == 0 {
                100
            } else {
                req.limit.min(10_000)
            },
        };
        let alerts = self
            .store
            .alerts(&filter)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|a| Alert {
                id: a.id.to_string(),
                time: Some(timestamp(a.alert.time)),
                rule_id: a.alert.rule_id,
                level: a.alert.level,
                description: a.alert.description,
                groups: a
                    .alert
                    .groups
                    .split(',')
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect(),
                agent_id: a.alert.agent_id.unwrap_or_default(),
                location: a.alert.location,
                srcip: a.alert.srcip.unwrap_or_default(),
                user: a.alert.dstuser.or(a.alert.srcuser).unwrap_or_default(),
                dstip: a.alert.dstip.unwrap_or_default(),
                url: a.alert.url.unwrap_or_default(),
                decoder: a.alert.decoder.unwrap_or_default(),
                agent_name: String::new(),
                responses: Vec::new(),
                log: a
                    .alert
                    .log
                    .split(|b| *b == b'\n')
                    .map(<[u8]>::to_vec)
                    .collect(),
            })
            .collect();
        Ok(Response::new(ListAlertsResponse { alerts }))
    }

    async fn list_refusals(
        &self,
        request: Request<ListRefusalsRequest>,
    ) -> Result<Response<ListRefusalsResponse>, Status> {
        require_operator(&request)?;
        let limit = match request.into_inner().limit {
            0 => 100,
            n => n.min(10_000),
        };
        let refusals = self
            .store
            .refusals(limit)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|r| Refusal {
                time: Some(timestamp(r.time)),
                response: r.response,
                agent_id: r.agent_id.unwrap_or_default(),
                rule_id: r.rule_id.unwrap_or(0),
                srcip: r.srcip.unwrap_or_default(),
                reason: r.reason,
            })
            .collect();
        Ok(Response::new(ListRefusalsResponse { refusals }))
    }

    type FollowAlertsStream = tokio_stream::wrappers::ReceiverStream<Result<Alert, Status>>;

    async fn follow_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<Self::FollowAlertsStream>, Status> {
        require_operator(&request)?;
        let _ = &self.outputs;
        Err(Status::unimplemented("follow_alerts"))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        require_operator(&request)?;
        Err(Status::unimplemented("status"))
    }

    async fn restart_agent(
        &self,
        request: Request<RestartAgentRequest>,
    ) -> Result<Response<RestartAgentResponse>, Status> {
        require_operator(&request)?;
        Err(Status::unimplemented("restart_agent"))
    }

    async fn remove_agent(
        &self,
        request: Request<RemoveAgentRequest>,
    ) -> Result<Response<AgentInfo>, Status> {
        require_operator(&request)?;
        Err(Status::unimplemented("remove_agent"))
    }
}
