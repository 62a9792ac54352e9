//! Following log files into the spool, in the manner of vector's file
//! source: files are polled (every `poll_interval`), which works on every
//! file system and cannot miss an event the way an overflowing inotify
//! queue can.
//!
//! # Identity and rotation
//!
//! A file is known by its device and inode, and a fingerprint of its first
//! bytes tells a reused inode from the file that had it. Every followed
//! file is kept open, so a file renamed away by a rotation (or deleted) is
//! still read to its end through its handle before it is let go, once it
//! has been idle for `rotate_wait`; its lines keep the location they were
//! read under. Files are read in order: rotated files first, then the
//! file now at the path.
//!
//! When the file at a watched path changes, its rotated siblings are
//! looked for (`rotation`), and bytes read are checked against the file
//! after the read (`reader`), so a truncation under a read never passes a
//! new file's bytes off as the old file's.
//!
//! Guarantee: with rename-and-create, and with copy-and-truncate where
//! nothing is written between the copy and the truncation, every line
//! written is delivered exactly once, also when several rotations fall
//! into one poll interval (as long as the generations stay in the
//! directory). Lines written between the copy and the truncation are in
//! neither file and are lost, as with logrotate itself.
//!
//! Limits: rotated files moved to another directory are not searched (an
//! open handle still finishes a file renamed away while the agent runs);
//! a copy-and-truncate that rewrites the file past its old size with the
//! same first bytes within one poll is not noticed; fingerprints that are
//! the same for every generation (a constant header) can pick an older
//! copy.
//!
//! # Backpressure
//!
//! Before each read the spool says how much room it has below its
//! high-water mark ([`Spool::room`]); the tailer reads no more than fits
//! and, when it is full, stops with the file position where the spooled
//! lines end and tries again next poll. A burst therefore waits in its
//! file, not in memory and not in a spool that would have to drop lines;
//! a file rotated away or deleted meanwhile is still read through the
//! handle kept open on it.
//!
//! # Positions
//!
//! Read positions are stored with the lines read up to them, in one spool
//! transaction (`checkpoints`), so a restart neither loses nor repeats a
//! line. A file present when the agent first starts is read from its end
//! (OSSEC's default) unless `read_from_start` is set; files that appear
//! later, or replace a followed one, are read from their start.
//!
//! # Layout
//!
//! - `discovery`: which files the locations name now (plain paths and
//!   [`glob`] patterns), and where to start in a newly found one.
//! - `reader`: reading one followed file into events ([`frame`]), safe
//!   against truncation under the read.
//! - `rotation`: finding rotated and copied generations of a file.
//! - `checkpoints`: positions in the spool, loaded, batched, forgotten.
//! - `fingerprint`: telling a reused inode from the file that had it.

mod checkpoints;
mod discovery;
mod fingerprint;
pub mod frame;
pub mod glob;
mod reader;
mod rotation;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::Localfile;
use crate::spool::{FileCheckpoint, Spool, SpoolError};
use checkpoints::{Batch, FORGET_EVERY, flush};
use discovery::{PathState, Source};
use reader::Watcher;

/// Most bytes read from a file at once (more when lines may be longer).
/// Each read costs a look at the spool's room and at the file (its size,
/// its fingerprint), so a burst is read in large pieces.
const READ_CHUNK: usize = 512 * 1024;
/// Most line bytes held before they are spooled.
const BATCH_BYTES: usize = 1 << 20;

/// Settings for the tailer.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// How often files are checked.
    pub poll_interval: Duration,
    /// Read first-seen files from the start.
    pub read_from_start: bool,
    /// Longer lines are cut and flagged.
    pub max_line_length: usize,
    /// Most lines spooled in one transaction (not the uplink's
    /// `batch_events`: a transaction costs the spool a dozen statements
    /// and a few pages of its tables beside the lines, so a burst goes in
    /// few large ones; the uplink sends them in its own batches).
    pub batch_lines: usize,
    /// How long a rotated or deleted file is still read after its last
    /// growth (writers keep writing to it until they reopen).
    pub rotate_wait: Duration,
    /// Most bytes of events in one spool transaction.
    pub batch_bytes: usize,
}

impl Default for TailOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            read_from_start: false,
            max_line_length: 64 * 1024,
            batch_lines: 4096,
            rotate_wait: Duration::from_secs(5),
            batch_bytes: BATCH_BYTES,
        }
    }
}

/// How many lines make one event in `log_format`: `multi-line:N` joins N,
/// every other file format is one line per event.
pub fn lines_per_event(log_format: &str) -> usize {
    log_format
        .strip_prefix("multi-line")
        .and_then(|rest| rest.trim_start().strip_prefix(':'))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1)
}

/// The format name sent with events (`multi-line:3` travels as `multi-line`).
pub fn format_name(log_format: &str) -> &str {
    if log_format.starts_with("multi-line") {
        "multi-line"
    } else {
        log_format
    }
}

/// A file's identity: device and inode.
type FileId = (u64, u64);

/// Follows the configured files into the spool.
#[derive(Debug)]
pub struct Tailer {
    sources: Vec<Source>,
    spool: Spool,
    options: TailOptions,
    /// Woken after every spool write so the uplink sends at once.
    spooled: Arc<Notify>,
    /// Bytes not yet read of the file furthest behind.
    lag: Arc<AtomicU64>,
    watchers: HashMap<FileId, Watcher>,
    /// The stored checkpoints (a mirror of the table).
    known: HashMap<FileId, FileCheckpoint>,
    at_path: HashMap<PathBuf, PathState>,
    batch: Batch,
    buf: Vec<u8>,
    next_order: u64,
    first_round: bool,
    loaded: bool,
    last_forget: Option<Instant>,
    /// When the previous poll looked at the files (ms).
    last_poll_ms: i64,
    /// Reading is paused for the spool's high-water mark (logged once).
    paused: bool,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn mtime_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Tailer {
    /// A tailer for `files`.
    pub fn new(
        files: &[Localfile],
        spool: Spool,
        options: TailOptions,
        spooled: Arc<Notify>,
        lag: Arc<AtomicU64>,
    ) -> Self {
        let sources = files.iter().map(Source::new).collect();
        let chunk = READ_CHUNK.max(options.max_line_length + 1);
        Self {
            sources,
            spool,
            spooled,
            lag,
            watchers: HashMap::new(),
            known: HashMap::new(),
            at_path: HashMap::new(),
            batch: Batch::default(),
            buf: vec![0; chunk],
            next_order: 0,
            first_round: true,
            loaded: false,
            last_forget: None,
            last_poll_ms: now_ms(),
            paused: false,
            options,
        }
    }

    /// Polls until `shutdown`; a spool failure ends the tailer.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SpoolError> {
        loop {
            self.poll_once().await?;
            if self.last_forget.is_none_or(|t| t.elapsed() >= FORGET_EVERY) {
                self.forget_old().await?;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
    }

    /// Reads whatever is new in every file.
    pub async fn poll_once(&mut self) -> Result<(), SpoolError> {
        if !self.loaded {
            self.load().await?;
        }
        let first_round = std::mem::replace(&mut self.first_round, false);
        let started = now_ms();
        self.discover(first_round).await?;
        let mut order: Vec<_> = self
            .watchers
            .iter()
            .map(|(id, w)| (w.read_order(), *id))
            .collect();
        order.sort();
        for (_, id) in order {
            self.read(id).await?;
        }
        flush(&self.spool, &mut self.batch, &mut self.known, &self.spooled).await?;
        let wait = self.options.rotate_wait;
        self.watchers.retain(|_, w| {
            let finished = !w.live && w.offset >= w.size && w.active_at.elapsed() >= wait;
            if finished {
                debug!(file = %w.location, "Finished a rotated file.");
            }
            !finished
        });
        let lag = self
            .watchers
            .values()
            .map(|w| w.size.saturating_sub(w.offset))
            .max()
            .unwrap_or(0);
        self.lag.store(lag, Ordering::Relaxed);
        self.last_poll_ms = started;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
