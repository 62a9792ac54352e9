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
//! revocation watch in `lib.rs`; operators' restart requests to
//! [`restart_on_wakeups`]. Notifications can be lost while the
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
use crate::sessions::Sessions;
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
    /// Operators' restart requests heard, not yet passed on.
    restarts: Mutex<Vec<(AgentsWithCommands, String)>>,
    restart: Notify,
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
            Ok(Notice::Restarts {
                agents,
                requested_by,
            }) => {
                shared
                    .restarts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((agents, requested_by));
                shared.restart.notify_one();
            }
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

/// Asks the agents held here to restart when an operator asked another
/// manager (`palisadectl -R`); returns at once on SQLite. A request heard
/// while the listening connection was down is lost: restarts are for the
/// agents connected at that moment, and the operator sees which were asked.
pub async fn restart_on_wakeups(wakeups: Wakeups, sessions: Sessions, shutdown: CancellationToken) {
    if !wakeups.is_live() {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wakeups.shared.restart.notified() => {}
        }
        let requests = std::mem::take(
            &mut *wakeups
                .shared
                .restarts
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (agents, operator) in requests {
            let agents = match agents {
                AgentsWithCommands::All => sessions.connected_ids(),
                AgentsWithCommands::These(ids) => ids,
            };
            for agent in agents {
                if sessions.ask_to_restart(&agent, &operator).await {
                    info!(%agent, operator = %palisade_engine::escape::Escaped(&operator), "Asked the agent to restart, for an operator of another manager.");
                }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use super::*;
    use crate::cluster::{Cluster, ClusterConfig};
    use crate::responder::Targets;
    use crate::responder::testing::{Manager, block, received};
    use crate::store::NewResponse;
    use crate::store::testing::{Backend, TestDb};
    use palisade_proto::v1::manager_message::Kind;

    /// Managers A and B on one new PostgreSQL database, and agent `web01`
    /// registered through A (the database lives as long as the first).
    async fn pair_with_agent() -> (TestDb, Manager, Manager, String) {
        let db = TestDb::new(Backend::Postgres);
        let (a, b) = (Manager::new(&db).await, Manager::new(&db).await);
        let (agent, _) = a
            .store
            .add_agent("web01", "any", |_| Ok(("aa".to_string(), ())))
            .await
            .unwrap();
        (db, a, b, agent)
    }

    /// An operator's block asked of A reaches the agent B holds, once,
    /// woken by A's notification; an agent no manager holds is reported
    /// queued.
    #[tokio::test]
    #[cfg_attr(
        not(palisade_postgres),
        ignore = "needs PostgreSQL: PALISADE_TEST_POSTGRES=URL (scripts/pg-test-cluster; scripts/test sets it)"
    )]
    async fn a_block_asked_of_one_manager_reaches_the_agent_the_other_holds() {
        let (_db, mut a, b, agent) = pair_with_agent().await;
        let (offline, _) = a
            .store
            .add_agent("web02", "any", |_| Ok(("bb".to_string(), ())))
            .await
            .unwrap();
        let join = |m: &Manager, name: &str| {
            Cluster::join(
                m.store.clone(),
                name.into(),
                "127.0.0.1:1514",
                ClusterConfig::default(),
                Duration::from_secs(60),
            )
        };
        let cluster_a = join(&a, "a").await.unwrap();
        a.responder = a.responder.clone().with_cluster(cluster_a);
        let cluster_b = join(&b, "b").await.unwrap();
        cluster_b.take_lease(&agent, false).await.unwrap().unwrap();
        let mut at_b = b.hold(&agent);
        let shutdown = CancellationToken::new();
        let wakeups = Wakeups::start(&b.store, shutdown.clone()).await.unwrap();
        assert!(wakeups.is_live());
        let delivering = tokio::spawn(deliver_on_wakeups(
            wakeups,
            b.responder.clone(),
            shutdown.clone(),
        ));
        let outcome = a
            .responder
            .run("198.51.100.7", "route-null600", Targets::All)
            .await
            .unwrap();
        // web01: sent (B took it within the hand-off wait) or queued (B
        // was slower, on a loaded machine). web02: nobody holds it.
        assert!(outcome.queued_for.contains(&offline), "{outcome:?}");
        assert_eq!(outcome.sent_to.len() + outcome.queued_for.len(), 2);
        let mut got = Vec::new();
        while got.is_empty() {
            got = match tokio::time::timeout(Duration::from_secs(20), at_b.recv()).await {
                Ok(Some(Ok(m))) => match m.kind {
                    Some(Kind::Command(c)) => vec![c.id.parse::<i64>().unwrap()],
                    _ => vec![],
                },
                other => panic!("no command at B: {other:?}"),
            };
        }
        assert_eq!(got, outcome.command_ids[..1]);
        let row = a.store.response(got[0]).await.unwrap().unwrap();
        assert_eq!(row.status, "sent");
        shutdown.cancel();
        delivering.await.unwrap();
        assert!(received(&mut at_b).is_empty(), "sent once");
    }

    /// Both managers hold a stream of the agent (it is moving between
    /// them) and deliver its pending commands at the same moment: each
    /// command goes down exactly one stream.
    #[tokio::test]
    #[cfg_attr(
        not(palisade_postgres),
        ignore = "needs PostgreSQL: PALISADE_TEST_POSTGRES=URL (scripts/pg-test-cluster; scripts/test sets it)"
    )]
    async fn two_managers_racing_send_each_command_once() {
        let (_db, a, b, agent) = pair_with_agent().await;
        let (mut at_a, mut at_b) = (a.hold(&agent), b.hold(&agent));
        let commands: Vec<NewResponse> = (1..=40).map(|n| block(&agent, n)).collect();
        let recorded = a.store.insert_responses(&commands).await.unwrap();
        let (sent_a, sent_b) = tokio::join!(
            a.responder.deliver_held(None),
            b.responder.deliver_held(None)
        );
        let (sent_a, sent_b) = (sent_a.unwrap(), sent_b.unwrap());
        let (mut got_a, got_b) = (received(&mut at_a), received(&mut at_b));
        assert_eq!((got_a.len(), got_b.len()), (sent_a, sent_b));
        // Each in order on its stream.
        assert!(got_a.is_sorted() && got_b.is_sorted());
        got_a.extend(got_b);
        got_a.sort_unstable();
        let ids: Vec<i64> = recorded.iter().map(|r| r.id).collect();
        assert_eq!(got_a, ids, "every command once");
        assert!(a.store.still_pending(&ids).await.unwrap().is_empty());
    }

    /// An unblock asked of the manager holding the agent while another
    /// manager's block still waits to be taken: the agent gets the delete
    /// and never the add after it (which would block again what the
    /// operator lifted, until its timeout).
    #[tokio::test]
    #[cfg_attr(
        not(palisade_postgres),
        ignore = "needs PostgreSQL: PALISADE_TEST_POSTGRES=URL (scripts/pg-test-cluster; scripts/test sets it)"
    )]
    async fn an_unblock_overtaking_a_block_still_waiting_cancels_it() {
        let (_db, a, b, agent) = pair_with_agent().await;
        let mut at_b = b.hold(&agent);
        let add = a.store.insert_responses(&[block(&agent, 9)]).await.unwrap();
        let outcome = b
            .responder
            .unblock("203.0.113.9", Targets::All)
            .await
            .unwrap();
        assert_eq!(outcome.sent_to, std::slice::from_ref(&agent));
        // What B's wake-up task would do next.
        assert_eq!(b.responder.deliver_held(None).await.unwrap(), 0);
        assert_eq!(received(&mut at_b), outcome.command_ids);
        let add = a.store.response(add[0].id).await.unwrap().unwrap();
        assert_eq!(add.status, "superseded");
    }

    /// A command whose notification was missed (pending without one)
    /// is delivered once the listener's connection is lost and found
    /// again (or, at the latest, by the safety net).
    #[tokio::test]
    #[cfg_attr(
        not(palisade_postgres),
        ignore = "needs PostgreSQL: PALISADE_TEST_POSTGRES=URL (scripts/pg-test-cluster; scripts/test sets it)"
    )]
    async fn a_command_whose_wakeup_was_missed_is_still_delivered() {
        let (_db, a, b, agent) = pair_with_agent().await;
        let mut at_b = b.hold(&agent);
        let shutdown = CancellationToken::new();
        let wakeups = Wakeups::start(&b.store, shutdown.clone()).await.unwrap();
        let delivering = tokio::spawn(deliver_on_wakeups(
            wakeups,
            b.responder.clone(),
            shutdown.clone(),
        ));
        // Recorded as A's own (no notification), then pending behind the
        // store's back: as if its notification had been lost.
        let row = a
            .store
            .insert_responses_claiming(&[block(&agent, 1)], |_| true)
            .await
            .unwrap()
            .remove(0);
        let sql = "UPDATE responses SET status = 'pending', sent_at = NULL WHERE id = $1";
        assert_eq!(a.store.execute_for_test(sql, row.id).await, 1);
        let sql = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                   WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> $1";
        assert_eq!(a.store.execute_for_test(sql, 0).await, 1);
        let got = loop {
            match tokio::time::timeout(Duration::from_secs(20), at_b.recv()).await {
                Ok(Some(Ok(m))) => {
                    if let Some(Kind::Command(c)) = m.kind {
                        break c.id.parse::<i64>().unwrap();
                    }
                }
                other => panic!("no command at B: {other:?}"),
            }
        };
        assert_eq!(got, row.id);
        shutdown.cancel();
        delivering.await.unwrap();
    }
}
