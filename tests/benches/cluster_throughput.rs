//! End-to-end lines per second on the two stores and with two managers:
//! the same generated access log (`shared/tools/gen_access_log.py`, one
//! million lines by default), half of it appended at once to each of two
//! agents' followed files, stored by
//!
//! 1. one manager on SQLite (the embedded default),
//! 2. one manager on PostgreSQL,
//! 3. two managers on one PostgreSQL database, one agent on each,
//!
//! all real processes on loopback with mutual TLS, in this run, one after
//! the other (so the ratios between them hold on a shared machine). The
//! clock runs from the start of the appends until the store holds both
//! agents' last lines; `logall` as `PALISADE_BENCH_LOGALL` says (off by
//! default, OSSEC's default), event-time correlation, responses decided
//! but carried out in `dry_run` (the host is not changed).
//!
//! PostgreSQL: the server `PALISADE_TEST_POSTGRES` names, or a throwaway
//! one `scripts/pg-test-cluster` starts and removes (Debian's postgresql
//! package must be installed: `scripts/install-test-deps`).
//!
//! Run: `cargo bench -p palisade-tests --bench cluster_throughput`
//! (`PALISADE_BENCH_LINES=200000` for a shorter run).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use palisade_tests::cluster::ManagerPair;
use palisade_tests::measure::{
    cpu_seconds, generate_access_log, throughput_agent_toml, throughput_manager_toml, warm_up,
};
use palisade_tests::process::{AgentProcess, ManagerProcess};

const DEFAULT_LINES: usize = 1_000_000;
const MANAGER: &str = env!("CARGO_BIN_EXE_e2e-manager");
const AGENT: &str = env!("CARGO_BIN_EXE_e2e-agent");

/// Where the managers keep their store.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    OneOnSqlite,
    OneOnPostgres,
    TwoOnPostgres,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Self::OneOnSqlite => "one manager, SQLite",
            Self::OneOnPostgres => "one manager, PostgreSQL",
            Self::TwoOnPostgres => "two managers, one PostgreSQL",
        }
    }
}

struct Figures {
    lines_per_second: f64,
    seconds: f64,
    alerts: u64,
    manager_cpu: f64,
}

/// One run: fresh managers (and database), two agents, the halves
/// appended at once.
async fn run(setup: Setup, halves: &[(PathBuf, usize); 2], logall: bool) -> Figures {
    let lines: usize = halves.iter().map(|(_, n)| n).sum();
    let database = (setup != Setup::OneOnSqlite).then(palisade_test_needs::postgres_database);
    let edit = |t: String| throughput_manager_toml(t, logall);
    let (a, b) = match (setup, &database) {
        (Setup::TwoOnPostgres, Some(db)) => {
            // Named managers with the cluster's own heartbeats, each agent
            // on one of them.
            let two = ManagerPair::start(Path::new(MANAGER), &db.url, edit)
                .await
                .unwrap();
            (two.a, Some(two.b))
        }
        (_, Some(db)) => {
            let on_postgres = |t: String| {
                edit(t).replacen(
                    "database = \"palisade.db\"",
                    &format!("database = \"{}\"", db.url),
                    1,
                )
            };
            let a = ManagerProcess::start_with(Path::new(MANAGER), on_postgres)
                .await
                .unwrap();
            (a, None)
        }
        (_, None) => (
            ManagerProcess::start_with(Path::new(MANAGER), edit)
                .await
                .unwrap(),
            None,
        ),
    };
    let store = a.store().await.unwrap();
    let mut agents = Vec::new();
    let mut targets = Vec::new();
    let mut followed = Vec::new();
    for (i, name) in ["web01", "web02"].into_iter().enumerate() {
        let manager = match (i, &b) {
            (1, Some(b)) => b,
            _ => &a,
        };
        let (id, bundle) = a.add_agent(name).await.unwrap();
        let file = a.dir.path().join(format!("access-{i}.log"));
        std::fs::write(&file, "").unwrap();
        let config = bundle.join("agent.toml");
        std::fs::write(&config, throughput_agent_toml(manager.addr, &file)).unwrap();
        agents.push(AgentProcess::start(Path::new(AGENT), &config).unwrap());
        let warmed = warm_up(&store, &id, &file).await.unwrap();
        targets.push((id, warmed + halves[i].1 as u64));
        followed.push(file);
    }
    let managers: Vec<String> = [Some(&a), b.as_ref()]
        .into_iter()
        .flatten()
        .map(|m| m.pid().unwrap().to_string())
        .collect();
    let cpu = || managers.iter().map(|p| cpu_seconds(p)).sum::<f64>();
    let cpu_before = cpu();

    let started = Instant::now();
    let appends: Vec<_> = halves
        .iter()
        .zip(&followed)
        .map(|((half, _), file)| {
            let (half, file) = (half.clone(), file.clone());
            std::thread::spawn(move || {
                let mut from = std::fs::File::open(half).unwrap();
                let mut to = std::fs::OpenOptions::new().append(true).open(file).unwrap();
                std::io::copy(&mut from, &mut to).unwrap();
            })
        })
        .collect();
    for append in appends {
        append.join().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(1800);
    for (id, target) in &targets {
        loop {
            let stored = store.agent(id).await.unwrap().unwrap().last_sequence;
            if stored >= *target {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: agent {id} stored {stored} of {target}",
                setup.label()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let elapsed = started.elapsed();
    let manager_cpu = cpu() - cpu_before;
    let alerts = store.alert_count().await.unwrap();
    store.close().await;
    drop(agents);
    drop(b);
    drop(a);
    Figures {
        lines_per_second: lines as f64 / elapsed.as_secs_f64(),
        seconds: elapsed.as_secs_f64(),
        alerts,
        manager_cpu,
    }
}

/// Without `PALISADE_TEST_POSTGRES`: runs this bench again with it set to
/// a throwaway server `scripts/pg-test-cluster` starts, stops the server
/// and returns the run's status.
fn with_own_postgres() -> std::process::ExitStatus {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-test-cluster");
    let out = std::process::Command::new(&script)
        .arg("start")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} start: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (dir, url) = (text.lines().next().unwrap(), text.lines().last().unwrap());
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(std::env::args_os().skip(1))
        .env("PALISADE_TEST_POSTGRES", url)
        .status()
        .unwrap();
    let _ = std::process::Command::new(&script)
        .arg("stop")
        .arg(dir)
        .status();
    status
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it with
    // no flag and expects a quick pass: build only.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if std::env::var_os("PALISADE_TEST_POSTGRES").is_none() {
        std::process::exit(with_own_postgres().code().unwrap_or(1));
    }
    palisade_tests::install_crypto();
    let lines: usize = std::env::var("PALISADE_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LINES);
    let logall = std::env::var("PALISADE_BENCH_LOGALL").is_ok_and(|v| v == "1" || v == "true");
    let scratch = tempfile::Builder::new()
        .prefix("palisade-cluster-bench")
        .tempdir_in("/tmp")
        .unwrap();
    let log = scratch.path().join("access.log");
    generate_access_log(lines, &log).unwrap();
    // The halves: every other line, so both carry scanners and both are
    // in time order.
    let text = std::fs::read(&log).unwrap();
    let mut halves = [Vec::new(), Vec::new()];
    let mut counts = [0usize; 2];
    for (i, line) in text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        halves[i % 2].extend_from_slice(line);
        halves[i % 2].push(b'\n');
        counts[i % 2] += 1;
    }
    drop(text);
    let files = [0, 1].map(|i| {
        let path = scratch.path().join(format!("half-{i}.log"));
        std::fs::write(&path, &halves[i]).unwrap();
        (path, counts[i])
    });
    drop(halves);
    let lines = counts[0] + counts[1];
    println!("{lines} lines in two halves, logall {logall}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut baseline = None;
        for setup in [
            Setup::OneOnSqlite,
            Setup::OneOnPostgres,
            Setup::TwoOnPostgres,
        ] {
            let f = run(setup, &files, logall).await;
            let base = *baseline.get_or_insert(f.lines_per_second);
            println!(
                "{:<30} {:>8.0} lines/s ({:.2} s), {:.2} of one manager on SQLite; alerts {}; \
                 managers' CPU-s {:.2} ({:.0} lines per CPU-s); load {}",
                setup.label(),
                f.lines_per_second,
                f.seconds,
                f.lines_per_second / base,
                f.alerts,
                f.manager_cpu,
                lines as f64 / f.manager_cpu,
                std::fs::read_to_string("/proc/loadavg")
                    .unwrap_or_default()
                    .trim()
            );
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(scratch);
}
