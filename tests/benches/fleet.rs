//! Ten thousand agents on one manager: the load generator and its figures.
//!
//! Starts the real manager (this build's `e2e-manager`, release under
//! `cargo bench`) in a temporary directory, registers N agents in its
//! database with certificates signed by its CA (the code `agent add`
//! runs, without writing bundles: [`palisade_tests::fleet::register`]),
//! and opens N real mutual-TLS streams from this process, each with its
//! own connection and certificate. Then it measures:
//!
//! - the manager's memory per connected idle agent (RSS with the fleet
//!   connected minus RSS before, over N), and after the fleet left;
//! - the time until all N are Active after a start and after a restart
//!   (SIGKILL, then the reconnect storm);
//! - `palisadectl -l` (the real program, output discarded);
//! - `palisadectl -b IP -f route-null600 -a` and `unblock IP`: the
//!   command's own time, and when the last agent (and the median agent)
//!   had its command, counted from the command's start; every agent
//!   answers with a result, as real agents do;
//! - the same again with every agent sending 10 lines every 5 s.
//!
//! `FLEET_AGENTS` is a comma-separated list of fleet sizes (default
//! `1000`); e.g. `FLEET_AGENTS=1000,10000 cargo bench -p palisade-tests
//! --bench fleet`. This process and the manager share the machine: the
//! figures include the simulated agents' own CPU.
//!
//! `PALISADE_BENCH_MANAGERS=before:PATH,...` also runs every fleet size
//! with each named manager program (a copy of an earlier release build
//! of `e2e-manager`), after the one built with the bench, so that a change
//! is compared before and after in the same run, on the same load.
//! `FLEET_PARTS=memory` measures only the memory (per idle agent, and
//! after the fleet left), `FLEET_PARTS=active` only the times to Active
//! (with the CPU the manager and the simulated agents used for each), to
//! compare changes to them quickly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// The simulated agents allocate as real agents do: with mimalloc (glibc's
// allocator was a tenth of their CPU in a reconnect storm, on the same
// two cores as the manager they are measuring).
#[global_allocator]
static ALLOCATOR: palisade_malloc::Allocator = palisade_malloc::Allocator;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use palisade_tests::fleet::{self, Fleet, Target, Traffic};
use palisade_tests::measure::{cpu_seconds, named_programs, status_kib};
use palisade_tests::process::ManagerProcess;

const CTL: &str = env!("CARGO_BIN_EXE_e2e-ctl");
const MANAGER: &str = env!("CARGO_BIN_EXE_e2e-manager");
/// How long anything may take before the bench gives up.
const LIMIT: Duration = Duration::from_secs(300);

/// Raises this process's open-file limit (N sockets here, N in the
/// manager, which inherits it) to its hard limit with util-linux's
/// `prlimit`; says when that is too low for `n` agents.
fn raise_nofile(n: usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .expect("prlimit (util-linux)");
    assert!(
        status.success(),
        "cannot raise the open-file limit to {hard}"
    );
    assert!(
        hard >= n as u64 + 512,
        "the open-file hard limit {hard} is too low for {n} agents (ulimit -Hn)"
    );
}

/// The process's anonymous memory in transparent huge pages, in KiB
/// (`AnonHugePages` of `/proc/PID/smaps_rollup`): a huge page is in RSS
/// whole however little of it is used.
fn huge_pages_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("AnonHugePages:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The fleet leaves: is the manager's memory given back 10 s later?
async fn leave(fleet: Fleet, pid: u32) {
    fleet.stop();
    drop(fleet);
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "  manager RSS {} MiB 10 s after the fleet left",
        status_kib(pid, "VmRSS:") / 1024
    );
}

/// Runs palisadectl with `args`; returns its wall time.
fn ctl(config: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let status = Command::new(CTL)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("palisadectl");
    let took = start.elapsed();
    if !status.success() {
        // Said, not fatal: a fan-out goes on after its caller gave up,
        // and the bench measures when the agents have it.
        println!("  palisadectl {args:?} failed after {took:?}: {status}");
    }
    took
}

/// Runs `args` (a fan-out to every agent) and waits until every agent had
/// its command with `action`; prints the command's time, the median and
/// the last agent's.
async fn fan_out(fleet: &mut Fleet, ctl_toml: &Path, n: usize, args: &[&str], action: i32) {
    let srcip = args
        .iter()
        .find(|a| a.parse::<std::net::IpAddr>().is_ok())
        .unwrap()
        .to_string();
    let start = Instant::now();
    let config = ctl_toml.to_path_buf();
    let owned: Vec<String> = args.iter().map(ToString::to_string).collect();
    let command = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        ctl(&config, &args)
    });
    let mut times = Vec::with_capacity(n);
    while times.len() < n {
        let r = fleet
            .next_command(LIMIT)
            .await
            .expect("every agent's command");
        if r.command.srcip == srcip && r.command.action == action {
            times.push(r.at.duration_since(start));
        }
    }
    let took = command.await.unwrap();
    times.sort();
    println!(
        "  {:<38} command {:>7.3} s, median agent {:>7.3} s, all {n} {:>7.3} s",
        args.join(" "),
        took.as_secs_f64(),
        times[n / 2].as_secs_f64(),
        times[n - 1].as_secs_f64()
    );
}

async fn operations(fleet: &mut Fleet, ctl_toml: &Path, n: usize, round: usize) {
    let list = ctl(ctl_toml, &["-l"]);
    println!("  palisadectl -l: {:.3} s", list.as_secs_f64());
    let ip = format!("198.18.{}.7", round);
    let add = palisade_proto::v1::CommandAction::Add as i32;
    let delete = palisade_proto::v1::CommandAction::Delete as i32;
    fan_out(
        fleet,
        ctl_toml,
        n,
        &["-b", &ip, "-f", "route-null600", "-a"],
        add,
    )
    .await;
    fan_out(fleet, ctl_toml, n, &["unblock", &ip], delete).await;
}

/// This build's manager, then those `PALISADE_BENCH_MANAGERS` names
/// (`label:path`, comma-separated).
fn manager_programs() -> Vec<(String, PathBuf)> {
    let mut programs = vec![("this build".to_string(), PathBuf::from(MANAGER))];
    programs.extend(named_programs("PALISADE_BENCH_MANAGERS"));
    programs
}

/// What a run measures (`FLEET_PARTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parts {
    /// Everything.
    All,
    /// The memory per idle agent and after the fleet left.
    Memory,
    /// The times to Active, after connecting at once and after a restart.
    Active,
}

/// The CPU seconds the manager `pid` and this process (the simulated
/// agents) used since `since` (their counts then).
fn cpu_since(pid: u32, since: (f64, f64)) -> String {
    format!(
        "CPU: manager {:.2} s, simulated agents {:.2} s",
        cpu_seconds(&pid.to_string()) - since.0,
        cpu_seconds("self") - since.1
    )
}

async fn run(n: usize, label: &str, program: &Path, parts: Parts) {
    println!(
        "fleet of {n} agents, manager {label} ({}), load average {}",
        program.display(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut manager = ManagerProcess::start(program).await.unwrap();
    let ctl_toml = manager.dir.path().join("operator").join("ctl.toml");
    let start = Instant::now();
    let identities = fleet::register(&manager.config, "sim", n).await.unwrap();
    println!(
        "  registered {n} agents (CA-signed certificates) in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // Every simulated agent connects from 127.0.0.1, as through one NAT
    // address: their handshakes at once are not squatters.
    let mut toml = std::fs::read_to_string(&manager.config.source).unwrap();
    toml.push_str(&format!(
        "\n[connections]\nmax_handshakes_per_address = {}\n",
        n.max(64)
    ));
    std::fs::write(&manager.config.source, toml).unwrap();
    // Restart: the manager starts with the registered fleet, as in
    // production.
    manager.restart().await.unwrap();
    let pid = manager.pid().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = status_kib(pid, "VmRSS:");
    let target = Target::of(&manager.config, manager.addr).unwrap();

    let cpu = (cpu_seconds(&pid.to_string()), cpu_seconds("self"));
    let start = Instant::now();
    let mut fleet = Fleet::start(&target, &identities, None).unwrap();
    fleet.wait_active(n, LIMIT).await.unwrap();
    println!(
        "  all {n} Active after connecting at once: {:.2} s ({})",
        start.elapsed().as_secs_f64(),
        cpu_since(pid, cpu)
    );
    // Settle: handshakes done, first heartbeats written.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let with = status_kib(pid, "VmRSS:");
    println!(
        "  manager RSS {} MiB idle, {} MiB with {n} agents: {:.1} KiB per agent ({} MiB of it in transparent huge pages)",
        before / 1024,
        with / 1024,
        (with.saturating_sub(before)) as f64 / n as f64,
        huge_pages_kib(pid) / 1024
    );
    if parts == Parts::Memory {
        leave(fleet, pid).await;
        return;
    }
    if parts == Parts::All {
        operations(&mut fleet, &ctl_toml, n, 1).await;
    }

    // A restart: time from the new process's start to all Active (the
    // manager's CPU counted from its start, the agents' from the kill).
    let start = Instant::now();
    let agents_cpu = cpu_seconds("self");
    let failures = fleet.counters.failures.load(Ordering::Relaxed);
    manager.restart().await.unwrap();
    let pid = manager.pid().unwrap();
    let listening = start.elapsed();
    fleet.wait_active(n, LIMIT).await.unwrap();
    println!(
        "  after a manager restart (SIGKILL), all {n} Active in {:.2} s (listening after {:.2} s; {}; {} attempts to reconnect failed)",
        start.elapsed().as_secs_f64(),
        listening.as_secs_f64(),
        cpu_since(pid, (0.0, agents_cpu)),
        // Every stream ended with the manager: one failure each.
        (fleet.counters.failures.load(Ordering::Relaxed) - failures).saturating_sub(n as u64)
    );

    leave(fleet, pid).await;
    if parts == Parts::Active {
        return;
    }

    // With traffic: 10 lines every 5 s per agent.
    let traffic = Traffic {
        lines: 10,
        every: Duration::from_secs(5),
    };
    let mut fleet = Fleet::start(&target, &identities, Some(traffic)).unwrap();
    fleet.wait_active(n, LIMIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "  with 10 lines / 5 s per agent ({} lines/s), RSS {} MiB:",
        n * 2,
        status_kib(pid, "VmRSS:") / 1024
    );
    operations(&mut fleet, &ctl_toml, n, 2).await;
    println!(
        "  batches acknowledged: {}",
        fleet.counters.acks.load(Ordering::Relaxed)
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not run it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("FLEET_AGENTS")
        .unwrap_or_else(|_| "1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let parts = match std::env::var("FLEET_PARTS").as_deref() {
        Ok("memory") => Parts::Memory,
        Ok("active") => Parts::Active,
        _ => Parts::All,
    };
    raise_nofile(sizes.iter().copied().max().unwrap_or(0));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let programs = manager_programs();
    for n in sizes {
        for (label, program) in &programs {
            runtime.block_on(run(n, label, program, parts));
        }
    }
}
