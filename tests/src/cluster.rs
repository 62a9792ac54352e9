//! Two managers on one PostgreSQL database for the tests of failover
//! between managers: real processes on loopback, so that a test can
//! SIGKILL one (B is A's [`ManagerProcess::sibling_named`]: the same CA,
//! certificate and operator bundle), named `mgr-a` and `mgr-b`, with short
//! heartbeats so that a killed manager counts as dead within a second.
//! Agents are registered through A and list both addresses, A first;
//! `palisadectl` uses the operator bundle against either manager.
//! (`two_managers` is the other set-up: one manager per network
//! namespace, each with its own agent, for what crosses managers.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_manager::store::{ArchivedEvent, Store};

use crate::process::{AgentSetup, ManagerProcess, with_manager_name, write_agent_config};

/// How often each manager says it is alive, and when it counts as dead.
pub const HEARTBEAT_INTERVAL: &str = "200ms";
/// See [`HEARTBEAT_INTERVAL`].
pub const DEAD_AFTER: &str = "1s";

/// Managers `mgr-a` and `mgr-b` on one database.
pub struct ManagerPair {
    /// Manager A (its directory holds the CA and the operator bundle).
    pub a: ManagerProcess,
    /// Manager B.
    pub b: ManagerProcess,
}

/// `manager.toml` as `init` wrote it, on `database` under `name`, with
/// `logall` on (tests read the archive) and the short heartbeats.
fn on_database(text: &str, database: &str, name: &str) -> String {
    let text = crate::with_logall(text.to_string()).replace(
        "database = \"palisade.db\"",
        &format!("database = {database:?}"),
    );
    with_manager_name(
        &format!(
            "{text}\n[manager]\nheartbeat_interval = \"{HEARTBEAT_INTERVAL}\"\ndead_after = \"{DEAD_AFTER}\"\n"
        ),
        name,
    )
}

impl ManagerPair {
    /// Starts A, then B, both running `program` on the PostgreSQL
    /// database at `database` (empty: A's start creates the schema and
    /// adopts the operator); `edit` changes A's configuration (and so B's)
    /// further.
    pub async fn start(
        program: &Path,
        database: &str,
        edit: impl FnOnce(String) -> String,
    ) -> anyhow::Result<Self> {
        let a =
            ManagerProcess::start_with(program, |text| edit(on_database(&text, database, "mgr-a")))
                .await?;
        let b = a.sibling_named(Some("mgr-b")).await?;
        Ok(Self { a, b })
    }

    /// Registers an agent (through A's configuration, on the shared
    /// database); returns its id and bundle directory.
    pub async fn add_agent(&self, name: &str) -> anyhow::Result<(String, PathBuf)> {
        self.a.add_agent(name).await
    }

    /// Writes the bundle's `agent.toml` listing A then B, coming back to
    /// A every `failback_interval`; returns its path.
    pub fn agent_config(
        &self,
        bundle: &Path,
        setup: &AgentSetup,
        failback_interval: &str,
    ) -> anyhow::Result<PathBuf> {
        let config = write_agent_config(bundle, self.a.addr, setup)?;
        let text = std::fs::read_to_string(&config)?.replace(
            &format!("address = \"{}\"", self.a.addr),
            &format!(
                "address = [\"{}\", \"{}\"]\nfailback_interval = \"{failback_interval}\"",
                self.a.addr, self.b.addr
            ),
        );
        std::fs::write(&config, text)?;
        Ok(config)
    }

    /// A `ctl.toml` for the operator pointed at `manager` (A's or B's
    /// address); returns its path.
    pub fn ctl_config(&self, manager: &ManagerProcess) -> anyhow::Result<PathBuf> {
        let operator = self.a.dir.path().join("operator");
        let path = operator.join(format!("ctl-{}.toml", manager.addr.port()));
        let text = std::fs::read_to_string(operator.join("ctl.toml"))?;
        std::fs::write(
            &path,
            text.replace(&self.a.addr.to_string(), &manager.addr.to_string()),
        )?;
        Ok(path)
    }

    /// Both managers' logs, for a failure's message.
    pub fn logs(&self) -> String {
        let read = |m: &ManagerProcess| {
            std::fs::read_to_string(m.dir.path().join("manager.out")).unwrap_or_default()
        };
        format!(
            "--- manager A ---\n{}\n--- manager B ---\n{}",
            read(&self.a),
            read(&self.b)
        )
    }

    /// Waits (at most `limit`) until agent `id`'s lease is held by the
    /// manager named `name`.
    pub async fn lease_on(
        &self,
        store: &Store,
        id: &str,
        name: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        crate::eventually(limit, &format!("agent {id}'s lease on {name}"), || async {
            let holder = store.agent(id).await?.and_then(|a| a.lease_manager);
            let managers = store.managers().await?;
            Ok(managers
                .iter()
                .any(|m| Some(m.id) == holder && m.name == name)
                .then_some(()))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs()))
    }

    /// Waits (at most `limit`) until exactly `expected` events of agent
    /// `id` are stored, failing at once on more; returns them.
    pub async fn stored(
        &self,
        store: &Store,
        id: &str,
        expected: usize,
        limit: Duration,
    ) -> anyhow::Result<Vec<ArchivedEvent>> {
        crate::eventually(
            limit,
            &format!("{expected} lines of {id} stored"),
            || async {
                let events = store.archived_events(Some(id)).await?;
                anyhow::ensure!(
                    events.len() <= expected,
                    "{} events of {id} stored for {expected} lines",
                    events.len()
                );
                Ok((events.len() == expected).then_some(events))
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs()))
    }
}
