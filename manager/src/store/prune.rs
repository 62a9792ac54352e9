//! Retention: deleting old alerts and archived events in small batches.
//!
//! Each batch is its own short write transaction, so a session
//! storing a batch of events waits at most for one prune batch, never for a
//! whole prune. [`crate::retention`] runs these in the background.
//!
//! Alerts are referenced by `responses.alert_id` and
//! `response_refusals.alert_id`. Responses are kept: they are the record of
//! every block (and what repeated-offender escalation and `palisadectl
//! blocks` read); when their alert is pruned their `alert_id` becomes NULL
//! and the rule id, address and location they carry themselves remain.
//! Refusals explain why an alert caused no block; their `alert_id` is
//! cleared the same way, and refusals older than the alert age limit go too.

use super::{ARCHIVE_BATCH_OVERHEAD, Store, StoreError, WriteTx, on_pool};

/// What one prune batch removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Alerts or archived events deleted.
    pub rows: u64,
    /// Whether more rows may be due (the batch was full).
    pub more: bool,
}

// The helpers below are macros, not functions, so that each is written
// once for both backends (see `backend.rs`); `?` in them returns from the
// calling operation.

/// The archive's size as counted (`[retention] archive_max_size`), read on
/// the connection or transaction `$conn` (locking the counter row on
/// PostgreSQL when `$conn` is a write transaction).
macro_rules! archive_bytes {
    ($db:ty, $conn:ident) => {{
        let bytes: Option<i64> = sqlx::query_scalar($crate::store::backend::for_update::<$db>(
            "SELECT bytes FROM archive_size WHERE id = 1",
        ))
        .fetch_optional(&mut *$conn)
        .await?;
        bytes.and_then(|b| u64::try_from(b).ok()).unwrap_or(0)
    }};
}

/// Deletes the archived batches up to id `$last` in the write
/// transaction `$tx`, and their bytes from the archive's size; evaluates
/// to the events deleted. The size's row is locked first, so two managers
/// pruning at once do not both subtract the same rows.
macro_rules! delete_archive_upto {
    ($db:ty, $tx:ident, $last:expr) => {{
        let last: i64 = $last;
        sqlx::query($crate::store::backend::for_update::<$db>(
            "SELECT bytes FROM archive_size WHERE id = 1",
        ))
        .execute(&mut *$tx)
        .await?;
        let (batches, events, bytes): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(events), 0) AS BIGINT),
                    CAST(COALESCE(SUM(LENGTH(batch)), 0) AS BIGINT)
             FROM archive WHERE id <= $1",
        )
        .bind(last)
        .fetch_one(&mut *$tx)
        .await?;
        let batches = u64::try_from(batches).unwrap_or(0);
        let freed = u64::try_from(bytes).unwrap_or(0) + batches * ARCHIVE_BATCH_OVERHEAD;
        sqlx::query("DELETE FROM archive WHERE id <= $1")
            .bind(last)
            .execute(&mut *$tx)
            .await?;
        sqlx::query(<$db as $crate::store::backend::Dialect>::SUBTRACT_ARCHIVE_BYTES)
            .bind(i64::try_from(freed).unwrap_or(i64::MAX))
            .execute(&mut *$tx)
            .await?;
        u64::try_from(events).unwrap_or(0)
    }};
}

/// Deletes the alerts `$ids` (ascending) in the transaction `$tx` after
/// clearing the references to them.
macro_rules! delete_alerts {
    ($tx:ident, $ids:expr) => {{
        let ids: &[i64] = $ids;
        if let (Some(first), Some(last)) = (ids.first(), ids.last()) {
            // One statement per table over a range when the ids are
            // contiguous (the usual case), else per id.
            let contiguous = ids.windows(2).all(|w| w[1] == w[0] + 1);
            if contiguous {
                for sql in [
                    "UPDATE responses SET alert_id = NULL WHERE alert_id BETWEEN $1 AND $2",
                    "UPDATE response_refusals SET alert_id = NULL WHERE alert_id BETWEEN $1 AND $2",
                    "DELETE FROM alerts WHERE id BETWEEN $1 AND $2",
                ] {
                    sqlx::query(sql)
                        .bind(first)
                        .bind(last)
                        .execute(&mut *$tx)
                        .await?;
                }
            } else {
                for id in ids {
                    for sql in [
                        "UPDATE responses SET alert_id = NULL WHERE alert_id = $1",
                        "UPDATE response_refusals SET alert_id = NULL WHERE alert_id = $1",
                        "DELETE FROM alerts WHERE id = $1",
                    ] {
                        sqlx::query(sql).bind(id).execute(&mut *$tx).await?;
                    }
                }
            }
        }
    }};
}

impl Store {
    /// Deletes up to `batch` alerts judged before `before` (ms), oldest
    /// first, clearing the references responses and refusals hold.
    pub async fn prune_alerts_older_than(
        &self,
        before: i64,
        batch: u32,
    ) -> Result<Pruned, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            let ids: Vec<i64> =
                sqlx::query_scalar("SELECT id FROM alerts WHERE time < $1 ORDER BY time LIMIT $2")
                    .bind(before)
                    .bind(i64::from(batch))
                    .fetch_all(&mut *tx)
                    .await?;
            delete_alerts!(tx, &ids);
            sqlx::query(
                "DELETE FROM response_refusals WHERE id IN
                   (SELECT id FROM response_refusals WHERE time < $1 ORDER BY id LIMIT $2)",
            )
            .bind(before)
            .bind(i64::from(batch))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Pruned {
                rows: ids.len() as u64,
                more: ids.len() as u64 == u64::from(batch),
            })
        })
    }

    /// Deletes up to `batch` of the oldest alerts beyond the newest `keep`.
    pub async fn prune_alerts_beyond(&self, keep: u64, batch: u32) -> Result<Pruned, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            // Ids grow with time: the newest `keep` alerts are the highest ids.
            let boundary: Option<i64> =
                sqlx::query_scalar("SELECT id FROM alerts ORDER BY id DESC LIMIT 1 OFFSET $1")
                    .bind(i64::try_from(keep).unwrap_or(i64::MAX))
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(boundary) = boundary else {
                return Ok(Pruned::default());
            };
            let ids: Vec<i64> =
                sqlx::query_scalar("SELECT id FROM alerts WHERE id <= $1 ORDER BY id LIMIT $2")
                    .bind(boundary)
                    .bind(i64::from(batch))
                    .fetch_all(&mut *tx)
                    .await?;
            delete_alerts!(tx, &ids);
            tx.commit().await?;
            Ok(Pruned {
                rows: ids.len() as u64,
                more: ids.len() as u64 == u64::from(batch),
            })
        })
    }

    /// Deletes the oldest archived batches received before `before`
    /// (ms): whole batches of up to `batch` events together, or one
    /// larger batch alone.
    ///
    /// The archive has no index on its time (it is the hottest insert
    /// path); rows are in arrival order, so this looks only at the first
    /// `batch` rows by id and stops at the first one that is still young.
    /// A clock stepped backwards can hold older rows behind a newer one
    /// until that one ages too.
    pub async fn prune_archive_older_than(
        &self,
        before: i64,
        batch: u32,
    ) -> Result<Pruned, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            let rows: Vec<(i64, i64, i64)> =
                sqlx::query_as("SELECT id, received_at, events FROM archive ORDER BY id LIMIT $1")
                    .bind(i64::from(batch))
                    .fetch_all(&mut *tx)
                    .await?;
            let old = rows.iter().take_while(|&&(_, received_at, _)| received_at < before);
            let (last, capped) = oldest_within(old.map(|&(id, _, events)| (id, events)), batch);
            let Some(last) = last else {
                return Ok(Pruned::default());
            };
            let young_seen = rows.iter().any(|&(_, received_at, _)| received_at >= before);
            let deleted = delete_archive_upto!(Db, tx, last);
            tx.commit().await?;
            Ok(Pruned {
                rows: deleted,
                more: capped || (!young_seen && rows.len() == batch as usize),
            })
        })
    }

    /// Deletes the oldest archived batches while the archive is above
    /// `max_bytes` (as [`Store::archive_bytes`] counts): whole batches of
    /// up to `batch` events together, or one larger batch alone.
    pub async fn prune_archive_beyond_size(
        &self,
        max_bytes: u64,
        batch: u32,
    ) -> Result<Pruned, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            let size = archive_bytes!(Db, tx);
            if size <= max_bytes {
                return Ok(Pruned::default());
            }
            let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
                "SELECT id, events, CAST(LENGTH(batch) AS BIGINT) FROM archive ORDER BY id LIMIT $1",
            )
            .bind(i64::from(batch))
            .fetch_all(&mut *tx)
            .await?;
            // The oldest batches, as many as bring the archive down to the bound.
            let mut freed = 0u64;
            let over = rows.iter().take_while(|&&(_, _, bytes)| {
                let above = size.saturating_sub(freed) > max_bytes;
                freed += u64::try_from(bytes).unwrap_or(0) + ARCHIVE_BATCH_OVERHEAD;
                above
            });
            let (last, _) = oldest_within(over.map(|&(id, events, _)| (id, events)), batch);
            let Some(last) = last else {
                return Ok(Pruned::default());
            };
            let deleted = delete_archive_upto!(Db, tx, last);
            let left = archive_bytes!(Db, tx);
            tx.commit().await?;
            Ok(Pruned {
                rows: deleted,
                more: left > max_bytes && deleted > 0,
            })
        })
    }

    /// The archive's size as `[retention] archive_max_size` counts it:
    /// each batch's packed events and [`ARCHIVE_BATCH_OVERHEAD`].
    pub async fn archive_bytes(&self) -> Result<u64, StoreError> {
        on_pool!(self, pool => {
            let mut conn = pool.acquire().await?;
            Ok(archive_bytes!(Db, conn))
        })
    }

    /// Alerts stored.
    pub async fn alert_count(&self) -> Result<u64, StoreError> {
        on_pool!(self.reads, pool => {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alerts")
                .fetch_one(pool)
                .await?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// Archived events stored.
    pub async fn archive_count(&self) -> Result<u64, StoreError> {
        on_pool!(self.reads, pool => {
            let n: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(SUM(events), 0) AS BIGINT) FROM archive")
                .fetch_one(pool)
                .await?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}

/// Of `(id, events)` archived batches, oldest first, the id of the last of
/// those whose events add up to at most `cap` (the first always counts,
/// however many it holds), and whether the cap stopped the count.
fn oldest_within(batches: impl Iterator<Item = (i64, i64)>, cap: u32) -> (Option<i64>, bool) {
    let (mut last, mut total) = (None, 0u64);
    for (id, events) in batches {
        total += u64::try_from(events).unwrap_or(0);
        if last.is_some() && total > u64::from(cap) {
            return (last, true);
        }
        last = Some(id);
    }
    (last, false)
}
