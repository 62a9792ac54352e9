//! The manager gone: killed with SIGKILL for 30 s while the agent keeps
//! reading, then back. Everything read meanwhile waits in the agent's
//! spool and arrives exactly once; with a spool too small to hold it, the
//! agent stays within its bound on disk and stops reading at its
//! high-water mark (the rest waits in the file), so nothing is dropped and
//! everything arrives once the manager is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use palisade_agent::spool::Spool;
use palisade_manager::store::ArchivedEvent;
use palisade_tests::process::{AgentProcess, AgentSetup, ManagerProcess, write_agent_config};
use palisade_tests::{append_lines, eventually};

const MANAGER: &str = env!("CARGO_BIN_EXE_e2e-manager");
const AGENT: &str = env!("CARGO_BIN_EXE_e2e-agent");
/// The last line written, to know that everything before it arrived.
const BARRIER: &str = "barrier 000000 GET /index.html 200";
/// The agent's spool on disk: database, WAL and shared memory.
const SPOOL_FILES: [&str; 3] = ["agent.db", "agent.db-wal", "agent.db-shm"];

fn lines(tag: &str, range: std::ops::Range<usize>, pad: usize) -> Vec<String> {
    range
        .map(|i| format!("{tag} {i:06} GET /index.html 200 {}", "p".repeat(pad)))
        .collect()
}

struct Rig {
    manager: ManagerProcess,
    agent: AgentProcess,
    id: String,
    log: PathBuf,
    bundle: PathBuf,
}

async fn start(spool_max_size: &'static str) -> Rig {
    let manager = ManagerProcess::start(Path::new(MANAGER)).await.unwrap();
    let (id, bundle) = manager.add_agent("web01").await.unwrap();
    let log = manager.dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config = write_agent_config(
        &bundle,
        manager.addr,
        &AgentSetup {
            files: vec![(log.clone(), "apache".into())],
            spool_max_size,
            ..AgentSetup::default()
        },
    )
    .unwrap();
    let agent = AgentProcess::start(Path::new(AGENT), &config).unwrap();
    Rig {
        manager,
        agent,
        id,
        log,
        bundle,
    }
}

impl Rig {
    /// Waits until exactly `n` events of the agent are archived (failing
    /// at once on more) and returns them.
    async fn wait_for(&self, n: usize, limit: Duration) -> Vec<ArchivedEvent> {
        let store = self.manager.store().await.unwrap();
        let events = eventually(limit, &format!("{n} archived events"), || async {
            let events = store.archived_events(Some(&self.id)).await?;
            anyhow::ensure!(events.len() <= n, "{} events for {n} lines", events.len());
            Ok((events.len() == n).then_some(events))
        })
        .await;
        store.close().await;
        match events {
            Ok(events) => events,
            Err(e) => panic!("{e}; agent log:\n{}", self.agent_log()),
        }
    }

    /// Writes one more line and waits until it is archived as event
    /// `n + 1`: whatever the agent sent before it has been stored, so
    /// nothing of the first `n` can still arrive (later copies are below
    /// the stored sequence and skipped).
    async fn barrier(&self, n: usize) {
        append_lines(&self.log, [BARRIER.to_string()]).unwrap();
        let events = self.wait_for(n + 1, Duration::from_secs(60)).await;
        assert_eq!(String::from_utf8_lossy(&events[n].line), BARRIER);
    }

    /// Waits until the agent's spool holds nothing unacknowledged.
    async fn wait_for_acknowledgements(&self) {
        let spool = Spool::open(&self.bundle.join("agent.db")).await.unwrap();
        eventually(Duration::from_secs(30), "every acknowledgement", || async {
            Ok((spool.depth().await? == 0).then_some(()))
        })
        .await
        .unwrap();
        spool.close().await;
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.bundle.join("agent.out")).unwrap_or_default()
    }

    /// How long since the agent last wrote to its spool.
    fn spool_idle(&self) -> Duration {
        SPOOL_FILES
            .iter()
            .filter_map(|f| std::fs::metadata(self.bundle.join(f)).ok()?.modified().ok())
            .map(|t| t.elapsed().unwrap_or_default())
            .min()
            .unwrap_or_default()
    }
}

fn assert_lines(events: &[ArchivedEvent], expected: &[String]) {
    assert_eq!(events.len(), expected.len());
    let mut last = 0;
    for (i, (event, line)) in events.iter().zip(expected).enumerate() {
        assert_eq!(
            String::from_utf8_lossy(&event.line),
            line.as_str(),
            "event {i}"
        );
        assert!(event.sequence > last, "sequence numbers must increase");
        last = event.sequence;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_killed_for_thirty_seconds_loses_and_repeats_nothing() {
    let mut rig = start("256MiB").await;
    let all = lines("line", 0..100_000, 0);
    let (before, rest) = all.split_at(5_000);
    let (during, after) = rest.split_at(90_000);
    append_lines(&rig.log, before.iter().cloned()).unwrap();
    // Some arrive, then the manager dies mid-stream while more are read.
    let store = rig.manager.store().await.unwrap();
    eventually(Duration::from_secs(60), "the first events", || async {
        Ok((!store.archived_events(Some(&rig.id)).await?.is_empty()).then_some(()))
    })
    .await
    .unwrap();
    store.close().await;
    rig.manager.kill();
    let outage = tokio::time::Instant::now();
    let chunks: Vec<&[String]> = during.chunks(1_500).collect();
    let pause = Duration::from_secs(30) / chunks.len() as u32;
    for chunk in chunks {
        append_lines(&rig.log, chunk.iter().cloned()).unwrap();
        tokio::time::sleep(pause).await;
    }
    tokio::time::sleep_until(outage + Duration::from_secs(30)).await;
    rig.manager.restart().await.unwrap();
    append_lines(&rig.log, after.iter().cloned()).unwrap();

    let events = rig.wait_for(all.len(), Duration::from_secs(120)).await;
    assert_lines(&events, &all);
    // Nothing more arrives later, and nothing was dropped.
    rig.barrier(all.len()).await;
    let store = rig.manager.store().await.unwrap();
    let record = store.agent(&rig.id).await.unwrap().expect("agent record");
    assert_eq!(record.dropped_events, 0);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_stays_in_its_bound_and_reading_waits_instead_of_dropping() {
    const LIMIT: u64 = 1 << 20;
    let mut rig = start("1MiB").await;
    let first = lines("first", 0..100, 60);
    append_lines(&rig.log, first.iter().cloned()).unwrap();
    rig.wait_for(first.len(), Duration::from_secs(60)).await;
    // Acknowledgements are on their way; let them land before the kill,
    // so the accounting below is exact.
    rig.wait_for_acknowledgements().await;
    rig.manager.kill();

    // Watch the spool's size on disk the whole time.
    let peak = Arc::new(AtomicU64::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    let bundle = rig.bundle.clone();
    let watcher = std::thread::spawn({
        let (peak, watching) = (peak.clone(), watching.clone());
        move || {
            let rig_bytes = || -> u64 {
                SPOOL_FILES
                    .iter()
                    .map(|f| {
                        std::fs::metadata(bundle.join(f))
                            .map(|m| m.len())
                            .unwrap_or(0)
                    })
                    .sum()
            };
            while watching.load(Ordering::Relaxed) {
                peak.fetch_max(rig_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    // About 5 MB of lines, five times the bound.
    let outage = lines("outage", 0..40_000, 90);
    for chunk in outage.chunks(2_000) {
        append_lines(&rig.log, chunk.iter().cloned()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Until the agent has read what its spool holds (it then waits at the
    // high-water mark with the rest unread in the file): the spool stops
    // changing.
    eventually(
        Duration::from_secs(60),
        "the agent to fill its spool and wait",
        || async { Ok((rig.spool_idle() > Duration::from_secs(1)).then_some(())) },
    )
    .await
    .unwrap();
    watching.store(false, Ordering::Relaxed);
    watcher.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= LIMIT,
        "the spool took {peak} bytes on disk, over its {LIMIT} bound"
    );
    assert!(
        rig.agent_log().contains("reading paused"),
        "the agent never waited at its high-water mark:\n{}",
        rig.agent_log()
    );

    rig.manager.restart().await.unwrap();
    // Everything arrives, none twice, in order: what waited in the file
    // was read once the acknowledgements made room.
    let expected: Vec<String> = first.iter().chain(&outage).cloned().collect();
    let events = rig.wait_for(expected.len(), Duration::from_secs(120)).await;
    assert_lines(&events, &expected);
    rig.barrier(expected.len()).await;
    let store = rig.manager.store().await.unwrap();
    let record = store.agent(&rig.id).await.unwrap().expect("agent record");
    assert_eq!(record.dropped_events, 0, "the agent dropped events");
    store.close().await;
    rig.agent.kill();
}
