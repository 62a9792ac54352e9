//! The daemons as real processes, for tests that must kill them with
//! SIGKILL (no shutdown path runs, as after a crash or `kill -9`). The
//! test passes the program (`env!("CARGO_BIN_EXE_e2e-manager")` /
//! `e2e-agent`), since only integration tests know where Cargo built it.
//! Children are killed when their handle is dropped; their output goes to
//! a log file beside their configuration, for when a test fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use palisade_manager::ManagerConfig;
use palisade_manager::setup::{self, InitOptions};
use palisade_manager::store::Store;

/// Starts `program run -c config`, its output appended to `log`.
fn spawn(program: &Path, config: &Path, extra: &[&str], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Ok(Command::new(program)
        .arg("run")
        .arg("-c")
        .arg(config)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?)
}

/// Copies the files under `from` into `to` (the daemons' logs and
/// SQLite files excepted: a copy is a new host, not a fork of this one's
/// state).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if text.ends_with(".out") || text.contains(".db") {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Kills and reaps a child (SIGKILL).
fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// `text`, a `manager.toml`, with `[manager] name = "name"`: the name
/// line of its `[manager]` table replaced, or one added (with the table,
/// if there is none). Every manager on one database needs its own name.
pub fn with_manager_name(text: &str, name: &str) -> String {
    const TABLE: &str = "\n[manager]\n";
    let line = format!("name = {name:?}");
    let Some(at) = text.find(TABLE) else {
        return format!("{text}{TABLE}{line}\n");
    };
    let start = at + TABLE.len();
    let end = text[start..].find("\n[").map_or(text.len(), |i| start + i);
    let mut table: Vec<&str> = text[start..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("name"))
        .collect();
    table.insert(0, &line);
    format!("{}{}{}", &text[..start], table.join("\n"), &text[end..])
}

/// A free loopback port (bound, then released).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A manager process in its own temporary directory, on a fixed port.
pub struct ManagerProcess {
    /// The temporary directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// Its configuration.
    pub config: ManagerConfig,
    /// Where it listens.
    pub addr: SocketAddr,
    program: PathBuf,
    child: Option<Child>,
}

impl ManagerProcess {
    /// `init` in a fresh temp dir, then runs `program` on a free port,
    /// with `logall` on: tests see what was delivered in the archive.
    pub async fn start(program: &Path) -> anyhow::Result<Self> {
        Self::start_with(program, crate::with_logall).await
    }

    /// As [`Self::start`], with `manager.toml` rewritten by `edit` (the
    /// text `init` wrote in, the text to run with out) before the start.
    pub async fn start_with(
        program: &Path,
        edit: impl FnOnce(String) -> String,
    ) -> anyhow::Result<Self> {
        crate::install_crypto();
        let dir = tempfile::tempdir()?;
        let addr = free_port()?;
        let report = setup::init(&InitOptions {
            dir: dir.path().to_path_buf(),
            sans: vec![],
            listen: addr,
            advertise: Some(addr.to_string()),
            force: false,
        })
        .await?;
        let text = std::fs::read_to_string(&report.config)?;
        std::fs::write(&report.config, edit(text))?;
        let config = ManagerConfig::load(&report.config)?;
        let mut manager = Self {
            dir,
            config,
            addr,
            program: program.to_path_buf(),
            child: None,
        };
        manager.restart().await?;
        Ok(manager)
    }

    /// A second manager of the same cluster: a copy of this one's
    /// directory (CA, certificates, operator bundle, `manager.toml`) on a
    /// port of its own, sharing the store, which must therefore be a
    /// database server's (PostgreSQL), not a file the copy would fork.
    /// Started as [`Self::restart`] does. Its `[manager] name` is
    /// `manager-PORT` (each manager of a cluster needs its own).
    pub async fn sibling(&self) -> anyhow::Result<Self> {
        self.sibling_named(None).await
    }

    /// [`Self::sibling`] under `[manager] name` `name`.
    pub async fn sibling_named(&self, name: Option<&str>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            self.config.database.sqlite_path().is_none(),
            "a sibling manager shares the store: {} is an SQLite file",
            self.config.database
        );
        let dir = tempfile::tempdir()?;
        copy_tree(self.dir.path(), dir.path())?;
        let addr = free_port()?;
        let source = dir.path().join(
            self.config
                .source
                .strip_prefix(self.dir.path())
                .unwrap_or(Path::new("manager.toml")),
        );
        let text = std::fs::read_to_string(&source)?;
        let old = format!("listen = \"{}\"", self.addr);
        anyhow::ensure!(text.contains(&old), "no {old} in {}", source.display());
        let text = text
            .replacen(&old, &format!("listen = \"{addr}\""), 1)
            .replacen(
                &format!("advertise = \"{}\"", self.addr),
                &format!("advertise = \"{addr}\""),
                1,
            );
        let name = name.map_or_else(|| format!("manager-{}", addr.port()), str::to_string);
        std::fs::write(&source, with_manager_name(&text, &name))?;
        let mut manager = Self {
            config: ManagerConfig::load(&source)?,
            dir,
            addr,
            program: self.program.clone(),
            child: None,
        };
        manager.restart().await?;
        Ok(manager)
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the manager with SIGKILL.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the manager (again) and waits until it accepts connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = Some(spawn(
            &self.program,
            &self.config.source,
            &[],
            &self.dir.path().join("manager.out"),
        )?);
        crate::eventually(Duration::from_secs(30), "the manager to listen", || async {
            Ok(tokio::net::TcpStream::connect(self.addr)
                .await
                .ok()
                .map(|_| ()))
        })
        .await
    }

    /// Registers an agent; returns its id and bundle directory.
    pub async fn add_agent(&self, name: &str) -> anyhow::Result<(String, PathBuf)> {
        let bundle = setup::add_agent(&self.config, name, None, None).await?;
        Ok((bundle.id, bundle.dir))
    }

    /// Runs palisadectl (`program`) as the operator `init` made, against
    /// this manager.
    pub fn ctl(&self, program: &Path, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new(program)
            .arg("--config")
            .arg(self.dir.path().join("operator/ctl.toml"))
            .args(args)
            .env_remove("PALISADE_CTL_CONFIG")
            .output()
    }

    /// Opens the manager's database (a second connection).
    pub async fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::open(&self.config.database).await?)
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What an agent process watches and how.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    /// `[[localfile]]` entries: location and log_format.
    pub files: Vec<(PathBuf, String)>,
    /// `agent.poll_interval`.
    pub poll_interval: &'static str,
    /// `spool.max_size`.
    pub spool_max_size: &'static str,
    /// `agent.read_from_start`.
    pub read_from_start: bool,
}

impl Default for AgentSetup {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            poll_interval: "20ms",
            spool_max_size: "256MiB",
            read_from_start: true,
        }
    }
}

/// Writes `agent.toml` into a bundle directory made by `agent add`,
/// pointed at `manager`; returns its path.
pub fn write_agent_config(
    bundle: &Path,
    manager: SocketAddr,
    setup: &AgentSetup,
) -> anyhow::Result<PathBuf> {
    let mut text = format!(
        r#"[manager]
address = "{manager}"
server_name = "localhost"
ca_cert = "ca.pem"
cert = "agent.pem"
key = "agent.key"

[spool]
database = "agent.db"
max_size = "{}"

[agent]
poll_interval = "{}"
heartbeat_interval = "500ms"
read_from_start = {}
"#,
        setup.spool_max_size, setup.poll_interval, setup.read_from_start
    );
    for (location, format) in &setup.files {
        text.push_str(&format!(
            "\n[[localfile]]\nlocation = {:?}\nlog_format = {format:?}\n",
            location.display().to_string()
        ));
    }
    let path = bundle.join("agent.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// An agent process.
pub struct AgentProcess {
    /// Its `agent.toml`.
    pub config: PathBuf,
    program: PathBuf,
    child: Option<Child>,
}

impl AgentProcess {
    /// Runs `program run -c config`.
    pub fn start(program: &Path, config: &Path) -> anyhow::Result<Self> {
        let mut agent = Self {
            config: config.to_path_buf(),
            program: program.to_path_buf(),
            child: None,
        };
        agent.restart()?;
        Ok(agent)
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the agent with SIGKILL.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the agent (again).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let log = self.config.with_extension("out");
        self.child = Some(spawn(&self.program, &self.config, &[], &log)?);
        Ok(())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::with_manager_name;

    #[test]
    fn a_manager_name_is_set_once() {
        assert_eq!(
            with_manager_name("[server]\nlisten = \"x\"\n", "b"),
            "[server]\nlisten = \"x\"\n\n[manager]\nname = \"b\"\n"
        );
        let named = "[server]\n\n[manager]\nname = \"a\"\ndead_after = \"1s\"\n[global]\n";
        assert_eq!(
            with_manager_name(named, "b"),
            "[server]\n\n[manager]\nname = \"b\"\ndead_after = \"1s\"\n[global]\n"
        );
    }
}
