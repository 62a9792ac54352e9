//! End-to-end lines per second for one agent, with the real programs: a
//! manager process and an agent process (both as `main` runs them, on
//! loopback with mutual TLS), the agent following a file into which a
//! generated Apache access log (`shared/tools/gen_access_log.py`, one
//! million lines by default) is appended at once. The clock runs from the
//! start of the append until the manager has stored the last line (its
//! `last_sequence`), once with `logall` off and once with it on; the
//! manager correlates on event time, and active responses are issued as
//! usual (the agent runs them in `dry_run`, the host is not changed).
//!
//! Baseline in the same run, on the same lines: the manager's own
//! analysis thread ([`Analyzer`]: pre-decoding, decoders, rules,
//! correlation) fed in batches, with nothing around it, so the end-to-end
//! figures read as ratios to the engine alone on any machine.
//!
//! Also reported: the agent's spool on disk at its largest (sampled) and
//! the events it dropped, the manager's peak memory, the alerts stored.
//!
//! Run: `cargo bench -p palisade-tests --bench e2e_throughput`
//! (`PALISADE_BENCH_LINES=200000` for a shorter run). The log is made in a
//! temporary directory under /tmp and deleted afterwards.
//! `PALISADE_BENCH_MANAGERS=before:PATH,...` also runs the end-to-end
//! figures with each named manager program (a copy of an earlier release
//! build of `e2e-manager`), after the one built with the bench, so that a
//! change is compared before and after in the same run, on the same load.
//! `PALISADE_BENCH_AGENTS=before:PATH,...` does the same for the agent
//! (a copy of `e2e-agent`); a label named in both runs that manager with
//! that agent.
//! `PALISADE_BENCH_LOGALL=off` (or `on`) runs only that setting.
//! `PALISADE_BENCH_BATCH_EVENTS=N` sets the agent's `[spool] batch_events`.
//! `PALISADE_BENCH_IN_FLIGHT=N` sets the managers' `[flow]
//! in_flight_batches`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use palisade_manager::ManagerConfig;
use palisade_manager::pipeline::analysis::{Analyzer, Input, Origin};
use palisade_manager::ruleset::{self, Judging};
use palisade_tests::measure::{
    cpu_seconds, generate_access_log, named_programs, status_kib, throughput_agent_toml,
    throughput_manager_toml as manager_toml, warm_up,
};
use palisade_tests::process::{AgentProcess, ManagerProcess};

const DEFAULT_LINES: usize = 1_000_000;
/// Lines per batch handed to the engine in the baseline (the agent's
/// default `batch_events`).
const ENGINE_BATCH: usize = 500;
const LOCATION: &str = "/var/log/apache2/access.log";

/// Lines per second of the manager's analysis thread alone.
async fn engine_only(config: &ManagerConfig, lines: &[Vec<u8>]) -> f64 {
    let rules = std::sync::Arc::new(ruleset::load(&config.ruleset).unwrap());
    let judging = Judging::of(config);
    let analyzer = Analyzer::start(
        rules,
        judging.engine_config(),
        judging.time_source,
        "bench-manager".into(),
    )
    .unwrap();
    let origin = Origin {
        agent_id: Some("001".into()),
        name: "bench".into(),
        ip: "any".into(),
    };
    let started = Instant::now();
    let cpu_before = cpu_seconds("self");
    let mut alerts = 0usize;
    let mut sequence = 0u64;
    for chunk in lines.chunks(ENGINE_BATCH) {
        let inputs = chunk
            .iter()
            .map(|line| {
                sequence += 1;
                Input {
                    sequence,
                    path: LOCATION.into(),
                    line: line.clone(),
                }
            })
            .collect();
        alerts += analyzer
            .analyze(origin.clone(), inputs)
            .await
            .unwrap()
            .len();
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds("self") - cpu_before;
    println!(
        "engine only (analysis thread): {} lines in {:.2} s, {} alerts, {:.2} CPU-s ({:.0} lines per CPU-s)",
        lines.len(),
        elapsed.as_secs_f64(),
        alerts,
        cpu,
        lines.len() as f64 / cpu
    );
    lines.len() as f64 / elapsed.as_secs_f64()
}

struct RunFigures {
    lines_per_second: f64,
    seconds: f64,
    spool_peak: u64,
    spool_bound: u64,
    dropped: u64,
    alerts: i64,
    manager_peak_kib: u64,
    manager_cpu: f64,
    agent_cpu: f64,
}

/// The programs to measure, as (label, manager, agent): this build's,
/// then each label that `PALISADE_BENCH_MANAGERS` or
/// `PALISADE_BENCH_AGENTS` names (`label:path`, comma-separated), with
/// the manager and agent programs named under that label and this
/// build's for the one not named.
fn programs() -> Vec<(String, PathBuf, PathBuf)> {
    let manager = PathBuf::from(env!("CARGO_BIN_EXE_e2e-manager"));
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_e2e-agent"));
    let mut programs = vec![("this build".to_string(), manager.clone(), agent.clone())];
    for (variable, is_agent) in [
        ("PALISADE_BENCH_MANAGERS", false),
        ("PALISADE_BENCH_AGENTS", true),
    ] {
        for (label, path) in named_programs(variable) {
            let at = match programs.iter().position(|(l, _, _)| *l == label) {
                Some(at) => at,
                None => {
                    programs.push((label, manager.clone(), agent.clone()));
                    programs.len() - 1
                }
            };
            if is_agent {
                programs[at].2 = path;
            } else {
                programs[at].1 = path;
            }
        }
    }
    programs
}

/// The `logall` settings to run: both, or only the one
/// `PALISADE_BENCH_LOGALL` names (`off`, `on`).
fn logall_settings() -> Vec<bool> {
    match std::env::var("PALISADE_BENCH_LOGALL").as_deref() {
        Ok("off") => vec![false],
        Ok("on") => vec![true],
        _ => vec![false, true],
    }
}

/// `[flow] in_flight_batches` as `PALISADE_BENCH_IN_FLIGHT` says (absent:
/// the manager's default), to compare how batches overlap and group.
fn in_flight(toml: String) -> String {
    match std::env::var("PALISADE_BENCH_IN_FLIGHT") {
        Ok(n) => toml.replace(
            "agent_events_per_second = 0\n",
            &format!("agent_events_per_second = 0\nin_flight_batches = {n}\n"),
        ),
        Err(_) => toml,
    }
}

/// One end-to-end run: a fresh manager (`program`) and agent, the whole
/// log appended.
async fn end_to_end(
    program: &Path,
    agent_program: &Path,
    log: &Path,
    lines: usize,
    logall: bool,
) -> RunFigures {
    let manager = ManagerProcess::start_with(program, |t| in_flight(manager_toml(t, logall)))
        .await
        .unwrap();
    let (id, bundle) = manager.add_agent("bench").await.unwrap();
    let followed = manager.dir.path().join("access.log");
    std::fs::write(&followed, "").unwrap();
    // The agent's default spool bound (its agent.toml sets none).
    let spool_bound: u64 = 256 * 1024 * 1024;
    let toml = throughput_agent_toml(manager.addr, &followed);
    // `PALISADE_BENCH_BATCH_EVENTS=N` sets the agent's `[spool] batch_events`.
    let toml = match std::env::var("PALISADE_BENCH_BATCH_EVENTS") {
        Ok(n) => toml.replace("[spool]\n", &format!("[spool]\nbatch_events = {n}\n")),
        Err(_) => toml,
    };
    let agent_config = bundle.join("agent.toml");
    std::fs::write(&agent_config, toml).unwrap();
    let agent = AgentProcess::start(agent_program, &agent_config).unwrap();
    let store = manager.store().await.unwrap();
    let warmed = warm_up(&store, &id, &followed).await.unwrap();
    let target = warmed + lines as u64;
    let spool = bundle.join("agent.db");
    let manager_pid = manager.pid().unwrap();
    let agent_pid = agent.pid().unwrap().to_string();
    let cpu = || {
        (
            cpu_seconds(&manager_pid.to_string()),
            cpu_seconds(&agent_pid),
        )
    };
    let cpu_before = cpu();

    let started = Instant::now();
    {
        let mut from = std::fs::File::open(log).unwrap();
        let mut to = std::fs::OpenOptions::new()
            .append(true)
            .open(&followed)
            .unwrap();
        std::io::copy(&mut from, &mut to).unwrap();
    }
    let mut spool_peak = 0u64;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        spool_peak = spool_peak.max(palisade_tests::sqlite_bytes(&spool));
        let record = store.agent(&id).await.unwrap().unwrap();
        if record.last_sequence >= target {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored {} of {target} after 900 s",
            record.last_sequence
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let cpu_after = cpu();
    let manager_peak_kib = status_kib(manager_pid, "VmHWM:");
    // The heartbeat after the burst carries the final dropped count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dropped = store.agent(&id).await.unwrap().unwrap().dropped_events;
    let alerts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alerts")
        .fetch_one(
            &sqlx::SqlitePool::connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(
                        manager
                            .config
                            .database
                            .sqlite_path()
                            .expect("an SQLite store"),
                    )
                    .read_only(true),
            )
            .await
            .unwrap(),
        )
        .await
        .unwrap();
    drop(agent);
    drop(manager);
    RunFigures {
        lines_per_second: lines as f64 / elapsed.as_secs_f64(),
        seconds: elapsed.as_secs_f64(),
        spool_peak,
        spool_bound,
        dropped,
        alerts,
        manager_peak_kib,
        manager_cpu: cpu_after.0 - cpu_before.0,
        agent_cpu: cpu_after.1 - cpu_before.1,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it with
    // no flag and expects a quick pass: build only.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    palisade_tests::install_crypto();
    let asked: usize = std::env::var("PALISADE_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LINES);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let scratch = tempfile::Builder::new()
        .prefix("palisade-e2e-bench")
        .tempdir_in("/tmp")
        .unwrap();
    let log = scratch.path().join("access.log");
    generate_access_log(asked, &log).unwrap();
    let text = std::fs::read(&log).unwrap();
    let all: Vec<Vec<u8>> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    // The generator's scanner bursts come whole: a few lines more than
    // asked; the figures count what it wrote.
    assert!(
        all.len() >= asked,
        "the generator wrote {} of {asked} lines",
        all.len()
    );
    let lines = all.len();
    drop(text);
    println!(
        "{lines} lines, {} MB ({})",
        std::fs::metadata(&log).unwrap().len() / 1_000_000,
        log.display()
    );

    rt.block_on(async {
        // The engine's figure with the configuration the runs use.
        let manager =
            ManagerProcess::start_with(Path::new(env!("CARGO_BIN_EXE_e2e-manager")), |t| {
                manager_toml(t, false)
            })
            .await
            .unwrap();
        let engine = engine_only(&manager.config, &all).await;
        drop(manager);
        drop(all);
        println!("engine only: {engine:.0} lines/s");
        println!(
            "load average now: {}",
            std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
        );
        for (label, program, agent_program) in &programs() {
        for logall in logall_settings() {
            let f = end_to_end(program, agent_program, &log, lines, logall).await;
            println!(
                "end to end ({label}), logall {}: {:.0} lines/s ({:.2} s), {:.3} of the engine alone; \
                 spool peak {:.1} MiB of {} MiB, dropped {}, alerts {}, manager peak RSS {:.0} MiB; \
                 CPU-s: manager {:.2} ({:.0} lines per CPU-s), agent {:.2} ({:.0} lines per CPU-s)",
                if logall { "on " } else { "off" },
                f.lines_per_second,
                f.seconds,
                f.lines_per_second / engine,
                f.spool_peak as f64 / 1048576.0,
                f.spool_bound / 1048576,
                f.dropped,
                f.alerts,
                f.manager_peak_kib as f64 / 1024.0,
                f.manager_cpu,
                lines as f64 / f.manager_cpu,
                f.agent_cpu,
                lines as f64 / f.agent_cpu,
            );
            println!(
                "load average now: {}",
                std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
            );
        }
        }
    });
    drop(scratch);
    rt.shutdown_timeout(Duration::from_secs(1));
}
