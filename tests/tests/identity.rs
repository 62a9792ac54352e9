//! Identities have a life cycle (#15): an agent renews its certificate
//! over its stream two thirds into its lifetime (clocks moved, not slept);
//! operators are registered and a removed one is cut off, also on an open
//! `palisadectl alerts --follow`; `agent add --ip` is enforced at connect;
//! a second stream for a live agent is refused, and takes over once the
//! first has been silent past the agent timeout.
//!
//! Real manager and agents (their `run()`), real certificates from a real
//! `init`, `palisadectl` and `palisade-manager` as programs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ctl_common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ctl_common::{ctl, eventually, start_with, stderr, stdout};
use palisade_agent::AgentConfig;
use palisade_common::clock::{Clock, ManualClock};
use palisade_manager::identities;
use palisade_manager::setup;
use palisade_proto::v1::agent_message::Kind as AgentKind;
use palisade_proto::v1::agent_service_client::AgentServiceClient;
use palisade_proto::v1::manager_message::Kind as ManagerKind;
use palisade_proto::v1::{AgentMessage, Hello, ManagerMessage};
use palisade_tests::{AgentHandle, LogCapture};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const MANAGER: &str = env!("CARGO_BIN_EXE_e2e-manager");
const DAY_MS: i64 = 86_400_000;

/// An agent registered with `agent add` (`--ip` when given), configured
/// from its bundle to reach the test manager; not started.
async fn add_agent(m: &ctl_common::Running, name: &str, ip: Option<&str>) -> (String, AgentConfig) {
    let bundle = setup::add_agent(&m.config, name, ip, None).await.unwrap();
    let mut config = AgentConfig::load(&bundle.config).unwrap();
    config.manager_addresses = vec![m.config.advertise.clone()];
    config.localfiles.clear();
    config.poll_interval = Duration::from_millis(20);
    config.heartbeat_interval = Duration::from_millis(300);
    config.respond.dry_run = true;
    config.respond.ar_log_path = bundle.dir.join("active-responses.log");
    (bundle.id, config)
}

/// A stream opened by hand with an agent's certificate files, as a second
/// copy of the agent (or a thief) would: Hello sent, Welcome read.
struct RawStream {
    _tx: mpsc::Sender<AgentMessage>,
    inbound: Streaming<ManagerMessage>,
}

async fn open_raw(
    config: &AgentConfig,
    cert: &Path,
    key: &Path,
) -> Result<RawStream, tonic::Status> {
    let tls = palisade_common::tls::ClientIdentity {
        ca_cert: &config.ca_cert,
        cert,
        key,
        server_name: &config.server_name,
    }
    .tls_config()
    .unwrap();
    let channel = palisade_common::tls::endpoint(&config.manager_addresses[0], tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(palisade_common::tls::error_chain(&e)))?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(AgentMessage {
        kind: Some(AgentKind::Hello(Hello {
            protocol_version: palisade_proto::PROTOCOL_VERSION,
            agent_version: "raw".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut inbound = AgentServiceClient::new(channel)
        .session(ReceiverStream::new(rx))
        .await?
        .into_inner();
    match inbound.message().await?.and_then(|m| m.kind) {
        Some(ManagerKind::Welcome(_)) => Ok(RawStream { _tx: tx, inbound }),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

async fn agent_status(m: &ctl_common::Running, id: &str) -> serde_json::Value {
    let out = ctl(&m.ctl, &["agent", id, "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

async fn wait_active(m: &ctl_common::Running, id: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("agent {id} active"),
        || async { (agent_status(m, id).await["status"] == "Active").then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_renewed_two_thirds_into_its_lifetime() {
    let logs = LogCapture::install();
    // Both clocks start 600 days ago: the agent's certificate is issued
    // then, and is still valid now (825 days), so the real TLS stack that
    // checks it with the real time accepts it.
    let start = palisade_common::clock::SystemClock.now_ms() - 600 * DAY_MS;
    let manager_clock = ManualClock::new(start);
    let agent_clock = ManualClock::new(start);
    let m = start_with({
        let clock = manager_clock.clone();
        move |c| c.clock = Arc::new(clock)
    })
    .await;
    let (id, mut config) = add_agent(&m, "renewing", None).await;
    config.clock = Arc::new(agent_clock.clone());
    let old_cert = std::fs::read_to_string(&config.cert).unwrap();
    let old_key = std::fs::read_to_string(&config.key).unwrap();
    let store = palisade_manager::store::Store::open(&m.config.database)
        .await
        .unwrap();
    let old_serial = store.agent(&id).await.unwrap().unwrap().cert_serial;
    let _agent = AgentHandle::start(config.clone());
    wait_active(&m, &id).await;
    // Day 0 of 825: due on day 550, so nothing is asked for yet.
    let connected = logs
        .wait_for(&["Connected to the manager", "name=renewing"])
        .await
        .unwrap();
    // (825 days and the hour of slack before `now` the CA gives.)
    let due = palisade_agent::renew::Current::read(&config.cert)
        .unwrap()
        .due;
    assert!(
        (start + 550 * DAY_MS - 3_600_000..start + 551 * DAY_MS).contains(&due),
        "{due}"
    );
    let due = palisade_common::time::show_millis(due);
    assert!(
        connected.contains(&format!("renew_at={due}")),
        "{connected}"
    );
    assert_eq!(
        store.agent(&id).await.unwrap().unwrap().pending_serial,
        None
    );

    // 600 days on (both sides): the agent asks, the manager signs, the
    // agent reconnects with the new certificate and the manager revokes
    // the old one.
    manager_clock.advance(Duration::from_secs(600 * 86_400));
    agent_clock.advance(Duration::from_secs(600 * 86_400));
    let renewed = eventually(
        Duration::from_secs(30),
        "the renewed certificate in use and the old one revoked",
        || async {
            let agent = store.agent(&id).await.unwrap().unwrap();
            let switched = agent.cert_serial != old_serial
                && agent.pending_serial.is_none()
                && store.is_revoked(&old_serial).await.unwrap();
            switched.then_some(agent)
        },
    )
    .await;
    wait_active(&m, &id).await;
    logs.wait_for(&[
        "Agent connected with its renewed certificate",
        &format!("revoked={old_serial}"),
    ])
    .await
    .unwrap();

    // The key was rotated, and the certificate on disk is the one the
    // manager now knows, valid from the manager's clock for 825 days.
    let new_cert = std::fs::read_to_string(&config.cert).unwrap();
    assert_ne!(new_cert, old_cert);
    assert_ne!(std::fs::read_to_string(&config.key).unwrap(), old_key);
    let der = rustls::pki_types::CertificateDer::from_pem_slice(new_cert.as_bytes()).unwrap();
    let identity = palisade_proto::identity::identity_from_der(der.as_ref()).unwrap();
    assert_eq!(identity.serial, renewed.cert_serial);
    let (not_before, not_after) =
        palisade_proto::identity::validity_from_der(der.as_ref()).unwrap();
    let now = manager_clock.now_ms();
    assert_eq!(not_before, (now - 3_600_000) / 1000 * 1000);
    assert_eq!(not_after, (now + 825 * DAY_MS) / 1000 * 1000);

    // The old certificate (with its key) is refused from now on.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("old.pem"), dir.path().join("old.key"));
    std::fs::write(&cert, &old_cert).unwrap();
    std::fs::write(&key, &old_key).unwrap();
    let refused = open_raw(&config, &cert, &key).await.err().expect("refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("revoked"), "{refused:?}");
}

use rustls::pki_types::pem::PemObject;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stream_is_refused_while_the_first_is_live_and_takes_over_after_silence() {
    let logs = LogCapture::install();
    let m = start_with(|c| c.agent_timeout = Duration::from_secs(2)).await;
    let (id, config) = add_agent(&m, "twice", None).await;
    let mut agent = AgentHandle::start(config.clone());
    wait_active(&m, &id).await;

    // The agent is live (heartbeats every 300 ms): a second stream with
    // its certificate is refused, and logged as a possible theft.
    let refused = open_raw(&config, &config.cert, &config.key)
        .await
        .err()
        .expect("a second stream is refused");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    assert!(
        refused
            .message()
            .contains(&format!("agent {id} already has a live stream")),
        "{refused:?}"
    );
    logs.wait_for(&["possible stolen certificate", &format!("agent={id}")])
        .await
        .unwrap();
    let shown = agent_status(&m, &id).await;
    assert!(
        shown["last_refusal"]
            .as_str()
            .unwrap()
            .contains("already has a live stream"),
        "{shown}"
    );

    // The agent goes; a stream opened now says hello and then falls
    // silent, as one from a host that froze would.
    agent.stop().await.unwrap();
    let mut silent = eventually(
        Duration::from_secs(20),
        "a stream once the agent left",
        || async { open_raw(&config, &config.cert, &config.key).await.ok() },
    )
    .await;

    // The agent comes back: refused while the silent stream is younger
    // than the agent timeout, then it takes over and the silent one ends.
    let _agent = AgentHandle::start(config.clone());
    let ended = tokio::time::timeout(Duration::from_secs(30), silent.inbound.message())
        .await
        .expect("the silent stream ends within 30 s")
        .expect_err("ended with a status");
    assert_eq!(ended.code(), tonic::Code::Aborted, "{ended:?}");
    logs.wait_for(&["silent past the agent timeout", &format!("agent={id}")])
        .await
        .unwrap();
    wait_active(&m, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_is_refused_outside_its_registered_network() {
    let logs = LogCapture::install();
    let m = start_with(|_| {}).await;
    // Registered for 10.0.0.0/8; it connects from 127.0.0.1.
    let (outside, config) = add_agent(&m, "outside", Some("10.0.0.0/8")).await;
    let _refused = AgentHandle::start(config);
    let line = logs
        .wait_for(&["Refused agent stream", "may connect only from 10.0.0.0/8"])
        .await
        .unwrap();
    assert!(
        line.contains("this connection came from 127.0.0.1"),
        "{line}"
    );
    // The agent's log says why it is not connected.
    logs.wait_for(&["Manager stream ended", "may connect only from 10.0.0.0/8"])
        .await
        .unwrap();
    // And palisadectl shows it.
    let shown = eventually(Duration::from_secs(10), "the refusal recorded", || async {
        let a = agent_status(&m, &outside).await;
        (a["last_refusal"] != "").then_some(a)
    })
    .await;
    assert_eq!(shown["status"], "Never connected", "{shown}");
    assert_eq!(
        shown["last_refusal"],
        format!(
            "agent {outside} may connect only from 10.0.0.0/8 (agent add --ip); this connection came from 127.0.0.1"
        )
    );
    let text = stdout(&ctl(&m.ctl, &["-i", &outside]).await);
    assert!(text.contains("Last refused:"), "{text}");

    // Registered for its own address: admitted.
    let (inside, config) = add_agent(&m, "inside", Some("127.0.0.1")).await;
    let _admitted = AgentHandle::start(config);
    wait_active(&m, &inside).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_operator_is_cut_off_also_on_an_open_follow() {
    let logs = LogCapture::install();
    let m = start_with(|_| {}).await;
    let bundle = identities::add_operator(&m.config, "bob", None)
        .await
        .unwrap();
    assert_eq!(
        bundle.dir,
        m.config.source.parent().unwrap().join("operators/bob")
    );
    let bob = bundle.ctl_config;
    let out = ctl(&bob, &["status"]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_e2e-ctl"))
        .arg("--config")
        .arg(&bob)
        .args(["alerts", "--follow", "--json"])
        .env_remove("PALISADE_CTL_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    logs.wait_for(&["Following alerts", "operator=bob"])
        .await
        .unwrap();

    // `operator remove`, as a program beside the running manager.
    let removed = tokio::process::Command::new(MANAGER)
        .args(["operator", "remove", "bob", "-c"])
        .arg(&m.config.source)
        .output()
        .await
        .unwrap();
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(
        stdout(&removed),
        "Operator removed: bob. Its certificate is revoked.\n"
    );
    let ended = tokio::time::timeout(Duration::from_secs(20), follow.wait())
        .await
        .expect("the follow ends within 20 s")
        .unwrap();
    assert!(!ended.success());
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut follow.stderr.take().unwrap(), &mut err)
        .await
        .unwrap();
    assert!(err.contains("operator bob was removed"), "{err}");

    // New calls are refused too; the first operator is untouched.
    let out = ctl(&bob, &["status"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not registered with this manager or was revoked"),
        "{}",
        stderr(&out)
    );
    let out = ctl(&m.ctl, &["status"]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let listed = tokio::process::Command::new(MANAGER)
        .args(["operator", "list", "--json", "-c"])
        .arg(&m.config.source)
        .output()
        .await
        .unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
    let rows: Vec<(String, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_string(),
                o["removed_at"].is_null(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("admin".to_string(), true), ("bob".to_string(), false)]
    );
}

#[tokio::test]
async fn the_operator_of_an_older_init_is_adopted_as_the_first() {
    palisade_common::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let report = setup::init(&setup::InitOptions {
        dir: dir.path().to_path_buf(),
        sans: vec![],
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: Some("127.0.0.1:1".into()),
        force: false,
    })
    .await
    .unwrap();
    // As a database from before operators were registered.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", report.database))
        .await
        .unwrap();
    sqlx::query("DELETE FROM operators")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let listed = tokio::process::Command::new(MANAGER)
        .args(["operator", "list", "-c"])
        .arg(&report.config)
        .output()
        .await
        .unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = stdout(&listed);
    let admin = text.lines().nth(1).unwrap_or_default();
    assert!(
        admin.starts_with("admin ") && admin.ends_with(" active"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2, "{text}");
}
