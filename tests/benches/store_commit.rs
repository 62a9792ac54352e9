//! The manager's batch commit alone ([`Store::store_events`] on SQLite):
//! what one transaction of a busy agent costs, with `logall` off (the
//! alerts and the agent's sequence) and on (every event archived too).
//! A quick loop for the store's part of the end-to-end figure
//! (`e2e_throughput`), which needs two release daemons.
//!
//! The lines are a generated Apache access log
//! (`shared/tools/gen_access_log.py`, the e2e bench's) judged once, before
//! measuring, by the manager's own analysis thread with the ruleset `init`
//! writes, so each group carries the alerts the real rules raise on it.
//! Each iteration commits one group of [`GROUP`] events (four of the
//! agent's default batches, as the committer groups them) under new
//! sequence numbers.
//!
//! Run: `cargo bench -p palisade-tests --bench store_commit`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_manager::ManagerConfig;
use palisade_manager::pipeline::analysis::{Analyzer, Input, Judged, Origin};
use palisade_manager::ruleset::{self, Judging};
use palisade_manager::setup::{self, InitOptions};
use palisade_manager::store::{IncomingEvent, Store};

/// Events per commit: four batches of the agent's default 500.
const GROUP: usize = 2_000;
/// Lines generated and judged (the groups repeat under new sequences).
const LINES: usize = 20_000;
const LOCATION: &str = "/var/log/apache2/access.log";

/// One group: its lines and the alerts the engine raised on them, with
/// sequences counted from 1 within the group.
struct Group {
    lines: Vec<Vec<u8>>,
    alerts: Vec<Judged>,
}

fn generate(dir: &Path) -> Vec<Vec<u8>> {
    let out = dir.join("access.log");
    let status = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/gen_access_log.py"))
        .args(["-n", &LINES.to_string(), "--seed", "42", "-o"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "gen_access_log.py failed");
    std::fs::read(&out)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

async fn judged_groups(config: &ManagerConfig, lines: Vec<Vec<u8>>) -> Vec<Group> {
    let analyzer = Analyzer::start(
        std::sync::Arc::new(ruleset::load(&config.ruleset).unwrap()),
        Judging::of(config).engine_config(),
        Judging::of(config).time_source,
        "bench-manager".into(),
    )
    .unwrap();
    let origin = Origin {
        agent_id: Some("001".into()),
        name: "bench".into(),
        ip: "any".into(),
    };
    let mut groups = Vec::new();
    for chunk in lines.chunks(GROUP) {
        let inputs = chunk
            .iter()
            .zip(1..)
            .map(|(line, sequence)| Input {
                sequence,
                path: LOCATION.into(),
                line: line.clone(),
            })
            .collect();
        let alerts = analyzer.analyze(origin.clone(), inputs).await.unwrap();
        groups.push(Group {
            lines: chunk.to_vec(),
            alerts,
        });
    }
    groups
}

/// Commits `group` as the events after `after`; returns the last sequence.
async fn commit(store: &Store, agent: &str, group: &Group, after: u64, archive: bool) -> u64 {
    let read_at = palisade_manager::store::now_ms();
    let events: Vec<IncomingEvent<'_>> = group
        .lines
        .iter()
        .zip(after + 1..)
        .map(|(line, sequence)| IncomingEvent {
            sequence,
            location: LOCATION,
            log_format: "apache",
            read_at,
            read_at_clamped: false,
            truncated: false,
            line,
        })
        .collect();
    let alerts: Vec<Judged> = group
        .alerts
        .iter()
        .map(|j| Judged {
            sequence: after + j.sequence,
            alert: j.alert.clone(),
        })
        .collect();
    let stored = store
        .store_events(agent, &events, &alerts, archive)
        .await
        .unwrap();
    assert_eq!(stored.alert_ids.len(), alerts.len());
    stored.highest
}

fn store_commit(c: &mut Criterion) {
    palisade_common::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, agent) = rt.block_on(async {
        let report = setup::init(&InitOptions {
            dir: dir.path().to_path_buf(),
            sans: vec![],
            listen: "127.0.0.1:1515".parse().unwrap(),
            advertise: None,
            force: false,
        })
        .await
        .unwrap();
        let config = ManagerConfig::load(&report.config).unwrap();
        let bundle = setup::add_agent(&config, "bench", None, None)
            .await
            .unwrap();
        (config, bundle.id)
    });
    let groups = rt.block_on(judged_groups(&config, generate(dir.path())));
    let alerts: usize = groups.iter().map(|g| g.alerts.len()).sum();
    println!(
        "{LINES} lines in groups of {GROUP}: {alerts} alerts ({:.1} per group)",
        alerts as f64 / groups.len() as f64
    );
    let store = rt.block_on(Store::open(&config.database)).unwrap();
    let mut stored = rt
        .block_on(store.agent(&agent))
        .unwrap()
        .unwrap()
        .last_sequence;

    let mut group = c.benchmark_group("store_commit");
    group.throughput(Throughput::Elements(GROUP as u64));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    for (name, archive) in [("logall_off", false), ("logall_on", true)] {
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    let g = &groups[next % groups.len()];
                    next += 1;
                    stored = rt.block_on(commit(&store, &agent, g, stored, archive));
                }
                started.elapsed()
            })
        });
    }
    group.finish();
    rt.block_on(store.close());
}

criterion_group!(benches, store_commit);
criterion_main!(benches);
