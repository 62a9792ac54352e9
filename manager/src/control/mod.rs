//! `ControlService`: the operator's API behind `palisadectl`. Only
//! certificates with the operator role may call it.
//!
//! Agent status follows OSSEC: `never connected` until the first Hello,
//! `active` while the agent's stream is open and it was heard from (any
//! message: events, heartbeat, result) within `agent_timeout`, else
//! `disconnected`. OSSEC only learns of a lost agent when its keepalives
//! stop; Palisade also knows when the stream closes, and reports the agent
//! disconnected at once. With several managers on one database, an agent
//! connected to another one is `active` when that manager is alive, holds
//! its lease ([`crate::cluster`]) and recorded hearing it within
//! `agent_timeout` (plus the few seconds it takes to write that down);
//! every listing names the manager an agent is connected to.
//!
//! # Layout
//!
//! - this file: the handlers, one per RPC, and who may call them.
//! - [`follow`]: `FollowAlerts`, the backlog and the live feed.
//! - [`crate::wire`]: how records become protobuf messages and errors
//!   become statuses (shared with the agents' stream).

mod follow;

use std::time::Duration;

use palisade_proto::MAX_ALERTS_PER_PAGE;
use palisade_proto::identity;
use palisade_proto::v1::control_service_server::ControlService;
use palisade_proto::v1::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::cluster::Cluster;
use crate::identities::Operators;
use crate::outputs::Outputs;
use crate::responder::{Outcome, Responder, Targets};
use crate::sessions::Sessions;
use crate::store::{AgentRecord, AlertFilter, ManagerRow, Store, StoreError, StoredAlert, now_ms};
use crate::wire::{self, timestamp};

/// Alerts `ListAlerts` answers when the request names no limit.
const DEFAULT_ALERTS: u32 = 100;
/// Refusals `ListRefusals` answers at most.
const MAX_REFUSALS: u32 = 10_000;
/// Refusals `ListRefusals` answers when the request names no limit.
const DEFAULT_REFUSALS: u32 = 100;

/// The control service.
#[derive(Debug, Clone)]
pub struct Control {
    store: Store,
    sessions: Sessions,
    responder: Responder,
    outputs: Outputs,
    hostname: String,
    /// Silence after which a connected agent counts as disconnected.
    agent_timeout: Duration,
    /// Ends `FollowAlerts` streams when the manager stops.
    shutdown: CancellationToken,
    /// Who may call, and their open alert feeds.
    operators: Operators,
    /// This manager among others on the database; `None`: alone.
    cluster: Option<Cluster>,
}

/// The managers on the database, read once per request.
#[derive(Debug, Default)]
struct Managers {
    rows: Vec<ManagerRow>,
}

impl Managers {
    fn get(&self, id: i64) -> Option<&ManagerRow> {
        self.rows.iter().find(|m| m.id == id)
    }
}

impl Control {
    /// A control service over the manager's store and open sessions; an
    /// agent not heard from for `agent_timeout` is disconnected.
    pub fn new(
        store: Store,
        sessions: Sessions,
        responder: Responder,
        outputs: Outputs,
        hostname: String,
        agent_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store: store.clone(),
            sessions,
            responder,
            outputs,
            hostname,
            agent_timeout,
            shutdown,
            operators: Operators::new(store),
            cluster: None,
        }
    }

    /// Reports agents connected to every manager of `cluster`.
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The managers on the database (none without a cluster).
    async fn managers(&self) -> Result<Managers, StoreError> {
        Ok(Managers {
            rows: match &self.cluster {
                Some(_) => self.store.managers().await?,
                None => Vec::new(),
            },
        })
    }

    /// The name of the manager `a` is connected to, if it is: this one
    /// (its open stream heard within the timeout), or another live one
    /// holding its lease that recorded hearing it lately.
    fn connected_to<'m>(&'m self, a: &AgentRecord, managers: &'m Managers) -> Option<&'m str> {
        let timeout = i64::try_from(self.agent_timeout.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        if self
            .sessions
            .last_heard(&a.id)
            .is_some_and(|heard| now.saturating_sub(heard) < timeout)
        {
            return Some(
                self.cluster
                    .as_ref()
                    .map_or(self.hostname.as_str(), |c| c.name()),
            );
        }
        let cluster = self.cluster.as_ref()?;
        let holder = managers.get(a.lease_manager?)?;
        (holder.id != cluster.id()
            && cluster.is_alive(holder)
            && now.saturating_sub(a.last_seen.unwrap_or(0)) < cluster.silent_after_ms())
        .then_some(holder.name.as_str())
    }

    /// The registered operators and their open feeds, for the revocation
    /// watcher.
    pub fn operators(&self) -> Operators {
        self.operators.clone()
    }

    fn status_of(&self, a: &AgentRecord, managers: &Managers) -> AgentStatus {
        if a.removed_at.is_some() {
            AgentStatus::Removed
        } else if self.connected_to(a, managers).is_some() {
            AgentStatus::Active
        } else if a.first_seen.is_some() {
            AgentStatus::Disconnected
        } else {
            AgentStatus::NeverConnected
        }
    }

    /// The manager itself as agent_control shows it (`-i 000`).
    fn manager_info(&self) -> AgentInfo {
        AgentInfo {
            id: "000".into(),
            name: self.hostname.clone(),
            registered_ip: "127.0.0.1".into(),
            status: AgentStatus::Active as i32,
            version: env!("CARGO_PKG_VERSION").into(),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            hostname: self.hostname.clone(),
            started_at: Some(timestamp(self.outputs.stats().started_at)),
            ..Default::default()
        }
    }

    /// A live agent by id, or a clear refusal.
    async fn live_agent(&self, id: &str) -> Result<AgentRecord, Status> {
        check_id(id)?;
        let agent = self
            .store
            .agent(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("unknown agent {id}")))?;
        if agent.removed_at.is_some() {
            return Err(Status::failed_precondition(format!(
                "agent {id} was removed"
            )));
        }
        Ok(agent)
    }

    fn info(&self, a: &AgentRecord, managers: &Managers) -> AgentInfo {
        let mut info = wire::agent_info(a, self.status_of(a, managers));
        if a.removed_at.is_none() {
            info.manager = self
                .connected_to(a, managers)
                .unwrap_or_default()
                .to_string();
        }
        info
    }
}

#[tonic::async_trait]
impl ControlService for Control {
    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        self.operators.check(&request).await?;
        let req = request.into_inner();
        let managers = self.managers().await?;
        let agents = self
            .store
            .agents()
            .await?
            .iter()
            .filter(|a| req.include_removed || a.removed_at.is_none())
            .map(|a| self.info(a, &managers))
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
        self.operators.check(&request).await?;
        let id = request.into_inner().agent_id;
        if id == "000" {
            return Ok(Response::new(self.manager_info()));
        }
        check_id(&id)?;
        let agent = self
            .store
            .agent(&id)
            .await?
            .ok_or_else(|| Status::not_found(format!("unknown agent {id}")))?;
        Ok(Response::new(self.info(&agent, &self.managers().await?)))
    }

    async fn list_responses(
        &self,
        request: Request<ListResponsesRequest>,
    ) -> Result<Response<ListResponsesResponse>, Status> {
        self.operators.check(&request).await?;
        let responses = self
            .responder
            .specs()
            .iter()
            .map(wire::response_info)
            .collect();
        Ok(Response::new(ListResponsesResponse { responses }))
    }

    async fn run_response(
        &self,
        request: Request<RunResponseRequest>,
    ) -> Result<Response<RunResponseResponse>, Status> {
        self.operators.check(&request).await?;
        let req = request.into_inner();
        let targets = if req.all_agents {
            Targets::All
        } else {
            Targets::Agents(req.agent_ids)
        };
        let outcome = self
            .responder
            .run(&req.srcip, &req.response, targets)
            .await?;
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
        self.operators.check(&request).await?;
        let req = request.into_inner();
        let targets = if req.all_agents || req.agent_ids.is_empty() {
            Targets::All
        } else {
            Targets::Agents(req.agent_ids)
        };
        let outcome = self.responder.unblock(&req.srcip, targets).await?;
        Ok(Response::new(UnblockResponse {
            agent_ids: outcome.sent_to,
            queued_for: outcome.queued_for,
        }))
    }

    async fn list_blocks(
        &self,
        request: Request<ListBlocksRequest>,
    ) -> Result<Response<ListBlocksResponse>, Status> {
        self.operators.check(&request).await?;
        let blocks = self
            .store
            .blocks(None, None)
            .await?
            .into_iter()
            .map(wire::block)
            .collect();
        Ok(Response::new(ListBlocksResponse { blocks }))
    }

    async fn list_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        self.operators.check(&request).await?;
        let req = request.into_inner();
        let mut filter = alert_filter(&req)?;
        // One page; palisadectl pages on with before_id.
        filter.before_id = (req.before_id > 0).then_some(req.before_id);
        filter.limit = match req.limit {
            0 => DEFAULT_ALERTS,
            n => n.min(MAX_ALERTS_PER_PAGE),
        };
        let stored = self.store.alerts(&filter).await?;
        let alerts = alert_messages(&self.store, &stored, &self.hostname).await?;
        Ok(Response::new(ListAlertsResponse { alerts }))
    }

    async fn list_refusals(
        &self,
        request: Request<ListRefusalsRequest>,
    ) -> Result<Response<ListRefusalsResponse>, Status> {
        self.operators.check(&request).await?;
        let limit = match request.into_inner().limit {
            0 => DEFAULT_REFUSALS,
            n => n.min(MAX_REFUSALS),
        };
        let refusals = self
            .store
            .refusals(limit)
            .await?
            .into_iter()
            .map(wire::refusal)
            .collect();
        Ok(Response::new(ListRefusalsResponse { refusals }))
    }

    type FollowAlertsStream = tokio_stream::wrappers::ReceiverStream<Result<Alert, Status>>;

    async fn follow_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<Self::FollowAlertsStream>, Status> {
        let caller = self.operators.check(&request).await?;
        let operator = caller.name.clone();
        let req = request.into_inner();
        let filter = alert_filter(&req)?;
        let feed_guard = self.operators.open_feed(&caller);
        // Subscribe before reading the store: an alert committed meanwhile
        // is then in one or the other (or both, and sent once).
        let feed = self.outputs.subscribe();
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        info!(%operator, "Following alerts.");
        tokio::spawn(async move {
            let follower = follow::Follower::new(&this.store, &this.hostname, filter, &tx);
            tokio::select! {
                r = follower.run(feed, req.after_id, req.limit) => {
                    if let Err(status) = r {
                        let _ = tx.send(Err(status)).await;
                    }
                }
                _ = tx.closed() => {}
                _ = this.shutdown.cancelled() => {}
                _ = feed_guard.revoked.cancelled() => {
                    warn!(operator = %caller.name, "Operator removed; its alert feed was ended.");
                    let _ = tx.send(Err(Status::permission_denied(format!(
                        "operator {} was removed; its certificate is revoked",
                        caller.name
                    )))).await;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        use std::sync::atomic::Ordering;
        self.operators.check(&request).await?;
        let stats = self.outputs.stats();
        let agents: Vec<AgentRecord> = self
            .store
            .agents()
            .await?
            .into_iter()
            .filter(|a| a.removed_at.is_none())
            .collect();
        let managers = self.managers().await?;
        // Each agent's manager, in id order.
        let connected: Vec<(&str, &AgentRecord)> = agents
            .iter()
            .filter_map(|a| Some((self.connected_to(a, &managers)?, a)))
            .collect();
        let now = now_ms();
        let cluster = managers
            .rows
            .iter()
            .map(|m| {
                let names: Vec<String> = connected
                    .iter()
                    .filter(|(at, _)| *at == m.name)
                    .map(|(_, a)| a.name.clone())
                    .collect();
                let alive = self.cluster.as_ref().is_some_and(|c| c.is_alive(m));
                // Over the minute, or since it started if that is shorter.
                let seconds = ((m.heartbeat_at - m.started_at) as f64 / 1000.0).clamp(1.0, 60.0);
                ManagerStatus {
                    name: m.name.clone(),
                    address: m.address.clone(),
                    version: m.version.clone(),
                    alive,
                    stopped: m.stopped_at.is_some(),
                    started_at: Some(timestamp(m.started_at)),
                    heartbeat_at: Some(timestamp(m.heartbeat_at)),
                    connected_agents: u32::try_from(names.len()).unwrap_or(u32::MAX),
                    agent_names: names,
                    events_per_second: if alive {
                        m.events_last_minute as f64 / seconds
                    } else {
                        0.0
                    },
                    alerts_per_second: if alive {
                        m.alerts_last_minute as f64 / seconds
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        Ok(Response::new(StatusResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: self.hostname.clone(),
            started_at: Some(timestamp(stats.started_at)),
            uptime_seconds: u64::try_from((now - stats.started_at) / 1000).unwrap_or(0),
            events_per_second: stats.events_per_second(),
            events_received: stats.events_received.load(Ordering::Relaxed),
            alerts: stats.alerts(),
            agents: u32::try_from(agents.len()).unwrap_or(u32::MAX),
            connected_agents: u32::try_from(connected.len()).unwrap_or(u32::MAX),
            responses_issued: stats.responses_issued.load(Ordering::Relaxed),
            mail_queue: stats.mail_queue.load(Ordering::Relaxed),
            managers: cluster,
            manager_name: self
                .cluster
                .as_ref()
                .map_or(self.hostname.as_str(), |c| c.name())
                .to_string(),
        }))
    }

    async fn restart_agent(
        &self,
        request: Request<RestartAgentRequest>,
    ) -> Result<Response<RestartAgentResponse>, Status> {
        let operator = self.operators.check(&request).await?.name;
        let req = request.into_inner();
        let ids: Vec<String> = if req.all_agents {
            self.store
                .agents()
                .await?
                .into_iter()
                .filter(|a| a.removed_at.is_none())
                .map(|a| a.id)
                .collect()
        } else {
            if req.agent_ids.is_empty() {
                return Err(Status::invalid_argument("no agent named"));
            }
            for id in &req.agent_ids {
                self.live_agent(id).await?;
            }
            req.agent_ids
        };
        let mut response = RestartAgentResponse::default();
        let mut elsewhere = Vec::new();
        for id in ids {
            if self.sessions.ask_to_restart(&id, &operator).await {
                info!(agent = %id, %operator, "Asked the agent to restart.");
                response.sent_to.push(id);
            } else {
                elsewhere.push(id);
            }
        }
        // Agents another live manager holds: asked through it.
        let held = match &self.cluster {
            Some(cluster) if !elsewhere.is_empty() => {
                let ids: Vec<&str> = elsewhere.iter().map(String::as_str).collect();
                let held = self
                    .store
                    .held_by_other_managers(
                        &ids,
                        cluster.id(),
                        crate::store::now_ms() - cluster.dead_after_ms(),
                    )
                    .await?;
                let forwarded: Vec<&str> =
                    ids.into_iter().filter(|id| held.contains(*id)).collect();
                if !forwarded.is_empty() {
                    self.store.notify_restarts(&forwarded, &operator).await?;
                    info!(agents = forwarded.len(), %operator, "Asked agents to restart through the managers holding them.");
                }
                held
            }
            _ => Default::default(),
        };
        for id in elsewhere {
            if held.contains(&id) {
                response.sent_to.push(id.clone());
                response.forwarded.push(id);
            } else {
                response.not_connected.push(id);
            }
        }
        Ok(Response::new(response))
    }

    async fn remove_agent(
        &self,
        request: Request<RemoveAgentRequest>,
    ) -> Result<Response<AgentInfo>, Status> {
        let operator = self.operators.check(&request).await?.name;
        let req = request.into_inner();
        check_id(&req.agent_id)?;
        let reason = if req.reason.is_empty() {
            format!("removed by operator {operator}")
        } else {
            format!("removed by operator {operator}: {}", req.reason)
        };
        let agent = self
            .store
            .remove_agent(&req.agent_id, &reason)
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => {
                    Status::not_found(format!("unknown agent {}", req.agent_id))
                }
                e => e.into(),
            })?;
        // End its stream now rather than at the next revocation poll.
        self.sessions.revoke(std::slice::from_ref(&agent.id), &[]);
        warn!(agent = %agent.id, name = %agent.name, %operator, "Agent removed; its certificate is revoked.");
        Ok(Response::new(self.info(&agent, &Managers::default())))
    }

    async fn reset_breaker(
        &self,
        request: Request<ResetBreakerRequest>,
    ) -> Result<Response<ResetBreakerResponse>, Status> {
        let operator = self.operators.check(&request).await?.name;
        let req = request.into_inner();
        check_id(&req.agent_id)?;
        if self.store.agent(&req.agent_id).await?.is_none() {
            return Err(Status::not_found(format!("unknown agent {}", req.agent_id)));
        }
        let tripped_at = self.responder.breaker().reset(&req.agent_id).await?;
        match tripped_at {
            Some(_) => {
                warn!(agent = %req.agent_id, %operator, "Circuit breaker reset: new blocks on this agent resume.");
            }
            None => {
                info!(agent = %req.agent_id, %operator, "Circuit breaker reset (it was not tripped).");
            }
        }
        Ok(Response::new(ResetBreakerResponse {
            was_tripped: tripped_at.is_some(),
            tripped_at: tripped_at.map(timestamp),
        }))
    }
}

/// Stored alerts for the wire, each with the responses it caused (one
/// query for them all); `hostname` names the agent of the manager's own
/// events.
async fn alert_messages(
    store: &Store,
    alerts: &[StoredAlert],
    hostname: &str,
) -> Result<Vec<Alert>, Status> {
    let ids: Vec<i64> = alerts.iter().map(|a| a.id).collect();
    let mut responses = store.responses_for_alerts(&ids).await?;
    Ok(alerts
        .iter()
        .map(|a| {
            let caused = responses.remove(&a.id).unwrap_or_default();
            wire::alert(
                a,
                caused.into_iter().map(wire::alert_response).collect(),
                hostname,
            )
        })
        .collect())
}

/// The store filter for a request (limit and paging left to the caller).
fn alert_filter(req: &ListAlertsRequest) -> Result<AlertFilter, Status> {
    if !req.agent_id.is_empty() && req.agent_id != "000" {
        check_id(&req.agent_id)?;
    }
    if !req.srcip.is_empty() && req.srcip.parse::<std::net::IpAddr>().is_err() {
        return Err(Status::invalid_argument(format!(
            "invalid IP address {:?}",
            req.srcip
        )));
    }
    Ok(AlertFilter {
        since: req.since.as_ref().map(wire::millis),
        min_level: req.min_level,
        rule_id: (req.rule_id != 0).then_some(req.rule_id),
        agent_id: (!req.agent_id.is_empty()).then(|| req.agent_id.clone()),
        srcip: (!req.srcip.is_empty()).then(|| req.srcip.clone()),
        after_id: 0,
        before_id: None,
        limit: 0,
    })
}

/// Refuses what cannot be an agent id.
fn check_id(id: &str) -> Result<(), Status> {
    if identity::is_valid_agent_id(id) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid agent id {id:?}: ids are three or more digits, e.g. 001"
        )))
    }
}
