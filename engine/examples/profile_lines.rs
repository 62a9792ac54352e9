//! A small driver for instruction-count profiling (`valgrind --tool=callgrind`):
//! runs N lines of the generated access log or of a generated sshd log
//! through pre-decoding, decoders, rules and correlation. Callgrind counts
//! are stable on a loaded machine where wall-clock benchmarks are not; run
//! it with N and with 0 lines and divide the difference by N for the
//! instructions per line.
//!
//! `cargo build --release -p palisade-engine --example profile_lines`, then
//! `profile_lines palisade|ossec access|sshd N [access.log]`.

// A measurement driver: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use palisade_engine::default_ruleset;
use palisade_engine::engine::{Engine, EngineConfig, Ruleset};
use palisade_engine::predecode::predecode;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared");

/// The same sshd mix as `benches/rules.rs`.
fn sshd_log(n: usize) -> Vec<Vec<u8>> {
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let set = args.get(1).map_or("palisade", String::as_str);
    let log = args.get(2).map_or("access", String::as_str);
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let rs = Arc::new(match set {
        "ossec" => {
            let etc = Path::new(SHARED).join("corpus/ossec/legacy-3.3.0/etc");
            Ruleset::load_ossec_etc(&etc).unwrap()
        }
        _ => default_ruleset::load().unwrap(),
    });
    let (lines, location) = match log {
        "sshd" => (sshd_log(n), "/var/log/auth.log"),
        _ => {
            let path = args.get(4).cloned().unwrap_or_else(|| {
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../target-engine/palisade-bench/access-1000000-seed42.log"
                )
                .to_string()
            });
            let text = std::fs::read(path).unwrap();
            let lines = text
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .take(n)
                .map(<[u8]>::to_vec)
                .collect();
            (lines, "/var/log/apache2/access.log")
        }
    };
    if std::env::var_os("PROFILE_TRACE").is_some() {
        // Which rules one line walks through (`logtest -v`'s view).
        let mut engine = Engine::new(Arc::clone(&rs), EngineConfig::default());
        for l in lines.iter().take(2) {
            let mut ev = predecode(l, location, "manager");
            rs.decoders.decode(&mut ev);
            let (v, trace) = engine.judge_traced(&ev, "2024-03-10T00:00:00Z".parse().unwrap());
            println!("{} -> {:?}", String::from_utf8_lossy(l), v.rule_and_level());
            for t in trace {
                println!("{t}");
            }
        }
    }
    let mut engine = Engine::new(Arc::clone(&rs), EngineConfig::default());
    let mut now: Timestamp = "2024-03-10T00:00:00Z".parse().unwrap();
    let step = SignedDuration::from_millis(25);
    let mut alerts = 0usize;
    let t0 = std::time::Instant::now();
    for l in &lines {
        now += step;
        let mut ev = predecode(l, location, "manager");
        alerts += usize::from(engine.process(&mut ev, now).is_some());
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{set} {log}: {} lines, {alerts} alerts, {:.0} events/s",
        lines.len(),
        lines.len() as f64 / secs.max(1e-9)
    );
}
