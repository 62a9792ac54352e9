//! Read positions, kept per file identity (device, inode and fingerprint)
//! in the spool's `file_checkpoints` and written in the same transaction
//! as the lines read up to them, so a position only ever advances over
//! lines that are safely stored. Loaded once at start (which file each
//! watched path last had), forgotten a week after their file is gone.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use super::discovery::PathState;
use super::reader::Watcher;
use super::{FileId, Tailer, now_ms};
use crate::spool::{FileCheckpoint, NewEvent, Spool, SpoolError};

/// Checkpoints of files gone this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often forgotten checkpoints are looked for.
pub(super) const FORGET_EVERY: Duration = Duration::from_secs(3600);

/// Lines and positions not yet spooled.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) events: Vec<NewEvent>,
    pub(super) bytes: usize,
    pub(super) checkpoints: HashMap<FileId, FileCheckpoint>,
}

impl Batch {
    /// What the batch will take in the spool, over-estimated: rows hold
    /// the location and format beside the line, and pages are not full.
    pub(super) fn spool_cost(&self) -> u64 {
        let per_event: usize = self
            .events
            .first()
            .map(|e| e.location.len() + e.log_format.len() + 64)
            .unwrap_or(0);
        (2 * (self.bytes + self.events.len() * per_event)) as u64
    }
}

impl Watcher {
    /// The position to store for this file.
    pub(super) fn checkpoint(&self, id: FileId) -> FileCheckpoint {
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

impl Tailer {
    /// Reads the stored checkpoints (once, before the first poll).
    pub(super) async fn load(&mut self) -> Result<(), SpoolError> {
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

    /// Forgets checkpoints of files gone for [`FORGET_AFTER`].
    pub(super) async fn forget_old(&mut self) -> Result<(), SpoolError> {
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
}

/// Spools the batch's events with the positions they were read up to.
pub(super) async fn flush(
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
