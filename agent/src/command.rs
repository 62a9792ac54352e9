//! OSSEC's `command` and `full_command` sources: a program run every
//! `frequency`, its standard output shipped as events. The command line
//! is split into arguments and run directly, never through a shell, so
//! nothing in it is expanded. Lines carry OSSEC's prefix
//! (`ossec: output: 'ALIAS': ...`) so OSSEC's rules for command output
//! match them. Output is read up to a bound and a run is killed when it
//! outlasts its interval, so a runaway command costs neither unbounded
//! memory nor overlapping runs.

use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::CommandSource;
use crate::spool::{NewEvent, Spool, SpoolError};

/// Most output bytes read from one run of a `command` source.
const MAX_OUTPUT: u64 = 4 << 20;

/// Runs one command source until shutdown.
#[derive(Debug)]
pub struct CommandRunner {
    source: CommandSource,
    spool: Spool,
    spooled: Arc<Notify>,
    max_line_length: usize,
}

impl CommandRunner {
    /// A runner spooling `source`'s output, lines cut at `max_line_length`.
    pub fn new(
        source: CommandSource,
        spool: Spool,
        spooled: Arc<Notify>,
        max_line_length: usize,
    ) -> Self {
        Self {
            source,
            spool,
            spooled,
            max_line_length,
        }
    }

    /// Runs the command now and then every `frequency`; a spool failure
    /// ends the runner, a failing command is logged and retried.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SpoolError> {
        loop {
            let started = tokio::time::Instant::now();
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = tokio::time::timeout(self.source.frequency, self.output()) => r,
            };
            match outcome {
                Ok(Ok(output)) => {
                    let events = self.events(&output, jiff::Timestamp::now().as_millisecond());
                    if !events.is_empty() {
                        self.spool.append(&events, &[]).await?;
                        self.spooled.notify_one();
                    }
                }
                Ok(Err(error)) => {
                    warn!(command = %self.source.command, %error, "Cannot run command.");
                }
                Err(_) => {
                    warn!(command = %self.source.command, "Command outlasted its interval; killed it.");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(started + self.source.frequency) => {}
            }
        }
    }

    /// Runs the program once and returns its standard output (bounded).
    async fn output(&self) -> std::io::Result<Vec<u8>> {
        let (program, args) = self
            .source
            .argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("empty command"))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let mut out = Vec::new();
        let limit = if self.source.full {
            self.max_line_length as u64 + 1
        } else {
            MAX_OUTPUT
        };
        if let Some(stdout) = child.stdout.take() {
            stdout.take(limit).read_to_end(&mut out).await?;
        }
        if out.len() as u64 >= limit {
            // More than is kept: stop it rather than wait for the rest.
            let _ = child.start_kill();
        }
        let status = child.wait().await?;
        debug!(command = %self.source.command, %status, bytes = out.len(), "Command ran.");
        Ok(out)
    }

    /// The events OSSEC makes of one run's output.
    fn events(&self, output: &[u8], read_at: i64) -> Vec<NewEvent> {
        command_events(&self.source, output, read_at, self.max_line_length)
    }
}

/// `command`: one event per non-empty line; `full_command`: one event for
/// the whole output, without empty lines and carriage returns.
pub fn command_events(
    source: &CommandSource,
    output: &[u8],
    read_at: i64,
    max: usize,
) -> Vec<NewEvent> {
    let event = |mut line: Vec<u8>| {
        let truncated = line.len() > max;
        line.truncate(max);
        NewEvent {
            location: source.location.clone(),
            log_format: if source.full {
                "full_command".into()
            } else {
                "command".into()
            },
            read_at,
            truncated,
            line,
        }
    };
    if source.full {
        let mut body: Vec<u8> = Vec::with_capacity(output.len());
        for line in output.split(|&b| b == b'\n') {
            let line: Vec<u8> = line.iter().copied().filter(|&b| b != b'\r').collect();
            if line.is_empty() {
                continue;
            }
            body.push(b'\n');
            body.extend_from_slice(&line);
        }
        if body.is_empty() {
            return Vec::new();
        }
        let mut line = format!("ossec: output: '{}':", source.location).into_bytes();
        line.extend_from_slice(&body);
        return vec![event(line)];
    }
    output
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut line = format!("ossec: output: '{}': ", source.location).into_bytes();
            line.extend_from_slice(l);
            event(line)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn source(full: bool) -> CommandSource {
        CommandSource {
            command: "df -P".into(),
            argv: vec!["df".into(), "-P".into()],
            location: "df -P".into(),
            full,
            frequency: Duration::from_secs(60),
        }
    }

    #[test]
    fn command_makes_one_event_per_line() {
        let events = command_events(&source(false), b"a\r\n\nb\n", 7, 1000);
        let lines: Vec<_> = events.iter().map(|e| e.line.clone()).collect();
        assert_eq!(
            lines,
            vec![
                b"ossec: output: 'df -P': a".to_vec(),
                b"ossec: output: 'df -P': b".to_vec()
            ]
        );
        assert_eq!(events[0].log_format, "command");
        assert_eq!(events[0].location, "df -P");
    }

    #[test]
    fn full_command_makes_one_event() {
        let events = command_events(&source(true), b"a\n\nb\n", 7, 1000);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].line, b"ossec: output: 'df -P':\na\nb");
        assert_eq!(events[0].log_format, "full_command");
        let cut = command_events(&source(true), &[b'x'; 2000], 7, 300);
        assert!(cut[0].truncated);
        assert_eq!(cut[0].line.len(), 300);
    }

    #[tokio::test]
    async fn runs_without_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("a.db")).await.unwrap();
        let runner = CommandRunner::new(
            CommandSource {
                command: "echo".into(),
                argv: vec!["echo".into(), "one; echo two".into(), "$HOME".into()],
                location: "echo".into(),
                full: false,
                frequency: Duration::from_secs(5),
            },
            spool,
            Arc::new(Notify::new()),
            1000,
        );
        let out = runner.output().await.unwrap();
        assert_eq!(out, b"one; echo two $HOME\n");
    }
}
