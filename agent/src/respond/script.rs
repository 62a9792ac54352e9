//! Custom active-response scripts with OSSEC's argument protocol, run
//! without a shell: the executable gets an argv, never a command line, so
//! nothing in the arguments is interpreted. The address has been parsed as
//! an IP before we get here; the other arguments are checked against the
//! characters OSSEC's manager allows. A script runs in its own process
//! group, with an empty environment but `PATH`, and the whole group is
//! killed when the time limit passes, so a hung script (or a child it left
//! behind holding its output) cannot wedge the agent.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tracing::{info, warn};

/// Output kept per stream; the rest is read and dropped.
const OUTPUT_LIMIT: usize = 16 * 1024;

/// The `PATH` scripts run with.
const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The arguments after the action, in OSSEC's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptArgs {
    /// `$2`: the user, or `-`.
    pub user: String,
    /// `$3`: the address, already parsed and printed back.
    pub srcip: String,
    /// `$4`: the alert id (`(from_the_server)` for a manual command).
    pub alert_id: String,
    /// `$5`: the rule id (`(no_rule_id)` for a manual command).
    pub rule_id: String,
    /// `$6`, `$7`, ...: the location, split on spaces as OSSEC's execd does
    /// (`(web01)` and `10.0.0.5->/var/log/nginx/access.log`).
    pub location: Vec<String>,
    /// Last: the file name, or `-`.
    pub filename: String,
}

impl ScriptArgs {
    /// The argv after the program name.
    pub fn argv(&self, action: &str) -> Vec<String> {
        let mut v = vec![
            action.to_owned(),
            self.user.clone(),
            self.srcip.clone(),
            self.alert_id.clone(),
            self.rule_id.clone(),
        ];
        v.extend(self.location.iter().cloned());
        v.push(self.filename.clone());
        v
    }
}

/// How a script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptRun {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Killed at the time limit.
    pub timed_out: bool,
    /// What it printed (cut at 16 KiB).
    pub stdout: String,
    /// What it printed on stderr (cut at 16 KiB).
    pub stderr: String,
}

impl ScriptRun {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// A one-line summary for the manager.
    pub fn summary(&self) -> String {
        let status = if self.timed_out {
            "killed at the time limit".to_owned()
        } else {
            match self.code {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".to_owned(),
            }
        };
        let err = self.stderr.trim();
        if err.is_empty() {
            status
        } else {
            let first: String = err
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            format!("{status}: {first}")
        }
    }
}

/// A script could not be run at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot run {path}: {source}")]
pub struct ScriptError {
    /// The executable.
    pub path: String,
    /// Why.
    pub source: std::io::Error,
}

async fn read_limited<R: AsyncRead + Unpin>(mut r: R) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Runs `program action args...` with a time limit.
pub async fn run_script(
    program: &Path,
    action: &str,
    args: &ScriptArgs,
    limit: Duration,
) -> Result<ScriptRun, ScriptError> {
    let argv = args.argv(action);
    let err = |source| ScriptError {
        path: program.display().to_string(),
        source,
    };
    let mut child = Command::new(program)
        .args(argv.iter().map(OsString::from))
        .env_clear()
        .env("PATH", SCRIPT_PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(err)?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let out = child.stdout.take().map(|s| tokio::spawn(read_limited(s)));
    let errs = child.stderr.take().map(|s| tokio::spawn(read_limited(s)));
    let (code, timed_out) = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => (status.map_err(err)?.code(), false),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill().await;
            (None, true)
        }
    };
    // Grandchildren outside the group could hold the pipes open: wait briefly.
    let grace = Duration::from_secs(2);
    let collect = |h: Option<tokio::task::JoinHandle<String>>| async move {
        match h {
            Some(h) => tokio::time::timeout(grace, h)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => String::new(),
        }
    };
    let stdout = collect(out).await;
    let stderr = collect(errs).await;
    let run = ScriptRun {
        code,
        timed_out,
        stdout,
        stderr,
    };
    let program_text = program.display().to_string();
    if run.success() {
        info!(program = %program_text, action, srcip = %args.srcip, stdout = %run.stdout.trim(), stderr = %run.stderr.trim(), "Active-response script ran.");
    } else {
        warn!(program = %program_text, action, srcip = %args.srcip, code = ?run.code, timed_out = run.timed_out, stdout = %run.stdout.trim(), stderr = %run.stderr.trim(), "Active-response script failed.");
    }
    Ok(run)
}
