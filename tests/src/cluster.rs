//! Two managers on one PostgreSQL database, for the tests of a cluster
//! (failover between managers, responses across them): real processes,
//! so that a test can SIGKILL one, sharing manager A's CA (B serves A's
//! certificate: both answer as `localhost` on loopback), with short
//! heartbeats so that a killed manager counts as dead within a second.
//! Agents are registered through A and list both addresses, A first;
//! `palisadectl` uses A's operator bundle against either manager.

use std::path::{Path, PathBuf};

use crate::process::{AgentSetup, ManagerProcess, write_agent_config};

/// How often each manager says it is alive, and when it counts as dead.
pub const HEARTBEAT_INTERVAL: &str = "200ms";
/// See [`HEARTBEAT_INTERVAL`].
pub const DEAD_AFTER: &str = "1s";

/// Managers `mgr-a` and `mgr-b` on one database.
pub struct TwoManagers {
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
    format!(
        "{text}\n[manager]\nname = \"{name}\"\nheartbeat_interval = \"{HEARTBEAT_INTERVAL}\"\ndead_after = \"{DEAD_AFTER}\"\n"
    )
}

impl TwoManagers {
    /// Starts A, then B, both running `program` on the PostgreSQL
    /// database at `database` (empty: A's start creates the schema and
    /// adopts A's operator); `edit` changes both configurations further.
    pub async fn start(
        program: &Path,
        database: &str,
        edit: impl Fn(String) -> String,
    ) -> anyhow::Result<Self> {
        let a =
            ManagerProcess::start_with(program, |text| edit(on_database(&text, database, "mgr-a")))
                .await?;
        // A adopts its operator bundle as the database's first operator
        // at start; B must not adopt its own first (from its own CA).
        let store = a.store().await?;
        crate::eventually(
            std::time::Duration::from_secs(30),
            "manager A's operator",
            || async { Ok((!store.operators().await?.is_empty()).then_some(())) },
        )
        .await?;
        store.close().await;
        let pki = a.dir.path().join("pki");
        let b = ManagerProcess::start_with(program, |text| {
            let mut text = edit(on_database(&text, database, "mgr-b"));
            for file in ["ca.pem", "ca.key", "manager.pem", "manager.key"] {
                text = text.replace(
                    &format!("\"pki/{file}\""),
                    &format!("{:?}", pki.join(file).display().to_string()),
                );
            }
            text
        })
        .await?;
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

    /// A `ctl.toml` for A's operator pointed at `manager` (A's or B's
    /// address); returns its path.
    pub fn ctl_config(&self, manager: &ManagerProcess) -> anyhow::Result<PathBuf> {
        let operator = self.a.dir.path().join("operator");
        let path = operator.join(format!("ctl-{}.toml", manager.addr.port()));
        std::fs::write(
            &path,
            format!(
                "manager = \"{}\"\nserver_name = \"localhost\"\nca_cert = \"ca.pem\"\ncert = \"operator.pem\"\nkey = \"operator.key\"\n",
                manager.addr
            ),
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
}
