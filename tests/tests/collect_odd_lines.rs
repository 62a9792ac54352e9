//! Lines an attacker can write into a log: one far over the length limit,
//! one of NUL bytes, one that is not UTF-8. Each is delivered (the long
//! one cut at the limit and flagged, the others byte for byte) and none
//! holds up the lines after it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Duration;

use palisade_tests::{AgentHandle, ManagerHandle, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_nul_and_invalid_utf8_lines_pass_and_do_not_stall() {
    let manager = ManagerHandle::start().await.unwrap();
    let (id, mut config) = manager.add_agent("web01").await.unwrap();
    let log = manager.dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    config.localfiles.push(palisade_agent::config::Localfile {
        location: log.clone(),
        log_format: "syslog".into(),
    });
    config.read_from_start = true;
    let limit = config.max_line_length;
    assert_eq!(limit, 64 * 1024, "the default limit");
    let mut agent = AgentHandle::start(config);

    // (line as written, as expected, flagged)
    let mut cases: Vec<(Vec<u8>, Vec<u8>, bool)> =
        vec![(b"before".to_vec(), b"before".to_vec(), false)];
    let huge: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    cases.push((huge.clone(), huge[..limit].to_vec(), true));
    cases.push((vec![0u8; 4096], vec![0u8; 4096], false));
    let invalid = b"\xff\xfe invalid \xc3\x28 utf-8 \xed\xa0\x80 end".to_vec();
    cases.push((invalid.clone(), invalid, false));
    // A huge line of NUL bytes too: cut, flagged, not stalling.
    cases.push((vec![0u8; 200_000], vec![0u8; limit], true));
    for i in 0..100 {
        let line = format!("after {i:03}").into_bytes();
        cases.push((line.clone(), line, false));
    }
    // Written in pieces, as a slow writer would: the huge line spans
    // several polls before its end arrives.
    let mut text = Vec::new();
    for (line, _, _) in &cases {
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for piece in text.chunks(150_000) {
        file.write_all(piece).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    let store = manager.store().await.unwrap();
    let n = cases.len();
    let events = eventually(Duration::from_secs(60), &format!("{n} events"), || async {
        let events = store.archived_events(Some(&id)).await?;
        anyhow::ensure!(events.len() <= n, "{} events for {n} lines", events.len());
        Ok((events.len() == n).then_some(events))
    })
    .await
    .unwrap();
    for (i, (event, (_, line, truncated))) in events.iter().zip(&cases).enumerate() {
        assert_eq!(event.line.len(), line.len(), "event {i}: length");
        assert!(event.line == *line, "event {i}: other bytes");
        assert_eq!(event.truncated, *truncated, "event {i}: flag");
    }
    store.close().await;
    agent.stop().await.unwrap();
}
