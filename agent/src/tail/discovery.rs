//! Which files the configured locations name now: a plain path, or a
//! glob pattern expanded again on every poll (so files that appear later
//! are found). A file found at a watched path is followed from its stored
//! position, its end (first start, OSSEC's default) or its start; a path
//! whose file changed sends the rotation search after the old one.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::fingerprint::Fingerprint;
use super::glob::{self, LocationPattern};
use super::rotation::{MTIME_SLACK_MS, dir_changed_since};
use super::{FileId, Tailer, format_name, lines_per_event, mtime_ms, now_ms};
use crate::config::Localfile;
use crate::spool::SpoolError;

/// A configured file or pattern.
#[derive(Debug)]
pub(super) struct Source {
    pub(super) pattern: PathBuf,
    /// Compiled when the location has wildcards.
    pub(super) glob: Option<LocationPattern>,
    /// The format name sent with events.
    pub(super) log_format: String,
    /// Lines per event.
    pub(super) group: usize,
}

impl Source {
    /// The source for a `[[localfile]]`.
    pub(super) fn new(file: &Localfile) -> Self {
        Self {
            glob: glob::is_pattern(&file.location).then(|| LocationPattern::new(&file.location)),
            pattern: file.location.clone(),
            group: lines_per_event(&file.log_format),
            log_format: format_name(&file.log_format).to_string(),
        }
    }

    /// The paths it names now (a plain path whether it exists or not).
    fn paths(&self) -> Vec<PathBuf> {
        match &self.glob {
            Some(g) => g.expand(),
            None => vec![self.pattern.clone()],
        }
    }

    /// Whether it names `location`.
    fn names(&self, location: &Path) -> bool {
        match &self.glob {
            Some(g) => g.matches(location),
            None => self.pattern == location,
        }
    }
}

/// Which file was at a watched path, and when that was last checked.
#[derive(Debug, Clone, Copy)]
pub(super) struct PathState {
    pub(super) id: FileId,
    pub(super) seen_at_ms: i64,
}

impl Tailer {
    /// The source that names `location`, if any.
    pub(super) fn source_of(&self, location: &Path) -> Option<usize> {
        self.sources.iter().position(|s| s.names(location))
    }

    /// Finds the files at the watched paths and follows new ones.
    pub(super) async fn discover(&mut self, first_round: bool) -> Result<(), SpoolError> {
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
            for path in source.paths() {
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
    pub(super) fn follow_at_path(&mut self, source: usize, path: &Path, from_end: bool) {
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
}
