//! The agent's durable spool: every line read is stored here, with the
//! file's new read position, in one transaction, before it is sent; it is
//! deleted only when the manager acknowledges it. A crash or restart
//! therefore neither loses nor repeats a line: unacknowledged lines are
//! sent again and the manager drops the ones it already stored by their
//! sequence numbers, which SQLite's AUTOINCREMENT never reuses.
//!
//! The spool is bounded on disk (`[spool] max_size`, database, WAL and
//! shared-memory file together). Half of the limit is for events, a
//! quarter for the WAL. The tailer stops reading while the events are
//! above the high-water mark, three quarters of their half ([`Spool::room`]),
//! and resumes at the same file position once acknowledgements made room:
//! the files are the buffer behind the spool. Only if the events still
//! outgrow their half (lines from commands, which cannot wait) are the
//! oldest deleted in the same transaction that added the new ones, down to
//! 7/8 of it, and counted in the persistent `dropped_events` counter that
//! the heartbeat reports. Only whole prefixes of the sequence are ever
//! deleted (acknowledged or dropped), so the spool stays one contiguous
//! range.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tracing::warn;

/// The counter of events dropped because the spool was full.
pub const DROPPED_EVENTS: &str = "dropped_events";

/// Default bound of the spool on disk.
pub const DEFAULT_MAX_SIZE: u64 = 256 * 1024 * 1024;

/// Rows per multi-row INSERT (5 parameters each, well under SQLite's limit).
const INSERT_CHUNK: usize = 100;

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

// `migrator()`: every file of migrations/agent, embedded by build.rs.
include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// A line read from a file, not yet spooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// File path (or command alias).
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

/// Where reading one file stopped, keyed by the file's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheckpoint {
    /// Device of the file.
    pub device: u64,
    /// Inode of the file.
    pub inode: u64,
    /// How many leading bytes the fingerprint covers (0: not known yet).
    pub fingerprint_len: u64,
    /// Checksum of those bytes.
    pub fingerprint: u64,
    /// Byte offset after the last line spooled.
    pub offset: u64,
    /// The offset is inside an over-long line whose head was spooled.
    pub skipping: bool,
    /// The path its lines are reported under.
    pub location: String,
    /// Still at `location` (false once rotated away or deleted).
    pub live: bool,
    /// Last change (ms since the epoch); set by the spool.
    pub updated_at: i64,
}

/// How the spool is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Most bytes on disk (database, WAL and shared memory together).
    pub max_size: u64,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// The spool database.
#[derive(Debug, Clone)]
pub struct Spool {
    pool: SqlitePool,
    path: PathBuf,
    page_size: u64,
    /// Bytes of live pages allowed for events before the oldest go.
    data_budget: u64,
    /// Bytes of live pages above which readers wait ([`Spool::room`]).
    high_water: u64,
    /// WAL bytes above which it is checkpointed and truncated.
    wal_budget: u64,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Spool {
    /// The database pool, shared with the active-response ledger (one file
    /// holds the agent's whole durable state).
    pub fn pool(&self) -> SqlitePool {
        self.pool.clone()
    }

    /// Opens (creating if needed) the spool with the default bound.
    pub async fn open(path: &Path) -> Result<Self, SpoolError> {
        Self::open_with(path, SpoolOptions::default()).await
    }

    /// Opens (creating if needed) the spool.
    pub async fn open_with(path: &Path, options: SpoolOptions) -> Result<Self, SpoolError> {
        let wal_budget = options.max_size / 4;
        let sqlite_options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .pragma("journal_size_limit", (wal_budget / 2).to_string())
            .pragma(
                "wal_autocheckpoint",
                (wal_budget / 2 / 4096).max(16).to_string(),
            );
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(sqlite_options)
            .await?;
        migrator().run(&pool).await?;
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&pool)
            .await?;
        Ok(Self {
            pool,
            path: path.to_path_buf(),
            page_size: u64_of(page_size).max(512),
            data_budget: options.max_size / 2,
            high_water: options.max_size / 2 / 4 * 3,
            wal_budget,
        })
    }

    /// Closes the database.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Stores events and moves file checkpoints, atomically; when the
    /// spool is over its bound, the oldest events are dropped in the same
    /// transaction. Returns how many were dropped.
    pub async fn append(
        &self,
        events: &[NewEvent],
        checkpoints: &[FileCheckpoint],
    ) -> Result<u64, SpoolError> {
        let now = jiff::Timestamp::now().as_millisecond();
        // It reads (the size, the row count) and then writes: a deferred
        // transaction would fail at once with SQLITE_BUSY when the other
        // connection (acknowledgements, the active-response ledger) wrote
        // in between; IMMEDIATE takes the write lock first and waits.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in events.chunks(INSERT_CHUNK) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO spool (location, log_format, read_at, truncated, line) ",
            );
            insert.push_values(chunk, |mut row, e| {
                row.push_bind(&e.location)
                    .push_bind(&e.log_format)
                    .push_bind(e.read_at)
                    .push_bind(e.truncated)
                    .push_bind(&e.line);
            });
            insert.build().persistent(true).execute(&mut *tx).await?;
        }
        for cp in checkpoints {
            sqlx::query(
                "INSERT INTO file_checkpoints
                     (device, inode, fingerprint_len, fingerprint, offset, skipping, location, live, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (device, inode) DO UPDATE SET fingerprint_len = $3, fingerprint = $4,
                     offset = $5, skipping = $6, location = $7, live = $8, updated_at = $9",
            )
            .bind(i64_of(cp.device))
            .bind(i64_of(cp.inode))
            .bind(i64_of(cp.fingerprint_len))
            // The checksum is stored bit for bit in SQLite's signed integer.
            .bind(cp.fingerprint as i64)
            .bind(i64_of(cp.offset))
            .bind(cp.skipping)
            .bind(&cp.location)
            .bind(cp.live)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let dropped = if events.is_empty() {
            0
        } else {
            self.enforce_bound(&mut tx).await?
        };
        tx.commit().await?;
        if !events.is_empty() {
            self.limit_wal().await?;
        }
        Ok(dropped)
    }

    /// Bytes of events that may still be added before the high-water mark
    /// (0: readers should wait for acknowledgements to make room).
    pub async fn room(&self) -> Result<u64, SpoolError> {
        let mut conn = self.pool.acquire().await?;
        let used = self.used_bytes(&mut conn).await?;
        Ok(self.high_water.saturating_sub(used))
    }

    /// Bytes of pages in use in the main database, as this transaction
    /// sees it.
    async fn used_bytes(&self, tx: &mut sqlx::SqliteConnection) -> Result<u64, SpoolError> {
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut *tx)
            .await?;
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(&mut *tx)
            .await?;
        Ok(u64_of(pages - free) * self.page_size)
    }

    async fn enforce_bound(&self, tx: &mut sqlx::SqliteConnection) -> Result<u64, SpoolError> {
        let mut dropped = 0u64;
        // A few rounds at most: each frees an estimate of what is needed.
        for _ in 0..8 {
            let used = self.used_bytes(tx).await?;
            if used <= self.data_budget {
                break;
            }
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM spool")
                .fetch_one(&mut *tx)
                .await?;
            let rows = u64_of(rows);
            if rows == 0 {
                break;
            }
            let excess = used - self.data_budget * 7 / 8;
            let per_row = (used / rows).max(1);
            let n = excess.div_ceil(per_row).clamp(1, rows);
            let deleted = sqlx::query(
                "DELETE FROM spool WHERE sequence IN (SELECT sequence FROM spool ORDER BY sequence LIMIT $1)",
            )
            .bind(i64_of(n))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            dropped += deleted;
        }
        if dropped > 0 {
            sqlx::query(
                "INSERT INTO counters (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = value + $2",
            )
            .bind(DROPPED_EVENTS)
            .bind(i64_of(dropped))
            .execute(&mut *tx)
            .await?;
            warn!(dropped, "Spool is full; dropped the oldest events.");
        }
        Ok(dropped)
    }

    /// Keeps the WAL within its share of the bound: SQLite only
    /// checkpoints passively, and a busy reader can let the file grow.
    async fn limit_wal(&self) -> Result<(), SpoolError> {
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size > self.wal_budget {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Every stored file checkpoint.
    pub async fn file_checkpoints(&self) -> Result<Vec<FileCheckpoint>, SpoolError> {
        let rows = sqlx::query(
            "SELECT device, inode, fingerprint_len, fingerprint, offset, skipping, location, live, updated_at
             FROM file_checkpoints",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| FileCheckpoint {
                device: u64_of(r.get("device")),
                inode: u64_of(r.get("inode")),
                fingerprint_len: u64_of(r.get("fingerprint_len")),
                fingerprint: r.get::<i64, _>("fingerprint") as u64,
                offset: u64_of(r.get("offset")),
                skipping: r.get("skipping"),
                location: r.get("location"),
                live: r.get("live"),
                updated_at: r.get("updated_at"),
            })
            .collect())
    }

    /// Forgets checkpoints of files not changed since `before` (ms) and
    /// not in `keep` (device, inode): their files are long gone.
    pub async fn forget_checkpoints(
        &self,
        before: i64,
        keep: &[(u64, u64)],
    ) -> Result<u64, SpoolError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let stale: Vec<(i64, i64)> =
            sqlx::query_as("SELECT device, inode FROM file_checkpoints WHERE updated_at < $1")
                .bind(before)
                .fetch_all(&mut *tx)
                .await?;
        let mut forgotten = 0;
        for (device, inode) in stale {
            if keep.contains(&(u64_of(device), u64_of(inode))) {
                continue;
            }
            forgotten +=
                sqlx::query("DELETE FROM file_checkpoints WHERE device = $1 AND inode = $2")
                    .bind(device)
                    .bind(inode)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
        }
        tx.commit().await?;
        Ok(forgotten)
    }

    /// This spool's id, made when it was created (sent in Hello).
    pub async fn id(&self) -> Result<String, SpoolError> {
        Ok(sqlx::query_scalar("SELECT id FROM spool_identity LIMIT 1")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Up to `limit` spooled events after `after`, in order, whose lines,
    /// locations and formats with `per_event` bytes each add up to at most
    /// `max_bytes`; always the first one, however long (the caller cuts
    /// it). The sizes are read first, so a spool of long lines is never
    /// loaded beyond one batch. The flag says the byte bound, not the
    /// count or the spool's end, ended the batch (it is full).
    pub async fn pending_within(
        &self,
        after: u64,
        limit: u32,
        max_bytes: u64,
        per_event: u64,
    ) -> Result<(Vec<SpooledEvent>, bool), SpoolError> {
        let sizes: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT sequence, length(line) + length(location) + length(log_format) FROM spool
             WHERE sequence > $1 ORDER BY sequence LIMIT $2",
        )
        .bind(i64_of(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut total = 0u64;
        let mut take = 0u32;
        let mut full = false;
        for (_, size) in &sizes {
            total = total.saturating_add(u64_of(*size) + per_event);
            if take > 0 && total > max_bytes {
                full = true;
                break;
            }
            take += 1;
        }
        Ok((self.pending(after, take).await?, full))
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

    /// A persistent counter (e.g. [`DROPPED_EVENTS`]).
    pub async fn counter(&self, name: &str) -> Result<u64, SpoolError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT value FROM counters WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v.map(u64_of).unwrap_or(0))
    }

    /// Bytes the spool takes on disk (database, WAL, shared memory).
    pub fn disk_usage(&self) -> u64 {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                std::fs::metadata(format!("{}{suffix}", self.path.display()))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum()
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

    fn cp(offset: u64) -> FileCheckpoint {
        FileCheckpoint {
            device: 1,
            inode: 2,
            fingerprint_len: 5,
            fingerprint: u64::MAX - 3,
            offset,
            skipping: false,
            location: "/var/log/x".into(),
            live: true,
            updated_at: 0,
        }
    }

    #[tokio::test]
    async fn sequences_survive_acknowledgement_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let spool = Spool::open(&path).await.unwrap();
        spool.append(&[ev("a"), ev("b")], &[cp(10)]).await.unwrap();
        let p = spool.pending(0, 10).await.unwrap();
        assert_eq!(p.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2]);
        spool.acknowledge(2).await.unwrap();
        assert_eq!(spool.depth().await.unwrap(), 0);
        spool.close().await;

        let spool = Spool::open(&path).await.unwrap();
        spool.append(&[ev("c")], &[cp(12)]).await.unwrap();
        let p = spool.pending(0, 10).await.unwrap();
        assert_eq!(p[0].sequence, 3, "a sequence number was reused");
        let cps = spool.file_checkpoints().await.unwrap();
        assert_eq!(cps.len(), 1);
        assert_eq!(cps[0].offset, 12);
        assert_eq!(cps[0].fingerprint, u64::MAX - 3, "checksum round trip");
        assert!(cps[0].updated_at > 0);
    }

    #[tokio::test]
    async fn many_rows_in_one_append_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("a.db")).await.unwrap();
        let events: Vec<NewEvent> = (0..257).map(|i| ev(&format!("line {i}"))).collect();
        spool.append(&events, &[cp(1)]).await.unwrap();
        let p = spool.pending(0, 1000).await.unwrap();
        assert_eq!(p.len(), 257);
        for (i, e) in p.iter().enumerate() {
            assert_eq!(e.event.line, format!("line {i}").into_bytes());
        }
    }

    #[tokio::test]
    async fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let limit = 1024 * 1024;
        let spool = Spool::open_with(&path, SpoolOptions { max_size: limit })
            .await
            .unwrap();
        let mut written = 0u64;
        for batch in 0..100 {
            let events: Vec<NewEvent> = (0..100)
                .map(|i| ev(&format!("{batch:04}-{i:04} {}", "x".repeat(100))))
                .collect();
            written += spool.append(&events, &[]).await.map(|_| 100).unwrap();
            assert!(
                spool.disk_usage() <= limit,
                "spool uses {} bytes over its {limit} limit",
                spool.disk_usage()
            );
        }
        let dropped = spool.counter(DROPPED_EVENTS).await.unwrap();
        let depth = spool.depth().await.unwrap();
        assert!(dropped > 0);
        assert_eq!(dropped + depth, written);
        // What is left is the newest, in one contiguous run.
        let p = spool.pending(0, 100_000).await.unwrap();
        assert_eq!(p.first().unwrap().sequence, dropped + 1);
        assert_eq!(p.last().unwrap().sequence, written);
        assert!(p.last().unwrap().event.line.starts_with(b"0099-0099"));
    }

    #[tokio::test]
    async fn batches_are_bounded_in_bytes_and_take_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("a.db")).await.unwrap();
        let big = "x".repeat(10_000);
        let events: Vec<NewEvent> = (0..10).map(|_| ev(&big)).collect();
        spool.append(&events, &[]).await.unwrap();
        // 10,000 + 10 + 6 + 64 per event: three fit in 30,300 bytes.
        let (p, full) = spool.pending_within(0, 500, 30_300, 64).await.unwrap();
        assert_eq!(p.len(), 3);
        assert!(full);
        assert_eq!(p[0].sequence, 1);
        // Too small for one: the first all the same.
        let (p, _) = spool.pending_within(4, 500, 100, 64).await.unwrap();
        assert_eq!(p.iter().map(|e| e.sequence).collect::<Vec<_>>(), [5]);
        // And the count still bounds it; the end of the spool is not full.
        let (p, full) = spool.pending_within(0, 2, u64::MAX, 64).await.unwrap();
        assert_eq!((p.len(), full), (2, false));
        let (p, full) = spool.pending_within(8, 500, u64::MAX, 64).await.unwrap();
        assert_eq!((p.len(), full), (2, false));
    }

    #[tokio::test]
    async fn a_spool_keeps_its_id_and_a_new_one_gets_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let spool = Spool::open(&path).await.unwrap();
        let id = spool.id().await.unwrap();
        assert_eq!(id.len(), 32);
        spool.close().await;
        assert_eq!(Spool::open(&path).await.unwrap().id().await.unwrap(), id);
        let other = Spool::open(&dir.path().join("b.db")).await.unwrap();
        assert_ne!(other.id().await.unwrap(), id);
    }

    #[tokio::test]
    async fn stale_checkpoints_are_forgotten_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("a.db")).await.unwrap();
        let other = FileCheckpoint { inode: 3, ..cp(5) };
        spool.append(&[], &[cp(1), other]).await.unwrap();
        let far_future = i64::MAX;
        assert_eq!(
            spool
                .forget_checkpoints(far_future, &[(1, 2)])
                .await
                .unwrap(),
            1
        );
        let left = spool.file_checkpoints().await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].inode, 2);
    }
}
