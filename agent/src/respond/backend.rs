//! The one interface every way of blocking an address implements
//! (`route-null`, `firewall-drop`, `host-deny`, custom scripts), and the
//! registry that names them. The responder around it owns what is the same
//! for all of them: validation, the safety checks, the ledger, the
//! per-block locks, timeouts, dry runs and `active-responses.log`. A new
//! backend is one file with one [`Backend`] implementation, one line in
//! [`registry`] and, if it has its own error type, one [`BackendError`]
//! variant.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use super::config::RespondConfig;
use super::hostdeny::{HostDeny, HostDenyError};
use super::ledger::{Block, Ledger};
use super::locks::KeyedLocks;
use super::netlink::{Netlink, NetlinkError, RouteNull};
use super::nft::{FirewallDrop, NftError};
use super::order::{Action, OssecArgs};
use super::script::{Script, ScriptError};

/// What an add or a delete acts on.
#[derive(Debug, Clone)]
pub struct Target {
    /// The address, parsed (and for an add, checked by the safety rules).
    pub ip: IpAddr,
    /// For an add: the time left until the block's expiry (None = no
    /// timeout). None for a delete.
    pub remaining: Option<Duration>,
    /// OSSEC's text arguments, validated.
    pub args: OssecArgs,
}

/// A backend failed to change the host.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// `route-null`.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// `firewall-drop`.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// `host-deny`.
    #[error(transparent)]
    HostDeny(#[from] HostDenyError),
    /// A custom script.
    #[error(transparent)]
    Script(#[from] ScriptError),
}

/// What start-up reconciliation did for one backend.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Blocks of the ledger missing from the host, applied again.
    pub readded: usize,
    /// Blocks of this backend on the host that the ledger does not hold,
    /// removed.
    pub removed: usize,
    /// What could not be reconciled.
    pub errors: Vec<BackendError>,
}

/// What a backend's reconciliation works from: the ledger's live blocks of
/// its response, and the locks and ledger to re-check under, since
/// commands may arrive while it runs.
#[derive(Debug)]
pub struct Reconcile<'a> {
    response: &'a str,
    live: Vec<&'a Block>,
    now_ms: i64,
    ledger: &'a Ledger,
    locks: &'a KeyedLocks,
}

impl<'a> Reconcile<'a> {
    pub(super) fn new(
        response: &'a str,
        live: Vec<&'a Block>,
        now_ms: i64,
        ledger: &'a Ledger,
        locks: &'a KeyedLocks,
    ) -> Self {
        Self {
            response,
            live,
            now_ms,
            ledger,
            locks,
        }
    }

    /// The blocks of this response in force (active, not expired).
    pub fn live(&self) -> &[&'a Block] {
        &self.live
    }

    /// Takes the lock of this response on `ip`; hold it while changing the
    /// host for that address.
    pub async fn lock(&self, ip: IpAddr) -> OwnedMutexGuard<()> {
        self.locks.lock(self.response, ip).await
    }

    /// Whether the ledger holds a block of this response for `ip` now (it
    /// may have been added since the live blocks were read). Call under the
    /// lock.
    pub async fn held(&self, ip: IpAddr) -> bool {
        matches!(self.ledger.get(self.response, ip).await, Ok(Some(_)))
    }

    /// The time left of a block (None = no timeout).
    pub fn remaining(&self, block: &Block) -> Option<Duration> {
        block
            .expires_at
            .map(|e| super::remaining_until(e, self.now_ms))
    }
}

/// One way of blocking an address.
#[async_trait::async_trait]
pub trait Backend: std::fmt::Debug + Send + Sync {
    /// The program `active-responses.log` names for this response.
    fn program(&self) -> String;

    /// What `action` would do, in words (dry-run results).
    fn describe(&self, action: Action) -> String;

    /// Whether an add for an address already blocked by this response is
    /// applied again. Built-ins are idempotent and re-applying heals a
    /// removed block (and gives an nft element its new timeout); OSSEC's
    /// execd does not run a script again for an address it holds.
    fn reapplies_on_extension(&self) -> bool {
        true
    }

    /// Blocks the target; says what was done.
    async fn add(&self, target: &Target) -> Result<String, BackendError>;

    /// Unblocks the target (success if it was not blocked); says what was
    /// done.
    async fn delete(&self, target: &Target) -> Result<String, BackendError>;

    /// At start: makes the host match the ledger's live blocks of this
    /// response, never touching what Palisade did not install. The default
    /// does nothing (a script's effects cannot be seen).
    async fn reconcile(&self, _cx: &Reconcile<'_>) -> Reconciled {
        Reconciled::default()
    }
}

/// A response name and the backend that carries it out.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The name commands use.
    pub name: String,
    /// Its backend.
    pub backend: Arc<dyn Backend>,
}

/// Every backend of this agent: the built-in ones (in the order start-up
/// reconciles them), then one per configured custom command.
pub fn registry(config: &RespondConfig, netlink: &Netlink) -> Vec<Registered> {
    let builtin: [(&str, Arc<dyn Backend>); 3] = [
        (
            RouteNull::NAME,
            Arc::new(RouteNull::new(netlink.clone(), config.route_type)),
        ),
        (
            FirewallDrop::NAME,
            Arc::new(FirewallDrop::new(&config.nft_table)),
        ),
        (
            HostDeny::NAME,
            Arc::new(HostDeny::new(&config.hosts_deny_path)),
        ),
    ];
    let scripts = config.commands.iter().map(|(name, path)| {
        let backend: Arc<dyn Backend> = Arc::new(Script::new(path, config.script_timeout));
        (name.as_str(), backend)
    });
    builtin
        .into_iter()
        .chain(scripts)
        .map(|(name, backend)| Registered {
            name: name.to_owned(),
            backend,
        })
        .collect()
}
