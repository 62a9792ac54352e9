//! Active responses against a real kernel: each test runs in a private
//! network namespace (unshare on its own thread, which vanishes with the
//! thread), checks routes and nft sets with `ip -j` and `nft -j` as
//! independent witnesses, and needs root: built as another user the tests
//! are ignored (see palisade-test-needs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use palisade_agent::respond::{
    Action, Ledger, ManualClock, NullRouteType, Order, RespondConfig, Responder,
    ledger::MIGRATION_SQL,
};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tokio_util::sync::CancellationToken;

fn in_netns<F, Fut>(name: &str, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    palisade_test_needs::root();
    std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        run(&["ip", "link", "set", "lo", "up"]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f());
    })
    .join()
    .unwrap_or_else(|_| panic!("{name}: the test thread panicked"));
}

fn run(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// (destination, type, protocol) of every route in the main table, both families.
fn routes() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for fam in ["-4", "-6"] {
        let v: serde_json::Value =
            serde_json::from_str(&run(&["ip", "-j", fam, "route", "show", "table", "main"]))
                .unwrap();
        for r in v.as_array().unwrap() {
            out.push((
                r["dst"].as_str().unwrap_or_default().to_owned(),
                r["type"].as_str().unwrap_or("unicast").to_owned(),
                r["protocol"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    out
}

fn route_of(dst: &str) -> Option<(String, String)> {
    routes()
        .into_iter()
        .find(|(d, _, _)| d == dst)
        .map(|(_, t, p)| (t, p))
}

/// Elements of Palisade's set for the family of `ip`'s kind: address -> timeout (s).
fn nft_elements(set: &str) -> Vec<(String, Option<u64>)> {
    let text = run(&["nft", "-j", "list", "set", "inet", "palisade", set]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for item in v["nftables"].as_array().unwrap() {
        if let Some(elems) = item["set"]["elem"].as_array() {
            for e in elems {
                match e {
                    serde_json::Value::String(s) => out.push((s.clone(), None)),
                    o => out.push((
                        o["elem"]["val"].as_str().unwrap().to_owned(),
                        o["elem"]["timeout"].as_u64(),
                    )),
                }
            }
        }
    }
    out
}

async fn ledger_at(path: &Path, migrate: bool) -> Ledger {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    if migrate {
        sqlx::raw_sql(MIGRATION_SQL).execute(&pool).await.unwrap();
    }
    Ledger::new(pool)
}

fn config(dir: &Path) -> RespondConfig {
    RespondConfig {
        hosts_deny_path: dir.join("hosts.deny"),
        ar_log_path: dir.join("active-responses.log"),
        ..RespondConfig::default()
    }
}

/// A responder whose blocks expire by `clock`.
fn on_clock(dir: &Path, ledger: &Ledger, clock: &ManualClock) -> Responder {
    Responder::with_clock(config(dir), ledger.clone(), vec![], Arc::new(clock.clone())).unwrap()
}

/// Waits for the responder's next report of a block it lifted by itself
/// and returns the add's command id (bounded, so a lost wake-up fails the
/// test instead of hanging it).
async fn next_lift(
    reports: &mut tokio::sync::mpsc::UnboundedReceiver<palisade_proto::v1::CommandResult>,
) -> String {
    let report = tokio::time::timeout(Duration::from_secs(30), reports.recv())
        .await
        .expect("no block was lifted")
        .expect("the responder is gone");
    assert!(report.ok, "{report:?}");
    report.command_id
}

fn order(response: &str, action: Action, ip: &str, timeout: Option<u64>) -> Order {
    Order {
        command_id: format!("cmd-{response}-{ip}"),
        response: response.into(),
        action: Some(action),
        srcip: ip.into(),
        user: String::new(),
        timeout: timeout.map(Duration::from_secs),
        alert_id: "1700000000.4242".into(),
        rule_id: 31151,
        agent_id: "001".into(),
        location: "(web01) 10.0.0.5->/var/log/nginx/access.log".into(),
    }
}

/// Polls `cond` for up to 15 s (generous: a loaded CI machine is not a
/// failure; only "never" is).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: a private network namespace")]
fn route_null_adds_and_deletes_ipv4_and_ipv6_idempotently() {
    in_netns(
        "route_null_adds_and_deletes_ipv4_and_ipv6_idempotently",
        || async {
            let dir = tempfile::tempdir().unwrap();
            let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
            let r = Responder::new(config(dir.path()), ledger.clone(), vec![]).unwrap();
            for ip in ["198.51.100.7", "2001:db8::7"] {
                let out = r
                    .execute(order("route-null", Action::Add, ip, Some(600)))
                    .await;
                assert!(out.ok, "{out:?}");
                assert_eq!(
                    route_of(ip),
                    Some(("unreachable".into(), "173".into())),
                    "{:?}",
                    routes()
                );
                // Again (another command): extended, still exactly one
                // route.
                let mut repeat = order("route-null", Action::Add, ip, Some(600));
                repeat.command_id.push_str("-again");
                let again = r.execute(repeat).await;
                assert!(again.ok, "{again:?}");
                assert!(again.message.contains("extended"), "{}", again.message);
                assert_eq!(routes().iter().filter(|(d, _, _)| d == ip).count(), 1);
            }
            let blocks = ledger.list().await.unwrap();
            assert_eq!(blocks.len(), 2);
            assert!(
                blocks
                    .iter()
                    .all(|b| b.offences == 2 && b.expires_at.is_some())
            );
            for ip in ["198.51.100.7", "2001:db8::7"] {
                let out = r
                    .execute(order("route-null", Action::Delete, ip, None))
                    .await;
                assert!(out.ok, "{out:?}");
                assert_eq!(route_of(ip), None);
                // Deleting what is not there is success.
                let out = r
                    .execute(order("route-null", Action::Delete, ip, None))
                    .await;
                assert!(out.ok, "{out:?}");
            }
            assert!(ledger.list().await.unwrap().is_empty());
            let log = std::fs::read_to_string(dir.path().join("active-responses.log")).unwrap();
            let lines: Vec<&str> = log.lines().collect();
            // One add per address (extensions are not re-logged, as in OSSEC) and
            // one delete per delete command.
            assert_eq!(lines.len(), 6, "{log}");
            assert!(lines[0].ends_with(
            " /palisade/active-response/bin/route-null.sh add - 198.51.100.7 1700000000.4242 31151"
        ), "{log}");
            assert!(
                lines[2].ends_with(" delete - 198.51.100.7 1700000000.4242 31151"),
                "{log}"
            );
        },
    );
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: a private network namespace")]
fn mapped_ipv6_is_blocked_as_ipv4() {
    in_netns("mapped_ipv6_is_blocked_as_ipv4", || async {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
        let r = Responder::new(config(dir.path()), ledger.clone(), vec![]).unwrap();
        let out = r
            .execute(order(
                "route-null",
                Action::Add,
                "::ffff:198.51.100.9",
                Some(60),
            ))
            .await;
        assert!(out.ok, "{out:?}");
        assert_eq!(
            route_of("198.51.100.9"),
            Some(("unreachable".into(), "173".into()))
        );
        assert_eq!(
            ledger.list().await.unwrap()[0].srcip,
            "198.51.100.9".parse::<IpAddr>().unwrap()
        );
    });
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: a private network namespace")]
fn blackhole_is_an_option_and_a_type_change_replaces_our_route() {
    in_netns("blackhole_is_an_option", || async {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
        let cfg = RespondConfig {
            route_type: NullRouteType::Blackhole,
            ..config(dir.path())
        };
        let r = Responder::new(cfg, ledger.clone(), vec![]).unwrap();
        for ip in ["198.51.100.7", "2001:db8::7"] {
            assert!(
                r.execute(order("route-null", Action::Add, ip, None))
                    .await
                    .ok
            );
            assert_eq!(route_of(ip), Some(("blackhole".into(), "173".into())));
        }
        // The configuration goes back to unreachable: a new add replaces our route.
        let r2 = Responder::new(config(dir.path()), ledger.clone(), vec![]).unwrap();
        let mut again = order("route-null", Action::Add, "198.51.100.7", None);
        again.command_id.push_str("-again");
        let out = r2.execute(again).await;
        assert!(out.ok, "{out:?}");
        assert_eq!(
            route_of("198.51.100.7"),
            Some(("unreachable".into(), "173".into()))
        );
        // Delete removes either type.
        for ip in ["198.51.100.7", "2001:db8::7"] {
            assert!(
                r2.execute(order("route-null", Action::Delete, ip, None))
                    .await
                    .ok
            );
            assert_eq!(route_of(ip), None, "{:?}", routes());
        }
    });
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: a private network namespace")]
fn a_foreign_route_is_never_replaced_nor_deleted() {
    in_netns("a_foreign_route_is_never_replaced_nor_deleted", || async {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
        run(&[
            "ip",
            "route",
            "add",
            "unreachable",
            "198.51.100.30",
            "proto",
            "static",
        ]);
        run(&[
            "ip",
            "-6",
            "route",
            "add",
            "blackhole",
            "2001:db8::30",
            "proto",
            "static",
        ]);
        let r = Responder::new(config(dir.path()), ledger.clone(), vec![]).unwrap();
        let out = r
            .execute(order("route-null", Action::Add, "198.51.100.30", Some(60)))
            .await;
        assert!(!out.ok, "{out:?}");
        assert!(out.message.contains("did not install"), "{}", out.message);
        assert!(ledger.list().await.unwrap().is_empty());
        // Deletes carry Palisade's protocol: the foreign routes stay.
        for ip in ["198.51.100.30", "2001:db8::30"] {
            assert!(
                r.execute(order("route-null", Action::Delete, ip, None))
                    .await
                    .ok
            );
        }
        assert_eq!(
            route_of("198.51.100.30"),
            Some(("unreachable".into(), "static".into()))
        );
        assert_eq!(
            route_of("2001:db8::30"),
            Some(("blackhole".into(), "static".into()))
        );
    });
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: a private network namespace")]
fn start_reconciles_the_ledger_with_the_kernel() {
    in_netns("start_reconciles_the_ledger_with_the_kernel", || async {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("agent.db");
        let ledger = ledger_at(&db, true).await;
        let r = Responder::new(config(dir.path()), ledger.clone(), vec![]).unwrap();
        for ip in ["198.51.100.10", "2001:db8::10", "198.51.100.11"] {
            assert!(
                r.execute(order("route-null", Action::Add, ip, Some(600)))
                    .await
                    .ok
            );
        }
        drop(r);
        ledger.pool().close().await;
        // While the agent is down: someone removes two of our routes, leaves
        // an orphan of ours, and has routes of their own.
        run(&[
            "ip",
            "route",
            "del",
            "unreachable",
            "198.51.100.10",
            "proto",
            "173",
        ]);
        run(&[
            "ip",
            "-6",
            "route",
            "del",
            "unreachable",
            "2001:db8::10",
            "proto",
            "173",
        ]);
        run(&[
            "ip",
            "route",
            "add",
            "unreachable",
            "198.51.100.20",
            "proto",
            "173",
        ]);
        run(&[
            "ip",
            "-6",
            "route",
            "add",
            "blackhole",
            "2001:db8::20",
            "proto",
            "173",
        ]);
        run(&[
            "ip",
            "route",
            "add",
            "blackhole",
            "198.51.100.21",
            "proto",
            "static",
        ]);
        run(&[
            "ip",
            "route",
            "add",
            "unreachable",
            "198.51.100.22",
            "proto",
            "dhcp",
        ]);

        let ledger = ledger_at(&db, false).await;
        let r = Responder::new(config(dir.path()), ledger.clone(), vec![]).unwrap();
        let stop = CancellationToken::new();
        let (report, timer) = r.start(stop.clone()).await;
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(report.readded("route-null"), 2, "{report:?}");
        assert_eq!(report.removed("route-null"), 2, "{report:?}");
        assert_eq!(report.expired_undone, 0, "{report:?}");
        for ip in ["198.51.100.10", "2001:db8::10", "198.51.100.11"] {
            assert_eq!(
                route_of(ip),
                Some(("unreachable".into(), "173".into())),
                "{ip}"
            );
        }
        assert_eq!(route_of("198.51.100.20"), None);
        assert_eq!(route_of("2001:db8::20"), None);
        assert_eq!(
            route_of("198.51.100.21"),
            Some(("blackhole".into(), "static".into()))
        );
        assert_eq!(
            route_of("198.51.100.22"),
            Some(("unreachable".into(), "dhcp".into()))
        );
        stop.cancel();
        timer.await.unwrap();
        // Stopping leaves blocks in force.
        assert!(route_of("198.51.100.11").is_some());
    });
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: a private network namespace")]
fn blocks_are_lifted_at_expiry_and_extensions_postpone_it() {
    in_netns("blocks_are_lifted_at_expiry", || async {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
        let clock = ManualClock::starting_now();
        let r = on_clock(dir.path(), &ledger, &clock);
        let mut lifted = r.subscribe_reports();
        let stop = CancellationToken::new();
        let (_, timer) = r.start(stop.clone()).await;
        assert!(
            r.execute(order("route-null", Action::Add, "198.51.100.40", Some(1)))
                .await
                .ok
        );
        assert!(
            r.execute(order("route-null", Action::Add, "2001:db8::40", Some(1)))
                .await
                .ok
        );
        // A repeat offender: extended to 600 s before the first timeout runs out.
        assert!(
            r.execute(order("route-null", Action::Add, "198.51.100.41", Some(1)))
                .await
                .ok
        );
        let mut repeat = order("route-null", Action::Add, "198.51.100.41", Some(600));
        repeat.command_id.push_str("-again");
        let ext = r.execute(repeat).await;
        assert!(ext.ok && ext.message.contains("extended"), "{ext:?}");
        // A block with no timeout.
        assert!(
            r.execute(order("route-null", Action::Add, "198.51.100.42", None))
                .await
                .ok
        );
        clock.advance(Duration::from_secs(1));
        let mut ids = [next_lift(&mut lifted).await, next_lift(&mut lifted).await];
        ids.sort();
        assert_eq!(
            ids,
            [
                "cmd-route-null-198.51.100.40",
                "cmd-route-null-2001:db8::40"
            ]
        );
        assert_eq!(route_of("198.51.100.40"), None);
        assert_eq!(route_of("2001:db8::40"), None);
        // The extended block and the permanent one are still there after the
        // original timeout has passed.
        clock.advance(Duration::from_millis(1200));
        assert_eq!(r.undo_expired().await.unwrap(), 0);
        assert!(route_of("198.51.100.41").is_some());
        assert!(route_of("198.51.100.42").is_some());
        let left: Vec<String> = ledger
            .list()
            .await
            .unwrap()
            .iter()
            .map(|b| b.srcip.to_string())
            .collect();
        assert_eq!(left, ["198.51.100.41", "198.51.100.42"]);
        let log = std::fs::read_to_string(dir.path().join("active-responses.log")).unwrap();
        assert!(
            log.contains(" delete - 198.51.100.40 1700000000.4242 31151\n"),
            "{log}"
        );
        assert!(
            log.contains(" delete - 2001:db8::40 1700000000.4242 31151\n"),
            "{log}"
        );
        stop.cancel();
        timer.await.unwrap();
    });
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: a private network namespace")]
fn a_restart_still_lifts_blocks_on_time_and_at_start_if_overdue() {
    in_netns("a_restart_still_lifts_blocks", || async {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("agent.db");
        let ledger = ledger_at(&db, true).await;
        let clock = ManualClock::starting_now();
        let r = on_clock(dir.path(), &ledger, &clock);
        let stop = CancellationToken::new();
        let (_, timer) = r.start(stop.clone()).await;
        assert!(
            r.execute(order("route-null", Action::Add, "198.51.100.50", Some(1)))
                .await
                .ok
        );
        assert!(
            r.execute(order("route-null", Action::Add, "198.51.100.51", Some(3)))
                .await
                .ok
        );
        // The agent stops at once: nothing is undone by stopping.
        stop.cancel();
        timer.await.unwrap();
        drop(r);
        ledger.pool().close().await;
        assert!(route_of("198.51.100.50").is_some());
        // Down long enough for the first block to expire.
        clock.advance(Duration::from_millis(1500));
        assert!(
            route_of("198.51.100.50").is_some(),
            "nothing lifts it while the agent is down"
        );

        let ledger = ledger_at(&db, false).await;
        let r = on_clock(dir.path(), &ledger, &clock);
        let mut lifted = r.subscribe_reports();
        let stop = CancellationToken::new();
        let (report, timer) = r.start(stop.clone()).await;
        assert_eq!(report.expired_undone, 1, "{report:?}");
        assert_eq!(
            next_lift(&mut lifted).await,
            "cmd-route-null-198.51.100.50",
            "the overdue block, lifted at start"
        );
        assert_eq!(route_of("198.51.100.50"), None);
        assert!(route_of("198.51.100.51").is_some(), "not yet due");
        clock.advance(Duration::from_millis(1500));
        assert_eq!(
            next_lift(&mut lifted).await,
            "cmd-route-null-198.51.100.51",
            "the second block, lifted by the new timer"
        );
        assert_eq!(route_of("198.51.100.51"), None);
        assert!(ledger.list().await.unwrap().is_empty());
        stop.cancel();
        timer.await.unwrap();
    });
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: a private network namespace")]
fn refusals_add_nothing() {
    in_netns("refusals_add_nothing", || async {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
        run(&["ip", "addr", "add", "192.0.2.10/24", "dev", "lo"]);
        run(&["ip", "addr", "add", "2001:db8:aa::10/64", "dev", "lo"]);
        // A network with a gateway, as a host's uplink.
        run(&[
            "ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
        ]);
        run(&["ip", "link", "set", "uplink0", "up"]);
        run(&["ip", "link", "set", "uplink1", "up"]);
        run(&["ip", "addr", "add", "100.96.0.2/24", "dev", "uplink0"]);
        run(&["ip", "route", "add", "default", "via", "100.96.0.254"]);
        let cfg = RespondConfig {
            white_list: vec![
                "203.0.113.0/24".parse().unwrap(),
                "2001:db8:bb::/48".parse().unwrap(),
            ],
            ..config(dir.path())
        };
        let manager: IpAddr = "198.51.100.1".parse().unwrap();
        let r = Responder::new(cfg, ledger.clone(), vec![manager]).unwrap();
        let before = routes();
        let cases = [
            ("192.0.2.10", "own address", "is an address of this agent"),
            (
                "2001:db8:aa::10",
                "own address",
                "is an address of this agent",
            ),
            (
                "::ffff:192.0.2.10",
                "own address",
                "is an address of this agent",
            ),
            ("198.51.100.1", "manager", "is the manager's address"),
            ("::ffff:198.51.100.1", "manager", "is the manager's address"),
            ("127.0.0.1", "loopback", "loopback"),
            ("::1", "loopback", "loopback"),
            ("0.0.0.0", "unspecified", "unspecified"),
            ("::", "unspecified", "unspecified"),
            ("224.0.0.251", "multicast", "multicast"),
            ("ff02::1", "multicast", "multicast"),
            ("255.255.255.255", "broadcast", "broadcast"),
            ("169.254.169.254", "link-local", "link-local"),
            ("fe80::1", "link-local", "link-local"),
            ("::127.0.0.1", "loopback", "loopback"),
            ("64:ff9b::7f00:1", "loopback", "loopback"),
            ("64:ff9b::c633:6401", "manager", "is the manager's address"),
            ("100.96.0.254", "gateway", "is a gateway of this host"),
            (
                "100.96.0.255",
                "subnet broadcast address",
                "broadcast address of this host's subnet 100.96.0.0/24",
            ),
            (
                "100.96.0.0",
                "subnet network address",
                "network address of this host's subnet 100.96.0.0/24",
            ),
            ("192.0.2.255", "subnet broadcast address", "192.0.2.0/24"),
            (
                "203.0.113.99",
                "white-listed",
                "white-listed (203.0.113.0/24)",
            ),
            (
                "2001:db8:bb::1",
                "white-listed",
                "white-listed (2001:db8:bb::/48)",
            ),
            (
                "198.51.100.7;rm -rf /",
                "not an address",
                "is not an IP address",
            ),
            ("", "not an address", "is not an IP address"),
        ];
        for (ip, reason, text) in cases {
            for response in ["route-null", "firewall-drop", "host-deny"] {
                let out = r.execute(order(response, Action::Add, ip, Some(600))).await;
                assert!(!out.ok, "{ip} {response}: {out:?}");
                let refusal = out
                    .refusal
                    .as_ref()
                    .unwrap_or_else(|| panic!("{ip}: {out:?}"));
                assert_eq!(refusal.reason(), reason, "{ip}");
                assert!(out.message.starts_with("refused: "), "{}", out.message);
                assert!(out.message.contains(text), "{ip}: {}", out.message);
            }
        }
        assert_eq!(routes(), before);
        assert!(ledger.list().await.unwrap().is_empty());
        assert!(!dir.path().join("hosts.deny").exists());
        assert!(!dir.path().join("active-responses.log").exists());
        // The manager's address can change at run time.
        r.set_manager_addresses(vec!["198.51.100.2".parse().unwrap()]);
        let out = r
            .execute(order("route-null", Action::Add, "198.51.100.2", None))
            .await;
        assert_eq!(out.refusal.unwrap().reason(), "manager");
        assert!(
            r.execute(order("route-null", Action::Add, "198.51.100.1", None))
                .await
                .ok
        );
    });
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: a private network namespace")]
fn firewall_drop_uses_an_nft_set_with_timeouts() {
    palisade_test_needs::root();
    palisade_test_needs::tool("nft", "nftables");
    in_netns("firewall_drop_uses_an_nft_set_with_timeouts", || async {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
        let clock = ManualClock::starting_now();
        let r = on_clock(dir.path(), &ledger, &clock);
        let out = r
            .execute(order(
                "firewall-drop",
                Action::Add,
                "198.51.100.60",
                Some(600),
            ))
            .await;
        assert!(out.ok, "{out:?}");
        assert!(
            r.execute(order("firewall-drop", Action::Add, "2001:db8::60", None))
                .await
                .ok
        );
        assert_eq!(
            nft_elements("blocked4"),
            [("198.51.100.60".to_owned(), Some(600))]
        );
        assert_eq!(
            nft_elements("blocked6"),
            [("2001:db8::60".to_owned(), None)]
        );
        let ruleset = run(&["nft", "list", "table", "inet", "palisade"]);
        for rule in [
            "ip saddr @blocked4 drop",
            "ip6 saddr @blocked6 drop",
            "hook input",
            "hook forward",
        ] {
            assert!(ruleset.contains(rule), "{rule} missing:\n{ruleset}");
        }
        // Extension: the element gets the new, longer timeout.
        let mut again = order("firewall-drop", Action::Add, "198.51.100.60", Some(1200));
        again.command_id.push_str("-again");
        assert!(r.execute(again).await.ok);
        assert_eq!(
            nft_elements("blocked4"),
            [("198.51.100.60".to_owned(), Some(1200))]
        );
        // Delete, and delete again.
        for _ in 0..2 {
            let out = r
                .execute(order(
                    "firewall-drop",
                    Action::Delete,
                    "198.51.100.60",
                    None,
                ))
                .await;
            assert!(out.ok, "{out:?}");
            assert!(nft_elements("blocked4").is_empty());
        }
        // The kernel lifts a ban by itself: no timer runs here.
        assert!(
            r.execute(order(
                "firewall-drop",
                Action::Add,
                "198.51.100.61",
                Some(1)
            ))
            .await
            .ok
        );
        assert_eq!(nft_elements("blocked4").len(), 1);
        eventually("the kernel expires the element", || {
            nft_elements("blocked4").is_empty()
        })
        .await;
        // The ledger still holds it; the undo at expiry succeeds although
        // the element is already gone.
        assert_eq!(r.undo_expired().await.unwrap(), 0, "not due by the clock");
        clock.advance(Duration::from_secs(1));
        assert_eq!(r.undo_expired().await.unwrap(), 1);
        assert_eq!(
            ledger.list().await.unwrap().len(),
            1,
            "only the IPv6 block is left"
        );
    });
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: a private network namespace")]
fn firewall_drop_reconciles_its_set() {
    palisade_test_needs::root();
    palisade_test_needs::tool("nft", "nftables");
    in_netns("firewall_drop_reconciles_its_set", || async {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("agent.db");
        let ledger = ledger_at(&db, true).await;
        let clock = ManualClock::starting_now();
        let r = on_clock(dir.path(), &ledger, &clock);
        assert!(
            r.execute(order(
                "firewall-drop",
                Action::Add,
                "198.51.100.70",
                Some(600)
            ))
            .await
            .ok
        );
        assert!(
            r.execute(order(
                "firewall-drop",
                Action::Add,
                "2001:db8::70",
                Some(600)
            ))
            .await
            .ok
        );
        drop(r);
        ledger.pool().close().await;
        // While down: one element flushed, an orphan element added.
        run(&[
            "nft",
            "delete",
            "element",
            "inet",
            "palisade",
            "blocked4",
            "{ 198.51.100.70 }",
        ]);
        run(&[
            "nft",
            "add",
            "element",
            "inet",
            "palisade",
            "blocked4",
            "{ 198.51.100.71 }",
        ]);
        // Down for 100 s of the blocks' 600.
        clock.advance(Duration::from_secs(100));
        let ledger = ledger_at(&db, false).await;
        let r = on_clock(dir.path(), &ledger, &clock);
        let stop = CancellationToken::new();
        let (report, timer) = r.start(stop.clone()).await;
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(
            (
                report.readded("firewall-drop"),
                report.removed("firewall-drop")
            ),
            (1, 1),
            "{report:?}"
        );
        let v4 = nft_elements("blocked4");
        assert_eq!(v4.len(), 1, "{v4:?}");
        assert_eq!(v4[0].0, "198.51.100.70");
        // Re-added with what was left of its 600 s.
        assert_eq!(v4[0].1, Some(500), "{v4:?}");
        assert_eq!(nft_elements("blocked6").len(), 1);
        stop.cancel();
        timer.await.unwrap();
    });
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: a private network namespace")]
fn concurrent_route_commands_on_a_multi_threaded_runtime() {
    palisade_test_needs::root();
    std::thread::spawn(|| {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).unwrap();
        run(&["ip", "link", "set", "lo", "up"]);
        // Worker threads inherit the namespace of the thread that builds them.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
            let r = Responder::new(config(dir.path()), ledger.clone(), vec![]).unwrap();
            let ips: Vec<String> = (1..=12)
                .flat_map(|i| [format!("198.51.100.{i}"), format!("2001:db8::{i:x}")])
                .collect();
            let mut tasks = Vec::new();
            for ip in &ips {
                for k in 0..2 {
                    let (r, ip) = (r.clone(), ip.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut add = order("route-null", Action::Add, &ip, Some(600));
                        add.command_id.push_str(&format!("-{k}"));
                        r.execute(add).await
                    }));
                }
            }
            for t in tasks {
                let out = t.await.unwrap();
                assert!(out.ok, "{out:?}");
            }
            let ours: Vec<_> = routes()
                .into_iter()
                .filter(|(_, _, p)| p == "173")
                .collect();
            assert_eq!(ours.len(), ips.len(), "{ours:?}");
            let blocks = ledger.list().await.unwrap();
            assert_eq!(blocks.len(), ips.len());
            assert!(blocks.iter().all(|b| b.offences == 2));
            let mut tasks = Vec::new();
            for ip in &ips {
                let (r, ip) = (r.clone(), ip.clone());
                tasks.push(tokio::spawn(async move {
                    r.execute(order("route-null", Action::Delete, &ip, None))
                        .await
                }));
            }
            for t in tasks {
                assert!(t.await.unwrap().ok);
            }
            assert!(
                routes().iter().all(|(_, _, p)| p != "173"),
                "{:?}",
                routes()
            );
            assert!(ledger.list().await.unwrap().is_empty());
        });
    })
    .join()
    .expect("test thread panicked");
}
