//! A fleet's fan-out: `palisadectl -b IP -f RESPONSE -a` and `unblock`
//! are decided and recorded whole, then delivered to every agent, even when
//! the operator's call is cancelled in the middle (palisadectl's timeout, a
//! closed terminal). Scaled down from the benchmark (`benches/fleet.rs`):
//! simulated agents with their own certificates and streams in this
//! process.

use std::collections::HashSet;
use std::time::Duration;

use palisade_proto::v1::{RunResponseRequest, UnblockRequest};
use palisade_tests::ManagerHandle;
use palisade_tests::fleet::{self, Fleet, Target};
use palisadectl::client::CtlConfig;

const AGENTS: usize = 120;
const WAIT: Duration = Duration::from_secs(60);

/// The simulated agents all come from 127.0.0.1, as through one NAT
/// address: their handshakes at once are not squatters.
fn one_address_for_all(config: &mut palisade_manager::ManagerConfig) {
    config.connections.max_handshakes_per_address = AGENTS;
}

fn operator(manager: &ManagerHandle) -> CtlConfig {
    let dir = manager.operator_dir();
    CtlConfig {
        manager: manager.addr.to_string(),
        server_name: manager.config.server_name.clone(),
        ca_cert: manager.config.ca_cert.clone(),
        cert: dir.join("operator.pem"),
        key: dir.join("operator.key"),
    }
}

/// Waits for one command per agent with `action`; returns the agents.
async fn every_agent_gets(
    fleet: &mut Fleet,
    srcip: &str,
    action: i32,
    already: Option<String>,
) -> anyhow::Result<HashSet<String>> {
    let mut got: HashSet<String> = already.into_iter().collect();
    while got.len() < AGENTS {
        let received = fleet.next_command(WAIT).await?;
        assert_eq!(received.command.srcip, srcip);
        if received.command.action == action {
            assert!(
                got.insert(received.agent_id.clone()),
                "agent {} got the command twice",
                received.agent_id
            );
        }
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_reaches_every_agent_when_the_caller_goes_away() -> anyhow::Result<()> {
    let manager = ManagerHandle::start_with(one_address_for_all).await?;
    let identities = fleet::register(&manager.config, "web", AGENTS).await?;
    let mut fleet = Fleet::start(
        &Target::of(&manager.config, manager.addr)?,
        &identities,
        None,
    )?;
    fleet.wait_active(AGENTS, WAIT).await?;
    let ctl = operator(&manager);
    // Every Hello is recorded (they are written in groups) before its
    // Welcome.
    let store = manager.store().await?;
    for agent in store.agents().await? {
        assert_eq!(
            (agent.version.as_deref(), agent.last_address.as_deref()),
            (Some("0.0.0-raw"), Some("127.0.0.1")),
            "agent {}'s Hello",
            agent.id
        );
        assert!(agent.first_seen.is_some(), "agent {}", agent.id);
    }

    // The block: the call is cancelled as soon as the first agent has its
    // command, i.e. in the middle of the delivery.
    let srcip = "198.51.100.23";
    let mut client = palisadectl::client::connect(&ctl)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let call = tokio::spawn(async move {
        client
            .run_response(RunResponseRequest {
                srcip: srcip.into(),
                response: "route-null600".into(),
                agent_ids: vec![],
                all_agents: true,
            })
            .await
    });
    let first = fleet.next_command(WAIT).await?;
    call.abort();
    let add = palisade_proto::v1::CommandAction::Add as i32;
    assert_eq!(first.command.action, add);
    every_agent_gets(&mut fleet, srcip, add, Some(first.agent_id)).await?;

    // Every command is recorded (one per agent), and each agent's result
    // arrives (results are written in groups).
    palisade_tests::eventually(WAIT, "every block confirmed", || async {
        let blocks = store.blocks(Some(srcip), None).await?;
        Ok((blocks.len() == AGENTS && blocks.iter().all(|b| b.state == "active")).then_some(()))
    })
    .await?;

    // The unblock, cancelled the same way.
    let mut client = palisadectl::client::connect(&ctl)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let call = tokio::spawn(async move {
        client
            .unblock(UnblockRequest {
                srcip: srcip.into(),
                agent_ids: vec![],
                all_agents: true,
            })
            .await
    });
    let delete = palisade_proto::v1::CommandAction::Delete as i32;
    let first = loop {
        let r = fleet.next_command(WAIT).await?;
        if r.command.action == delete {
            break r;
        }
    };
    call.abort();
    every_agent_gets(&mut fleet, srcip, delete, Some(first.agent_id)).await?;
    palisade_tests::eventually(WAIT, "every block lifted", || async {
        Ok(store
            .blocks(Some(srcip), None)
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    Ok(())
}

/// The delivery itself outlives its caller: an agent slow to read its
/// stream (its queue full) still gets the command after the caller went
/// away, and the command is marked sent. The responder of a real store
/// and session registry, driven directly so that the agent's queue is
/// full when the fan-out begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_agent_gets_its_command_after_the_caller_went_away() -> anyhow::Result<()> {
    use palisade_manager::responder::{Responder, Targets};
    use palisade_manager::sessions::{NewStream, Sessions};
    use palisade_proto::v1::ManagerMessage;
    use palisade_proto::v1::manager_message::Kind as ManagerKind;

    let manager = ManagerHandle::start().await?;
    let identities = fleet::register(&manager.config, "web", 3).await?;
    let store = manager.store().await?;
    let sessions = Sessions::default();
    let parent = tokio_util::sync::CancellationToken::new();
    let mut receivers = Vec::new();
    for (i, identity) in identities.iter().enumerate() {
        let (tx, rx) = tokio::sync::mpsc::channel(if i == 0 { 1 } else { 8 });
        let (guard, _) = sessions
            .register(
                NewStream {
                    agent_id: &identity.id,
                    serial: "-",
                    address: None,
                    stale_after: Duration::from_secs(60),
                    takeover: false,
                },
                tx.clone(),
                &parent,
            )
            .map_err(|live| anyhow::anyhow!("refused: {live:?}"))?;
        // Commands go to a stream once its Welcome went out.
        guard.welcomed();
        if i == 0 {
            // The slow agent's queue is full.
            tx.send(Ok(Box::default())).await?;
        }
        receivers.push(rx);
    }
    let responder = Responder::new(
        manager.config.responses.clone(),
        manager.config.white_list.clone(),
        vec![],
        store.clone(),
        sessions,
    );
    let srcip = "198.51.100.24";
    let call = tokio::spawn(async move {
        responder
            .run(srcip, "route-null600", Targets::All)
            .await
            .map(|_| ())
    });
    let command =
        |m: Option<Result<Box<ManagerMessage>, tonic::Status>>| match m.map(|m| m.map(|m| *m)) {
            Some(Ok(ManagerMessage {
                kind: Some(ManagerKind::Command(c)),
            })) => Ok(c),
            other => Err(anyhow::anyhow!("expected a command, got {other:?}")),
        };
    for rx in &mut receivers[1..] {
        assert_eq!(command(rx.recv().await)?.srcip, srcip);
    }
    // The fast agents have theirs: the fan-out waits for the slow one.
    // Its caller goes away.
    call.abort();
    let slow = &mut receivers[0];
    assert_eq!(
        slow.recv().await.and_then(Result::ok).map(|m| *m),
        Some(ManagerMessage::default())
    );
    assert_eq!(command(slow.recv().await)?.srcip, srcip);
    palisade_tests::eventually(WAIT, "every command marked sent", || async {
        let blocks = store.blocks(Some(srcip), None).await?;
        let sent = commands_sent(&store, &blocks).await?;
        Ok((blocks.len() == 3 && sent == 3).then_some(()))
    })
    .await?;
    Ok(())
}

async fn commands_sent(
    store: &palisade_manager::store::Store,
    blocks: &[palisade_manager::store::BlockRow],
) -> anyhow::Result<usize> {
    let mut sent = 0;
    for block in blocks {
        if store
            .response(block.id)
            .await?
            .is_some_and(|r| r.status == "sent")
        {
            sent += 1;
        }
    }
    Ok(sent)
}

/// Reads from `tcp` until the manager closes it (EOF or reset).
async fn closed_by_manager(tcp: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// `[connections]`: unfinished handshakes beyond the per-address cap are
/// refused at once, the ones under it are cut at the handshake timeout,
/// connections beyond `max_connections` are refused; each reason is
/// logged once for the address and then only counted; an agent still gets
/// in once the squatters are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_hold_and_refusals_are_summarised() -> anyhow::Result<()> {
    let logs = palisade_tests::LogCapture::install();
    let manager = ManagerHandle::start_with(|c| {
        c.connections.max_handshakes_per_address = 2;
        c.connections.handshake_timeout = Duration::from_secs(1);
        c.connections.max_connections = 4;
    })
    .await?;
    // From an address of its own: the other tests of this binary connect
    // from 127.0.0.1, and their refusals go to the same log.
    let connect = || async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.2:0".parse()?)?;
        anyhow::Ok(socket.connect(manager.addr).await?)
    };
    // Two squatters hold their handshake slots; the next three are
    // refused at once.
    let mut squatters = vec![connect().await?, connect().await?];
    for _ in 0..3 {
        let mut refused = connect().await?;
        closed_by_manager(&mut refused).await;
    }
    logs.wait_for(&["Refused TLS connection", "too many unfinished handshakes"])
        .await?;
    let lines = |needle: &str| logs.text().lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        lines("too many unfinished handshakes"),
        1,
        "logged once, then counted"
    );
    // The squatters are cut at the handshake timeout.
    for tcp in &mut squatters {
        closed_by_manager(tcp).await;
    }
    // max_connections: four agents' worth of connections, then refusals.
    let identities = fleet::register(&manager.config, "web", 5).await?;
    let fleet = Fleet::start(
        &Target::of(&manager.config, manager.addr)?,
        &identities[..4],
        None,
    )?;
    fleet.wait_active(4, WAIT).await?;
    let mut over = connect().await?;
    closed_by_manager(&mut over).await;
    logs.wait_for(&["Refused TLS connection", "max_connections"])
        .await?;
    // One leaves; the fifth gets in.
    drop(fleet);
    let fifth = Fleet::start(
        &Target::of(&manager.config, manager.addr)?,
        &identities[4..],
        None,
    )?;
    fifth.wait_active(1, WAIT).await?;
    Ok(())
}

/// At shutdown the agents' streams end first, then their last-seen times
/// are written, then the database closes: every agent's `last_seen` is
/// the time its stream ended, and nothing fails to be recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_records_every_agents_last_seen() -> anyhow::Result<()> {
    let logs = palisade_tests::LogCapture::install();
    let mut manager = ManagerHandle::start_with(one_address_for_all).await?;
    let identities = fleet::register(&manager.config, "web", 20).await?;
    let fleet = Fleet::start(
        &Target::of(&manager.config, manager.addr)?,
        &identities,
        None,
    )?;
    fleet.wait_active(identities.len(), WAIT).await?;
    // Every Hello has been recorded (at or before now); the streams end
    // strictly later.
    let connected_by = palisade_manager::store::now_ms();
    while palisade_manager::store::now_ms() <= connected_by {
        tokio::task::yield_now().await;
    }
    manager.stop().await?;
    let store = manager.store().await?;
    for identity in &identities {
        let agent = store
            .agent(&identity.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("agent {} vanished", identity.id))?;
        assert!(
            agent.last_seen.is_some_and(|t| t > connected_by),
            "agent {}: last seen {:?}, connected by {connected_by}",
            identity.id,
            agent.last_seen
        );
    }
    assert!(!logs.text().contains("Cannot record"));
    Ok(())
}
