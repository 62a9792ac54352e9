//! Enrollment without copying keys: a token from `token create`, a key
//! made by the agent, the manager's CA pinned by fingerprint or file.
//! A good token gives an identity that streams events and cannot use the
//! control API; a used or expired token is refused; a manager that fails
//! the pin is refused before the token is sent. The command lines print
//! one line per error and exit non-zero.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use palisade_agent::AgentConfig;
use palisade_agent::config::Localfile;
use palisade_agent::enroll::{self, CaPin, EnrollError, EnrollOptions};
use palisade_manager::pki::{self, CertificateAuthority};
use palisade_proto::v1::ListAgentsRequest;
use palisade_proto::v1::control_service_client::ControlServiceClient;
use palisade_tests::{AgentHandle, LogCapture, ManagerHandle, append_lines, eventually};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn fingerprint_pin(manager: &ManagerHandle) -> CaPin {
    let printed = palisade_manager::enroll::ca_fingerprint(&manager.config.ca_cert).unwrap();
    CaPin::Fingerprint(palisade_common::tls::parse_fingerprint(&printed).unwrap())
}

fn options(manager: &ManagerHandle, token: &str, dir: &Path, pin: CaPin) -> EnrollOptions {
    EnrollOptions {
        manager: manager.enroll_addr.unwrap().to_string(),
        token: token.to_string(),
        name: None,
        pin,
        dir: dir.to_path_buf(),
        force: false,
    }
}

async fn token(manager: &ManagerHandle, ttl: Option<Duration>, name: Option<&str>) -> String {
    palisade_manager::enroll::create_token(&manager.config, ttl, name)
        .await
        .unwrap()
        .token
}

fn refused(result: Result<enroll::Enrolled, EnrollError>) -> String {
    match result {
        Err(EnrollError::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_token_gives_an_agent_that_delivers_and_cannot_use_the_control_api()
-> anyhow::Result<()> {
    let logs = LogCapture::install();
    let manager = ManagerHandle::start_enrolling().await?;
    let token = token(&manager, None, None).await;
    let dir = tempfile::tempdir()?;
    let mut opts = options(&manager, &token, dir.path(), fingerprint_pin(&manager));
    opts.name = Some("web01".into());
    let enrolled = enroll::enroll(&opts).await?;
    assert_eq!(enrolled.id, "001");
    assert_eq!(enrolled.name, "web01");
    assert_eq!(enrolled.manager_address, manager.addr.to_string());

    // The layout of an `agent add` bundle; the key is private and no
    // leftover of the pending key remains.
    let mut files: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["agent.key", "agent.pem", "agent.toml", "ca.pem"]);
    let mode = std::fs::metadata(dir.path().join("agent.key"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.pem"))?,
        std::fs::read_to_string(&manager.config.ca_cert)?
    );
    logs.wait_for(&["Agent enrolled", "agent=001", "name=web01", "127.0.0.1"])
        .await?;
    let store = manager.store().await?;
    let tokens = store.tokens().await?;
    assert_eq!(tokens[0].used_by.as_deref(), Some("001"));
    assert_eq!(store.agent("001").await?.unwrap().name, "web01");

    // The agent runs from the written agent.toml and its events arrive.
    let mut config = AgentConfig::load(&enrolled.config)?;
    let log = dir.path().join("access.log");
    append_lines(&log, ["first line before the agent starts".to_string()])?;
    config.localfiles = vec![Localfile {
        location: log.clone(),
        log_format: "syslog".into(),
    }];
    config.read_from_start = true;
    config.poll_interval = Duration::from_millis(20);
    let _agent = AgentHandle::start(config.clone());
    append_lines(&log, ["Nov 28 10:00:00 web01 enrolled: hello".to_string()])?;
    eventually(
        Duration::from_secs(20),
        "the enrolled agent's events",
        || async {
            let events = store.archived_events(Some("001")).await?;
            Ok((events.len() >= 2).then_some(()))
        },
    )
    .await?;

    // Its certificate is an agent's: the control API refuses it.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&config.ca_cert)?))
        .identity(Identity::from_pem(
            std::fs::read(&config.cert)?,
            std::fs::read(&config.key)?,
        ))
        .domain_name(config.server_name.clone());
    let channel = Channel::from_shared(format!("https://{}", manager.addr))?
        .tls_config(tls)?
        .connect()
        .await?;
    let err = ControlServiceClient::new(channel)
        .list_agents(ListAgentsRequest::default())
        .await
        .expect_err("an enrolled agent may not use the control API");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_single_use_also_when_two_agents_race() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    let manager = ManagerHandle::start_enrolling().await?;
    let token1 = token(&manager, None, Some("web01")).await;
    let first = tempfile::tempdir()?;
    enroll::enroll(&options(
        &manager,
        &token1,
        first.path(),
        fingerprint_pin(&manager),
    ))
    .await?;

    let second = tempfile::tempdir()?;
    let reason = refused(
        enroll::enroll(&options(
            &manager,
            &token1,
            second.path(),
            fingerprint_pin(&manager),
        ))
        .await,
    );
    assert!(reason.contains("already used by agent 001"), "{reason}");
    // Nothing is left behind by a refused enrollment.
    assert_eq!(std::fs::read_dir(second.path())?.count(), 0);
    logs.wait_for(&["Refused enrollment", "already used"])
        .await?;

    // Two agents with one token at the same moment: exactly one enrolls.
    let token2 = token(&manager, None, None).await;
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut oa = options(&manager, &token2, a.path(), fingerprint_pin(&manager));
    oa.name = Some("race-a".into());
    let mut ob = options(&manager, &token2, b.path(), fingerprint_pin(&manager));
    ob.name = Some("race-b".into());
    let (ra, rb) = tokio::join!(enroll::enroll(&oa), enroll::enroll(&ob));
    let won = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{ra:?} {rb:?}");
    let lost = if ra.is_ok() { rb } else { ra };
    assert!(refused(lost).contains("already used"));
    let agents = manager.store().await?.agents().await?;
    assert_eq!(agents.len(), 2, "{agents:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_unknown_token_is_refused() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    let manager = ManagerHandle::start_enrolling().await?;
    let token = token(&manager, Some(Duration::from_millis(300)), None).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let dir = tempfile::tempdir()?;
    let mut opts = options(&manager, &token, dir.path(), fingerprint_pin(&manager));
    opts.name = Some("late".into());
    let reason = refused(enroll::enroll(&opts).await);
    assert!(reason.contains("expired"), "{reason}");
    logs.wait_for(&["Refused enrollment", "expired"]).await?;

    opts.token = "0123456789abcdef".into();
    let reason = refused(enroll::enroll(&opts).await);
    assert!(reason.contains("unknown token"), "{reason}");
    assert!(manager.store().await?.agents().await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_that_fails_the_pin_is_refused_before_the_token_is_sent() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    let manager = ManagerHandle::start_enrolling().await?;
    let token = token(&manager, None, Some("web01")).await;
    let (rogue, _) = CertificateAuthority::generate("rogue")?;
    let rogue_der = rustls::pki_types::CertificateDer::from_pem_slice(rogue.cert_pem().as_bytes())?;
    let dir = tempfile::tempdir()?;

    // A fingerprint of another CA.
    let wrong = CaPin::Fingerprint(
        palisade_common::tls::parse_fingerprint(&palisade_common::tls::fingerprint(
            rogue_der.as_ref(),
        ))
        .unwrap(),
    );
    let err = enroll::enroll(&options(&manager, &token, dir.path(), wrong))
        .await
        .expect_err("the manager must be refused");
    assert!(matches!(err, EnrollError::Untrusted { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("does not match --ca-fingerprint"), "{text}");
    assert!(text.contains("the token was not sent"), "{text}");
    logs.wait_for(&["Refused TLS connection", "does not trust this manager's CA"])
        .await?;

    // Another CA's certificate as the CA file.
    let rogue_file = dir.path().join("rogue-ca.pem");
    std::fs::write(&rogue_file, rogue.cert_pem())?;
    let err = enroll::enroll(&options(
        &manager,
        &token,
        dir.path(),
        CaPin::File(rogue_file.clone()),
    ))
    .await
    .expect_err("the manager must be refused");
    assert!(
        err.to_string().contains("does not chain to the pinned CA"),
        "{err}"
    );
    std::fs::remove_file(&rogue_file)?;

    // The token never reached the manager: it is still unused, and the
    // right CA file enrolls with it.
    assert_eq!(manager.store().await?.tokens().await?[0].used_at, None);
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    let enrolled = enroll::enroll(&options(
        &manager,
        &token,
        dir.path(),
        CaPin::File(manager.config.ca_cert.clone()),
    ))
    .await?;
    assert_eq!(
        (enrolled.id.as_str(), enrolled.name.as_str()),
        ("001", "web01")
    );
    Ok(())
}

use rustls::pki_types::pem::PemObject;

/// Runs a program; returns its exit code, stdout and stderr.
fn run<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> (i32, String, String) {
    let out = Command::new(program)
        .args(args)
        .env_remove("PALISADE_ENROLL_TOKEN")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One line on stderr, naming the program, containing `what`.
fn one_line(stderr: &str, what: &str) {
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.starts_with("palisade-agent: "), "{stderr:?}");
    assert!(stderr.contains(what), "{what:?} not in {stderr:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_lines_print_one_line_per_error() -> anyhow::Result<()> {
    let manager_bin = env!("CARGO_BIN_EXE_e2e-manager");
    let agent_bin = env!("CARGO_BIN_EXE_e2e-agent");
    let manager = ManagerHandle::start_enrolling().await?;
    let config = manager.config.source.display().to_string();
    let enroll_addr = manager.enroll_addr.unwrap().to_string();

    // The fingerprint `ca fingerprint` prints is the one `token create`
    // prints; the token alone is on stdout.
    let (code, fingerprint, _) = run(manager_bin, &["ca", "fingerprint", "-c", &config]);
    assert_eq!(code, 0);
    let fingerprint = fingerprint.trim().to_string();
    assert_eq!(fingerprint.len(), 95, "{fingerprint}");
    let (code, token, stderr) = run(
        manager_bin,
        &[
            "token", "create", "--ttl", "10m", "--name", "web09", "-c", &config,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let token = token.trim().to_string();
    assert_eq!(token.len(), 48, "{token}");
    assert!(stderr.contains(&fingerprint), "{stderr}");
    assert!(stderr.contains("for agent web09"), "{stderr}");
    let (code, _, stderr) = run(
        manager_bin,
        &["token", "create", "--ttl", "90d", "-c", &config],
    );
    assert_eq!(code, 64, "{stderr}");

    let dir = tempfile::tempdir()?;
    let target = dir.path().join("etc");
    let target_s = target.display().to_string();
    let enroll_args = |manager: &str, pin: &str| -> Vec<String> {
        [
            "enroll",
            "--manager",
            manager,
            "--token",
            &token,
            "--ca-fingerprint",
            pin,
            "--dir",
            &target_s,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    // A fingerprint that is not one (64), no pin at all (64).
    let (code, _, stderr) = run(agent_bin, &enroll_args(&enroll_addr, "12:34"));
    assert_eq!(code, 64);
    one_line(&stderr, "is not a SHA-256 fingerprint");
    let (code, _, stderr) = run(
        agent_bin,
        &[
            "enroll",
            "--manager",
            &enroll_addr,
            "--token",
            &token,
            "--dir",
            &target_s,
        ],
    );
    assert_eq!(code, 64);
    one_line(&stderr, "give --ca-fingerprint or --ca-file");

    // Nobody listening: the address tried is named.
    let closed = palisade_tests::process::free_port()?.to_string();
    let (code, _, stderr) = run(agent_bin, &enroll_args(&closed, &fingerprint));
    assert_eq!(code, 1);
    one_line(&stderr, &format!("cannot reach the manager at {closed}"));

    // The agents' mutual-TLS port is not the enrollment port.
    let (code, _, stderr) = run(
        agent_bin,
        &enroll_args(&manager.addr.to_string(), &fingerprint),
    );
    assert_eq!(code, 1);
    one_line(&stderr, &manager.addr.to_string());

    // A wrong fingerprint, in the plain lower-case form.
    let wrong = "ab".repeat(32);
    let (code, _, stderr) = run(agent_bin, &enroll_args(&enroll_addr, &wrong));
    assert_eq!(code, 1);
    one_line(&stderr, "refusing the manager at");

    // The right one enrolls, printing one line; the plain form of the
    // fingerprint works as well as the colon form.
    let plain = fingerprint.replace(':', "").to_lowercase();
    let (code, stdout, stderr) = run(agent_bin, &enroll_args(&enroll_addr, &plain));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("Enrolled: ID: 001, Name: web09"),
        "{stdout}"
    );
    assert_eq!(stderr, "");

    // Again into the same directory: refused locally, the identity kept.
    let (code, _, stderr) = run(agent_bin, &enroll_args(&enroll_addr, &fingerprint));
    assert_eq!(code, 64);
    one_line(&stderr, "already holds an agent identity");
    let (code, _, stderr) = run(agent_bin, &{
        let mut a = enroll_args(&enroll_addr, &fingerprint);
        a.push("--force".into());
        a
    });
    assert_eq!(code, 1);
    one_line(&stderr, "already used by agent 001");
    let kept = pki::read(&target.join("agent.pem"))?;
    assert!(!kept.is_empty());
    Ok(())
}
