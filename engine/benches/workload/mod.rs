//! The generated workloads of the throughput measurements, shared by
//! `benches/rules.rs`, `tests/ruleset_million.rs` and
//! `examples/profile_lines.rs` so that their figures are over the same
//! lines: the one-million-line access log made by
//! `shared/tools/gen_access_log.py` (generated once into the target
//! directory, never committed), a deterministic sshd log, and the
//! whole-engine loop that judges them.

// Each user needs only some of these; a failed setup step should stop the
// measurement loudly.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use palisade_engine::engine::{Engine, EngineConfig, Ruleset};
use palisade_engine::predecode::predecode_in;

/// The repository's `shared/` directory.
pub const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared");

/// Where the Apache access logs are read from.
pub const ACCESS_LOG_LOCATION: &str = "/var/log/apache2/access.log";

/// Where the sshd logs are read from.
pub const AUTH_LOG_LOCATION: &str = "/var/log/auth.log";

/// `<target>/palisade-bench`, next to the running binary's profile dir.
fn bench_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/release/deps/rules-xxxx, <target>/release/examples/x
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("palisade-bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The one-million-line generated access log (seed 42), made on first use.
pub fn access_log_path() -> PathBuf {
    let out = bench_dir().join("access-1000000-seed42.log");
    if !out.exists() {
        let tmp = out.with_extension("tmp");
        let st = Command::new("python3")
            .arg(Path::new(SHARED).join("tools/gen_access_log.py"))
            .args(["-n", "1000000", "--seed", "42", "-o"])
            .arg(&tmp)
            .status()
            .unwrap();
        assert!(st.success(), "gen_access_log.py failed");
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

/// The non-empty lines of `text`, at most `n` of them.
pub fn lines(text: &[u8], n: usize) -> Vec<Vec<u8>> {
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .take(n)
        .map(<[u8]>::to_vec)
        .collect()
}

/// The first `n` lines of the one-million-line generated access log.
pub fn access_log(n: usize) -> Vec<Vec<u8>> {
    lines(&std::fs::read(access_log_path()).unwrap(), n)
}

/// A deterministic sshd log: logins, failures (some bursts from one
/// address, so frequency rules work), invalid users, disconnects, PAM.
pub fn sshd_log(n: usize) -> Vec<Vec<u8>> {
    let users = ["root", "admin", "deploy", "oracle", "git", "ubuntu", "test"];
    (0..n)
        .map(|i| {
            let ip = if i % 5 == 0 {
                format!("203.0.113.{}", 1 + (i / 500) % 200)
            } else {
                format!(
                    "{}.{}.{}.{}",
                    11 + i % 200,
                    (i * 7) % 256,
                    (i * 13) % 256,
                    1 + i % 254
                )
            };
            let u = users[i % users.len()];
            let t = format!(
                "Mar 10 {:02}:{:02}:{:02}",
                (i / 3600) % 24,
                (i / 60) % 60,
                i % 60
            );
            let port = 30000 + i % 30000;
            let msg = match i % 10 {
                0 | 1 => format!("Failed password for {u} from {ip} port {port} ssh2"),
                2 => format!("Failed password for invalid user {u}{i} from {ip} port {port} ssh2"),
                3 => format!("Invalid user {u}{i} from {ip} port {port}"),
                4 => format!(
                    "Accepted publickey for {u} from {ip} port {port} ssh2: ED25519 SHA256:x{i}"
                ),
                5 => format!(
                    "Connection closed by authenticating user {u} {ip} port {port} [preauth]"
                ),
                6 => format!("Received disconnect from {ip} port {port}:11: Bye Bye [preauth]"),
                7 => format!(
                    "pam_unix(sshd:session): session opened for user {u}(uid=0) by (uid=0)"
                ),
                8 => format!(
                    "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}  user={u}"
                ),
                _ => format!("Disconnected from user {u} {ip} port {port}"),
            };
            format!("{t} web01 sshd[{}]: {msg}", 1000 + i).into_bytes()
        })
        .collect()
}

/// One pass over `lines` with a fresh engine (pre-decoding, decoders,
/// rules, correlation), 40 lines per second of arrival time; returns the
/// number of lines and of alerts.
pub fn judge_all<'l>(
    rs: &Arc<Ruleset>,
    lines: impl IntoIterator<Item = &'l [u8]>,
    location: &str,
) -> (usize, usize) {
    let mut engine = Engine::new(Arc::clone(rs), EngineConfig::default());
    let mut now: Timestamp = "2024-03-10T00:00:00Z".parse().unwrap();
    let step = SignedDuration::from_millis(25);
    let (mut n, mut alerts) = (0, 0);
    for l in lines {
        now += step;
        let mut ev = predecode_in(l, location, "manager", rs.dialect);
        alerts += usize::from(engine.process(&mut ev, now).is_some());
        n += 1;
    }
    (n, alerts)
}
