//! Active responses that need no kernel state: host-deny on a temporary
//! file, custom scripts with OSSEC's argument protocol (a script that
//! records its argv), time limits, and the ledger across reopening.
//! These run without root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_agent::respond::{
    Action, Ledger, ManualClock, Order, RawRespondConfig, RespondConfig, Responder,
    ledger::MIGRATION_SQL, ledger::NewBlock,
};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tokio_util::sync::CancellationToken;

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

/// A script that appends its argv (one argument per line, then `--`) to `record`.
fn recorder(dir: &Path, name: &str, record: &Path, extra: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> '{}'; done\necho -- >> '{}'\n{extra}\n",
            record.display(),
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn invocations(record: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    text.split("--\n")
        .filter(|s| !s.is_empty())
        .map(|s| s.lines().map(str::to_owned).collect())
        .collect()
}

fn config(dir: &Path, commands: &[(&str, &Path)], timeout: &str) -> RespondConfig {
    let mut raw: RawRespondConfig = toml::from_str(&format!(
        "hosts_deny = \"hosts.deny\"\nlog_file = \"active-responses.log\"\nscript_timeout = \"{timeout}\"\n"
    ))
    .unwrap();
    for (name, path) in commands {
        raw.commands.insert((*name).into(), path.to_path_buf());
    }
    RespondConfig::from_raw(raw, dir).unwrap()
}

fn order(response: &str, action: Action, ip: &str, timeout: Option<u64>) -> Order {
    Order {
        command_id: "c1".into(),
        response: response.into(),
        action: Some(action),
        srcip: ip.into(),
        user: String::new(),
        timeout: timeout.map(Duration::from_secs),
        alert_id: "1700000000.12345".into(),
        rule_id: 31151,
        agent_id: "001".into(),
        location: "(web01) 10.0.0.5->/var/log/nginx/access.log".into(),
    }
}

#[tokio::test]
async fn host_deny_adds_once_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hosts.deny"),
        "# local policy\nsshd: 203.0.113.5\n",
    )
    .unwrap();
    let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
    let r = Responder::new(config(dir.path(), &[], "5s"), ledger.clone(), vec![]).unwrap();
    for ip in ["198.51.100.7", "2001:db8::7", "198.51.100.7"] {
        let out = r
            .execute(order("host-deny", Action::Add, ip, Some(600)))
            .await;
        assert!(out.ok, "{out:?}");
    }
    let deny = dir.path().join("hosts.deny");
    assert_eq!(
        std::fs::read_to_string(&deny).unwrap(),
        "# local policy\nsshd: 203.0.113.5\nALL:198.51.100.7\nALL:[2001:db8::7]\n"
    );
    let out = r
        .execute(order("host-deny", Action::Delete, "198.51.100.7", None))
        .await;
    assert!(out.ok, "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&deny).unwrap(),
        "# local policy\nsshd: 203.0.113.5\nALL:[2001:db8::7]\n"
    );
    assert_eq!(ledger.list().await.unwrap().len(), 1);
    let log = std::fs::read_to_string(dir.path().join("active-responses.log")).unwrap();
    let tails: Vec<&str> = log
        .lines()
        .map(|l| l.split_once(" /palisade/").unwrap().1)
        .collect();
    assert_eq!(
        tails,
        [
            "active-response/bin/host-deny.sh add - 198.51.100.7 1700000000.12345 31151",
            "active-response/bin/host-deny.sh add - 2001:db8::7 1700000000.12345 31151",
            "active-response/bin/host-deny.sh delete - 198.51.100.7 1700000000.12345 31151",
        ]
    );
}

#[tokio::test]
async fn scripts_get_ossec_arguments_and_run_once_per_block() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("argv");
    let script = recorder(dir.path(), "notify.sh", &record, "");
    let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
    let r = Responder::new(
        config(dir.path(), &[("notify", &script)], "5s"),
        ledger.clone(),
        vec![],
    )
    .unwrap();
    let mut o = order("notify", Action::Add, "198.51.100.7", Some(600));
    o.user = "www-data".into();
    let out = r.execute(o.clone()).await;
    assert!(out.ok, "{out:?}");
    assert!(out.message.contains("exit status 0"), "{}", out.message);
    // The same command again (sent again after a lost stream): carried
    // out once.
    let same = r.execute(o.clone()).await;
    assert!(
        same.ok && same.message.contains("already blocked by this command"),
        "{same:?}"
    );
    // A repeat (another command) is an extension: OSSEC does not run the
    // script again.
    o.command_id = "c2".into();
    let again = r.execute(o).await;
    assert!(again.ok && again.message.contains("extended"), "{again:?}");
    // The delete gets the add's arguments.
    let mut d = order("notify", Action::Delete, "198.51.100.7", None);
    d.location = String::new();
    assert!(r.execute(d).await.ok);
    // A manual command: no alert, no rule, no location.
    let manual = Order {
        alert_id: String::new(),
        rule_id: 0,
        agent_id: String::new(),
        location: String::new(),
        ..order("notify", Action::Add, "2001:db8::7", None)
    };
    assert!(r.execute(manual).await.ok);
    let expected = |action: &str, user: &str, ip: &str| -> Vec<String> {
        [
            action,
            user,
            ip,
            "1700000000.12345",
            "31151",
            "(web01)",
            "10.0.0.5->/var/log/nginx/access.log",
            "-",
        ]
        .map(String::from)
        .to_vec()
    };
    assert_eq!(
        invocations(&record),
        [
            expected("add", "www-data", "198.51.100.7"),
            expected("delete", "www-data", "198.51.100.7"),
            [
                "add",
                "-",
                "2001:db8::7",
                "(from_the_server)",
                "(no_rule_id)",
                "-",
                "-"
            ]
            .map(String::from)
            .to_vec(),
        ]
    );
    let log = std::fs::read_to_string(dir.path().join("active-responses.log")).unwrap();
    let first = log.lines().next().unwrap();
    assert!(
        first.ends_with(&format!(
            " {} add www-data 198.51.100.7 1700000000.12345 31151",
            script.display()
        )),
        "{log}"
    );
}

#[tokio::test]
async fn an_agent_id_without_a_parenthesised_location_is_ossecs_first_location_argument() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("argv");
    let script = recorder(dir.path(), "notify.sh", &record, "");
    let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
    let r = Responder::new(
        config(dir.path(), &[("notify", &script)], "5s"),
        ledger,
        vec![],
    )
    .unwrap();
    let o = Order {
        agent_id: "083".into(),
        location: "/var/log/nginx/access.log".into(),
        ..order("notify", Action::Add, "198.51.100.8", None)
    };
    assert!(r.execute(o).await.ok);
    assert_eq!(
        invocations(&record)[0][5..],
        ["(083)", "/var/log/nginx/access.log", "-"].map(String::from)
    );
}

#[tokio::test]
async fn a_crafted_address_is_refused_before_any_script_runs() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("argv");
    let script = recorder(dir.path(), "notify.sh", &record, "");
    let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
    let r = Responder::new(
        config(dir.path(), &[("notify", &script)], "5s"),
        ledger.clone(),
        vec![],
    )
    .unwrap();
    for (ip, action) in [
        (";rm -rf /", Action::Add),
        ("198.51.100.7;rm -rf /", Action::Add),
        ("$(touch /tmp/pwned)", Action::Delete),
        ("198.51.100.7 10.0.0.1", Action::Add),
    ] {
        let out = r.execute(order("notify", action, ip, Some(60))).await;
        assert!(!out.ok, "{out:?}");
        assert_eq!(out.refusal.unwrap().reason(), "not an address");
    }
    // A user or alert id with characters OSSEC never sends is refused too.
    let mut o = order("notify", Action::Add, "198.51.100.7", None);
    o.user = "root; reboot".into();
    assert!(!r.execute(o).await.ok);
    let mut o = order("notify", Action::Add, "198.51.100.7", None);
    o.alert_id = "1 2".into();
    assert!(!r.execute(o).await.ok);
    assert!(!record.exists(), "the script ran");
    assert!(ledger.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_hung_script_is_killed_at_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("argv");
    // It also leaves a child behind holding its output.
    let script = recorder(dir.path(), "hang.sh", &record, "sleep 300 &\nsleep 300");
    let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
    let r = Responder::new(
        config(dir.path(), &[("hang", &script)], "500ms"),
        ledger.clone(),
        vec![],
    )
    .unwrap();
    let started = Instant::now();
    let out = r
        .execute(order("hang", Action::Add, "198.51.100.7", Some(60)))
        .await;
    assert!(!out.ok, "{out:?}");
    assert!(
        out.message.contains("killed at the time limit"),
        "{}",
        out.message
    );
    // Well short of the script's own 300 s.
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(invocations(&record).len(), 1, "it did start");
    assert!(
        ledger.list().await.unwrap().is_empty(),
        "a failed add is not recorded"
    );
}

#[tokio::test]
async fn a_failing_script_reports_its_status_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("argv");
    let script = recorder(
        dir.path(),
        "fail.sh",
        &record,
        "echo 'no firewall here' >&2\nexit 3",
    );
    let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
    let r = Responder::new(
        config(dir.path(), &[("fail", &script)], "5s"),
        ledger.clone(),
        vec![],
    )
    .unwrap();
    let out = r
        .execute(order("fail", Action::Add, "198.51.100.7", Some(60)))
        .await;
    assert!(!out.ok);
    assert!(
        out.message.contains("exit status 3: no firewall here"),
        "{}",
        out.message
    );
    assert!(ledger.list().await.unwrap().is_empty());
    // A configured script that does not exist.
    let r = Responder::new(
        config(
            dir.path(),
            &[("gone", &dir.path().join("missing.sh"))],
            "5s",
        ),
        ledger,
        vec![],
    )
    .unwrap();
    let out = r
        .execute(order("gone", Action::Add, "198.51.100.7", Some(60)))
        .await;
    assert!(!out.ok && out.message.contains("missing.sh"), "{out:?}");
}

#[tokio::test]
async fn unknown_responses_missing_actions_and_a_disabled_agent_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
    let r = Responder::new(config(dir.path(), &[], "5s"), ledger.clone(), vec![]).unwrap();
    let out = r
        .execute(order("route-nul", Action::Add, "198.51.100.7", None))
        .await;
    assert!(
        !out.ok && out.message.contains("unknown response \"route-nul\""),
        "{out:?}"
    );
    let out = r
        .execute(Order {
            action: None,
            ..order("host-deny", Action::Add, "198.51.100.7", None)
        })
        .await;
    assert!(
        !out.ok && out.message.contains("no valid action"),
        "{out:?}"
    );
    let disabled = RespondConfig {
        disabled: true,
        ..config(dir.path(), &[], "5s")
    };
    let r = Responder::new(disabled, ledger.clone(), vec![]).unwrap();
    let out = r
        .execute(order("host-deny", Action::Add, "198.51.100.7", None))
        .await;
    assert!(!out.ok && out.message.contains("disabled"), "{out:?}");
    assert!(!dir.path().join("hosts.deny").exists());
    // The result for the manager carries the id, the action and the message.
    let result = out.to_proto();
    assert_eq!(result.command_id, "c1");
    assert_eq!(result.action, palisade_proto::v1::CommandAction::Add as i32);
    assert!(result.executed_at.is_some());
}

#[tokio::test]
async fn the_ledger_survives_reopening_and_extends_instead_of_duplicating() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agent.db");
    let ledger = ledger_at(&db, true).await;
    let new = |ip: &str, expires_at: Option<i64>| NewBlock {
        response: "route-null".into(),
        srcip: ip.parse().unwrap(),
        user: "-".into(),
        alert_id: "1700000000.1".into(),
        rule_id: 31151,
        command_id: "c1".into(),
        location: String::new(),
        expires_at,
    };
    let (b, existed) = ledger
        .record_add(&new("198.51.100.7", Some(5_000)), 1_000)
        .await
        .unwrap();
    assert!(!existed);
    assert_eq!(
        (b.offences, b.expires_at, b.added_at),
        (1, Some(5_000), 1_000)
    );
    // A later, longer block extends; a shorter one never shortens.
    let (b, existed) = ledger
        .record_add(&new("198.51.100.7", Some(9_000)), 2_000)
        .await
        .unwrap();
    assert!(existed);
    assert_eq!(
        (b.offences, b.expires_at, b.added_at, b.updated_at),
        (2, Some(9_000), 1_000, 2_000)
    );
    let (b, _) = ledger
        .record_add(&new("198.51.100.7", Some(3_000)), 2_500)
        .await
        .unwrap();
    assert_eq!((b.offences, b.expires_at), (3, Some(9_000)));
    // No timeout wins.
    let (b, _) = ledger
        .record_add(&new("198.51.100.7", None), 2_600)
        .await
        .unwrap();
    assert_eq!(b.expires_at, None);
    ledger
        .record_add(&new("2001:db8::7", Some(4_000)), 1_000)
        .await
        .unwrap();
    ledger.pool().close().await;

    let ledger = ledger_at(&db, false).await;
    let blocks = ledger.list().await.unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].offences, 4);
    assert_eq!(ledger.next_expiry().await.unwrap(), Some(4_000));
    assert_eq!(ledger.due(4_000).await.unwrap().len(), 1);
    assert!(ledger.due(3_999).await.unwrap().is_empty());
    assert!(
        ledger
            .remove("route-null", "2001:db8::7".parse().unwrap())
            .await
            .unwrap()
    );
    assert!(
        !ledger
            .remove("route-null", "2001:db8::7".parse().unwrap())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_block_that_expired_while_the_agent_was_down_is_lifted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agent.db");
    let clock = ManualClock::starting_now();
    let responder = |ledger: &Ledger| {
        Responder::with_clock(
            config(dir.path(), &[], "5s"),
            ledger.clone(),
            vec![],
            Arc::new(clock.clone()),
        )
        .unwrap()
    };
    let ledger = ledger_at(&db, true).await;
    let r = responder(&ledger);
    assert!(
        r.execute(order("host-deny", Action::Add, "198.51.100.7", Some(1)))
            .await
            .ok
    );
    assert!(
        r.execute(order("host-deny", Action::Add, "198.51.100.8", Some(3600)))
            .await
            .ok
    );
    drop(r);
    ledger.pool().close().await;
    // Down for longer than the first block's timeout.
    clock.advance(Duration::from_millis(1100));
    // Someone also removed the line of the block still due.
    let deny = dir.path().join("hosts.deny");
    std::fs::write(&deny, "ALL:198.51.100.7\n").unwrap();

    let ledger = ledger_at(&db, false).await;
    let r = responder(&ledger);
    let stop = CancellationToken::new();
    let (report, timer) = r.start(stop.clone()).await;
    assert_eq!(report.expired_undone, 1, "{report:?}");
    assert_eq!(report.readded("host-deny"), 1, "{report:?}");
    assert_eq!(
        std::fs::read_to_string(&deny).unwrap(),
        "ALL:198.51.100.8\n"
    );
    let left = ledger.list().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].srcip.to_string(), "198.51.100.8");
    stop.cancel();
    timer.await.unwrap();
}

/// A responder (5 s default timeout) and its ledger in `dir`, on a clock
/// the test moves.
async fn on_a_moved_clock(dir: &Path) -> (Ledger, ManualClock, Responder) {
    let ledger = ledger_at(&dir.join("agent.db"), true).await;
    let clock = ManualClock::starting_now();
    let r = Responder::with_clock(
        config(dir, &[], "5s"),
        ledger.clone(),
        vec![],
        Arc::new(clock.clone()),
    )
    .unwrap();
    (ledger, clock, r)
}

/// The timer, on a clock the test moves: a block is lifted when its time
/// comes and not before, an extension postpones it, a block without a
/// timeout stays, and each lift is reported for the manager.
#[tokio::test]
async fn the_timer_lifts_blocks_at_their_expiry_and_extensions_postpone_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, clock, r) = on_a_moved_clock(dir.path()).await;
    let mut lifted = r.subscribe_reports();
    let stop = CancellationToken::new();
    let (_, timer) = r.start(stop.clone()).await;
    let add = |ip: &'static str, timeout: Option<u64>| {
        let r = r.clone();
        async move {
            let mut o = order("host-deny", Action::Add, ip, timeout);
            // Each add its own command; an extension's is the block's now.
            o.command_id = format!("add-{ip}-{}", timeout.unwrap_or(0));
            let out = r.execute(o).await;
            assert!(out.ok, "{out:?}");
            out
        }
    };
    add("198.51.100.40", Some(10)).await;
    add("198.51.100.41", Some(10)).await;
    let ext = add("198.51.100.41", Some(600)).await;
    assert!(ext.message.contains("extended for 600s"), "{ext:?}");
    add("198.51.100.42", None).await;
    let deny = dir.path().join("hosts.deny");
    clock.advance(Duration::from_secs(9));
    assert_eq!(r.undo_expired().await.unwrap(), 0, "nothing is due yet");
    clock.advance(Duration::from_secs(1));
    let report = lifted.recv().await.unwrap();
    assert_eq!(report.command_id, "add-198.51.100.40-10");
    assert_eq!(
        report.action,
        palisade_proto::v1::CommandAction::Delete as i32
    );
    assert!(
        report.ok && report.message.contains("at its timeout"),
        "{report:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&deny).unwrap(),
        "ALL:198.51.100.41\nALL:198.51.100.42\n"
    );
    // Long after the first timeout, the extended block and the permanent
    // one are still in force; the extended one goes at its new time.
    clock.advance(Duration::from_secs(580));
    assert_eq!(r.undo_expired().await.unwrap(), 0);
    clock.advance(Duration::from_secs(10));
    let report = lifted.recv().await.unwrap();
    assert_eq!(report.command_id, "add-198.51.100.41-600");
    assert_eq!(
        std::fs::read_to_string(&deny).unwrap(),
        "ALL:198.51.100.42\n"
    );
    let left: Vec<String> = ledger
        .list()
        .await
        .unwrap()
        .iter()
        .map(|b| b.srcip.to_string())
        .collect();
    assert_eq!(left, ["198.51.100.42"]);
    let log = std::fs::read_to_string(dir.path().join("active-responses.log")).unwrap();
    for ip in ["198.51.100.40", "198.51.100.41"] {
        assert!(
            log.contains(&format!(" delete - {ip} 1700000000.12345 31151\n")),
            "{log}"
        );
    }
    stop.cancel();
    timer.await.unwrap();
}

#[tokio::test]
async fn undo_all_lifts_everything() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
    let r = Responder::new(config(dir.path(), &[], "5s"), ledger.clone(), vec![]).unwrap();
    for ip in ["198.51.100.7", "198.51.100.8"] {
        assert!(
            r.execute(order("host-deny", Action::Add, ip, None))
                .await
                .ok
        );
    }
    assert_eq!(r.undo_all().await.unwrap(), 2);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("hosts.deny")).unwrap(),
        ""
    );
    assert!(ledger.list().await.unwrap().is_empty());
}

/// The uplink runs commands on a multi-threaded runtime: the futures must
/// be `Send`, and concurrent commands must not trip over each other (one
/// netlink dump at a time per socket; a hosts.deny rewrite racing an add).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_do_not_interfere() {
    fn send<T: Send>(t: T) -> T {
        t
    }
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
    let r = Responder::new(config(dir.path(), &[], "5s"), ledger.clone(), vec![]).unwrap();
    let run_all = |jobs: Vec<(Action, String)>| {
        let r = r.clone();
        async move {
            let mut tasks = Vec::new();
            for (action, ip) in jobs {
                let r = r.clone();
                tasks.push(tokio::spawn(send(async move {
                    r.execute(order("host-deny", action, &ip, None)).await
                })));
            }
            for t in tasks {
                let out = t.await.unwrap();
                assert!(out.ok, "{out:?}");
            }
        }
    };
    run_all(
        (1..=8)
            .map(|i| (Action::Add, format!("198.51.100.{i}")))
            .collect(),
    )
    .await;
    let mut mixed: Vec<(Action, String)> = Vec::new();
    for i in 1..=8 {
        mixed.push((Action::Delete, format!("198.51.100.{i}")));
        mixed.push((Action::Add, format!("203.0.113.{i}")));
    }
    run_all(mixed).await;
    let text = std::fs::read_to_string(dir.path().join("hosts.deny")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    let mut expected: Vec<String> = (1..=8).map(|i| format!("ALL:203.0.113.{i}")).collect();
    expected.sort_unstable();
    assert_eq!(lines, expected);
    assert_eq!(ledger.list().await.unwrap().len(), 8);
}

#[tokio::test]
async fn dry_run_changes_nothing_and_says_would() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &[], "5s");
    cfg.dry_run = true;
    let ledger = ledger_at(&dir.path().join("agent.db"), true).await;
    let responder = Responder::new(cfg, ledger, vec![]).unwrap();
    let add = responder
        .execute(order("host-deny", Action::Add, "198.51.100.7", Some(60)))
        .await;
    assert!(add.ok, "{}", add.message);
    assert!(
        add.message.contains("would add it to hosts.deny"),
        "{}",
        add.message
    );
    let hosts = std::fs::read_to_string(dir.path().join("hosts.deny")).unwrap_or_default();
    assert!(
        !hosts.contains("198.51.100.7"),
        "dry run wrote hosts.deny: {hosts}"
    );
}

/// The manager's add and the unblock that lifts it can reach the agent in
/// the wrong order (two of its tasks, or two managers, sending): the add
/// that arrives after its unblock is not carried out, whereas a block
/// decided after the unblock is, and so is a stale add once the unblock
/// is long past; an unblock older than a recent block in force leaves it.
#[tokio::test]
async fn an_add_overtaken_by_its_unblock_is_not_carried_out() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, clock, r) = on_a_moved_clock(dir.path()).await;
    let command = |id: &str, action: Action| {
        let mut o = order("host-deny", action, "198.51.100.9", Some(600));
        o.command_id = id.into();
        o
    };
    let deny = dir.path().join("hosts.deny");
    let lift = r.execute(command("8", Action::Delete)).await;
    assert!(lift.ok, "{lift:?}");
    let stale = r.execute(command("5", Action::Add)).await;
    assert!(!stale.ok, "{stale:?}");
    assert!(
        stale.message.contains("unblocked by a later command (8)"),
        "{stale:?}"
    );
    assert!(ledger.list().await.unwrap().is_empty());
    assert_eq!(std::fs::read_to_string(&deny).unwrap_or_default(), "");
    let newer = r.execute(command("20", Action::Add)).await;
    assert!(newer.ok, "{newer:?}");
    assert_eq!(
        std::fs::read_to_string(&deny).unwrap(),
        "ALL:198.51.100.9\n"
    );
    // Sent again, or an older add overtaken by it: no extension, no
    // offence.
    for (id, said) in [("20", "by this command"), ("15", "by a later command (20)")] {
        let again = r.execute(command(id, Action::Add)).await;
        assert!(again.ok && again.message.contains(said), "{again:?}");
    }
    assert_eq!(ledger.list().await.unwrap()[0].offences, 1);
    // An unblock older than the block in force leaves it.
    let older = r.execute(command("16", Action::Delete)).await;
    assert!(
        older.ok
            && older
                .message
                .contains("blocked again by a later command (20)"),
        "{older:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&deny).unwrap(),
        "ALL:198.51.100.9\n"
    );
    let lift = r.execute(command("21", Action::Delete)).await;
    assert!(lift.ok, "{lift:?}");
    assert_eq!(std::fs::read_to_string(&deny).unwrap(), "");
    clock.advance(palisade_agent::respond::lifted::REMEMBERED_FOR);
    let late = r.execute(command("7", Action::Add)).await;
    assert!(late.ok, "remembered for a while only: {late:?}");
    // Long after: ids are not compared with the block in force (a
    // manager's rebuilt database counts from 1 again); the unblock lifts.
    clock.advance(palisade_agent::respond::lifted::REMEMBERED_FOR);
    let lift = r.execute(command("2", Action::Delete)).await;
    assert!(lift.ok && lift.message.contains("unblocked"), "{lift:?}");
    assert_eq!(std::fs::read_to_string(&deny).unwrap(), "");
}
