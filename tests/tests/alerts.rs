//! A scanner's burst of 404s, written to a real access log, travels from
//! the agent to the manager and raises rule 31151 there, stored with its
//! log lines; the control API returns it, page after page.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use palisade_manager::pipeline::analysis::Judged;
use palisade_manager::store::AlertFilter;
use palisade_tests::{AgentHandle, ManagerHandle, append_lines, eventually, scan_lines};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_raises_31151_on_the_manager() -> anyhow::Result<()> {
    let manager = ManagerHandle::start().await?;
    let (id, config, log) = manager.add_access_log_agent("web01").await?;
    let mut agent = AgentHandle::start(config);

    let lines = scan_lines("198.51.100.23");
    // Thirteen 404s are not enough.
    append_lines(&log, lines[..13].iter().cloned())?;
    let store = manager.store().await?;
    let filter = AlertFilter {
        rule_id: Some(31151),
        ..AlertFilter::default()
    };
    eventually(Duration::from_secs(20), "13 archived lines", || async {
        Ok((store.archived_events(Some(&id)).await?.len() == 13).then_some(()))
    })
    .await?;
    assert!(
        store.alerts(&filter).await?.is_empty(),
        "31151 fired before the 14th 404"
    );

    append_lines(&log, lines[13..].iter().cloned())?;
    let alerts = eventually(Duration::from_secs(20), "rule 31151", || async {
        let a = store.alerts(&filter).await?;
        Ok((!a.is_empty()).then_some(a))
    })
    .await?;
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0].alert;
    assert_eq!(alert.level, 10);
    assert_eq!(alert.srcip.as_deref(), Some("198.51.100.23"));
    assert_eq!(alerts[0].origin.agent_id.as_deref(), Some(id.as_str()));
    assert_eq!(alert.location, format!("(web01) any->{}", log.display()));
    assert_eq!(alerts[0].event_sequence, Some(14));
    // The triggering line first, then the correlated ones.
    assert_eq!(alert.full_log, lines[13].as_bytes());
    assert!(
        alert.correlated.len() >= 12,
        "{} lines",
        alert.correlated.len()
    );
    agent.stop().await?;
    Ok(())
}

/// `palisadectl alerts --limit N` returns N alerts also past the 10,000
/// the manager answers per call (it pages), newest last, none twice; with
/// `--follow` the backlog is as long as asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_page_past_ten_thousand() -> anyhow::Result<()> {
    let manager = ManagerHandle::start().await?;
    let (id, config, log) = manager.add_access_log_agent("web01").await?;
    let mut agent = AgentHandle::start(config);
    append_lines(&log, scan_lines("198.51.100.23"))?;
    let store = manager.store().await?;
    let filter = AlertFilter {
        rule_id: Some(31151),
        ..AlertFilter::default()
    };
    let template = eventually(Duration::from_secs(20), "rule 31151", || async {
        Ok(store.alerts(&filter).await?.into_iter().next())
    })
    .await?;
    agent.stop().await?;
    // Many more of the same (without the earlier lines, to keep them
    // small), stored as the pipeline stores them.
    let mut alert = template.alert.clone();
    alert.correlated.clear();
    let judged: Vec<Judged> = (0..10_050)
        .map(|_| Judged {
            sequence: 1,
            alert: alert.clone(),
        })
        .collect();
    store.store_events(&id, &[], &judged, false).await?;
    let all = AlertFilter {
        limit: u32::MAX,
        ..AlertFilter::default()
    };
    let total = store.alerts(&all).await?.len();
    assert!(total > 10_050, "{total}");

    let ctl_toml = manager.operator_dir().join("ctl-test.toml");
    std::fs::write(
        &ctl_toml,
        format!(
            "manager = \"{}\"\nserver_name = \"localhost\"\nca_cert = \"ca.pem\"\ncert = \"operator.pem\"\nkey = \"operator.key\"\n",
            manager.addr
        ),
    )?;
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-ctl"))
            .arg("--config")
            .arg(&ctl_toml)
            .args(args)
            .output()
            .expect("palisadectl runs");
        assert!(out.status.success(), "{out:?}");
        out.stdout
    };
    let ids = |json: &[u8]| -> Vec<i64> {
        serde_json::from_slice::<Vec<serde_json::Value>>(json)
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    let every = ids(&ctl(&["alerts", "--json", "--limit", "20000"]));
    assert_eq!(every.len(), total);
    assert!(
        every.windows(2).all(|w| w[0] < w[1]),
        "oldest first, none twice"
    );
    let newest = ids(&ctl(&["alerts", "--json", "--limit", "10001"]));
    assert_eq!(newest, every[total - 10_001..]);

    // The follower's backlog: the newest 10,001, then it waits.
    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_e2e-ctl"))
        .arg("--config")
        .arg(&ctl_toml)
        .args(["alerts", "--follow", "--json", "--limit", "10001"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = follow.stdout.take().expect("piped");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut backlog = Vec::new();
    while backlog.len() < 10_001 {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await??
            .expect("the backlog");
        let v: serde_json::Value = serde_json::from_str(&line)?;
        backlog.push(v["id"].as_str().unwrap().parse::<i64>()?);
    }
    assert_eq!(backlog, newest);
    follow.kill().await?;
    Ok(())
}
