//! Backpressure from the file to the database: a burst far larger than the
//! agent's spool, appended at once to a followed file, arrives exactly
//! once, across a manager killed with SIGKILL in the middle, while the
//! spool on disk never grows past its bound (sampled all along) and the
//! agent drops nothing: it stops reading while its spool is full and
//! resumes where it stopped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use palisade_tests::eventually;
use palisade_tests::process::{AgentProcess, AgentSetup, ManagerProcess, write_agent_config};

const MANAGER: &str = env!("CARGO_BIN_EXE_e2e-manager");
const AGENT: &str = env!("CARGO_BIN_EXE_e2e-agent");
/// Lines in the burst: about 13 MB, three times the spool's bound and
/// eight times its high-water mark (the bench uses a million lines).
const BURST: u64 = 80_000;
const SPOOL_BOUND: u64 = 4 << 20;

fn line(i: u64) -> String {
    format!(
        "Dec  7 00:00:00 web01 app[42]: burst line {i:07} {}",
        "x".repeat(100)
    )
}

/// Samples the spool's size on disk until stopped; keeps the largest.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(db: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(palisade_tests::sqlite_bytes(&db), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Self {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_spool_arrives_once_across_a_manager_crash() {
    let mut manager = ManagerProcess::start(Path::new(MANAGER)).await.unwrap();
    let (id, bundle) = manager.add_agent("web01").await.unwrap();
    let log: PathBuf = manager.dir.path().join("app.log");
    std::fs::write(&log, format!("{}\n", line(0))).unwrap();
    let config = write_agent_config(
        &bundle,
        manager.addr,
        &AgentSetup {
            files: vec![(log.clone(), "syslog".into())],
            spool_max_size: "4MiB",
            ..AgentSetup::default()
        },
    )
    .unwrap();
    let _agent = AgentProcess::start(Path::new(AGENT), &config).unwrap();
    let store = manager.store().await.unwrap();
    let stored = |store: palisade_manager::store::Store| {
        let id = id.clone();
        async move { anyhow::Ok(store.agent(&id).await?.map_or(0, |r| r.last_sequence)) }
    };
    eventually(Duration::from_secs(30), "the first line", || {
        let s = stored(store.clone());
        async move { Ok((s.await? >= 1).then_some(())) }
    })
    .await
    .unwrap();

    let mut sampler = Sampler::start(bundle.join("agent.db"));
    let mut text = String::with_capacity(BURST as usize * 140);
    for i in 1..=BURST {
        text.push_str(&line(i));
        text.push('\n');
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .unwrap();
    drop(text);

    // The manager dies with a third of the burst stored, and comes back.
    eventually(Duration::from_secs(120), "a third of the burst", || {
        let s = stored(store.clone());
        async move { Ok((s.await? >= BURST / 3).then_some(())) }
    })
    .await
    .unwrap();
    manager.kill();
    store.close().await;
    let at_kill = stored(manager.store().await.unwrap()).await.unwrap();
    assert!(
        at_kill < BURST,
        "the whole burst was stored before the kill"
    );
    manager.restart().await.unwrap();
    let store = manager.store().await.unwrap();
    eventually(Duration::from_secs(300), "the whole burst", || {
        let s = stored(store.clone());
        async move { Ok((s.await? > BURST).then_some(())) }
    })
    .await
    .unwrap();
    let peak = sampler.peak();

    // Exactly once, in order: every sequence once, each with its line.
    let archived = store.archived_events(Some(&id)).await.unwrap();
    assert_eq!(archived.len() as u64, BURST + 1, "lines lost or repeated");
    for (i, event) in archived.iter().enumerate() {
        assert_eq!(event.sequence, i as u64 + 1);
        assert_eq!(event.line, line(i as u64).into_bytes(), "line {i}");
    }
    assert!(
        peak <= SPOOL_BOUND,
        "the spool reached {peak} bytes on disk, over its {SPOOL_BOUND}"
    );
    assert!(
        peak > SPOOL_BOUND / 4,
        "the spool never filled ({peak} bytes): the burst did not test backpressure"
    );
    // Nothing was dropped, as the agent reports it.
    let record = eventually(
        Duration::from_secs(30),
        "a heartbeat after the burst",
        || {
            let store = store.clone();
            let id = id.clone();
            async move {
                let r = store.agent(&id).await?.unwrap();
                Ok((r.spool_depth == 0).then_some(r))
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(record.dropped_events, 0, "the agent dropped events");
}
