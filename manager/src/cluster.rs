//! Several managers on one database (active-active): this manager's
//! identity in it, its heartbeat, and the agents' leases.
//!
//! Each manager has a row in `managers` (found again by `[manager] name`
//! when it restarts) and refreshes it every `heartbeat_interval`; one
//! silent for `dead_after` is dead. An agent has at most one live stream in
//! the whole cluster: the manager accepting a stream takes the agent's
//! lease in the database ([`crate::store::Store::take_lease`]: free, its
//! own, held by a dead manager, or by one that has not heard the agent
//! within the agent timeout) under a new fencing generation, which every
//! batch commit of the stream checks. A stream whose lease another manager
//! took ends: at its next commit (refused), or at the next heartbeat here,
//! which compares the leases held in the database with the open streams.
//! A clean stream end releases the lease, a clean shutdown all of them.
//! On SQLite (one manager) the same code runs and always wins.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_common::config::Problems;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::grouped::{GroupWork, Grouped};
use crate::heartbeats::FLUSH_EVERY;
use crate::sessions::Sessions;
use crate::stats::Stats;
use crate::store::{Lease, LeaseHeld, LeaseRequest, ManagerRow, Store, StoreError, now_ms};

/// How often a manager says it is alive, by default.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// A manager silent this long is dead, by default.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(10);
/// How often a starting manager looks at the heartbeat of a namesake.
const NAMESAKE_POLL: Duration = Duration::from_millis(100);
/// How much longer than two heartbeat intervals it watches.
const NAMESAKE_MARGIN: Duration = Duration::from_millis(500);
/// The window of the rates a manager publishes.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// `[manager]` as written in manager.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// This manager's name among the managers on one database (default:
    /// the host name).
    pub name: Option<String>,
    /// How often it says it is alive.
    pub heartbeat_interval: Option<String>,
    /// A manager silent this long is dead (its agents may move).
    pub dead_after: Option<String>,
}

/// The validated `[manager]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This manager's name; `None`: the host name.
    pub name: Option<String>,
    /// How often it says it is alive.
    pub heartbeat_interval: Duration,
    /// A manager silent this long is dead.
    pub dead_after: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            dead_after: DEFAULT_DEAD_AFTER,
        }
    }
}

/// Checks `[manager]`; problems go to `errors`, each naming its key.
pub fn compile(raw: RawCluster, errors: &mut Problems) -> ClusterConfig {
    let mut config = ClusterConfig::default();
    if let Some(name) = raw.name {
        if palisade_proto::identity::is_valid_name(&name) {
            config.name = Some(name);
        } else {
            errors.push(
                "manager.name",
                format!("{name:?} is not a valid name (A-Z a-z 0-9 . _ -)"),
            );
        }
    }
    let mut duration = |key: &str, value: Option<String>, default: Duration| match value {
        None => default,
        Some(v) => match palisade_common::units::parse_duration(&v) {
            Ok(d) if d >= Duration::from_millis(100) => d,
            Ok(_) => {
                errors.push(key, format!("{v:?} is below the least, 100ms"));
                default
            }
            Err(e) => {
                errors.push(key, e);
                default
            }
        },
    };
    config.heartbeat_interval = duration(
        "manager.heartbeat_interval",
        raw.heartbeat_interval,
        DEFAULT_HEARTBEAT_INTERVAL,
    );
    config.dead_after = duration("manager.dead_after", raw.dead_after, DEFAULT_DEAD_AFTER);
    if config.dead_after < config.heartbeat_interval * 2 {
        errors.push(
            "manager.dead_after",
            format!(
                "{:?} is less than two heartbeat intervals ({:?}): a live manager would be taken for dead",
                config.dead_after, config.heartbeat_interval
            ),
        );
    }
    config
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// This manager in the cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    store: Store,
    /// Its row's id, the holder named in its leases.
    id: i64,
    /// Its name.
    name: String,
    config: ClusterConfig,
    /// An agent its holder has not heard for this long may be taken over.
    agent_timeout: Duration,
    /// Streams' lease takes, committed together (a reconnect storm).
    leases: Grouped<Leases>,
}

/// One stream's lease take, as [`Grouped`] queues it.
struct LeaseAsk {
    agent_id: String,
    takeover: bool,
}

/// Commits lease takes in groups.
struct Leases {
    store: Store,
    manager: i64,
    dead_after_ms: i64,
    silent_after_ms: i64,
}

impl Leases {
    fn request<'a>(&self, ask: &'a LeaseAsk) -> LeaseRequest<'a> {
        LeaseRequest {
            agent_id: &ask.agent_id,
            manager: self.manager,
            dead_after_ms: self.dead_after_ms,
            silent_after_ms: self.silent_after_ms,
            takeover: ask.takeover,
        }
    }
}

impl GroupWork for Leases {
    type Item = LeaseAsk;
    type Output = Result<Lease, LeaseHeld>;

    async fn run_group(&self, items: &[LeaseAsk]) -> Result<Vec<Self::Output>, StoreError> {
        let requests: Vec<LeaseRequest<'_>> = items.iter().map(|a| self.request(a)).collect();
        self.store.take_leases(&requests).await
    }

    async fn run_one(&self, item: &LeaseAsk) -> Result<Self::Output, StoreError> {
        self.store.take_lease(&self.request(item)).await
    }
}

impl Cluster {
    /// Records this manager (`name`, listening on `address`) in the
    /// database. A row of the same name that beat within `dead_after` is
    /// said at WARN: another live manager with this name would share its
    /// leases.
    pub async fn join(
        store: Store,
        name: String,
        address: &str,
        config: ClusterConfig,
        agent_timeout: Duration,
    ) -> Result<Self, StoreError> {
        if let Some(other) = Self::namesake(&store, &name, &config).await? {
            return Err(StoreError::Conflict(format!(
                "another manager named {name:?} is running on this database (address {}, still saying it is alive): give each manager its own [manager] name",
                other.address
            )));
        }
        let (id, _) = store
            .register_manager(&name, address, env!("CARGO_PKG_VERSION"))
            .await?;
        info!(manager = %name, id, "Joined the managers on this database.");
        let leases = Grouped::new(Leases {
            store: store.clone(),
            manager: id,
            dead_after_ms: millis(config.dead_after),
            silent_after_ms: millis(agent_timeout + FLUSH_EVERY),
        });
        Ok(Self {
            store,
            id,
            name,
            config,
            agent_timeout,
            leases,
        })
    }

    /// Another live process using `name`: its row says it is alive and
    /// its heartbeat moves on while this one watches for two heartbeat
    /// intervals. `None` when there is no row, it stopped cleanly, or its
    /// heartbeat stands still: this manager's own last run, killed
    /// moments ago (which costs a restart that wait). Two processes of one
    /// name would share one row and its leases, so one agent could have a
    /// live stream on each. Not looked for on SQLite: one manager, which
    /// restarts without the wait.
    async fn namesake(
        store: &Store,
        name: &str,
        config: &ClusterConfig,
    ) -> Result<Option<ManagerRow>, StoreError> {
        if !store.is_postgres() {
            return Ok(None);
        }
        let named = |rows: Vec<ManagerRow>| rows.into_iter().find(|m| m.name == name);
        let Some(seen) = named(store.managers().await?)
            .filter(|m| m.is_alive(now_ms(), millis(config.dead_after)))
        else {
            return Ok(None);
        };
        info!(manager = %name, "A manager of this name said it was alive moments ago; watching its heartbeat before joining.");
        let deadline =
            tokio::time::Instant::now() + config.heartbeat_interval * 2 + NAMESAKE_MARGIN;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(NAMESAKE_POLL).await;
            match named(store.managers().await?) {
                Some(row) if row.stopped_at.is_some() => return Ok(None),
                Some(row) if row.heartbeat_at != seen.heartbeat_at => return Ok(Some(row)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
        info!(manager = %name, "Its heartbeat stood still: this manager's last run; taking its place.");
        Ok(None)
    }

    /// Its id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A manager silent this long is dead (ms).
    pub fn dead_after_ms(&self) -> i64 {
        millis(self.config.dead_after)
    }

    /// How long a holder may not have recorded hearing an agent before
    /// the agent counts as silent (ms): the agent timeout, plus the time
    /// the holder takes to write what it heard ([`FLUSH_EVERY`]).
    pub fn silent_after_ms(&self) -> i64 {
        millis(self.agent_timeout + FLUSH_EVERY)
    }

    /// Takes `agent_id`'s lease for a new stream (`takeover`: whoever
    /// holds it), in one transaction with the other streams asking at the
    /// same moment; `Err` names the live holder.
    pub async fn take_lease(
        &self,
        agent_id: &str,
        takeover: bool,
    ) -> Result<Result<Lease, LeaseHeld>, StoreError> {
        self.leases
            .submit(LeaseAsk {
                agent_id: agent_id.to_string(),
                takeover,
            })
            .await
    }

    /// Releases the lease a stream that ended cleanly held.
    pub async fn release_lease(&self, agent_id: &str, generation: u64) {
        if let Err(error) = self.store.release_lease(agent_id, generation).await {
            warn!(agent = %agent_id, %error, "Cannot release the agent's lease; another manager takes it once this one is dead or the agent silent.");
        }
    }

    /// Whether `row` (a manager) is alive now.
    pub fn is_alive(&self, row: &ManagerRow) -> bool {
        row.is_alive(now_ms(), self.dead_after_ms())
    }

    /// Says it is alive every `heartbeat_interval` with its last minute's
    /// counts, and ends the streams whose lease another manager took, until
    /// `shutdown`; then releases its leases and says it stopped.
    pub async fn run(self, sessions: Sessions, stats: Arc<Stats>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut window = Window::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let (events, alerts) = window.sample(
                now_ms(),
                stats.events_received.load(Ordering::Relaxed),
                stats.alerts(),
            );
            if let Err(error) = self.store.manager_heartbeat(self.id, events, alerts).await {
                warn!(%error, "Cannot record this manager's heartbeat; other managers take it for dead if this lasts.");
                continue;
            }
            self.end_lost_leases(&sessions).await;
        }
    }

    /// After the streams have ended: releases every lease still held and
    /// records the clean stop.
    pub async fn leave(&self) {
        match self.store.manager_stopped(self.id).await {
            Ok(released) => info!(leases = released, "Left the managers on this database."),
            Err(error) => {
                warn!(%error, "Cannot record this manager's stop; other managers take it for dead.")
            }
        }
    }

    /// Ends the open streams whose lease is no longer this manager's.
    async fn end_lost_leases(&self, sessions: &Sessions) {
        let open = sessions.leases();
        if open.is_empty() {
            return;
        }
        let held: HashMap<String, u64> = match self.store.held_leases(self.id).await {
            Ok(held) => held.into_iter().collect(),
            Err(error) => {
                warn!(%error, "Cannot read the leases this manager holds.");
                return;
            }
        };
        // Read again, together: those streams may have taken their lease
        // after the read above (in a reconnect storm, thousands of them).
        let unsure: Vec<(String, u64)> = open
            .into_iter()
            .filter(|(agent, generation)| held.get(agent) != Some(generation))
            .collect();
        if unsure.is_empty() {
            return;
        }
        let ids: Vec<&str> = unsure.iter().map(|(agent, _)| agent.as_str()).collect();
        let records = match self.store.agents_by_id(&ids).await {
            Ok(records) => records,
            Err(error) => {
                warn!(%error, "Cannot read the leases of the agents whose streams are here.");
                return;
            }
        };
        for ((agent, generation), record) in unsure.iter().zip(records) {
            let Some(record) = record else { continue };
            if record.lease_manager == Some(self.id) && record.lease_generation == *generation {
                continue;
            }
            let why = format!(
                "another stream of agent {agent} took its lease (generation {}); this one ends",
                record.lease_generation
            );
            if sessions.end_lost_lease(agent, *generation, &why) {
                warn!(%agent, generation, now = record.lease_generation, "The agent's stream here lost its lease to another stream (another manager); ended it.");
            }
        }
    }
}

/// Counts sampled at each heartbeat, to publish those of the last minute.
#[derive(Debug, Default)]
struct Window {
    /// `(ms, events, alerts)`, oldest first, spanning about a minute.
    samples: VecDeque<(i64, u64, u64)>,
}

impl Window {
    /// Adds a sample; returns the events and alerts since the oldest
    /// sample within the window (since start, in the first minute).
    fn sample(&mut self, now: i64, events: u64, alerts: u64) -> (u64, u64) {
        self.samples.push_back((now, events, alerts));
        let horizon = now - millis(RATE_WINDOW);
        // Keep one sample at or before the horizon: the minute's start.
        while self.samples.len() > 1 && self.samples[1].0 <= horizon {
            self.samples.pop_front();
        }
        let (_, e0, a0) = self.samples[0];
        (events.saturating_sub(e0), alerts.saturating_sub(a0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::{EndReason, NewStream};
    use crate::store::testing::both_backends;

    both_backends! {
        async fn a_stream_whose_lease_another_manager_took_is_ended(db) {
            let store = db.open().await;
            let (agent, ()) = store
                .add_agent("web01", "any", |_| Ok(("aa".to_string(), ())))
                .await
                .unwrap();
            let join = |name: &str| {
                Cluster::join(
                    store.clone(),
                    name.to_string(),
                    "192.0.2.1:1514",
                    ClusterConfig::default(),
                    Duration::from_secs(60),
                )
            };
            let (a, b) = (join("a").await.unwrap(), join("b").await.unwrap());
            let sessions = Sessions::default();
            let (tx, _rx) = tokio::sync::mpsc::channel(1);
            let stream = NewStream {
                agent_id: &agent,
                serial: "aa",
                address: None,
                stale_after: Duration::from_secs(60),
                takeover: false,
            };
            let (guard, _) = sessions.register(stream, tx, &CancellationToken::new()).unwrap();
            let lease = a.take_lease(&agent, false).await.unwrap().unwrap();
            guard.set_lease(lease.generation);
            // Still a's: the stream stays.
            a.end_lost_leases(&sessions).await;
            assert!(!guard.token.is_cancelled());
            // b takes it (the renewed certificate's takeover): a ends its
            // stream at its next heartbeat.
            b.take_lease(&agent, true).await.unwrap().unwrap();
            a.end_lost_leases(&sessions).await;
            assert!(guard.token.is_cancelled());
            assert!(matches!(guard.reason(), Some(EndReason::LeaseLost(_))));
            assert!(!sessions.is_connected(&agent));
            // A clean stop lets b's lease be; a's own are released.
            a.leave().await;
            assert!(store.agent(&agent).await.unwrap().unwrap().lease_manager == Some(b.id()));
            let managers = store.managers().await.unwrap();
            assert!(managers.iter().any(|m| m.name == "a" && m.stopped_at.is_some()));
        }
    }

    #[tokio::test]
    #[cfg_attr(
        not(palisade_postgres),
        ignore = "needs PostgreSQL: PALISADE_TEST_POSTGRES=URL (scripts/pg-test-cluster; scripts/test sets it)"
    )]
    async fn a_second_manager_of_one_name_is_refused_a_restarted_one_is_not() {
        let db = crate::store::testing::TestDb::new(crate::store::testing::Backend::Postgres);
        let config = ClusterConfig {
            heartbeat_interval: Duration::from_millis(100),
            ..ClusterConfig::default()
        };
        let join = |store: Store, name: &str| {
            Cluster::join(
                store,
                name.to_string(),
                "192.0.2.1:1514",
                config.clone(),
                Duration::from_secs(60),
            )
        };
        let (first_store, second_store) = (db.open().await, db.open().await);
        let first = join(first_store.clone(), "a").await.unwrap();
        let shutdown = CancellationToken::new();
        let beating = tokio::spawn(first.clone().run(
            Sessions::default(),
            Arc::new(Stats::default()),
            shutdown.clone(),
        ));
        let refused = join(second_store.clone(), "a").await.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("give each manager its own [manager] name"),
            "{refused}"
        );
        // A manager killed moments ago: its row says alive, its
        // heartbeat stands still; its next run takes its place.
        beating.abort();
        assert!(beating.await.unwrap_err().is_cancelled());
        let again = join(second_store.clone(), "a").await.unwrap();
        assert_eq!(again.id(), first.id(), "the same row");
        // A clean stop: joined at once.
        again.leave().await;
        join(first_store, "a").await.unwrap();
    }

    #[test]
    fn the_window_counts_the_last_minute() {
        let mut w = Window::default();
        assert_eq!(w.sample(0, 0, 0), (0, 0));
        assert_eq!(w.sample(30_000, 300, 3), (300, 3));
        assert_eq!(w.sample(60_000, 600, 6), (600, 6));
        // The sample at 0 falls out once the one at 30 s is a minute old.
        assert_eq!(w.sample(90_000, 650, 6), (350, 3));
        assert_eq!(w.sample(200_000, 650, 6), (0, 0));
    }

    #[test]
    fn the_section_is_read_and_checked() {
        let mut errors = Problems::new();
        assert_eq!(
            compile(RawCluster::default(), &mut errors),
            ClusterConfig::default()
        );
        let c = compile(
            RawCluster {
                name: Some("mgr-a".into()),
                heartbeat_interval: Some("500ms".into()),
                dead_after: Some("2s".into()),
            },
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.name.as_deref(), Some("mgr-a"));
        assert_eq!(c.dead_after, Duration::from_secs(2));
        compile(
            RawCluster {
                name: Some("a b".into()),
                heartbeat_interval: Some("5s".into()),
                dead_after: Some("6s".into()),
            },
            &mut errors,
        );
        assert_eq!(
            errors.keys(),
            ["manager.name", "manager.dead_after"],
            "{errors:?}"
        );
    }
}
