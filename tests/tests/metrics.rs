//! The Prometheus endpoint of the real manager: what it serves parses as
//! the text exposition format, and the counters move as a scan flows from
//! an agent (events received and decoded, alerts by level, the agent
//! connected, its spool depth, the response issued and delivered).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use palisade_manager::ManagerConfig;
use palisade_tests::{AgentHandle, ManagerHandle, append_lines, eventually, scan_lines};
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path` over plain HTTP/1.1; the status line and the body.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    Ok((status, body.to_string()))
}

/// Scrapes /metrics: (metric, labels as "k=v,...") -> value.
async fn scrape(addr: SocketAddr) -> anyhow::Result<HashMap<(String, String), f64>> {
    let (status, body) = get(addr, "/metrics").await?;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_string())))?;
    let mut out = HashMap::new();
    for s in parsed.samples {
        let value = match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            other => panic!("unexpected {other:?} for {}", s.metric),
        };
        // Bounded labels only: never an address.
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for (k, _) in s.labels.iter() {
            assert!(k == "level" || k == "agent", "label {k} on {}", s.metric);
        }
        labels.sort();
        out.insert((s.metric, labels.join(",")), value);
    }
    // Every family is typed (counters as counters).
    assert!(parsed.docs.contains_key("palisade_events_received_total"));
    Ok(out)
}

fn value(m: &HashMap<(String, String), f64>, metric: &str, labels: &str) -> f64 {
    *m.get(&(metric.to_string(), labels.to_string()))
        .unwrap_or_else(|| panic!("no {metric}{{{labels}}} in {m:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_as_events_flow() -> anyhow::Result<()> {
    let mut manager = ManagerHandle::start_with_metrics().await?;
    let written = ManagerConfig::load(&manager.dir.path().join("manager.toml"))?;
    assert_eq!(written.metrics.listen, None, "off by default");
    // Bound before the manager started: it answers at once.
    let addr = manager.metrics_addr.expect("a metrics listener");
    let before = scrape(addr).await?;
    assert_eq!(value(&before, "palisade_events_received_total", ""), 0.0);
    assert_eq!(value(&before, "palisade_alerts_total", "level=10"), 0.0);
    assert_eq!(value(&before, "palisade_agents_connected", ""), 0.0);
    assert_eq!(value(&before, "palisade_responses_issued_total", ""), 0.0);
    assert_eq!(value(&before, "palisade_mail_queue_depth", ""), 0.0);
    let started = value(&before, "process_start_time_seconds", "");
    let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
    assert!(started <= now && started > now - 600.0, "{started}");
    let (status, _) = get(addr, "/other").await?;
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    let (id, config, log) = manager.add_access_log_agent("web01").await?;
    let mut agent = AgentHandle::start(config);
    let lines = scan_lines("198.51.100.23");
    append_lines(&log, lines.iter().cloned())?;
    let n = lines.len() as f64;
    let after = eventually(Duration::from_secs(30), "counters to move", || async {
        let m = scrape(addr).await?;
        let moved = value(&m, "palisade_events_received_total", "") >= n
            && value(&m, "palisade_events_decoded_total", "") >= n
            && value(&m, "palisade_alerts_total", "level=10") >= 1.0
            && value(&m, "palisade_responses_issued_total", "") >= 1.0
            && value(&m, "palisade_responses_delivered_total", "") >= 1.0
            && m.contains_key(&(
                "palisade_agent_spool_depth".to_string(),
                format!("agent={id}"),
            ));
        Ok(moved.then_some(m))
    })
    .await?;
    assert_eq!(value(&after, "palisade_agents_connected", ""), 1.0);
    assert!(value(&after, "palisade_events_per_second", "") >= 0.0);
    assert_eq!(value(&after, "process_start_time_seconds", ""), started);
    agent.stop().await?;
    manager.stop().await?;
    // The endpoint stops with the manager.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    Ok(())
}
