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
//! - The agent refuses to block its manager, itself, loopback,
//!   unspecified/multicast/broadcast addresses and its own white list,
//!   whatever the manager says: the one address policy of
//!   `palisade_common::address`, which the manager applies too.
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
//!
//! # Layout
//! - [`config`], the `[active_response]` section.
//! - [`netlink`], `route-null` routes and the host's own addresses.
//! - [`nft`], `firewall-drop`.
//! - [`hostdeny`], `host-deny`.
//! - [`script`], custom scripts with OSSEC's arguments.
//! - [`ledger`], the blocks in force.
//! - [`arlog`], `active-responses.log`.

pub mod arlog;
pub mod config;
pub mod hostdeny;
pub mod ledger;
pub mod netlink;
pub mod nft;
pub mod script;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use palisade_common::address::{self, AddressPolicy, HostFacts};
use palisade_proto::v1::{Command, CommandAction, CommandResult};
use tokio::sync::{Notify, OwnedMutexGuard};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use config::{NullRouteType, RawRespondConfig, RespondConfig};
pub use ledger::{Block, BlockState, Ledger, LedgerError};
pub use netlink::PALISADE_ROUTE_PROTOCOL;
pub use palisade_common::address::Refusal;

use hostdeny::HostsDeny;
use netlink::Netlink;
use nft::Nft;
use script::ScriptArgs;

/// How long a failed undo waits before it is tried again.
const UNDO_RETRY: Duration = Duration::from_secs(30);
/// The timer re-reads the ledger at least this often (wall-clock jumps).
const TIMER_MAX_SLEEP: Duration = Duration::from_secs(60);
/// OSSEC's execd passes at most 32 arguments.
const MAX_LOCATION_ARGS: usize = 24;

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

/// Add or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Block.
    Add,
    /// Unblock.
    Delete,
}

impl Action {
    /// OSSEC's word for it (`$1` of a script).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Delete => "delete",
        }
    }

    fn to_proto(self) -> CommandAction {
        match self {
            Self::Add => CommandAction::Add,
            Self::Delete => CommandAction::Delete,
        }
    }
}

/// A command to carry out, as the manager sent it (nothing validated yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// The manager's command id.
    pub command_id: String,
    /// The command name.
    pub response: String,
    /// None when the manager sent no valid action.
    pub action: Option<Action>,
    /// The address, as text.
    pub srcip: String,
    /// The user; empty = `-`.
    pub user: String,
    /// None = no timeout.
    pub timeout: Option<Duration>,
    /// Empty = a manual command (`(from_the_server)`).
    pub alert_id: String,
    /// 0 = a manual command (`(no_rule_id)`).
    pub rule_id: u32,
    /// The agent the alert came from.
    pub agent_id: String,
    /// OSSEC's location of the event (`(web01) 10.0.0.5->/var/log/x`).
    pub location: String,
}

impl From<&Command> for Order {
    fn from(c: &Command) -> Self {
        let action = match CommandAction::try_from(c.action) {
            Ok(CommandAction::Add) => Some(Action::Add),
            Ok(CommandAction::Delete) => Some(Action::Delete),
            _ => None,
        };
        Self {
            command_id: c.id.clone(),
            response: c.response.clone(),
            action,
            srcip: c.srcip.clone(),
            user: c.user.clone(),
            timeout: (c.timeout_seconds > 0)
                .then(|| Duration::from_secs(u64::from(c.timeout_seconds))),
            alert_id: c.alert_id.clone(),
            rule_id: c.rule_id,
            agent_id: c.agent_id.clone(),
            location: c.location.clone(),
        }
    }
}

/// What happened to an [`Order`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The manager's command id.
    pub command_id: String,
    /// Done (a delete of something not blocked is done too).
    pub ok: bool,
    /// For the operator: what was done, or why not.
    pub message: String,
    /// The action, if it was valid.
    pub action: Option<Action>,
    /// When it finished.
    pub executed_at: jiff::Timestamp,
    /// Set when a safety rule refused it.
    pub refusal: Option<Refusal>,
}

impl Outcome {
    /// As the wire's `CommandResult`.
    pub fn to_proto(&self) -> CommandResult {
        CommandResult {
            command_id: self.command_id.clone(),
            ok: self.ok,
            message: self.message.clone(),
            action: self
                .action
                .map_or(CommandAction::Unspecified, Action::to_proto) as i32,
            executed_at: Some(palisade_common::time::proto_from_jiff(self.executed_at)),
        }
    }
}

/// What start-up did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartReport {
    /// Blocks that expired while the agent was down, now undone.
    pub expired_undone: usize,
    /// Ledger routes missing from the kernel, added again.
    pub routes_readded: usize,
    /// Palisade routes the ledger does not hold, removed.
    pub routes_removed: usize,
    /// Ledger nft elements missing from the set, added again.
    pub elements_readded: usize,
    /// Set elements the ledger does not hold, removed.
    pub elements_removed: usize,
    /// hosts.deny lines missing, added again.
    pub hosts_deny_readded: usize,
    /// What could not be reconciled.
    pub errors: Vec<String>,
}

/// Which action a response name means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    RouteNull,
    FirewallDrop,
    HostDeny,
    Script(PathBuf),
}

const ROUTE_NULL: &str = "route-null";
const FIREWALL_DROP: &str = "firewall-drop";
const HOST_DENY: &str = "host-deny";

/// Validated text arguments of an order.
#[derive(Debug, Clone)]
struct Fields {
    user: String,
    alert_id: String,
    rule_id: String,
    location: String,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn ms_of(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Characters OSSEC's manager allows in a user name (`expect user`).
fn valid_user(s: &str) -> bool {
    s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@?-".contains(&b))
}

/// Alert ids are `<seconds>.<offset>`; allow a little more, nothing that
/// could split a log line or an argument.
fn valid_alert_id(s: &str) -> bool {
    s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:()-".contains(&b))
}

/// A location is passed as arguments and logged: printable, bounded.
fn valid_location(s: &str) -> bool {
    s.len() <= 1024 && !s.chars().any(char::is_control)
}

/// Per (response, address) locks, so an add, a delete and the timer never
/// act on the same block at once, while different blocks proceed in
/// parallel (a slow script does not hold up a null route).
type LockMap = HashMap<(String, IpAddr), Arc<tokio::sync::Mutex<()>>>;

#[derive(Debug, Default)]
struct KeyedLocks {
    map: Mutex<LockMap>,
}

impl KeyedLocks {
    async fn lock(&self, response: &str, ip: IpAddr) -> OwnedMutexGuard<()> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, v| Arc::strong_count(v) > 1);
            map.entry((response.to_owned(), ip)).or_default().clone()
        };
        m.lock_owned().await
    }
}

#[derive(Debug)]
struct Inner {
    config: RespondConfig,
    policy: AddressPolicy,
    ledger: Ledger,
    netlink: Netlink,
    nft: Nft,
    nft_ready: tokio::sync::Mutex<bool>,
    hosts: HostsDeny,
    arlog: arlog::ArLog,
    managers: RwLock<Vec<IpAddr>>,
    wake: Notify,
    locks: KeyedLocks,
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
    /// A responder acting in the calling thread's network namespace. Must be
    /// called inside a tokio runtime (the netlink connection runs on it).
    /// `managers` are the manager's addresses, never blocked.
    pub fn new(
        config: RespondConfig,
        ledger: Ledger,
        managers: Vec<IpAddr>,
    ) -> Result<Self, RespondError> {
        let netlink = Netlink::open()?;
        Ok(Self {
            inner: Arc::new(Inner {
                nft: Nft::new(&config.nft_table),
                hosts: HostsDeny::new(&config.hosts_deny_path),
                arlog: arlog::ArLog::new(&config.ar_log_path),
                policy: AddressPolicy::new(address::Host::Agent, &config.white_list),
                config,
                ledger,
                netlink,
                nft_ready: tokio::sync::Mutex::new(false),
                managers: RwLock::new(managers),
                wake: Notify::new(),
                locks: KeyedLocks::default(),
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
        let report = CommandResult {
            command_id: command_id.to_string(),
            ok: true,
            message: message.to_string(),
            action: CommandAction::Delete as i32,
            executed_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        };
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

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// Carries out a command from the manager and says how it went.
    pub async fn execute_command(&self, command: &Command) -> CommandResult {
        self.execute(Order::from(command)).await.to_proto()
    }

    /// Carries out an order. Never panics; every failure is in the outcome.
    pub async fn execute(&self, order: Order) -> Outcome {
        let result = self.execute_inner(&order).await;
        let executed_at = jiff::Timestamp::now();
        match result {
            Ok(message) => Outcome {
                command_id: order.command_id,
                ok: true,
                message,
                action: order.action,
                executed_at,
                refusal: None,
            },
            Err(Failure::Refused(r)) => Outcome {
                command_id: order.command_id,
                ok: false,
                message: format!("refused: {r}"),
                action: order.action,
                executed_at,
                refusal: Some(r),
            },
            Err(Failure::Failed(message)) => Outcome {
                command_id: order.command_id,
                ok: false,
                message,
                action: order.action,
                executed_at,
                refusal: None,
            },
        }
    }

    fn kind_of(&self, response: &str) -> Option<Kind> {
        match response {
            ROUTE_NULL => Some(Kind::RouteNull),
            FIREWALL_DROP => Some(Kind::FirewallDrop),
            HOST_DENY => Some(Kind::HostDeny),
            other => self
                .inner
                .config
                .commands
                .get(other)
                .cloned()
                .map(Kind::Script),
        }
    }

    async fn execute_inner(&self, order: &Order) -> Result<String, Failure> {
        let response = order.response.as_str();
        let Some(action) = order.action else {
            warn!(command_id = %order.command_id, response, "Command without a valid action.");
            return Err(Failure::Failed(
                "the command has no valid action (add or delete)".into(),
            ));
        };
        if self.inner.config.disabled {
            warn!(command_id = %order.command_id, response, "Active response is disabled; command refused.");
            return Err(Failure::Failed(
                "active response is disabled on this agent".into(),
            ));
        }
        let ip = address::parse_ip(&order.srcip).inspect_err(|r| {
            warn!(command_id = %order.command_id, response, reason = r.reason(), "Refused: not an address.");
        })?;
        let Some(kind) = self.kind_of(response) else {
            warn!(command_id = %order.command_id, response, "Unknown response.");
            return Err(Failure::Failed(format!(
                "unknown response {:?}: not built in (route-null, firewall-drop, host-deny) and not in active_response.commands",
                response.chars().take(64).collect::<String>()
            )));
        };
        let fields = self.fields(order)?;
        match action {
            Action::Add => {
                self.check_safety(ip).await.inspect_err(|r| {
                    warn!(%ip, command_id = %order.command_id, response, reason = r.reason(), "Refused to block.");
                })?;
                self.add(order, ip, &kind, &fields).await
            }
            Action::Delete => self.delete(order, ip, &kind, &fields).await,
        }
    }

    fn fields(&self, order: &Order) -> Result<Fields, Failure> {
        let user = if order.user.is_empty() {
            "-".to_owned()
        } else {
            order.user.clone()
        };
        if !valid_user(&user) {
            warn!(command_id = %order.command_id, "Refused: the user name has characters OSSEC does not allow.");
            return Err(Failure::Failed(
                "refused: the user name has characters other than letters, digits and ._@?-".into(),
            ));
        }
        let alert_id = if order.alert_id.is_empty() {
            "(from_the_server)".to_owned()
        } else {
            order.alert_id.clone()
        };
        if !valid_alert_id(&alert_id) {
            warn!(command_id = %order.command_id, "Refused: malformed alert id.");
            return Err(Failure::Failed("refused: the alert id is malformed".into()));
        }
        let rule_id = if order.rule_id == 0 {
            "(no_rule_id)".to_owned()
        } else {
            order.rule_id.to_string()
        };
        if !valid_location(&order.location) || !valid_alert_id(&order.agent_id) {
            warn!(command_id = %order.command_id, "Refused: malformed location or agent id.");
            return Err(Failure::Failed(
                "refused: the location or agent id is malformed".into(),
            ));
        }
        let location = if order.location.starts_with('(') || order.agent_id.is_empty() {
            order.location.clone()
        } else if order.location.is_empty() {
            format!("({})", order.agent_id)
        } else {
            format!("({}) {}", order.agent_id, order.location)
        };
        Ok(Fields {
            user,
            alert_id,
            rule_id,
            location,
        })
    }

    async fn check_safety(&self, ip: IpAddr) -> Result<(), Refusal> {
        let managers = self
            .inner
            .managers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut facts = HostFacts {
            managers,
            own_addresses: Vec::new(),
        };
        // Cheap checks first: they need no netlink round trip.
        self.inner.policy.check(ip, &facts)?;
        facts.own_addresses = self
            .inner
            .netlink
            .own_addresses()
            .await
            .map_err(|e| Refusal::OwnAddressesUnknown(e.to_string()))?;
        self.inner.policy.check(ip, &facts)
    }

    async fn ensure_nft(&self) -> Result<(), nft::NftError> {
        let mut ready = self.inner.nft_ready.lock().await;
        if !*ready {
            self.inner.nft.setup().await?;
            *ready = true;
        }
        Ok(())
    }

    fn script_args(ip: IpAddr, fields: &Fields) -> ScriptArgs {
        let location = if fields.location.is_empty() {
            vec!["-".to_owned()]
        } else {
            fields
                .location
                .split(' ')
                .take(MAX_LOCATION_ARGS)
                .map(str::to_owned)
                .collect()
        };
        ScriptArgs {
            user: fields.user.clone(),
            srcip: ip.to_string(),
            alert_id: fields.alert_id.clone(),
            rule_id: fields.rule_id.clone(),
            location,
            filename: "-".into(),
        }
    }

    /// Applies an add; `remaining` is the time until the block's expiry.
    async fn apply_add(
        &self,
        kind: &Kind,
        ip: IpAddr,
        remaining: Option<Duration>,
        fields: &Fields,
    ) -> Result<String, String> {
        if self.inner.config.dry_run {
            return Ok(format!(
                "would {} (dry run: nothing changed)",
                Self::describe(kind, "add")
            ));
        }
        match kind {
            Kind::RouteNull => {
                let t = self.inner.config.route_type;
                self.inner
                    .netlink
                    .add_null_route(ip, t)
                    .await
                    .map(|()| format!("{} route added", t.as_str()))
                    .map_err(|e| e.to_string())
            }
            Kind::FirewallDrop => {
                self.ensure_nft().await.map_err(|e| e.to_string())?;
                self.inner
                    .nft
                    .add(ip, remaining)
                    .await
                    .map(|()| format!("added to nftables set inet {}", self.inner.config.nft_table))
                    .map_err(|e| e.to_string())
            }
            Kind::HostDeny => self
                .inner
                .hosts
                .add(ip)
                .map(|_| {
                    format!(
                        "{} in {}",
                        hostdeny::deny_line(ip),
                        self.inner.config.hosts_deny_path.display()
                    )
                })
                .map_err(|e| e.to_string()),
            Kind::Script(path) => self.run_script(path, "add", ip, fields).await,
        }
    }

    async fn apply_delete(
        &self,
        kind: &Kind,
        ip: IpAddr,
        fields: &Fields,
    ) -> Result<String, String> {
        if self.inner.config.dry_run {
            return Ok(format!(
                "would {} (dry run: nothing changed)",
                Self::describe(kind, "delete")
            ));
        }
        match kind {
            Kind::RouteNull => self
                .inner
                .netlink
                .delete_null_route(ip)
                .await
                .map(|()| "route removed".to_owned())
                .map_err(|e| e.to_string()),
            Kind::FirewallDrop => {
                // No table: nothing of ours can be in force.
                let exists = self
                    .inner
                    .nft
                    .table_exists()
                    .await
                    .map_err(|e| e.to_string())?;
                if exists {
                    self.inner.nft.delete(ip).await.map_err(|e| e.to_string())?;
                }
                Ok(format!(
                    "removed from nftables set inet {}",
                    self.inner.config.nft_table
                ))
            }
            Kind::HostDeny => self
                .inner
                .hosts
                .delete(ip)
                .map(|_| {
                    format!(
                        "{} removed from {}",
                        hostdeny::deny_line(ip),
                        self.inner.config.hosts_deny_path.display()
                    )
                })
                .map_err(|e| e.to_string()),
            Kind::Script(path) => self.run_script(path, "delete", ip, fields).await,
        }
    }

    /// Runs a custom script with OSSEC's arguments; its summary either way.
    async fn run_script(
        &self,
        path: &std::path::Path,
        action: &str,
        ip: IpAddr,
        fields: &Fields,
    ) -> Result<String, String> {
        let run = script::run_script(
            path,
            action,
            &Self::script_args(ip, fields),
            self.inner.config.script_timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
        if run.success() {
            Ok(format!("{} ran: {}", path.display(), run.summary()))
        } else {
            Err(format!("{} failed: {}", path.display(), run.summary()))
        }
    }

    /// What an action does, in words, for dry-run results.
    fn describe(kind: &Kind, action: &str) -> String {
        match (kind, action) {
            (Kind::RouteNull, "add") => "add a null route".into(),
            (Kind::RouteNull, _) => "remove the null route".into(),
            (Kind::FirewallDrop, "add") => "add it to the nftables drop set".into(),
            (Kind::FirewallDrop, _) => "remove it from the nftables drop set".into(),
            (Kind::HostDeny, "add") => "add it to hosts.deny".into(),
            (Kind::HostDeny, _) => "remove it from hosts.deny".into(),
            (Kind::Script(path), a) => format!("run {} {a}", path.display()),
        }
    }

    fn program(&self, response: &str, kind: &Kind) -> String {
        match kind {
            Kind::Script(path) => path.display().to_string(),
            _ => arlog::builtin_program(response),
        }
    }

    async fn log_line(&self, response: &str, kind: &Kind, action: Action, ip: IpAddr, f: &Fields) {
        let line = arlog::line(
            &jiff::ZonedDateTime::now(),
            &self.program(response, kind),
            action.as_str(),
            &f.user,
            &ip.to_string(),
            &f.alert_id,
            &f.rule_id,
        );
        if let Err(e) = self.inner.arlog.append(&line).await {
            warn!(path = %self.inner.config.ar_log_path.display(), error = %e, "Cannot write active-responses.log.");
        }
    }

    async fn add(
        &self,
        order: &Order,
        ip: IpAddr,
        kind: &Kind,
        fields: &Fields,
    ) -> Result<String, Failure> {
        let response = order.response.as_str();
        let _guard = self.inner.locks.lock(response, ip).await;
        let ledger = &self.inner.ledger;
        let existing = ledger.get(response, ip).await.map_err(Failure::ledger)?;
        let now = now_ms();
        let new_expiry = order.timeout.map(|t| now.saturating_add(ms_of(t)));
        // Never shorten a block in force; None (no timeout) wins.
        let expiry = match &existing {
            Some(old) => match (old.expires_at, new_expiry) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            },
            None => new_expiry,
        };
        let remaining = expiry.map(|e| Duration::from_millis(u64::try_from(e - now).unwrap_or(0)));
        let extending = existing.is_some();
        let did = if extending && matches!(kind, Kind::Script(_)) {
            // OSSEC's execd does not run a script again for an address it holds.
            "script not run again".to_owned()
        } else {
            match self.apply_add(kind, ip, remaining, fields).await {
                Ok(did) => did,
                Err(e) => {
                    error!(%ip, command_id = %order.command_id, response, error = %e, "Block failed.");
                    return Err(Failure::Failed(format!("{response} {ip}: {e}")));
                }
            }
        };
        let new = ledger::NewBlock {
            response: response.to_owned(),
            srcip: ip,
            user: fields.user.clone(),
            alert_id: fields.alert_id.clone(),
            rule_id: order.rule_id,
            command_id: order.command_id.clone(),
            location: fields.location.clone(),
            expires_at: new_expiry,
        };
        let (block, _) = match ledger.record_add(&new, now).await {
            Ok(r) => r,
            Err(e) => {
                error!(%ip, command_id = %order.command_id, response, error = %e, "Block not recorded; undoing it.");
                if !extending && let Err(undo) = self.apply_delete(kind, ip, fields).await {
                    error!(%ip, response, error = %undo, "Undo after a ledger failure failed.");
                }
                return Err(Failure::ledger(e));
            }
        };
        self.inner.wake.notify_one();
        let until = match block.expires_at {
            Some(e) => format!("for {}s", (e - now + 999) / 1000),
            None => "with no timeout".to_owned(),
        };
        if extending {
            info!(%ip, command_id = %order.command_id, response, offences = block.offences, expires_at = ?block.expires_at, "Block extended.");
            Ok(format!(
                "{response} {ip}: already blocked, extended {until} (offence {}; {did})",
                block.offences
            ))
        } else {
            self.log_line(response, kind, Action::Add, ip, fields).await;
            info!(%ip, command_id = %order.command_id, response, expires_at = ?block.expires_at, "Blocked.");
            Ok(format!("{response} {ip}: blocked {until} ({did})"))
        }
    }

    async fn delete(
        &self,
        order: &Order,
        ip: IpAddr,
        kind: &Kind,
        fields: &Fields,
    ) -> Result<String, Failure> {
        let response = order.response.as_str();
        let _guard = self.inner.locks.lock(response, ip).await;
        let existing = self
            .inner
            .ledger
            .get(response, ip)
            .await
            .map_err(Failure::ledger)?;
        // A script's delete gets the arguments its add got.
        let fields = match &existing {
            Some(b) => Fields {
                user: b.user.clone(),
                alert_id: b.alert_id.clone(),
                rule_id: if b.rule_id == 0 {
                    "(no_rule_id)".into()
                } else {
                    b.rule_id.to_string()
                },
                location: b.location.clone(),
            },
            None => fields.clone(),
        };
        let did = match self.apply_delete(kind, ip, &fields).await {
            Ok(did) => did,
            Err(e) => {
                error!(%ip, command_id = %order.command_id, response, error = %e, "Unblock failed.");
                return Err(Failure::Failed(format!("{response} {ip}: {e}")));
            }
        };
        self.inner
            .ledger
            .remove(response, ip)
            .await
            .map_err(Failure::ledger)?;
        self.inner.wake.notify_one();
        self.log_line(response, kind, Action::Delete, ip, &fields)
            .await;
        info!(%ip, command_id = %order.command_id, response, was_blocked = existing.is_some(), "Unblocked.");
        Ok(match existing {
            Some(_) => format!("{response} {ip}: unblocked ({did})"),
            None => format!("{response} {ip}: was not in the ledger; undone anyway ({did})"),
        })
    }

    /// Undoes one ledger block whose time has come (or every block, for
    /// [`Responder::undo_all`]). Returns whether it was undone.
    async fn undo_block(&self, block: &Block, only_if_due: Option<i64>) -> bool {
        let _guard = self.inner.locks.lock(&block.response, block.srcip).await;
        // Re-read under the lock: an add may have extended it meanwhile.
        let current = match self.inner.ledger.get(&block.response, block.srcip).await {
            Ok(Some(b)) => b,
            Ok(None) => return false,
            Err(e) => {
                warn!(ip = %block.srcip, response = %block.response, error = %e, "Cannot read the ledger.");
                return false;
            }
        };
        if let Some(now) = only_if_due
            && current.expires_at.is_none_or(|e| e > now)
        {
            return false;
        }
        let fields = Fields {
            user: current.user.clone(),
            alert_id: current.alert_id.clone(),
            rule_id: if current.rule_id == 0 {
                "(no_rule_id)".into()
            } else {
                current.rule_id.to_string()
            },
            location: current.location.clone(),
        };
        let Some(kind) = self.kind_of(&current.response) else {
            // The command was removed from the configuration: nothing can
            // undo it, so say so once and forget it.
            error!(ip = %current.srcip, response = %current.response, "Cannot undo: the response is no longer configured; forgetting the block.");
            let _ = self
                .inner
                .ledger
                .remove(&current.response, current.srcip)
                .await;
            return false;
        };
        match self.apply_delete(&kind, current.srcip, &fields).await {
            Ok(_) => {
                if let Err(e) = self
                    .inner
                    .ledger
                    .remove(&current.response, current.srcip)
                    .await
                {
                    warn!(ip = %current.srcip, response = %current.response, error = %e, "Undone, but not removed from the ledger.");
                }
                self.log_line(
                    &current.response,
                    &kind,
                    Action::Delete,
                    current.srcip,
                    &fields,
                )
                .await;
                info!(ip = %current.srcip, response = %current.response, "Block lifted.");
                let why = if only_if_due.is_some() {
                    "block lifted at its timeout"
                } else {
                    "block lifted by the agent"
                };
                self.report_lifted(&current.command_id, why);
                true
            }
            Err(e) => {
                let retry = now_ms().saturating_add(ms_of(UNDO_RETRY));
                error!(ip = %current.srcip, response = %current.response, error = %e, "Undo failed; retrying later.");
                if let Err(le) = self
                    .inner
                    .ledger
                    .undo_failed(&current.response, current.srcip, retry, &e)
                    .await
                {
                    warn!(error = %le, "Cannot record the failed undo.");
                }
                false
            }
        }
    }

    /// Undoes every block whose expiry has passed; returns how many.
    pub async fn undo_expired(&self) -> Result<usize, LedgerError> {
        let now = now_ms();
        let mut n = 0;
        for block in self.inner.ledger.due(now).await? {
            if self.undo_block(&block, Some(now)).await {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Undoes every block in the ledger now (an operator's flush, or
    /// uninstalling). Not called on shutdown: blocks outlive the agent.
    pub async fn undo_all(&self) -> Result<usize, LedgerError> {
        let mut n = 0;
        for block in self.inner.ledger.list().await? {
            if self.undo_block(&block, None).await {
                n += 1;
            }
        }
        self.inner.wake.notify_one();
        Ok(n)
    }

    /// Makes the kernel and hosts.deny match the ledger: re-adds blocks
    /// still due that vanished, removes Palisade routes and set elements the
    /// ledger does not hold, never touches anything Palisade did not
    /// install. Call after [`Responder::undo_expired`].
    pub async fn reconcile(&self) -> StartReport {
        let mut report = StartReport::default();
        if self.inner.config.dry_run {
            // Nothing was ever installed.
            return report;
        }
        let blocks = match self.inner.ledger.list().await {
            Ok(b) => b,
            Err(e) => {
                report.errors.push(e.to_string());
                return report;
            }
        };
        let now = now_ms();
        let live: Vec<&Block> = blocks
            .iter()
            .filter(|b| b.state == BlockState::Active && b.expires_at.is_none_or(|e| e > now))
            .collect();
        self.reconcile_routes(&live, &mut report).await;
        self.reconcile_nft(&live, now, &mut report).await;
        for b in live.iter().filter(|b| b.response == HOST_DENY) {
            let _guard = self.inner.locks.lock(&b.response, b.srcip).await;
            match self.inner.hosts.add(b.srcip) {
                Ok(true) => {
                    info!(ip = %b.srcip, "hosts.deny line was missing; added again.");
                    report.hosts_deny_readded += 1;
                }
                Ok(false) => {}
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        report
    }

    async fn reconcile_routes(&self, live: &[&Block], report: &mut StartReport) {
        let kernel = match self.inner.netlink.palisade_routes().await {
            Ok(k) => k,
            Err(e) => {
                report.errors.push(e.to_string());
                return;
            }
        };
        let in_kernel: BTreeSet<IpAddr> = kernel.iter().map(|r| r.ip).collect();
        let wanted: BTreeSet<IpAddr> = live
            .iter()
            .filter(|b| b.response == ROUTE_NULL)
            .map(|b| b.srcip)
            .collect();
        for ip in in_kernel.difference(&wanted) {
            let _guard = self.inner.locks.lock(ROUTE_NULL, *ip).await;
            if matches!(self.inner.ledger.get(ROUTE_NULL, *ip).await, Ok(Some(_))) {
                continue; // added meanwhile
            }
            match self.inner.netlink.delete_null_route(*ip).await {
                Ok(()) => {
                    info!(%ip, "Removed a Palisade route the ledger does not hold.");
                    report.routes_removed += 1;
                }
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        for ip in wanted.difference(&in_kernel) {
            let _guard = self.inner.locks.lock(ROUTE_NULL, *ip).await;
            match self
                .inner
                .netlink
                .add_null_route(*ip, self.inner.config.route_type)
                .await
            {
                Ok(()) => {
                    info!(%ip, "Route of a block still due had vanished; added again.");
                    report.routes_readded += 1;
                }
                Err(e) => report.errors.push(e.to_string()),
            }
        }
    }

    async fn reconcile_nft(&self, live: &[&Block], now: i64, report: &mut StartReport) {
        let wanted: Vec<&&Block> = live
            .iter()
            .filter(|b| b.response == FIREWALL_DROP)
            .collect();
        let elements = match self.inner.nft.elements().await {
            Ok(e) => e,
            Err(e) => {
                // No nft at all is fine when nothing needs it.
                if !wanted.is_empty() {
                    report.errors.push(e.to_string());
                }
                return;
            }
        };
        if wanted.is_empty() && elements.is_empty() {
            return;
        }
        if let Err(e) = self.ensure_nft().await {
            report.errors.push(e.to_string());
            return;
        }
        let wanted_ips: BTreeSet<IpAddr> = wanted.iter().map(|b| b.srcip).collect();
        for ip in elements.keys().filter(|ip| !wanted_ips.contains(ip)) {
            let _guard = self.inner.locks.lock(FIREWALL_DROP, *ip).await;
            if matches!(self.inner.ledger.get(FIREWALL_DROP, *ip).await, Ok(Some(_))) {
                continue;
            }
            match self.inner.nft.delete(*ip).await {
                Ok(()) => {
                    info!(%ip, "Removed a set element the ledger does not hold.");
                    report.elements_removed += 1;
                }
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        for b in wanted.iter().filter(|b| !elements.contains_key(&b.srcip)) {
            let _guard = self.inner.locks.lock(FIREWALL_DROP, b.srcip).await;
            let remaining = b
                .expires_at
                .map(|e| Duration::from_millis(u64::try_from(e - now).unwrap_or(0)));
            match self.inner.nft.add(b.srcip, remaining).await {
                Ok(()) => {
                    info!(ip = %b.srcip, "Set element of a block still due had vanished; added again.");
                    report.elements_readded += 1;
                }
                Err(e) => report.errors.push(e.to_string()),
            }
        }
    }

    /// Start-up: undoes blocks that expired while the agent was down,
    /// reconciles, and starts the timer that lifts blocks at their expiry.
    /// The timer stops when `shutdown` is cancelled; blocks stay in force.
    pub async fn start(&self, shutdown: CancellationToken) -> (StartReport, JoinHandle<()>) {
        let expired = self.undo_expired().await;
        let mut report = self.reconcile().await;
        match expired {
            Ok(n) => report.expired_undone = n,
            Err(e) => report.errors.push(e.to_string()),
        }
        for e in &report.errors {
            warn!(error = %e, "Active-response reconciliation problem.");
        }
        info!(
            expired_undone = report.expired_undone,
            routes_readded = report.routes_readded,
            routes_removed = report.routes_removed,
            elements_readded = report.elements_readded,
            elements_removed = report.elements_removed,
            hosts_deny_readded = report.hosts_deny_readded,
            "Active responses reconciled."
        );
        (report, self.spawn_timer(shutdown))
    }

    /// The task that lifts each block at its expiry, from the ledger's
    /// explicit expiries; woken early whenever a block is added or removed.
    pub fn spawn_timer(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = match this.inner.ledger.next_expiry().await {
                    Ok(Some(at)) => {
                        Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0))
                    }
                    Ok(None) => TIMER_MAX_SLEEP,
                    Err(e) => {
                        warn!(error = %e, "Cannot read the ledger; timer retries.");
                        Duration::from_secs(5)
                    }
                };
                let wait = wait.min(TIMER_MAX_SLEEP);
                if !wait.is_zero() {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = this.inner.wake.notified() => continue,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                if shutdown.is_cancelled() {
                    break;
                }
                match this.undo_expired().await {
                    Ok(n) if n > 0 => debug!(lifted = n, "Expired blocks lifted."),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "Cannot read the ledger; timer retries."),
                }
                // Blocks whose undo failed are due again at once; do not spin.
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
            debug!("Active-response timer stopped; blocks stay in force.");
        })
    }
}

/// Why an order failed.
#[derive(Debug)]
enum Failure {
    Refused(Refusal),
    Failed(String),
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl Failure {
    fn ledger(e: LedgerError) -> Self {
        error!(error = %e, "Active-response ledger failed.");
        Self::Failed(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn commands_become_orders() {
        let c = Command {
            id: "c1".into(),
            response: "route-null".into(),
            action: CommandAction::Add as i32,
            srcip: "198.51.100.7".into(),
            user: String::new(),
            timeout_seconds: 600,
            alert_id: "1700000000.123".into(),
            rule_id: 31151,
            agent_id: "083".into(),
            location: "(web01) 10.0.0.5->/var/log/nginx/access.log".into(),
        };
        let o = Order::from(&c);
        assert_eq!(o.action, Some(Action::Add));
        assert_eq!(o.timeout, Some(Duration::from_secs(600)));
        let o = Order::from(&Command {
            timeout_seconds: 0,
            action: 7,
            ..c
        });
        assert_eq!(o.timeout, None);
        assert_eq!(o.action, None);
    }

    #[test]
    fn outcomes_become_results() {
        let at = jiff::Timestamp::from_millisecond(1_700_000_000_250).unwrap();
        let r = Outcome {
            command_id: "c1".into(),
            ok: false,
            message: "refused".into(),
            action: Some(Action::Delete),
            executed_at: at,
            refusal: None,
        }
        .to_proto();
        assert_eq!(r.action, CommandAction::Delete as i32);
        assert_eq!(r.executed_at.unwrap().seconds, 1_700_000_000);
        assert_eq!(r.executed_at.unwrap().nanos, 250_000_000);
        assert!(!r.ok);
    }

    #[test]
    fn argument_checks_follow_ossec() {
        assert!(valid_user("www-data"));
        assert!(valid_user("j.doe@example.com"));
        assert!(!valid_user("root;reboot"));
        assert!(!valid_user("a b"));
        assert!(valid_alert_id("1700000000.12345"));
        assert!(valid_alert_id("(from_the_server)"));
        assert!(!valid_alert_id("1 2"));
        assert!(!valid_location("x\ny"));
        assert!(valid_location("(web01) 10.0.0.5->/var/log/x"));
    }
}
