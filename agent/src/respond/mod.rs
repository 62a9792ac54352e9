//! Active responses on the agent: carries out the manager's commands
//! (`route-null`, `firewall-drop`, `host-deny`, custom scripts), records
//! every block in a ledger in the agent's SQLite, undoes each at its expiry
//! (also across restarts), and reconciles the ledger with the kernel at
//! start.
//!
//! Why it is built this way:
//! - Nothing from a log line reaches a shell. The address is parsed as an
//!   IP first and everything downstream works from the parsed value;
//!   scripts get an argv, `nft` a script built from that value.
//! - The agent refuses to block its manager, itself, its subnets'
//!   network and broadcast addresses, its gateways and DNS resolvers,
//!   loopback, link-local, unspecified, multicast and broadcast addresses
//!   and its own white list, whatever the manager says: the one address
//!   policy of `palisade_common::address`, which the manager applies too.
//! - Blocks survive an agent restart: a shutdown leaves them in force
//!   (unlike OSSEC's execd, which undoes everything when it stops) and the
//!   timer undoes them on time after the next start. A block that expired
//!   while the agent was down is undone at start.
//! - A repeated add for an address already blocked by the same response
//!   extends the block (OSSEC's execd dedup): the expiry becomes
//!   `now + timeout` unless the block already ran longer, and no second
//!   block is added. Custom scripts are not run again on an extension, as
//!   in OSSEC; built-in actions are re-applied (they are idempotent, and it
//!   heals a route someone removed, and gives an nft element its new
//!   timeout).
//! - Each way of blocking is a [`Backend`]; this module holds what is the
//!   same for all of them, so none of it is written per backend.
//! - Time is a parameter ([`Clock`]): the daemon reads the system clock,
//!   tests move a manual one.
//!
//! # Layout
//! - [`config`], the `[active_response]` section.
//! - [`order`], the manager's orders, their validation and outcome.
//! - [`backend`], the trait every backend implements and their registry:
//!   - [`netlink`], `route-null` routes;
//!   - [`nft`], `firewall-drop`;
//!   - [`hostdeny`], `host-deny`;
//!   - [`script`], custom scripts with OSSEC's arguments.
//! - [`ledger`], the blocks in force.
//! - `expiry`, the timer that lifts blocks at their expiry.
//! - `reconcile`, start-up: overdue blocks, host and ledger made to match.
//! - [`locks`], one lock per block.
//! - [`lifted`], the manager's recent unblocks, so that a block decided
//!   before one but delivered after it is not carried out.
//! - [`clock`], the time blocks expire by.
//! - [`arlog`], `active-responses.log`.

pub mod arlog;
pub mod backend;
pub mod clock;
pub mod config;
mod expiry;
pub mod hostdeny;
pub mod ledger;
pub mod lifted;
pub mod locks;
pub mod netlink;
pub mod nft;
pub mod order;
mod reconcile;
pub mod script;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use palisade_common::address::{self, AddressPolicy, HostFacts};
use palisade_common::hostfacts;
use palisade_proto::v1::{Command, CommandResult};
use tokio::sync::Notify;
use tracing::{error, info, warn};

pub use backend::{Backend, BackendError, Reconciled, Registered, Target};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{NullRouteType, RawRespondConfig, RespondConfig};
pub use ledger::{Block, BlockState, Ledger, LedgerError};
pub use netlink::PALISADE_ROUTE_PROTOCOL;
pub use order::{Action, Order, OrderError, OssecArgs, Outcome};
pub use palisade_common::address::Refusal;
pub use reconcile::{StartError, StartReport};

use locks::KeyedLocks;
use netlink::Netlink;

/// The responder cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    /// No netlink socket.
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

fn ms_of(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn remaining_until(expires_at: i64, now: i64) -> Duration {
    Duration::from_millis(u64::try_from(expires_at - now).unwrap_or(0))
}

#[derive(Debug)]
struct Inner {
    config: RespondConfig,
    policy: AddressPolicy,
    ledger: Ledger,
    backends: Vec<Registered>,
    clock: Arc<dyn Clock>,
    arlog: arlog::ArLog,
    managers: RwLock<Vec<IpAddr>>,
    /// The addresses the manager announced in its Welcome.
    announced: RwLock<Vec<IpAddr>>,
    wake: Notify,
    locks: KeyedLocks,
    lifted: lifted::Lifted,
    /// Where blocks the agent lifts by itself (timeout, flush) are reported,
    /// so the manager learns of them too.
    reports: Mutex<Option<tokio::sync::mpsc::UnboundedSender<CommandResult>>>,
}

/// Carries out active responses; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Responder {
    inner: Arc<Inner>,
}

impl Responder {
    /// A responder acting in the calling thread's network namespace, on
    /// the system clock. Must be called inside a tokio runtime (the
    /// netlink connection runs on it). `managers` are the manager's
    /// addresses, never blocked.
    pub fn new(
        config: RespondConfig,
        ledger: Ledger,
        managers: Vec<IpAddr>,
    ) -> Result<Self, RespondError> {
        Self::with_clock(config, ledger, managers, Arc::new(SystemClock))
    }

    /// [`Responder::new`] with the clock blocks expire by.
    pub fn with_clock(
        config: RespondConfig,
        ledger: Ledger,
        managers: Vec<IpAddr>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RespondError> {
        let netlink = Netlink::open()?;
        Ok(Self {
            inner: Arc::new(Inner {
                backends: backend::registry(&config, &netlink),
                arlog: arlog::ArLog::new(&config.ar_log_path),
                policy: AddressPolicy::new(address::Host::Agent, &config.white_list),
                config,
                ledger,
                clock,
                managers: RwLock::new(managers),
                announced: RwLock::new(Vec::new()),
                wake: Notify::new(),
                locks: KeyedLocks::default(),
                lifted: lifted::Lifted::default(),
                reports: Mutex::new(None),
            }),
        })
    }

    /// Reports of blocks this responder lifts by itself (at their timeout,
    /// or by [`Responder::undo_all`]), as `CommandResult`s with the add's
    /// command id and action `DELETE`. A later call replaces the earlier
    /// receiver.
    pub fn subscribe_reports(&self) -> tokio::sync::mpsc::UnboundedReceiver<CommandResult> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.inner.reports.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    fn report_lifted(&self, command_id: &str, message: &str) {
        let report = Outcome {
            command_id: command_id.to_string(),
            ok: true,
            message: message.to_string(),
            action: Some(Action::Delete),
            executed_at: self.timestamp(),
            refusal: None,
        }
        .to_proto();
        if let Some(tx) = self
            .inner
            .reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send(report);
        }
    }

    /// Replaces the manager's addresses (e.g. after the uplink resolved or
    /// connected to a new one).
    pub fn set_manager_addresses(&self, managers: Vec<IpAddr>) {
        *self
            .inner
            .managers
            .write()
            .unwrap_or_else(|e| e.into_inner()) = managers;
    }

    /// Replaces the addresses the manager announced as its own (the
    /// Welcome's); text that is not an address is skipped, and at most 64
    /// are kept. They are protected besides the configured manager's.
    pub fn set_announced_manager_addresses(&self, announced: &[String]) {
        let parsed: Vec<IpAddr> = announced
            .iter()
            .take(64)
            .filter_map(|a| address::parse_ip(a).ok())
            .collect();
        *self
            .inner
            .announced
            .write()
            .unwrap_or_else(|e| e.into_inner()) = parsed;
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn timestamp(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.now_ms()).unwrap_or_else(|_| jiff::Timestamp::now())
    }

    /// Carries out a command from the manager and says how it went.
    pub async fn execute_command(&self, command: &Command) -> CommandResult {
        self.execute(Order::from(command)).await.to_proto()
    }

    /// Carries out an order. Never panics; every failure is in the outcome.
    pub async fn execute(&self, order: Order) -> Outcome {
        let result = self.execute_inner(&order).await;
        Outcome::of(order, result, self.timestamp())
    }

    /// The backend for a response name.
    fn backend(&self, response: &str) -> Option<&Arc<dyn Backend>> {
        self.inner
            .backends
            .iter()
            .find(|r| r.name == response)
            .map(|r| &r.backend)
    }

    async fn execute_inner(&self, order: &Order) -> Result<String, OrderError> {
        let response = order.response.as_str();
        let command_id = order.command_id.as_str();
        let Some(action) = order.action else {
            warn!(command_id, response, "Command without a valid action.");
            return Err(OrderError::NoAction);
        };
        if self.inner.config.disabled {
            warn!(
                command_id,
                response, "Active response is disabled; command refused."
            );
            return Err(OrderError::Disabled);
        }
        let ip = address::parse_ip(&order.srcip).inspect_err(|r| {
            warn!(
                command_id,
                response,
                reason = r.reason(),
                "Refused: not an address."
            );
        })?;
        let Some(backend) = self.backend(response) else {
            warn!(command_id, response, "Unknown response.");
            return Err(OrderError::UnknownResponse(
                response.chars().take(64).collect(),
            ));
        };
        let args = OssecArgs::of_order(order).inspect_err(|e| {
            warn!(command_id, error = %e, "Refused: malformed arguments.");
        })?;
        match action {
            Action::Add => {
                self.check_safety(ip).await.inspect_err(|r| {
                    warn!(%ip, command_id, response, reason = r.reason(), "Refused to block.");
                })?;
                self.add(order, ip, backend, args).await
            }
            Action::Delete => self.delete(order, ip, backend, args).await,
        }
    }

    async fn check_safety(&self, ip: IpAddr) -> Result<(), Refusal> {
        let mut managers = self
            .inner
            .managers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        managers.extend(
            self.inner
                .announced
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter(),
        );
        // Cheap checks first: they need nothing read from the host.
        let facts = HostFacts {
            managers,
            ..HostFacts::default()
        };
        self.inner.policy.check(ip, &facts)?;
        // Read again for every block (they are rare, and the host's
        // addresses and routes change), on this thread: its network
        // namespace is the one that counts.
        let facts = hostfacts::gather(facts.managers, &hostfacts::Sources::default())
            .map_err(|e| Refusal::OwnAddressesUnknown(e.to_string()))?;
        self.inner.policy.check(ip, &facts)
    }

    /// Applies `action` through the backend, or says what it would do in a
    /// dry run.
    async fn apply(
        &self,
        backend: &dyn Backend,
        action: Action,
        target: &Target,
    ) -> Result<String, BackendError> {
        if self.inner.config.dry_run {
            return Ok(format!(
                "would {} (dry run: nothing changed)",
                backend.describe(action)
            ));
        }
        match action {
            Action::Add => backend.add(target).await,
            Action::Delete => backend.delete(target).await,
        }
    }

    async fn log_line(&self, backend: &dyn Backend, action: Action, ip: IpAddr, args: &OssecArgs) {
        let at = self
            .timestamp()
            .to_zoned_datetime(jiff::tz::TimeZone::system());
        let line = arlog::line(
            &at,
            &backend.program(),
            action,
            &args.user,
            &ip.to_string(),
            &args.alert_id,
            &args.rule_id,
        );
        if let Err(e) = self.inner.arlog.append(&line).await {
            warn!(path = %self.inner.config.ar_log_path.display(), error = %e, "Cannot write active-responses.log.");
        }
    }

    async fn add(
        &self,
        order: &Order,
        ip: IpAddr,
        backend: &Arc<dyn Backend>,
        args: OssecArgs,
    ) -> Result<String, OrderError> {
        let response = order.response.as_str();
        let command_id = order.command_id.as_str();
        let _guard = self.inner.locks.lock(response, ip).await;
        let now = self.now_ms();
        if let Some(by) = self
            .inner
            .lifted
            .lifted_after(response, ip, command_id, now)
        {
            warn!(%ip, command_id, response, unblocked_by = by, "Block not carried out: the address was unblocked by a later command.");
            return Err(OrderError::Overtaken { by });
        }
        let ledger = &self.inner.ledger;
        let existing = ledger
            .get(response, ip)
            .await
            .inspect_err(|e| error!(error = %e, "Active-response ledger failed."))?;
        // The manager sends again what it never heard an answer to (the
        // stream ended): carried out once. An add older than the block in
        // force (sent again, or overtaken) neither extends it nor counts
        // as an offence.
        if let Some(block) = &existing {
            if block.command_id == command_id {
                info!(%ip, command_id, response, "Block already carried out.");
                return Ok(format!("{response} {ip}: already blocked by this command"));
            }
            if let Some(newer) =
                lifted::newer_in_force(&block.command_id, block.updated_at, command_id, now)
            {
                info!(%ip, command_id, response, blocked_by = newer, "Block already in force by a later command.");
                return Ok(format!(
                    "{response} {ip}: already blocked by a later command ({newer})"
                ));
            }
        }
        let new_expiry = order.timeout.map(|t| now.saturating_add(ms_of(t)));
        // Never shorten a block in force; None (no timeout) wins.
        let expiry = match &existing {
            Some(old) => match (old.expires_at, new_expiry) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            },
            None => new_expiry,
        };
        let extending = existing.is_some();
        let target = Target {
            ip,
            remaining: expiry.map(|e| remaining_until(e, now)),
            args,
        };
        let did = if extending && !backend.reapplies_on_extension() {
            "script not run again".to_owned()
        } else {
            self.apply(backend.as_ref(), Action::Add, &target)
                .await
                .map_err(|source| {
                    error!(%ip, command_id, response, error = %source, "Block failed.");
                    OrderError::Backend {
                        response: response.to_owned(),
                        ip,
                        source: Box::new(source),
                    }
                })?
        };
        let new = ledger::NewBlock {
            response: response.to_owned(),
            srcip: ip,
            user: target.args.user.clone(),
            alert_id: target.args.alert_id.clone(),
            rule_id: order.rule_id,
            command_id: command_id.to_owned(),
            location: target.args.location.clone(),
            expires_at: new_expiry,
        };
        let block = match ledger.record_add(&new, now).await {
            Ok((block, _)) => block,
            Err(e) => {
                error!(%ip, command_id, response, error = %e, "Block not recorded; undoing it.");
                if !extending
                    && let Err(undo) = self.apply(backend.as_ref(), Action::Delete, &target).await
                {
                    error!(%ip, response, error = %undo, "Undo after a ledger failure failed.");
                }
                error!(error = %e, "Active-response ledger failed.");
                return Err(e.into());
            }
        };
        self.inner.wake.notify_one();
        let until = match block.expires_at {
            Some(e) => format!("for {}s", (e - now + 999) / 1000),
            None => "with no timeout".to_owned(),
        };
        if extending {
            info!(%ip, command_id, response, offences = block.offences, expires_at = ?block.expires_at, "Block extended.");
            Ok(format!(
                "{response} {ip}: already blocked, extended {until} (offence {}; {did})",
                block.offences
            ))
        } else {
            self.log_line(backend.as_ref(), Action::Add, ip, &target.args)
                .await;
            info!(%ip, command_id, response, expires_at = ?block.expires_at, "Blocked.");
            Ok(format!("{response} {ip}: blocked {until} ({did})"))
        }
    }

    async fn delete(
        &self,
        order: &Order,
        ip: IpAddr,
        backend: &Arc<dyn Backend>,
        args: OssecArgs,
    ) -> Result<String, OrderError> {
        let response = order.response.as_str();
        let command_id = order.command_id.as_str();
        let _guard = self.inner.locks.lock(response, ip).await;
        self.inner
            .lifted
            .record(response, ip, command_id, self.now_ms());
        let existing = self
            .inner
            .ledger
            .get(response, ip)
            .await
            .inspect_err(|e| error!(error = %e, "Active-response ledger failed."))?;
        // The block in force was decided after this unblock (the two ran
        // at once here, or travelled out of order): it stays.
        if let Some(block) = &existing
            && let Some(newer) = lifted::newer_in_force(
                &block.command_id,
                block.updated_at,
                command_id,
                self.now_ms(),
            )
        {
            info!(%ip, command_id, response, blocked_by = newer, "Not unblocked: blocked again by a later command.");
            return Ok(format!(
                "{response} {ip}: not unblocked: blocked again by a later command ({newer})"
            ));
        }
        // A script's delete gets the arguments its add got.
        let target = Target {
            ip,
            remaining: None,
            args: existing.as_ref().map_or(args, OssecArgs::of_block),
        };
        let did = self
            .apply(backend.as_ref(), Action::Delete, &target)
            .await
            .map_err(|source| {
                error!(%ip, command_id, response, error = %source, "Unblock failed.");
                OrderError::Backend {
                    response: response.to_owned(),
                    ip,
                    source: Box::new(source),
                }
            })?;
        self.inner
            .ledger
            .remove(response, ip)
            .await
            .inspect_err(|e| error!(error = %e, "Active-response ledger failed."))?;
        self.inner.wake.notify_one();
        self.log_line(backend.as_ref(), Action::Delete, ip, &target.args)
            .await;
        info!(%ip, command_id, response, was_blocked = existing.is_some(), "Unblocked.");
        Ok(match existing {
            Some(_) => format!("{response} {ip}: unblocked ({did})"),
            None => format!("{response} {ip}: was not in the ledger; undone anyway ({did})"),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn the_registry_names_exactly_the_built_in_responses_and_the_commands() {
        let mut config = RespondConfig::default();
        config
            .commands
            .insert("notify".into(), "/usr/local/bin/notify".into());
        let names: Vec<String> = backend::registry(&config, &Netlink::open().unwrap())
            .into_iter()
            .map(|r| r.name)
            .collect();
        let mut expected: Vec<&str> = config::BUILTIN_RESPONSES.to_vec();
        expected.push("notify");
        assert_eq!(names, expected);
    }
}
