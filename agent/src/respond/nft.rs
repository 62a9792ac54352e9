//! `firewall-drop` through an nftables table of Palisade's own: one set per
//! family with per-element timeouts, and input and forward chains that drop
//! packets from members. The kernel removes an element when its timeout
//! runs out, so a ban is lifted on time even if the agent is dead.
//!
//! The `nft` binary is run directly (no shell) and fed a script on stdin
//! built only from parsed [`IpAddr`]s and the validated table name, so no
//! text from a log line can reach it. Every change is one `nft -f`
//! transaction: an extension is `add; delete; add with the new timeout`
//! (works on kernels that cannot update an element's timeout in place) and
//! a delete is `add; delete` (so deleting a missing element succeeds).
//!
//! [`FirewallDrop`] is the `firewall-drop` [`Backend`] over it; it creates
//! the table on first use.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use std::collections::BTreeSet;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tracing::info;

use super::backend::{Backend, BackendError, Reconcile, Reconciled, Target};
use super::order::Action;

/// An nft failure.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be started.
    #[error("cannot run nft: {0}")]
    Spawn(std::io::Error),
    /// `nft` failed.
    #[error("nft failed ({status}): {stderr}")]
    Failed {
        /// Exit status.
        status: String,
        /// What nft said.
        stderr: String,
    },
    /// `nft -j` printed something unexpected.
    #[error("cannot read nft's JSON: {0}")]
    Json(String),
}

/// The set for IPv4 sources.
pub const SET4: &str = "blocked4";
/// The set for IPv6 sources.
pub const SET6: &str = "blocked6";

/// Palisade's nftables table (family `inet`).
#[derive(Debug, Clone)]
pub struct Nft {
    table: String,
    program: String,
}

fn set_of(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { SET4 } else { SET6 }
}

/// nft's timeout syntax; at least one second, rounded up.
fn timeout_text(t: Duration) -> String {
    let secs = t.as_secs() + u64::from(t.subsec_nanos() > 0);
    format!("{}s", secs.max(1))
}

impl Nft {
    /// The table `table` (already validated as an nft identifier).
    pub fn new(table: &str) -> Self {
        Self {
            table: table.to_owned(),
            program: "nft".into(),
        }
    }

    /// The script that creates the table, sets and chains if missing and
    /// (re)writes the chains' rules, leaving the sets' elements alone.
    pub fn setup_script(&self) -> String {
        let t = &self.table;
        let mut s = String::new();
        let _ = writeln!(s, "add table inet {t}");
        let _ = writeln!(
            s,
            "add set inet {t} {SET4} {{ type ipv4_addr; flags timeout; }}"
        );
        let _ = writeln!(
            s,
            "add set inet {t} {SET6} {{ type ipv6_addr; flags timeout; }}"
        );
        for chain in ["input", "forward"] {
            let _ = writeln!(
                s,
                "add chain inet {t} {chain} {{ type filter hook {chain} priority -10; policy accept; }}"
            );
            let _ = writeln!(s, "flush chain inet {t} {chain}");
            let _ = writeln!(s, "add rule inet {t} {chain} ip saddr @{SET4} drop");
            let _ = writeln!(s, "add rule inet {t} {chain} ip6 saddr @{SET6} drop");
        }
        s
    }

    /// The script that puts `ip` in its set with `timeout` (None = no
    /// timeout), replacing any element already there.
    pub fn add_script(&self, ip: IpAddr, timeout: Option<Duration>) -> String {
        let (t, set) = (&self.table, set_of(ip));
        let tail = timeout
            .map(|d| format!(" timeout {}", timeout_text(d)))
            .unwrap_or_default();
        format!(
            "add element inet {t} {set} {{ {ip} }}\ndelete element inet {t} {set} {{ {ip} }}\nadd element inet {t} {set} {{ {ip}{tail} }}\n"
        )
    }

    /// The script that removes `ip` from its set, present or not.
    pub fn delete_script(&self, ip: IpAddr) -> String {
        let (t, set) = (&self.table, set_of(ip));
        format!("add element inet {t} {set} {{ {ip} }}\ndelete element inet {t} {set} {{ {ip} }}\n")
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(NftError::Spawn)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .await
                .map_err(NftError::Spawn)?;
            drop(pipe);
        }
        let out = child.wait_with_output().await.map_err(NftError::Spawn)?;
        if !out.status.success() {
            return Err(NftError::Failed {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', " | "),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn apply(&self, script: &str) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(script)).await.map(|_| ())
    }

    /// Creates the table, sets and chains (idempotent; elements are kept).
    pub async fn setup(&self) -> Result<(), NftError> {
        self.apply(&self.setup_script()).await
    }

    /// Blocks `ip` for `timeout` (None = until deleted); an existing
    /// element gets the new timeout.
    pub async fn add(&self, ip: IpAddr, timeout: Option<Duration>) -> Result<(), NftError> {
        self.apply(&self.add_script(ip, timeout)).await
    }

    /// Unblocks `ip`; success if it was not blocked.
    pub async fn delete(&self, ip: IpAddr) -> Result<(), NftError> {
        self.apply(&self.delete_script(ip)).await
    }

    /// Whether the table exists.
    pub async fn table_exists(&self) -> Result<bool, NftError> {
        let out = self.run(&["-j", "list", "tables", "inet"], None).await?;
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| NftError::Json(e.to_string()))?;
        Ok(v["nftables"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|i| i["table"]["name"].as_str() == Some(self.table.as_str()))
        }))
    }

    /// The elements of both sets, each with its remaining time (None = no
    /// timeout). Empty when the table does not exist.
    pub async fn elements(&self) -> Result<BTreeMap<IpAddr, Option<Duration>>, NftError> {
        let mut out = BTreeMap::new();
        if !self.table_exists().await? {
            return Ok(out);
        }
        for set in [SET4, SET6] {
            let text = self
                .run(&["-j", "list", "set", "inet", &self.table, set], None)
                .await?;
            out.extend(parse_set_listing(&text)?);
        }
        Ok(out)
    }
}

/// Reads `nft -j list set` output: elements are either plain strings (no
/// timeout) or `{"elem": {"val": ..., "timeout": s, "expires": s}}`.
pub fn parse_set_listing(text: &str) -> Result<BTreeMap<IpAddr, Option<Duration>>, NftError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| NftError::Json(e.to_string()))?;
    let mut out = BTreeMap::new();
    let items = v["nftables"]
        .as_array()
        .ok_or_else(|| NftError::Json("no \"nftables\" array".into()))?;
    for item in items {
        let Some(elems) = item["set"]["elem"].as_array() else {
            continue;
        };
        for e in elems {
            let (val, expires) = match e {
                serde_json::Value::String(s) => (s.as_str(), None),
                other => (
                    other["elem"]["val"].as_str().unwrap_or_default(),
                    other["elem"]["expires"].as_u64().map(Duration::from_secs),
                ),
            };
            let ip: IpAddr = val
                .parse()
                .map_err(|_| NftError::Json(format!("element {val:?} is not an address")))?;
            out.insert(ip, expires);
        }
    }
    Ok(out)
}

/// `firewall-drop`: an element with the block's timeout in Palisade's set.
#[derive(Debug)]
pub struct FirewallDrop {
    nft: Nft,
    /// The table, sets and chains were set up by this agent.
    ready: tokio::sync::Mutex<bool>,
}

impl FirewallDrop {
    /// The response name.
    pub const NAME: &'static str = "firewall-drop";

    /// Uses the `inet` table `table` (already validated).
    pub fn new(table: &str) -> Self {
        Self {
            nft: Nft::new(table),
            ready: tokio::sync::Mutex::new(false),
        }
    }

    /// Sets the table up once per agent run (it keeps its elements).
    async fn ensure_table(&self) -> Result<(), NftError> {
        let mut ready = self.ready.lock().await;
        if !*ready {
            self.nft.setup().await?;
            *ready = true;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Backend for FirewallDrop {
    fn program(&self) -> String {
        super::arlog::builtin_program(Self::NAME)
    }

    fn describe(&self, action: Action) -> String {
        match action {
            Action::Add => "add it to the nftables drop set".into(),
            Action::Delete => "remove it from the nftables drop set".into(),
        }
    }

    async fn add(&self, target: &Target) -> Result<String, BackendError> {
        self.ensure_table().await?;
        self.nft.add(target.ip, target.remaining).await?;
        Ok(format!("added to nftables set inet {}", self.nft.table))
    }

    async fn delete(&self, target: &Target) -> Result<String, BackendError> {
        // No table: nothing of ours can be in force.
        if self.nft.table_exists().await? {
            self.nft.delete(target.ip).await?;
        }
        Ok(format!("removed from nftables set inet {}", self.nft.table))
    }

    /// Re-adds elements of live blocks that vanished (with the time the
    /// block has left) and removes elements the ledger does not hold. No
    /// nft at all is fine when no block needs it.
    async fn reconcile(&self, cx: &Reconcile<'_>) -> Reconciled {
        let mut done = Reconciled::default();
        let wanted = cx.live();
        let elements = match self.nft.elements().await {
            Ok(e) => e,
            Err(e) => {
                if !wanted.is_empty() {
                    done.errors.push(e.into());
                }
                return done;
            }
        };
        if wanted.is_empty() && elements.is_empty() {
            return done;
        }
        if let Err(e) = self.ensure_table().await {
            done.errors.push(e.into());
            return done;
        }
        let wanted_ips: BTreeSet<IpAddr> = wanted.iter().map(|b| b.srcip).collect();
        for ip in elements.keys().filter(|ip| !wanted_ips.contains(ip)) {
            let _guard = cx.lock(*ip).await;
            if cx.held(*ip).await {
                continue;
            }
            match self.nft.delete(*ip).await {
                Ok(()) => {
                    info!(%ip, "Removed a set element the ledger does not hold.");
                    done.removed += 1;
                }
                Err(e) => done.errors.push(e.into()),
            }
        }
        for b in wanted.iter().filter(|b| !elements.contains_key(&b.srcip)) {
            let _guard = cx.lock(b.srcip).await;
            match self.nft.add(b.srcip, cx.remaining(b)).await {
                Ok(()) => {
                    info!(ip = %b.srcip, "Set element of a block still due had vanished; added again.");
                    done.readded += 1;
                }
                Err(e) => done.errors.push(e.into()),
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn scripts_are_built_from_the_parsed_address_only() {
        let n = Nft::new("palisade");
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(
            n.add_script(v4, Some(Duration::from_millis(1500))),
            "add element inet palisade blocked4 { 198.51.100.7 }\n\
             delete element inet palisade blocked4 { 198.51.100.7 }\n\
             add element inet palisade blocked4 { 198.51.100.7 timeout 2s }\n"
        );
        assert!(
            n.add_script(v6, None)
                .ends_with("add element inet palisade blocked6 { 2001:db8::7 }\n")
        );
        assert_eq!(
            n.delete_script(v6),
            "add element inet palisade blocked6 { 2001:db8::7 }\ndelete element inet palisade blocked6 { 2001:db8::7 }\n"
        );
        let setup = n.setup_script();
        assert!(setup.contains("flags timeout"));
        assert!(setup.contains("add rule inet palisade forward ip6 saddr @blocked6 drop"));
        assert!(setup.contains("flush chain inet palisade input"));
    }

    #[test]
    fn listings_with_and_without_timeouts_are_read() {
        let text = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "blocked4", "table": "palisade", "type": "ipv4_addr", "handle": 3, "flags": ["timeout"], "elem": [{"elem": {"val": "198.51.100.7", "timeout": 5, "expires": 4}}, "198.51.100.8"]}}]}"#;
        let m = parse_set_listing(text).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[&"198.51.100.7".parse::<IpAddr>().unwrap()],
            Some(Duration::from_secs(4))
        );
        assert_eq!(m[&"198.51.100.8".parse::<IpAddr>().unwrap()], None);
        let empty = r#"{"nftables": [{"metainfo": {}}, {"set": {"name": "blocked6", "flags": ["timeout"]}}]}"#;
        assert!(parse_set_listing(empty).unwrap().is_empty());
        assert!(parse_set_listing("not json").is_err());
    }
}
