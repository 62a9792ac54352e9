//! Events per second through the whole engine (pre-decoding, decoders,
//! rules and correlation) with Palisade's ruleset and with OSSEC 3.3.0's
//! full set, on an Apache access log made by
//! `shared/tools/gen_access_log.py -n 1000000` (generated once at bench
//! time into the target directory, never committed) and on a generated
//! sshd log. Criterion samples a prefix of each log ([`PREFIX`] lines) to
//! keep a run short; `engine/tests/ruleset_million.rs` (ignored, run by
//! hand in release mode) times the full million once.
//!
//! Run: `cargo bench -p palisade-engine --bench rules`.
//! Targets on one core (issue #4): >= 500,000 events/s with ours, >=
//! 420,000 with OSSEC's 3.3.0 set (3x OSSEC's own ossec-logtest).

// Test and measurement code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use palisade_engine::default_ruleset;
use palisade_engine::engine::{Engine, EngineConfig, Ruleset};
use palisade_engine::predecode::predecode;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared");
const PREFIX: usize = 100_000;

/// `<target>/palisade-bench`, next to the bench binary's profile dir.
fn bench_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/release/deps/rules-xxxx
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

/// The first `n` lines of the one-million-line generated access log.
fn access_log(n: usize) -> Vec<Vec<u8>> {
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
    let text = std::fs::read(&out).unwrap();
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .take(n)
        .map(<[u8]>::to_vec)
        .collect()
}

/// A deterministic sshd log: logins, failures (some bursts from one
/// address, so frequency rules work), invalid users, disconnects, PAM.
fn sshd_log(n: usize) -> Vec<Vec<u8>> {
    let users = ["root", "admin", "deploy", "oracle", "git", "ubuntu", "test"];
    (0..n)
        .map(|i| {
            let ip = if i % 5 == 0 {
                format!("203.0.113.{}", 1 + (i / 500) % 200)
            } else {
                format!("{}.{}.{}.{}", 11 + i % 200, (i * 7) % 256, (i * 13) % 256, 1 + i % 254)
            };
            let u = users[i % users.len()];
            let t = format!("Mar 10 {:02}:{:02}:{:02}", (i / 3600) % 24, (i / 60) % 60, i % 60);
            let port = 30000 + i % 30000;
            let msg = match i % 10 {
                0 | 1 => format!("Failed password for {u} from {ip} port {port} ssh2"),
                2 => format!("Failed password for invalid user {u}{i} from {ip} port {port} ssh2"),
                3 => format!("Invalid user {u}{i} from {ip} port {port}"),
                4 => format!("Accepted publickey for {u} from {ip} port {port} ssh2: ED25519 SHA256:x{i}"),
                5 => format!("Connection closed by authenticating user {u} {ip} port {port} [preauth]"),
                6 => format!("Received disconnect from {ip} port {port}:11: Bye Bye [preauth]"),
                7 => format!("pam_unix(sshd:session): session opened for user {u}(uid=0) by (uid=0)"),
                8 => format!("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}  user={u}"),
                _ => format!("Disconnected from user {u} {ip} port {port}"),
            };
            format!("{t} web01 sshd[{}]: {msg}", 1000 + i).into_bytes()
        })
        .collect()
}

fn ossec_330() -> Arc<Ruleset> {
    let etc = Path::new(SHARED).join("corpus/ossec/legacy-3.3.0/etc");
    Arc::new(Ruleset::load_ossec_etc(&etc).unwrap_or_else(|e| panic!("{e}")))
}

fn palisade() -> Arc<Ruleset> {
    Arc::new(default_ruleset::load().unwrap_or_else(|e| panic!("{e}")))
}

/// One pass over `lines` with a fresh engine, 40 lines per second of
/// arrival time; returns the number of alerts.
fn judge_all(rs: &Arc<Ruleset>, lines: &[Vec<u8>], location: &str) -> usize {
    let mut engine = Engine::new(Arc::clone(rs), EngineConfig::default());
    let mut now: Timestamp = "2024-03-10T00:00:00Z".parse().unwrap();
    let step = SignedDuration::from_millis(25);
    let mut alerts = 0;
    for l in lines {
        now += step;
        let mut ev = predecode(l, location, "manager");
        alerts += usize::from(engine.process(&mut ev, now).is_some());
    }
    alerts
}

fn bench_one(c: &mut Criterion, name: &str, rs: &Arc<Ruleset>, lines: &[Vec<u8>], loc: &str) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.sample_size(10);
    g.bench_function("predecode+decode+rules", |b| {
        b.iter(|| black_box(judge_all(rs, lines, loc)))
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let ours = palisade();
    let ossec = ossec_330();
    let access = access_log(PREFIX);
    let sshd = sshd_log(PREFIX);
    let web = "/var/log/apache2/access.log";
    let auth = "/var/log/auth.log";
    bench_one(c, "access_log/palisade", &ours, &access, web);
    bench_one(c, "access_log/ossec_3.3.0", &ossec, &access, web);
    bench_one(c, "sshd/palisade", &ours, &sshd, auth);
    bench_one(c, "sshd/ossec_3.3.0", &ossec, &sshd, auth);
}

criterion_group!(rules, benches);
criterion_main!(rules);
