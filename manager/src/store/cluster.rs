//! Several managers on one database: each manager's row (who it is, when
//! it last said it was alive) and each agent's lease (which manager holds
//! the agent's one live stream in the whole cluster, under which fencing
//! generation). See `migrations/manager/0090_managers_and_leases.sql`.
//!
//! A lease is taken in one transaction with the agent's row locked, so two
//! managers taking it at once are serialised; every take counts the
//! generation up. A batch commit compares the stream's generation with the
//! agent's in its own transaction (the agent row is locked there already,
//! [`super::Store::store_fenced_events`]), so once a lease is taken over,
//! the stream that lost it can store nothing more of that agent: each event
//! is stored by one stream only, whichever manager it reached. On SQLite
//! (one manager) the same code runs and the one manager always wins.

use std::collections::HashMap;

use super::backend::{StoreRow, WriteTx, for_update, lock_in_id_order, on_pool, push_list};
use super::{AGENTS_PER_UPDATE, IDS_PER_SELECT, Store, StoreError, now_ms, to_u64};

/// An agent's id, lease holder, generation, grant time and last-seen time
/// as [`Store::take_leases`] reads them.
type LeaseColumns = (String, Option<i64>, i64, Option<i64>, Option<i64>);

/// An agent's lease while [`Store::take_leases`] decides.
#[derive(Debug, Clone, Copy)]
struct AgentLease {
    holder: Option<i64>,
    generation: i64,
    granted_at: Option<i64>,
    last_seen: Option<i64>,
    /// Taken by one of the requests: to be written.
    taken: bool,
}

/// A manager as its row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerRow {
    /// Its id, the holder named in leases.
    pub id: i64,
    /// `[manager] name`, or the host name.
    pub name: String,
    /// The address it listens on for agents.
    pub address: String,
    /// Its version.
    pub version: String,
    /// When it (last) started (ms).
    pub started_at: i64,
    /// When it last said it was alive (ms).
    pub heartbeat_at: i64,
    /// When it stopped cleanly (ms); `None` while it runs (or if it died).
    pub stopped_at: Option<i64>,
    /// Events it took in over its last minute.
    pub events_last_minute: u64,
    /// Alerts it raised over its last minute.
    pub alerts_last_minute: u64,
}

impl ManagerRow {
    /// Whether it runs: not stopped, and alive within `dead_after_ms` of
    /// `now`.
    pub fn is_alive(&self, now: i64, dead_after_ms: i64) -> bool {
        self.stopped_at.is_none() && now.saturating_sub(self.heartbeat_at) < dead_after_ms
    }
}

/// Who asks for an agent's lease, and when it may take it from another.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRequest<'a> {
    /// The agent.
    pub agent_id: &'a str,
    /// The asking manager's id.
    pub manager: i64,
    /// A holder whose heartbeat is this old (ms) is dead.
    pub dead_after_ms: i64,
    /// An agent not heard of by its holder for this long (ms; the holder
    /// writes `last_seen`) may be taken over.
    pub silent_after_ms: i64,
    /// Take it whatever the holder (the agent's renewed certificate: only
    /// the holder of its live stream was given it).
    pub takeover: bool,
}

/// A lease taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Its fencing generation: a commit stores only while it is still the
    /// agent's.
    pub generation: u64,
    /// The manager it was taken from (dead, silent or taken over), if
    /// another held it.
    pub taken_from: Option<i64>,
}

/// The lease is held by another live manager that heard the agent lately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHeld {
    /// The holder's name.
    pub manager: String,
    /// The holder's address.
    pub address: String,
    /// How long ago the holder last recorded hearing the agent (ms).
    pub silent_for_ms: i64,
}

impl Store {
    /// Records this manager at start: its row is found again by `name`
    /// (a restarted manager keeps its id, and the leases it held are its
    /// own again). Returns its id and the heartbeat the row had before, if
    /// any (a recent one while starting: another live manager may use the
    /// same name).
    pub async fn register_manager(
        &self,
        name: &str,
        address: &str,
        version: &str,
    ) -> Result<(i64, Option<ManagerRow>), StoreError> {
        on_pool!(self, pool => {
            let now = now_ms();
            let mut tx = pool.write_tx(&self.gate).await?;
            let before = sqlx::query(for_update::<Db>("SELECT * FROM managers WHERE name = $1"))
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .as_ref()
                .map(manager_from_row);
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO managers (name, address, version, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (name) DO UPDATE SET address = excluded.address, version = excluded.version,
                     started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, stopped_at = NULL,
                     events_last_minute = 0, alerts_last_minute = 0
                 RETURNING id",
            )
            .bind(name)
            .bind(address)
            .bind(version)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((id, before))
        })
    }

    /// This manager is alive, and took in this many events and alerts over
    /// its last minute.
    pub async fn manager_heartbeat(
        &self,
        id: i64,
        events_last_minute: u64,
        alerts_last_minute: u64,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE managers SET heartbeat_at = $1, events_last_minute = $2, alerts_last_minute = $3, stopped_at = NULL WHERE id = $4",
            )
            .bind(now_ms())
            .bind(super::to_i64(events_last_minute))
            .bind(super::to_i64(alerts_last_minute))
            .bind(id)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// This manager stops cleanly: its leases are released (the agents
    /// may go to another manager at once) and its row says so.
    pub async fn manager_stopped(&self, id: i64) -> Result<u64, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            let released = sqlx::query("UPDATE agents SET lease_manager = NULL WHERE lease_manager = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("UPDATE managers SET stopped_at = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(released)
        })
    }

    /// Every manager that ever ran on this database, by name.
    pub async fn managers(&self) -> Result<Vec<ManagerRow>, StoreError> {
        on_pool!(self.reads, pool => {
            let rows = sqlx::query("SELECT * FROM managers ORDER BY name")
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(manager_from_row).collect())
        })
    }

    /// Takes the agent's lease for `request.manager` (see the module
    /// doc): free, held by the asker, by a dead manager, by one that has
    /// not heard the agent for `silent_after_ms`, or `takeover`; refused
    /// otherwise with who holds it.
    pub async fn take_lease(
        &self,
        request: &LeaseRequest<'_>,
    ) -> Result<Result<Lease, LeaseHeld>, StoreError> {
        let mut taken = self.take_leases(std::slice::from_ref(request)).await?;
        taken
            .pop()
            .ok_or_else(|| StoreError::NotFound("no lease asked for".into()))
    }

    /// [`Self::take_lease`] for many streams in one transaction (a
    /// reconnect storm after a manager restart), the agents' rows locked
    /// in id order as every multi-row write does; one answer per request,
    /// in order (a second request for one agent sees the first's lease).
    /// The rows are read and written a few hundred agents per statement:
    /// a statement per agent was a round trip to the database's thread
    /// each, 20,000 of them when 10,000 agents reconnect. An unknown agent
    /// fails them all.
    pub async fn take_leases(
        &self,
        requests: &[LeaseRequest<'_>],
    ) -> Result<Vec<Result<Lease, LeaseHeld>>, StoreError> {
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by(|&x, &y| requests[x].agent_id.cmp(requests[y].agent_id));
        let mut ids: Vec<&str> = order.iter().map(|&i| requests[i].agent_id).collect();
        ids.dedup();
        on_pool!(self, pool => {
            let now = now_ms();
            let mut tx = pool.write_tx(&self.gate).await?;
            let managers: Vec<ManagerRow> = sqlx::query("SELECT * FROM managers")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(manager_from_row)
                .collect();
            // Each agent's lease as the requests before leave it.
            let mut leases: HashMap<String, AgentLease> = HashMap::with_capacity(ids.len());
            for chunk in ids.chunks(IDS_PER_SELECT) {
                let mut select = sqlx::QueryBuilder::<Db>::new(
                    "SELECT id, lease_manager, lease_generation, lease_granted_at, last_seen FROM agents WHERE id IN ",
                );
                lock_in_id_order(push_list(&mut select, chunk.iter().copied()));
                let rows: Vec<LeaseColumns> =
                    select.build_query_as().persistent(false).fetch_all(&mut *tx).await?;
                for (id, holder, generation, granted_at, last_seen) in rows {
                    let lease = AgentLease { holder, generation, granted_at, last_seen, taken: false };
                    leases.insert(id, lease);
                }
            }
            let mut answers: Vec<Option<Result<Lease, LeaseHeld>>> = vec![None; requests.len()];
            for &i in &order {
                let request = &requests[i];
                let agent_id = request.agent_id;
                let lease = leases
                    .get_mut(agent_id)
                    .ok_or_else(|| StoreError::NotFound(format!("no agent with id {agent_id}")))?;
                // What the holder last recorded of the agent: a message
                // (`last_seen`, written every few seconds), or taking the
                // lease.
                let heard = lease.last_seen.unwrap_or(0).max(lease.granted_at.unwrap_or(0));
                let taken_from = lease.holder.filter(|&h| h != request.manager);
                let silent_for_ms = now.saturating_sub(heard);
                let live_holder = taken_from
                    .filter(|_| !request.takeover && silent_for_ms < request.silent_after_ms)
                    .and_then(|h| managers.iter().find(|m| m.id == h))
                    .filter(|m| m.is_alive(now, request.dead_after_ms));
                if let Some(m) = live_holder {
                    answers[i] = Some(Err(LeaseHeld {
                        manager: m.name.clone(),
                        address: m.address.clone(),
                        silent_for_ms,
                    }));
                    continue;
                }
                *lease = AgentLease {
                    holder: Some(request.manager),
                    generation: lease.generation + 1,
                    granted_at: Some(now),
                    taken: true,
                    ..*lease
                };
                answers[i] = Some(Ok(Lease {
                    generation: to_u64(lease.generation),
                    taken_from,
                }));
            }
            let mut taken: Vec<(&str, &AgentLease)> = leases
                .iter()
                .filter(|(_, lease)| lease.taken)
                .map(|(id, lease)| (id.as_str(), lease))
                .collect();
            taken.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for chunk in taken.chunks(AGENTS_PER_UPDATE) {
                let mut update = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE agents SET lease_manager = v.column2, lease_generation = v.column3, lease_granted_at = v.column4 FROM (",
                );
                update.push_values(chunk, |mut row, &(id, lease)| {
                    row.push_bind(id)
                        .push_bind(lease.holder)
                        .push_bind(lease.generation)
                        .push_bind(lease.granted_at);
                });
                update.push(") AS v WHERE agents.id = v.column1");
                update.build().persistent(false).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(answers.into_iter().flatten().collect())
        })
    }

    /// Releases the agent's lease if it is still `generation` (a stream
    /// that ended cleanly); the generation stays, so it only goes up.
    pub async fn release_lease(&self, agent_id: &str, generation: u64) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let released = sqlx::query(
                "UPDATE agents SET lease_manager = NULL WHERE id = $1 AND lease_generation = $2 AND lease_manager IS NOT NULL",
            )
            .bind(agent_id)
            .bind(super::to_i64(generation))
            .execute(pool)
            .await?
            .rows_affected();
            Ok(released > 0)
        })
    }

    /// The leases `manager` holds: agent id and generation. Read as one
    /// string (`"<generation> <agent>,..."`): every manager reads its
    /// leases every heartbeat, and 10,000 rows, one value each, took
    /// 60-130 ms to decode.
    pub async fn held_leases(&self, manager: i64) -> Result<Vec<(String, u64)>, StoreError> {
        on_pool!(self.reads, pool => {
            let held: Option<String> = sqlx::query_scalar(
                "SELECT string_agg(CAST(lease_generation AS TEXT) || ' ' || id, ',') FROM agents WHERE lease_manager = $1",
            )
            .bind(manager)
            .fetch_one(pool)
            .await?;
            held.as_deref()
                .map_or(Ok(Vec::new()), |held| {
                    held.split(',')
                        .map(|item| {
                            let (generation, agent) = super::responses::number_and_agent(item)?;
                            Ok((agent, to_u64(generation)))
                        })
                        .collect()
                })
        })
    }
}

fn manager_from_row(r: &impl StoreRow) -> ManagerRow {
    ManagerRow {
        id: r.col("id"),
        name: r.col("name"),
        address: r.col("address"),
        version: r.col("version"),
        started_at: r.col("started_at"),
        heartbeat_at: r.col("heartbeat_at"),
        stopped_at: r.col("stopped_at"),
        events_last_minute: to_u64(r.col("events_last_minute")),
        alerts_last_minute: to_u64(r.col("alerts_last_minute")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::IncomingEvent;
    use crate::store::testing::both_backends;

    const MINUTE: i64 = 60_000;

    fn ask(agent_id: &str, manager: i64) -> LeaseRequest<'_> {
        LeaseRequest {
            agent_id,
            manager,
            dead_after_ms: MINUTE,
            silent_after_ms: MINUTE,
            takeover: false,
        }
    }

    fn event(sequence: u64) -> IncomingEvent<'static> {
        IncomingEvent {
            sequence,
            location: "/var/log/x",
            log_format: "syslog",
            read_at: 1,
            read_at_clamped: false,
            truncated: false,
            line: b"a line",
        }
    }

    async fn two_managers(store: &Store) -> (i64, i64) {
        store
            .add_agent("web01", "any", |_| Ok(("aa".to_string(), ())))
            .await
            .unwrap();
        let (a, _) = store
            .register_manager("a", "192.0.2.1:1515", "1")
            .await
            .unwrap();
        let (b, _) = store
            .register_manager("b", "192.0.2.2:1515", "1")
            .await
            .unwrap();
        (a, b)
    }

    both_backends! {
        async fn a_lease_is_taken_refused_and_taken_over_from_a_dead_manager(db) {
            let store = db.open().await;
            let (a, b) = two_managers(&store).await;
            assert_ne!(a, b);
            // A restarted manager keeps its id, and says when it last beat.
            let (again, before) = store.register_manager("a", "192.0.2.1:1515", "2").await.unwrap();
            assert_eq!(again, a);
            assert!(before.is_some());

            let first = store.take_lease(&ask("001", a)).await.unwrap().unwrap();
            assert_eq!(first, Lease { generation: 1, taken_from: None });
            // Held by itself: taken again, a new generation.
            let second = store.take_lease(&ask("001", a)).await.unwrap().unwrap();
            assert_eq!(second.generation, 2);
            // b is refused while a is alive and heard the agent lately.
            let held = store.take_lease(&ask("001", b)).await.unwrap().unwrap_err();
            assert_eq!(held.manager, "a");
            assert_eq!(held.address, "192.0.2.1:1515");
            assert_eq!(store.held_leases(a).await.unwrap(), [("001".to_string(), 2)]);
            // The agent silent past the bound: taken over.
            let silent = LeaseRequest { silent_after_ms: 0, ..ask("001", b) };
            let third = store.take_lease(&silent).await.unwrap().unwrap();
            assert_eq!(third, Lease { generation: 3, taken_from: Some(a) });
            // Back to a with the renewed certificate (takeover).
            let renewed = LeaseRequest { takeover: true, ..ask("001", a) };
            assert_eq!(store.take_lease(&renewed).await.unwrap().unwrap().generation, 4);
            // a dies (its heartbeat ages past the bound): b takes over.
            store
                .execute_for_test("UPDATE managers SET heartbeat_at = heartbeat_at - $1 WHERE name = 'a'", 2 * MINUTE)
                .await;
            let managers = store.managers().await.unwrap();
            assert!(!managers[0].is_alive(now_ms(), MINUTE));
            assert!(managers[1].is_alive(now_ms(), MINUTE));
            let over = store.take_lease(&ask("001", b)).await.unwrap().unwrap();
            assert_eq!(over, Lease { generation: 5, taken_from: Some(a) });
            // A clean end releases it; an older generation releases nothing.
            assert!(!store.release_lease("001", 4).await.unwrap());
            assert!(store.release_lease("001", 5).await.unwrap());
            assert!(store.held_leases(b).await.unwrap().is_empty());
            let free = store.take_lease(&ask("001", a)).await.unwrap().unwrap();
            assert_eq!(free, Lease { generation: 6, taken_from: None });
            // A manager that stops cleanly lets its leases go.
            assert_eq!(store.manager_stopped(a).await.unwrap(), 1);
            let stopped = store.take_lease(&ask("001", b)).await.unwrap().unwrap();
            assert_eq!(stopped, Lease { generation: 7, taken_from: None });
        }

        async fn leases_taken_together_answer_each_stream_in_order(db) {
            let store = db.open().await;
            let (a, b) = two_managers(&store).await;
            for name in ["web02", "web03"] {
                store
                    .add_agent(name, "any", |_| Ok((format!("s-{name}"), ())))
                    .await
                    .unwrap();
            }
            // a holds 002 (live); b asks for 003, 002 and 001 at once.
            store.take_lease(&ask("002", a)).await.unwrap().unwrap();
            let answers = store
                .take_leases(&[ask("003", b), ask("002", b), ask("001", b)])
                .await
                .unwrap();
            assert_eq!(answers[0], Ok(Lease { generation: 1, taken_from: None }));
            assert_eq!(answers[1].as_ref().unwrap_err().manager, "a");
            assert_eq!(answers[2], Ok(Lease { generation: 1, taken_from: None }));
            let mut held = store.held_leases(b).await.unwrap();
            held.sort();
            assert_eq!(held, [("001".to_string(), 1), ("003".to_string(), 1)]);
            // An unknown agent fails the group (the callers retry alone).
            assert!(store.take_leases(&[ask("001", b), ask("999", b)]).await.is_err());
            assert_eq!(store.held_leases(b).await.unwrap().len(), 2, "nothing of it kept");
            // One agent twice in a group: the second sees the first's lease.
            let twice = store.take_leases(&[ask("001", b), ask("003", b), ask("001", b)]).await.unwrap();
            assert_eq!(twice[0], Ok(Lease { generation: 2, taken_from: None }));
            assert_eq!(twice[1], Ok(Lease { generation: 2, taken_from: None }));
            assert_eq!(twice[2], Ok(Lease { generation: 3, taken_from: None }));
            let mut held = store.held_leases(b).await.unwrap();
            held.sort();
            assert_eq!(held, [("001".to_string(), 3), ("003".to_string(), 2)]);
        }

        async fn a_commit_under_a_lost_lease_is_refused(db) {
            let store = db.open().await;
            let (a, b) = two_managers(&store).await;
            let old = store.take_lease(&ask("001", a)).await.unwrap().unwrap();
            let stored = store
                .store_fenced_events("001", Some(old.generation), &[event(1), event(2)], &[], true)
                .await
                .unwrap();
            assert_eq!(stored.highest, 2);
            let silent = LeaseRequest { silent_after_ms: 0, ..ask("001", b) };
            let new = store.take_lease(&silent).await.unwrap().unwrap();
            // The old stream's next batch is refused, and nothing of it kept.
            let refused = store
                .store_fenced_events("001", Some(old.generation), &[event(3)], &[], true)
                .await
                .unwrap_err();
            assert!(matches!(refused, StoreError::LeaseLost(_)), "{refused:?}");
            assert!(refused.to_string().contains("generation"), "{refused}");
            assert_eq!(store.agent("001").await.unwrap().unwrap().last_sequence, 2);
            // The new holder stores it, once.
            let stored = store
                .store_fenced_events("001", Some(new.generation), &[event(3)], &[], true)
                .await
                .unwrap();
            assert_eq!(stored.highest, 3);
            let archived: Vec<u64> = store
                .archived_events(Some("001"))
                .await
                .unwrap()
                .iter()
                .map(|e| e.sequence)
                .collect();
            assert_eq!(archived, [1, 2, 3]);
        }

        async fn heartbeats_of_many_agents_lock_in_one_order(db) {
            // Two managers flushing heartbeats of the same agents in
            // opposite orders at once: on PostgreSQL, without a fixed lock
            // order, this deadlocks (an error after the server's
            // deadlock_timeout); with it, every flush succeeds.
            let store = db.open().await;
            let mut ids = Vec::new();
            for i in 0..40 {
                let (id, ()) = store
                    .add_agent(&format!("h{i}"), "any", |_| Ok((format!("s{i}"), ())))
                    .await
                    .unwrap();
                ids.push(id);
            }
            let seen = |at: i64| crate::heartbeats::Seen { at, figures: None };
            let forward: Vec<(String, crate::heartbeats::Seen)> =
                ids.iter().map(|id| (id.clone(), seen(1))).collect();
            let backward: Vec<(String, crate::heartbeats::Seen)> =
                ids.iter().rev().map(|id| (id.clone(), seen(2))).collect();
            let mut flushes = tokio::task::JoinSet::new();
            for round in 0..20 {
                let (store, rows) = (
                    store.clone(),
                    if round % 2 == 0 { forward.clone() } else { backward.clone() },
                );
                flushes.spawn(async move { store.record_heartbeats(&rows).await });
            }
            while let Some(done) = flushes.join_next().await {
                done.unwrap().unwrap();
            }
            let a = store.agent(&ids[0]).await.unwrap().unwrap();
            assert_eq!(a.last_seen, Some(2));
        }
    }
}
