//! Two managers on one PostgreSQL database with a shared CA, each with an
//! agent of its own on its own host: for the tests of what crosses from
//! one manager to the other (responses, removals).
//!
//! Hosts (network namespaces): host A runs nginx, manager A and agent
//! `web01` (tailing nginx's access log); host B runs manager B and agent
//! `web02`; an attacker is linked to host A (`site::ATTACKER`, web server
//! at `site::WEB`). Each agent knows only its own host's manager
//! (`127.0.0.1:1514` there), so which manager holds which agent is fixed.
//! Both managers read the same `pki/` (one CA, one server certificate) and
//! the same `[[active_response]]`: route-null600 on rule 31151 with
//! `location = "all"`. The operator's `ctl.toml` reaches either manager
//! from its host.

use std::path::{Path, PathBuf};
use std::process::Output;

use palisade_manager::ManagerConfig;
use palisade_manager::setup::{self, InitOptions};
use palisade_manager::store::Store;

use crate::netns::{Netns, Nginx, NsChild, link};
use crate::site::{ATTACKER, Programs, WEB, wait};

/// Manager (and host) A: nginx's host, where the attacker is seen.
pub const A: usize = 0;
/// Manager (and host) B.
pub const B: usize = 1;
/// The response both managers run: `-f` names it.
pub const RESPONSE: &str = "route-null600";

/// Two managers, two agents; everything is torn down on drop.
pub struct TwoManagers {
    /// The managers, A then B.
    pub managers: [NsChild; 2],
    /// The agents: `web01` on A's host, `web02` on B's.
    pub agents: [NsChild; 2],
    /// Their ids.
    pub agent_ids: [String; 2],
    /// The managers' `manager.toml`.
    pub configs: [PathBuf; 2],
    /// nginx on host A.
    pub nginx: Nginx,
    /// Host A and host B.
    pub hosts: [Netns; 2],
    /// The attacker, linked to host A.
    pub attacker: Netns,
    /// Files: configs, logs.
    pub dir: tempfile::TempDir,
    database: ManagerConfig,
    ctl_toml: PathBuf,
    programs: Programs,
    runtime: tokio::runtime::Runtime,
}

/// Manager `name`'s configuration (each its own `[manager] name`: the
/// hosts share one host name, the default).
fn manager_toml(name: &str, database: &str) -> String {
    format!(
        "[manager]\nname = \"{name}\"\n\
         [storage]\ndatabase = \"{database}\"\n\
         [server]\nlisten = \"127.0.0.1:1514\"\nadvertise = \"127.0.0.1:1514\"\n\
         [global]\nwhite_list = [\"127.0.0.1\", \"::1\"]\n\
         [ruleset]\nbarrier = \"per-source\"\n\
         [[active_response]]\ncommand = \"route-null\"\nlocation = \"all\"\nrules_id = [31151]\ntimeout = \"600s\"\n"
    )
}

fn agent_toml(localfile: Option<&Path>) -> String {
    let localfile = localfile
        .map(|log| {
            format!(
                "[[localfile]]\nlocation = \"{}\"\nlog_format = \"nginx\"\n",
                log.display()
            )
        })
        .unwrap_or_default();
    format!(
        "[manager]\naddress = \"127.0.0.1:1514\"\nserver_name = \"localhost\"\nca_cert = \"ca.pem\"\ncert = \"agent.pem\"\nkey = \"agent.key\"\n\
         [spool]\ndatabase = \"agent.db\"\n\
         [agent]\npoll_interval = \"20ms\"\nread_from_start = true\n\
         {localfile}\
         [active_response]\nlog_file = \"active-responses.log\"\nhosts_deny = \"hosts.deny\"\n"
    )
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

impl TwoManagers {
    /// Builds the hosts, both managers on the empty PostgreSQL database
    /// `database` (a URL every namespace reaches: its Unix socket, see
    /// `PostgresDatabase::socket_url`; the caller keeps the database
    /// until this is dropped) and both agents, and waits until each agent
    /// is connected to its manager.
    pub fn start(programs: Programs, database: &str) -> anyhow::Result<Self> {
        crate::install_crypto();
        let runtime = tokio::runtime::Runtime::new()?;
        let dir = tempfile::tempdir()?;
        let hosts = [Netns::create("pca")?, Netns::create("pcb")?];
        let attacker = Netns::create("pcx")?;
        link(&hosts[A], WEB, &attacker, ATTACKER)?;
        let nginx_dir = dir.path().join("nginx");
        std::fs::create_dir_all(&nginx_dir)?;
        let nginx = Nginx::start(&hosts[A], &nginx_dir)?;

        // One init: one CA and server certificate, shared by both.
        let dirs = [dir.path().join("manager-a"), dir.path().join("manager-b")];
        runtime.block_on(setup::init(&InitOptions {
            dir: dirs[A].clone(),
            sans: vec![],
            listen: "127.0.0.1:1514".parse()?,
            advertise: None,
            force: false,
        }))?;
        copy_dir(&dirs[A].join("pki"), &dirs[B].join("pki"))?;
        let configs = [dirs[A].join("manager.toml"), dirs[B].join("manager.toml")];
        for (config, name) in configs.iter().zip(["manager-a", "manager-b"]) {
            std::fs::write(config, manager_toml(name, database))?;
        }
        let database = ManagerConfig::load(&configs[A])?;
        let mut agent_ids = Vec::new();
        let mut agent_configs = Vec::new();
        for (name, localfile) in [("web01", Some(&nginx.access_log)), ("web02", None)] {
            let bundle = runtime.block_on(setup::add_agent(&database, name, None, None))?;
            std::fs::write(&bundle.config, agent_toml(localfile.map(PathBuf::as_path)))?;
            agent_ids.push(bundle.id);
            agent_configs.push(bundle.config);
        }
        let spawn = |host: usize, program: &Path, args: &[&str], log: &str| {
            hosts[host].spawn(program, args, &dir.path().join(log))
        };
        // A first: it registers the operator certificate init made.
        let manager_a = spawn(
            A,
            &programs.manager,
            &["run", "-c", &configs[A].display().to_string()],
            "manager-a.log",
        )?;
        wait_for_line(&manager_a, "Manager started.")?;
        let manager_b = spawn(
            B,
            &programs.manager,
            &["run", "-c", &configs[B].display().to_string()],
            "manager-b.log",
        )?;
        let agents = [
            spawn(
                A,
                &programs.agent,
                &["run", "-c", &agent_configs[A].display().to_string()],
                "agent-web01.log",
            )?,
            spawn(
                B,
                &programs.agent,
                &["run", "-c", &agent_configs[B].display().to_string()],
                "agent-web02.log",
            )?,
        ];
        let managers = [manager_a, manager_b];
        for manager in &managers {
            wait_for_line(manager, "Agent stream opened.")?;
        }
        let [a, b]: [String; 2] = agent_ids
            .try_into()
            .map_err(|_| anyhow::anyhow!("two agents"))?;
        Ok(Self {
            managers,
            agents,
            agent_ids: [a, b],
            configs,
            nginx,
            hosts,
            attacker,
            ctl_toml: dirs[A].join("operator/ctl.toml"),
            dir,
            database,
            programs,
            runtime,
        })
    }

    /// Runs palisadectl as the operator against manager `which` (from
    /// its host).
    pub fn ctl(&self, which: usize, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self.hosts[which]
            .command(&self.programs.ctl)
            .arg("--config")
            .arg(&self.ctl_toml)
            .args(args)
            .output()?)
    }

    /// Runs `palisade-manager ARGS -c` manager `which`'s configuration on
    /// its host (e.g. `agent remove ID`).
    pub fn manager_command(&self, which: usize, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self.hosts[which]
            .command(&self.programs.manager)
            .args(args)
            .arg("-c")
            .arg(&self.configs[which])
            .output()?)
    }

    /// Whether `ip` has an unreachable route on host `which` (route-null
    /// run by that host's agent).
    pub fn is_null_routed(&self, which: usize, ip: &str) -> anyhow::Result<bool> {
        let family = if ip.contains(':') { "-6" } else { "-4" };
        let routes = self.hosts[which].ip(&[family, "route", "show", "type", "unreachable"])?;
        // "unreachable 192.0.2.2 proto 173"
        Ok(routes
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(ip)))
    }

    /// Runs the query `f` on the shared database.
    pub fn with_store<T>(
        &self,
        f: impl AsyncFnOnce(&Store) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.runtime.block_on(async {
            let store = Store::open(&self.database.database).await?;
            let r = f(&store).await;
            store.close().await;
            r
        })
    }

    /// Every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (name, child) in [
            ("manager A", &self.managers[A]),
            ("manager B", &self.managers[B]),
            ("agent web01 (A)", &self.agents[A]),
            ("agent web02 (B)", &self.agents[B]),
        ] {
            out.push_str(&format!("--- {name} ---\n{}\n", child.output()));
        }
        out
    }
}

/// Waits until `child` has logged `line` (or fails with its log).
fn wait_for_line(child: &NsChild, line: &str) -> anyhow::Result<()> {
    wait(std::time::Duration::from_secs(30), line, || {
        Ok(child.output().contains(line))
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", child.output()))
}
