//! The Prometheus endpoint: `[metrics]` in manager.toml (off by default).
//!
//! ```toml
//! [metrics]
//! listen = "127.0.0.1:9514"
//! ```
//!
//! A plain-HTTP listener of its own (not the agents' mutual-TLS port),
//! bound by the caller ([`crate::Listeners`]), answers `GET /metrics` in
//! Prometheus' text exposition format 0.0.4, encoded by
//! `prometheus-client` from the running counters at each scrape:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `palisade_events_received_total` | counter | |
//! | `palisade_events_per_second` | gauge (last minute) | |
//! | `palisade_events_decoded_total` | counter | |
//! | `palisade_events_rejected_total` | counter | |
//! | `palisade_engine_panics_total`, `palisade_correlation_resets_total` | counter | |
//! | `palisade_alerts_total` | counter | `level` |
//! | `palisade_responses_issued_total`, `_delivered_total`, `_failed_total` | counter | |
//! | `palisade_agents_connected` | gauge | |
//! | `palisade_agent_spool_depth` | gauge (last heartbeat) | `agent` (id) |
//! | `palisade_mail_queue_depth` | gauge | |
//! | `palisade_mails_sent_total`, `palisade_mails_dropped_total` | counter | |
//! | `process_start_time_seconds` | gauge | |
//!
//! Labels stay few and bounded: a level, an agent id, never an address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use palisade_common::config::Problems;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::pipeline::analysis::Analyzer;
use crate::sessions::Sessions;
use crate::stats::Stats;
use crate::store::Store;

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// address:port to serve /metrics on; off unless set.
    pub listen: Option<String>,
}

/// The validated `[metrics]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where to serve /metrics; `None`: no endpoint.
    pub listen: Option<SocketAddr>,
}

/// Checks `[metrics]`; problems go to `errors`, each naming its key.
pub fn compile(raw: RawMetrics, _base: &Path, errors: &mut Problems) -> MetricsConfig {
    let listen = raw.listen.and_then(|l| match l.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(e) => {
            errors.push(
                "metrics.listen",
                format!("{l:?} is not an address:port ({e})"),
            );
            None
        }
    });
    MetricsConfig { listen }
}

/// What a scrape reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The manager's counters.
    pub stats: Arc<Stats>,
    /// The engine thread (its counters).
    pub analyzer: Analyzer,
    /// Open agent streams.
    pub sessions: Sessions,
    /// The database (agents' last reported spool depths).
    pub store: Store,
}

/// A label set of one label (`level` or `agent`: few and bounded).
type Label = [(&'static str, String); 1];

/// Registers a counter (the name without `_total`, which the encoder
/// adds) holding `value`.
fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// Registers a gauge holding `value`.
fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(value);
    registry.register(name, help, g);
}

/// The metrics now, in a registry of their own (help texts without their
/// final period, which the encoder adds).
pub async fn registry(sources: &Sources) -> Registry {
    let s = &sources.stats;
    let a = sources.analyzer.stats();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut r = Registry::default();
    counter(
        &mut r,
        "palisade_events_received",
        "Events received from agents (resent ones excluded)",
        load(&s.events_received),
    );
    gauge(
        &mut r,
        "palisade_events_per_second",
        "Events received per second over the last minute",
        s.events_per_second(),
    );
    counter(
        &mut r,
        "palisade_events_decoded",
        "Events pre-decoded, decoded and judged by the rules",
        load(&a.events),
    );
    counter(
        &mut r,
        "palisade_events_rejected",
        "Events dropped before decoding for an invalid location",
        load(&a.rejected),
    );
    counter(
        &mut r,
        "palisade_engine_panics",
        "Events skipped because the analysis engine panicked on them",
        load(&a.panics),
    );
    counter(
        &mut r,
        "palisade_correlation_resets",
        "Times the correlation memory was started afresh after an engine panic",
        load(&a.correlation_resets),
    );
    counter(
        &mut r,
        "palisade_responses_issued",
        "Active-response commands decided, by rules or operators",
        load(&s.responses_issued),
    );
    counter(
        &mut r,
        "palisade_responses_delivered",
        "Active-response commands handed to a connected agent",
        load(&s.responses_delivered),
    );
    counter(
        &mut r,
        "palisade_responses_failed",
        "Active-response commands an agent reported as failed",
        load(&s.responses_failed),
    );
    gauge(
        &mut r,
        "palisade_agents_connected",
        "Agents with an open stream",
        sources.sessions.connected_count() as f64,
    );
    gauge(
        &mut r,
        "palisade_mail_queue_depth",
        "Mails waiting to be sent",
        load(&s.mail_queue) as f64,
    );
    counter(
        &mut r,
        "palisade_mails_sent",
        "Mails sent",
        load(&s.mails_sent),
    );
    counter(
        &mut r,
        "palisade_mails_dropped",
        "Mails given up on (queue full, or rejected by the server)",
        load(&s.mails_dropped),
    );
    gauge(
        &mut r,
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds",
        s.started_at as f64 / 1000.0,
    );
    let alerts = Family::<Label, Counter<u64>>::default();
    for (level, c) in s.alerts_by_level.iter().enumerate() {
        alerts
            .get_or_create(&[("level", level.to_string())])
            .inc_by(load(c));
    }
    r.register(
        "palisade_alerts",
        "Alerts stored, by rule level (15 includes higher levels)",
        alerts,
    );
    match sources.store.agents().await {
        Ok(agents) => {
            let spools = Family::<Label, Gauge<f64, AtomicU64>>::default();
            for agent in agents.iter().filter(|a| a.removed_at.is_none()) {
                spools
                    .get_or_create(&[("agent", agent.id.clone())])
                    .set(agent.spool_depth as f64);
            }
            r.register(
                "palisade_agent_spool_depth",
                "Events waiting in an agent's spool, as its last heartbeat reported",
                spools,
            );
        }
        Err(error) => debug!(%error, "Cannot read agents for the spool depths."),
    }
    r
}

/// The exposition text: every family with its HELP and TYPE.
pub async fn render(sources: &Sources) -> String {
    let mut out = String::with_capacity(4096);
    if let Err(error) = prometheus_text::encode(&mut out, &registry(sources).await) {
        // Writing into a String does not fail; say so if it ever does.
        warn!(%error, "Cannot encode the metrics.");
    }
    out
}

/// Serves /metrics on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, sources: Sources, shutdown: CancellationToken) {
    info!(listen = ?listener.local_addr().ok(), "Metrics endpoint started.");
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    warn!(%error, "Metrics endpoint: accept failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let sources = sources.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(answer(&req, &sources).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = &mut conn => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                debug!(%error, "Metrics connection ended with an error.");
            }
        });
    }
}

async fn answer(req: &Request<Incoming>, sources: &Sources) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, render(sources).await),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "Use GET.\n".into()),
        _ => (StatusCode::NOT_FOUND, "Metrics are at /metrics.\n".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let kind = if status == StatusCode::OK {
        prometheus_text::CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_checked() {
        let mut errors = Problems::new();
        let c = compile(
            RawMetrics {
                listen: Some("127.0.0.1:9514".into()),
            },
            Path::new("."),
            &mut errors,
        );
        assert_eq!(c.listen, Some("127.0.0.1:9514".parse().unwrap()));
        assert_eq!(
            compile(RawMetrics::default(), Path::new("."), &mut errors).listen,
            None
        );
        compile(
            RawMetrics {
                listen: Some("localhost".into()),
            },
            Path::new("."),
            &mut errors,
        );
        assert_eq!(errors.keys(), ["metrics.listen"], "{errors:?}");
    }

    #[test]
    fn families_are_written_in_the_text_format() {
        let mut r = Registry::default();
        counter(&mut r, "x", "Things", 2);
        let levels = Family::<Label, Counter<u64>>::default();
        levels.get_or_create(&[("level", "3".into())]).inc_by(4);
        r.register("y", "By level", levels);
        gauge(&mut r, "z", "Now", 0.5);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &r).unwrap();
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 2\n\
             # HELP y_total By level.\n# TYPE y_total counter\ny_total{level=\"3\"} 4\n\
             # HELP z Now.\n# TYPE z gauge\nz 0.5\n"
        );
    }
}
