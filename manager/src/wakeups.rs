//! Waking this manager when another one on the same PostgreSQL database
//! records commands for agents whose streams this one holds, or removes
//! an agent or revokes a certificate (`store/notify.rs` sends the
//! notifications on commit).
//!
//! One listening connection per manager. What it hears is coalesced (a
//! burst of fan-outs is one look at the database, not one each) and
//! passed on: commands to [`deliver_on_wakeups`], which sends what is
//! pending for the agents held here through the same claim-then-send path
//! as a reconnect (no command goes out twice); revocations to the
//! revocation watch in `lib.rs`. Notifications can be lost while the
//! connection is down, so a lost connection counts as "everything may have
//! changed", and every [`SAFETY_NET`] the held agents' pending commands
//! are read anyway.
//!
//! On SQLite there is one manager: nothing listens, nothing wakes, and
//! the delivery task ends at once (the revocation watch keeps its poll).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::responder::Responder;
use crate::store::{AgentsWithCommands, Listener, Notice, Store, StoreError};

/// How often the pending commands of the agents held here are read even
/// without a notification (one may have been lost).
pub const SAFETY_NET: Duration = Duration::from_secs(5);
/// How long the listener waits before connecting again after an error.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Wakeups from other managers: live on PostgreSQL, silent on SQLite.
#[derive(Debug, Clone, Default)]
pub struct Wakeups {
    shared: Arc<Shared>,
    live: bool,
}

#[derive(Debug, Default)]
struct Shared {
    /// Whose commands to look at, gathered since the last look.
    pending: Mutex<Pending>,
    commands: Notify,
    revocations: Notify,
}

#[derive(Debug, Default)]
struct Pending {
    all: bool,
    agents: HashSet<String>,
}

impl Shared {
    fn commands_for(&self, agents: AgentsWithCommands) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            match agents {
                AgentsWithCommands::All => pending.all = true,
                AgentsWithCommands::These(ids) if !pending.all => pending.agents.extend(ids),
                AgentsWithCommands::These(_) => {}
            }
        }
        self.commands.notify_one();
    }

    /// Notifications may have been missed: look at everything.
    fn lost(&self) {
        self.commands_for(AgentsWithCommands::All);
        self.revocations.notify_one();
    }
}

impl Wakeups {
    /// Starts listening on PostgreSQL (a task that ends with `shutdown`);
    /// on SQLite, wakeups that never come.
    pub async fn start(store: &Store, shutdown: CancellationToken) -> Result<Self, StoreError> {
        let Some(listener) = store.listener().await? else {
            return Ok(Self::default());
        };
        let wakeups = Self {
            shared: Arc::default(),
            live: true,
        };
        tokio::spawn(listen(
            listener,
            wakeups.shared.clone(),
            store.origin(),
            shutdown,
        ));
        Ok(wakeups)
    }

    /// Whether other managers can wake this one (PostgreSQL).
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Waits until an agent is removed or a certificate revoked somewhere
    /// (or a notification may have been missed); never, on SQLite.
    pub async fn revoked(&self) {
        self.shared.revocations.notified().await;
    }

    /// Waits until commands were recorded elsewhere; returns whose (`None`:
    /// anyone's).
    async fn commands(&self) -> Option<Vec<String>> {
        self.shared.commands.notified().await;
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let taken = std::mem::take(&mut *pending);
        match taken.all {
            true => None,
            false => Some(taken.agents.into_iter().collect()),
        }
    }
}

async fn listen(
    mut listener: Listener,
    shared: Arc<Shared>,
    origin: u64,
    shutdown: CancellationToken,
) {
    loop {
        let notice = tokio::select! {
            _ = shutdown.cancelled() => return,
            notice = listener.next() => notice,
        };
        match notice {
            Ok(Notice::Commands {
                origin: Some(from), ..
            }) if from == origin => {
                // This manager's own fan-out, already delivered here.
            }
            Ok(Notice::Commands { agents, .. }) => shared.commands_for(agents),
            Ok(Notice::Revocations) => shared.revocations.notify_one(),
            Ok(Notice::Lost) => {
                warn!(
                    "The connection listening to the other managers dropped and was opened again; reading what is pending."
                );
                shared.lost();
            }
            Err(error) => {
                warn!(%error, "Cannot listen to the other managers; trying again.");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
                }
                shared.lost();
            }
        }
    }
}

/// Sends the commands other managers record for the agents held here, as
/// they are woken, and every [`SAFETY_NET`]; returns at once on SQLite.
pub async fn deliver_on_wakeups(
    wakeups: Wakeups,
    responder: Responder,
    shutdown: CancellationToken,
) {
    if !wakeups.is_live() {
        return;
    }
    let mut safety_net = tokio::time::interval(SAFETY_NET);
    safety_net.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let agents = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = safety_net.tick() => None,
            agents = wakeups.commands() => agents,
        };
        match responder.deliver_held(agents.as_deref()).await {
            Ok(0) => {}
            Ok(sent) if agents.is_none() => {
                info!(
                    sent,
                    "Pending commands delivered (safety net or missed wakeup)."
                )
            }
            Ok(sent) => debug!(sent, "Commands of other managers delivered."),
            Err(error) => warn!(%error, "Cannot deliver the commands other managers recorded."),
        }
    }
}
