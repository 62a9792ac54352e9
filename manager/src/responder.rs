//! Active-response decisions on the manager.
//!
//! Each stored alert is matched against the enabled responses (by rule id,
//! group or level, OR-ed as in OSSEC). A match becomes one recorded command
//! per target agent, sent down that agent's stream at once or, for an agent
//! that is offline, when it reconnects (unless the block would already have
//! ended). A repeat trigger for an address already blocked supersedes the
//! earlier command and the agent extends the block; repeated offenders get
//! the escalating timeouts, counted per agent, response and address.
//!
//! Addresses are parsed as IPs and checked against the one address policy
//! (`palisade_common::address`, which the agents apply again) before
//! anything is recorded: white-listed addresses, the manager's own
//! addresses, its subnets' network and broadcast addresses, its gateways
//! and resolvers (read from the host every few seconds), loopback,
//! link-local, unspecified, multicast and broadcast addresses are refused,
//! and so is a field that is not an IP. New automatic blocks also pass the
//! circuit breaker ([`crate::breaker`]). Refusals, the manager's and those
//! an agent reports, are logged and kept in the database.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use palisade_common::address::{AddressPolicy, Host, Refusal};
use palisade_common::hostfacts::{FactsCache, Sources};
use palisade_engine::alert::Alert;
use palisade_engine::escape::Escaped;
use palisade_engine::pattern::{Dialect, Pattern};
use palisade_proto::v1::manager_message::Kind as ManagerKind;
use palisade_proto::v1::{CommandResult, ManagerMessage};
use tokio::sync::mpsc::error::TrySendError;
use tracing::{debug, info, warn};

use crate::breaker::{Admission, Breaker};
use crate::config::{ResponseLocation, ResponseSpec};
use crate::grouped::{CommandResults, Grouped, NewStreamCommands};
use crate::mail::report::ResponseReport;
use crate::pipeline::analysis::Origin;
use crate::sessions::Sessions;
use crate::store::{
    Action, CommandReport, NewResponse, ResponseRow, Store, StoreError, StoredAlert,
};

/// How long a fan-out waits for one agent's stream to take its command
/// when the stream's queue is full; the command then stays pending, as for
/// an agent that is offline.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(10);

/// How long an operator's request waits for other managers to take the
/// commands of agents they hold, before it reports them queued.
pub const HANDOFF_WAIT: Duration = Duration::from_secs(1);
/// How often it looks while waiting.
const HANDOFF_POLL: Duration = Duration::from_millis(20);

/// Where a recorded command went ([`Responder::deliver_all`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Down its agent's stream on this manager.
    Here,
    /// The agent's stream is here but the command was no longer pending:
    /// another manager or this one's reconnect path sent it (or a newer
    /// block superseded it).
    Taken,
    /// Not sent by this manager: the agent's stream is not here (or
    /// ended); the command stays pending for whoever holds it.
    Waiting,
}

/// Runs `work` in a task of its own and waits for it: dropping the
/// waiting future (a cancelled RPC) does not stop the work.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, ResponseError>> + Send + 'static,
) -> Result<T, ResponseError> {
    tokio::spawn(work)
        .await
        .map_err(|e| ResponseError::Invalid(format!("the fan-out task failed: {e}")))?
}

/// `first..=last` of a fan-out's command ids, for the log.
fn id_range(ids: &[i64]) -> String {
    match (ids.first(), ids.last()) {
        (Some(a), Some(b)) if a != b => format!("{a}..={b}"),
        (Some(a), _) => a.to_string(),
        _ => "-".into(),
    }
}

/// Why a response cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// The operator named something unknown or gave bad input.
    #[error("{0}")]
    Invalid(String),
    /// The address must never be blocked.
    #[error("{0}")]
    Refused(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which agents an operator's request targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// These agents.
    Agents(Vec<String>),
    /// Every registered agent.
    All,
}

/// What a run or unblock did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Command ids recorded.
    pub command_ids: Vec<i64>,
    /// Agents the command went to now: down a stream this manager holds,
    /// or taken by the manager that holds the agent's stream.
    pub sent_to: Vec<String>,
    /// Agents no manager holds a stream of (offline); the command waits
    /// for their reconnect.
    pub queued_for: Vec<String>,
}

/// The responder. Its clones share one state: every agent's stream holds
/// two (its own and its pipeline's), and two copies of the whole state
/// (400 bytes each, doubled again in their tasks) were ~2 KiB of every
/// idle agent.
#[derive(Debug, Clone)]
pub struct Responder(Arc<Shared>);

/// What every clone of a [`Responder`] shares.
#[derive(Debug, Clone)]
struct Shared {
    specs: Arc<[ResponseSpec]>,
    groups: Arc<[Option<Pattern>]>,
    policy: AddressPolicy,
    facts: Arc<FactsCache>,
    breaker: Breaker,
    outputs: Option<crate::outputs::Outputs>,
    store: Store,
    sessions: Sessions,
    stats: std::sync::Arc<crate::stats::Stats>,
    mailer: Option<crate::mail::Mailer>,
    /// Agents' command results, committed together ([`crate::grouped`]).
    results: Grouped<CommandResults>,
    /// What new streams carry first, read together.
    new_streams: Grouped<NewStreamCommands>,
    /// This manager among others on the database: whose agents they hold.
    cluster: Option<crate::cluster::Cluster>,
}

impl Responder {
    /// How old the host's facts may be before they are read again.
    pub const FACTS_TTL: Duration = Duration::from_secs(5);

    /// A responder for the configured responses. `own_addresses` are
    /// addresses of the manager never blocked besides those of its
    /// interfaces (the listen address).
    pub fn new(
        specs: Vec<ResponseSpec>,
        white_list: Vec<IpNet>,
        own_addresses: Vec<IpAddr>,
        store: Store,
        sessions: Sessions,
    ) -> Self {
        let groups = specs
            .iter()
            .map(|s| {
                s.rules_group
                    .as_deref()
                    .and_then(|g| Pattern::new(Dialect::OsRegex, g).ok())
            })
            .collect();
        Self(Arc::new(Shared {
            specs: specs.into(),
            groups,
            policy: AddressPolicy::new(Host::Manager, &white_list),
            facts: Arc::new(FactsCache::new(
                Self::FACTS_TTL,
                Sources::default(),
                own_addresses,
            )),
            breaker: Breaker::new(store.clone(), crate::breaker::DEFAULT_MAX_PER_MINUTE),
            outputs: None,
            results: Grouped::new(CommandResults(store.clone())),
            new_streams: Grouped::new(NewStreamCommands(store.clone())),
            store,
            sessions,
            stats: Default::default(),
            mailer: None,
            cluster: None,
        }))
    }

    /// Knows the other managers on the database: an operator's request
    /// waits for those holding its agents to take their commands.
    pub fn with_cluster(mut self, cluster: crate::cluster::Cluster) -> Self {
        Arc::make_mut(&mut self.0).cluster = Some(cluster);
        self
    }

    /// Counts issued, delivered and failed commands in `stats`.
    pub fn with_stats(mut self, stats: std::sync::Arc<crate::stats::Stats>) -> Self {
        Arc::make_mut(&mut self.0).stats = stats;
        self
    }

    fn count(&self, counter: fn(&crate::stats::Stats) -> &std::sync::atomic::AtomicU64) {
        counter(&self.0.stats).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Trips the circuit breaker after `max_per_minute` new blocks on one
    /// agent within a minute (0: never).
    pub fn with_breaker_limit(mut self, max_per_minute: u32) -> Self {
        Arc::make_mut(&mut self.0).breaker = Breaker::new(self.0.store.clone(), max_per_minute);
        self
    }

    /// Publishes the alerts the responder raises itself (the breaker's).
    pub fn with_outputs(mut self, outputs: crate::outputs::Outputs) -> Self {
        Arc::make_mut(&mut self.0).outputs = Some(outputs);
        self
    }

    /// The circuit breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.0.breaker
    }

    /// The manager's own addresses as last read (for the agents'
    /// Welcome), loopback left out.
    pub fn own_addresses(&self) -> Vec<IpAddr> {
        let facts = match self.0.facts.get() {
            Ok(f) => Some(f),
            Err((_, last)) => last,
        };
        facts
            .map(|f| {
                f.own_addresses
                    .iter()
                    .copied()
                    .filter(|a| !a.is_loopback())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Mails agents' results ("E-mail alerts on active responses").
    pub fn with_mailer(mut self, mailer: Option<crate::mail::Mailer>) -> Self {
        Arc::make_mut(&mut self.0).mailer = mailer;
        self
    }

    /// The enabled responses.
    pub fn specs(&self) -> &[ResponseSpec] {
        &self.0.specs
    }

    /// Parses and vets an address with the address policy: the reason
    /// when it must not be blocked.
    pub fn vet_address(&self, text: &str) -> Result<IpAddr, Refusal> {
        // The fixed rules first: they need nothing read from the host.
        let ip = self.0.policy.vet(text, &Default::default())?;
        let facts = match self.0.facts.get() {
            Ok(facts) => facts,
            Err((error, last)) => {
                warn!(%error, "Cannot read this host's addresses and routes; using the last ones read.");
                last.ok_or_else(|| Refusal::OwnAddressesUnknown(error.to_string()))?
            }
        };
        self.0.policy.check(ip, &facts)?;
        Ok(ip)
    }

    fn triggers(&self, i: usize, alert: &Alert) -> bool {
        let spec = &self.0.specs[i];
        spec.rules_id.contains(&alert.rule_id)
            || (spec.level > 0 && alert.level >= spec.level)
            || self.0.groups[i]
                .as_ref()
                .is_some_and(|g| g.is_match(alert.groups.as_bytes()))
    }

    /// Decides and sends the responses for freshly stored alerts.
    pub async fn on_alerts(&self, alerts: &[StoredAlert]) -> Result<(), StoreError> {
        for stored in alerts {
            if stored.alert.options.no_ar {
                continue;
            }
            for i in 0..self.0.specs.len() {
                if self.triggers(i, &stored.alert) {
                    self.respond(&self.0.specs[i], stored).await?;
                }
            }
        }
        Ok(())
    }

    async fn refuse(
        &self,
        spec: &ResponseSpec,
        stored: &StoredAlert,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.refuse_for(spec, stored, stored.origin.agent_id.as_deref(), reason)
            .await
    }

    async fn refuse_for(
        &self,
        spec: &ResponseSpec,
        stored: &StoredAlert,
        agent: Option<&str>,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (alert_id, alert) = (stored.id, &stored.alert);
        warn!(
            response = %spec.name,
            alert = alert_id,
            agent = agent.unwrap_or("-"),
            rule = alert.rule_id,
            srcip = alert.srcip.as_deref().unwrap_or("-"),
            %reason,
            "Active response refused."
        );
        self.0
            .store
            .insert_refusal(
                &spec.name,
                agent,
                Some(alert_id),
                Some(alert.rule_id),
                alert.srcip.as_deref(),
                reason,
            )
            .await
    }

    /// Passes a new block through the circuit breaker; false when it is
    /// refused (recorded, and the breaker's alert raised the first time).
    async fn breaker_admits(
        &self,
        spec: &ResponseSpec,
        stored: &StoredAlert,
        agent: &str,
        srcip: &str,
    ) -> Result<bool, StoreError> {
        let Admission::Refused { reason, alert } = self.0.breaker.admit(agent, srcip).await? else {
            return Ok(true);
        };
        if let Some(alert) = alert {
            let origin = if stored.origin.agent_id.as_deref() == Some(agent) {
                stored.origin.clone()
            } else {
                Origin {
                    agent_id: Some(agent.to_string()),
                    name: agent.to_string(),
                    ip: "any".into(),
                }
            };
            let raised = self.0.breaker.store_alert(&origin, *alert).await?;
            if let Some(outputs) = &self.0.outputs {
                outputs.publish(vec![raised]);
            }
        }
        self.refuse_for(spec, stored, Some(agent), &reason).await?;
        Ok(false)
    }

    async fn respond(&self, spec: &ResponseSpec, stored: &StoredAlert) -> Result<(), StoreError> {
        let (alert_id, alert) = (stored.id, &stored.alert);
        let srcip = match (&alert.srcip, spec.command.expect_srcip) {
            (Some(s), _) => match self.vet_address(s) {
                Ok(ip) => Some(ip),
                Err(reason) if spec.command.expect_srcip => {
                    return self.refuse(spec, stored, &reason.to_string()).await;
                }
                Err(_) => None,
            },
            (None, true) => {
                return self
                    .refuse(spec, stored, "the alert has no source address")
                    .await;
            }
            (None, false) => None,
        };
        // The user name is the attacker's text (sshd logs it verbatim): one
        // the agents would refuse is left out, so that a space in it cannot
        // spare its sender the block; a response that needs it is refused.
        let user = alert
            .dstuser
            .clone()
            .or_else(|| alert.srcuser.clone())
            .filter(|u| !u.is_empty() && palisade_proto::action::is_valid_user(u));
        if spec.command.expect_user && user.is_none() {
            return self
                .refuse(spec, stored, "the alert has no valid user name")
                .await;
        }
        let targets: Vec<String> = match &spec.location {
            ResponseLocation::Local => match &stored.origin.agent_id {
                Some(id) => vec![id.clone()],
                None => {
                    return self
                        .refuse(
                            spec,
                            stored,
                            "the event came from the manager itself, which runs no responses",
                        )
                        .await;
                }
            },
            ResponseLocation::DefinedAgent(id) => vec![id.clone()],
            ResponseLocation::All => self.live_agents().await?,
            ResponseLocation::Server => {
                return self
                    .refuse(spec, stored, "location \"server\": this manager runs no responses on its own host; use an agent on it")
                    .await;
            }
        };
        let mut commands = Vec::with_capacity(targets.len());
        for agent in targets {
            let srcip_text = srcip.map(|ip| ip.to_string());
            if let Some(ip) = &srcip_text
                && !self.breaker_admits(spec, stored, &agent, ip).await?
            {
                continue;
            }
            let timeout_s = match (&srcip_text, spec.timeout) {
                (Some(ip), Some(base)) if !spec.repeated_offenders.is_empty() => {
                    let n = self.0.store.offences(&agent, &spec.name, ip).await?;
                    let d = match usize::try_from(n).unwrap_or(usize::MAX) {
                        0 => base,
                        k => {
                            spec.repeated_offenders[(k - 1).min(spec.repeated_offenders.len() - 1)]
                        }
                    };
                    Some(d.as_secs())
                }
                (_, t) => t.map(|d| d.as_secs()),
            };
            commands.push(NewResponse {
                agent_id: agent,
                response: spec.name.clone(),
                command: spec.command.name.clone(),
                executable: spec.command.executable.clone(),
                action: Action::Add,
                srcip: srcip_text,
                user: user.clone(),
                alert_id: Some(alert_id),
                rule_id: Some(alert.rule_id),
                location: Some(alert.location.clone()),
                timeout_s,
                undoes: None,
            });
        }
        if commands.is_empty() {
            return Ok(());
        }
        // One transaction and one concurrent delivery, also for a
        // response on every agent (location "all").
        let (rows, _) = self.record_and_deliver(&commands).await?;
        for row in &rows {
            self.count(|s| &s.responses_issued);
            info!(
                command = row.id,
                agent = %row.request.agent_id,
                response = %spec.name,
                srcip = row.request.srcip.as_deref().unwrap_or("-"),
                timeout_s = row.request.timeout_s.unwrap_or(0),
                rule = alert.rule_id,
                "Active response issued."
            );
        }
        Ok(())
    }

    async fn live_agents(&self) -> Result<Vec<String>, StoreError> {
        self.0.store.live_agent_ids().await
    }

    /// Sends recorded commands down the streams this manager holds, all
    /// at once, each at most once in the whole cluster: the commands are
    /// claimed first ([`Store::claim_responses`]: pending → sent, only
    /// one claimer wins, whether another manager woken by the same
    /// commands, or this manager's reconnect path), then sent; those
    /// whose stream ended before they went are handed back
    /// ([`Store::release_responses`]) for whoever holds the agent next.
    /// Each goes into its stream's queue at once; an agent's commands
    /// whose queue is full (an agent slow to read) wait, in order and
    /// concurrently with other agents', each at most [`DELIVERY_WAIT`].
    /// Returns, per row, where it went.
    pub async fn deliver_all(&self, rows: &[ResponseRow]) -> Result<Vec<Delivery>, StoreError> {
        self.deliver(rows, |_| false).await
    }

    /// Records the commands of one decision and delivers them: those of
    /// agents whose streams here take commands (welcomed) are recorded
    /// already claimed (one commit before
    /// they go out, as with one manager); the others are pending, and the
    /// managers holding their agents are woken on commit.
    async fn record_and_deliver(
        &self,
        commands: &[NewResponse],
    ) -> Result<(Vec<ResponseRow>, Vec<Delivery>), StoreError> {
        let rows = self
            .0
            .store
            .insert_responses_claiming(commands, |agent| self.0.sessions.sender(agent).is_some())
            .await?;
        // An agent that connected here meanwhile: claimed now.
        let went = self.deliver(&rows, |row| row.status == "sent").await?;
        Ok((rows, went))
    }

    /// [`Self::deliver_all`], rows for which `claimed_here` holds being
    /// claimed by this manager already.
    async fn deliver(
        &self,
        rows: &[ResponseRow],
        claimed_here: impl Fn(&ResponseRow) -> bool,
    ) -> Result<Vec<Delivery>, StoreError> {
        let senders = self
            .0
            .sessions
            .senders(rows.iter().map(|r| r.request.agent_id.as_str()));
        let held: Vec<i64> = rows
            .iter()
            .zip(&senders)
            .filter(|(row, s)| !claimed_here(row) && s.as_ref().is_some_and(|s| !s.is_closed()))
            .map(|(row, _)| row.id)
            .collect();
        let mut claimed: HashSet<i64> = self
            .0
            .store
            .claim_responses(&held)
            .await?
            .into_iter()
            .collect();
        claimed.extend(rows.iter().filter(|r| claimed_here(r)).map(|r| r.id));
        let held: HashSet<i64> = held.into_iter().collect();
        let mut went = vec![Delivery::Waiting; rows.len()];
        // Each agent's claimed commands, in order.
        let mut by_agent: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            if claimed.contains(&row.id) {
                by_agent.entry(&row.request.agent_id).or_default().push(i);
            } else if held.contains(&row.id) {
                went[i] = Delivery::Taken;
            }
        }
        let mut waiting = tokio::task::JoinSet::new();
        for indexes in by_agent.into_values() {
            let Some(sender) = senders[indexes[0]].clone() else {
                continue;
            };
            let command = |i: usize| {
                Box::new(ManagerMessage {
                    kind: Some(ManagerKind::Command(crate::wire::command(&rows[i]))),
                })
            };
            for (k, &i) in indexes.iter().enumerate() {
                match sender.try_send(Ok(command(i))) {
                    Ok(()) => went[i] = Delivery::Here,
                    Err(TrySendError::Closed(_)) => break,
                    Err(TrySendError::Full(_)) => {
                        let rest: Vec<(usize, Box<ManagerMessage>)> =
                            indexes[k..].iter().map(|&j| (j, command(j))).collect();
                        let sender = sender.clone();
                        waiting.spawn(async move {
                            let mut sent = Vec::new();
                            for (j, message) in rest {
                                let done =
                                    tokio::time::timeout(DELIVERY_WAIT, sender.send(Ok(message)))
                                        .await;
                                if !matches!(done, Ok(Ok(()))) {
                                    break;
                                }
                                sent.push(j);
                            }
                            sent
                        });
                        break;
                    }
                }
            }
        }
        while let Some(done) = waiting.join_next().await {
            for j in done.unwrap_or_default() {
                went[j] = Delivery::Here;
            }
        }
        let unsent: Vec<&ResponseRow> = rows
            .iter()
            .zip(&went)
            .filter(|(row, went)| claimed.contains(&row.id) && **went != Delivery::Here)
            .map(|(row, _)| row)
            .collect();
        self.0.store.release_responses(&unsent).await?;
        let here = went.iter().filter(|w| **w == Delivery::Here).count();
        self.0
            .stats
            .responses_delivered
            .fetch_add(here as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(went)
    }

    /// Sends, in id order, what waited for an agent whose stream was
    /// welcomed at `welcomed_at` (ms), and what an earlier stream may
    /// have lost ([`Store::responses_for_new_stream`]).
    pub async fn deliver_pending(
        &self,
        agent_id: &str,
        welcomed_at: i64,
    ) -> Result<(), StoreError> {
        let rows = self
            .0
            .new_streams
            .submit((agent_id.to_string(), welcomed_at))
            .await?;
        // Unanswered ones are this manager's to send again: sent already.
        let went = self.deliver(&rows, |row| row.status == "sent").await?;
        for (row, went) in rows.iter().zip(went) {
            match (went, row.status.as_str()) {
                (Delivery::Here, "sent") => {
                    info!(command = row.id, agent = %agent_id, response = %row.request.response, action = %row.request.action, "Unanswered active response sent again.")
                }
                (Delivery::Here, _) => {
                    info!(command = row.id, agent = %agent_id, response = %row.request.response, action = %row.request.action, "Queued active response delivered.")
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Sends what is pending for the agents this manager holds, of
    /// `agents` (`None`: of every agent): what another manager recorded
    /// ([`crate::wakeups`]). Returns how many commands went out.
    pub async fn deliver_held(&self, agents: Option<&[String]>) -> Result<usize, StoreError> {
        let held = match agents {
            None => self.0.sessions.connected_ids(),
            Some(agents) => agents
                .iter()
                .filter(|a| self.0.sessions.is_connected(a))
                .cloned()
                .collect(),
        };
        if held.is_empty() {
            return Ok(0);
        }
        let held: Vec<&str> = held.iter().map(String::as_str).collect();
        let rows = self.0.store.pending_responses_of(&held).await?;
        let went = self.deliver_all(&rows).await?;
        let mut sent = 0;
        for (row, went) in rows.iter().zip(went) {
            if went == Delivery::Here {
                sent += 1;
                info!(command = row.id, agent = %row.request.agent_id, response = %row.request.response, action = %row.request.action, "Active response of another manager delivered.");
            }
        }
        Ok(sent)
    }

    /// Waits (at most [`HANDOFF_WAIT`]) for the other live managers that
    /// hold the agents of `rows` (commands this one could not send) to take
    /// them; returns the ids they took. Commands of agents no manager
    /// holds (offline) are not waited for.
    async fn handed_over(&self, rows: &[&ResponseRow]) -> Result<HashSet<i64>, StoreError> {
        let Some(cluster) = &self.0.cluster else {
            return Ok(HashSet::new());
        };
        let agents: Vec<&str> = rows.iter().map(|r| r.request.agent_id.as_str()).collect();
        let elsewhere = self
            .0
            .store
            .held_by_other_managers(
                &agents,
                cluster.id(),
                crate::store::now_ms() - cluster.dead_after_ms(),
            )
            .await?;
        let ids: Vec<i64> = rows
            .iter()
            .filter(|r| elsewhere.contains(&r.request.agent_id))
            .map(|r| r.id)
            .collect();
        let deadline = tokio::time::Instant::now() + HANDOFF_WAIT;
        let mut pending = ids.clone();
        while !pending.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(HANDOFF_POLL).await;
            pending = self.0.store.still_pending(&pending).await?;
        }
        let pending: HashSet<i64> = pending.into_iter().collect();
        Ok(ids.into_iter().filter(|id| !pending.contains(id)).collect())
    }

    /// Records an agent's report on a command.
    pub async fn on_result(
        &self,
        agent_id: &str,
        result: &CommandResult,
    ) -> Result<(), StoreError> {
        let Ok(id) = result.command_id.parse::<i64>() else {
            warn!(agent = %agent_id, command = %Escaped(&result.command_id), "Result for an unknown command.");
            return Ok(());
        };
        let action = crate::wire::action(result.action);
        let executed_at = result
            .executed_at
            .as_ref()
            .map(crate::wire::millis)
            .unwrap_or_else(crate::store::now_ms);
        let row = self
            .0
            .results
            .submit(CommandReport {
                agent_id: agent_id.to_string(),
                id,
                action,
                ok: result.ok,
                message: result.message.clone(),
                executed_at,
            })
            .await?;
        if let Some(row) = &row
            && !result.ok
            && !result.refusal_reason.is_empty()
        {
            // The agent's own address policy refused it: listed with the
            // manager's refusals.
            self.0
                .store
                .insert_refusal(
                    &row.request.response,
                    Some(agent_id),
                    row.request.alert_id,
                    row.request.rule_id,
                    row.request.srcip.as_deref(),
                    // The agent's text: bounded here, escaped by the outputs.
                    &format!(
                        "agent {agent_id}: {}",
                        result.message.chars().take(256).collect::<String>()
                    ),
                )
                .await?;
        }
        match &row {
            Some(row) if result.ok => info!(
                command = id,
                agent = %agent_id,
                %action,
                response = %row.request.response,
                srcip = row.request.srcip.as_deref().unwrap_or("-"),
                message = %Escaped(&result.message),
                "Active response carried out."
            ),
            Some(row) => {
                self.count(|s| &s.responses_failed);
                warn!(
                    command = id,
                    agent = %agent_id,
                    %action,
                    response = %row.request.response,
                    srcip = row.request.srcip.as_deref().unwrap_or("-"),
                    message = %Escaped(&result.message),
                    "Active response failed on the agent."
                )
            }
            None => {
                warn!(agent = %agent_id, command = id, "Result for a command this agent was not sent.")
            }
        }
        if let (Some(mailer), Some(row)) = (&self.0.mailer, &row) {
            mailer.response(&ResponseReport {
                time: executed_at,
                agent_id,
                response: &row.request.response,
                action,
                srcip: row.request.srcip.as_deref(),
                rule_id: row.request.rule_id,
                ok: result.ok,
                message: &result.message,
            });
        }
        Ok(())
    }

    /// Runs a response by name on agents, as `agent_control -b IP -f NAME
    /// -u ID` does. The work runs in a task of its own: once asked, the
    /// fan-out is decided, recorded and delivered whole even when the
    /// caller goes away (`palisadectl`'s timeout, a closed connection).
    pub async fn run(
        &self,
        srcip: &str,
        name: &str,
        targets: Targets,
    ) -> Result<Outcome, ResponseError> {
        let (this, srcip, name) = (self.clone(), srcip.to_string(), name.to_string());
        detached(async move { this.run_attached(&srcip, &name, targets).await }).await
    }

    async fn run_attached(
        &self,
        srcip: &str,
        name: &str,
        targets: Targets,
    ) -> Result<Outcome, ResponseError> {
        let spec = self
            .0
            .specs
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.0.specs.iter().map(|s| s.name.as_str()).collect();
                ResponseError::Invalid(format!(
                    "unknown response {name:?}; available: {}",
                    known.join(", ")
                ))
            })?;
        let agents = self.resolve(targets).await?;
        let ip = match self.vet_address(srcip) {
            Ok(ip) => ip,
            Err(refusal) => {
                // Listed with the refusals of automatic responses.
                warn!(response = %spec.name, srcip, reason = %refusal, "Active response run by an operator refused.");
                for agent in &agents {
                    self.0
                        .store
                        .insert_refusal(
                            &spec.name,
                            Some(agent),
                            None,
                            None,
                            srcip.parse::<IpAddr>().is_ok().then_some(srcip),
                            &refusal.to_string(),
                        )
                        .await?;
                }
                return Err(ResponseError::Refused(refusal.to_string()));
            }
        };
        let commands: Vec<NewResponse> = agents
            .into_iter()
            .map(|agent| NewResponse {
                agent_id: agent,
                response: spec.name.clone(),
                command: spec.command.name.clone(),
                executable: spec.command.executable.clone(),
                action: Action::Add,
                srcip: Some(ip.to_string()),
                user: None,
                alert_id: None,
                rule_id: None,
                location: Some("(from_the_server)".into()),
                timeout_s: spec.timeout.map(|d| d.as_secs()),
                undoes: None,
            })
            .collect();
        let outcome = self.fan_out(&commands).await?;
        info!(
            response = %spec.name,
            srcip = %ip,
            sent = outcome.sent_to.len(),
            queued = outcome.queued_for.len(),
            commands = %id_range(&outcome.command_ids),
            "Active response run by an operator."
        );
        Ok(outcome)
    }

    /// Records and delivers the commands of one decision and says where
    /// they went. With several managers, a command this manager could not
    /// send counts as sent when the manager holding the agent's stream took
    /// it within [`HANDOFF_WAIT`], as queued otherwise (and at once for an
    /// agent no live manager holds).
    async fn fan_out(&self, commands: &[NewResponse]) -> Result<Outcome, StoreError> {
        let (rows, went) = self.record_and_deliver(commands).await?;
        self.0
            .stats
            .responses_issued
            .fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let waiting: Vec<&ResponseRow> = rows
            .iter()
            .zip(&went)
            .filter(|(_, w)| **w == Delivery::Waiting)
            .map(|(row, _)| row)
            .collect();
        let handed = match waiting.is_empty() {
            true => HashSet::new(),
            false => self.handed_over(&waiting).await?,
        };
        let mut outcome = Outcome::default();
        for (row, went) in rows.into_iter().zip(went) {
            let sent = went != Delivery::Waiting || handed.contains(&row.id);
            debug!(command = row.id, agent = %row.request.agent_id, action = %row.request.action, ?went, sent, "Command of a fan-out.");
            outcome.command_ids.push(row.id);
            match sent {
                true => outcome.sent_to.push(row.request.agent_id),
                false => outcome.queued_for.push(row.request.agent_id),
            }
        }
        if !handed.is_empty() {
            info!(
                commands = handed.len(),
                "Commands handed to the managers holding their agents."
            );
        }
        Ok(outcome)
    }

    /// Lifts every block of `srcip` on the targeted agents now; detached
    /// from the caller as [`Self::run`] is.
    pub async fn unblock(&self, srcip: &str, targets: Targets) -> Result<Outcome, ResponseError> {
        let (this, srcip) = (self.clone(), srcip.to_string());
        detached(async move { this.unblock_attached(&srcip, targets).await }).await
    }

    async fn unblock_attached(
        &self,
        srcip: &str,
        targets: Targets,
    ) -> Result<Outcome, ResponseError> {
        let ip: IpAddr = srcip
            .parse::<IpAddr>()
            .map_err(|_| ResponseError::Invalid(format!("{srcip:?} is not an IP address")))?
            .to_canonical();
        let agents: Option<std::collections::HashSet<String>> = match targets {
            Targets::All => None,
            t => Some(self.resolve(t).await?.into_iter().collect()),
        };
        let mut lifts: Vec<NewResponse> = Vec::new();
        for blocks in self.0.store.blocking_commands(&ip.to_string()).await? {
            let adds = blocks
                .adds
                .iter()
                .filter(|(_, agent)| agents.as_ref().is_none_or(|a| a.contains(agent)));
            lifts.extend(adds.map(|(add, agent)| NewResponse {
                agent_id: agent.clone(),
                response: blocks.response.clone(),
                command: blocks.command.clone(),
                executable: blocks.executable.clone(),
                action: Action::Delete,
                srcip: Some(ip.to_string()),
                user: blocks.user.clone(),
                alert_id: None,
                rule_id: blocks.rule_id,
                location: blocks.location.clone(),
                timeout_s: None,
                undoes: Some(*add),
            }));
        }
        // Newest block first, as they were issued.
        lifts.sort_unstable_by_key(|lift| std::cmp::Reverse(lift.undoes));
        if lifts.is_empty() {
            return Err(ResponseError::Invalid(format!(
                "{ip} is not blocked on the agents named"
            )));
        }
        let outcome = self.fan_out(&lifts).await?;
        info!(
            srcip = %ip,
            sent = outcome.sent_to.len(),
            queued = outcome.queued_for.len(),
            commands = %id_range(&outcome.command_ids),
            "Unblock issued."
        );
        Ok(outcome)
    }

    async fn resolve(&self, targets: Targets) -> Result<Vec<String>, ResponseError> {
        match targets {
            Targets::All => Ok(self.live_agents().await?),
            Targets::Agents(ids) => {
                if ids.is_empty() {
                    return Err(ResponseError::Invalid(
                        "name an agent (-u ID) or all agents (-a)".into(),
                    ));
                }
                for id in &ids {
                    match self.0.store.agent(id).await? {
                        Some(a) if a.removed_at.is_none() => {}
                        Some(_) => {
                            return Err(ResponseError::Invalid(format!("agent {id} was removed")));
                        }
                        None => return Err(ResponseError::Invalid(format!("unknown agent {id}"))),
                    }
                }
                Ok(ids)
            }
        }
    }
}

/// A manager's responder over a test database, with streams that are
/// channels: what the responder sends, as an agent would read it.
#[cfg(test)]
pub(crate) mod testing {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use palisade_proto::v1::ManagerMessage;
    use palisade_proto::v1::manager_message::Kind;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::Responder;
    use crate::config::ManagerConfig;
    use crate::sessions::{AgentSender, NewStream, SessionGuard, Sessions};
    use crate::store::testing::TestDb;
    use crate::store::{Action, NewResponse, Store};

    const CONFIG: &str = "[server]\nlisten = \"127.0.0.1:1514\"\n\
        [[active_response]]\ncommand = \"route-null\"\nlocation = \"all\"\nrules_id = [31151]\ntimeout = \"600s\"\n";

    /// What an agent reads from its stream.
    pub type Inbox = mpsc::Receiver<Result<Box<ManagerMessage>, tonic::Status>>;

    /// A manager: its store on the test database and the streams it holds.
    pub struct Manager {
        pub store: Store,
        pub sessions: Sessions,
        pub responder: Responder,
    }

    impl Manager {
        pub async fn new(db: &TestDb) -> Self {
            let store = db.open().await;
            let sessions = Sessions::default();
            let config = ManagerConfig::parse(CONFIG, &db.dir().join("manager.toml")).unwrap();
            let responder = Responder::new(
                config.responses,
                vec![],
                vec![],
                store.clone(),
                sessions.clone(),
            );
            Self {
                store,
                sessions,
                responder,
            }
        }

        /// Opens a stream for `agent` here; its commands arrive on the
        /// receiver.
        pub fn hold(&self, agent: &str) -> Inbox {
            self.open(agent).1
        }

        /// [`Self::hold`], with the stream's guard (to end it).
        pub fn open(&self, agent: &str) -> (SessionGuard, Inbox) {
            let (tx, rx): (AgentSender, _) = mpsc::channel(64);
            let stream = NewStream {
                agent_id: agent,
                serial: "aa",
                address: None,
                stale_after: Duration::from_secs(60),
                takeover: false,
            };
            let (guard, _) = self
                .sessions
                .register(stream, tx, &CancellationToken::new())
                .unwrap();
            // Commands go to a stream once its Welcome went out.
            guard.welcomed();
            (guard, rx)
        }
    }

    /// The command ids received so far.
    pub fn received(rx: &mut Inbox) -> Vec<i64> {
        let mut ids = Vec::new();
        while let Ok(Ok(message)) = rx.try_recv() {
            if let Some(Kind::Command(c)) = message.kind {
                ids.push(c.id.parse().unwrap());
            }
        }
        ids
    }

    /// A block of 203.0.113.`n` for `agent`.
    pub fn block(agent: &str, n: u32) -> NewResponse {
        NewResponse {
            agent_id: agent.into(),
            response: "route-null600".into(),
            command: "route-null".into(),
            executable: "route-null".into(),
            action: Action::Add,
            srcip: Some(format!("203.0.113.{n}")),
            user: None,
            alert_id: None,
            rule_id: None,
            location: None,
            timeout_s: Some(600),
            undoes: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::testing::{Manager, block, received};
    use crate::store::testing::both_backends;
    use crate::store::{Action, now_ms};

    /// Returns once the clock (ms) moved past now: what is sent after
    /// has a later time than what was sent before.
    async fn next_millisecond() {
        let now = now_ms();
        while now_ms() <= now {
            tokio::task::yield_now().await;
        }
    }

    both_backends! {
        // A stream that ends with commands in its buffers (a manager
        // killed, a connection cut) loses them for the agent although
        // they are `sent`: the agent's next stream carries, in order,
        // those it never answered, and nothing it answered.
        async fn commands_an_ended_stream_never_carried_go_down_the_next(db) {
            let m = Manager::new(&db).await;
            let (agent, _) = m
                .store
                .add_agent("web01", "any", |_| Ok(("aa".to_string(), ())))
                .await
                .unwrap();
            let (first, mut lost) = m.open(&agent);
            let outcome = m
                .responder
                .fan_out(&[block(&agent, 1), block(&agent, 2), block(&agent, 3)])
                .await
                .unwrap();
            let ids = outcome.command_ids;
            assert_eq!(received(&mut lost), ids, "all three went down the first stream");
            // The agent answered the second only; the stream ends.
            m.store
                .response_result(&agent, ids[1], Action::Add, true, "blocked", now_ms())
                .await
                .unwrap();
            m.sessions.unregister(&agent, first.generation);
            // A command for the new stream, sent after its Welcome: not
            // sent twice.
            next_millisecond().await;
            let (second, mut next) = m.open(&agent);
            let welcomed_at = now_ms();
            let later = m.responder.fan_out(&[block(&agent, 4)]).await.unwrap();
            assert_eq!(received(&mut next), later.command_ids);
            m.responder.deliver_pending(&agent, welcomed_at).await.unwrap();
            assert_eq!(received(&mut next), [ids[0], ids[2]]);
            // A duplicate answer does not overwrite the first.
            m.store
                .response_result(&agent, ids[1], Action::Add, false, "again", now_ms())
                .await
                .unwrap();
            assert_eq!(m.store.response(ids[1]).await.unwrap().unwrap().status, "done");
            // Answered now: not sent a third time.
            for id in [ids[0], ids[2], later.command_ids[0]] {
                m.store
                    .response_result(&agent, id, Action::Add, true, "blocked", now_ms())
                    .await
                    .unwrap();
            }
            m.sessions.unregister(&agent, second.generation);
            next_millisecond().await;
            let (_, mut third) = m.open(&agent);
            m.responder.deliver_pending(&agent, now_ms()).await.unwrap();
            assert!(received(&mut third).is_empty());
        }
    }
}
