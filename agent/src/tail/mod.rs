//! Following log files: new complete lines are read from each file's
//! checkpoint and spooled together with the checkpoint's new value, so a
//! position only ever advances over lines that are safely stored.
//!
//! Files are polled (every `poll_interval`), as vector's file source does:
//! polling works on every file system and cannot miss an event the way an
//! overflowing inotify queue can. A file is known by its device and inode;
//! a new inode at the same path starts over at offset 0, and so does a file
//! that shrank (truncation). A file present when the agent first starts is
//! read from its end (OSSEC's default) unless `read_from_start` is set;
//! files that appear later are read from their start, since everything in
//! them is new.
//!
//! Lines longer than `max_line_length` are cut there and flagged
//! `truncated`; the rest of such a line is skipped, never dropped silently.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Localfile;
use crate::spool::{Checkpoint, NewEvent, Spool, SpoolError};

/// Most lines spooled in one transaction.
const BATCH_LINES: usize = 500;
/// Most bytes read from a file at once.
const READ_CHUNK: usize = 1 << 20;

/// Settings for the tailer.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// How often files are checked.
    pub poll_interval: Duration,
    /// Read first-seen files from the start.
    pub read_from_start: bool,
    /// Longer lines are cut and flagged.
    pub max_line_length: usize,
}

#[derive(Debug)]
struct Watched {
    spec: Localfile,
    location: String,
    position: Option<Position>,
}

#[derive(Debug, Clone, Copy)]
struct Position {
    device: u64,
    inode: u64,
    offset: u64,
    /// Inside an over-long line whose head was already spooled.
    skipping: bool,
}

/// Follows the configured files into the spool.
#[derive(Debug)]
pub struct Tailer {
    files: Vec<Watched>,
    spool: Spool,
    options: TailOptions,
    /// Woken after every spool write so the uplink sends at once.
    spooled: Arc<Notify>,
    /// Bytes not yet read, over all files.
    lag: Arc<AtomicU64>,
    first_round: bool,
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
        Self {
            files: files
                .iter()
                .map(|f| Watched {
                    location: f.location.display().to_string(),
                    spec: f.clone(),
                    position: None,
                })
                .collect(),
            spool,
            options,
            spooled,
            lag,
            first_round: true,
        }
    }

    /// Polls until `shutdown`; a spool failure ends the tailer.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SpoolError> {
        loop {
            self.poll_once().await?;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
    }

    /// Reads whatever is new in every file.
    pub async fn poll_once(&mut self) -> Result<(), SpoolError> {
        let first_round = std::mem::replace(&mut self.first_round, false);
        let mut lag = 0;
        for i in 0..self.files.len() {
            lag += self.poll_file(i, first_round).await?;
        }
        self.lag.store(lag, Ordering::Relaxed);
        Ok(())
    }

    async fn poll_file(&mut self, i: usize, first_round: bool) -> Result<u64, SpoolError> {
        let path: PathBuf = self.files[i].spec.location.clone();
        let location = self.files[i].location.clone();
        let format = self.files[i].spec.log_format.clone();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => {
                warn!(file = %location, %error, "Cannot read file status.");
                return Ok(0);
            }
        };
        let (device, inode, size) = (meta.dev(), meta.ino(), meta.len());
        let mut position = match self.files[i].position {
            Some(p) if p.device == device && p.inode == inode => p,
            Some(_) => {
                info!(file = %location, "File was replaced; reading the new one from its start.");
                Position {
                    device,
                    inode,
                    offset: 0,
                    skipping: false,
                }
            }
            None => {
                let stored = self.spool.checkpoint(&location).await?;
                let offset = match stored {
                    Some(cp) if cp.device == device && cp.inode == inode => cp.offset,
                    Some(_) => 0,
                    None if first_round && !self.options.read_from_start => size,
                    None => 0,
                };
                debug!(file = %location, offset, "Following file.");
                let p = Position {
                    device,
                    inode,
                    offset,
                    skipping: false,
                };
                if stored.is_none() {
                    self.spool
                        .append(
                            &location,
                            &[],
                            Checkpoint {
                                device,
                                inode,
                                offset,
                            },
                        )
                        .await?;
                }
                p
            }
        };
        if size < position.offset {
            info!(file = %location, "File was truncated; reading from its start.");
            position.offset = 0;
            position.skipping = false;
        }
        while position.offset < size {
            let (events, next) = match read_lines(
                &path,
                &location,
                &format,
                self.options.max_line_length,
                position,
            ) {
                Ok(r) => r,
                Err(error) => {
                    warn!(file = %location, %error, "Cannot read file.");
                    break;
                }
            };
            if next.offset == position.offset {
                break; // only a partial line so far
            }
            self.spool
                .append(
                    &location,
                    &events,
                    Checkpoint {
                        device,
                        inode,
                        offset: next.offset,
                    },
                )
                .await?;
            position = next;
            if !events.is_empty() {
                self.spooled.notify_one();
            }
        }
        self.files[i].position = Some(position);
        Ok(size.saturating_sub(position.offset))
    }
}

/// Reads up to [`BATCH_LINES`] complete lines from `position`.
fn read_lines(
    path: &std::path::Path,
    location: &str,
    format: &str,
    max: usize,
    position: Position,
) -> std::io::Result<(Vec<NewEvent>, Position)> {
    {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(position.offset))?;
        let mut buf = Vec::with_capacity(64 * 1024);
        file.take(READ_CHUNK as u64).read_to_end(&mut buf)?;
        let now = jiff::Timestamp::now().as_millisecond();
        let mut events = Vec::new();
        let mut consumed = 0usize;
        let mut skipping = position.skipping;
        while events.len() < BATCH_LINES {
            let rest = &buf[consumed..];
            match memchr(rest) {
                Some(nl) => {
                    if !skipping {
                        let mut line = &rest[..nl];
                        if line.last() == Some(&b'\r') {
                            line = &line[..line.len() - 1];
                        }
                        let truncated = line.len() > max;
                        events.push(NewEvent {
                            location: location.to_string(),
                            log_format: format.to_string(),
                            read_at: now,
                            truncated,
                            line: line[..line.len().min(max)].to_vec(),
                        });
                    }
                    skipping = false;
                    consumed += nl + 1;
                }
                None if skipping => {
                    consumed = buf.len();
                    break;
                }
                None if rest.len() > max => {
                    // An over-long line with no end in sight: spool its head now.
                    events.push(NewEvent {
                        location: location.to_string(),
                        log_format: format.to_string(),
                        read_at: now,
                        truncated: true,
                        line: rest[..max].to_vec(),
                    });
                    skipping = true;
                    consumed = buf.len();
                    break;
                }
                None => break,
            }
        }
        let next = Position {
            offset: position.offset + consumed as u64,
            skipping,
            ..position
        };
        Ok((events, next))
    }
}

fn memchr(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\n')
}
