//! Lines per second from a file to the manager's database on loopback,
//! and the agent's peak memory. The manager runs in this process (its
//! `run()`, as `main` calls it); the agent runs as its own program, so its
//! peak RSS (`VmHWM`) is its own. Each iteration appends a block of lines
//! to the followed file and waits until the manager has stored the last
//! one (`last_sequence`): the whole path, tailing, spooling, TLS, the
//! manager's analysis and its SQLite archive.
//!
//! Baselines measured in the same run, on the same lines: reading them
//! from the file (what `cat file > /dev/null` does) and storing them in
//! the agent's spool ([`Spool::append`], as many lines a call as the
//! tailer spools in one transaction under a burst, into chunks), so the figures can be read as ratios on
//! any machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_agent::spool::{NewEvent, Spool};
use palisade_manager::ManagerConfig;
use palisade_manager::setup::{self, InitOptions};
use palisade_manager::store::Store;
use tokio_util::sync::CancellationToken;

const LINES: usize = 100_000;

fn block(round: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(LINES * 110);
    for i in 0..LINES {
        writeln!(
            text,
            "203.0.113.{} - - [28/Nov/2026:01:02:03 +0000] \"GET /index.html?r={round}&i={i} HTTP/1.1\" 200 612",
            i % 250
        )
        .unwrap();
    }
    text
}

struct Rig {
    _dir: tempfile::TempDir,
    log: PathBuf,
    agent: Child,
    store: Store,
    id: String,
    shutdown: CancellationToken,
    stored: u64,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        self.shutdown.cancel();
    }
}

async fn rig() -> Rig {
    palisade_common::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let report = setup::init(&InitOptions {
        dir: dir.path().to_path_buf(),
        sans: vec![],
        listen: addr,
        advertise: Some(addr.to_string()),
        force: false,
    })
    .await
    .unwrap();
    let config = ManagerConfig::load(&report.config).unwrap();
    let bundle = setup::add_agent(&config, "bench", None, None)
        .await
        .unwrap();
    let store = Store::open(&config.database).await.unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(palisade_manager::run(config, listener, shutdown.clone()));
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    // The agent's defaults, one file.
    let toml = format!(
        "[manager]\naddress = \"{addr}\"\nserver_name = \"localhost\"\nca_cert = \"ca.pem\"\ncert = \"agent.pem\"\nkey = \"agent.key\"\n\n[spool]\ndatabase = \"agent.db\"\n\n[[localfile]]\nlocation = {:?}\nlog_format = \"apache\"\n",
        log.display().to_string()
    );
    let agent_config = bundle.dir.join("agent.toml");
    std::fs::write(&agent_config, toml).unwrap();
    let agent = Command::new(env!("CARGO_BIN_EXE_e2e-agent"))
        .arg("run")
        .arg("-c")
        .arg(&agent_config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // The agent reads a file seen first from its end: wait until it follows
    // it (one line through) before measuring.
    let mut rig = Rig {
        _dir: dir,
        log,
        agent,
        store,
        id: bundle.id,
        shutdown,
        stored: 0,
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&rig.log)
        .unwrap()
        .write_all(b"warm up\n")
        .unwrap();
    rig.stored = 1;
    rig.wait_stored().await;
    rig
}

impl Rig {
    async fn wait_stored(&self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let record = self.store.agent(&self.id).await.unwrap();
            if record.is_some_and(|r| r.last_sequence >= self.stored) {
                return;
            }
            assert!(Instant::now() < deadline, "the manager stopped storing");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Appends `text` ( `LINES` lines) and waits until all are stored.
    async fn push(&mut self, text: &[u8]) -> Duration {
        let started = Instant::now();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap()
            .write_all(text)
            .unwrap();
        self.stored += LINES as u64;
        self.wait_stored().await;
        started.elapsed()
    }

    /// The agent's peak resident memory (VmHWM), in KiB.
    fn agent_peak_rss_kib(&self) -> u64 {
        peak_rss_kib(self.agent.id())
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// User and system CPU seconds of a process (`/proc/PID/stat`, in the
/// usual 100 Hz clock ticks).
fn cpu_seconds(stat: &str) -> f64 {
    let text = std::fs::read_to_string(stat).unwrap();
    let after_name = &text[text.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15; 3 is the first after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The agent's spool storing the lines, without anything else: a new
/// spool, [`Spool::append`] as many lines at a time as the tailer spools
/// in one transaction (its default `batch_lines`).
async fn spool_append(path: &Path, text: &[u8]) -> Duration {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let spool = Spool::open(path).await.unwrap();
    let events: Vec<NewEvent> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| NewEvent {
            location: "/var/log/access.log".into(),
            log_format: "apache".into(),
            read_at: 0,
            truncated: false,
            line: line.to_vec(),
        })
        .collect();
    let started = Instant::now();
    let per_append = palisade_agent::tail::TailOptions::default().batch_lines;
    for batch in events.chunks(per_append) {
        spool.append(batch, &[]).await.unwrap();
    }
    let elapsed = started.elapsed();
    spool.close().await;
    elapsed
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn per_second(d: Duration) -> f64 {
    LINES as f64 / d.as_secs_f64()
}

fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rig = rt.block_on(rig());
    let scratch = tempfile::tempdir().unwrap();
    let texts: Vec<Vec<u8>> = (0..4).map(block).collect();
    let (pipeline_times, cat_times, spool_times) = (
        Mutex::new(Vec::new()),
        Mutex::new(Vec::new()),
        Mutex::new(Vec::new()),
    );

    let mut group = c.benchmark_group("agent");
    group.throughput(Throughput::Elements(LINES as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    let mut round = 0;
    group.bench_function("file_to_manager_db", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let d = rt.block_on(rig.push(&texts[round % texts.len()]));
                pipeline_times.lock().unwrap().push(d);
                total += d;
            }
            total
        })
    });
    // Where the time went: CPU seconds of the agent process and of this
    // one (the manager: TLS, analysis, archive), per line pushed.
    let pushed = (rig.stored - 1) as f64;
    let agent_cpu = cpu_seconds(&format!("/proc/{}/stat", rig.agent.id()));
    let manager_cpu = cpu_seconds("/proc/self/stat");
    let file = scratch.path().join("lines");
    std::fs::write(&file, &texts[0]).unwrap();
    group.bench_function("baseline_cat_file", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                let mut f = std::fs::File::open(&file).unwrap();
                std::io::copy(&mut f, &mut std::io::sink()).unwrap();
            }
            let d = started.elapsed();
            cat_times.lock().unwrap().push(d / iters.max(1) as u32);
            d
        })
    });
    let db = scratch.path().join("baseline.db");
    group.bench_function("baseline_spool_append", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let d = rt.block_on(spool_append(&db, &texts[0]));
                spool_times.lock().unwrap().push(d);
                total += d;
            }
            total
        })
    });
    group.finish();

    let rss = rig.agent_peak_rss_kib();
    let pipeline = per_second(median(&mut pipeline_times.lock().unwrap()));
    let cat = per_second(median(&mut cat_times.lock().unwrap()));
    let spooled = per_second(median(&mut spool_times.lock().unwrap()));
    println!(
        "\nfile to manager database: {pipeline:.0} lines/s (median of {} blocks of {LINES}); \
         {:.3} of the agent's spool alone ({spooled:.0} lines/s), {:.5} of reading the file ({cat:.0} lines/s)",
        pipeline_times.lock().unwrap().len(),
        pipeline / spooled,
        pipeline / cat,
    );
    println!(
        "CPU per line: agent {:.2} µs ({:.0} lines per agent CPU-second), manager in this process {:.2} µs ({:.0} lines per CPU-second), over {pushed} lines",
        agent_cpu / pushed * 1e6,
        pushed / agent_cpu,
        manager_cpu / pushed * 1e6,
        pushed / manager_cpu,
    );
    println!(
        "agent peak RSS (VmHWM): {} KiB = {:.1} MiB; targets: >= 100000 lines/s, < 30 MiB",
        rss,
        rss as f64 / 1024.0
    );
    drop(rig);
    rt.shutdown_timeout(Duration::from_secs(1));
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
