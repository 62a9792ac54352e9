//! The circuit breakers' state ([`crate::breaker`]): tripped or not per
//! agent, and the new blocks counted against the limit.

use sqlx::Row;

use super::{Store, StoreError, now_ms, on_pool};

/// A breaker as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerState {
    /// When it tripped; `None` while closed.
    pub tripped_at: Option<i64>,
    /// When an operator last reset it.
    pub reset_at: Option<i64>,
}

impl Store {
    /// The breaker of `agent_id` (closed and never reset when absent).
    pub async fn breaker(&self, agent_id: &str) -> Result<BreakerState, StoreError> {
        on_pool!(self.reads, pool => {
            let row =
                sqlx::query("SELECT tripped_at, reset_at FROM circuit_breakers WHERE agent_id = $1")
                    .bind(agent_id)
                    .fetch_optional(pool)
                    .await?;
            Ok(BreakerState {
                tripped_at: row.as_ref().and_then(|r| r.get("tripped_at")),
                reset_at: row.as_ref().and_then(|r| r.get("reset_at")),
            })
        })
    }

    /// The distinct addresses of new automatic blocks (adds decided on an
    /// alert) issued for `agent_id` since `since`, and whether `srcip` is
    /// among them (a repeat extends a block, it adds none).
    pub async fn recent_blocks(
        &self,
        agent_id: &str,
        srcip: &str,
        since: i64,
    ) -> Result<(u32, bool), StoreError> {
        on_pool!(self.reads, pool => {
            let row = sqlx::query(
                "SELECT COUNT(DISTINCT srcip) AS n, CAST(COALESCE(MAX(CASE WHEN srcip = $2 THEN 1 ELSE 0 END), 0) AS BIGINT) AS seen
                   FROM responses
                  WHERE agent_id = $1 AND action = 'add' AND alert_id IS NOT NULL
                    AND srcip IS NOT NULL AND issued_at >= $3",
            )
            .bind(agent_id)
            .bind(srcip)
            .bind(since)
            .fetch_one(pool)
            .await?;
            let n: i64 = row.get("n");
            let seen: i64 = row.get("seen");
            Ok((u32::try_from(n).unwrap_or(u32::MAX), seen != 0))
        })
    }

    /// Trips the breaker of `agent_id` unless it is tripped already;
    /// returns whether this call tripped it.
    pub async fn trip_breaker(
        &self,
        agent_id: &str,
        new_blocks: u32,
        max_per_minute: u32,
    ) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let done = sqlx::query(
                "INSERT INTO circuit_breakers (agent_id, tripped_at, new_blocks, max_per_minute)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (agent_id) DO UPDATE
                    SET tripped_at = excluded.tripped_at, new_blocks = excluded.new_blocks,
                        max_per_minute = excluded.max_per_minute
                  WHERE circuit_breakers.tripped_at IS NULL",
            )
            .bind(agent_id)
            .bind(now_ms())
            .bind(i64::from(new_blocks))
            .bind(i64::from(max_per_minute))
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Closes the breaker of `agent_id`; returns when it had tripped, or
    /// `None` when it was not tripped.
    pub async fn reset_breaker(&self, agent_id: &str) -> Result<Option<i64>, StoreError> {
        on_pool!(self, pool => {
            let was = self.breaker(agent_id).await?.tripped_at;
            sqlx::query(
                "INSERT INTO circuit_breakers (agent_id, reset_at) VALUES ($1, $2)
                 ON CONFLICT (agent_id) DO UPDATE SET tripped_at = NULL, reset_at = excluded.reset_at",
            )
            .bind(agent_id)
            .bind(now_ms())
            .execute(pool)
            .await?;
            Ok(was)
        })
    }
}
