//! Wakeups between managers that share one PostgreSQL database.
//!
//! Every manager holds the streams of some agents; a command recorded on
//! one manager for an agent held by another must reach it at once, and a
//! removal or revocation must end streams on every manager. The command
//! and the revocation are durable rows; PostgreSQL's `NOTIFY`, issued in
//! the transaction that writes them, only says "look again" and fires on
//! commit (never before the rows are visible, never for a rolled-back
//! write). A notification can be lost (the listening connection drops), so
//! the listener reports that ([`Notice::Lost`]) and its user reads what is
//! pending then, besides a periodic read as a safety net.
//!
//! SQLite has one manager and nobody to wake: no notification is sent and
//! [`Store::listener`] is `None`.
//!
//! Payloads are small (PostgreSQL caps them at 8,000 bytes): for commands
//! `ORIGIN|IDS`, the recording manager's [`Store::origin`] (its own
//! fan-out already delivered to the agents it holds; 0 for none) and the
//! target agents, comma-separated, or `*` for "every agent" when the list
//! is long. Revocations are notified by the database's revocation trigger
//! (`migrations/postgres/0080_wakeups.sql`), whoever writes them (also
//! `agent remove` in another process).

use std::collections::HashSet;

use sqlx::postgres::{PgListener, PgPoolOptions};

use super::backend::Pool;
use super::{Store, StoreError};

/// The channel of newly recorded (or released) commands.
pub const RESPONSES_CHANNEL: &str = "palisade_responses";
/// The channel of revocations (agents removed, certificates revoked).
pub const REVOCATIONS_CHANNEL: &str = "palisade_revocations";
/// The channel of operators' restart requests for agents another manager
/// holds (`palisadectl -R`); not durable: a restart is for agents
/// connected now.
pub const RESTARTS_CHANNEL: &str = "palisade_restarts";
/// The longest list of agent ids sent; longer lists become `*`.
const MAX_AGENT_LIST: usize = 4000;

/// The payload of a [`RESPONSES_CHANNEL`] notification.
pub(crate) fn responses_payload<'a>(
    origin: u64,
    agents: impl IntoIterator<Item = &'a str>,
) -> String {
    format!("{origin:x}|{}", agent_list(agents))
}

/// The payload of a [`RESTARTS_CHANNEL`] notification: `IDS|OPERATOR`.
fn restarts_payload<'a>(agents: impl IntoIterator<Item = &'a str>, operator: &str) -> String {
    let operator: String = operator.chars().take(256).collect();
    format!("{}|{operator}", agent_list(agents))
}

/// Agent ids, comma-separated, or `*` when the list would be long.
fn agent_list<'a>(agents: impl IntoIterator<Item = &'a str>) -> String {
    let mut list = String::new();
    let mut seen = HashSet::new();
    for agent in agents {
        if !seen.insert(agent) {
            continue;
        }
        if list.len() + agent.len() + 1 > MAX_AGENT_LIST {
            list = "*".into();
            break;
        }
        if !list.is_empty() {
            list.push(',');
        }
        list.push_str(agent);
    }
    list
}

/// Which agents have new commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentsWithCommands {
    /// Every agent (a long list, or a payload not understood).
    All,
    /// These agents.
    These(Vec<String>),
}

/// What a listener heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Commands were recorded (or handed back) for agents.
    Commands {
        /// The manager that recorded them and already delivered to the
        /// agents it holds ([`Store::origin`]); `None` when every holder
        /// should look.
        origin: Option<u64>,
        /// Whose commands.
        agents: AgentsWithCommands,
    },
    /// An operator asked agents to restart.
    Restarts {
        /// Whose (`All`: every agent held here).
        agents: AgentsWithCommands,
        /// The operator, for the log and the agent.
        requested_by: String,
    },
    /// An agent was removed or a certificate revoked.
    Revocations,
    /// The connection dropped (and was opened again, or will be at the
    /// next call): notifications may have been missed.
    Lost,
}

fn parse_commands(payload: &str) -> Notice {
    let (origin, list) = payload.split_once('|').unwrap_or(("0", "*"));
    let origin = u64::from_str_radix(origin, 16).ok().filter(|o| *o != 0);
    Notice::Commands {
        origin,
        agents: parse_agents(list),
    }
}

fn parse_restarts(payload: &str) -> Notice {
    let (list, operator) = payload.split_once('|').unwrap_or((payload, ""));
    Notice::Restarts {
        agents: parse_agents(list),
        requested_by: operator.to_string(),
    }
}

fn parse_agents(list: &str) -> AgentsWithCommands {
    match list {
        "*" => AgentsWithCommands::All,
        list => AgentsWithCommands::These(
            list.split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        ),
    }
}

/// A connection listening on [`RESPONSES_CHANNEL`],
/// [`REVOCATIONS_CHANNEL`] and [`RESTARTS_CHANNEL`], of its own (not one
/// of the store's pool).
#[derive(Debug)]
pub struct Listener {
    inner: PgListener,
}

impl Listener {
    /// Waits for the next notice. After an error the caller waits a moment
    /// and calls again (which connects again).
    pub async fn next(&mut self) -> Result<Notice, StoreError> {
        let Some(notification) = self.inner.try_recv().await? else {
            return Ok(Notice::Lost);
        };
        Ok(match notification.channel() {
            REVOCATIONS_CHANNEL => Notice::Revocations,
            RESTARTS_CHANNEL => parse_restarts(notification.payload()),
            _ => parse_commands(notification.payload()),
        })
    }
}

impl Store {
    /// A listener for other managers' notifications; `None` on SQLite,
    /// where there are none.
    pub async fn listener(&self) -> Result<Option<Listener>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        // One connection, kept open and opened again when it drops.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with((*pool.connect_options()).clone())
            .await?;
        let mut inner = PgListener::connect_with(&own).await?;
        inner.ignore_pool_close_event(true);
        inner
            .listen_all([RESPONSES_CHANNEL, REVOCATIONS_CHANNEL, RESTARTS_CHANNEL])
            .await?;
        Ok(Some(Listener { inner }))
    }

    /// Asks the other managers to restart those of `agents` whose streams
    /// they hold ([`RESTARTS_CHANNEL`]); nothing on SQLite.
    pub async fn notify_restarts(&self, agents: &[&str], operator: &str) -> Result<(), StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(RESTARTS_CHANNEL)
            .bind(restarts_payload(agents.iter().copied(), operator))
            .execute(pool)
            .await?;
        Ok(())
    }

    /// This store's (this manager process's) id in notifications.
    pub fn origin(&self) -> u64 {
        self.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_the_agents_or_all_of_them() {
        let p = responses_payload(0xab, ["001", "002", "001"]);
        assert_eq!(p, "ab|001,002");
        assert_eq!(
            parse_commands(&p),
            Notice::Commands {
                origin: Some(0xab),
                agents: AgentsWithCommands::These(vec!["001".into(), "002".into()]),
            }
        );
        let ids: Vec<String> = (0..2000).map(|i| format!("{i:05}")).collect();
        let p = responses_payload(0, ids.iter().map(String::as_str));
        assert_eq!(p, "0|*");
        assert_eq!(
            parse_commands(&p),
            Notice::Commands {
                origin: None,
                agents: AgentsWithCommands::All,
            }
        );
        let p = restarts_payload(["001", "002"], "alice|ops");
        assert_eq!(
            parse_restarts(&p),
            Notice::Restarts {
                agents: AgentsWithCommands::These(vec!["001".into(), "002".into()]),
                requested_by: "alice|ops".into(),
            }
        );
        // Not ours: every agent looks.
        assert!(matches!(
            parse_commands("garbage"),
            Notice::Commands {
                agents: AgentsWithCommands::All,
                ..
            }
        ));
    }

    /// Two managers' stores on one database: each hears what the other
    /// records, on commit, and a removal by either.
    #[tokio::test]
    #[cfg_attr(
        not(palisade_postgres),
        ignore = "needs PostgreSQL: PALISADE_TEST_POSTGRES=URL (scripts/pg-test-cluster; scripts/test sets it)"
    )]
    async fn two_managers_stores_hear_each_others_commands_and_revocations() {
        use crate::store::testing::{Backend, TestDb};

        let db = TestDb::new(Backend::Postgres);
        let (a, b) = (db.open().await, db.open().await);
        assert_ne!(a.origin(), b.origin());
        let mut heard_by_b = b.listener().await.unwrap().expect("PostgreSQL listens");
        let mut heard_by_a = a.listener().await.unwrap().expect("PostgreSQL listens");
        let (agent, _) = a
            .add_agent("web01", "any", |_| Ok(("aa".to_string(), ())))
            .await
            .unwrap();
        let block = crate::responder::testing::block(&agent, 7);
        let row = a.insert_response(&block).await.unwrap();
        let expected = Notice::Commands {
            origin: Some(a.origin()),
            agents: AgentsWithCommands::These(vec![agent.clone()]),
        };
        assert_eq!(heard_by_b.next().await.unwrap(), expected);
        // The recorder hears itself too (and knows it by the origin).
        assert_eq!(heard_by_a.next().await.unwrap(), expected);

        // B claims and cannot send: A hears it handed back, for anyone.
        assert_eq!(b.claim_responses(&[row.id]).await.unwrap(), [row.id]);
        assert!(a.claim_responses(&[row.id]).await.unwrap().is_empty());
        b.release_responses(&[&row]).await.unwrap();
        let handed_back = Notice::Commands {
            origin: None,
            agents: AgentsWithCommands::These(vec![agent.clone()]),
        };
        assert_eq!(heard_by_a.next().await.unwrap(), handed_back);
        assert_eq!(a.still_pending(&[row.id]).await.unwrap(), [row.id]);
        assert_eq!(a.claim_responses(&[row.id]).await.unwrap(), [row.id]);
        assert!(a.still_pending(&[row.id]).await.unwrap().is_empty());

        // An operator's restart asked of B, for the agent A holds.
        b.notify_restarts(&[agent.as_str()], "alice").await.unwrap();
        let restart = Notice::Restarts {
            agents: AgentsWithCommands::These(vec![agent.clone()]),
            requested_by: "alice".into(),
        };
        assert_eq!(heard_by_a.next().await.unwrap(), restart);

        // A removal on B (the trigger notifies, whoever writes).
        b.remove_agent(&agent, "test").await.unwrap();
        assert_eq!(heard_by_a.next().await.unwrap(), Notice::Revocations);
    }

    /// The listening connection is killed: the listener says so (or
    /// fails once, then says so), listens again, and hears what follows.
    #[tokio::test]
    #[cfg_attr(
        not(palisade_postgres),
        ignore = "needs PostgreSQL: PALISADE_TEST_POSTGRES=URL (scripts/pg-test-cluster; scripts/test sets it)"
    )]
    async fn a_listener_whose_connection_dies_says_so_and_listens_again() {
        use crate::store::testing::{Backend, TestDb};

        let db = TestDb::new(Backend::Postgres);
        let s = db.open().await;
        let mut listener = s.listener().await.unwrap().unwrap();
        let killed = s
            .execute_for_test(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> $1",
                0,
            )
            .await;
        assert_eq!(killed, 1, "the listening connection");
        match listener.next().await {
            Ok(Notice::Lost) => {}
            Err(_) => assert_eq!(listener.next().await.unwrap(), Notice::Lost),
            Ok(other) => panic!("{other:?}"),
        }
        let (agent, _) = s
            .add_agent("web01", "any", |_| Ok(("aa".to_string(), ())))
            .await
            .unwrap();
        s.remove_agent(&agent, "test").await.unwrap();
        assert_eq!(listener.next().await.unwrap(), Notice::Revocations);
    }
}
