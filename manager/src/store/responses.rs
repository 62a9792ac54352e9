//! Active responses in the database: commands with their delivery and
//! results, the blocks in force, and the decisions refused.

use std::collections::{HashMap, HashSet};

use sqlx::Row;

use super::backend::{Dialect, push_list};
use super::notify::{RESPONSES_CHANNEL, responses_payload};
use super::{Store, StoreError, StoreRow, WriteTx, now_ms, on_pool, to_i64, to_u64};

/// Rows (or ids) per multi-row statement: 16 parameters a row stays far
/// below SQLite's limit of 32,766.
const ROWS_PER_STATEMENT: usize = 500;

pub use palisade_proto::action::Action;

/// An `action` column's value (anything but `delete` is an add, as
/// before the column had only these two).
fn action_from_column(text: &str) -> Action {
    if text == "delete" {
        Action::Delete
    } else {
        Action::Add
    }
}

/// A command to record before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewResponse {
    /// Target agent.
    pub agent_id: String,
    /// OSSEC name, e.g. `route-null600`.
    pub response: String,
    /// Command name.
    pub command: String,
    /// Built-in name or script path.
    pub executable: String,
    /// Block or lift.
    pub action: Action,
    /// Address.
    pub srcip: Option<String>,
    /// User.
    pub user: Option<String>,
    /// The alert that caused it.
    pub alert_id: Option<i64>,
    /// The rule that caused it.
    pub rule_id: Option<u32>,
    /// The alert's location.
    pub location: Option<String>,
    /// Seconds until undone; `None` never.
    pub timeout_s: Option<u64>,
    /// For a delete: the add it lifts.
    pub undoes: Option<i64>,
}

/// A recorded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRow {
    /// Id, also the command id the agent sees.
    pub id: i64,
    /// The request as recorded.
    pub request: NewResponse,
    /// When decided (ms).
    pub issued_at: i64,
    /// When sent down the agent's stream (ms).
    pub sent_at: Option<i64>,
    /// When the agent carried it out (ms).
    pub executed_at: Option<i64>,
    /// When a block ends (ms).
    pub expires_at: Option<i64>,
    /// When a block was lifted (ms).
    pub undone_at: Option<i64>,
    /// pending, sent, done, failed, superseded, expired.
    pub status: String,
    /// The agent's message or the reason.
    pub message: Option<String>,
}

/// A block in force on one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRow {
    /// The add command's id.
    pub id: i64,
    /// Agent.
    pub agent_id: String,
    /// Address.
    pub srcip: String,
    /// OSSEC name.
    pub response: String,
    /// Rule, if a rule caused it.
    pub rule_id: Option<u32>,
    /// Alert, if an alert caused it.
    pub alert_id: Option<i64>,
    /// When it was decided (ms).
    pub issued_at: i64,
    /// When it ends (ms), if ever.
    pub expires_at: Option<i64>,
    /// `pending` until the agent confirms, then `active`.
    pub state: &'static str,
}

/// A response that was decided but not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalRow {
    /// When (ms).
    pub time: i64,
    /// OSSEC name.
    pub response: String,
    /// The agent it was meant for.
    pub agent_id: Option<String>,
    /// The rule that triggered it.
    pub rule_id: Option<u32>,
    /// The address as the alert had it.
    pub srcip: Option<String>,
    /// Why.
    pub reason: String,
}

fn row_to_response(r: &impl StoreRow) -> ResponseRow {
    let action: String = r.col("action");
    let action = action_from_column(&action);
    ResponseRow {
        id: r.col("id"),
        request: NewResponse {
            agent_id: r.col("agent_id"),
            response: r.col("response"),
            command: r.col("command"),
            executable: r.col("executable"),
            action,
            srcip: r.col("srcip"),
            user: r.col("user"),
            alert_id: r.col("alert_id"),
            rule_id: r
                .col::<Option<i64>>("rule_id")
                .and_then(|v| u32::try_from(v).ok()),
            location: r.col("location"),
            timeout_s: r.col::<Option<i64>>("timeout_s").map(to_u64),
            undoes: r.col("undoes"),
        },
        issued_at: r.col("issued_at"),
        sent_at: r.col("sent_at"),
        executed_at: r.col("executed_at"),
        expires_at: r.col("expires_at"),
        undone_at: r.col("undone_at"),
        status: r.col("status"),
        message: r.col("message"),
    }
}

/// Blocks of one address in force that ran the same command
/// ([`Store::blocking_commands`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockingCommands {
    /// OSSEC name, e.g. `route-null600`.
    pub response: String,
    /// Command name.
    pub command: String,
    /// Built-in name or script path.
    pub executable: String,
    /// User.
    pub user: Option<String>,
    /// The rule that caused them.
    pub rule_id: Option<u32>,
    /// The alerts' location.
    pub location: Option<String>,
    /// Each add's id and agent, newest first.
    pub adds: Vec<(i64, String)>,
}

/// A command's response, command, executable, user, rule, location and
/// `"<id> <agent>,..."` list as [`Store::blocking_commands`] reads them.
type BlockingColumns = (
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    String,
);

/// One `"<number> <agent>"` of a list read as one string (the add ids of
/// [`Store::blocking_commands`], the generations of
/// [`Store::held_leases`]): agent ids are digits
/// (`identity::is_valid_agent_id`), so neither the space nor the comma
/// can be part of one; anything else is refused, not guessed.
pub(super) fn number_and_agent(item: &str) -> Result<(i64, String), StoreError> {
    item.split_once(' ')
        .and_then(|(id, agent)| {
            let id = id.parse::<i64>().ok()?;
            palisade_proto::identity::is_valid_agent_id(agent).then(|| (id, agent.to_string()))
        })
        .ok_or_else(|| {
            StoreError::Sqlx(sqlx::Error::Decode(
                format!("a number and an agent id: {item:?}").into(),
            ))
        })
}

/// How long after it was issued a command the agent never answered is
/// sent again on its next stream ([`Store::responses_for_new_stream`]).
pub const RESEND_WITHIN: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What an agent reported for one of its commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReport {
    /// The reporting agent.
    pub agent_id: String,
    /// The command id it reported on.
    pub id: i64,
    /// What it executed.
    pub action: Action,
    /// Whether it succeeded.
    pub ok: bool,
    /// Its message.
    pub message: String,
    /// When (ms).
    pub executed_at: i64,
}

/// Applies an agent's report on its command `row` (read in the same
/// write transaction) as the database records it; returns the add whose
/// block a successful lift ended, whose `undone_at` is set too.
fn apply_report(row: &mut ResponseRow, report: &CommandReport) -> Option<i64> {
    let at = report.executed_at;
    match (row.request.action, report.action) {
        // Only the agent's first answer is recorded (a command sent
        // again after a lost stream may be answered twice).
        (Action::Add, Action::Add) if row.executed_at.is_some() => None,
        (Action::Add, Action::Add) => {
            if row.status != "superseded" {
                row.status = if report.ok { "done" } else { "failed" }.into();
            }
            row.executed_at = Some(at);
            if let Some(t) = row.request.timeout_s {
                row.expires_at = Some(at.saturating_add(to_i64(t).saturating_mul(1000)));
            }
            row.message = Some(report.message.clone());
            if !report.ok {
                row.undone_at = Some(at);
            }
            None
        }
        (Action::Add, Action::Delete) => {
            // The agent lifted the block itself (timeout).
            row.undone_at = row.undone_at.or(Some(at));
            row.message = Some(report.message.clone());
            None
        }
        (Action::Delete, _) => {
            if row.executed_at.is_none() {
                row.status = if report.ok { "done" } else { "failed" }.into();
                row.executed_at = Some(at);
                row.message = Some(report.message.clone());
            }
            row.request.undoes.filter(|_| report.ok)
        }
    }
}

impl Store {
    /// Records a command as pending. An add for an address that already has
    /// a block of the same response on the same agent supersedes it (the
    /// agent extends the block). Returns the new row.
    pub async fn insert_response(&self, new: &NewResponse) -> Result<ResponseRow, StoreError> {
        self.insert_responses(std::slice::from_ref(new))
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound("the command was not recorded".into()))
    }

    /// Records the commands of one decision (a fan-out to every agent, or
    /// one command) as pending, all or none, in one transaction: a few
    /// multi-row statements rather than two per agent. Adds supersede the
    /// blocks they repeat as [`Self::insert_response`] says; a delete
    /// cancels (supersedes) the add it undoes if that is still pending, so
    /// that it is never sent after the delete. Returns the rows in id
    /// order.
    pub async fn insert_responses(
        &self,
        new: &[NewResponse],
    ) -> Result<Vec<ResponseRow>, StoreError> {
        self.insert_responses_claiming(new, |_| false).await
    }

    /// [`Self::insert_responses`], the commands of agents for which
    /// `held_here` holds recorded as already claimed for sending by this
    /// manager (`sent`, as [`Self::claim_responses`] would mark them, in
    /// the same transaction: no second commit before they go out). The
    /// others stay pending and the managers holding their agents are
    /// notified on commit.
    pub async fn insert_responses_claiming(
        &self,
        new: &[NewResponse],
        held_here: impl Fn(&str) -> bool,
    ) -> Result<Vec<ResponseRow>, StoreError> {
        // Ahead of ingestion's queue of commits (`gate.rs`).
        let _urgent = self.gate.urgent();
        on_pool!(self, pool => {
            let now = now_ms();
            let mut tx = pool.write_tx(&self.gate).await?;
            // Superseding, per (response, address): one statement per chunk of
            // agents.
            let mut repeats: HashMap<(&str, Option<&str>), Vec<&str>> = HashMap::new();
            for n in new.iter().filter(|n| n.action == Action::Add) {
                repeats
                    .entry((n.response.as_str(), n.srcip.as_deref()))
                    .or_default()
                    .push(n.agent_id.as_str());
            }
            for ((response, srcip), agents) in &repeats {
                for chunk in agents.chunks(ROWS_PER_STATEMENT) {
                    let mut update = sqlx::QueryBuilder::<Db>::new(
                        "UPDATE responses SET status = 'superseded', undone_at = ",
                    );
                    update
                        .push_bind(now)
                        .push(" WHERE response = ")
                        .push_bind(*response)
                        .push(" AND srcip IS NOT DISTINCT FROM ")
                        .push_bind(*srcip)
                        .push(
                            " AND action = 'add' AND status IN ('pending', 'sent', 'done') AND undone_at IS NULL AND agent_id IN ",
                        );
                    push_list(&mut update, chunk.iter().copied());
                    update.build().execute(&mut *tx).await?;
                }
            }
            // An unblock cancels the adds it lifts that no stream carried
            // yet: sent after the unblock (by another task, or the
            // manager holding the agent), they would block again what
            // the operator lifted. The delete goes anyway: an older add
            // this one superseded may be in force on the agent.
            let undone: Vec<i64> = new
                .iter()
                .filter(|n| n.action == Action::Delete)
                .filter_map(|n| n.undoes)
                .collect();
            for chunk in undone.chunks(ROWS_PER_STATEMENT) {
                let mut update = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE responses SET status = 'superseded', undone_at = ",
                );
                update
                    .push_bind(now)
                    .push(" WHERE action = 'add' AND status = 'pending' AND id IN ");
                push_list(&mut update, chunk.iter().copied());
                update.build().execute(&mut *tx).await?;
            }
            let mut rows = Vec::with_capacity(new.len());
            for chunk in new.chunks(ROWS_PER_STATEMENT) {
                let mut insert = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO responses (agent_id, response, command, executable, action, srcip, \"user\", alert_id,
                         rule_id, location, timeout_s, issued_at, expires_at, undoes, status, sent_at) ",
                );
                insert.push_values(chunk, |mut row, new| {
                    let expires_at = new.timeout_s.map(|t| now + to_i64(t) * 1000);
                    let claimed = held_here(&new.agent_id);
                    row.push_bind(&new.agent_id)
                        .push_bind(&new.response)
                        .push_bind(&new.command)
                        .push_bind(&new.executable)
                        .push_bind(new.action.as_str())
                        .push_bind(new.srcip.as_deref())
                        .push_bind(new.user.as_deref())
                        .push_bind(new.alert_id)
                        .push_bind(new.rule_id.map(i64::from))
                        .push_bind(new.location.as_deref())
                        .push_bind(new.timeout_s.map(to_i64))
                        .push_bind(now)
                        .push_bind(expires_at)
                        .push_bind(new.undoes)
                        .push_bind(if claimed { "sent" } else { "pending" })
                        .push_bind(claimed.then_some(now));
                });
                insert.push(" RETURNING *");
                rows.extend(
                    insert
                        .build()
                        .fetch_all(&mut *tx)
                        .await?
                        .iter()
                        .map(row_to_response),
                );
            }
            // Wakes the managers holding the other agents, on commit.
            let elsewhere: Vec<&str> = rows
                .iter()
                .filter(|r| r.status == "pending")
                .map(|r| r.request.agent_id.as_str())
                .collect();
            if let Some(notify) = Db::NOTIFY && !elsewhere.is_empty() {
                sqlx::query(notify)
                    .bind(RESPONSES_CHANNEL)
                    .bind(responses_payload(self.origin, elsewhere))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            rows.sort_by_key(|r| r.id);
            Ok(rows)
        })
    }

    /// How many adds of `response` for `srcip` on `agent_id` were ever
    /// issued (for repeated offenders).
    pub async fn offences(
        &self,
        agent_id: &str,
        response: &str,
        srcip: &str,
    ) -> Result<u64, StoreError> {
        on_pool!(self.reads, pool => {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM responses WHERE agent_id = $1 AND response = $2 AND srcip = $3
                   AND action = 'add' AND status IN ('pending', 'sent', 'done', 'superseded')",
            )
            .bind(agent_id)
            .bind(response)
            .bind(srcip)
            .fetch_one(pool)
            .await?;
            Ok(to_u64(n))
        })
    }

    /// Claims pending commands for sending: marks them sent and returns
    /// the ids this call claimed, in one transaction. A command claimed by
    /// another caller (another manager, or this one's reconnect path) is
    /// left out, so that no command goes down a stream twice; claim first,
    /// then send, and [`Self::release_responses`] what could not be sent.
    pub async fn claim_responses(&self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        on_pool!(self, pool => {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let now = now_ms();
            let mut claimed = Vec::with_capacity(ids.len());
            let mut tx = pool.write_tx(&self.gate).await?;
            for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                let mut update = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE responses SET status = 'sent', sent_at = ",
                );
                update
                    .push_bind(now)
                    .push(" WHERE status = 'pending' AND id IN ");
                push_list(&mut update, chunk.iter().copied()).push(" RETURNING id");
                let got: Vec<i64> = update.build_query_scalar().fetch_all(&mut *tx).await?;
                claimed.extend(got);
            }
            tx.commit().await?;
            claimed.sort_unstable();
            Ok(claimed)
        })
    }

    /// Hands back claimed commands that could not be sent (the stream
    /// ended): pending again, and the managers holding their agents now are
    /// woken.
    pub async fn release_responses(&self, rows: &[&ResponseRow]) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            if rows.is_empty() {
                return Ok(());
            }
            let mut tx = pool.write_tx(&self.gate).await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut update = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE responses SET status = 'pending', sent_at = NULL WHERE status = 'sent' AND id IN ",
                );
                push_list(&mut update, chunk.iter().map(|row| row.id));
                update.build().execute(&mut *tx).await?;
            }
            if let Some(notify) = Db::NOTIFY {
                // Origin 0: this manager looks again too.
                sqlx::query(notify)
                    .bind(RESPONSES_CHANNEL)
                    .bind(responses_payload(0, rows.iter().map(|r| r.request.agent_id.as_str())))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Which of `agent_ids` another live manager holds: its lease is on
    /// the agent, it has not stopped and it said it was alive after
    /// `alive_since` (ms). Those managers take the agents' commands.
    pub async fn held_by_other_managers(
        &self,
        agent_ids: &[&str],
        me: i64,
        alive_since: i64,
    ) -> Result<HashSet<String>, StoreError> {
        on_pool!(self.reads, pool => {
            let mut held = HashSet::new();
            for chunk in agent_ids.chunks(ROWS_PER_STATEMENT) {
                let mut select = sqlx::QueryBuilder::<Db>::new(
                    "SELECT a.id FROM agents a JOIN managers m ON m.id = a.lease_manager
                     WHERE m.id <> ",
                );
                select
                    .push_bind(me)
                    .push(" AND m.stopped_at IS NULL AND m.heartbeat_at > ")
                    .push_bind(alive_since)
                    .push(" AND a.id IN ");
                push_list(&mut select, chunk.iter().copied());
                let got: Vec<String> = select.build_query_scalar().fetch_all(pool).await?;
                held.extend(got);
            }
            Ok(held)
        })
    }

    /// Which of `ids` are still pending (not claimed by any manager).
    pub async fn still_pending(&self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        on_pool!(self.reads, pool => {
            let mut pending = Vec::new();
            for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                let mut select = sqlx::QueryBuilder::<Db>::new(
                    "SELECT id FROM responses WHERE status = 'pending' AND id IN ",
                );
                push_list(&mut select, chunk.iter().copied());
                let got: Vec<i64> = select.build_query_scalar().fetch_all(pool).await?;
                pending.extend(got);
            }
            pending.sort_unstable();
            Ok(pending)
        })
    }

    /// The commands an alert caused, in order.
    pub async fn responses_for_alert(&self, alert_id: i64) -> Result<Vec<ResponseRow>, StoreError> {
        on_pool!(self.reads, pool => {
            let rows = sqlx::query("SELECT * FROM responses WHERE alert_id = $1 ORDER BY id")
                .bind(alert_id)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(row_to_response).collect())
        })
    }

    /// The commands each of `alert_ids` caused, in one query (a page of
    /// alerts for the control API); alerts without any are absent.
    pub async fn responses_for_alerts(
        &self,
        alert_ids: &[i64],
    ) -> Result<HashMap<i64, Vec<ResponseRow>>, StoreError> {
        on_pool!(self.reads, pool => {
            let (Some(low), Some(high)) = (alert_ids.iter().min(), alert_ids.iter().max()) else {
                return Ok(HashMap::new());
            };
            let rows =
                sqlx::query("SELECT * FROM responses WHERE alert_id BETWEEN $1 AND $2 ORDER BY id")
                    .bind(low)
                    .bind(high)
                    .fetch_all(pool)
                    .await?;
            let wanted: HashSet<i64> = alert_ids.iter().copied().collect();
            let mut by_alert: HashMap<i64, Vec<ResponseRow>> = HashMap::new();
            for row in rows.iter().map(row_to_response) {
                if let Some(id) = row.request.alert_id
                    && wanted.contains(&id)
                {
                    by_alert.entry(id).or_default().push(row);
                }
            }
            Ok(by_alert)
        })
    }

    /// Commands waiting for an agent, oldest first; those whose block
    /// would already have ended are marked expired and left out. An agent
    /// with nothing waiting (the common case, at every connect) costs one
    /// read and no write.
    pub async fn pending_responses(&self, agent_id: &str) -> Result<Vec<ResponseRow>, StoreError> {
        self.pending_responses_of(&[agent_id]).await
    }

    /// [`Self::pending_responses`] of several agents, in id order.
    pub async fn pending_responses_of(
        &self,
        agent_ids: &[&str],
    ) -> Result<Vec<ResponseRow>, StoreError> {
        self.responses_to_send(agent_ids, None).await
    }

    /// What a new stream of `agent_id`, welcomed at `welcomed_at` (ms),
    /// carries first, in id order: the commands pending for it
    /// ([`Self::pending_responses`]), and those sent before it (down an
    /// earlier stream, here or on another manager) that the agent never
    /// answered, issued in the last [`RESEND_WITHIN`]: the earlier stream
    /// may have ended with them still in its buffers (a manager killed,
    /// a connection cut). Sent again, they are `sent` already; the agent
    /// recognises a command it carried out by its id. Adds lifted or
    /// ended meanwhile are not sent again.
    pub async fn responses_for_new_stream(
        &self,
        agent_id: &str,
        welcomed_at: i64,
    ) -> Result<Vec<ResponseRow>, StoreError> {
        Ok(self
            .responses_for_new_streams(&[(agent_id, welcomed_at)])
            .await?
            .pop()
            .unwrap_or_default())
    }

    /// [`Self::responses_for_new_stream`] for many new streams (`(agent,
    /// welcomed_at)`) in one statement per 500 (a reconnect storm opens
    /// thousands at once): read with the widest of their bounds, then
    /// each stream's own applied. One list of rows per stream, in order.
    pub async fn responses_for_new_streams(
        &self,
        streams: &[(&str, i64)],
    ) -> Result<Vec<Vec<ResponseRow>>, StoreError> {
        let resend_within = to_i64(RESEND_WITHIN.as_millis() as u64);
        let (Some(latest), Some(earliest)) = (
            streams.iter().map(|s| s.1).max(),
            streams.iter().map(|s| s.1).min(),
        ) else {
            return Ok(Vec::new());
        };
        let ids: Vec<&str> = streams.iter().map(|s| s.0).collect();
        let rows = self
            .responses_to_send(&ids, Some((latest, earliest - resend_within)))
            .await?;
        Ok(streams
            .iter()
            .map(|&(agent, welcomed_at)| {
                rows.iter()
                    .filter(|r| r.request.agent_id == agent)
                    .filter(|r| {
                        r.status == "pending"
                            || (r.sent_at.is_some_and(|t| t < welcomed_at)
                                && r.issued_at > welcomed_at - resend_within)
                    })
                    .cloned()
                    .collect()
            })
            .collect())
    }

    /// The pending commands of `agent_ids`, and with `unanswered =
    /// Some((sent_before, issued_after))` the unanswered ones
    /// [`Self::responses_for_new_stream`] sends again.
    async fn responses_to_send(
        &self,
        agent_ids: &[&str],
        unanswered: Option<(i64, i64)>,
    ) -> Result<Vec<ResponseRow>, StoreError> {
        on_pool!(self, pool => {
            let now = now_ms();
            let mut rows = Vec::new();
            for chunk in agent_ids.chunks(ROWS_PER_STATEMENT) {
                let mut select = sqlx::QueryBuilder::<Db>::new("SELECT * FROM responses WHERE (status = 'pending'");
                if let Some((sent_before, issued_after)) = unanswered {
                    select
                        .push(" OR (status = 'sent' AND sent_at < ")
                        .push_bind(sent_before)
                        .push(" AND issued_at > ")
                        .push_bind(issued_after)
                        .push(" AND (action = 'delete' OR (undone_at IS NULL AND (expires_at IS NULL OR expires_at > ")
                        .push_bind(now)
                        .push("))))");
                }
                select.push(") AND agent_id IN ");
                push_list(&mut select, chunk.iter().copied()).push(" ORDER BY id");
                rows.extend(select.build().persistent(false).fetch_all(pool).await?.iter().map(row_to_response));
            }
            rows.sort_by_key(|r| r.id);
            let (expired, pending): (Vec<ResponseRow>, Vec<ResponseRow>) =
                rows.into_iter().partition(|r| {
                    r.status == "pending"
                        && r.request.action == Action::Add
                        && r.expires_at.is_some_and(|t| t <= now)
                });
            if !expired.is_empty() {
                let mut tx = pool.write_tx(&self.gate).await?;
                for row in &expired {
                    sqlx::query(
                        "UPDATE responses SET status = 'expired', message = 'expired before the agent came back'
                         WHERE id = $1 AND status = 'pending'",
                    )
                    .bind(row.id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
            Ok(pending)
        })
    }

    /// One command.
    pub async fn response(&self, id: i64) -> Result<Option<ResponseRow>, StoreError> {
        on_pool!(self.reads, pool => {
            let row = sqlx::query("SELECT * FROM responses WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.as_ref().map(row_to_response))
        })
    }

    /// Records what an agent reported for command `id`: `action` is what
    /// it executed (an agent's own undo at the timeout reports the add's id
    /// with `delete`). Only the reporting agent's commands are touched.
    pub async fn response_result(
        &self,
        agent_id: &str,
        id: i64,
        action: Action,
        ok: bool,
        message: &str,
        executed_at: i64,
    ) -> Result<Option<ResponseRow>, StoreError> {
        let report = CommandReport {
            agent_id: agent_id.to_string(),
            id,
            action,
            ok,
            message: message.to_string(),
            executed_at,
        };
        Ok(self.response_results(&[report]).await?.pop().flatten())
    }

    /// Records many agents' reports ([`Self::response_result`] each) in
    /// one transaction: after a fan-out to thousands of agents their
    /// results arrive together, and one commit each would queue them all
    /// on the write lock. The commands reported on (and the adds their
    /// lifts undo) are read in a few statements, the reports applied to
    /// them in order in memory ([`apply_report`]), and the changed rows
    /// written back in a few more: three statements per report made a
    /// fan-out's results hold the write lock for most of a second, ahead
    /// of the next operator's request. Returns, per report, the command as
    /// it now is (`None` for an unknown command or another agent's).
    pub async fn response_results(
        &self,
        reports: &[CommandReport],
    ) -> Result<Vec<Option<ResponseRow>>, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            let mut rows: HashMap<i64, ResponseRow> = HashMap::new();
            // Locked (PostgreSQL) until the commit, in id order; SQLite's
            // write transaction excludes other writers already.
            let mut wanted: Vec<i64> = reports.iter().map(|r| r.id).collect();
            for round in 0..2 {
                wanted.sort_unstable();
                wanted.dedup();
                for chunk in wanted.chunks(ROWS_PER_STATEMENT) {
                    let mut select =
                        sqlx::QueryBuilder::<Db>::new("SELECT * FROM responses WHERE id IN ");
                    push_list(&mut select, chunk.iter().copied()).push(" ORDER BY id").push(Db::FOR_UPDATE);
                    for row in select.build().fetch_all(&mut *tx).await?.iter() {
                        let row = row_to_response(row);
                        rows.insert(row.id, row);
                    }
                }
                if round == 0 {
                    // The adds that the lifts reported on undo.
                    wanted = rows
                        .values()
                        .filter(|r| r.request.action == Action::Delete)
                        .filter_map(|r| r.request.undoes)
                        .filter(|id| !rows.contains_key(id))
                        .collect();
                }
            }
            let mut changed: Vec<i64> = Vec::new();
            let mut recorded = Vec::with_capacity(reports.len());
            for report in reports {
                let Some(row) = rows
                    .get_mut(&report.id)
                    .filter(|row| row.request.agent_id == report.agent_id)
                else {
                    recorded.push(None);
                    continue;
                };
                let undoes = apply_report(row, report);
                changed.push(row.id);
                recorded.push(Some(row.clone()));
                if let Some(add) = undoes.and_then(|id| rows.get_mut(&id)) {
                    add.undone_at = add.undone_at.or(Some(report.executed_at));
                    changed.push(add.id);
                }
            }
            changed.sort_unstable();
            changed.dedup();
            let changed: Vec<&ResponseRow> = changed.iter().filter_map(|id| rows.get(id)).collect();
            for chunk in changed.chunks(ROWS_PER_STATEMENT) {
                // VALUES' columns are column1.. in both databases; the
                // casts type them for PostgreSQL.
                let mut update = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE responses SET status = v.column2, executed_at = v.column3,
                         expires_at = v.column4, message = v.column5, undone_at = v.column6
                     FROM (",
                );
                update.push_values(chunk, |mut values, row| {
                    values
                        .push("CAST(")
                        .push_bind_unseparated(row.id)
                        .push_unseparated(" AS BIGINT)")
                        .push("CAST(")
                        .push_bind_unseparated(&row.status)
                        .push_unseparated(" AS TEXT)")
                        .push("CAST(")
                        .push_bind_unseparated(row.executed_at)
                        .push_unseparated(" AS BIGINT)")
                        .push("CAST(")
                        .push_bind_unseparated(row.expires_at)
                        .push_unseparated(" AS BIGINT)")
                        .push("CAST(")
                        .push_bind_unseparated(row.message.as_deref())
                        .push_unseparated(" AS TEXT)")
                        .push("CAST(")
                        .push_bind_unseparated(row.undone_at)
                        .push_unseparated(" AS BIGINT)");
                });
                update.push(") AS v WHERE responses.id = v.column1");
                update.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(recorded)
        })
    }

    /// The add commands of the blocks of `srcip` in force (or waiting
    /// for their agent), one entry per command they ran, each with its
    /// adds newest first: what an unblock lifts. Read as one row per
    /// command, its adds' ids and agents in one string: sqlx decodes
    /// every column of every row into a value of its own and hands each
    /// row over from the database's thread, and the 10,000 rows of a
    /// block on every agent took 60-150 ms that way against 10 ms here.
    pub async fn blocking_commands(
        &self,
        srcip: &str,
    ) -> Result<Vec<BlockingCommands>, StoreError> {
        on_pool!(self.reads, pool => {
            let rows: Vec<BlockingColumns> = sqlx::query_as(
                "SELECT response, command, executable, \"user\", rule_id, location,
                        string_agg(CAST(id AS TEXT) || ' ' || agent_id, ',' ORDER BY id DESC)
                 FROM responses
                 WHERE action = 'add' AND status IN ('pending', 'sent', 'done') AND undone_at IS NULL
                   AND (expires_at IS NULL OR expires_at > $1) AND srcip = $2
                 GROUP BY response, command, executable, \"user\", rule_id, location
                 ORDER BY max(id) DESC",
            )
            .bind(now_ms())
            .bind(srcip)
            .fetch_all(pool)
            .await?;
            rows.into_iter()
                .map(|(response, command, executable, user, rule_id, location, adds)| {
                    Ok(BlockingCommands {
                        response,
                        command,
                        executable,
                        user,
                        rule_id: rule_id.and_then(|v| u32::try_from(v).ok()),
                        location,
                        adds: adds.split(',').map(number_and_agent).collect::<Result<_, _>>()?,
                    })
                })
                .collect()
        })
    }

    /// Blocks in force (or waiting for their agent), newest first.
    pub async fn blocks(
        &self,
        srcip: Option<&str>,
        agent_id: Option<&str>,
    ) -> Result<Vec<BlockRow>, StoreError> {
        on_pool!(self.reads, pool => {
            let rows = sqlx::query(
                "SELECT * FROM responses
                 WHERE action = 'add' AND status IN ('pending', 'sent', 'done') AND undone_at IS NULL
                   AND (expires_at IS NULL OR expires_at > $1) AND srcip IS NOT NULL
                   AND ($2 IS NULL OR srcip = $2) AND ($3 IS NULL OR agent_id = $3)
                 ORDER BY id DESC",
            )
            .bind(now_ms())
            .bind(srcip)
            .bind(agent_id)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let row = row_to_response(r);
                    BlockRow {
                        id: row.id,
                        agent_id: row.request.agent_id,
                        srcip: row.request.srcip.unwrap_or_default(),
                        response: row.request.response,
                        rule_id: row.request.rule_id,
                        alert_id: row.request.alert_id,
                        issued_at: row.issued_at,
                        expires_at: row.expires_at,
                        state: if row.status == "done" {
                            "active"
                        } else {
                            "pending"
                        },
                    }
                })
                .collect())
        })
    }

    /// Records a decision that was not carried out, and why.
    pub async fn insert_refusal(
        &self,
        response: &str,
        agent_id: Option<&str>,
        alert_id: Option<i64>,
        rule_id: Option<u32>,
        srcip: Option<&str>,
        reason: &str,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO response_refusals (time, response, agent_id, alert_id, rule_id, srcip, reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(now_ms())
            .bind(response)
            .bind(agent_id)
            .bind(alert_id)
            .bind(rule_id.map(i64::from))
            .bind(srcip)
            .bind(reason)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Refused decisions, newest first.
    pub async fn refusals(&self, limit: u32) -> Result<Vec<RefusalRow>, StoreError> {
        on_pool!(self.reads, pool => {
            let rows = sqlx::query("SELECT * FROM response_refusals ORDER BY id DESC LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(|r| RefusalRow {
                    time: r.get("time"),
                    response: r.get("response"),
                    agent_id: r.get("agent_id"),
                    rule_id: r
                        .get::<Option<i64>, _>("rule_id")
                        .and_then(|v| u32::try_from(v).ok()),
                    srcip: r.get("srcip"),
                    reason: r.get("reason"),
                })
                .collect())
        })
    }
}
