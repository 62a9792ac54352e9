//! SQLite's write-ahead log, copied back into the database file off the
//! writers' path.
//!
//! By default SQLite checkpoints inside the commit that takes the log past
//! 1,000 pages: that writer copies the pages into the database while it
//! still holds the write lock and this process's turn to write
//! ([`super::gate`]). For the fleet's writes (tens of rows at scattered
//! places per commit, as a fan-out's results or a reconnect storm's Hellos
//! write) that was a checkpoint every few commits, and writers held the
//! lock about twice as long: 1,500 such commits of 60 rows took 4.6-5.4 s
//! with it and 2.4-3.0 s without, the slowest 1 % 14-16 ms against 3-4
//! ms (the same commits in a throwaway script, on this disk). The write
//! connections therefore never checkpoint (`wal_autocheckpoint = 0`, set
//! in [`super::Store::open`]); the daemon runs this task, a PASSIVE
//! checkpoint every [`CHECKPOINT_EVERY`], instead. A passive checkpoint
//! takes no writer's lock: writers go on appending to the log meanwhile,
//! and the first writer after a complete checkpoint starts the log again
//! from its beginning: the log holds about a second's writes (its file
//! keeps the largest size it reached, as with SQLite's default). A
//! command that opens the database briefly (`agent add`) leaves its
//! writes to the daemon's next checkpoint, or, when no daemon runs, to
//! its own last connection, which checkpoints as it closes.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Pool, Store, StoreError};

/// How often the log is copied into the database.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

impl Store {
    /// Copies SQLite's log into the database every [`CHECKPOINT_EVERY`]
    /// until `shutdown` (nothing to do on PostgreSQL).
    pub async fn run_checkpoints(self, shutdown: CancellationToken) {
        if !matches!(self.pool, Pool::Sqlite(_)) {
            return;
        }
        let mut every = tokio::time::interval(CHECKPOINT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            if let Err(error) = self.checkpoint().await {
                warn!(%error, "Cannot copy the database's write-ahead log into it; trying again.");
            }
        }
    }

    /// One PASSIVE checkpoint. What a reader still uses of the log (an
    /// older snapshot) stays in it for the next one.
    pub(crate) async fn checkpoint(&self) -> Result<(), StoreError> {
        if let Pool::Sqlite(pool) = &self.pool {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::{Backend, TestDb};

    /// The database file's size, and the log's.
    fn sizes(db: &std::path::Path) -> (u64, u64) {
        let size = |p: std::path::PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        (size(db.to_path_buf()), size(db.with_extension("db-wal")))
    }

    #[tokio::test]
    async fn writers_leave_the_log_to_the_checkpoint() {
        let db = TestDb::new(Backend::Sqlite);
        let path = db.dir().join("m.db");
        let store = db.open().await;
        let (before, _) = sizes(&path);
        // About 8 MiB in one commit: past the 1,000 pages (4 MiB) at which
        // SQLite's default would have copied it into the database.
        let written = store
            .execute_for_test(
                "INSERT INTO response_refusals (time, response, reason)
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
                 SELECT i, 'route-null', printf('%.1000c', 'x') FROM n",
                8_000,
            )
            .await;
        assert_eq!(written, 8_000);
        let (committed, log) = sizes(&path);
        assert_eq!(
            committed, before,
            "the writer copied the log into the database"
        );
        assert!(log > 8_000_000, "the log holds the commit: {log} bytes");
        store.checkpoint().await.unwrap();
        let (checkpointed, _) = sizes(&path);
        assert!(
            checkpointed > before + 8_000_000,
            "the checkpoint copied the log: {before} -> {checkpointed} bytes"
        );
        // And the next writer starts the log again from its beginning.
        store
            .execute_for_test("DELETE FROM response_refusals WHERE id <= $1", 10)
            .await;
        assert_eq!(sizes(&path).1, log, "the log did not grow");
    }
}
