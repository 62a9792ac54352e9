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
//! When the file at a watched path changes, the directory is searched for
//! rotated siblings (`access.log.1`, `access.log-20250101`; compressed
//! ones are skipped):
//! - one with a stored checkpoint continues from it (a file rotated while
//!   the agent was down is finished first);
//! - one never seen whose last change is after the path was last looked at
//!   lived at the path between two polls (two rotations in one interval)
//!   and is read from its start;
//! - after a truncation in place (copy-and-truncate), the newest sibling
//!   that starts with the old fingerprint is the copy and is read from the
//!   old offset.
//!
//! Limits: rotated files moved to another directory are not searched (an
//! open handle still finishes a file renamed away while the agent runs);
//! a copy-and-truncate that rewrites the file past its old size with the
//! same first bytes within one poll is not noticed; fingerprints that are
//! the same for every generation (a constant header) can pick an older
//! copy.
//!
//! # Positions
//!
//! Read positions are stored per file identity in the spool's
//! `file_checkpoints`, in the same transaction as the lines read up to
//! them, so a position only ever advances over lines that are safely
//! stored. A file present when the agent first starts is read from its
//! end (OSSEC's default) unless `read_from_start` is set; files that
//! appear later, or replace a followed one, are read from their start.

mod fingerprint;
pub mod frame;
pub mod glob;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Localfile;
use crate::spool::{FileCheckpoint, NewEvent, Spool, SpoolError};
use fingerprint::Fingerprint;

/// Most bytes read from a file at once (more when lines may be longer).
const READ_CHUNK: usize = 256 * 1024;
/// Most line bytes held before they are spooled.
const BATCH_BYTES: usize = 1 << 20;
/// Allowance for coarse modification times when looking for files that
/// lived at a path between two polls.
const MTIME_SLACK_MS: i64 = 2_000;
/// Checkpoints of files gone this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often forgotten checkpoints are looked for.
const FORGET_EVERY: Duration = Duration::from_secs(3600);
/// Rotated files compressed by logrotate are not logs to read.
const COMPRESSED: &[&str] = &[".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4", ".Z"];

/// Settings for the tailer.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// How often files are checked.
    pub poll_interval: Duration,
    /// Read first-seen files from the start.
    pub read_from_start: bool,
    /// Longer lines are cut and flagged.
    pub max_line_length: usize,
    /// Most lines spooled in one transaction.
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
            batch_lines: 500,
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

/// A configured file or pattern.
#[derive(Debug)]
struct Source {
    pattern: PathBuf,
    glob: bool,
    log_format: String,
    group: usize,
}

type FileId = (u64, u64);

/// A followed file, kept open.
#[derive(Debug)]
struct Watcher {
    file: File,
    source: usize,
    /// The watched path it was found at; its lines are reported under it.
    path: PathBuf,
    location: String,
    fp: Fingerprint,
    offset: u64,
    skipping: bool,
    size: u64,
    /// At its path in the latest look.
    live: bool,
    /// Last time it grew or was at its path.
    active_at: Instant,
    /// Reading order among rotated files: older generations first.
    order: u64,
}

impl Watcher {
    fn checkpoint(&self, id: FileId) -> FileCheckpoint {
        FileCheckpoint {
            device: id.0,
            inode: id.1,
            fingerprint_len: self.fp.len,
            fingerprint: self.fp.sum,
            offset: self.offset,
            skipping: self.skipping,
            location: self.location.clone(),
            live: self.live,
            updated_at: 0,
        }
    }
}

/// Which file was at a watched path, and when that was last checked.
#[derive(Debug, Clone, Copy)]
struct PathState {
    id: FileId,
    seen_at_ms: i64,
}

/// Lines and positions not yet spooled.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<NewEvent>,
    bytes: usize,
    checkpoints: HashMap<FileId, FileCheckpoint>,
}

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
        let sources = files
            .iter()
            .map(|f| Source {
                glob: glob::is_pattern(&f.location),
                pattern: f.location.clone(),
                group: lines_per_event(&f.log_format),
                log_format: format_name(&f.log_format).to_string(),
            })
            .collect();
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
            options,
        }
    }

    /// Polls until `shutdown`; a spool failure ends the tailer.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SpoolError> {
        loop {
            self.poll_once().await?;
            if self
                .last_forget
                .is_none_or(|t| t.elapsed() >= FORGET_EVERY)
            {
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
        self.discover(first_round).await?;
        let mut order: Vec<(bool, u64, FileId)> = self
            .watchers
            .iter()
            .map(|(id, w)| (w.live, w.order, *id))
            .collect();
        order.sort();
        for (_, _, id) in order {
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
        Ok(())
    }

    async fn load(&mut self) -> Result<(), SpoolError> {
        for cp in self.spool.file_checkpoints().await? {
            let id = (cp.device, cp.inode);
            if cp.live {
                let path = PathBuf::from(&cp.location);
                let newer = self
                    .at_path
                    .get(&path)
                    .is_none_or(|s| s.seen_at_ms <= cp.updated_at);
                if newer {
                    self.at_path.insert(
                        path,
                        PathState {
                            id,
                            seen_at_ms: cp.updated_at,
                        },
                    );
                }
            }
            self.known.insert(id, cp);
        }
        self.loaded = true;
        Ok(())
    }

    async fn forget_old(&mut self) -> Result<(), SpoolError> {
        let before = now_ms() - i64::try_from(FORGET_AFTER.as_millis()).unwrap_or(i64::MAX);
        let keep: Vec<FileId> = self.watchers.keys().copied().collect();
        let forgotten = self.spool.forget_checkpoints(before, &keep).await?;
        if forgotten > 0 {
            self.known
                .retain(|id, cp| keep.contains(id) || cp.updated_at >= before);
            debug!(forgotten, "Forgot positions of files long gone.");
        }
        self.last_forget = Some(Instant::now());
        Ok(())
    }

    fn source_of(&self, location: &Path) -> Option<usize> {
        self.sources.iter().position(|s| {
            if s.glob {
                glob::matches_path(&s.pattern, location)
            } else {
                s.pattern == location
            }
        })
    }

    /// Finds the files at the watched paths and follows new ones.
    async fn discover(&mut self, first_round: bool) -> Result<(), SpoolError> {
        let now = now_ms();
        if first_round {
            // Files rotated away while the agent was down, or rotated ones
            // it had not finished, come first.
            let mut locations: Vec<PathBuf> = self
                .known
                .values()
                .map(|cp| PathBuf::from(&cp.location))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            locations.sort();
            for location in locations {
                let Some(source) = self.source_of(&location) else {
                    continue;
                };
                let current = std::fs::metadata(&location).ok().map(|m| (m.dev(), m.ino()));
                let since = match self.at_path.get(&location) {
                    Some(state) if Some(state.id) != current => state.seen_at_ms - MTIME_SLACK_MS,
                    _ => i64::MAX,
                };
                self.adopt_siblings(&location, source, since, None);
            }
        }
        let mut found: Vec<(usize, PathBuf, FileId)> = Vec::new();
        let mut seen: HashSet<FileId> = HashSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let paths = if source.glob {
                glob::expand(&source.pattern)
            } else {
                vec![source.pattern.clone()]
            };
            for path in paths {
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => {
                        let id = (meta.dev(), meta.ino());
                        if seen.insert(id) {
                            found.push((i, path, id));
                        }
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        warn!(file = %path.display(), %error, "Cannot read file status.");
                    }
                }
            }
        }
        for w in self.watchers.values_mut() {
            w.live = false;
        }
        for (source, path, id) in found {
            if let Some(w) = self.watchers.get_mut(&id) {
                if w.path == path {
                    w.live = true;
                    w.active_at = Instant::now();
                    self.at_path.insert(path, PathState { id, seen_at_ms: now });
                    continue;
                }
                // A followed file renamed onto another watched name (a
                // pattern that also matches rotated files): it stays what
                // it was; a new file at its old path is found by its path.
                continue;
            }
            let before = self.at_path.get(&path).copied();
            if let Some(prev) = before
                && prev.id != id
            {
                info!(file = %path.display(), "File was rotated or replaced; reading the new one from its start.");
                self.adopt_siblings(&path, source, prev.seen_at_ms - MTIME_SLACK_MS, None);
            }
            let from_end = first_round && !self.options.read_from_start && before.is_none();
            self.follow_at_path(source, &path, from_end);
            self.at_path.insert(path, PathState { id, seen_at_ms: now });
        }
        // Files no longer at their path are rotated or deleted: remember
        // that, so a restart looks for them by identity.
        for (id, w) in &self.watchers {
            let stored_live = self.known.get(id).is_none_or(|cp| cp.live);
            if !w.live && stored_live {
                self.batch.checkpoints.insert(*id, w.checkpoint(*id));
            }
        }
        Ok(())
    }

    /// Starts following the file now at a watched path.
    fn follow_at_path(&mut self, source: usize, path: &Path, from_end: bool) {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(error) => {
                warn!(file = %path.display(), %error, "Cannot open file.");
                return;
            }
        };
        let Ok(meta) = file.metadata() else { return };
        let id = (meta.dev(), meta.ino());
        if self.watchers.contains_key(&id) {
            return;
        }
        let size = meta.len();
        let location = path.display().to_string();
        let stored = self.known.get(&id).and_then(|cp| {
            let fp = Fingerprint {
                len: cp.fingerprint_len,
                sum: cp.fingerprint,
            };
            match fp.recheck(&file, size) {
                Ok(Some(fp)) if cp.offset <= size => Some((cp.offset, cp.skipping, fp)),
                Ok(_) => {
                    // Truncated or rewritten while the agent was down: the
                    // copy, if any, holds the rest.
                    Some((u64::MAX, false, fp))
                }
                Err(_) => None,
            }
        });
        let (offset, skipping) = match stored {
            Some((u64::MAX, _, old_fp)) => {
                if let Some(cp) = self.known.get(&id) {
                    let since = cp.updated_at - MTIME_SLACK_MS;
                    let old_offset = cp.offset;
                    self.adopt_siblings(path, source, since, Some((old_fp, old_offset)));
                }
                (0, false)
            }
            Some((offset, skipping, _)) => (offset, skipping),
            None if from_end => (size, false),
            None => (0, false),
        };
        let fp = match Fingerprint::of(&file, size) {
            Ok(fp) => fp,
            Err(error) => {
                warn!(file = %location, %error, "Cannot read file.");
                return;
            }
        };
        debug!(file = %location, offset, "Following file.");
        self.insert_watcher(id, file, source, path, location, fp, offset, skipping, size, true);
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_watcher(
        &mut self,
        id: FileId,
        file: File,
        source: usize,
        path: &Path,
        location: String,
        fp: Fingerprint,
        offset: u64,
        skipping: bool,
        size: u64,
        live: bool,
    ) {
        let w = Watcher {
            file,
            source,
            path: path.to_path_buf(),
            location,
            fp,
            offset,
            skipping,
            size,
            live,
            active_at: Instant::now(),
            order: self.next_order,
        };
        self.next_order += 1;
        self.batch.checkpoints.insert(id, w.checkpoint(id));
        self.watchers.insert(id, w);
    }

    /// Follows rotated siblings of `path` (see the module docs): files with
    /// a checkpoint from it, unknown files changed since `since_ms` from
    /// their start, and with `copy_of`, the copy of a truncated file from
    /// the old offset.
    fn adopt_siblings(
        &mut self,
        path: &Path,
        source: usize,
        since_ms: i64,
        copy_of: Option<(Fingerprint, u64)>,
    ) {
        let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
            return;
        };
        let base = base.to_string_lossy().into_owned();
        let location = path.display().to_string();
        let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) else {
            return;
        };
        let mut candidates: Vec<(i64, PathBuf, FileId)> = entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.len() > base.len()
                    && name.starts_with(&base)
                    && name[base.len()..].starts_with(['.', '-', '_'])
                    && !COMPRESSED.iter().any(|ext| name.ends_with(ext))
            })
            .filter_map(|e| {
                let meta = std::fs::metadata(e.path()).ok()?;
                let id = (meta.dev(), meta.ino());
                (meta.is_file() && !self.watchers.contains_key(&id))
                    .then(|| (mtime_ms(&meta), e.path(), id))
            })
            .collect();
        candidates.sort();
        let adopt = |this: &mut Self, candidate: &Path, start: Option<(u64, bool)>, id: FileId| {
            let Ok(file) = File::open(candidate) else { return };
            let Ok(meta) = file.metadata() else { return };
            if (meta.dev(), meta.ino()) != id || this.watchers.contains_key(&id) {
                return;
            }
            let size = meta.len();
            let Ok(fp) = Fingerprint::of(&file, size) else { return };
            let (offset, skipping) = start.unwrap_or((0, false));
            info!(file = %candidate.display(), location = %location, offset, "Reading a rotated file to its end.");
            this.insert_watcher(id, file, source, path, location.clone(), fp, offset.min(size), skipping, size, false);
        };
        if let Some((old_fp, old_offset)) = copy_of {
            for (_, candidate, id) in candidates.iter().rev() {
                if self.known.contains_key(id) {
                    continue;
                }
                let Ok(file) = File::open(candidate) else { continue };
                let Ok(size) = file.metadata().map(|m| m.len()) else { continue };
                if size >= old_offset && matches!(old_fp.recheck(&file, size), Ok(Some(_))) {
                    adopt(self, candidate, Some((old_offset, false)), *id);
                    break;
                }
            }
        }
        for (mtime, candidate, id) in &candidates {
            if self.watchers.contains_key(id) {
                continue;
            }
            match self.known.get(id) {
                Some(cp) => {
                    let fp = Fingerprint {
                        len: cp.fingerprint_len,
                        sum: cp.fingerprint,
                    };
                    let start = (cp.offset, cp.skipping);
                    let Ok(file) = File::open(candidate) else { continue };
                    let Ok(size) = file.metadata().map(|m| m.len()) else { continue };
                    if start.0 < size && matches!(fp.recheck(&file, size), Ok(Some(_))) {
                        adopt(self, candidate, Some(start), *id);
                    }
                }
                None if *mtime >= since_ms => adopt(self, candidate, None, *id),
                None => {}
            }
        }
    }

    /// Reads a file's new records into the batch, spooling full batches.
    async fn read(&mut self, id: FileId) -> Result<(), SpoolError> {
        let Some(w) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        let size = match w.file.metadata() {
            Ok(m) => m.len(),
            Err(error) => {
                warn!(file = %w.location, %error, "Cannot read file status.");
                return Ok(());
            }
        };
        let recheck = if w.live {
            w.fp.recheck(&w.file, size)
        } else {
            Ok(Some(w.fp))
        };
        match recheck {
            Ok(Some(fp)) if size >= w.offset => {
                if fp != w.fp {
                    w.fp = fp;
                    self.batch.checkpoints.insert(id, w.checkpoint(id));
                }
            }
            Ok(_) => {
                info!(file = %w.location, "File was truncated; reading it again from its start.");
                let old = (w.fp, w.offset);
                let (path, source) = (w.path.clone(), w.source);
                w.offset = 0;
                w.skipping = false;
                w.fp = Fingerprint::of(&w.file, size).unwrap_or_default();
                self.batch.checkpoints.insert(id, w.checkpoint(id));
                let since = self
                    .at_path
                    .get(&path)
                    .map(|s| s.seen_at_ms - MTIME_SLACK_MS)
                    .unwrap_or(i64::MAX);
                let before: HashSet<FileId> = self.watchers.keys().copied().collect();
                self.adopt_siblings(&path, source, since, Some(old));
                let mut copies: Vec<(u64, FileId)> = self
                    .watchers
                    .iter()
                    .filter(|(k, _)| !before.contains(k))
                    .map(|(k, w)| (w.order, *k))
                    .collect();
                copies.sort();
                for (_, copy) in copies {
                    Box::pin(self.read(copy)).await?;
                }
            }
            Err(error) => {
                warn!(file = %w.location, %error, "Cannot read file.");
                return Ok(());
            }
        }
        let Some(w) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        w.size = size;
        let (max, group) = (
            self.options.max_line_length,
            self.sources.get(w.source).map(|s| s.group).unwrap_or(1),
        );
        let format = self
            .sources
            .get(w.source)
            .map(|s| s.log_format.as_str())
            .unwrap_or("syslog");
        while w.offset < size {
            let want = usize::try_from(size - w.offset)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let n = match w.file.read_at(&mut self.buf[..want], w.offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(error) => {
                    warn!(file = %w.location, %error, "Cannot read file.");
                    break;
                }
            };
            let room = self
                .options
                .batch_lines
                .saturating_sub(self.batch.events.len())
                .max(1);
            let framed = frame::frame(&self.buf[..n], w.skipping, max, group, room);
            if framed.consumed == 0 {
                break; // only part of a record so far
            }
            let read_at = now_ms();
            for r in framed.records {
                self.batch.bytes += r.line.len();
                self.batch.events.push(NewEvent {
                    location: w.location.clone(),
                    log_format: format.to_string(),
                    read_at,
                    truncated: r.truncated,
                    line: r.line,
                });
            }
            w.offset += framed.consumed as u64;
            w.skipping = framed.skipping;
            w.active_at = Instant::now();
            self.batch.checkpoints.insert(id, w.checkpoint(id));
            if self.batch.events.len() >= self.options.batch_lines
                || self.batch.bytes >= self.options.batch_bytes
            {
                flush(&self.spool, &mut self.batch, &mut self.known, &self.spooled).await?;
            }
        }
        Ok(())
    }
}

/// Spools the batch's events with the positions they were read up to.
async fn flush(
    spool: &Spool,
    batch: &mut Batch,
    known: &mut HashMap<FileId, FileCheckpoint>,
    spooled: &Notify,
) -> Result<(), SpoolError> {
    if batch.events.is_empty() && batch.checkpoints.is_empty() {
        return Ok(());
    }
    let checkpoints: Vec<FileCheckpoint> = batch.checkpoints.drain().map(|(_, c)| c).collect();
    spool.append(&batch.events, &checkpoints).await?;
    let now = now_ms();
    for mut cp in checkpoints {
        cp.updated_at = now;
        known.insert((cp.device, cp.inode), cp);
    }
    if !batch.events.is_empty() {
        spooled.notify_one();
    }
    batch.events.clear();
    batch.bytes = 0;
    Ok(())
}
