//! A whole site for active-response tests: a web-server namespace running
//! a real nginx, a Palisade manager and an agent (the real programs, as
//! processes), and an attacker namespace joined to it by a veth pair.
//!
//! Addresses (documentation ranges, only inside the test's namespaces):
//! web `192.0.2.1` / `2001:db8::1`, attacker `192.0.2.2` / `2001:db8::2`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use palisade_manager::ManagerConfig;
use palisade_manager::setup::{self, InitOptions};
use palisade_manager::store::Store;

use crate::netns::{Netns, Nginx, NsChild, link};

/// The web server's addresses.
pub const WEB: (&str, &str) = ("192.0.2.1", "2001:db8::1");
/// The attacker's addresses.
pub const ATTACKER: (&str, &str) = ("192.0.2.2", "2001:db8::2");

/// The paths of the seed's ZmEu scan (fourteen 404s, enough for 31151).
pub use palisade_quickstart::SCAN;

/// The real programs, as the test binary knows them.
#[derive(Debug, Clone)]
pub struct Programs {
    /// `palisade-manager`.
    pub manager: PathBuf,
    /// `palisade-agent`.
    pub agent: PathBuf,
    /// `palisadectl`.
    pub ctl: PathBuf,
}

/// The test crate's builds of the three programs; only integration tests
/// and benches know their paths, so this expands there.
#[macro_export]
macro_rules! programs {
    () => {
        $crate::site::Programs {
            manager: env!("CARGO_BIN_EXE_e2e-manager").into(),
            agent: env!("CARGO_BIN_EXE_e2e-agent").into(),
            ctl: env!("CARGO_BIN_EXE_e2e-ctl").into(),
        }
    };
}

/// What the site's manager should do about 31151.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `route-null` or `firewall-drop`.
    pub command: &'static str,
    /// The response's timeout, e.g. `"3s"`.
    pub timeout: &'static str,
    /// Escalating timeouts for repeat offenders.
    pub repeated_offenders: Vec<&'static str>,
    /// Manager white list entries besides loopback.
    pub white_list: Vec<&'static str>,
}

/// What a site has besides nginx and the 31151 response.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// More rules the response answers (e.g. sshd's 5712).
    pub rules_id: Vec<u32>,
    /// A syslog file (`auth.log` in the site's directory) the agent tails
    /// too, for sshd's lines.
    pub auth_log: bool,
    /// A default gateway for the web server's namespace, on the link to
    /// the attacker, set before the daemons start.
    pub web_gateway: Option<&'static str>,
    /// `[storage] database` (e.g. a PostgreSQL URL) instead of the SQLite
    /// file `init` made, with every event archived (`logall`). The manager
    /// runs in the web server's namespace: a PostgreSQL server is reached
    /// through its Unix socket (see `PostgresDatabase::socket_url`).
    pub database: Option<String>,
    /// `[global] max_new_blocks_per_minute` (the circuit breaker; 0 turns
    /// it off) instead of the manager's default.
    pub max_new_blocks_per_minute: Option<u32>,
}

impl Policy {
    /// OSSEC's name for the response: command plus timeout in seconds.
    pub fn name(&self) -> String {
        let secs = palisade_common::units::parse_duration(self.timeout)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        format!("{}{secs}", self.command)
    }
}

/// A running site; everything is torn down on drop.
pub struct Site {
    /// Files: configs, logs, databases.
    pub dir: tempfile::TempDir,
    /// The web server's namespace.
    pub web: Netns,
    /// The attacker's namespace.
    pub attacker: Netns,
    /// nginx.
    pub nginx: Nginx,
    /// The manager process.
    pub manager: NsChild,
    /// The agent process.
    pub agent: NsChild,
    /// The agent's id.
    pub agent_id: String,
    /// The manager's configuration.
    pub config: ManagerConfig,
    agent_toml: PathBuf,
    ctl_toml: PathBuf,
    programs: Programs,
    runtime: tokio::runtime::Runtime,
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text)?;
    Ok(())
}

impl Site {
    /// Builds the namespaces, nginx, manager and agent, and waits until the
    /// agent is connected.
    pub fn start(programs: Programs, policy: &Policy) -> anyhow::Result<Self> {
        Self::start_with(programs, policy, &Extras::default())
    }

    /// [`Site::start`] with `extras`.
    pub fn start_with(
        programs: Programs,
        policy: &Policy,
        extras: &Extras,
    ) -> anyhow::Result<Self> {
        crate::install_crypto();
        let runtime = tokio::runtime::Runtime::new()?;
        let dir = tempfile::tempdir()?;
        let web = Netns::create("pw")?;
        let attacker = Netns::create("pa")?;
        link(&web, WEB, &attacker, ATTACKER)?;
        if let Some(gateway) = extras.web_gateway {
            web.ip(&["route", "add", "default", "via", gateway])?;
        }
        let nginx_dir = dir.path().join("nginx");
        std::fs::create_dir_all(&nginx_dir)?;
        let nginx = Nginx::start(&web, &nginx_dir)?;

        let mdir = dir.path().join("manager");
        runtime.block_on(setup::init(&InitOptions {
            dir: mdir.clone(),
            sans: vec![],
            listen: "127.0.0.1:1514".parse()?,
            advertise: None,
            force: false,
        }))?;
        let mut white = vec!["\"127.0.0.1\"".to_string(), "\"::1\"".to_string()];
        white.extend(policy.white_list.iter().map(|w| format!("\"{w}\"")));
        let repeated: Vec<String> = policy
            .repeated_offenders
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect();
        let rules_id: Vec<String> = std::iter::once(31151)
            .chain(extras.rules_id.iter().copied())
            .map(|r| r.to_string())
            .collect();
        let storage = extras
            .database
            .as_ref()
            .map(|url| format!("[storage]\ndatabase = \"{url}\"\nlogall = true\n"))
            .unwrap_or_default();
        let breaker = extras
            .max_new_blocks_per_minute
            .map(|n| format!("max_new_blocks_per_minute = {n}\n"))
            .unwrap_or_default();
        let manager_toml = mdir.join("manager.toml");
        write(
            &manager_toml,
            &format!(
                "{storage}[server]\nlisten = \"0.0.0.0:1514\"\nadvertise = \"127.0.0.1:1514\"\n\
                 [global]\nwhite_list = [{}]\n{breaker}\
                 [ruleset]\nbarrier = \"per-source\"\n\
                 [[active_response]]\ncommand = \"{}\"\nlocation = \"local\"\nrules_id = [{}]\ntimeout = \"{}\"\nrepeated_offenders = [{}]\n",
                white.join(", "),
                policy.command,
                rules_id.join(", "),
                policy.timeout,
                repeated.join(", ")
            ),
        )?;
        let config = ManagerConfig::load(&manager_toml)?;
        let bundle = runtime.block_on(setup::add_agent(&config, "web01", None, None))?;
        let agent_toml = bundle.config.clone();
        let auth_log = dir.path().join("auth.log");
        let auth_localfile = if extras.auth_log {
            std::fs::write(&auth_log, "")?;
            format!(
                "[[localfile]]\nlocation = \"{}\"\nlog_format = \"syslog\"\n",
                auth_log.display()
            )
        } else {
            String::new()
        };
        write(
            &agent_toml,
            &format!(
                "[manager]\naddress = \"127.0.0.1:1514\"\nserver_name = \"localhost\"\nca_cert = \"ca.pem\"\ncert = \"agent.pem\"\nkey = \"agent.key\"\n\
                 [spool]\ndatabase = \"agent.db\"\n\
                 [agent]\npoll_interval = \"20ms\"\nread_from_start = true\n\
                 [[localfile]]\nlocation = \"{}\"\nlog_format = \"nginx\"\n{}\
                 [active_response]\nlog_file = \"active-responses.log\"\nhosts_deny = \"hosts.deny\"\n",
                nginx.access_log.display(),
                auth_localfile
            ),
        )?;
        let ctl_toml = mdir.join("operator/ctl.toml");
        let manager = web.spawn(
            &programs.manager,
            &["run", "-c", &manager_toml.display().to_string()],
            &dir.path().join("manager.log"),
        )?;
        let agent = web.spawn(
            &programs.agent,
            &["run", "-c", &agent_toml.display().to_string()],
            &dir.path().join("agent.log"),
        )?;
        let site = Self {
            dir,
            web,
            attacker,
            nginx,
            manager,
            agent,
            agent_id: bundle.id,
            config,
            agent_toml,
            ctl_toml,
            programs,
            runtime,
        };
        site.wait_connected()?;
        Ok(site)
    }

    /// Waits until the agent has a stream open (welcomed: commands go
    /// down it from then on).
    pub fn wait_connected(&self) -> anyhow::Result<()> {
        let since = self.agent_record()?.and_then(|a| a.last_seen).unwrap_or(0);
        wait(Duration::from_secs(20), "the agent to connect", || {
            Ok(self
                .agent_record()?
                .and_then(|a| a.last_seen)
                .is_some_and(|t| t > since || since == 0)
                && self.manager.output().contains("Agent stream opened."))
        })
    }

    fn agent_record(&self) -> anyhow::Result<Option<palisade_manager::store::AgentRecord>> {
        self.runtime.block_on(async {
            let store = Store::open(&self.config.database).await?;
            let r = store.agent(&self.agent_id).await?;
            store.close().await;
            Ok(r)
        })
    }

    /// Runs the manager's database query `f`.
    pub fn with_store<T>(
        &self,
        f: impl AsyncFnOnce(&Store) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.runtime.block_on(async {
            let store = Store::open(&self.config.database).await?;
            let r = f(&store).await;
            store.close().await;
            r
        })
    }

    /// Registers a second agent, `web02`, and runs it in the attacker's
    /// namespace (a second host), connected to the manager over the veth
    /// link; waits until it is connected and returns its id and process.
    pub fn start_second_agent(&self) -> anyhow::Result<(String, NsChild)> {
        let bundle = self
            .runtime
            .block_on(setup::add_agent(&self.config, "web02", None, None))?;
        write(
            &bundle.config,
            &format!(
                "[manager]\naddress = \"{}:1514\"\nserver_name = \"localhost\"\n\
                 [spool]\ndatabase = \"agent.db\"\n\
                 [active_response]\nlog_file = \"active-responses.log\"\nhosts_deny = \"hosts.deny\"\n",
                WEB.0
            ),
        )?;
        let child = self.attacker.spawn(
            &self.programs.agent,
            &["run", "-c", &bundle.config.display().to_string()],
            &self.dir.path().join("agent-web02.log"),
        )?;
        let id = bundle.id;
        wait(
            Duration::from_secs(20),
            "the second agent to connect",
            || {
                Ok(self
                    .with_store(async |store| {
                        Ok(store.agent(&id).await?.and_then(|a| a.first_seen))
                    })?
                    .is_some())
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}\n{}", child.output()))?;
        Ok((id, child))
    }

    /// Whether `ip` has an unreachable route in the attacker's namespace
    /// (where the second agent runs).
    pub fn is_null_routed_on_second_host(&self, ip: &str) -> anyhow::Result<bool> {
        let family = if ip.contains(':') { "-6" } else { "-4" };
        let routes = self
            .attacker
            .ip(&[family, "route", "show", "type", "unreachable"])?;
        Ok(routes
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(ip)))
    }

    /// Restarts the agent process after killing it with SIGKILL.
    pub fn kill_and_restart_agent(&mut self) -> anyhow::Result<()> {
        self.agent.kill();
        self.agent = self.web.spawn(
            &self.programs.agent,
            &["run", "-c", &self.agent_toml.display().to_string()],
            &self.dir.path().join("agent-2.log"),
        )?;
        Ok(())
    }

    /// Runs palisadectl (as the operator, inside the web namespace).
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self
            .web
            .command(&self.programs.ctl)
            .arg("--config")
            .arg(&self.ctl_toml)
            .args(args)
            .output()?)
    }

    /// The web server's URL as the attacker reaches it.
    pub fn url(&self, v6: bool, path: &str) -> String {
        if v6 {
            format!("http://[{}]{path}", WEB.1)
        } else {
            format!("http://{}{path}", WEB.0)
        }
    }

    /// The attacker's address.
    pub fn attacker_ip(&self, v6: bool) -> &'static str {
        if v6 { ATTACKER.1 } else { ATTACKER.0 }
    }

    /// Whether `ip` is blocked in the web namespace by `command`: an
    /// unreachable route (route-null) or an element of Palisade's nft set
    /// (firewall-drop).
    pub fn is_blocked(&self, command: &str, ip: &str) -> anyhow::Result<bool> {
        if command == "route-null" {
            let family = if ip.contains(':') { "-6" } else { "-4" };
            let routes = self
                .web
                .ip(&[family, "route", "show", "type", "unreachable"])?;
            // "unreachable 192.0.2.2 proto 173"
            Ok(routes
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(ip)))
        } else {
            let set = if ip.contains(':') {
                "blocked6"
            } else {
                "blocked4"
            };
            let out = self
                .web
                .command("nft")
                .args(["list", "set", "inet", "palisade", set])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            Ok(text.contains(&format!("{ip} "))
                || text.contains(&format!("{ip},"))
                || text.contains(&format!("{ip} }}")))
        }
    }

    /// The manager's and agent's logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- manager ---\n{}\n--- agent ---\n{}",
            self.manager.output(),
            self.agent.output()
        )
    }
}

/// Polls `check` every 10 ms until it holds; fails after `limit`.
pub fn wait(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if check()? {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
