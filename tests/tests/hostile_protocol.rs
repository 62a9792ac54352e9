//! A compromised agent against the manager's protocol checks, with a real
//! enrolled certificate and the real manager: events before Hello, a
//! poisoned or jumping sequence number, a loss that is too large, forged
//! Hello fields, a time far off, and a reinstalled agent whose spool
//! starts again at 1. Every refusal reaches the agent with its reason and
//! the manager's log at WARN, and the agent's later events are stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use palisade_proto::v1::Hello;
use palisade_proto::v1::agent_message::Kind as AgentKind;
use palisade_proto::v1::{AgentMessage, Event};
use palisade_tests::raw_agent::{Credentials, RawAgent, batch, event, refusal};
use palisade_tests::{AgentHandle, LogCapture, ManagerHandle, append_lines, db_number, eventually};
use tonic::Code;

/// The sequence numbers stored for `agent`, in order.
async fn stored(manager: &ManagerHandle, agent: &str) -> Vec<u64> {
    let store = manager.store().await.unwrap();
    let events = store.archived_events(Some(agent)).await.unwrap();
    store.close().await;
    events.iter().map(|e| e.sequence).collect()
}

fn line(n: u64) -> String {
    format!(
        "198.51.100.7 - - [28/Nov/2026:10:00:01 +0000] \"GET /page{n} HTTP/1.1\" 200 512 \"-\" \"curl\""
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_before_hello_are_refused_and_nothing_of_them_is_stored() {
    let logs = LogCapture::install();
    let manager = ManagerHandle::start().await.unwrap();
    let (id, config) = manager.add_agent("early").await.unwrap();
    let creds = Credentials::of(&config);

    let mut raw = RawAgent::connect(&creds, batch(vec![event(1, line(1))], 0))
        .await
        .unwrap();
    let status = refusal(raw.next().await.unwrap_err()).unwrap();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("must be Hello, not an event batch"),
        "{status:?}"
    );
    logs.wait_for(&["WARN", "Refused agent stream", &id, "must be Hello"])
        .await
        .unwrap();
    assert!(stored(&manager, &id).await.is_empty());

    // Saying Hello first, the same agent is served from sequence 1.
    let (mut raw, welcome) = RawAgent::hello(&creds, "spool-early").await.unwrap();
    assert_eq!(welcome.last_sequence, 0);
    assert_eq!(welcome.max_batch_bytes, 4 << 20, "the default is announced");
    assert_eq!(raw.send_batch(vec![event(1, line(1))], 0).await.unwrap(), 1);
    // A second Hello on an open stream is refused too.
    raw.send(palisade_tests::raw_agent::hello("spool-early"))
        .await
        .unwrap();
    let status = refusal(raw.next().await.unwrap_err()).unwrap();
    assert!(
        status.message().contains("Hello was already said"),
        "{status:?}"
    );
    assert_eq!(stored(&manager, &id).await, [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_sequence_is_refused_and_the_agents_later_events_are_stored() {
    let logs = LogCapture::install();
    let manager = ManagerHandle::start().await.unwrap();
    let (id, config) = manager.add_agent("poison").await.unwrap();
    let creds = Credentials::of(&config);
    let spool = "spool-poison";

    let (mut raw, _) = RawAgent::hello(&creds, spool).await.unwrap();
    assert_eq!(
        raw.send_batch(vec![event(1, line(1)), event(2, line(2))], 0)
            .await
            .unwrap(),
        2
    );

    // u64::MAX: once saturated into the store, it made every later event
    // "already stored".
    let status = raw
        .refused_batch(vec![event(u64::MAX, line(0))], 0)
        .await
        .unwrap();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("outside 1..="), "{status:?}");
    logs.wait_for(&["WARN", "Agent stream failed", &id, "outside 1..="])
        .await
        .unwrap();

    // A jump, and a claimed loss beyond any spool.
    let (mut raw, welcome) = RawAgent::hello(&creds, spool).await.unwrap();
    assert_eq!(welcome.last_sequence, 2, "the poison was not stored");
    let status = raw
        .refused_batch(vec![event(1000, line(1000))], 0)
        .await
        .unwrap();
    assert!(
        status.message().contains("expected 3): a gap or a jump"),
        "{status:?}"
    );
    let (mut raw, _) = RawAgent::hello(&creds, spool).await.unwrap();
    let status = raw
        .refused_batch(vec![event(3, line(3))], u64::MAX - 2)
        .await
        .unwrap();
    assert!(status.message().contains("above the limit"), "{status:?}");
    let (mut raw, _) = RawAgent::hello(&creds, spool).await.unwrap();
    let status = raw
        .refused_batch(vec![event(3, line(3)), event(5, line(5))], 0)
        .await
        .unwrap();
    assert!(status.message().contains("consecutive"), "{status:?}");

    // The agent's later events: after a loss it declares (its spool was
    // full), and one with a time decades off.
    let (mut raw, welcome) = RawAgent::hello(&creds, spool).await.unwrap();
    assert_eq!(welcome.last_sequence, 2);
    assert_eq!(
        raw.send_batch(vec![event(6, line(6)), event(7, line(7))], 3)
            .await
            .unwrap(),
        7
    );
    logs.wait_for(&["WARN", "lost events before sending them", "lost=3"])
        .await
        .unwrap();
    let ancient = Event {
        read_at: Some(palisade_common::time::proto_from_millis(0)),
        ..event(8, line(8))
    };
    assert_eq!(raw.send_batch(vec![ancient], 0).await.unwrap(), 8);
    assert_eq!(stored(&manager, &id).await, [1, 2, 6, 7, 8]);
    let db = manager
        .config
        .database
        .sqlite_path()
        .expect("an SQLite store");
    let store = manager.store().await.unwrap();
    let archived = store.archived_events(Some(&id)).await.unwrap();
    store.close().await;
    let eighth = archived.iter().find(|e| e.sequence == 8).unwrap();
    assert!(eighth.read_at_clamped);
    let read_at = eighth.read_at;
    assert!(read_at > 1_700_000_000_000, "the arrival time, not 1970");
    assert_eq!(
        db_number(db, "SELECT last_sequence FROM agents WHERE id = $1", &id)
            .await
            .unwrap(),
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_hello_fields_are_refused_with_the_reason() {
    let logs = LogCapture::install();
    let manager = ManagerHandle::start().await.unwrap();
    let (id, config) = manager.add_agent("forger").await.unwrap();
    let creds = Credentials::of(&config);
    for (field, forged) in [
        (
            "host name",
            Hello {
                hostname: "web01\n002  evil  10.0.0.9  Active".into(),
                ..Hello::default()
            },
        ),
        (
            "agent version",
            Hello {
                agent_version: "\u{1b}]0;owned\u{7}1.0".into(),
                ..Hello::default()
            },
        ),
        (
            "OS",
            Hello {
                os: "x".repeat(10_000),
                ..Hello::default()
            },
        ),
    ] {
        let message = AgentMessage {
            kind: Some(AgentKind::Hello(forged)),
        };
        let mut raw = RawAgent::connect(&creds, message).await.unwrap();
        let status = refusal(raw.next().await.unwrap_err()).unwrap();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(field), "{status:?}");
        logs.wait_for(&["WARN", "Refused agent stream", &id, field])
            .await
            .unwrap();
    }
    let store = manager.store().await.unwrap();
    let record = store.agent(&id).await.unwrap().unwrap();
    assert_eq!(record.hostname, None, "nothing of a refused Hello is kept");
    assert_eq!(record.version, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinstalled_agent_starting_again_at_1_is_stored() {
    let logs = LogCapture::install();
    let manager = ManagerHandle::start().await.unwrap();
    let (id, mut config, log) = manager.add_access_log_agent("reinstalled").await.unwrap();

    // The agent's first life: five events from its old spool.
    let (mut raw, _) = RawAgent::hello(&Credentials::of(&config), "old-spool")
        .await
        .unwrap();
    let events = (1..=5).map(|n| event(n, line(n))).collect();
    assert_eq!(raw.send_batch(events, 0).await.unwrap(), 5);
    drop(raw);

    // Reinstalled: a new spool, whose sequence numbers start at 1.
    append_lines(&log, (100..103).map(line)).unwrap();
    config.spool_database = manager.dir.path().join("reinstalled-agent.db");
    let _agent = AgentHandle::start(config);
    let lines = eventually(
        Duration::from_secs(60),
        "the new spool's events",
        || async {
            let store = manager.store().await?;
            let events = store.archived_events(Some(&id)).await?;
            store.close().await;
            Ok((events.len() == 8).then_some(events))
        },
    )
    .await
    .unwrap();
    let new: Vec<(u64, String)> = lines[5..]
        .iter()
        .map(|e| (e.sequence, String::from_utf8_lossy(&e.line).into_owned()))
        .collect();
    assert_eq!(new, [(1, line(100)), (2, line(101)), (3, line(102))]);
    logs.wait_for(&["WARN", &id, "spool is new", "stored_until=5"])
        .await
        .unwrap();
}
