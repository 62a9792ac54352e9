//! `ControlService`: the operator's API behind `palisadectl`. Only
//! certificates with the operator role may call it.
//!
//! Agent status follows OSSEC: `never connected` until the first Hello,
//! `active` while the agent's stream is open and it was heard from (any
//! message: events, heartbeat, result) within `agent_timeout`, else
//! `disconnected`. OSSEC only learns of a lost agent when its keepalives
//! stop; Palisade also knows when the stream closes, and reports the agent
//! disconnected at once.
//!
//! `FollowAlerts` subscribes to the alerts published after each commit
//! before it reads the store, so nothing falls between the catch-up and the
//! live feed; ids at or below what the catch-up read, and ids already sent,
//! are not sent twice. A follower that lags behind the broadcast re-reads
//! the store from the last id it is sure of.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use palisade_common::time::proto_from_millis as timestamp;
use palisade_proto::identity::{self, Role};
use palisade_proto::v1::control_service_server::ControlService;
use palisade_proto::v1::manager_message::Kind as ManagerKind;
use palisade_proto::v1::*;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::analysis::NewAlert;
use crate::outputs::{Outputs, PublishedAlert};
use crate::responder::{Outcome, Responder, ResponseError, Targets};
use crate::sessions::Sessions;
use crate::store::{AgentRecord, AlertFilter, Store, StoredAlert, now_ms};

/// Alerts read from the store per page when a follower catches up.
const FOLLOW_PAGE: u32 = 1000;

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
            store,
            sessions,
            responder,
            outputs,
            hostname,
            agent_timeout,
            shutdown,
        }
    }

    fn status_of(&self, a: &AgentRecord) -> AgentStatus {
        let timeout = i64::try_from(self.agent_timeout.as_millis()).unwrap_or(i64::MAX);
        if a.removed_at.is_some() {
            AgentStatus::Removed
        } else if self
            .sessions
            .last_heard(&a.id)
            .is_some_and(|heard| now_ms().saturating_sub(heard) < timeout)
        {
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
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("unknown agent {id}")))?;
        if agent.removed_at.is_some() {
            return Err(Status::failed_precondition(format!(
                "agent {id} was removed"
            )));
        }
        Ok(agent)
    }

    /// Names by agent id, for alerts.
    async fn agent_names(&self) -> Result<HashMap<String, String>, Status> {
        Ok(self
            .store
            .agents()
            .await
            .map_err(internal)?
            .into_iter()
            .map(|a| (a.id, a.name))
            .collect())
    }

    /// An alert for the wire, with the responses it caused.
    async fn alert_message(
        &self,
        id: i64,
        alert: NewAlert,
        agent_name: String,
    ) -> Result<Alert, Status> {
        let responses = self
            .store
            .responses_for_alert(id)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|r| AlertResponse {
                command_id: r.id.to_string(),
                response: r.request.response,
                agent_id: r.request.agent_id,
                status: r.status,
            })
            .collect();
        let agent_name = if alert.agent_id.is_none() {
            self.hostname.clone()
        } else {
            agent_name
        };
        Ok(Alert {
            id: id.to_string(),
            time: Some(timestamp(alert.time)),
            rule_id: alert.rule_id,
            level: alert.level,
            description: alert.description,
            groups: alert
                .groups
                .split(',')
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect(),
            agent_id: alert.agent_id.unwrap_or_default(),
            location: alert.location,
            srcip: alert.srcip.unwrap_or_default(),
            user: alert.dstuser.or(alert.srcuser).unwrap_or_default(),
            dstip: alert.dstip.unwrap_or_default(),
            url: alert.url.unwrap_or_default(),
            decoder: alert.decoder.unwrap_or_default(),
            agent_name,
            responses,
            log: alert
                .log
                .split(|b| *b == b'\n')
                .map(<[u8]>::to_vec)
                .collect(),
        })
    }

    async fn stored_message(
        &self,
        stored: StoredAlert,
        names: &HashMap<String, String>,
    ) -> Result<Alert, Status> {
        let name = stored
            .alert
            .agent_id
            .as_ref()
            .and_then(|id| names.get(id))
            .cloned()
            .unwrap_or_default();
        self.alert_message(stored.id, stored.alert, name).await
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
            started_at: a.started_at.map(timestamp),
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
        if id == "000" {
            return Ok(Response::new(self.manager_info()));
        }
        check_id(&id)?;
        let agent = self
            .store
            .agent(&id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("unknown agent {id}")))?;
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
        let mut filter = alert_filter(&req)?;
        filter.limit = if req.limit == 0 {
            100
        } else {
            req.limit.min(10_000)
        };
        let names = self.agent_names().await?;
        let mut alerts = Vec::new();
        for stored in self.store.alerts(&filter).await.map_err(internal)? {
            alerts.push(self.stored_message(stored, &names).await?);
        }
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
        let operator = require_operator(&request)?;
        let req = request.into_inner();
        let filter = alert_filter(&req)?;
        // Subscribe before reading the store: an alert committed meanwhile
        // is then in one or the other (or both, and sent once).
        let feed = self.outputs.subscribe();
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        info!(%operator, "Following alerts.");
        tokio::spawn(async move {
            let follower = Follower {
                control: &this,
                filter,
                tx: &tx,
                boundary: 0,
                sent: BTreeSet::new(),
            };
            tokio::select! {
                r = follower.run(feed, req.after_id, req.limit) => {
                    if let Err(status) = r {
                        let _ = tx.send(Err(status)).await;
                    }
                }
                _ = tx.closed() => {}
                _ = this.shutdown.cancelled() => {}
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
        require_operator(&request)?;
        let stats = self.outputs.stats();
        let agents: Vec<AgentRecord> = self
            .store
            .agents()
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|a| a.removed_at.is_none())
            .collect();
        let connected = agents
            .iter()
            .filter(|a| self.status_of(a) == AgentStatus::Active)
            .count();
        let now = now_ms();
        Ok(Response::new(StatusResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: self.hostname.clone(),
            started_at: Some(timestamp(stats.started_at)),
            uptime_seconds: u64::try_from((now - stats.started_at) / 1000).unwrap_or(0),
            events_per_second: stats.events_per_second(),
            events_received: stats.events_received.load(Ordering::Relaxed),
            alerts: stats.alerts(),
            agents: u32::try_from(agents.len()).unwrap_or(u32::MAX),
            connected_agents: u32::try_from(connected).unwrap_or(u32::MAX),
            responses_issued: stats.responses_issued.load(Ordering::Relaxed),
            mail_queue: stats.mail_queue.load(Ordering::Relaxed),
        }))
    }

    async fn restart_agent(
        &self,
        request: Request<RestartAgentRequest>,
    ) -> Result<Response<RestartAgentResponse>, Status> {
        let operator = require_operator(&request)?;
        let req = request.into_inner();
        let ids: Vec<String> = if req.all_agents {
            self.store
                .agents()
                .await
                .map_err(internal)?
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
        for id in ids {
            let restart = ManagerMessage {
                kind: Some(ManagerKind::Restart(palisade_proto::v1::Restart {
                    requested_by: operator.clone(),
                })),
            };
            let sent = match self.sessions.sender(&id) {
                Some(sender) => sender.send(Ok(restart)).await.is_ok(),
                None => false,
            };
            if sent {
                info!(agent = %id, %operator, "Asked the agent to restart.");
                response.sent_to.push(id);
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
        let operator = require_operator(&request)?;
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
                crate::store::StoreError::NotFound(_) => {
                    Status::not_found(format!("unknown agent {}", req.agent_id))
                }
                crate::store::StoreError::Conflict(m) => Status::failed_precondition(m),
                e => internal(e),
            })?;
        // End its stream now rather than at the next revocation poll.
        self.sessions.revoke(std::slice::from_ref(&agent.id), &[]);
        warn!(agent = %agent.id, name = %agent.name, %operator, "Agent removed; its certificate is revoked.");
        Ok(Response::new(self.info(&agent)))
    }
}

/// One `FollowAlerts` stream.
struct Follower<'a> {
    control: &'a Control,
    filter: AlertFilter,
    tx: &'a mpsc::Sender<Result<Alert, Status>>,
    /// Every matching alert with an id up to this was sent or deliberately
    /// skipped (older than the requested backlog).
    boundary: i64,
    /// Ids above `boundary` already sent.
    sent: BTreeSet<i64>,
}

impl Follower<'_> {
    async fn run(
        mut self,
        mut feed: broadcast::Receiver<Arc<PublishedAlert>>,
        after_id: i64,
        limit: u32,
    ) -> Result<(), Status> {
        if after_id > 0 {
            self.boundary = after_id;
            self.catch_up().await?;
        } else {
            // The newest `limit` matching alerts, oldest first; with none
            // asked for, only where they end.
            let mut newest = self.filter.clone();
            newest.after_id = 0;
            newest.limit = limit.clamp(1, 10_000);
            let mut backlog = self.control.store.alerts(&newest).await.map_err(internal)?;
            self.boundary = backlog.first().map(|a| a.id).unwrap_or(0);
            if limit == 0 {
                backlog.clear();
            }
            let names = self.control.agent_names().await?;
            for stored in backlog.into_iter().rev() {
                let message = self.control.stored_message(stored, &names).await?;
                if self.tx.send(Ok(message)).await.is_err() {
                    return Ok(());
                }
            }
        }
        loop {
            match feed.recv().await {
                Ok(published) => {
                    let id = published.id;
                    if id <= self.boundary
                        || self.sent.contains(&id)
                        || !matches(&self.filter, &published.alert)
                    {
                        continue;
                    }
                    let message = self
                        .control
                        .alert_message(id, published.alert.clone(), published.origin.name.clone())
                        .await?;
                    if self.tx.send(Ok(message)).await.is_err() {
                        return Ok(());
                    }
                    self.sent.insert(id);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "Alert follower fell behind; reading the store.");
                    self.catch_up().await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }

    /// Sends every matching alert above `boundary` not sent yet, oldest
    /// first, and moves `boundary` past them.
    async fn catch_up(&mut self) -> Result<(), Status> {
        let names = self.control.agent_names().await?;
        loop {
            let mut page = self.filter.clone();
            page.after_id = self.boundary;
            page.limit = FOLLOW_PAGE;
            let rows = self
                .control
                .store
                .alerts_after(&page)
                .await
                .map_err(internal)?;
            let full = rows.len() == FOLLOW_PAGE as usize;
            for stored in rows {
                let id = stored.id;
                if !self.sent.contains(&id) {
                    let message = self.control.stored_message(stored, &names).await?;
                    if self.tx.send(Ok(message)).await.is_err() {
                        return Ok(());
                    }
                }
                self.boundary = self.boundary.max(id);
            }
            let boundary = self.boundary;
            self.sent.retain(|&id| id > boundary);
            if !full {
                return Ok(());
            }
        }
    }
}

/// Whether a published alert passes a follower's filter (as the store's
/// query would).
fn matches(filter: &AlertFilter, alert: &NewAlert) -> bool {
    filter.since.is_none_or(|since| alert.time >= since)
        && alert.level >= filter.min_level
        && filter.rule_id.is_none_or(|r| alert.rule_id == r)
        && filter
            .agent_id
            .as_ref()
            .is_none_or(|a| alert.agent_id.as_ref() == Some(a))
        && filter
            .srcip
            .as_ref()
            .is_none_or(|ip| alert.srcip.as_ref() == Some(ip))
}

/// The store filter for a request (limit left to the caller).
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
        since: req
            .since
            .map(|t| palisade_common::time::millis_from_proto(&t)),
        min_level: req.min_level,
        rule_id: (req.rule_id != 0).then_some(req.rule_id),
        agent_id: (!req.agent_id.is_empty()).then(|| req.agent_id.clone()),
        srcip: (!req.srcip.is_empty()).then(|| req.srcip.clone()),
        after_id: 0,
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
