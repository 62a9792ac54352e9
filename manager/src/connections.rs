//! `[connections]` in manager.toml: how many connections the manager
//! holds, how many unfinished handshakes one address may have, and how
//! long a handshake may take; and the summarised log of refused
//! connections.
//!
//! ```toml
//! [connections]
//! max_connections = 20000            # agents + palisadectl; keep LimitNOFILE above it
//! max_handshakes_per_address = 64    # unfinished TLS handshakes from one address
//! handshake_timeout = "10s"
//! ```
//!
//! A fleet of ten thousand agents reconnecting at once must get in, and
//! one host must not hold the door: a host that opens connections and
//! never finishes the handshake is cut off at the timeout, and its
//! handshakes beyond the per-address cap are refused at once. Refusals
//! are logged in full the first time an address is refused for a reason
//! within a minute, then counted and summarised once a minute ("refused
//! 85,037 connections from 10.0.0.9 in the last minute: ..."), so that a
//! flood cannot flood the log as well.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use palisade_common::config::Problems;
use serde::Deserialize;
use tracing::warn;

/// `max_connections` by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// `max_handshakes_per_address` by default: a NAT gateway in front of
/// many agents reconnecting at once still gets through.
pub const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS: usize = 64;
/// `handshake_timeout` by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often repeated refusals are summarised.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// `[connections]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnections {
    max_connections: Option<usize>,
    max_handshakes_per_address: Option<usize>,
    handshake_timeout: Option<String>,
}

/// The validated `[connections]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections held at once (TLS handshakes included); more are
    /// refused.
    pub max_connections: usize,
    /// Unfinished handshakes one address may have at once.
    pub max_handshakes_per_address: usize,
    /// A handshake not finished by then is dropped.
    pub handshake_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_handshakes_per_address: DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Checks `[connections]`; problems go to `errors`, each naming its key.
pub fn compile(raw: RawConnections, errors: &mut Problems) -> ConnectionLimits {
    let defaults = ConnectionLimits::default();
    let mut positive = |key: &str, v: Option<usize>, default: usize| match v {
        Some(0) => {
            errors.push(format!("connections.{key}"), "must be at least 1");
            default
        }
        Some(n) => n,
        None => default,
    };
    let max_connections = positive(
        "max_connections",
        raw.max_connections,
        defaults.max_connections,
    );
    let max_handshakes_per_address = positive(
        "max_handshakes_per_address",
        raw.max_handshakes_per_address,
        defaults.max_handshakes_per_address,
    );
    let handshake_timeout = match raw.handshake_timeout.as_deref() {
        None => defaults.handshake_timeout,
        Some(text) => match palisade_common::units::parse_duration(text) {
            Ok(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(300) => d,
            Ok(_) => {
                errors.push(
                    "connections.handshake_timeout",
                    "must be between 1s and 300s",
                );
                defaults.handshake_timeout
            }
            Err(e) => {
                errors.push("connections.handshake_timeout", e);
                defaults.handshake_timeout
            }
        },
    };
    ConnectionLimits {
        max_connections,
        max_handshakes_per_address,
        handshake_timeout,
    }
}

/// Refused connections, logged once per address and reason, then counted
/// and summarised every [`SUMMARY_EVERY`].
#[derive(Debug, Clone, Default)]
pub struct RefusalLog {
    counts: Arc<Mutex<HashMap<(IpAddr, &'static str), u64>>>,
}

impl RefusalLog {
    /// Records a refusal of a connection from `peer`; returns whether it
    /// is the first from that address for that reason since the last
    /// summary (the caller logs it in full then).
    pub fn refused(&self, peer: IpAddr, reason: &'static str) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry((peer, reason)).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// The refusals counted since the last summary, beyond the first of
    /// each address and reason (which were logged), largest first; the
    /// counts start again.
    pub fn take_summary(&self) -> Vec<(IpAddr, &'static str, u64)> {
        let counts =
            std::mem::take(&mut *self.counts.lock().unwrap_or_else(PoisonError::into_inner));
        let mut repeated: Vec<(IpAddr, &'static str, u64)> = counts
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|((ip, reason), n)| (ip, reason, n))
            .collect();
        repeated.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        repeated
    }

    /// Logs the summary every [`SUMMARY_EVERY`] until `shutdown`; `what`
    /// names the refused things ("connections", "enrollments").
    pub async fn run(self, what: &'static str, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(SUMMARY_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for (peer, reason, n) in self.take_summary() {
                warn!(%peer, %reason, refused = n, "Refused {} {what} from {peer} in the last minute ({reason}).", thousands(n));
            }
        }
    }
}

/// `85037` as `85,037`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Unfinished handshakes per address.
#[derive(Debug, Clone, Default)]
pub struct Handshakes {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One unfinished handshake; dropping it ends it.
#[derive(Debug)]
pub struct HandshakeSlot {
    peer: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

impl Handshakes {
    /// A slot for a handshake from `peer`, unless it already has `max`.
    pub fn begin(&self, peer: IpAddr, max: usize) -> Option<HandshakeSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(peer).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(HandshakeSlot {
            peer,
            open: self.open.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> (ConnectionLimits, Vec<String>) {
        let raw: RawConnections = toml::from_str(text).unwrap();
        let mut errors = Problems::new();
        let limits = compile(raw, &mut errors);
        (
            limits,
            errors.keys().into_iter().map(String::from).collect(),
        )
    }

    #[test]
    fn settings_are_checked() {
        let (limits, errors) = compile_text("");
        assert!(errors.is_empty());
        assert_eq!(limits, ConnectionLimits::default());
        let (limits, errors) = compile_text(
            "max_connections = 500\nmax_handshakes_per_address = 4\nhandshake_timeout = \"3s\"",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(limits.max_connections, 500);
        assert_eq!(limits.max_handshakes_per_address, 4);
        assert_eq!(limits.handshake_timeout, Duration::from_secs(3));
        let (_, errors) = compile_text(
            "max_connections = 0\nmax_handshakes_per_address = 0\nhandshake_timeout = \"1h\"",
        );
        assert_eq!(
            errors,
            [
                "connections.max_connections",
                "connections.max_handshakes_per_address",
                "connections.handshake_timeout"
            ]
        );
    }

    #[test]
    fn refusals_are_logged_once_then_summarised() {
        let log = RefusalLog::default();
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        let b: IpAddr = "10.0.0.10".parse().unwrap();
        assert!(log.refused(a, "too many handshakes"));
        for _ in 0..85_036 {
            assert!(!log.refused(a, "too many handshakes"));
        }
        assert!(log.refused(b, "too many handshakes"));
        assert!(log.refused(a, "handshake timed out"));
        assert_eq!(log.take_summary(), [(a, "too many handshakes", 85_037)]);
        assert!(log.take_summary().is_empty());
        // A new minute: the first is logged in full again.
        assert!(log.refused(a, "too many handshakes"));
        assert_eq!(thousands(85_037), "85,037");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn handshakes_are_capped_per_address() {
        let handshakes = Handshakes::default();
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        let first = handshakes.begin(a, 2).unwrap();
        let _second = handshakes.begin(a, 2).unwrap();
        assert!(handshakes.begin(a, 2).is_none());
        assert!(handshakes.begin("10.0.0.10".parse().unwrap(), 2).is_some());
        drop(first);
        assert!(handshakes.begin(a, 2).is_some());
    }
}
