//! Finding the rotated generations of a watched file: when the file at a
//! path changes, the path's directory is searched for siblings
//! (`access.log.1`, `access.log-20250101`; compressed ones skipped), each
//! opened once and judged through that handle (the directory is listed
//! again when a rotation moved a name between the listing and the
//! opening, which would hide the file under its next name). A sibling with a stored
//! checkpoint continues from it; one never seen and changed since the path
//! was last looked at is read from its start; after a truncation in place,
//! the newest sibling that starts with the old fingerprint is the copy and
//! is read from the old offset. The module docs of [`super`] give the
//! guarantee and its limits.

use std::fs::File;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

use tracing::info;

use super::fingerprint::Fingerprint;
use super::{FileId, Tailer, mtime_ms};

/// Allowance for coarse modification times when looking for files that
/// lived at a path between two polls.
pub(super) const MTIME_SLACK_MS: i64 = 2_000;
/// How many times a directory is listed again when rotations move names
/// under the listing.
const SCANS: usize = 8;
/// Rotated files compressed by logrotate are not logs to read.
const COMPRESSED: &[&str] = &[".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4", ".Z"];

/// A rotated sibling found in a directory, opened once.
#[derive(Debug)]
struct Candidate {
    mtime: i64,
    size: u64,
    path: PathBuf,
    id: FileId,
    file: File,
}

impl Tailer {
    /// Follows rotated siblings of `path` (see the module docs): with
    /// `copy_of`, first the copy of a truncated file from the old offset;
    /// then files with an unfinished checkpoint; with `unknown`, files
    /// never seen and changed since `since_ms`, from their start.
    pub(super) fn adopt_siblings(
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
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        // A name that moved between the listing and its opening may now
        // be the next name, which the listing did not show: look again
        // (the last look is used as it is).
        let mut candidates = Vec::new();
        for _ in 0..SCANS {
            let whole;
            (candidates, whole) = self.scan_siblings(dir, &base);
            if whole {
                break;
            }
        }
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

    /// The rotated siblings of `base` in `dir` not followed already, each
    /// opened once (and then only used through its handle: rotations go
    /// on while this runs, and a name looked up twice may be another file
    /// the second time), and whether every name listed was still the file
    /// listed when it was opened.
    fn scan_siblings(&mut self, dir: &Path, base: &str) -> (Vec<Candidate>, bool) {
        let mut candidates = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return (candidates, true);
        };
        let mut whole = true;
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let sibling = name.len() > base.len()
                && name.starts_with(base)
                && name[base.len()..].starts_with(['.', '-', '_'])
                && !COMPRESSED.iter().any(|ext| name.ends_with(ext));
            if !sibling {
                continue;
            }
            let path = entry.path();
            let (meta, file) = match File::open(&path).and_then(|f| Ok((f.metadata()?, f))) {
                Ok(opened) => opened,
                Err(e) => {
                    whole &= e.kind() != std::io::ErrorKind::NotFound;
                    continue;
                }
            };
            whole &= meta.ino() == entry.ino();
            let id = (meta.dev(), meta.ino());
            if let Some(w) = self.watchers.get_mut(&id) {
                // Its generation, for the reading order.
                w.rotation = rotation_number(&path);
                continue;
            }
            if meta.is_file() {
                candidates.push(Candidate {
                    mtime: mtime_ms(&meta),
                    size: meta.len(),
                    path,
                    id,
                    file,
                });
            }
        }
        (candidates, whole)
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
}

/// Whether the directory holding `path` changed at or after `since_ms`.
pub(super) fn dir_changed_since(path: &Path, since_ms: i64) -> bool {
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
pub(super) fn rotation_number(path: &Path) -> Option<u64> {
    path.extension()?.to_str()?.parse().ok()
}
