//! The takeover race on one manager: an agent's new stream replaces one
//! whose batches are still being judged and committed. The new stream's
//! Welcome must come only once the old stream's batches in flight are
//! committed (or dropped): the sequence it announces is then final, the
//! agent resends only what was not stored, and nothing is stored, or
//! judged, twice. Before the fix the old stream went on committing after
//! the Welcome, past the sequence it announced; with the lease's fence
//! alone its late batches would be refused after being judged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use palisade_tests::raw_agent::{Credentials, RawAgent, batch, event};
use palisade_tests::{LogCapture, ManagerHandle};

fn line(n: u64) -> String {
    format!(
        "198.51.100.7 - - [28/Nov/2026:10:00:01 +0000] \"GET /page{n} HTTP/1.1\" 200 512 \"-\" \"curl\""
    )
}

const BATCHES: u64 = 8;
const PER_BATCH: u64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stream_is_welcomed_only_after_the_old_one_committed_its_batches() {
    let logs = LogCapture::install();
    // Every live stream may be taken over at once.
    let manager = ManagerHandle::start_with(|c| c.agent_timeout = Duration::ZERO)
        .await
        .unwrap();
    let (id, config) = manager.add_agent("web01").await.unwrap();
    let creds = Credentials::of(&config);
    let store = manager.store().await.unwrap();

    let (mut old, welcome) = RawAgent::hello(&creds, "spool-1").await.unwrap();
    assert_eq!(welcome.last_sequence, 0);
    // Batches sent without waiting: a few are in flight (decoded, judged,
    // committing), the rest wait unread.
    for b in 0..BATCHES {
        let events = (1..=PER_BATCH)
            .map(|i| {
                let n = b * PER_BATCH + i;
                event(n, line(n))
            })
            .collect();
        old.send(batch(events, 0)).await.unwrap();
    }
    let (mut new, welcome) = RawAgent::hello(&creds, "spool-1").await.unwrap();
    // Whatever the old stream had in flight is committed by now, and it
    // commits nothing more: the Welcome's sequence is the stored one.
    let stored = store.agent(&id).await.unwrap().unwrap().last_sequence;
    assert_eq!(
        stored, welcome.last_sequence,
        "the old stream stored past the Welcome"
    );
    // The old stream's batches in flight were committed and acknowledged
    // (not refused by the lease's fence, which would have judged them for
    // nothing), then it was ended as replaced.
    let ended = loop {
        match old.next().await {
            Ok(palisade_proto::v1::manager_message::Kind::Ack(ack)) => {
                assert!(ack.sequence <= welcome.last_sequence, "{ack:?}");
            }
            Ok(other) => panic!("the old stream got {other:?}"),
            Err(e) => break palisade_tests::raw_agent::refusal(e).unwrap(),
        }
    };
    assert!(
        ended.message().contains("replaced by a newer stream"),
        "{ended:?}"
    );
    // The agent sends the rest on the new stream, from there.
    let total = BATCHES * PER_BATCH;
    let mut next = welcome.last_sequence + 1;
    while next <= total {
        let last = (next + PER_BATCH - 1).min(total);
        let events = (next..=last).map(|n| event(n, line(n))).collect();
        assert_eq!(new.send_batch(events, 0).await.unwrap(), last);
        next = last + 1;
    }
    let archived: Vec<u64> = store
        .archived_events(Some(&id))
        .await
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(archived, (1..=total).collect::<Vec<_>>(), "each event once");
    assert_eq!(
        store.agent(&id).await.unwrap().unwrap().last_sequence,
        total
    );
    // No batch of the old stream was judged and then refused.
    let text = logs.text();
    assert!(!text.contains("was taken over (lease generation"), "{text}");
    store.close().await;
}
