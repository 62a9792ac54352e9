//! Rotation while the agent runs: by rename-and-create, by copy-and-
//! truncate, and two rotations within one poll interval. Every line
//! written before and after reaches the manager exactly once, in the
//! order it was written (rotated files are finished before the new one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use palisade_tests::{AgentHandle, ManagerHandle, append_lines, eventually};

fn lines(tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("{tag} {i:05} GET /index.html 200"))
        .collect()
}

/// Waits until the manager archived `expected.len()` events of `agent`
/// (failing early on more) and checks them against `expected`, in order.
async fn assert_delivered(
    manager: &ManagerHandle,
    agent: &str,
    location: &Path,
    expected: &[String],
) {
    let store = manager.store().await.unwrap();
    let n = expected.len();
    let waited = eventually(
        Duration::from_secs(60),
        &format!("{n} archived events"),
        || async {
            let events = store.archived_events(Some(agent)).await?;
            Ok((events.len() >= n).then_some(()))
        },
    )
    .await;
    let events = store.archived_events(Some(agent)).await.unwrap();
    let got: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.line).into_owned())
        .collect();
    if got != expected {
        let missing: Vec<&String> = expected.iter().filter(|l| !got.contains(l)).collect();
        let extra = got.len() as i64 - (expected.len() - missing.len()) as i64;
        let mut seen = std::collections::HashSet::new();
        let repeated: Vec<&String> = got.iter().filter(|l| !seen.insert(*l)).collect();
        eprintln!(
            "repeated: first {:?} last {:?}",
            repeated.first(),
            repeated.last()
        );
        let first_difference = got.iter().zip(expected).position(|(g, e)| g != e);
        panic!(
            "{} of {} lines arrived ({waited:?}); {} missing (first: {:?}, last: {:?}); {extra} repeated or unexpected; first difference at {first_difference:?}: {:?}",
            got.len(),
            n,
            missing.len(),
            missing.first(),
            missing.last(),
            first_difference.map(|i| &got[i.saturating_sub(1)..(i + 2).min(got.len())]),
        );
    }
    for e in &events {
        assert_eq!(e.location, location.display().to_string());
    }
    // Nothing more arrives (no resends stored twice).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.archived_events(Some(agent)).await.unwrap().len(), n);
    store.close().await;
}

async fn start(poll: Duration) -> (ManagerHandle, String, AgentHandle, std::path::PathBuf) {
    palisade_tests::LogCapture::install();
    let manager = ManagerHandle::start().await.unwrap();
    let (id, mut config) = manager.add_agent("web01").await.unwrap();
    let log = manager.dir.path().join("logs").join("access.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "").unwrap();
    config.localfiles.push(palisade_agent::config::Localfile {
        location: log.clone(),
        log_format: "apache".into(),
    });
    config.read_from_start = true;
    config.poll_interval = poll;
    config.rotate_wait = Duration::from_millis(200);
    let agent = AgentHandle::start(config);
    // The agent must know the file before it is rotated: a file rotated
    // before the agent first looked is an old rotated file to it.
    append_lines(&log, [MARKER.to_string()]).unwrap();
    let store = manager.store().await.unwrap();
    eventually(Duration::from_secs(30), "the first line", || async {
        Ok((!store.archived_events(Some(&id)).await?.is_empty()).then_some(()))
    })
    .await
    .unwrap();
    store.close().await;
    (manager, id, agent, log)
}

/// The line written before anything else.
const MARKER: &str = "the agent follows this file";

fn rotated(log: &Path, n: usize) -> std::path::PathBuf {
    log.with_file_name(format!("access.log.{n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_and_create() {
    let (manager, id, mut agent, log) = start(Duration::from_millis(20)).await;
    let mut expected = vec![MARKER.to_string()];
    for (round, tag) in ["first", "second", "third"].iter().enumerate() {
        let batch = lines(tag, 0..3000);
        for chunk in batch.chunks(500) {
            append_lines(&log, chunk.iter().cloned()).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        expected.extend(batch);
        // logrotate: shift, rename; the writer goes on in the old file
        // until it reopens, then writes to a new one.
        if round < 2 {
            if rotated(&log, 1).exists() {
                std::fs::rename(rotated(&log, 1), rotated(&log, 2)).unwrap();
            }
            std::fs::rename(&log, rotated(&log, 1)).unwrap();
            let late = lines(&format!("{tag}-late"), 0..200);
            append_lines(&rotated(&log, 1), late.iter().cloned()).unwrap();
            expected.extend(late);
            std::fs::write(&log, "").unwrap();
        }
    }
    assert_delivered(&manager, &id, &log, &expected).await;
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_truncate() {
    let (manager, id, mut agent, log) = start(Duration::from_millis(20)).await;
    let mut expected = vec![MARKER.to_string()];
    for (round, tag) in ["first", "second", "third"].iter().enumerate() {
        let batch = lines(tag, 0..3000);
        for chunk in batch.chunks(500) {
            append_lines(&log, chunk.iter().cloned()).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        expected.extend(batch);
        if round < 2 {
            // logrotate's copytruncate: lines written between the copy and
            // the truncation are lost by design (as with logrotate); none
            // are written here.
            if rotated(&log, 1).exists() {
                std::fs::rename(rotated(&log, 1), rotated(&log, 2)).unwrap();
            }
            std::fs::copy(&log, rotated(&log, 1)).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&log)
                .unwrap()
                .set_len(0)
                .unwrap();
        }
    }
    assert_delivered(&manager, &id, &log, &expected).await;
    agent.stop().await.unwrap();
}

/// Both rotations happen between two polls: the agent never sees the
/// middle file at the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_within_one_poll_interval() {
    let (manager, id, mut agent, log) = start(Duration::from_secs(3)).await;
    let before = lines("before", 0..1000);
    append_lines(&log, before.iter().cloned()).unwrap();
    let mut expected: Vec<String> = std::iter::once(MARKER.to_string()).chain(before).collect();
    // Let one poll read them, so the rotations below fall in one interval.
    let store = manager.store().await.unwrap();
    eventually(Duration::from_secs(30), "the first lines", || async {
        Ok((store.archived_events(Some(&id)).await?.len() == 1001).then_some(()))
    })
    .await
    .unwrap();
    store.close().await;

    // Rename rotation twice.
    let a = lines("a", 0..500);
    append_lines(&log, a.iter().cloned()).unwrap();
    std::fs::rename(&log, rotated(&log, 1)).unwrap();
    let b = lines("b", 0..500);
    append_lines(&log, b.iter().cloned()).unwrap();
    std::fs::rename(rotated(&log, 1), rotated(&log, 2)).unwrap();
    std::fs::rename(&log, rotated(&log, 1)).unwrap();
    let c = lines("c", 0..500);
    append_lines(&log, c.iter().cloned()).unwrap();
    expected.extend(a.into_iter().chain(b).chain(c));
    assert_delivered(&manager, &id, &log, &expected).await;

    // Copy-and-truncate twice.
    let d = lines("d", 0..500);
    append_lines(&log, d.iter().cloned()).unwrap();
    let truncate = |p: &Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(0)
            .unwrap()
    };
    std::fs::rename(rotated(&log, 2), rotated(&log, 3)).unwrap();
    std::fs::rename(rotated(&log, 1), rotated(&log, 2)).unwrap();
    std::fs::copy(&log, rotated(&log, 1)).unwrap();
    truncate(&log);
    let e = lines("e", 0..500);
    append_lines(&log, e.iter().cloned()).unwrap();
    std::fs::rename(rotated(&log, 3), rotated(&log, 4)).unwrap();
    std::fs::rename(rotated(&log, 2), rotated(&log, 3)).unwrap();
    std::fs::rename(rotated(&log, 1), rotated(&log, 2)).unwrap();
    std::fs::copy(&log, rotated(&log, 1)).unwrap();
    truncate(&log);
    let f = lines("f", 0..500);
    append_lines(&log, f.iter().cloned()).unwrap();
    expected.extend(d.into_iter().chain(e).chain(f));
    assert_delivered(&manager, &id, &log, &expected).await;
    agent.stop().await.unwrap();
}
