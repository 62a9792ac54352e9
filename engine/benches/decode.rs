//! Decoded lines per second (pre-decoding + OSSEC 3.8.0 `decoder.xml`) on an
//! Apache access log made by `shared/tools/gen_access_log.py` (generated at
//! bench time into the temp dir, never committed) and on a generated sshd
//! log. Run: `cargo bench -p palisade-engine --bench decode`.
// A benchmark harness may stop on setup failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_engine::decoder::DecoderSet;
use palisade_engine::predecode::predecode;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared");
const LINES: usize = 20_000;

fn decoders(rel: &str) -> DecoderSet {
    let p = Path::new(ROOT).join("corpus/ossec").join(rel);
    DecoderSet::load_files(&[p]).unwrap_or_else(|e| panic!("{e}"))
}

fn access_log() -> Vec<Vec<u8>> {
    let dir = std::env::temp_dir().join("palisade-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let out: PathBuf = dir.join(format!("access-{LINES}.log"));
    if !out.exists() {
        let status = Command::new("python3")
            .arg(Path::new(ROOT).join("tools/gen_access_log.py"))
            .args(["-n", &LINES.to_string(), "--seed", "1", "-o"])
            .arg(&out)
            .status()
            .expect("python3 runs");
        assert!(status.success(), "gen_access_log.py failed");
    }
    std::fs::read(&out)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// A deterministic mix of the sshd messages a busy server logs.
fn sshd_log() -> Vec<Vec<u8>> {
    let users = ["root", "admin", "deploy", "oracle", "git", "ubuntu", "test"];
    (0..LINES)
        .map(|i| {
            let ip = format!(
                "{}.{}.{}.{}",
                11 + i % 200,
                (i * 7) % 256,
                (i * 13) % 256,
                1 + i % 254
            );
            let u = users[i % users.len()];
            let pid = 1000 + i;
            let t = format!(
                "Mar 10 {:02}:{:02}:{:02}",
                (i / 3600) % 24,
                (i / 60) % 60,
                i % 60
            );
            let msg = match i % 8 {
                0 => format!(
                    "Failed password for {u} from {ip} port {} ssh2",
                    30000 + i % 30000
                ),
                1 => format!(
                    "Failed password for invalid user {u}{i} from {ip} port 4{:04} ssh2",
                    i % 10000
                ),
                2 => format!("Invalid user {u}{i} from {ip} port 5{:04}", i % 10000),
                3 => format!(
                    "Accepted publickey for {u} from {ip} port 6{:04} ssh2: ED25519 SHA256:x{i}",
                    i % 10000
                ),
                4 => format!(
                    "Connection closed by authenticating user {u} {ip} port 7{:04} [preauth]",
                    i % 10000
                ),
                5 => format!(
                    "Received disconnect from {ip} port 8{:04}:11: Bye Bye [preauth]",
                    i % 10000
                ),
                6 => {
                    format!("pam_unix(sshd:session): session opened for user {u}(uid=0) by (uid=0)")
                }
                _ => format!("Disconnected from user {u} {ip} port 9{:04}", i % 10000),
            };
            format!("{t} web01 sshd[{pid}]: {msg}").into_bytes()
        })
        .collect()
}

fn bench_set(c: &mut Criterion, name: &str, set: &DecoderSet, lines: &[Vec<u8>]) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("predecode+decode", |b| {
        b.iter(|| {
            let mut decoded = 0usize;
            for l in lines {
                let mut ev = predecode(l, "/var/log/x", "mgr");
                set.decode(&mut ev);
                decoded += usize::from(ev.decoder_name.is_some());
            }
            black_box(decoded)
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let v38 = decoders("etc/decoder.xml");
    let v33 = decoders("legacy-3.3.0/etc/decoder.xml");
    let access = access_log();
    let sshd = sshd_log();
    bench_set(c, "access_log_3.8_pcre2", &v38, &access);
    bench_set(c, "access_log_3.3_os_regex", &v33, &access);
    bench_set(c, "sshd_3.8_pcre2", &v38, &sshd);
    bench_set(c, "sshd_3.3_os_regex", &v33, &sshd);
}

criterion_group!(decode, benches);
criterion_main!(decode);
