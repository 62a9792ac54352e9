//! Custom active-response scripts with OSSEC's argument protocol, run
//! without a shell: the executable gets an argv, never a command line, so
//! nothing in the arguments is interpreted. The address has been parsed as
//! an IP before we get here; the other arguments are checked against the
//! characters OSSEC's manager allows. A script runs in its own process
//! group, with an empty environment but `PATH`, and the whole group is
//! killed when the time limit passes, so a hung script (or a child it left
//! behind holding its output) cannot wedge the agent.
//!
//! [`Script`] is the [`Backend`] of one configured command.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tracing::{info, warn};

use super::backend::{Backend, BackendError, Target};
use super::order::{Action, OssecArgs};

/// Output kept per stream; the rest is read and dropped.
const OUTPUT_LIMIT: usize = 16 * 1024;

/// OSSEC's execd passes at most 32 arguments.
const MAX_LOCATION_ARGS: usize = 24;

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
    /// OSSEC's arguments for a block of `ip`.
    pub fn new(ip: IpAddr, args: &OssecArgs) -> Self {
        let location = if args.location.is_empty() {
            vec!["-".to_owned()]
        } else {
            args.location
                .split(' ')
                .take(MAX_LOCATION_ARGS)
                .map(str::to_owned)
                .collect()
        };
        Self {
            user: args.user.clone(),
            srcip: ip.to_string(),
            alert_id: args.alert_id.clone(),
            rule_id: args.rule_id.clone(),
            location,
            filename: "-".into(),
        }
    }

    /// The argv after the program name.
    pub fn argv(&self, action: Action) -> Vec<String> {
        let mut v = vec![
            action.as_str().to_owned(),
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

/// A script did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// It could not be run at all.
    #[error("cannot run {path}: {source}")]
    Spawn {
        /// The executable.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It ran and failed (a status other than 0, a signal, the time limit).
    #[error("{path} failed: {summary}")]
    Failed {
        /// The executable.
        path: String,
        /// [`ScriptRun::summary`].
        summary: String,
    },
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
    action: Action,
    args: &ScriptArgs,
    limit: Duration,
) -> Result<ScriptRun, ScriptError> {
    let argv = args.argv(action);
    let action = action.as_str();
    let err = |source| ScriptError::Spawn {
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

/// A custom command: the executable run with OSSEC's arguments.
#[derive(Debug)]
pub struct Script {
    path: PathBuf,
    limit: Duration,
}

impl Script {
    /// Runs `path`, killed after `limit`.
    pub fn new(path: &Path, limit: Duration) -> Self {
        Self {
            path: path.to_path_buf(),
            limit,
        }
    }

    async fn run(&self, action: Action, target: &Target) -> Result<String, BackendError> {
        let args = ScriptArgs::new(target.ip, &target.args);
        let run = run_script(&self.path, action, &args, self.limit).await?;
        if run.success() {
            Ok(format!("{} ran: {}", self.path.display(), run.summary()))
        } else {
            Err(ScriptError::Failed {
                path: self.path.display().to_string(),
                summary: run.summary(),
            }
            .into())
        }
    }
}

#[async_trait::async_trait]
impl Backend for Script {
    /// Logged under its executable path, as OSSEC's scripts log `$0`.
    fn program(&self) -> String {
        self.path.display().to_string()
    }

    fn describe(&self, action: Action) -> String {
        format!("run {} {}", self.path.display(), action.as_str())
    }

    fn reapplies_on_extension(&self) -> bool {
        false
    }

    async fn add(&self, target: &Target) -> Result<String, BackendError> {
        self.run(Action::Add, target).await
    }

    async fn delete(&self, target: &Target) -> Result<String, BackendError> {
        self.run(Action::Delete, target).await
    }
}
