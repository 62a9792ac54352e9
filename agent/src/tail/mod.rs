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
//! Bytes read are checked against the file after the read (it still
//! starts with its fingerprint and is not shorter than what was read), so
//! a truncation between taking a file's size and reading it never passes
//! the new file's bytes off as the old file's; the copy supplies the rest.
//! Siblings are opened once and judged through that handle, since names
//! move while the directory is searched.
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
    /// Modification time at the latest look (ms).
    mtime: i64,
    /// At its path in the latest look.
    live: bool,
    /// Last time it grew or was at its path.
    active_at: Instant,
    /// Reading order among rotated files: older generations first.
    order: u64,
    /// `N` of its rotated name `.N` when last seen in a sibling search.
    rotation: Option<u64>,
    /// Wall time (ms) its size was last taken: a copy made after it may
    /// hold lines it has not read.
    checked_ms: i64,
}

impl Watcher {
    /// Rotated files before the live one, older generations first: by
    /// modification time, then `.2` before `.1`, then as found.
    fn read_order(&self) -> (bool, i64, std::cmp::Reverse<u64>, u64) {
        let mtime = self
            .file
            .metadata()
            .map(|m| mtime_ms(&m))
            .unwrap_or(self.mtime);
        (
            self.live,
            mtime,
            std::cmp::Reverse(self.rotation.unwrap_or(0)),
            self.order,
        )
    }

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

/// A rotated sibling found in a directory, opened once.
#[derive(Debug)]
struct Candidate {
    mtime: i64,
    size: u64,
    path: PathBuf,
    id: FileId,
    file: File,
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
    /// When the previous poll looked at the files (ms).
    last_poll_ms: i64,
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
            last_poll_ms: now_ms(),
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

    async fn load(&mut self) -> Result<(), SpoolError> {
        // Which file each path last had: the one still there when the
        // agent stopped, else the latest one rotated or deleted from it.
        let mut latest: HashMap<PathBuf, (bool, i64, FileId)> = HashMap::new();
        for cp in self.spool.file_checkpoints().await? {
            let id = (cp.device, cp.inode);
            let key = (cp.live, cp.updated_at, id);
            let entry = latest.entry(PathBuf::from(&cp.location)).or_insert(key);
            if key > *entry {
                *entry = key;
            }
            self.known.insert(id, cp);
        }
        for (path, (_, seen_at_ms, id)) in latest {
            self.at_path.insert(path, PathState { id, seen_at_ms });
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
                let current = std::fs::metadata(&location)
                    .ok()
                    .map(|m| (m.dev(), m.ino()));
                let since = match self.at_path.get(&location) {
                    Some(state) if Some(state.id) != current => state.seen_at_ms - MTIME_SLACK_MS,
                    _ => i64::MAX,
                };
                self.adopt_siblings(&location, source, since, None, true);
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
                    self.at_path.insert(
                        path,
                        PathState {
                            id,
                            seen_at_ms: now,
                        },
                    );
                    continue;
                }
                // A followed file renamed onto another watched name (a
                // pattern that also matches rotated files): it stays what
                // it was; a new file at its old path is found by its path.
                continue;
            }
            let before = self.at_path.get(&path).copied();
            match before {
                Some(prev) if prev.id != id => {
                    info!(file = %path.display(), "File was rotated or replaced; reading the new one from its start.");
                    self.adopt_siblings(
                        &path,
                        source,
                        prev.seen_at_ms - MTIME_SLACK_MS,
                        None,
                        true,
                    );
                }
                // A new file may have been rotated already before this
                // first look (created, written and rotated in one interval).
                None if !first_round => {
                    self.adopt_siblings(
                        &path,
                        source,
                        self.last_poll_ms - MTIME_SLACK_MS,
                        None,
                        true,
                    );
                }
                _ => {}
            }
            let from_end = first_round && !self.options.read_from_start && before.is_none();
            self.follow_at_path(source, &path, from_end);
            self.at_path.insert(
                path,
                PathState {
                    id,
                    seen_at_ms: now,
                },
            );
        }
        // A watched path with no file now may have had one between two
        // polls that was rotated away already: look when its directory
        // changed lately.
        let present: HashSet<&PathBuf> = self
            .watchers
            .values()
            .filter(|w| w.live)
            .map(|w| &w.path)
            .collect();
        let missing: Vec<(PathBuf, PathState)> = self
            .at_path
            .iter()
            .filter(|(path, _)| !present.contains(path))
            .map(|(path, state)| (path.clone(), *state))
            .collect();
        for (path, state) in missing {
            let Some(source) = self.source_of(&path) else {
                continue;
            };
            if dir_changed_since(&path, self.last_poll_ms - MTIME_SLACK_MS) {
                self.adopt_siblings(&path, source, state.seen_at_ms - MTIME_SLACK_MS, None, true);
            }
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
                    self.adopt_siblings(path, source, since, Some((old_fp, old_offset)), true);
                }
                (0, false)
            }
            Some((offset, skipping, _)) => {
                // Changed without growing while not watched, or the first
                // bytes of a file that was empty: a copy may hold lines.
                if let Some(cp) = self.known.get(&id) {
                    let since = cp.updated_at - MTIME_SLACK_MS;
                    let old_fp = Fingerprint {
                        len: cp.fingerprint_len,
                        sum: cp.fingerprint,
                    };
                    let changed = mtime_ms(&meta) >= since && size <= offset;
                    if changed || (old_fp.len == 0 && size > 0) {
                        let unknown = old_fp.len == 0;
                        self.adopt_siblings(path, source, since, Some((old_fp, offset)), unknown);
                    }
                }
                (offset, skipping)
            }
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
        self.insert_watcher(
            id, file, source, path, location, fp, offset, skipping, size, true,
        );
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
        let Ok(file_meta) = file.metadata() else {
            return;
        };
        let w = Watcher {
            file,
            source,
            path: path.to_path_buf(),
            location,
            fp,
            offset,
            skipping,
            size,
            mtime: mtime_ms(&file_meta),
            live,
            active_at: Instant::now(),
            order: self.next_order,
            rotation: rotation_number(path),
            checked_ms: now_ms(),
        };
        self.next_order += 1;
        self.batch.checkpoints.insert(id, w.checkpoint(id));
        self.watchers.insert(id, w);
    }

    /// Follows rotated siblings of `path` (see the module docs): with
    /// `copy_of`, first the copy of a truncated file from the old offset;
    /// then files with an unfinished checkpoint; with `unknown`, files
    /// never seen and changed since `since_ms`, from their start.
    fn adopt_siblings(
        &mut self,
        path: &Path,
        source: usize,
        since_ms: i64,
        copy_of: Option<(Fingerprint, u64)>,
        unknown: bool,
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
        // Each candidate is opened once and then only used through its
        // handle: rotations go on while this runs, and a name looked up
        // twice may be another file the second time.
        let mut candidates: Vec<Candidate> = entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.len() > base.len()
                    && name.starts_with(&base)
                    && name[base.len()..].starts_with(['.', '-', '_'])
                    && !COMPRESSED.iter().any(|ext| name.ends_with(ext))
            })
            .filter_map(|e| {
                let path = e.path();
                let file = File::open(&path).ok()?;
                let meta = file.metadata().ok()?;
                let id = (meta.dev(), meta.ino());
                if let Some(w) = self.watchers.get_mut(&id) {
                    // Its generation, for the reading order.
                    w.rotation = rotation_number(&path);
                    return None;
                }
                meta.is_file().then(|| Candidate {
                    mtime: mtime_ms(&meta),
                    size: meta.len(),
                    path,
                    id,
                    file,
                })
            })
            .collect();
        // Oldest first; equal times (coarse clocks) put `.2` before `.1`.
        candidates.sort_by(|a, b| {
            a.mtime
                .cmp(&b.mtime)
                .then_with(|| rotation_number(&b.path).cmp(&rotation_number(&a.path)))
                .then_with(|| a.path.cmp(&b.path))
        });
        let adopt = |this: &mut Self, c: &Candidate, start: Option<(u64, bool)>| {
            if this.watchers.contains_key(&c.id) {
                return;
            }
            let Ok(file) = c.file.try_clone() else {
                return;
            };
            let Ok(fp) = Fingerprint::of(&file, c.size) else {
                return;
            };
            let (offset, skipping) = start.unwrap_or((0, false));
            info!(file = %c.path.display(), location = %location, offset, size = c.size, "Reading a rotated file to its end.");
            this.insert_watcher(
                c.id,
                file,
                source,
                path,
                location.clone(),
                fp,
                offset.min(c.size),
                skipping,
                c.size,
                false,
            );
            if let Some(w) = this.watchers.get_mut(&c.id) {
                w.rotation = rotation_number(&c.path);
            }
        };
        if let Some((old_fp, old_offset)) = copy_of {
            for c in candidates.iter().rev() {
                if c.mtime < since_ms || self.stored_position(c).is_some() {
                    continue;
                }
                if c.size >= old_offset && matches!(old_fp.recheck(&c.file, c.size), Ok(Some(_))) {
                    adopt(self, c, Some((old_offset, false)));
                    break;
                }
            }
        }
        for c in &candidates {
            if self.watchers.contains_key(&c.id) {
                continue;
            }
            // A file with a checkpoint continues from it, if it is still
            // the file the checkpoint was for.
            match self.stored_position(c) {
                Some((offset, skipping)) if offset < c.size => {
                    adopt(self, c, Some((offset, skipping)));
                }
                Some(_) => {}
                None if unknown && c.mtime >= since_ms => {
                    let start = self.copied_from(c, &location);
                    adopt(self, c, start);
                }
                None => {}
            }
        }
    }

    /// The stored position of a candidate, if it is still the file it was
    /// stored for: same fingerprint (a stored empty one proves nothing
    /// about a file that is not empty), not shorter than it. Returns the
    /// offset and the skipping state.
    fn stored_position(&self, c: &Candidate) -> Option<(u64, bool)> {
        let cp = self.known.get(&c.id)?;
        let fp = Fingerprint {
            len: cp.fingerprint_len,
            sum: cp.fingerprint,
        };
        ((fp.len > 0 || c.size == 0)
            && cp.offset <= c.size
            && matches!(fp.recheck(&c.file, c.size), Ok(Some(_))))
        .then_some((cp.offset, cp.skipping))
    }

    /// Where to start in a file never seen that may be a copy of one that
    /// was (copy-and-truncate): the read position of the followed or
    /// remembered file of the same location whose first bytes it starts
    /// with, the longest match first, then the earliest position.
    fn copied_from(&self, c: &Candidate, location: &str) -> Option<(u64, bool)> {
        let (file, size) = (&c.file, c.size);
        let watched = self
            .watchers
            .values()
            .map(|w| (w.fp, w.offset, w.skipping, w.location.as_str()));
        let remembered = self.known.values().map(|cp| {
            (
                Fingerprint {
                    len: cp.fingerprint_len,
                    sum: cp.fingerprint,
                },
                cp.offset,
                cp.skipping,
                cp.location.as_str(),
            )
        });
        watched
            .chain(remembered)
            .filter(|(fp, offset, _, loc)| {
                *loc == location
                    && fp.len > 0
                    && size >= *offset
                    && matches!(fp.recheck(file, size), Ok(Some(_)))
            })
            .min_by(|a, b| b.0.len.cmp(&a.0.len).then(a.1.cmp(&b.1)))
            .map(|(_, offset, skipping, _)| (offset, skipping))
    }

    /// Reads a file's new records into the batch, spooling full batches.
    async fn read(&mut self, id: FileId) -> Result<(), SpoolError> {
        let Some(w) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        // Taken before the size: whatever changed after the previous
        // check (a copy, a truncation) is newer than this.
        let checked_ms = now_ms();
        let previous_check = std::mem::replace(&mut w.checked_ms, checked_ms);
        let (size, mtime) = match w.file.metadata() {
            Ok(m) => (m.len(), mtime_ms(&m)),
            Err(error) => {
                warn!(file = %w.location, %error, "Cannot read file status.");
                return Ok(());
            }
        };
        let recheck = w.fp.recheck(&w.file, size);
        let modified = std::mem::replace(&mut w.mtime, mtime) != mtime;
        let copy_of = match recheck {
            Ok(Some(fp)) if size >= w.offset => {
                let first_bytes = w.fp.len == 0 && size > 0;
                // Still empty, but a file appeared beside it lately: it may
                // have been written, copied and truncated within one tick
                // of the clock that stamps modification times.
                let still_empty = w.fp.len == 0
                    && size == 0
                    && dir_changed_since(&w.path, self.last_poll_ms - MTIME_SLACK_MS);
                let old = (w.fp, w.offset);
                if fp != w.fp {
                    w.fp = fp;
                    self.batch.checkpoints.insert(id, w.checkpoint(id));
                }
                // Changed without growing, or the first bytes of a file
                // that was empty: it may have been written, copied and
                // truncated between two polls.
                ((modified && size <= w.offset) || first_bytes || still_empty)
                    .then_some((old, false))
            }
            Ok(_) => {
                info!(file = %w.location, offset = w.offset, size, "File was truncated; reading it again from its start.");
                let old = (w.fp, w.offset);
                w.offset = 0;
                w.skipping = false;
                w.fp = Fingerprint::of(&w.file, size).unwrap_or_default();
                self.batch.checkpoints.insert(id, w.checkpoint(id));
                Some((old, true))
            }
            Err(error) => {
                warn!(file = %w.location, %error, "Cannot read file.");
                return Ok(());
            }
        };
        if let Some((old, truncated)) = copy_of {
            let (path, source) = (w.path.clone(), w.source);
            // The copy was made after this file was last looked at (the
            // path's own `seen_at_ms` is already this poll's).
            let since = previous_check - MTIME_SLACK_MS;
            let before: HashSet<FileId> = self.watchers.keys().copied().collect();
            // After an empty file, any recent sibling may be a copy.
            let unknown = truncated || old.0.len == 0;
            self.adopt_siblings(&path, source, since, Some(old), unknown);
            let mut copies: Vec<_> = self
                .watchers
                .iter()
                .filter(|(k, _)| !before.contains(k))
                .map(|(k, w)| (w.read_order(), *k))
                .collect();
            copies.sort();
            for (_, copy) in copies {
                Box::pin(self.read(copy)).await?;
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
            // The file may have been truncated (and written again) since
            // its size was taken: then the bytes read are the new file's,
            // at the old file's offsets. They are the old file's only if
            // it still starts as it did and is not shorter than what was
            // read; otherwise they are dropped and the next look finds
            // the truncation (and the copy, from this offset).
            let intact = w.file.metadata().is_ok_and(|m| {
                m.len() >= w.offset + n as u64
                    && matches!(w.fp.recheck(&w.file, m.len()), Ok(Some(_)))
            });
            if !intact {
                debug!(file = %w.location, offset = w.offset, "File changed under a read; looking again.");
                w.checked_ms = previous_check;
                break;
            }
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

/// Whether the directory holding `path` changed at or after `since_ms`.
fn dir_changed_since(path: &Path, since_ms: i64) -> bool {
    path.parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .and_then(|d| std::fs::metadata(d).ok())
        .is_some_and(|m| mtime_ms(&m) >= since_ms)
}

/// The `N` of a rotated name ending in `.N`, for ordering.
fn rotation_number(path: &Path) -> Option<u64> {
    path.extension()?.to_str()?.parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Rig {
        dir: tempfile::TempDir,
        spool: Spool,
        tailer: Option<Tailer>,
        files: Vec<Localfile>,
        options: TailOptions,
    }

    impl Rig {
        async fn new(files: &[(&str, &str)], read_from_start: bool) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let spool = Spool::open(&dir.path().join("spool.db")).await.unwrap();
            let files: Vec<Localfile> = files
                .iter()
                .map(|(name, format)| Localfile {
                    location: dir.path().join(name),
                    log_format: format.to_string(),
                })
                .collect();
            let options = TailOptions {
                read_from_start,
                max_line_length: 300,
                rotate_wait: Duration::ZERO,
                ..TailOptions::default()
            };
            let mut rig = Self {
                dir,
                spool,
                tailer: None,
                files,
                options,
            };
            rig.start();
            rig
        }

        fn start(&mut self) {
            self.tailer = Some(Tailer::new(
                &self.files,
                self.spool.clone(),
                self.options.clone(),
                Arc::new(Notify::new()),
                Arc::new(AtomicU64::new(0)),
            ));
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn write(&self, name: &str, text: &[u8]) {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(name))
                .unwrap();
            f.write_all(text).unwrap();
        }

        async fn poll(&mut self) {
            self.tailer.as_mut().unwrap().poll_once().await.unwrap();
        }

        async fn lines(&self) -> Vec<String> {
            self.spool
                .pending(0, u32::MAX)
                .await
                .unwrap()
                .into_iter()
                .map(|e| String::from_utf8_lossy(&e.event.line).into_owned())
                .collect()
        }
    }

    #[tokio::test]
    async fn first_seen_files_start_at_their_end_unless_asked() {
        let mut rig = Rig::new(&[("a.log", "syslog")], false).await;
        rig.write("a.log", b"old\n");
        rig.start();
        rig.poll().await;
        rig.write("a.log", b"new\n");
        rig.poll().await;
        assert_eq!(rig.lines().await, vec!["new"]);

        let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
        rig.write("a.log", b"old\n");
        rig.poll().await;
        assert_eq!(rig.lines().await, vec!["old"]);
    }

    #[tokio::test]
    async fn globs_pick_up_files_that_appear_later_from_their_start() {
        let mut rig = Rig::new(&[("*.log", "nginx")], false).await;
        rig.write("a.log", b"before start\n");
        rig.start();
        rig.poll().await;
        rig.write("b.log", b"b1\n");
        rig.write("a.log", b"a1\n");
        rig.write("c.txt", b"not matched\n");
        rig.poll().await;
        let events = rig.spool.pending(0, 100).await.unwrap();
        let mut got: Vec<(String, String, String)> = events
            .iter()
            .map(|e| {
                (
                    e.event.location.clone(),
                    String::from_utf8_lossy(&e.event.line).into_owned(),
                    e.event.log_format.clone(),
                )
            })
            .collect();
        got.sort();
        let a = rig.path("a.log").display().to_string();
        let b = rig.path("b.log").display().to_string();
        assert_eq!(
            got,
            vec![
                (a, "a1".into(), "nginx".into()),
                (b, "b1".into(), "nginx".into())
            ]
        );
    }

    #[tokio::test]
    async fn rename_rotation_finishes_the_old_file_first() {
        let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
        rig.write("a.log", b"1\n");
        rig.poll().await;
        rig.write("a.log", b"2\n");
        std::fs::rename(rig.path("a.log"), rig.path("a.log.1")).unwrap();
        rig.write("a.log.1", b"3\n"); // the writer has not reopened yet
        rig.write("a.log", b"4\n");
        rig.poll().await;
        assert_eq!(rig.lines().await, vec!["1", "2", "3", "4"]);
        let location = rig.path("a.log").display().to_string();
        for e in rig.spool.pending(0, 100).await.unwrap() {
            assert_eq!(e.event.location, location);
        }
    }

    #[tokio::test]
    async fn a_restart_finishes_a_file_rotated_while_down() {
        let mut rig = Rig::new(&[("a.log", "syslog")], false).await;
        rig.write("a.log", b"seen before start\n");
        rig.poll().await;
        rig.write("a.log", b"1\n");
        rig.poll().await;
        rig.tailer = None; // down
        rig.write("a.log", b"2\n");
        std::fs::rename(rig.path("a.log"), rig.path("a.log.1")).unwrap();
        rig.write("a.log", b"3\n");
        rig.start();
        rig.poll().await;
        assert_eq!(rig.lines().await, vec!["1", "2", "3"]);
    }

    #[tokio::test]
    async fn over_long_and_odd_lines_pass_and_do_not_stall() {
        let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
        let mut text = vec![b'x'; 5000];
        text.push(b'\n');
        text.extend_from_slice(&[0, 0, 0, b'\n']);
        text.extend_from_slice(b"\xff\xfe\n");
        text.extend_from_slice(b"after\n");
        rig.write("a.log", &text);
        rig.poll().await;
        let events = rig.spool.pending(0, 100).await.unwrap();
        let got: Vec<(Vec<u8>, bool)> = events
            .into_iter()
            .map(|e| (e.event.line, e.event.truncated))
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![b'x'; 300], true),
                (vec![0, 0, 0], false),
                (b"\xff\xfe".to_vec(), false),
                (b"after".to_vec(), false)
            ]
        );
    }

    #[tokio::test]
    async fn multi_line_groups_survive_a_restart() {
        let mut rig = Rig::new(&[("a.log", "multi-line:2")], true).await;
        rig.write("a.log", b"a\nb\nc\n");
        rig.poll().await;
        rig.start();
        rig.write("a.log", b"d\n");
        rig.poll().await;
        assert_eq!(rig.lines().await, vec!["a b", "c d"]);
        let events = rig.spool.pending(0, 100).await.unwrap();
        assert_eq!(events[0].event.log_format, "multi-line");
    }

    #[tokio::test]
    async fn a_reused_inode_is_a_new_file() {
        let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
        rig.write("a.log", b"first file, long enough\n");
        rig.poll().await;
        rig.tailer = None;
        // Same size, other content, very likely the same inode.
        std::fs::remove_file(rig.path("a.log")).unwrap();
        rig.write("a.log", b"other file, long enough\n");
        rig.start();
        rig.poll().await;
        assert_eq!(
            rig.lines().await,
            vec!["first file, long enough", "other file, long enough"]
        );
    }

    #[tokio::test]
    async fn two_copy_truncates_between_polls() {
        let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
        let block = |tag: &str| -> Vec<u8> {
            (0..300)
                .flat_map(|i| format!("{tag} {i:05} GET /index.html 200\n").into_bytes())
                .collect()
        };
        rig.write("a.log", &block("c"));
        rig.poll().await;
        rig.write("a.log", &block("d"));
        let truncate = |p: PathBuf| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(0)
                .unwrap()
        };
        std::fs::copy(rig.path("a.log"), rig.path("a.log.1")).unwrap();
        truncate(rig.path("a.log"));
        rig.write("a.log", &block("e"));
        std::fs::rename(rig.path("a.log.1"), rig.path("a.log.2")).unwrap();
        std::fs::copy(rig.path("a.log"), rig.path("a.log.1")).unwrap();
        truncate(rig.path("a.log"));
        rig.write("a.log", &block("f"));
        rig.poll().await;
        let lines = rig.lines().await;
        let count = |tag: &str| lines.iter().filter(|l| l.starts_with(tag)).count();
        assert_eq!(
            (count("c "), count("d "), count("e "), count("f ")),
            (300, 300, 300, 300)
        );
        assert!(lines[300].starts_with("d 00000"), "{}", lines[300]);
        assert!(lines[600].starts_with("e 00000"), "{}", lines[600]);
    }

    /// Rotations racing the polls (a writer thread, polls back to back):
    /// a truncation that lands between taking a file's size and reading
    /// it must not pass the new file's bytes off as the old file's.
    #[tokio::test]
    async fn rotations_racing_the_polls_lose_and_repeat_nothing() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("palisade_agent=debug")
            .with_test_writer()
            .try_init();
        for copy in [true, false] {
            let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
            rig.write("a.log", b"");
            rig.poll().await;
            let path = rig.path("a.log");
            let writer = std::thread::spawn(move || {
                let rotated = |n: usize| path.with_file_name(format!("a.log.{n}"));
                let mut written = Vec::new();
                for round in 0..12 {
                    for _ in 0..6 {
                        let mut text = String::new();
                        for _ in 0..150 {
                            let line =
                                format!("r{round:02} {:06} GET /index.html 200", written.len());
                            text.push_str(&line);
                            text.push('\n');
                            written.push(line);
                        }
                        let mut f = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&path)
                            .unwrap();
                        f.write_all(text.as_bytes()).unwrap();
                        std::thread::sleep(Duration::from_micros(300));
                    }
                    // Every generation is kept (none is overwritten).
                    for n in (1..=round).rev() {
                        if rotated(n).exists() {
                            std::fs::rename(rotated(n), rotated(n + 1)).unwrap();
                        }
                    }
                    if copy {
                        std::fs::copy(&path, rotated(1)).unwrap();
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .unwrap()
                            .set_len(0)
                            .unwrap();
                    } else {
                        std::fs::rename(&path, rotated(1)).unwrap();
                        std::fs::write(&path, b"").unwrap();
                    }
                }
                written
            });
            while !writer.is_finished() {
                rig.poll().await;
                tokio::task::yield_now().await;
            }
            let written = writer.join().unwrap();
            rig.poll().await;
            rig.poll().await;
            let lines = rig.lines().await;
            let mut seen = HashSet::new();
            let repeated = lines.iter().filter(|l| !seen.insert(*l)).count();
            let missing = written.iter().filter(|l| !seen.contains(l)).count();
            let mut seen2 = HashSet::new();
            let reps: Vec<&String> = lines.iter().filter(|l| !seen2.insert(*l)).collect();
            assert_eq!(
                (missing, repeated),
                (0, 0),
                "copy: {copy} {:?} {:?}",
                reps.first(),
                reps.last()
            );
            // Within a file, lines keep their order; which of two files
            // rotated within one clock tick goes first is not known.
            let mut last: HashMap<&str, &str> = HashMap::new();
            for l in &lines {
                let previous = last.insert(&l[..3], l.as_str());
                assert!(
                    previous < Some(l.as_str()),
                    "copy: {copy}: {l} after {previous:?}"
                );
            }
        }
    }

    // The state machine: every line written arrives exactly once, in
    // order, whatever rotations, truncations, deletions and restarts
    // happen between polls (vector's FileWatcherAction, as a proptest).
    #[derive(Debug, Clone)]
    enum Action {
        Write(u8),
        RenameRotate,
        CopyTruncate,
        /// Truncate in place once everything was read.
        ReadThenTruncate,
        /// Delete once everything was read.
        ReadThenDelete,
        Read,
        Restart,
    }

    fn action() -> impl proptest::strategy::Strategy<Value = Action> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (1u8..4).prop_map(Action::Write),
            1 => Just(Action::RenameRotate),
            1 => Just(Action::CopyTruncate),
            1 => Just(Action::ReadThenTruncate),
            1 => Just(Action::ReadThenDelete),
            3 => Just(Action::Read),
            1 => Just(Action::Restart),
        ]
    }

    fn shift(rig: &Rig) {
        for n in (1..=6).rev() {
            let from = rig.path(&format!("a.log.{n}"));
            if from.exists() {
                std::fs::rename(&from, rig.path(&format!("a.log.{}", n + 1))).unwrap();
            }
        }
    }

    async fn play(actions: Vec<Action>) {
        let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
        // The agent knew the file before anything happened to it.
        rig.write("a.log", b"");
        rig.poll().await;
        let mut written = Vec::new();
        for a in actions {
            match a {
                Action::Write(n) => {
                    for _ in 0..n {
                        let line = format!(
                            "line {:04} {}",
                            written.len(),
                            "p".repeat(written.len() % 7)
                        );
                        rig.write("a.log", format!("{line}\n").as_bytes());
                        written.push(line);
                    }
                }
                Action::RenameRotate => {
                    if rig.path("a.log").exists() {
                        shift(&rig);
                        std::fs::rename(rig.path("a.log"), rig.path("a.log.1")).unwrap();
                    }
                }
                Action::CopyTruncate => {
                    if rig.path("a.log").exists() {
                        shift(&rig);
                        std::fs::copy(rig.path("a.log"), rig.path("a.log.1")).unwrap();
                        std::fs::File::create(rig.path("a.log")).unwrap();
                    }
                }
                Action::ReadThenTruncate => {
                    rig.poll().await;
                    if rig.path("a.log").exists() {
                        std::fs::File::create(rig.path("a.log")).unwrap();
                    }
                }
                Action::ReadThenDelete => {
                    rig.poll().await;
                    let _ = std::fs::remove_file(rig.path("a.log"));
                }
                Action::Read => rig.poll().await,
                Action::Restart => rig.start(),
            }
        }
        rig.poll().await;
        rig.poll().await;
        assert_eq!(rig.lines().await, written);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 96, ..Default::default() })]
        #[test]
        fn every_line_arrives_once_in_order(actions in proptest::collection::vec(action(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(play(actions));
        }
    }
}
