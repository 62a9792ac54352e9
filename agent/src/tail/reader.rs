//! Reading one followed file: new bytes since its position, cut into
//! events ([`super::frame`]), checked against the file after the read (it
//! still starts with its fingerprint and is not shorter than what was
//! read), so a truncation between taking the size and reading never
//! passes the new file's bytes off as the old file's. A file that was
//! truncated or copied sends the rotation search after the copy first.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::checkpoints::flush;
use super::fingerprint::Fingerprint;
use super::frame;
use super::rotation::{MTIME_SLACK_MS, dir_changed_since, rotation_number};
use super::{FileId, Tailer, mtime_ms, now_ms};
use crate::spool::{NewEvent, SpoolError};

/// A followed file, kept open.
#[derive(Debug)]
pub(super) struct Watcher {
    pub(super) file: File,
    pub(super) source: usize,
    /// The watched path it was found at; its lines are reported under it.
    pub(super) path: PathBuf,
    pub(super) location: String,
    pub(super) fp: Fingerprint,
    pub(super) offset: u64,
    pub(super) skipping: bool,
    pub(super) size: u64,
    /// Modification time at the latest look (ms).
    pub(super) mtime: i64,
    /// At its path in the latest look.
    pub(super) live: bool,
    /// Last time it grew or was at its path.
    pub(super) active_at: Instant,
    /// Reading order among rotated files: older generations first.
    pub(super) order: u64,
    /// `N` of its rotated name `.N` when last seen in a sibling search.
    pub(super) rotation: Option<u64>,
    /// Wall time (ms) its size was last taken: a copy made after it may
    /// hold lines it has not read.
    pub(super) checked_ms: i64,
}

impl Watcher {
    /// Rotated files before the live one, older generations first: by
    /// modification time, then `.2` before `.1`, then as found.
    pub(super) fn read_order(&self) -> (bool, i64, std::cmp::Reverse<u64>, u64) {
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
}

impl Tailer {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_watcher(
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

    /// Reads a file's new records into the batch, spooling full batches.
    pub(super) async fn read(&mut self, id: FileId) -> Result<(), SpoolError> {
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
            // Backpressure: read only what the spool has room for; when it
            // is above its high-water mark, stop here (the position stays
            // where the lines spooled end) and look again next poll.
            let spool_room = self.spool.room().await?;
            let pending = self.batch.spool_cost();
            let least = 2 * (max as u64 + 1);
            if spool_room < pending + least {
                flush(&self.spool, &mut self.batch, &mut self.known, &self.spooled).await?;
                if !self.paused {
                    info!(file = %w.location, offset = w.offset, unread = size - w.offset, "Spool is above its high-water mark; reading paused until the manager catches up.");
                    self.paused = true;
                }
                break;
            }
            if std::mem::replace(&mut self.paused, false) {
                info!(file = %w.location, offset = w.offset, "Spool has room again; reading resumed.");
            }
            let allowance = usize::try_from((spool_room - pending) / 2).unwrap_or(usize::MAX);
            let want = usize::try_from(size - w.offset)
                .unwrap_or(usize::MAX)
                .min(self.buf.len())
                .min(allowance.max(max + 1));
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
            //
            // Bytes read from the start complete a short fingerprint: one
            // taken while the file was truncated again (empty, so it
            // matches anything) would otherwise let the next truncation
            // take any sibling for this file's copy.
            let fp = if w.offset == 0 {
                w.fp.extended_by(&self.buf[..n])
            } else {
                Some(w.fp)
            };
            let intact = fp.is_some_and(|fp| {
                w.file.metadata().is_ok_and(|m| {
                    m.len() >= w.offset + n as u64
                        && matches!(fp.recheck(&w.file, m.len()), Ok(Some(_)))
                })
            });
            if !intact {
                debug!(file = %w.location, offset = w.offset, "File changed under a read; looking again.");
                w.checked_ms = previous_check;
                break;
            }
            if let Some(fp) = fp.filter(|fp| fp.len > w.fp.len) {
                w.fp = fp;
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
