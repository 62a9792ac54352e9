//! The ledger: every block in force on this agent, in the agent's SQLite
//! database, with its expiry. It is what lets a block be undone on time
//! after a restart, and what start-up reconciliation compares the kernel
//! with. One row per (response, address): a repeated add extends the row
//! rather than adding a second one, as OSSEC's execd does.

use std::net::IpAddr;

use sqlx::{Row, SqlitePool};

/// The migration that creates the ledger's table (the agent's migrator
/// embeds it with the others; tests of the ledger alone apply it).
pub const MIGRATION_SQL: &str = include_str!("../../../migrations/agent/0010_active_responses.sql");

/// A ledger failure.
#[derive(Debug, thiserror::Error)]
#[error("active-response ledger: {0}")]
pub struct LedgerError(#[from] sqlx::Error);

/// Whether a block is simply in force, or its undo failed and is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// In force; undone at `expires_at`.
    Active,
    /// The undo failed; retried at `expires_at`.
    UndoFailed,
}

impl BlockState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::UndoFailed => "undo_failed",
        }
    }
    fn parse(s: &str) -> Self {
        if s == "undo_failed" {
            Self::UndoFailed
        } else {
            Self::Active
        }
    }
}

/// A block in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Row id.
    pub id: i64,
    /// The command name.
    pub response: String,
    /// The blocked address.
    pub srcip: IpAddr,
    /// The user, or `-`.
    pub user: String,
    /// The alert that caused it.
    pub alert_id: String,
    /// Its rule.
    pub rule_id: u32,
    /// The last manager command that added or extended it.
    pub command_id: String,
    /// A custom script's location argument.
    pub location: String,
    /// First added (ms since the epoch).
    pub added_at: i64,
    /// Last added or extended (ms).
    pub updated_at: i64,
    /// When it is undone (ms); None = never.
    pub expires_at: Option<i64>,
    /// Adds for this response and address.
    pub offences: u32,
    /// In force, or its undo is being retried.
    pub state: BlockState,
    /// Why the last undo failed.
    pub last_error: Option<String>,
}

/// A block to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBlock {
    /// The command name.
    pub response: String,
    /// The address.
    pub srcip: IpAddr,
    /// The user, or `-`.
    pub user: String,
    /// The alert id.
    pub alert_id: String,
    /// The rule id.
    pub rule_id: u32,
    /// The manager's command id.
    pub command_id: String,
    /// A custom script's location argument.
    pub location: String,
    /// When it is undone (ms); None = never.
    pub expires_at: Option<i64>,
}

/// The ledger over the agent's database.
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: SqlitePool,
}

const COLUMNS: &str = "id, response, srcip, user, alert_id, rule_id, command_id, location, added_at, updated_at, expires_at, offences, state, last_error";

fn block_of(r: &sqlx::sqlite::SqliteRow) -> Option<Block> {
    let srcip: String = r.get("srcip");
    Some(Block {
        id: r.get("id"),
        response: r.get("response"),
        srcip: srcip.parse().ok()?,
        user: r.get("user"),
        alert_id: r.get("alert_id"),
        rule_id: u32::try_from(r.get::<i64, _>("rule_id")).unwrap_or(0),
        command_id: r.get("command_id"),
        location: r.get("location"),
        added_at: r.get("added_at"),
        updated_at: r.get("updated_at"),
        expires_at: r.get("expires_at"),
        offences: u32::try_from(r.get::<i64, _>("offences")).unwrap_or(u32::MAX),
        state: BlockState::parse(r.get::<&str, _>("state")),
        last_error: r.get("last_error"),
    })
}

impl Ledger {
    /// The ledger in `pool`, whose schema must include [`MIGRATION_SQL`].
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The database.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The block for `response` and `ip`, if any.
    pub async fn get(&self, response: &str, ip: IpAddr) -> Result<Option<Block>, LedgerError> {
        let sql =
            format!("SELECT {COLUMNS} FROM active_responses WHERE response = $1 AND srcip = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(response)
            .bind(ip.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().and_then(block_of))
    }

    /// Records an add at `now` (ms). A block already held for the same
    /// response and address is extended: its expiry becomes the later of
    /// the old one and the new one (never shortened; None wins), its
    /// offence count goes up, and its state returns to active. Returns the
    /// stored block and whether it existed before.
    pub async fn record_add(&self, new: &NewBlock, now: i64) -> Result<(Block, bool), LedgerError> {
        // One statement: concurrent adds never deadlock upgrading a read
        // transaction, and the extension is atomic.
        let sql = format!(
            "INSERT INTO active_responses (response, srcip, user, alert_id, rule_id, command_id,
             location, added_at, updated_at, expires_at, offences, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, 1, 'active')
             ON CONFLICT (response, srcip) DO UPDATE SET
                user = excluded.user, alert_id = excluded.alert_id, rule_id = excluded.rule_id,
                command_id = excluded.command_id, location = excluded.location,
                updated_at = excluded.updated_at,
                expires_at = CASE
                    WHEN active_responses.expires_at IS NULL OR excluded.expires_at IS NULL THEN NULL
                    ELSE MAX(active_responses.expires_at, excluded.expires_at) END,
                offences = active_responses.offences + 1,
                state = 'active', last_error = NULL
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&new.response)
            .bind(new.srcip.to_string())
            .bind(&new.user)
            .bind(&new.alert_id)
            .bind(i64::from(new.rule_id))
            .bind(&new.command_id)
            .bind(&new.location)
            .bind(now)
            .bind(new.expires_at)
            .fetch_one(&self.pool)
            .await?;
        let block = block_of(&row).ok_or_else(|| {
            LedgerError(sqlx::Error::Decode("stored address does not parse".into()))
        })?;
        let extended = block.offences > 1;
        Ok((block, extended))
    }

    /// Forgets the block; returns whether there was one.
    pub async fn remove(&self, response: &str, ip: IpAddr) -> Result<bool, LedgerError> {
        let r = sqlx::query("DELETE FROM active_responses WHERE response = $1 AND srcip = $2")
            .bind(response)
            .bind(ip.to_string())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Notes that undoing the block failed; it is retried at `retry_at`.
    pub async fn undo_failed(
        &self,
        response: &str,
        ip: IpAddr,
        retry_at: i64,
        error: &str,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE active_responses SET state = $1, expires_at = $2, last_error = $3
             WHERE response = $4 AND srcip = $5",
        )
        .bind(BlockState::UndoFailed.as_str())
        .bind(retry_at)
        .bind(error)
        .bind(response)
        .bind(ip.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every block, oldest first.
    pub async fn list(&self) -> Result<Vec<Block>, LedgerError> {
        let sql = format!("SELECT {COLUMNS} FROM active_responses ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().filter_map(block_of).collect())
    }

    /// Blocks whose expiry is at or before `now`, earliest first.
    pub async fn due(&self, now: i64) -> Result<Vec<Block>, LedgerError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM active_responses WHERE expires_at IS NOT NULL AND expires_at <= $1 ORDER BY expires_at"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().filter_map(block_of).collect())
    }

    /// The earliest expiry (ms), if any block has one.
    pub async fn next_expiry(&self) -> Result<Option<i64>, LedgerError> {
        let row = sqlx::query("SELECT MIN(expires_at) AS next FROM active_responses")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get("next"))
    }
}
