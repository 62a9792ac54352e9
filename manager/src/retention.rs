//! Pruning old alerts and archived events: `[retention]` in manager.toml.
//!
//! ```toml
//! [retention]
//! alerts_max_age = "90d"      # alerts judged longer ago are deleted
//! alerts_max_count = 1000000  # only the newest this many alerts are kept
//! archive_max_age = "30d"     # archived events (logall) received longer ago
//! archive_max_size = "10GiB"  # the oldest archived events beyond this size
//! interval = "10m"            # how often to look
//! ```
//!
//! Every limit is off unless set: nothing is deleted by default. A prune
//! runs in the background in batches of [`BATCH`] rows (archived events go
//! by whole stored batches, up to [`BATCH`] events), each its own short
//! write transaction with a pause after it, so sessions storing events get
//! the write lock between batches and ingestion never waits for a whole
//! prune. What happens to responses and refusals of a pruned alert is
//! described in `store::prune`: responses are kept, their `alert_id`
//! cleared.

use std::path::Path;
use std::time::Duration;

use palisade_common::config::Problems;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::{Pruned, Store, StoreError, now_ms};

/// Alerts, or archived events (whole stored batches; a larger one alone),
/// per prune transaction.
pub const BATCH: u32 = 500;
/// The pause after each batch, in which writers take the lock.
const PAUSE: Duration = Duration::from_millis(20);
/// How often to prune when `interval` is not set.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

/// `[retention]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Alerts older than this are deleted ("90d").
    pub alerts_max_age: Option<String>,
    /// Only the newest this many alerts are kept.
    pub alerts_max_count: Option<u64>,
    /// Archived events older than this are deleted ("30d").
    pub archive_max_age: Option<String>,
    /// The oldest archived events beyond this size are deleted ("10GiB").
    pub archive_max_size: Option<String>,
    /// How often to prune ("10m").
    pub interval: Option<String>,
}

/// The validated `[retention]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Alerts older than this are deleted.
    pub alerts_max_age: Option<Duration>,
    /// Only the newest this many alerts are kept.
    pub alerts_max_count: Option<u64>,
    /// Archived events older than this are deleted.
    pub archive_max_age: Option<Duration>,
    /// The oldest archived events beyond this size (bytes, as
    /// [`Store::archive_bytes`] counts) are deleted.
    pub archive_max_size: Option<u64>,
    /// How often to prune.
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            alerts_max_age: None,
            alerts_max_count: None,
            archive_max_age: None,
            archive_max_size: None,
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl RetentionConfig {
    /// Whether any limit is set.
    pub fn enabled(&self) -> bool {
        self.alerts_max_age.is_some()
            || self.alerts_max_count.is_some()
            || self.archive_max_age.is_some()
            || self.archive_max_size.is_some()
    }
}

/// Checks `[retention]`; problems go to `errors`, each naming its key.
pub fn compile(raw: RawRetention, _base: &Path, errors: &mut Problems) -> RetentionConfig {
    let mut age = |key: &str, v: Option<&str>| -> Option<Duration> {
        let v = v?;
        match palisade_common::units::parse_duration(v) {
            Ok(d) if d.is_zero() => {
                errors.push(format!("retention.{key}"), "must be above zero");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(format!("retention.{key}"), e);
                None
            }
        }
    };
    let alerts_max_age = age("alerts_max_age", raw.alerts_max_age.as_deref());
    let archive_max_age = age("archive_max_age", raw.archive_max_age.as_deref());
    let interval = age("interval", raw.interval.as_deref()).unwrap_or(DEFAULT_INTERVAL);
    let archive_max_size = match raw.archive_max_size.as_deref() {
        None => None,
        Some(v) => match palisade_common::units::parse_size(v) {
            Ok(0) => {
                errors.push("retention.archive_max_size", "must be above zero");
                None
            }
            Ok(n) => Some(n),
            Err(e) => {
                errors.push("retention.archive_max_size", e);
                None
            }
        },
    };
    if raw.alerts_max_count == Some(0) {
        errors.push("retention.alerts_max_count", "must be above zero");
    }
    RetentionConfig {
        alerts_max_age,
        alerts_max_count: raw.alerts_max_count.filter(|n| *n > 0),
        archive_max_age,
        archive_max_size,
        interval,
    }
}

/// What one prune pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Alerts deleted for their age.
    pub alerts_aged: u64,
    /// Alerts deleted beyond the count.
    pub alerts_counted: u64,
    /// Archived events deleted.
    pub archive: u64,
}

/// One pass: every limit, batch after batch until nothing more is due or
/// `shutdown` is cancelled. `now` is epoch ms.
pub async fn prune_once(
    store: &Store,
    config: &RetentionConfig,
    now: i64,
    shutdown: &CancellationToken,
) -> Result<PruneReport, StoreError> {
    let mut report = PruneReport::default();
    let before =
        |age: Duration| now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
    if let Some(age) = config.archive_max_age {
        let cutoff = before(age);
        report.archive = drain(shutdown, || store.prune_archive_older_than(cutoff, BATCH)).await?;
    }
    if let Some(max) = config.archive_max_size {
        report.archive += drain(shutdown, || store.prune_archive_beyond_size(max, BATCH)).await?;
    }
    if let Some(age) = config.alerts_max_age {
        let cutoff = before(age);
        report.alerts_aged =
            drain(shutdown, || store.prune_alerts_older_than(cutoff, BATCH)).await?;
    }
    if let Some(keep) = config.alerts_max_count {
        report.alerts_counted = drain(shutdown, || store.prune_alerts_beyond(keep, BATCH)).await?;
    }
    Ok(report)
}

async fn drain<F, Fut>(shutdown: &CancellationToken, mut batch: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Pruned, StoreError>>,
{
    let mut total = 0;
    loop {
        let pruned = batch().await?;
        total += pruned.rows;
        if !pruned.more || shutdown.is_cancelled() {
            return Ok(total);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(total),
            _ = tokio::time::sleep(PAUSE) => {}
        }
    }
}

/// Prunes every `config.interval` (the first pass at once) until `shutdown`.
pub async fn run(store: Store, config: RetentionConfig, shutdown: CancellationToken) {
    if !config.enabled() {
        return;
    }
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match prune_once(&store, &config, now_ms(), &shutdown).await {
            Ok(r) if r != PruneReport::default() => info!(
                alerts_aged = r.alerts_aged,
                alerts_over_count = r.alerts_counted,
                archived_events = r.archive,
                "Pruned old records."
            ),
            Ok(_) => {}
            Err(error) => warn!(%error, "Pruning failed; trying again next interval."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_engine::alert::Alert;

    use crate::pipeline::analysis::Judged;
    use crate::store::testing::{TestDb, both_backends};
    use crate::store::{AlertFilter, IncomingEvent, NewResponse};

    const DAY: i64 = 86_400_000;

    async fn store(db: &TestDb) -> (Store, String) {
        let store = db.open().await;
        let (id, _) = store
            .add_agent("web01", "any", |_| Ok(("aa".to_string(), ())))
            .await
            .unwrap();
        (store, id)
    }

    /// An alert judged at `time` (ms); the agent is the batch's.
    fn alert(time: i64, _agent: &str) -> Judged {
        let mut alert: Alert = crate::store::fixtures::stored_alert(0, 10).alert;
        alert.time = jiff::Timestamp::from_millisecond(time).unwrap();
        Judged { sequence: 1, alert }
    }

    /// Stores `n` events after `from` (sequence numbers `from+1..=from+n`).
    async fn events(store: &Store, agent: &str, from: u64, n: u64, alerts: &[Judged]) -> Vec<i64> {
        let seqs: Vec<u64> = (from + 1..=from + n).collect();
        let evs: Vec<IncomingEvent<'_>> = seqs
            .iter()
            .map(|s| IncomingEvent {
                sequence: *s,
                location: "/var/log/x",
                log_format: "syslog",
                read_at: 1,
                read_at_clamped: false,
                truncated: false,
                line: b"GET / 404",
            })
            .collect();
        store
            .store_events(agent, &evs, alerts, true)
            .await
            .unwrap()
            .alert_ids
    }

    fn config() -> RetentionConfig {
        RetentionConfig::default()
    }

    #[test]
    fn the_section_is_read_and_checked() {
        let mut errors = Problems::new();
        let c = compile(
            RawRetention {
                alerts_max_age: Some("90d".into()),
                alerts_max_count: Some(1000),
                archive_max_age: Some("36h".into()),
                archive_max_size: None,
                interval: None,
            },
            Path::new("."),
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.alerts_max_age, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(c.archive_max_age, Some(Duration::from_secs(36 * 3600)));
        assert_eq!(c.interval, DEFAULT_INTERVAL);
        assert!(c.enabled());
        let c = compile(
            RawRetention {
                alerts_max_age: Some("ninety days".into()),
                alerts_max_count: Some(0),
                archive_max_age: Some("0s".into()),
                archive_max_size: Some("ten gigs".into()),
                interval: Some("5m".into()),
            },
            Path::new("."),
            &mut errors,
        );
        assert_eq!(
            errors.keys(),
            [
                "retention.alerts_max_age",
                "retention.archive_max_age",
                "retention.archive_max_size",
                "retention.alerts_max_count"
            ],
            "{errors:?}"
        );
        assert_eq!(c.interval, Duration::from_secs(300));
        assert!(!RetentionConfig::default().enabled());
    }

    both_backends! {
        async fn the_archive_is_kept_under_its_size_the_oldest_going_first(db) {
            let (s, agent) = store(&db).await;
            // 30 batches of 100 events of one size: each counts the same.
            for n in 0..30 {
                events(&s, &agent, n * 100, 100, &[]).await;
            }
            let batch = s.archive_bytes().await.unwrap() / 30;
            assert_eq!(s.archive_bytes().await.unwrap(), 30 * batch);
            let max = 10 * batch + batch / 2;
            let c = RetentionConfig {
                archive_max_size: Some(max),
                ..config()
            };
            let report = prune_once(&s, &c, now_ms(), &CancellationToken::new())
                .await
                .unwrap();
            // Down to the bound, by whole batches, BATCH events at a time.
            assert_eq!(report.archive, 2000);
            assert_eq!(s.archive_count().await.unwrap(), 1000);
            assert_eq!(s.archive_bytes().await.unwrap(), 10 * batch);
            let oldest = s.archived_events(None).await.unwrap()[0].sequence;
            assert_eq!(oldest, 2001, "the newest events are the ones kept");
            // Under the bound nothing more goes; the age limit keeps the count right.
            events(&s, &agent, 3000, 100, &[]).await;
            let report = prune_once(&s, &c, now_ms(), &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(report.archive, 100);
            assert_eq!(s.archive_bytes().await.unwrap(), 10 * batch);
            let aged = RetentionConfig {
                archive_max_age: Some(Duration::from_secs(1)),
                ..config()
            };
            prune_once(&s, &aged, now_ms() + 10_000, &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(s.archive_count().await.unwrap(), 0);
            assert_eq!(s.archive_bytes().await.unwrap(), 0);
        }
    }

    both_backends! {
        async fn one_batch_larger_than_a_prune_batch_goes_whole(db) {
            // A batch of three prune batches' events is deleted alone, in
            // one transaction; the count and the size follow it.
            let (s, agent) = store(&db).await;
            events(&s, &agent, 0, 3 * u64::from(BATCH), &[]).await;
            events(&s, &agent, 3 * u64::from(BATCH), 10, &[]).await;
            let pruned = s.prune_archive_older_than(now_ms() + 10_000, BATCH).await.unwrap();
            assert_eq!(pruned, Pruned { rows: 3 * u64::from(BATCH), more: true });
            assert_eq!(s.archive_count().await.unwrap(), 10);
            let pruned = s.prune_archive_beyond_size(0, BATCH).await.unwrap();
            assert_eq!(pruned, Pruned { rows: 10, more: false });
            assert_eq!(s.archive_bytes().await.unwrap(), 0);
        }
    }

    both_backends! {
        async fn alerts_and_events_older_than_the_limits_go(db) {
            let (s, agent) = store(&db).await;
            let now = now_ms();
            // 1200 alerts, one per hour going back 50 days.
            let alerts: Vec<Judged> = (0..1200)
                .map(|h| alert(now - h * 3_600_000, &agent))
                .collect();
            for (n, alerts) in alerts.chunks(100).enumerate() {
                events(&s, &agent, n as u64 * 100, 100, alerts).await;
            }
            // The first 700 archived events were received 40 days ago.
            s.execute_for_test(
                "UPDATE archive SET received_at = received_at - $1 WHERE last_sequence <= 700",
                40 * DAY,
            )
            .await;
            let c = RetentionConfig {
                alerts_max_age: Some(Duration::from_secs(10 * 86_400)),
                archive_max_age: Some(Duration::from_secs(30 * 86_400)),
                ..config()
            };
            let report = prune_once(&s, &c, now, &CancellationToken::new())
                .await
                .unwrap();
            // Hours 0..240 are within ten days; 240 itself is exactly ten days old and stays.
            assert_eq!(report.alerts_aged, 1200 - 241);
            assert_eq!(report.archive, 700);
            assert_eq!(s.alert_count().await.unwrap(), 241);
            let left = s
                .alerts(&AlertFilter {
                    limit: 10_000,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(
                left.iter()
                    .all(|a| a.alert.time.as_millisecond() >= now - 10 * DAY)
            );
            let seqs: Vec<u64> = s
                .archived_events(None)
                .await
                .unwrap()
                .iter()
                .map(|e| e.sequence)
                .collect();
            assert_eq!(seqs, (701..=1200).collect::<Vec<_>>());
            // A second pass finds nothing.
            let again = prune_once(&s, &c, now, &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(again, PruneReport::default());
        }
    }

    both_backends! {
        async fn only_the_newest_alerts_are_kept_by_count(db) {
            let (s, agent) = store(&db).await;
            let now = now_ms();
            let alerts: Vec<Judged> = (0..1234).map(|i| alert(now + i, &agent)).collect();
            let ids = events(&s, &agent, 0, 10, &alerts).await;
            let c = RetentionConfig {
                alerts_max_count: Some(100),
                ..config()
            };
            let report = prune_once(&s, &c, now, &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(report.alerts_counted, 1134);
            let mut left: Vec<i64> = s
                .alerts(&AlertFilter {
                    limit: 10_000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .iter()
                .map(|a| a.id)
                .collect();
            left.sort();
            assert_eq!(left, ids[1134..].to_vec());
            // Nothing is due while at or below the count.
            let again = prune_once(&s, &c, now, &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(again.alerts_counted, 0);
        }
    }

    both_backends! {
        async fn responses_outlive_their_pruned_alerts(db) {
            let (s, agent) = store(&db).await;
            let now = now_ms();
            let ids = events(
                &s,
                &agent,
                0,
                2,
                &[alert(now - 20 * DAY, &agent), alert(now, &agent)],
            )
            .await;
            let respond = |alert_id: i64| NewResponse {
                agent_id: agent.clone(),
                response: "route-null600".into(),
                command: "route-null".into(),
                executable: "route-null".into(),
                action: crate::store::Action::Add,
                srcip: Some("203.0.113.7".into()),
                user: None,
                alert_id: Some(alert_id),
                rule_id: Some(31151),
                location: Some("local".into()),
                timeout_s: Some(600),
                undoes: None,
            };
            let old = s.insert_response(&respond(ids[0])).await.unwrap();
            let new = s.insert_response(&respond(ids[1])).await.unwrap();
            s.insert_refusal(
                "route-null600",
                Some(&agent),
                Some(ids[0]),
                Some(31151),
                Some("10.0.0.1"),
                "white-listed",
            )
            .await
            .unwrap();
            let c = RetentionConfig {
                alerts_max_age: Some(Duration::from_secs(10 * 86_400)),
                ..config()
            };
            let report = prune_once(&s, &c, now, &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(report.alerts_aged, 1);
            let old = s.response(old.id).await.unwrap().unwrap();
            assert_eq!(old.request.alert_id, None);
            assert_eq!(old.request.rule_id, Some(31151));
            assert_eq!(old.request.srcip.as_deref(), Some("203.0.113.7"));
            let new = s.response(new.id).await.unwrap().unwrap();
            assert_eq!(new.request.alert_id, Some(ids[1]));
            // The refusal is recent, so it stays, without its alert.
            assert_eq!(s.refusals(10).await.unwrap().len(), 1);
            // No reference left to a deleted alert (PostgreSQL checks
            // them at every statement; SQLite's check is explicit).
            let dangling = s
                .scalar_for_test(
                    "SELECT COUNT(*) FROM responses WHERE alert_id IS NOT NULL
                       AND alert_id NOT IN (SELECT id FROM alerts)",
                )
                .await;
            assert_eq!(dangling, Some(0));
            let refusal_alert = s
                .scalar_for_test("SELECT alert_id FROM response_refusals")
                .await;
            assert_eq!(refusal_alert, None);
        }
    }

    both_backends! {
        async fn ingestion_goes_on_while_a_big_archive_is_pruned(db) {
            let (s, agent) = store(&db).await;
            const OLD: u64 = 60_000;
            for chunk in 0..OLD / 5000 {
                events(&s, &agent, chunk * 5000, 5000, &[]).await;
            }
            s.execute_for_test("UPDATE archive SET received_at = received_at - $1", 40 * DAY)
                .await;
            let c = RetentionConfig {
                archive_max_age: Some(Duration::from_secs(30 * 86_400)),
                ..config()
            };
            let now = now_ms();
            let prune = {
                let s = s.clone();
                tokio::spawn(async move { prune_once(&s, &c, now, &CancellationToken::new()).await })
            };
            // Store batches until the prune is over; some must land while it runs.
            let mut next = OLD;
            let mut during = 0;
            while !prune.is_finished() {
                let alerts = [alert(now_ms(), &agent)];
                events(&s, &agent, next, 10, &alerts).await;
                next += 10;
                if !prune.is_finished() {
                    during += 1;
                }
            }
            let report = prune.await.unwrap().unwrap();
            assert!(during > 0, "no batch was stored while the prune ran");
            assert_eq!(report.archive, OLD);
            let left = s.archived_events(Some(&agent)).await.unwrap();
            assert_eq!(left.len() as u64, next - OLD);
            assert!(left.iter().all(|e| e.sequence > OLD));
            assert_eq!(s.alert_count().await.unwrap(), (next - OLD) / 10);
        }
    }

    both_backends! {
        async fn a_cancelled_prune_stops_between_batches(db) {
            let (s, agent) = store(&db).await;
            for n in 0..30 {
                events(&s, &agent, n * 50, 50, &[]).await;
            }
            s.execute_for_test("UPDATE archive SET received_at = received_at - $1", 40 * DAY)
                .await;
            let c = RetentionConfig {
                archive_max_age: Some(Duration::from_secs(30 * 86_400)),
                ..config()
            };
            let stop = CancellationToken::new();
            stop.cancel();
            let report = prune_once(&s, &c, now_ms(), &stop).await.unwrap();
            assert_eq!(report.archive, u64::from(BATCH));
        }
    }
}
