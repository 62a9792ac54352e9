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
//!
//! What one append stores goes in as chunks (`spool_chunks`, migration
//! 0070): a blob of framed events under the sequence of its first, up to
//! [`CHUNK_EVENTS`] events or [`CHUNK_BYTES`] bytes each, so a line costs
//! SQLite a share of one insert, one read and one delete rather than one
//! of each (a spool of a row per line took over half the agent's CPU under
//! a burst). Sequences come from `spool_cursor`, advanced in the same
//! transaction; the cursor also remembers what was acknowledged, since an
//! acknowledgement may end inside a chunk, which is deleted once all of it
//! is. Drops take whole chunks, counting only their unacknowledged events.
//! A spool of rows from before the upgrade is moved into chunks under its
//! own sequence numbers when it is opened.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tracing::warn;

/// The counter of events dropped because the spool was full.
pub const DROPPED_EVENTS: &str = "dropped_events";

/// Default bound of the spool on disk.
pub const DEFAULT_MAX_SIZE: u64 = 256 * 1024 * 1024;

/// Most events in one chunk.
pub const CHUNK_EVENTS: usize = 256;
/// Most bytes of framed events in one chunk (a longer event is a chunk of
/// its own).
pub const CHUNK_BYTES: usize = 128 * 1024;

/// A spool failure.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// SQLite or sqlx reported an error.
    #[error("spool database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Applying the schema failed.
    #[error("spool migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored chunk does not decode (the file was damaged).
    #[error("spool chunk at sequence {sequence} is damaged: {reason}")]
    Corrupt {
        /// The chunk's first sequence.
        sequence: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// An event too large to frame (over 4 GiB).
    #[error("an event of {0} bytes is too large for the spool")]
    TooLarge(usize),
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
        let spool = Self {
            pool,
            path: path.to_path_buf(),
            page_size: u64_of(page_size).max(512),
            data_budget: options.max_size / 2,
            high_water: options.max_size / 2 / 4 * 3,
            wal_budget,
        };
        let moved = spool.convert_line_rows().await?;
        if moved > 0 {
            tracing::info!(
                events = moved,
                "Moved the events of the per-line spool into chunks."
            );
        }
        Ok(spool)
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
        if !events.is_empty() {
            let first: i64 = sqlx::query_scalar("SELECT next_sequence FROM spool_cursor")
                .fetch_one(&mut *tx)
                .await?;
            let next = insert_run(&mut tx, u64_of(first), events).await?;
            sqlx::query("UPDATE spool_cursor SET next_sequence = $1")
                .bind(i64_of(next))
                .execute(&mut *tx)
                .await?;
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

    /// Moves the rows of the per-line spool (migrations/agent/0001) into
    /// chunks under their own sequence numbers, a thousand per
    /// transaction, so a spool written before the upgrade is still sent,
    /// once.
    async fn convert_line_rows(&self) -> Result<u64, SpoolError> {
        let mut moved = 0u64;
        loop {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let rows = sqlx::query(
                "SELECT sequence, location, log_format, read_at, truncated, line FROM spool
                 ORDER BY sequence LIMIT 1000",
            )
            .fetch_all(&mut *tx)
            .await?;
            let Some(last) = rows.last().map(|r| r.get::<i64, _>("sequence")) else {
                tx.commit().await?;
                return Ok(moved);
            };
            let mut run: Vec<NewEvent> = Vec::new();
            let mut run_first = 0u64;
            for r in &rows {
                let sequence = u64_of(r.get("sequence"));
                if !run.is_empty() && run_first + run.len() as u64 != sequence {
                    insert_run(&mut tx, run_first, &run).await?;
                    run.clear();
                }
                if run.is_empty() {
                    run_first = sequence;
                }
                run.push(NewEvent {
                    location: r.get("location"),
                    log_format: r.get("log_format"),
                    read_at: r.get("read_at"),
                    truncated: r.get("truncated"),
                    line: r.get("line"),
                });
            }
            insert_run(&mut tx, run_first, &run).await?;
            sqlx::query("DELETE FROM spool WHERE sequence <= $1")
                .bind(last)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            moved += rows.len() as u64;
        }
    }

    /// Bytes of events that may still be added before the high-water mark
    /// (0: readers should wait for acknowledgements to make room). What is
    /// added goes through the WAL first, so the WAL's share of the bound
    /// limits it too: a WAL over a quarter of its share is checkpointed
    /// and truncated here, and one that a busy reader kept from being
    /// truncated holds readers back until it is (a burst once took the
    /// spool past its bound on a loaded machine that way).
    pub async fn room(&self) -> Result<u64, SpoolError> {
        let used = {
            let mut conn = self.pool.acquire().await?;
            self.used_bytes(&mut conn).await?
        };
        let mut wal = self.wal_size();
        if wal > self.wal_budget / 4 {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
            wal = self.wal_size();
        }
        let by_events = self.high_water.saturating_sub(used);
        let by_wal = self.wal_budget.saturating_sub(wal);
        Ok(by_events.min(by_wal))
    }

    fn wal_size(&self) -> u64 {
        std::fs::metadata(format!("{}-wal", self.path.display()))
            .map(|m| m.len())
            .unwrap_or(0)
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
            let chunks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM spool_chunks")
                .fetch_one(&mut *tx)
                .await?;
            let chunks = u64_of(chunks);
            if chunks == 0 {
                break;
            }
            let excess = used - self.data_budget * 7 / 8;
            let per_chunk = (used / chunks).max(1);
            let n = excess.div_ceil(per_chunk).clamp(1, chunks);
            let acknowledged: i64 = sqlx::query_scalar("SELECT acknowledged FROM spool_cursor")
                .fetch_one(&mut *tx)
                .await?;
            let oldest: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT first_sequence, events FROM spool_chunks ORDER BY first_sequence LIMIT $1",
            )
            .bind(i64_of(n))
            .fetch_all(&mut *tx)
            .await?;
            let Some(&(last, _)) = oldest.last() else {
                break;
            };
            sqlx::query("DELETE FROM spool_chunks WHERE first_sequence <= $1")
                .bind(last)
                .execute(&mut *tx)
                .await?;
            dropped += oldest
                .iter()
                .map(|&(first, events)| unacknowledged(first, events, acknowledged))
                .sum::<u64>();
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
        if self.wal_size() > self.wal_budget {
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
    /// it). Chunks are read one after the other and only as far as the
    /// batch goes, so a spool of long lines is never loaded beyond one
    /// batch and a chunk. The flag says the byte bound, not the count or
    /// the spool's end, ended the batch (it is full).
    pub async fn pending_within(
        &self,
        after: u64,
        limit: u32,
        max_bytes: u64,
        per_event: u64,
    ) -> Result<(Vec<SpooledEvent>, bool), SpoolError> {
        let mut out = Vec::new();
        let mut total = 0u64;
        let limit = limit as usize;
        if limit == 0 {
            return Ok((out, false));
        }
        // From the chunk that holds `after + 1` (or the first after it), a
        // few chunks per query: sqlx reads a query's rows ahead of the
        // caller, so an open-ended one would copy the whole spool's blobs
        // for every batch.
        // The first page starts at the chunk holding `after + 1` (found by
        // a subquery: one round trip to the database thread, not two) and
        // takes as many chunks as a batch of full chunks starting inside
        // one spans, so a batch is usually one query and no chunk is read
        // twice for nothing; the next pages start after the last chunk read.
        let first_page = i64_of((limit.div_ceil(CHUNK_EVENTS) + 1) as u64).min(CHUNKS_PER_READ * 2);
        let mut from: Option<i64> = None;
        loop {
            let chunks = if from.is_none() {
                first_page
            } else {
                CHUNKS_PER_READ
            };
            let page: Vec<(i64, i64, Vec<u8>)> = match from {
                None => sqlx::query_as(
                    "SELECT first_sequence, events, data FROM spool_chunks
                     WHERE first_sequence >= (SELECT COALESCE(MAX(first_sequence), 0)
                                              FROM spool_chunks WHERE first_sequence <= $1)
                     ORDER BY first_sequence LIMIT $2",
                )
                .bind(i64_of(after.saturating_add(1))),
                Some(from) => sqlx::query_as(
                    "SELECT first_sequence, events, data FROM spool_chunks
                     WHERE first_sequence >= $1 ORDER BY first_sequence LIMIT $2",
                )
                .bind(from),
            }
            .bind(chunks)
            .fetch_all(&self.pool)
            .await?;
            let Some(&(last_first, _, _)) = page.last() else {
                break;
            };
            for (first, events, data) in &page {
                let mut decoder = Decoder {
                    data,
                    first: u64_of(*first),
                };
                for i in 0..u64_of(*events) {
                    let sequence = u64_of(*first) + i;
                    if sequence <= after {
                        decoder.skip()?;
                        continue;
                    }
                    let event = decoder.event()?;
                    let size = (event.line.len() + event.location.len() + event.log_format.len())
                        as u64
                        + per_event;
                    total = total.saturating_add(size);
                    if !out.is_empty() && total > max_bytes {
                        return Ok((out, true));
                    }
                    out.push(SpooledEvent { sequence, event });
                    if out.len() >= limit {
                        return Ok((out, false));
                    }
                }
            }
            from = Some(last_first + 1);
        }
        Ok((out, false))
    }

    /// Up to `limit` spooled events after `after`, in order.
    pub async fn pending(&self, after: u64, limit: u32) -> Result<Vec<SpooledEvent>, SpoolError> {
        Ok(self.pending_within(after, limit, u64::MAX, 0).await?.0)
    }

    /// Deletes everything up to and including `sequence`: the manager has
    /// it. A chunk goes once all its events are acknowledged; the cursor
    /// remembers the rest.
    pub async fn acknowledge(&self, sequence: u64) -> Result<(), SpoolError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let sequence = i64_of(sequence);
        sqlx::query(
            "DELETE FROM spool_chunks WHERE first_sequence <= $1 AND first_sequence + events - 1 <= $1",
        )
        .bind(sequence)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE spool_cursor SET acknowledged = MIN(MAX(acknowledged, $1), next_sequence - 1)",
        )
        .bind(sequence)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many events wait for acknowledgement.
    pub async fn depth(&self) -> Result<u64, SpoolError> {
        let (total, first, acknowledged): (i64, Option<i64>, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(events), 0), MIN(first_sequence),
                    (SELECT acknowledged FROM spool_cursor)
             FROM spool_chunks",
        )
        .fetch_one(&self.pool)
        .await?;
        // Only the oldest chunk can be acknowledged in part.
        let acknowledged_part = first.map_or(0, |first| u64_of((acknowledged - first + 1).max(0)));
        Ok(u64_of(total).saturating_sub(acknowledged_part))
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

/// `events` cut into chunks of at most [`CHUNK_EVENTS`] events and about
/// [`CHUNK_BYTES`] bytes (never empty: at least one event each).
fn chunks(events: &[NewEvent]) -> impl Iterator<Item = &[NewEvent]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0usize;
        let mut n = 0usize;
        while n < rest.len() && n < CHUNK_EVENTS {
            let e = &rest[n];
            let size = FRAME_OVERHEAD + e.location.len() + e.log_format.len() + e.line.len();
            if n > 0 && bytes + size > CHUNK_BYTES {
                break;
            }
            bytes += size;
            n += 1;
        }
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// Chunks read per query when reading a batch back.
const CHUNKS_PER_READ: i64 = 4;

/// Framing bytes per event: three u32 lengths, the time, the flag.
const FRAME_OVERHEAD: usize = 4 * 3 + 8 + 1;

/// Appends one event's frame: location, format and line each as a
/// little-endian u32 length and the bytes; the read time (i64 LE) and
/// the truncated flag (one byte) after the format.
fn encode(out: &mut Vec<u8>, e: &NewEvent) -> Result<(), SpoolError> {
    fn put(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), SpoolError> {
        let len = u32::try_from(bytes.len()).map_err(|_| SpoolError::TooLarge(bytes.len()))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
        Ok(())
    }
    out.reserve(FRAME_OVERHEAD + e.location.len() + e.log_format.len() + e.line.len());
    put(out, e.location.as_bytes())?;
    put(out, e.log_format.as_bytes())?;
    out.extend_from_slice(&e.read_at.to_le_bytes());
    out.push(u8::from(e.truncated));
    put(out, &e.line)
}

/// Stores a run of events as chunks under consecutive sequences from
/// `first`; returns the sequence after the last.
async fn insert_run(
    tx: &mut sqlx::SqliteConnection,
    first: u64,
    events: &[NewEvent],
) -> Result<u64, SpoolError> {
    let mut next = first;
    let mut data = Vec::new();
    for chunk in chunks(events) {
        data.clear();
        for e in chunk {
            encode(&mut data, e)?;
        }
        insert_chunk(tx, next, chunk.len(), &data).await?;
        next += chunk.len() as u64;
    }
    Ok(next)
}

async fn insert_chunk(
    tx: &mut sqlx::SqliteConnection,
    first_sequence: u64,
    events: usize,
    data: &[u8],
) -> Result<(), SpoolError> {
    sqlx::query("INSERT INTO spool_chunks (first_sequence, events, data) VALUES ($1, $2, $3)")
        .bind(i64_of(first_sequence))
        .bind(i64_of(events as u64))
        .bind(data)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Events of the chunk (`first`, `events`) after `acknowledged`.
fn unacknowledged(first: i64, events: i64, acknowledged: i64) -> u64 {
    let last = first + events - 1;
    u64_of(last - acknowledged.max(first - 1))
}

/// Reads the frames of one chunk, in order.
struct Decoder<'a> {
    data: &'a [u8],
    /// The chunk's first sequence, for errors.
    first: u64,
}

impl Decoder<'_> {
    fn corrupt(&self, reason: &'static str) -> SpoolError {
        SpoolError::Corrupt {
            sequence: self.first,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], SpoolError> {
        if self.data.len() < n {
            return Err(self.corrupt("a frame runs past its end"));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    fn field(&mut self) -> Result<&[u8], SpoolError> {
        let len = self.take(4)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        self.take(len)
    }

    fn text(&mut self) -> Result<String, SpoolError> {
        let bytes = self.field()?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(self.corrupt("a location or format is not UTF-8")),
        }
    }

    fn event(&mut self) -> Result<NewEvent, SpoolError> {
        let location = self.text()?;
        let log_format = self.text()?;
        let time = self.take(9)?;
        let mut read_at = [0u8; 8];
        read_at.copy_from_slice(&time[..8]);
        let truncated = time[8] != 0;
        let line = self.field()?.to_vec();
        Ok(NewEvent {
            location,
            log_format,
            read_at: i64::from_le_bytes(read_at),
            truncated,
            line,
        })
    }

    fn skip(&mut self) -> Result<(), SpoolError> {
        self.field()?;
        self.field()?;
        self.take(9)?;
        self.field()?;
        Ok(())
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

    #[tokio::test]
    async fn a_spool_of_rows_per_line_is_sent_after_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        // The layout before chunks: migrations up to 0011, a row per line.
        let options = SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        let old = sqlx::migrate::Migrator::with_migrations(
            migrator()
                .migrations
                .iter()
                .filter(|m| m.version < 70)
                .cloned()
                .collect(),
        );
        old.run(&pool).await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        for i in 1..=2500 {
            sqlx::query(
                "INSERT INTO spool (location, log_format, read_at, truncated, line)
                 VALUES ($1, 'syslog', $2, $3, $4)",
            )
            .bind(if i % 2 == 0 {
                "/var/log/a"
            } else {
                "/var/log/b"
            })
            .bind(i64::from(i))
            .bind(i == 7)
            .bind(format!("old {i}").into_bytes())
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        // 1-10 were acknowledged and 1,000-1,004 dropped, as the old spool did
        // it; the numbering must go on after 2,500 all the same.
        sqlx::query("DELETE FROM spool WHERE sequence <= 10 OR sequence BETWEEN 1000 AND 1004")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let spool = Spool::open(&path).await.unwrap();
        assert_eq!(spool.depth().await.unwrap(), 2485);
        let p = spool.pending(0, 10_000).await.unwrap();
        let sequences: Vec<u64> = p.iter().map(|e| e.sequence).collect();
        let expected: Vec<u64> = (11..=2500).filter(|s| !(1000..=1004).contains(s)).collect();
        assert_eq!(sequences, expected);
        for e in &p {
            assert_eq!(e.event.line, format!("old {}", e.sequence).into_bytes());
            assert_eq!(e.event.read_at, e.sequence as i64);
            assert_eq!(e.event.truncated, e.sequence == 7);
            let location = if e.sequence % 2 == 0 {
                "/var/log/a"
            } else {
                "/var/log/b"
            };
            assert_eq!(e.event.location, location);
        }
        spool.append(&[ev("new")], &[]).await.unwrap();
        let last = spool.pending(2500, 10).await.unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].sequence, 2501, "a sequence number was reused");
        spool.close().await;
        // Moved once: reopening finds the same.
        let spool = Spool::open(&path).await.unwrap();
        assert_eq!(spool.depth().await.unwrap(), 2486);
    }

    #[tokio::test]
    async fn an_acknowledgement_inside_a_chunk_holds_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let spool = Spool::open(&path).await.unwrap();
        // 600 events: three chunks (256, 256, 88).
        let events: Vec<NewEvent> = (1..=600).map(|i| ev(&format!("line {i}"))).collect();
        spool.append(&events, &[cp(1)]).await.unwrap();
        spool.acknowledge(300).await.unwrap();
        assert_eq!(spool.depth().await.unwrap(), 300);
        let chunks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM spool_chunks")
            .fetch_one(&spool.pool())
            .await
            .unwrap();
        assert_eq!(chunks, 2, "only the fully acknowledged chunk goes");
        spool.close().await;

        let spool = Spool::open(&path).await.unwrap();
        assert_eq!(spool.depth().await.unwrap(), 300);
        let (p, full) = spool.pending_within(300, 500, u64::MAX, 0).await.unwrap();
        assert!(!full);
        assert_eq!(p.len(), 300);
        assert_eq!(p[0].sequence, 301);
        assert_eq!(p[0].event.line, b"line 301");
        // An acknowledgement beyond what was ever spooled moves nothing
        // past the end: the next event still gets the next number.
        spool.acknowledge(10_000).await.unwrap();
        assert_eq!(spool.depth().await.unwrap(), 0);
        spool.append(&[ev("after")], &[]).await.unwrap();
        assert_eq!(spool.depth().await.unwrap(), 1);
        assert_eq!(spool.pending(0, 10).await.unwrap()[0].sequence, 601);
    }

    #[tokio::test]
    async fn a_damaged_chunk_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("a.db")).await.unwrap();
        spool.append(&[ev("a"), ev("b")], &[]).await.unwrap();
        sqlx::query("UPDATE spool_chunks SET data = substr(data, 1, length(data) - 3)")
            .execute(&spool.pool())
            .await
            .unwrap();
        let error = spool.pending(0, 10).await.unwrap_err();
        assert!(
            matches!(error, SpoolError::Corrupt { sequence: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn chunks_are_bounded_in_events_and_bytes() {
        let small: Vec<NewEvent> = (0..600).map(|_| ev("x")).collect();
        let sizes: Vec<usize> = chunks(&small).map(<[NewEvent]>::len).collect();
        assert_eq!(sizes, [256, 256, 88]);
        let long = ev(&"y".repeat(CHUNK_BYTES * 2));
        let mixed = vec![ev("a"), long.clone(), ev("b"), ev("c")];
        let sizes: Vec<usize> = chunks(&mixed).map(<[NewEvent]>::len).collect();
        assert_eq!(sizes, [1, 1, 2], "a long event is a chunk of its own");
        assert_eq!(chunks(&[]).count(), 0);
    }
}
