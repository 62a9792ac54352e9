//! The manager's database: agents, revoked certificates, the event
//! archive, alerts and active responses, on SQLite or PostgreSQL
//! ([`StoreLocation`]; how one operation runs on both: `backend.rs`).
//!
//! SQLite: one file in WAL mode, opened by the daemon and, briefly, by the
//! `agent add`/`agent remove` commands while the daemon runs; SQLite's
//! locking and a busy timeout make that safe. PostgreSQL: one database
//! that several processes (and, later, several managers) share. Times are
//! epoch milliseconds.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use palisade_engine::alert::Alert;
use palisade_engine::rule::RuleOptions;

use crate::pipeline::analysis::{Judged, Origin};

mod backend;
mod location;
mod notify;
#[cfg(test)]
pub(crate) mod testing;
use backend::{Dialect, Pool, StoreRow, WriteTx, for_update, lock_in_id_order, on_pool, push_list};
pub use location::StoreLocation;
pub use notify::{AgentsWithCommands, Listener, Notice};
use std::collections::HashMap;

/// Registers an agent under the next free id inside the write
/// transaction `$tx` of backend `$db`; `$issue` makes its certificate once
/// the id is known. Evaluates to `(id, what issue returned)`; a refusal
/// returns from the calling operation. A macro rather than a function so
/// that it is written once for both backends (see `backend.rs`).
macro_rules! register {
    ($db:ty, $tx:ident, $name:expr, $ip:expr, $issue:expr) => {{
        let (name, ip): (&str, &str) = ($name, $ip);
        if let Some(lock) = <$db as $crate::store::backend::Dialect>::LOCK_REGISTRY {
            sqlx::query(lock).execute(&mut *$tx).await?;
        }
        let live: Option<String> =
            sqlx::query_scalar("SELECT id FROM agents WHERE name = $1 AND removed_at IS NULL")
                .bind(name)
                .fetch_optional(&mut *$tx)
                .await?;
        if let Some(id) = live {
            return Err(StoreError::Conflict(format!(
                "an agent named {name:?} already exists (id {id})"
            )));
        }
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(CAST(id AS BIGINT)) FROM agents")
            .fetch_one(&mut *$tx)
            .await?;
        let id = format!("{:03}", max.unwrap_or(0) + 1);
        let (serial, extra) = ($issue)(&id).map_err(StoreError::Conflict)?;
        sqlx::query(
            "INSERT INTO agents (id, name, registered_ip, cert_serial, registered_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(name)
        .bind(ip)
        .bind(&serial)
        .bind(now_ms())
        .execute(&mut *$tx)
        .await?;
        (id, extra)
    }};
}

/// Inserts `$alerts` (`&[Judged]`) of agent `$agent` inside the write
/// transaction `$tx` of backend `$db`, many rows per statement, and
/// evaluates to their ids in the alerts' order. A multi-row INSERT returns
/// its rows in no promised order: they are matched to the alerts by event
/// sequence, unique and increasing within what the pipeline commits (one
/// alert per event at most, batches in order); alerts that are not so (no
/// caller today) are inserted one per statement. A macro, as `register!`,
/// to be written once for both backends.
macro_rules! insert_alerts {
    ($db:ty, $tx:ident, $agent:expr, $alerts:expr) => {{
        let (agent_id, alerts): (&str, &[Judged]) = ($agent, $alerts);
        let mut ids: Vec<i64> = Vec::with_capacity(alerts.len());
        let increasing = alerts.windows(2).all(|w| w[0].sequence < w[1].sequence);
        let per_statement = if increasing { ALERT_ROWS_PER_INSERT } else { 1 };
        for chunk in alerts.chunks(per_statement) {
            let mut insert = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO alerts (time, rule_id, level, description, groups, agent_id, location, decoder,
                     srcip, dstip, srcuser, dstuser, url, event_sequence, log, srcport, dstport, hostname, options) ",
            );
            insert.push_values(chunk, |mut row, Judged { sequence, alert: a }| {
                row.push_bind(a.time.as_millisecond())
                    .push_bind(i64::from(a.rule_id))
                    .push_bind(i64::from(a.level))
                    .push_bind(a.description.as_str())
                    .push_bind(a.groups.as_str())
                    .push_bind(agent_id)
                    .push_bind(a.location.as_str())
                    .push_bind(a.decoder.as_deref())
                    .push_bind(a.srcip.as_deref())
                    .push_bind(a.dstip.as_deref())
                    .push_bind(a.srcuser.as_deref())
                    .push_bind(a.dstuser.as_deref())
                    .push_bind(a.url.as_deref())
                    .push_bind(to_i64(*sequence))
                    .push_bind(stored_log(a))
                    .push_bind(a.srcport.as_deref())
                    .push_bind(a.dstport.as_deref())
                    .push_bind(a.hostname.as_deref())
                    .push_bind(options_bits(a.options));
            });
            insert.push(" RETURNING id, event_sequence");
            let mut rows: Vec<(i64, Option<i64>)> =
                insert.build_query_as().fetch_all(&mut *$tx).await?;
            rows.sort_unstable_by_key(|&(_, sequence)| sequence);
            let matched = rows.len() == chunk.len()
                && rows
                    .iter()
                    .zip(chunk)
                    .all(|(&(_, stored), j)| stored == Some(to_i64(j.sequence)));
            if !matched {
                return Err(StoreError::Sqlx(sqlx::Error::Protocol(format!(
                    "an alert INSERT of {} rows returned {} rows of other event sequences",
                    chunk.len(),
                    rows.len()
                ))));
            }
            ids.extend(rows.iter().map(|&(id, _)| id));
        }
        ids
    }};
}

mod archive;
mod breakers;
mod checkpoint;
mod cluster;
mod copy;
mod gate;
mod identities;
mod prune;
mod responses;
mod tokens;
pub use archive::{ARCHIVE_BATCH_OVERHEAD, archive_batch_bytes};
pub use breakers::BreakerState;
pub use cluster::{Lease, LeaseHeld, LeaseRequest, ManagerRow};
pub use copy::CopiedTable;
pub use identities::OperatorRow;
pub use prune::Pruned;
pub use responses::{
    Action, BlockRow, BlockingCommands, CommandReport, NewResponse, RefusalRow, ResponseRow,
};
pub use tokens::{Redeemed, TokenRow, show_time};

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite or sqlx reported an error.
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Applying the schema failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The request names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// The stream's lease on the agent was taken over (by a newer stream,
    /// on this manager or another): it may store nothing more.
    #[error("{0}")]
    LeaseLost(String),
}

// `migrator()`: every file of migrations/manager, embedded by build.rs.
include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
// `postgres_migrator()`: every file of migrations/postgres.
include!(concat!(env!("OUT_DIR"), "/postgres_migrations.rs"));

/// Connections to a PostgreSQL server per manager process.
const POSTGRES_CONNECTIONS: u32 = 8;

/// Agents per heartbeat UPDATE (5 parameters each).
const AGENTS_PER_UPDATE: usize = 500;
/// Ids per `IN (...)` list of a read of many agents (or serials).
const IDS_PER_SELECT: usize = 500;
/// Alerts per INSERT (19 parameters each: 4,750, below SQLite's 32,766
/// and PostgreSQL's 65,535).
const ALERT_ROWS_PER_INSERT: usize = 250;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// An agent as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// OSSEC-style id.
    pub id: String,
    /// Registered name.
    pub name: String,
    /// Registered address or CIDR, `any` when none.
    pub registered_ip: String,
    /// Serial of the certificate it was issued.
    pub cert_serial: String,
    /// When it was registered (ms).
    pub registered_at: i64,
    /// When it was removed (ms), if it was.
    pub removed_at: Option<i64>,
    /// First connection (ms).
    pub first_seen: Option<i64>,
    /// Last message (ms).
    pub last_seen: Option<i64>,
    /// Address of the last connection.
    pub last_address: Option<String>,
    /// Agent version from its Hello.
    pub version: Option<String>,
    /// Host name from its Hello.
    pub hostname: Option<String>,
    /// Operating system from its Hello.
    pub os: Option<String>,
    /// Highest event sequence stored.
    pub last_sequence: u64,
    /// Spool depth from its last heartbeat.
    pub spool_depth: u64,
    /// Dropped events from its last heartbeat.
    pub dropped_events: u64,
    /// Read lag from its last heartbeat.
    pub read_lag_bytes: u64,
    /// When the agent process last started, from its Hello (ms).
    pub started_at: Option<i64>,
    /// A renewed certificate issued and not used yet.
    pub pending_serial: Option<String>,
    /// When a stream of this agent was last refused (ms).
    pub last_refused_at: Option<i64>,
    /// Why.
    pub last_refusal: Option<String>,
    /// The manager holding its lease (its live stream), if one does.
    pub lease_manager: Option<i64>,
    /// Its lease's fencing generation.
    pub lease_generation: u64,
    /// The spool its last Hello named (see [`Store::agents_connected`]).
    pub spool_id: Option<String>,
}

/// One event as received from an agent.
#[derive(Debug, Clone)]
pub struct IncomingEvent<'a> {
    /// The agent's sequence number.
    pub sequence: u64,
    /// File path or command.
    pub location: &'a str,
    /// OSSEC log_format.
    pub log_format: &'a str,
    /// When the agent read it (ms).
    pub read_at: i64,
    /// `read_at` was out of range and is the arrival time instead.
    pub read_at_clamped: bool,
    /// Whether the agent (or the manager, at its own limit) cut it.
    pub truncated: bool,
    /// The raw line.
    pub line: &'a [u8],
}

/// An agent's record after its Hello ([`Store::agents_connected`]).
#[derive(Debug, Clone)]
pub struct Connected {
    /// The record as written.
    pub record: AgentRecord,
    /// What the Hello's spool id changed.
    pub spool: SpoolChange,
}

/// What an agent's Hello said of its spool ([`Store::agents_connected`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolChange {
    /// The spool the manager knows (or no id given).
    Same,
    /// The first id this agent named (recorded; nothing reset).
    First,
    /// A new spool: sequences start again; the agent had been stored up
    /// to `last_sequence`.
    New {
        /// The last sequence stored from the old spool.
        last_sequence: u64,
    },
}

/// What storing a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    /// The agent's highest stored sequence.
    pub highest: u64,
    /// Ids of the stored alerts, in order.
    pub alert_ids: Vec<i64>,
}

/// Which alerts to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFilter {
    /// Not before this time (ms).
    pub since: Option<i64>,
    /// At least this level.
    pub min_level: u32,
    /// Only this rule.
    pub rule_id: Option<u32>,
    /// Only this agent.
    pub agent_id: Option<String>,
    /// Only this source address.
    pub srcip: Option<String>,
    /// Only alerts with a larger id (for following).
    pub after_id: i64,
    /// Only alerts with a smaller id (for paging back).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

impl Default for AlertFilter {
    fn default() -> Self {
        Self {
            since: None,
            min_level: 0,
            rule_id: None,
            agent_id: None,
            srcip: None,
            after_id: 0,
            before_id: None,
            limit: 100,
        }
    }
}

/// An alert as the manager keeps it: the engine's alert unchanged, with
/// its id in the store and the agent whose event raised it. The outputs
/// publish it, followers receive it, the store reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlert {
    /// Its id.
    pub id: i64,
    /// The agent (id, name, registered address) the event came from.
    pub origin: Origin,
    /// The agent's sequence number of the event.
    pub event_sequence: Option<u64>,
    /// The alert.
    pub alert: Alert,
}

/// An archived event, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedEvent {
    /// The agent.
    pub agent_id: String,
    /// Its sequence number.
    pub sequence: u64,
    /// Where it was read.
    pub location: String,
    /// Its OSSEC log_format.
    pub log_format: String,
    /// When the agent read it (ms).
    pub read_at: i64,
    /// `read_at` was out of range and is the arrival time instead.
    pub read_at_clamped: bool,
    /// When the manager stored it (ms): its batch's arrival.
    pub received_at: i64,
    /// The raw line.
    pub line: Vec<u8>,
    /// Whether the agent cut it.
    pub truncated: bool,
}

/// Status fields from a Hello.
#[derive(Debug, Clone, Default)]
pub struct AgentHello<'a> {
    /// Agent version.
    pub version: &'a str,
    /// Host name.
    pub hostname: &'a str,
    /// Operating system.
    pub os: &'a str,
    /// Address it connected from.
    pub address: Option<String>,
    /// When the agent process started (ms), if it said.
    pub started_at: Option<i64>,
    /// The spool it names (empty: an older agent that names none).
    pub spool_id: &'a str,
}

/// The manager's database.
#[derive(Debug, Clone)]
pub struct Store {
    /// Every write, and the reads inside write transactions.
    pool: Pool,
    /// Reads that answer operators and open streams. With SQLite their
    /// own connections: its WAL lets them run beside a write, and on
    /// `pool` they queued behind ingestion's commits for a connection.
    /// With PostgreSQL the same pool.
    reads: Reads,
    /// This process's id in notifications ([`Store::origin`]).
    origin: u64,
    /// Commands' transactions before ingestion's (`gate.rs`).
    gate: Arc<gate::WriteGate>,
}

/// The pool of [`Store::reads`] (a struct with a `pool`, for
/// [`on_pool!`]).
#[derive(Debug, Clone)]
struct Reads {
    pool: Pool,
}

/// A random, non-zero id for this process's notifications.
fn new_origin() -> u64 {
    rand::random::<u64>() | 1
}

/// Connections of SQLite's read pool ([`Store::reads`]).
const SQLITE_READ_CONNECTIONS: u32 = 4;
/// Connections of SQLite's write pool (one writes at a time; the others
/// wait in SQLite's busy handler or prepare their next statement).
const SQLITE_WRITE_CONNECTIONS: u32 = 4;

impl Store {
    /// Opens the database (creating an SQLite file if needed) and applies
    /// the schema: `location` is a [`StoreLocation`] or an SQLite path.
    pub async fn open(location: impl Into<StoreLocation>) -> Result<Self, StoreError> {
        let path = match location.into() {
            StoreLocation::Sqlite(path) => path,
            StoreLocation::Postgres(url) => {
                let pool = PgPoolOptions::new()
                    .max_connections(POSTGRES_CONNECTIONS)
                    .connect(&url)
                    .await?;
                postgres_migrator().run(&pool).await?;
                return Ok(Self {
                    reads: Reads {
                        pool: Pool::Postgres(pool.clone()),
                    },
                    pool: Pool::Postgres(pool),
                    origin: new_origin(),
                    gate: Arc::new(gate::WriteGate::new(POSTGRES_CONNECTIONS as usize)),
                });
            }
        };
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // Not pinged when taken from the pool: an SQLite connection is a
        // file and a thread of this process, not a peer that can hang up,
        // and each ping is a round trip to that thread (two thread
        // wake-ups): a third of all of them in a reconnect storm. (sqlx
        // still pings one on its way back into the pool.) Writers never
        // copy the log into the database: the daemon's checkpoints do,
        // outside the writers' turn (`checkpoint.rs`).
        let pool = SqlitePoolOptions::new()
            .max_connections(SQLITE_WRITE_CONNECTIONS)
            .test_before_acquire(false)
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await?;
        migrator().run(&pool).await?;
        let reads = SqlitePoolOptions::new()
            .max_connections(SQLITE_READ_CONNECTIONS)
            .test_before_acquire(false)
            .connect_with(options.pragma("query_only", "ON"))
            .await?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
            reads: Reads {
                pool: Pool::Sqlite(reads),
            },
            origin: new_origin(),
            gate: Arc::new(gate::WriteGate::new(SQLITE_WRITE_CONNECTIONS as usize)),
        })
    }

    /// Whether this store is on PostgreSQL (for messages and tests).
    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        on_pool!(self.reads, pool => {
            pool.close().await;
        });
        on_pool!(self, pool => {
            pool.close().await;
        })
    }

    /// Registers a new agent under the next free id; `issue` makes its
    /// certificate once the id is known and returns the serial. Ids are
    /// never reused, also after removal.
    pub async fn add_agent<F, E>(
        &self,
        name: &str,
        ip: &str,
        issue: F,
    ) -> Result<(String, E), StoreError>
    where
        F: FnOnce(&str) -> Result<(String, E), String>,
    {
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            let (id, extra) = register!(Db, tx, name, ip, issue);
            tx.commit().await?;
            Ok((id, extra))
        })
    }

    /// Removes an agent: its certificate is revoked and refused from then on.
    pub async fn remove_agent(&self, id: &str, reason: &str) -> Result<AgentRecord, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            let row = sqlx::query(for_update::<Db>("SELECT cert_serial, removed_at FROM agents WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no agent with id {id}")))?;
            if row.get::<Option<i64>, _>("removed_at").is_some() {
                return Err(StoreError::Conflict(format!(
                    "agent {id} is already removed"
                )));
            }
            let serial: String = row.get("cert_serial");
            let now = now_ms();
            sqlx::query("UPDATE agents SET removed_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(Db::INSERT_REVOCATION)
            .bind(&serial)
            .bind(id)
            .bind(now)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.agent(id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no agent with id {id}")))
        })
    }

    /// One agent, removed or not.
    pub async fn agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        on_pool!(self.reads, pool => {
            let row = sqlx::query("SELECT * FROM agents WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.as_ref().map(agent_from_row))
        })
    }

    /// The records of `ids`, in their order (`None` for an id not
    /// registered): the admissions of a reconnect storm in one statement
    /// per 500 rather than one each.
    pub async fn agents_by_id(&self, ids: &[&str]) -> Result<Vec<Option<AgentRecord>>, StoreError> {
        on_pool!(self.reads, pool => {
            let mut found = HashMap::with_capacity(ids.len());
            for chunk in ids.chunks(IDS_PER_SELECT) {
                let mut select = sqlx::QueryBuilder::<Db>::new("SELECT * FROM agents WHERE id IN ");
                push_list(&mut select, chunk.iter().copied());
                // Not kept prepared (nor the other lists of ids): each
                // length would be a statement of its own in each
                // connection's cache.
                for row in select.build().persistent(false).fetch_all(pool).await? {
                    let record = agent_from_row(&row);
                    found.insert(record.id.clone(), record);
                }
            }
            Ok(ids.iter().map(|id| found.get(*id).cloned()).collect())
        })
    }

    /// Every agent, in id order.
    pub async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        on_pool!(self.reads, pool => {
            let rows = sqlx::query("SELECT * FROM agents ORDER BY CAST(id AS INTEGER)")
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(agent_from_row).collect())
        })
    }

    /// The ids of the agents not removed, in id order (what `-a`
    /// targets), without reading their records.
    pub async fn live_agent_ids(&self) -> Result<Vec<String>, StoreError> {
        on_pool!(self.reads, pool => {
            Ok(sqlx::query_scalar(
                "SELECT id FROM agents WHERE removed_at IS NULL ORDER BY CAST(id AS INTEGER)",
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// Whether a certificate serial has been revoked.
    pub async fn is_revoked(&self, serial: &str) -> Result<bool, StoreError> {
        on_pool!(self.reads, pool => {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT CAST(1 AS BIGINT) FROM revoked_certificates WHERE serial = $1")
                    .bind(serial)
                    .fetch_optional(pool)
                    .await?;
            Ok(found.is_some())
        })
    }

    /// Which of `serials` are revoked (one statement per 500).
    pub async fn revoked_among(
        &self,
        serials: &[&str],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        on_pool!(self.reads, pool => {
            let mut revoked = std::collections::HashSet::new();
            for chunk in serials.chunks(IDS_PER_SELECT) {
                let mut select =
                    sqlx::QueryBuilder::<Db>::new("SELECT serial FROM revoked_certificates WHERE serial IN ");
                push_list(&mut select, chunk.iter().copied());
                let found: Vec<String> = select.build_query_scalar().persistent(false).fetch_all(pool).await?;
                revoked.extend(found);
            }
            Ok(revoked)
        })
    }

    /// Every revoked serial (small: one per removed agent).
    pub async fn revoked_serials(&self) -> Result<Vec<String>, StoreError> {
        on_pool!(self.reads, pool => {
            Ok(
                sqlx::query_scalar("SELECT serial FROM revoked_certificates")
                    .fetch_all(pool)
                    .await?,
            )
        })
    }

    /// Records an agent's Hello (see [`Self::agents_connected`]).
    pub async fn agent_connected(
        &self,
        id: &str,
        hello: &AgentHello<'_>,
    ) -> Result<Option<Connected>, StoreError> {
        Ok(self
            .agents_connected(&[(id, hello.clone())])
            .await?
            .pop()
            .flatten())
    }

    /// Records many agents' Hellos in one transaction: in a reconnect
    /// storm (a manager restart) thousands arrive at once, and one commit
    /// (or query) each would queue them on the write lock. With each, the
    /// spool its Hello names: a different one than recorded means a new
    /// spool whose sequence numbers start again at 1, so the agent's last
    /// sequence is reset to 0 and its spool epoch (which keys the archive
    /// with the sequence) counted up; an empty id (an older agent) changes
    /// nothing. Returns, in the order of `hellos`, each agent's record as
    /// written (what its Welcome says) and its spool change; `None` for an
    /// agent not registered.
    pub async fn agents_connected(
        &self,
        hellos: &[(&str, AgentHello<'_>)],
    ) -> Result<Vec<Option<Connected>>, StoreError> {
        on_pool!(self, pool => {
            let now = now_ms();
            let ids: Vec<&str> = hellos.iter().map(|(id, _)| *id).collect();
            let mut tx = pool.write_tx(&self.gate).await?;
            let mut known: HashMap<String, (Option<String>, i64)> = HashMap::with_capacity(ids.len());
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            sorted.dedup();
            for chunk in sorted.chunks(IDS_PER_SELECT) {
                let mut select =
                    sqlx::QueryBuilder::<Db>::new("SELECT id, spool_id, last_sequence FROM agents WHERE id IN ");
                lock_in_id_order(push_list(&mut select, chunk.iter().copied()));
                let rows: Vec<(String, Option<String>, i64)> =
                    select.build_query_as().persistent(false).fetch_all(&mut *tx).await?;
                known.extend(rows.into_iter().map(|(id, spool, last)| (id, (spool, last))));
            }
            // One Hello per agent (the last, should one come twice), each
            // with its spool change.
            let mut latest: HashMap<&str, &AgentHello<'_>> = HashMap::with_capacity(ids.len());
            for (id, hello) in hellos {
                if known.contains_key(*id) {
                    latest.insert(id, hello);
                }
            }
            let mut written: Vec<(&str, &AgentHello<'_>, SpoolChange)> = latest
                .into_iter()
                .map(|(id, hello)| {
                    let (spool, last) = &known[id];
                    let change = match spool.as_deref() {
                        _ if hello.spool_id.is_empty() => SpoolChange::Same,
                        Some(k) if k == hello.spool_id => SpoolChange::Same,
                        None => SpoolChange::First,
                        Some(_) => SpoolChange::New { last_sequence: to_u64(*last) },
                    };
                    (id, hello, change)
                })
                .collect();
            written.sort_unstable_by(|a, b| a.0.cmp(b.0));
            // A statement for many agents: one each was a round trip to
            // the database's thread per agent in a reconnect storm.
            for chunk in written.chunks(AGENTS_PER_UPDATE) {
                let mut update = sqlx::QueryBuilder::<Db>::new("UPDATE agents SET first_seen = COALESCE(first_seen, ");
                update
                    .push_bind(now)
                    .push("), last_seen = ")
                    .push_bind(now)
                    .push(
                        ", last_address = COALESCE(v.column2, last_address), version = v.column3,
                         hostname = v.column4, os = v.column5, started_at = COALESCE(v.column6, started_at),
                         spool_id = CASE WHEN v.column7 = '' THEN spool_id ELSE v.column7 END,
                         last_sequence = CASE WHEN v.column8 THEN 0 ELSE last_sequence END,
                         spool_epoch = spool_epoch + CASE WHEN v.column8 THEN 1 ELSE 0 END
                     FROM (",
                    );
                update.push_values(chunk, |mut row, &(id, hello, change)| {
                    row.push_bind(id)
                        .push_bind(hello.address.as_deref())
                        .push_bind(hello.version)
                        .push_bind(hello.hostname)
                        .push_bind(hello.os)
                        .push_bind(hello.started_at)
                        .push_bind(hello.spool_id)
                        .push_bind(matches!(change, SpoolChange::New { .. }));
                });
                update.push(") AS v WHERE agents.id = v.column1");
                update.build().persistent(false).execute(&mut *tx).await?;
            }
            let changes: HashMap<&str, SpoolChange> =
                written.iter().map(|&(id, _, change)| (id, change)).collect();
            let mut records: HashMap<String, AgentRecord> = HashMap::with_capacity(ids.len());
            for chunk in ids.chunks(IDS_PER_SELECT) {
                let mut select = sqlx::QueryBuilder::<Db>::new("SELECT * FROM agents WHERE id IN ");
                push_list(&mut select, chunk.iter().copied());
                for row in select.build().persistent(false).fetch_all(&mut *tx).await? {
                    let record = agent_from_row(&row);
                    records.insert(record.id.clone(), record);
                }
            }
            tx.commit().await?;
            Ok(ids
                .iter()
                .map(|id| {
                    Some(Connected {
                        record: records.get(*id)?.clone(),
                        spool: changes.get(id).copied()?,
                    })
                })
                .collect())
        })
    }

    /// Records gathered heartbeats ([`crate::heartbeats`]) in one
    /// transaction, a few hundred agents per statement: `last_seen` only
    /// moves forward, figures are written where a heartbeat brought them.
    pub async fn record_heartbeats(
        &self,
        seen: &[(String, crate::heartbeats::Seen)],
    ) -> Result<(), StoreError> {
        // One order for every manager's flush (and Hellos), or two flushing
        // the same agents at once deadlock on PostgreSQL's row locks.
        let mut seen: Vec<&(String, crate::heartbeats::Seen)> = seen.iter().collect();
        seen.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            for chunk in seen.chunks(AGENTS_PER_UPDATE) {
                if !Db::FOR_UPDATE.is_empty() {
                    // UPDATE ... FROM locks rows in the join's order, not
                    // the list's: lock them first, bytewise like the sort.
                    let mut lock = sqlx::QueryBuilder::<Db>::new("SELECT id FROM agents WHERE id IN ");
                    lock_in_id_order(push_list(&mut lock, chunk.iter().map(|&(agent, _)| agent.as_str())));
                    lock.build().fetch_all(&mut *tx).await?;
                }
                let mut update = sqlx::QueryBuilder::<Db>::new(format!(
                    "UPDATE agents SET last_seen = {}(COALESCE(last_seen, 0), v.column2),
                         spool_depth = COALESCE(v.column3, spool_depth),
                         dropped_events = COALESCE(v.column4, dropped_events),
                         read_lag_bytes = COALESCE(v.column5, read_lag_bytes)
                     FROM (",
                    Db::GREATEST
                ));
                update.push_values(chunk, |mut row, &(agent, seen)| {
                    let f = seen.figures;
                    row.push_bind(agent.as_str())
                        .push_bind(seen.at)
                        .push_bind(f.map(|f| to_i64(f.spool_depth)))
                        .push_bind(f.map(|f| to_i64(f.dropped_events)))
                        .push_bind(f.map(|f| to_i64(f.read_lag_bytes)));
                });
                update.push(") AS v WHERE agents.id = v.column1");
                update.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// The revocation generation: it changes whenever an agent is removed
    /// or a certificate revoked, by any process (`0040_fleet.sql`).
    pub async fn revocation_generation(&self) -> Result<i64, StoreError> {
        on_pool!(self.reads, pool => {
            Ok(
                sqlx::query_scalar("SELECT generation FROM revocation_generation WHERE id = 1")
                    .fetch_one(pool)
                    .await?,
            )
        })
    }

    /// The ids of removed agents.
    pub async fn removed_agent_ids(&self) -> Result<Vec<String>, StoreError> {
        on_pool!(self.reads, pool => {
            Ok(
                sqlx::query_scalar("SELECT id FROM agents WHERE removed_at IS NOT NULL")
                    .fetch_all(pool)
                    .await?,
            )
        })
    }

    /// Stores a batch of an agent's events and the alerts they raised in
    /// one transaction, skipping events at or below the agent's stored
    /// sequence (a batch resent after a lost acknowledgement), and advances
    /// that sequence in the same transaction. With `archive` false only the
    /// sequence and the alerts are kept. Returns the new highest stored
    /// sequence and the ids given to the alerts. Not fenced: for alerts
    /// the manager raises itself and for tests; a stream stores with
    /// [`Self::store_fenced_events`].
    pub async fn store_events(
        &self,
        agent_id: &str,
        events: &[IncomingEvent<'_>],
        alerts: &[Judged],
        archive: bool,
    ) -> Result<StoredBatch, StoreError> {
        self.store_fenced_events(agent_id, None, events, alerts, archive)
            .await
    }

    /// [`Self::store_events`] for a stream holding the agent's lease
    /// under `lease` (its fencing generation): refused with
    /// [`StoreError::LeaseLost`], storing nothing, once the lease was taken
    /// over (`cluster.rs`). The check is made on the agent row the
    /// transaction locks anyway.
    pub async fn store_fenced_events(
        &self,
        agent_id: &str,
        lease: Option<u64>,
        events: &[IncomingEvent<'_>],
        alerts: &[Judged],
        archive: bool,
    ) -> Result<StoredBatch, StoreError> {
        // After any command waiting for the database (`gate.rs`); held
        // until the commit.
        let _slot = self.gate.ingest().await;
        on_pool!(self, pool => {
            let received_at = now_ms();
            let mut tx = pool.write_tx(&self.gate).await?;
            let (last, spool_epoch, generation): (i64, i64, i64) =
                sqlx::query_as(for_update::<Db>("SELECT last_sequence, spool_epoch, lease_generation FROM agents WHERE id = $1"))
                    .bind(agent_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("no agent with id {agent_id}")))?;
            if let Some(lease) = lease
                && to_i64(lease) != generation
            {
                return Err(StoreError::LeaseLost(format!(
                    "agent {agent_id}'s stream was taken over (lease generation {generation}, this stream's {lease}): nothing more is stored from this stream"
                )));
            }
            let mut highest = last;
            // New events only; one multi-row INSERT per chunk: a statement per
            // row costs more in sqlx than SQLite's own work.
            let mut fresh: Vec<&IncomingEvent<'_>> = Vec::with_capacity(events.len());
            fresh.extend(events.iter().filter(|e| {
                let seq = to_i64(e.sequence);
                let new = seq > highest;
                highest = highest.max(seq);
                new
            }));
            if archive && let (Some(first), Some(last)) = (fresh.first(), fresh.last()) {
                // One row per batch (`archive.rs`): fresh events are in
                // increasing sequence order, so the first and last bound it.
                let batch = archive::pack(&fresh)
                    .map_err(|e| StoreError::Conflict(format!("agent {agent_id}'s batch: {e}")))?;
                let bytes = archive_batch_bytes(batch.len());
                sqlx::query(
                    "INSERT INTO archive (agent_id, spool_epoch, first_sequence, last_sequence, events, received_at, batch)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(agent_id)
                .bind(spool_epoch)
                .bind(to_i64(first.sequence))
                .bind(to_i64(last.sequence))
                .bind(to_i64(fresh.len() as u64))
                .bind(received_at)
                .bind(batch)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE archive_size SET bytes = bytes + $1 WHERE id = 1")
                    .bind(to_i64(bytes))
                    .execute(&mut *tx)
                    .await?;
            }
            let alert_ids = insert_alerts!(Db, tx, agent_id, alerts);
            if highest != last {
                sqlx::query("UPDATE agents SET last_sequence = $1, last_seen = $2 WHERE id = $3")
                    .bind(highest)
                    .bind(received_at)
                    .bind(agent_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(StoredBatch {
                highest: to_u64(highest),
                alert_ids,
            })
        })
    }

    /// Alerts matching `filter`, newest first.
    pub async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<StoredAlert>, StoreError> {
        self.fetch_alerts(
            "SELECT alerts.*, agents.name AS agent_name, agents.registered_ip AS agent_ip
             FROM alerts LEFT JOIN agents ON agents.id = alerts.agent_id
             WHERE ($1 IS NULL OR time >= $1) AND level >= $2 AND ($3 IS NULL OR rule_id = $3)
               AND ($4 IS NULL OR agent_id = $4) AND ($5 IS NULL OR srcip = $5)
               AND alerts.id > $6 AND ($8 IS NULL OR alerts.id < $8)
             ORDER BY alerts.id DESC LIMIT $7",
            filter,
        )
        .await
    }

    /// Alerts matching `filter` with an id above `filter.after_id`, oldest
    /// first, at most `filter.limit`: for followers catching up without
    /// gaps (page on with the last id returned).
    pub async fn alerts_after(&self, filter: &AlertFilter) -> Result<Vec<StoredAlert>, StoreError> {
        self.fetch_alerts(
            "SELECT alerts.*, agents.name AS agent_name, agents.registered_ip AS agent_ip
             FROM alerts LEFT JOIN agents ON agents.id = alerts.agent_id
             WHERE ($1 IS NULL OR time >= $1) AND level >= $2 AND ($3 IS NULL OR rule_id = $3)
               AND ($4 IS NULL OR agent_id = $4) AND ($5 IS NULL OR srcip = $5)
               AND alerts.id > $6 AND ($8 IS NULL OR alerts.id < $8)
             ORDER BY alerts.id ASC LIMIT $7",
            filter,
        )
        .await
    }

    /// The id of the `n`th newest alert matching `filter` (`n` from 1), or
    /// `None` when fewer match: where a backlog of the newest `n` begins.
    pub async fn nth_newest_alert_id(
        &self,
        filter: &AlertFilter,
        n: u32,
    ) -> Result<Option<i64>, StoreError> {
        on_pool!(self.reads, pool => {
            Ok(sqlx::query_scalar(
                "SELECT id FROM alerts
                 WHERE ($1 IS NULL OR time >= $1) AND level >= $2 AND ($3 IS NULL OR rule_id = $3)
                   AND ($4 IS NULL OR agent_id = $4) AND ($5 IS NULL OR srcip = $5)
                   AND id > $6 AND ($8 IS NULL OR id < $8)
                 ORDER BY id DESC LIMIT 1 OFFSET $7",
            )
            .bind(filter.since)
            .bind(i64::from(filter.min_level))
            .bind(filter.rule_id.map(i64::from))
            .bind(filter.agent_id.as_deref())
            .bind(filter.srcip.as_deref())
            .bind(filter.after_id)
            .bind(i64::from(n.saturating_sub(1)))
            .bind(filter.before_id)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Runs one of the two alert queries (they differ only in order) with
    /// `filter`'s values bound.
    async fn fetch_alerts(
        &self,
        sql: &'static str,
        filter: &AlertFilter,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        on_pool!(self.reads, pool => {
            let rows = sqlx::query(sql)
                .bind(filter.since)
                .bind(i64::from(filter.min_level))
                .bind(filter.rule_id.map(i64::from))
                .bind(filter.agent_id.as_deref())
                .bind(filter.srcip.as_deref())
                .bind(filter.after_id)
                .bind(i64::from(filter.limit))
                .bind(filter.before_id)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(alert_from_row).collect())
        })
    }

    /// Archived events of one agent (or all), in arrival order, unpacked
    /// from their batches (`archive.rs`).
    pub async fn archived_events(
        &self,
        agent_id: Option<&str>,
    ) -> Result<Vec<ArchivedEvent>, StoreError> {
        on_pool!(self.reads, pool => {
            let rows: Vec<(i64, String, i64, i64, Vec<u8>)> = sqlx::query_as(
                "SELECT id, agent_id, received_at, events, batch FROM archive
                 WHERE $1 IS NULL OR agent_id = $1 ORDER BY id",
            )
            .bind(agent_id)
            .fetch_all(pool)
            .await?;
            let total: i64 = rows.iter().map(|r| r.3).sum();
            let mut events = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            for (id, agent, received_at, count, batch) in &rows {
                let before = events.len();
                archive::unpack(batch, agent, *received_at, &mut events)
                    .and_then(|()| {
                        let unpacked = (events.len() - before) as i64;
                        (unpacked == *count).then_some(()).ok_or_else(|| {
                            format!("{unpacked} events where the row counts {count}")
                        })
                    })
                    .map_err(|e| {
                        StoreError::Sqlx(sqlx::Error::Decode(
                            format!("archived batch {id}: {e}").into(),
                        ))
                    })?;
            }
            Ok(events)
        })
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The `log` column: the line, then the correlated lines, newline-separated
/// (neither holds a newline: agents split on them, pre-decoding drops
/// control characters).
fn stored_log(a: &Alert) -> Vec<u8> {
    let mut log = a.full_log.clone();
    for line in &a.correlated {
        log.push(b'\n');
        log.extend_from_slice(line.as_bytes());
    }
    log
}

/// The `options` column: one bit per rule option, in the order of
/// `migrations/manager/0007_alert_model.sql`.
fn options_bits(o: RuleOptions) -> i64 {
    [
        o.alert_by_email,
        o.no_email_alert,
        o.log_alert,
        o.no_log,
        o.no_ar,
    ]
    .iter()
    .enumerate()
    .filter(|(_, set)| **set)
    .map(|(i, _)| 1 << i)
    .sum()
}

fn options_from_bits(bits: i64) -> RuleOptions {
    let set = |i: u32| bits & (1 << i) != 0;
    RuleOptions {
        alert_by_email: set(0),
        no_email_alert: set(1),
        log_alert: set(2),
        no_log: set(3),
        no_ar: set(4),
        ..RuleOptions::default()
    }
}

fn alert_from_row(r: &impl StoreRow) -> StoredAlert {
    let log: Vec<u8> = r.col("log");
    let mut lines = log.split(|b| *b == b'\n');
    let full_log = lines.next().unwrap_or_default().to_vec();
    let correlated = lines
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let agent_id: Option<String> = r.col("agent_id");
    let origin = Origin {
        name: r.col::<Option<String>>("agent_name").unwrap_or_default(),
        ip: r
            .col::<Option<String>>("agent_ip")
            .unwrap_or_else(|| "any".into()),
        agent_id,
    };
    StoredAlert {
        id: r.col("id"),
        origin,
        event_sequence: r.col::<Option<i64>>("event_sequence").map(to_u64),
        alert: Alert {
            time: jiff::Timestamp::from_millisecond(r.col("time"))
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            rule_id: u32::try_from(r.col::<i64>("rule_id")).unwrap_or(0),
            level: u32::try_from(r.col::<i64>("level")).unwrap_or(0),
            description: r.col("description"),
            groups: r.col("groups"),
            options: options_from_bits(r.col("options")),
            location: r.col("location"),
            hostname: r.col("hostname"),
            decoder: r.col("decoder"),
            srcip: r.col("srcip"),
            srcport: r.col("srcport"),
            dstip: r.col("dstip"),
            dstport: r.col("dstport"),
            srcuser: r.col("srcuser"),
            dstuser: r.col("dstuser"),
            url: r.col("url"),
            full_log,
            correlated,
            wazuh: None,
        },
    }
}

fn agent_from_row(r: &impl StoreRow) -> AgentRecord {
    AgentRecord {
        id: r.col("id"),
        name: r.col("name"),
        registered_ip: r.col("registered_ip"),
        cert_serial: r.col("cert_serial"),
        registered_at: r.col("registered_at"),
        removed_at: r.col("removed_at"),
        first_seen: r.col("first_seen"),
        last_seen: r.col("last_seen"),
        last_address: r.col("last_address"),
        version: r.col("version"),
        hostname: r.col("hostname"),
        os: r.col("os"),
        last_sequence: to_u64(r.col("last_sequence")),
        spool_depth: to_u64(r.col("spool_depth")),
        dropped_events: to_u64(r.col("dropped_events")),
        read_lag_bytes: to_u64(r.col("read_lag_bytes")),
        started_at: r.col("started_at"),
        pending_serial: r.col("pending_serial"),
        last_refused_at: r.col("last_refused_at"),
        last_refusal: r.col("last_refusal"),
        lease_manager: r.col("lease_manager"),
        lease_generation: to_u64(r.col("lease_generation")),
        spool_id: r.col("spool_id"),
    }
}

/// Alerts for unit tests across the crate.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A web scan alert (rule 31151) of agent 001 `web01`, judged at
    /// 2025-11-28 10:00:01 UTC plus `id` ms, stored under `id`.
    pub fn stored_alert(id: i64, level: u32) -> StoredAlert {
        StoredAlert {
            id,
            origin: Origin {
                agent_id: Some("001".into()),
                name: "web01".into(),
                ip: "any".into(),
            },
            event_sequence: Some(1),
            alert: Alert {
                time: jiff::Timestamp::from_millisecond(1_764_324_001_000 + id).unwrap(),
                decoder: Some("web-accesslog".into()),
                srcip: Some("203.0.113.7".into()),
                full_log: b"a line".to_vec(),
                ..Alert::without_event(
                    31151,
                    level,
                    "Many 4xx answers to one address in 90 seconds (web scan).".into(),
                    "web,accesslog,web_scan,recon,",
                    RuleOptions::default(),
                    "(web01) any->/var/log/nginx/access.log",
                )
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::testing::both_backends;

    /// The sequences of the agent's archived events, in order.
    async fn archived_sequences(s: &Store, id: &str) -> Vec<u64> {
        let events = s.archived_events(Some(id)).await.unwrap();
        events.iter().map(|e| e.sequence).collect()
    }

    fn issue(serial: &str) -> impl FnOnce(&str) -> Result<(String, ()), String> + '_ {
        move |_id| Ok((serial.to_string(), ()))
    }

    both_backends! {
        async fn ids_are_sequential_and_never_reused(db) {
            let s = db.open().await;
            let (a, _) = s.add_agent("web01", "any", issue("aa")).await.unwrap();
            let (b, _) = s
                .add_agent("web02", "10.0.0.0/8", issue("bb"))
                .await
                .unwrap();
            assert_eq!((a.as_str(), b.as_str()), ("001", "002"));
            s.remove_agent("002", "test").await.unwrap();
            let (c, _) = s.add_agent("web02", "any", issue("cc")).await.unwrap();
            assert_eq!(c, "003");
            assert!(s.is_revoked("bb").await.unwrap());
            assert!(!s.is_revoked("cc").await.unwrap());
            let dup = s.add_agent("web01", "any", issue("dd")).await;
            assert!(matches!(dup, Err(StoreError::Conflict(_))));
        }
    }

    both_backends! {
        async fn an_alert_reads_back_as_it_was_stored(db) {
            let s = db.open().await;
            let (id, _) = s.add_agent("web01", "any", issue("aa")).await.unwrap();
            let mut expected = fixtures::stored_alert(1, 10);
            let a = &mut expected.alert;
            a.time = jiff::Timestamp::from_millisecond(a.time.as_millisecond()).unwrap();
            a.srcport = Some("51234".into());
            a.dstip = Some("192.0.2.1".into());
            a.dstport = Some("443".into());
            a.srcuser = Some("alice".into());
            a.dstuser = Some("root".into());
            a.url = Some("/x".into());
            a.correlated = vec!["earlier 1".into(), "earlier 2".into()];
            a.options.no_ar = true;
            a.options.alert_by_email = true;
            let judged = Judged {
                sequence: 1,
                alert: expected.alert.clone(),
            };
            let stored = s.store_events(&id, &[], &[judged], false).await.unwrap();
            expected.id = stored.alert_ids[0];
            let read = s.alerts(&AlertFilter::default()).await.unwrap();
            assert_eq!(read, [expected]);
        }
    }

    both_backends! {
        async fn a_resent_batch_is_stored_once(db) {
            let s = db.open().await;
            let (id, _) = s.add_agent("web01", "any", issue("aa")).await.unwrap();
            let ev = |seq| IncomingEvent {
                sequence: seq,
                location: "/var/log/x",
                log_format: "syslog",
                read_at: 1,
                read_at_clamped: false,
                truncated: false,
                line: b"line",
            };
            assert_eq!(
                s.store_events(&id, &[ev(1), ev(2)], &[], true)
                    .await
                    .unwrap()
                    .highest,
                2
            );
            assert_eq!(
                s.store_events(&id, &[ev(1), ev(2), ev(3)], &[], true)
                    .await
                    .unwrap()
                    .highest,
                3
            );
            let seqs = archived_sequences(&s, &id).await;
            assert_eq!(seqs, vec![1, 2, 3]);
        }
    }

    both_backends! {
        async fn a_batch_of_alerts_gets_one_id_each_in_order(db) {
            // More alerts than one INSERT takes, each told apart by its
            // rule and address: every id reads back as its own alert.
            let s = db.open().await;
            let (agent, _) = s.add_agent("web01", "any", issue("aa")).await.unwrap();
            let count = 2 * ALERT_ROWS_PER_INSERT as u64 + 7;
            let judged: Vec<Judged> = (1..=count)
                .map(|sequence| {
                    let mut alert = fixtures::stored_alert(0, 3).alert;
                    alert.rule_id = 100_000 + sequence as u32;
                    alert.srcip = Some(format!("198.51.100.{}", sequence % 200));
                    Judged { sequence, alert }
                })
                .collect();
            let events: Vec<IncomingEvent<'_>> = (1..=count).map(event).collect();
            let stored = s.store_events(&agent, &events, &judged, false).await.unwrap();
            assert_eq!(stored.highest, count);
            assert_eq!(stored.alert_ids.len(), judged.len());
            assert!(stored.alert_ids.windows(2).all(|w| w[0] < w[1]), "ids in the alerts' order");
            let read = s
                .alerts(&AlertFilter { limit: 10_000, ..AlertFilter::default() })
                .await
                .unwrap();
            assert_eq!(read.len(), judged.len());
            for (id, j) in stored.alert_ids.iter().zip(&judged) {
                let r = read.iter().find(|r| r.id == *id).unwrap();
                assert_eq!(r.event_sequence, Some(j.sequence));
                assert_eq!((r.alert.rule_id, &r.alert.srcip), (j.alert.rule_id, &j.alert.srcip));
            }
        }
    }

    fn event(sequence: u64) -> IncomingEvent<'static> {
        IncomingEvent {
            sequence,
            location: "/var/log/x",
            log_format: "syslog",
            read_at: 1,
            read_at_clamped: false,
            truncated: sequence.is_multiple_of(2),
            line: b"line",
        }
    }

    fn block(agent: &str, srcip: &str, action: Action, undoes: Option<i64>) -> NewResponse {
        NewResponse {
            agent_id: agent.into(),
            response: "route-null600".into(),
            command: "route-null".into(),
            executable: "route-null".into(),
            action,
            srcip: Some(srcip.into()),
            user: Some("root".into()),
            alert_id: None,
            rule_id: Some(31151),
            location: None,
            timeout_s: Some(600),
            undoes,
        }
    }

    both_backends! {
        async fn batches_of_one_agent_racing_are_each_stored_once(db) {
            // Sessions of one agent storing overlapping batches at once (a
            // reconnect while the old stream still commits): the sequence
            // check and the insert must be one step on both backends.
            let s = db.open().await;
            let (id, _) = s.add_agent("web01", "any", issue("aa")).await.unwrap();
            let tasks: Vec<_> = (0..4u64)
                .map(|t| {
                    let (s, id) = (s.clone(), id.clone());
                    tokio::spawn(async move {
                        let batch: Vec<_> = (1 + t * 10..=40 + t * 10).map(event).collect();
                        s.store_events(&id, &batch, &[], true).await.unwrap()
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let seqs = archived_sequences(&s, &id).await;
            let mut sorted = seqs.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), seqs.len(), "an event stored twice: {seqs:?}");
            assert_eq!(s.agent(&id).await.unwrap().unwrap().last_sequence, 70);
            let truncated = s.archived_events(Some(&id)).await.unwrap();
            assert!(truncated.iter().all(|e| e.truncated == e.sequence.is_multiple_of(2)));
        }
    }

    both_backends! {
        async fn agents_added_at_once_get_distinct_ids(db) {
            let s = db.open().await;
            let tasks: Vec<_> = (0..6)
                .map(|n| {
                    let s = s.clone();
                    tokio::spawn(async move {
                        s.add_agent(&format!("web{n}"), "any", |_| Ok((format!("serial{n}"), ())))
                            .await
                            .unwrap()
                            .0
                    })
                })
                .collect();
            let mut ids = Vec::new();
            for t in tasks {
                ids.push(t.await.unwrap());
            }
            ids.sort();
            assert_eq!(ids, ["001", "002", "003", "004", "005", "006"]);
            assert_eq!(s.live_agent_ids().await.unwrap(), ids);
        }
    }

    both_backends! {
        async fn a_token_is_spent_once_with_the_registration(db) {
            let s = db.open().await;
            s.insert_token("hash1", Some("web01"), now_ms() + 60_000)
                .await
                .unwrap();
            s.insert_token("hash2", None, now_ms() - 1).await.unwrap();
            let first = s
                .redeem_token("hash1", None, "host", "192.0.2.1:5000", |id, name| {
                    Ok((format!("serial-{id}-{name}"), ()))
                })
                .await
                .unwrap();
            assert_eq!((first.id.as_str(), first.name.as_str()), ("001", "web01"));
            let again = s
                .redeem_token("hash1", None, "host", "192.0.2.1:5000", |_, _| {
                    Ok(("other".to_string(), ()))
                })
                .await;
            assert!(matches!(again, Err(StoreError::Conflict(m)) if m.contains("already used")));
            let expired = s
                .redeem_token("hash2", None, "host", "192.0.2.1:5000", |_, _| {
                    Ok(("other".to_string(), ()))
                })
                .await;
            assert!(matches!(expired, Err(StoreError::Conflict(m)) if m.contains("expired")));
            let unknown = s
                .redeem_token("nope", None, "host", "peer", |_, _| Ok(("x".to_string(), ())))
                .await;
            assert!(matches!(unknown, Err(StoreError::NotFound(_))));
            let tokens = s.tokens().await.unwrap();
            assert_eq!(tokens.len(), 2);
            assert_eq!(tokens[1].used_by.as_deref(), Some("001"));
            assert_eq!(tokens[0].used_at, None);
            assert_eq!(s.agents().await.unwrap().len(), 1, "a refusal registers nobody");
            assert_eq!(
                s.agent("001").await.unwrap().unwrap().cert_serial,
                "serial-001-web01"
            );
        }
    }

    both_backends! {
        async fn alerts_are_filtered_and_paged(db) {
            let s = db.open().await;
            let (id, _) = s.add_agent("web01", "any", issue("aa")).await.unwrap();
            let judged: Vec<Judged> = (1..=6u32)
                .map(|n| {
                    let mut alert = fixtures::stored_alert(i64::from(n), n).alert;
                    alert.rule_id = 31100 + n % 2;
                    alert.srcip = Some(format!("203.0.113.{}", n % 3));
                    Judged {
                        sequence: u64::from(n),
                        alert,
                    }
                })
                .collect();
            let ids = s.store_events(&id, &[], &judged, false).await.unwrap().alert_ids;
            let levels = |v: Vec<StoredAlert>| v.iter().map(|a| a.alert.level).collect::<Vec<_>>();
            let all = AlertFilter::default();
            assert_eq!(levels(s.alerts(&all).await.unwrap()), [6, 5, 4, 3, 2, 1]);
            let f = AlertFilter { min_level: 4, ..all.clone() };
            assert_eq!(levels(s.alerts(&f).await.unwrap()), [6, 5, 4]);
            let f = AlertFilter { rule_id: Some(31101), ..all.clone() };
            assert_eq!(levels(s.alerts(&f).await.unwrap()), [5, 3, 1]);
            let f = AlertFilter { srcip: Some("203.0.113.0".into()), ..all.clone() };
            assert_eq!(levels(s.alerts(&f).await.unwrap()), [6, 3]);
            let f = AlertFilter { agent_id: Some("999".into()), ..all.clone() };
            assert!(s.alerts(&f).await.unwrap().is_empty());
            let f = AlertFilter { after_id: ids[1], limit: 2, ..all.clone() };
            assert_eq!(levels(s.alerts_after(&f).await.unwrap()), [3, 4]);
            let f = AlertFilter { before_id: Some(ids[2]), ..all.clone() };
            assert_eq!(levels(s.alerts(&f).await.unwrap()), [2, 1]);
            assert_eq!(s.nth_newest_alert_id(&all, 2).await.unwrap(), Some(ids[4]));
            assert_eq!(s.nth_newest_alert_id(&all, 7).await.unwrap(), None);
            let stored = s.alerts(&all).await.unwrap();
            assert_eq!(stored[0].origin.name, "web01");
            assert_eq!(stored[0].event_sequence, Some(6));
        }
    }

    both_backends! {
        async fn openings_read_together_get_what_they_would_read_alone(db) {
            let s = db.open().await;
            let (a, _) = s.add_agent("web01", "any", issue("aa")).await.unwrap();
            let (b, _) = s.add_agent("web02", "any", issue("bb")).await.unwrap();
            s.remove_agent(&b, "test").await.unwrap();
            // Admissions: records in the order asked, unknown ids as None.
            let records = s.agents_by_id(&[&b, "999", &a, &a]).await.unwrap();
            let names: Vec<Option<&str>> =
                records.iter().map(|r| r.as_ref().map(|r| r.name.as_str())).collect();
            assert_eq!(names, [Some("web02"), None, Some("web01"), Some("web01")]);
            assert!(records[0].as_ref().unwrap().removed_at.is_some());
            let revoked = s.revoked_among(&["aa", "bb", "cc"]).await.unwrap();
            assert_eq!(revoked, ["bb".to_string()].into_iter().collect());
            assert!(s.agents_by_id(&[]).await.unwrap().is_empty());
            // New streams: a command sent down a's stream before it was
            // welcomed again is sent again; one sent after a stream's
            // Welcome is not, whichever other streams share the read.
            let (c, _) = s.add_agent("web03", "any", issue("cc")).await.unwrap();
            let tick = || tokio::time::sleep(std::time::Duration::from_millis(3));
            let early = s.insert_response(&block(&a, "192.0.2.1", Action::Add, None)).await.unwrap();
            s.claim_responses(&[early.id]).await.unwrap();
            tick().await;
            let a_welcomed = now_ms();
            tick().await;
            let late = s.insert_response(&block(&c, "192.0.2.2", Action::Add, None)).await.unwrap();
            s.claim_responses(&[late.id]).await.unwrap();
            let pending = s.insert_response(&block(&a, "192.0.2.3", Action::Add, None)).await.unwrap();
            tick().await;
            let c_welcomed = now_ms();
            let streams = [(a.as_str(), a_welcomed), (c.as_str(), c_welcomed), (c.as_str(), a_welcomed)];
            let together = s.responses_for_new_streams(&streams).await.unwrap();
            let ids = |rows: &[ResponseRow]| rows.iter().map(|r| r.id).collect::<Vec<_>>();
            assert_eq!(ids(&together[0]), [early.id, pending.id]);
            assert_eq!(ids(&together[1]), [late.id]);
            assert!(together[2].is_empty(), "sent after that Welcome");
            for ((agent, welcomed_at), rows) in streams.iter().zip(&together) {
                let alone = s.responses_for_new_stream(agent, *welcomed_at).await.unwrap();
                assert_eq!(ids(&alone), ids(rows));
            }
        }
    }

    both_backends! {
        async fn a_new_spool_starts_the_sequence_again(db) {
            let s = db.open().await;
            let (id, _) = s.add_agent("web01", "any", issue("aa")).await.unwrap();
            let hello = |spool_id| AgentHello {
                version: "1.0",
                hostname: "web01.example",
                os: "Debian",
                address: Some("192.0.2.9".into()),
                started_at: Some(5),
                spool_id,
            };
            let spool = |c: Option<Connected>| c.unwrap().spool;
            assert_eq!(spool(s.agent_connected(&id, &hello("spool-a")).await.unwrap()), SpoolChange::First);
            s.store_events(&id, &[event(1), event(2)], &[], true).await.unwrap();
            assert_eq!(spool(s.agent_connected(&id, &hello("spool-a")).await.unwrap()), SpoolChange::Same);
            assert_eq!(spool(s.agent_connected(&id, &hello("")).await.unwrap()), SpoolChange::Same, "an agent naming no spool changes nothing");
            let new = s.agent_connected(&id, &hello("spool-b")).await.unwrap().unwrap();
            assert_eq!(new.spool, SpoolChange::New { last_sequence: 2 });
            assert_eq!(new.record.last_sequence, 0, "the record written says the new spool's start");
            assert_eq!(new.record.spool_id.as_deref(), Some("spool-b"));
            let again = s.store_events(&id, &[event(1)], &[], true).await.unwrap();
            assert_eq!(again.highest, 1, "sequence 1 of the new spool is new");
            assert_eq!(s.archived_events(Some(&id)).await.unwrap().len(), 3);
            assert!(s.agent_connected("999", &hello("spool-a")).await.unwrap().is_none(), "not registered");
            let twice = s.agents_connected(&[(&id, hello("spool-b")), (&id, hello("spool-b"))]).await.unwrap();
            assert!(twice.iter().all(Option::is_some), "an agent twice in a group is answered twice");
            let a = s.agent(&id).await.unwrap().unwrap();
            assert_eq!(a.hostname.as_deref(), Some("web01.example"));
            assert_eq!(a.started_at, Some(5));
            assert!(a.first_seen.is_some());

            // A group of several agents, each written with its own fields
            // and its own spool change.
            let (web02, _) = s.add_agent("web02", "any", issue("bb")).await.unwrap();
            let (web03, _) = s.add_agent("web03", "any", issue("cc")).await.unwrap();
            s.agent_connected(&web03, &hello("spool-w3")).await.unwrap();
            let bare = AgentHello { version: "2.0", hostname: "web02.example", os: "Alpine", address: None, started_at: None, spool_id: "spool-w2" };
            let group = s.agents_connected(&[
                (&web03, AgentHello { hostname: "web03.example", ..hello("") }),
                (&id, hello("spool-c")),
                ("999", hello("spool-x")),
                (&web02, bare),
            ]).await.unwrap();
            let [three, one, none, two] = &group[..] else { panic!("{group:?}") };
            assert!(none.is_none(), "not registered");
            let (one, two, three) = (one.as_ref().unwrap(), two.as_ref().unwrap(), three.as_ref().unwrap());
            assert_eq!(one.spool, SpoolChange::New { last_sequence: 1 });
            assert_eq!((one.record.last_sequence, one.record.spool_id.as_deref()), (0, Some("spool-c")));
            assert_eq!(two.spool, SpoolChange::First);
            assert_eq!(two.record.spool_id.as_deref(), Some("spool-w2"));
            assert_eq!((two.record.version.as_deref(), two.record.hostname.as_deref(), two.record.os.as_deref()), (Some("2.0"), Some("web02.example"), Some("Alpine")));
            assert_eq!((two.record.last_address.as_deref(), two.record.started_at), (None, None));
            assert_eq!(three.spool, SpoolChange::Same);
            assert_eq!(three.record.spool_id.as_deref(), Some("spool-w3"), "an empty spool id keeps the recorded one");
            assert_eq!((three.record.hostname.as_deref(), three.record.last_address.as_deref()), (Some("web03.example"), Some("192.0.2.9")));
            let third = s.store_events(&id, &[event(1)], &[], true).await.unwrap();
            assert_eq!(third.highest, 1, "sequence 1 of the third spool is new");
            assert_eq!(s.archived_events(Some(&id)).await.unwrap().len(), 4, "archived under the new spool's epoch");

            let before = s.revocation_generation().await.unwrap();
            s.remove_agent(&id, "test").await.unwrap();
            assert!(s.revocation_generation().await.unwrap() > before);
            assert_eq!(s.removed_agent_ids().await.unwrap(), [id.as_str()]);
            assert_eq!(s.revoked_serials().await.unwrap(), ["aa"]);
            assert!(matches!(s.remove_agent(&id, "again").await, Err(StoreError::Conflict(_))));
        }
    }

    both_backends! {
        async fn blocking_commands_group_the_adds_by_the_command_they_ran(db) {
            let s = db.open().await;
            let mut agents = Vec::new();
            for name in ["web01", "web02", "web03"] {
                agents.push(s.add_agent(name, "any", issue(name)).await.unwrap().0);
            }
            let by_rule = |agent: &str| NewResponse { location: Some("/var/log/nginx/access.log".into()), ..block(agent, "203.0.113.9", Action::Add, None) };
            let by_hand = |agent: &str| NewResponse { user: None, rule_id: None, location: Some("(from_the_server)".into()), ..block(agent, "203.0.113.9", Action::Add, None) };
            let a = s.insert_response(&by_rule(&agents[0])).await.unwrap();
            let b = s.insert_response(&by_hand(&agents[1])).await.unwrap();
            let c = s.insert_response(&by_rule(&agents[2])).await.unwrap();
            let elsewhere = s.insert_response(&block(&agents[0], "203.0.113.10", Action::Add, None)).await.unwrap();
            let blocking = s.blocking_commands("203.0.113.9").await.unwrap();
            // The group with the newest add first, each group newest first.
            assert_eq!(blocking.len(), 2, "{blocking:?}");
            assert_eq!(blocking[0].adds, [(c.id, agents[2].clone()), (a.id, agents[0].clone())]);
            assert_eq!((blocking[0].rule_id, blocking[0].user.as_deref()), (Some(31151), Some("root")));
            assert_eq!(blocking[0].location.as_deref(), Some("/var/log/nginx/access.log"));
            assert_eq!(blocking[1].adds, [(b.id, agents[1].clone())]);
            assert_eq!((blocking[1].rule_id, blocking[1].user.as_deref()), (None, None));
            assert_eq!(s.blocking_commands("203.0.113.10").await.unwrap()[0].adds, [(elsewhere.id, agents[0].clone())]);
            assert!(s.blocking_commands("203.0.113.11").await.unwrap().is_empty());
        }
    }

    #[test]
    fn a_blocks_number_and_agent_are_read_or_refused() {
        assert_eq!(
            responses::number_and_agent("42 083").unwrap(),
            (42, "083".to_string())
        );
        for bad in ["42", "42 08", "x 083", "42 083 1", "42 08a", ""] {
            assert!(responses::number_and_agent(bad).is_err(), "{bad:?}");
        }
    }

    both_backends! {
        async fn a_repeated_block_supersedes_and_an_unblock_lifts_it(db) {
            let s = db.open().await;
            let (id, _) = s.add_agent("web01", "any", issue("aa")).await.unwrap();
            let first = s.insert_response(&block(&id, "203.0.113.7", Action::Add, None)).await.unwrap();
            let second = s.insert_response(&block(&id, "203.0.113.7", Action::Add, None)).await.unwrap();
            assert_eq!(s.response(first.id).await.unwrap().unwrap().status, "superseded");
            assert_eq!(s.offences(&id, "route-null600", "203.0.113.7").await.unwrap(), 2);
            assert_eq!(s.pending_responses(&id).await.unwrap().len(), 1);
            assert_eq!(s.claim_responses(&[second.id]).await.unwrap(), [second.id]);
            assert!(s.claim_responses(&[second.id]).await.unwrap().is_empty(), "claimed once");
            let done = s
                .response_result(&id, second.id, Action::Add, true, "ok", now_ms())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(done.status, "done");
            assert_eq!(done.request.user.as_deref(), Some("root"));
            let blocks = s.blocks(None, Some(&id)).await.unwrap();
            assert_eq!(blocks.len(), 1);
            assert_eq!((blocks[0].id, blocks[0].state), (second.id, "active"));
            let blocking = s.blocking_commands("203.0.113.7").await.unwrap();
            assert_eq!(blocking.len(), 1);
            assert_eq!((blocking[0].response.as_str(), blocking[0].user.as_deref()), ("route-null600", Some("root")));
            assert_eq!(blocking[0].adds, [(second.id, id.clone())], "the superseded add is not in force");
            let lift = s
                .insert_response(&block(&id, "203.0.113.7", Action::Delete, Some(second.id)))
                .await
                .unwrap();
            s.response_result(&id, lift.id, Action::Delete, true, "ok", now_ms())
                .await
                .unwrap();
            assert!(s.blocks(Some("203.0.113.7"), None).await.unwrap().is_empty());
            assert!(s.blocking_commands("203.0.113.7").await.unwrap().is_empty());
            // An unblock of an add no stream carried yet cancels it: sent
            // after the delete, it would block again what was lifted.
            let waiting = s.insert_response(&block(&id, "198.51.100.4", Action::Add, None)).await.unwrap();
            let other = s.insert_response(&block(&id, "198.51.100.5", Action::Add, None)).await.unwrap();
            assert_eq!(s.claim_responses(&[other.id]).await.unwrap(), [other.id]);
            let lifts = s
                .insert_responses(&[
                    block(&id, "198.51.100.4", Action::Delete, Some(waiting.id)),
                    block(&id, "198.51.100.5", Action::Delete, Some(other.id)),
                ])
                .await
                .unwrap();
            assert_eq!(s.response(waiting.id).await.unwrap().unwrap().status, "superseded");
            assert_eq!(s.response(other.id).await.unwrap().unwrap().status, "sent", "already carried");
            let lift_ids: Vec<i64> = lifts.iter().map(|l| l.id).collect();
            assert_eq!(s.claim_responses(&[waiting.id]).await.unwrap(), Vec::<i64>::new());
            assert_eq!(s.claim_responses(&lift_ids).await.unwrap(), lift_ids, "the deletes still go");
            assert!(s.blocking_commands("198.51.100.4").await.unwrap().is_empty());
            s.insert_refusal("route-null600", Some(&id), None, Some(31151), Some("10.0.0.1"), "white-listed")
                .await
                .unwrap();
            assert_eq!(s.refusals(10).await.unwrap()[0].reason, "white-listed");
            assert_eq!(s.recent_blocks(&id, "203.0.113.7", 0).await.unwrap(), (0, false));
        }
    }

    both_backends! {
        async fn reports_committed_together_read_as_reports_committed_one_by_one(db) {
            // The grouped writer commits a fan-out's results in one call;
            // it must leave what one call per report leaves, repeats, lifts
            // of adds in the same group and hostile reports included.
            let s = db.open().await;
            let (one, _) = s.add_agent("web01", "any", issue("aa")).await.unwrap();
            let (all, _) = s.add_agent("web02", "any", issue("bb")).await.unwrap();
            let (other, _) = s.add_agent("web03", "any", issue("cc")).await.unwrap();
            let foreign = s.insert_response(&block(&other, "203.0.113.9", Action::Add, None)).await.unwrap();
            // Per agent: a (later superseded) add, its successor, a failing
            // add, a lift of the successor, another add.
            let mut commands = std::collections::HashMap::new();
            for agent in [&one, &all] {
                let superseded = s.insert_response(&block(agent, "203.0.113.7", Action::Add, None)).await.unwrap();
                let add = s.insert_response(&block(agent, "203.0.113.7", Action::Add, None)).await.unwrap();
                let failing = s.insert_response(&block(agent, "203.0.113.8", Action::Add, None)).await.unwrap();
                // Sent (a lift recorded while its add is pending cancels it).
                s.claim_responses(&[add.id, failing.id]).await.unwrap();
                let lift = s.insert_response(&block(agent, "203.0.113.7", Action::Delete, Some(add.id))).await.unwrap();
                let timed_out = s.insert_response(&block(agent, "198.51.100.1", Action::Add, None)).await.unwrap();
                commands.insert(agent.clone(), [superseded.id, add.id, failing.id, lift.id, timed_out.id]);
            }
            let reports = |agent: &str| {
                let [superseded, add, failing, lift, timed_out] = commands[agent];
                let report = |id: i64, action: Action, ok: bool, message: &str, at: i64| CommandReport {
                    agent_id: agent.to_string(),
                    id,
                    action,
                    ok,
                    message: message.into(),
                    executed_at: at,
                };
                vec![
                    report(superseded, Action::Add, true, "late", 1_000),
                    report(add, Action::Add, true, "blocked", 2_000),
                    // Sent again after a lost stream: only the first answer counts.
                    report(add, Action::Add, false, "answered twice", 2_500),
                    report(failing, Action::Add, false, "no route table", 3_000),
                    report(timed_out, Action::Add, true, "blocked", 4_000),
                    report(lift, Action::Delete, true, "lifted", 5_000),
                    // The agent's own undo at the timeout, then a repeat.
                    report(timed_out, Action::Delete, true, "timed out", 6_000),
                    report(timed_out, Action::Delete, true, "again", 7_000),
                    // Another agent's command, and one that does not exist.
                    report(foreign.id, Action::Add, true, "not mine", 8_000),
                    report(i64::MAX, Action::Add, true, "unknown", 9_000),
                ]
            };
            let mut one_by_one = Vec::new();
            for report in reports(&one) {
                one_by_one.extend(s.response_results(std::slice::from_ref(&report)).await.unwrap());
            }
            let together = s.response_results(&reports(&all)).await.unwrap();
            let [superseded, add, failing, lift, timed_out] = commands[&all];
            // Times set when the commands were recorded (now) differ
            // between the two agents; those the reports set (below 10^6)
            // must not.
            let reported = |t: Option<i64>| t.map(|t| t.min(1_000_000));
            let read = |row: &ResponseRow| (row.status.clone(), row.executed_at, reported(row.expires_at), row.message.clone(), reported(row.undone_at));
            let answers = |rows: &[Option<ResponseRow>]| rows.iter().map(|r| r.as_ref().map(read)).collect::<Vec<_>>();
            assert_eq!(answers(&one_by_one), answers(&together));
            for (a, b) in commands[&one].iter().zip(commands[&all]) {
                let a = s.response(*a).await.unwrap().unwrap();
                let b = s.response(b).await.unwrap().unwrap();
                assert_eq!(read(&a), read(&b));
            }
            // And what that is.
            let row = |id| { let s = s.clone(); async move { s.response(id).await.unwrap().unwrap() } };
            assert_eq!((row(superseded).await.status.as_str(), row(superseded).await.message.as_deref()), ("superseded", Some("late")));
            let lifted = row(add).await;
            assert_eq!((lifted.status.as_str(), lifted.expires_at, lifted.undone_at), ("done", Some(602_000), Some(5_000)));
            let failed = row(failing).await;
            assert_eq!((failed.status.as_str(), failed.undone_at), ("failed", Some(3_000)));
            assert_eq!(row(lift).await.status, "done");
            let undone = row(timed_out).await;
            assert_eq!((undone.undone_at, undone.message.as_deref()), (Some(6_000), Some("again")));
            assert!(together[8].is_none() && together[9].is_none());
            assert_eq!(s.response(foreign.id).await.unwrap().unwrap().status, "pending");
        }
    }
}
