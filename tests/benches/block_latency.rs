//! Detection-to-block latency: the time from the 14th 4xx line written to
//! the web server's access log until the agent's null route for that
//! address exists in the kernel, through the real agent, manager and
//! engine (processes in a network namespace, mutual TLS on loopback).
//!
//! Each run uses a new address (198.18.0.0/15, the benchmarking range), so
//! runs are independent. The route is observed with `ip monitor route`,
//! which reports it as the kernel adds it. Prints the median and the 99th
//! percentile over all runs; criterion reports its own statistics too.
//! Needs root (network namespaces); otherwise it says so and measures
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_tests::programs;
use palisade_tests::site::{Extras, Policy, Site};

fn address(i: u32) -> String {
    format!("198.18.{}.{}", i / 250, i % 250 + 1)
}

struct Monitor {
    child: Child,
    seen: mpsc::Receiver<(String, Instant)>,
}

impl Monitor {
    fn start(site: &Site) -> Monitor {
        let mut child = site
            .web
            .command("ip")
            .args(["-4", "monitor", "route"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip monitor");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let now = Instant::now();
                let mut words = line.split_whitespace();
                if words.next() == Some("unreachable")
                    && let Some(ip) = words.next()
                    && tx.send((ip.to_string(), now)).is_err()
                {
                    break;
                }
            }
        });
        Monitor { child, seen }
    }

    fn wait_for(&self, ip: &str) -> Instant {
        loop {
            let (got, at) = self
                .seen
                .recv_timeout(Duration::from_secs(10))
                .expect("no route within 10 s");
            if got == ip {
                return at;
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn line(ip: &str, n: u32) -> String {
    format!(
        "{ip} - - [28/Nov/2026:10:00:00 +0000] \"GET /probe-{n}.php HTTP/1.1\" 404 153 \"-\" \"ZmEu\"\n"
    )
}

fn bench(c: &mut Criterion) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("block_latency: skipped: network namespaces need root");
        return;
    }
    // A hundred and more blocks on one agent within a minute: the circuit
    // breaker (60 by default) would stop them.
    let site = Site::start_with(
        programs!(),
        &Policy {
            command: "route-null",
            timeout: "600s",
            repeated_offenders: vec![],
            white_list: vec![],
        },
        &Extras {
            max_new_blocks_per_minute: Some(0),
            ..Extras::default()
        },
    )
    .expect("site");
    let monitor = Monitor::start(&site);
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&site.nginx.access_log)
        .expect("access log");
    let mut next = 0u32;
    let mut all = Vec::new();
    let mut one = |log: &mut std::fs::File| -> Duration {
        let ip = address(next);
        next += 1;
        let first13: String = (0..13).map(|n| line(&ip, n)).collect();
        log.write_all(first13.as_bytes()).expect("write");
        // Let the first thirteen be judged, so the run measures the 14th.
        std::thread::sleep(Duration::from_millis(60));
        let fourteenth = line(&ip, 13);
        let start = Instant::now();
        log.write_all(fourteenth.as_bytes()).expect("write");
        let at = monitor.wait_for(&ip);
        at.duration_since(start)
    };
    let mut group = c.benchmark_group("active_response");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("fourteenth_404_to_null_route", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let d = one(&mut log);
                all.push(d);
                total += d;
            }
            total
        })
    });
    group.finish();
    // At least 100 runs for the percentiles.
    while all.len() < 100 {
        all.push(one(&mut log));
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "fourteenth 404 -> null route over {} runs: median {:.1} ms, p99 {:.1} ms, min {:.1} ms, max {:.1} ms",
        all.len(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all[0].as_secs_f64() * 1e3,
        all[all.len() - 1].as_secs_f64() * 1e3
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
