//! The agent's durable spool: every line read is stored here, with the
//! file's new read position, in one transaction, before it is sent; it is
//! deleted only when the manager acknowledges it. A crash or restart
//! therefore neither loses nor repeats a line: unacknowledged lines are
//! sent again and the manager drops the ones it already stored by their
//! sequence numbers, which SQLite's AUTOINCREMENT never reuses.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlSafeStr, SqlitePool};

/// A spool failure.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// SQLite or sqlx reported an error.
    #[error("spool database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Applying the schema failed.
    #[error("spool migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        "spool".into(),
        MigrationType::Simple,
        include_str!("../../migrations/agent/0001_spool.sql").into_sql_str(),
        false,
    )])
}

/// A line read from a file, not yet spooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// File path.
    pub location: String,
    /// OSSEC log_format.
    pub log_format: String,
    /// When it was read (ms since the epoch).
    pub read_at: i64,
    /// The line was cut at the length limit.
    pub truncated: bool,
    /// The raw line.
    pub line: Vec<u8>,
}

/// A spooled event with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledEvent {
    /// Sequence number, strictly increasing, never reused.
    pub sequence: u64,
    /// The event.
    pub event: NewEvent,
}

/// Where reading a file stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Device of the file.
    pub device: u64,
    /// Inode of the file.
    pub inode: u64,
    /// Byte offset after the last line spooled.
    pub offset: u64,
}

/// The spool database.
#[derive(Debug, Clone)]
pub struct Spool {
    pool: SqlitePool,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Spool {
    /// Opens (creating if needed) the spool.
    pub async fn open(path: &Path) -> Result<Self, SpoolError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        Ok(Self { pool })
    }

    /// Closes the database.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Stores lines read from `path` and moves its checkpoint, atomically.
    pub async fn append(
        &self,
        path: &str,
        events: &[NewEvent],
        checkpoint: Checkpoint,
    ) -> Result<(), SpoolError> {
        let mut tx = self.pool.begin().await?;
        for e in events {
            sqlx::query("INSERT INTO spool (location, log_format, read_at, truncated, line) VALUES ($1, $2, $3, $4, $5)")
                .bind(&e.location)
                .bind(&e.log_format)
                .bind(e.read_at)
                .bind(e.truncated)
                .bind(&e.line)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO checkpoints (path, device, inode, offset, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (path) DO UPDATE SET device = $2, inode = $3, offset = $4, updated_at = $5",
        )
        .bind(path)
        .bind(i64_of(checkpoint.device))
        .bind(i64_of(checkpoint.inode))
        .bind(i64_of(checkpoint.offset))
        .bind(jiff::Timestamp::now().as_millisecond())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The stored read position of a file.
    pub async fn checkpoint(&self, path: &str) -> Result<Option<Checkpoint>, SpoolError> {
        let row = sqlx::query("SELECT device, inode, offset FROM checkpoints WHERE path = $1")
            .bind(path)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| Checkpoint {
            device: u64_of(r.get("device")),
            inode: u64_of(r.get("inode")),
            offset: u64_of(r.get("offset")),
        }))
    }

    /// Up to `limit` spooled events after `after`, in order.
    pub async fn pending(&self, after: u64, limit: u32) -> Result<Vec<SpooledEvent>, SpoolError> {
        let rows = sqlx::query(
            "SELECT sequence, location, log_format, read_at, truncated, line FROM spool
             WHERE sequence > $1 ORDER BY sequence LIMIT $2",
        )
        .bind(i64_of(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| SpooledEvent {
                sequence: u64_of(r.get("sequence")),
                event: NewEvent {
                    location: r.get("location"),
                    log_format: r.get("log_format"),
                    read_at: r.get("read_at"),
                    truncated: r.get("truncated"),
                    line: r.get("line"),
                },
            })
            .collect())
    }

    /// Deletes everything up to and including `sequence`: the manager has it.
    pub async fn acknowledge(&self, sequence: u64) -> Result<(), SpoolError> {
        sqlx::query("DELETE FROM spool WHERE sequence <= $1")
            .bind(i64_of(sequence))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many events wait for acknowledgement.
    pub async fn depth(&self) -> Result<u64, SpoolError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM spool")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64_of(n))
    }

    /// A persistent counter (e.g. dropped events).
    pub async fn counter(&self, name: &str) -> Result<u64, SpoolError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT value FROM counters WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v.map(u64_of).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(line: &str) -> NewEvent {
        NewEvent {
            location: "/var/log/x".into(),
            log_format: "syslog".into(),
            read_at: 1,
            truncated: false,
            line: line.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn sequences_survive_acknowledgement_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let cp = Checkpoint {
            device: 1,
            inode: 2,
            offset: 10,
        };
        let spool = Spool::open(&path).await.unwrap();
        spool
            .append("/var/log/x", &[ev("a"), ev("b")], cp)
            .await
            .unwrap();
        let p = spool.pending(0, 10).await.unwrap();
        assert_eq!(p.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2]);
        spool.acknowledge(2).await.unwrap();
        assert_eq!(spool.depth().await.unwrap(), 0);
        spool.close().await;

        let spool = Spool::open(&path).await.unwrap();
        spool
            .append("/var/log/x", &[ev("c")], Checkpoint { offset: 12, ..cp })
            .await
            .unwrap();
        let p = spool.pending(0, 10).await.unwrap();
        assert_eq!(p[0].sequence, 3, "a sequence number was reused");
        assert_eq!(
            spool
                .checkpoint("/var/log/x")
                .await
                .unwrap()
                .unwrap()
                .offset,
            12
        );
    }
}
