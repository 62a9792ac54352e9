//! alerts.log and alerts.json written by the real manager: a scan raises
//! 31151, the manager stops cleanly, and both files hold the alert in
//! their formats (the JSON read by serde_json and by `jq`). A file left
//! from an earlier day is rotated to its dated name when the manager starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use palisade_manager::store::AlertFilter;
use palisade_tests::{AgentHandle, ManagerHandle, append_lines, eventually, scan_lines};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_is_written_to_alerts_log_and_alerts_json() -> anyhow::Result<()> {
    let mut manager = ManagerHandle::start().await?;
    manager.stop().await?;
    let alerts_dir = manager.dir.path().join("logs/alerts");
    let log_file = alerts_dir.join("alerts.log");
    let json_file = alerts_dir.join("alerts.json");
    // alerts.log is on by default; the JSON file is asked for.
    assert_eq!(
        manager.config.alert_files.log_file.as_ref(),
        Some(&log_file)
    );
    manager.config.alert_files.json_file = Some(json_file.clone());
    // Yesterday's alerts.log, left by a manager that stopped before midnight.
    std::fs::create_dir_all(&alerts_dir)?;
    std::fs::write(&log_file, "** Alert 1.1: - yesterday,\n\n")?;
    let yesterday = jiff::ZonedDateTime::now().yesterday()?;
    std::fs::File::options()
        .write(true)
        .open(&log_file)?
        .set_modified(std::time::SystemTime::try_from(yesterday.timestamp())?)?;
    manager.restart().await?;
    let dated = alerts_dir
        .join(yesterday.strftime("%Y").to_string())
        .join(yesterday.strftime("%b").to_string())
        .join(format!("alerts-{}.log", yesterday.strftime("%d")));
    let old = eventually(
        Duration::from_secs(10),
        "yesterday's file rotated",
        || async { Ok(std::fs::read_to_string(&dated).ok()) },
    )
    .await?;
    assert_eq!(old, "** Alert 1.1: - yesterday,\n\n");

    let (id, mut config, access_log) = manager.add_access_log_agent("web01").await?;
    // And sshd's log, whose decoder reads the client's port.
    let auth_log = manager.dir.path().join("auth.log");
    config.localfiles.push(palisade_agent::config::Localfile {
        location: auth_log.clone(),
        log_format: "syslog".into(),
    });
    let mut agent = AgentHandle::start(config);
    let lines = scan_lines("198.51.100.23");
    append_lines(&access_log, lines.iter().cloned())?;
    let sshd = "Nov 28 10:00:01 web01 sshd[123]: Failed password for root from 198.51.100.7 port 52144 ssh2";
    append_lines(&auth_log, [sshd.to_string()])?;
    let store = manager.store().await?;
    let first = |rule_id| {
        let store = &store;
        async move {
            let filter = AlertFilter {
                rule_id: Some(rule_id),
                ..AlertFilter::default()
            };
            eventually(Duration::from_secs(20), "the alert", || async {
                Ok(store.alerts(&filter).await?.into_iter().next())
            })
            .await
        }
    };
    let stored = first(31151).await?;
    let sshd_alert = first(5716).await?;
    agent.stop().await?;
    // A clean stop writes out whatever is still queued.
    manager.stop().await?;

    let a = &stored.alert;
    let alert_id = format!("{}.{}", a.time.as_second(), stored.id);
    let log_lines: Vec<String> = a.log_lines().map(|l| l.into_owned()).collect();

    // alerts.log: OSSEC's entry, with the mail flag (level 10 >= 7).
    let text = std::fs::read_to_string(&log_file)?;
    assert!(!text.contains("yesterday"), "{text}");
    let header = format!("** Alert {alert_id}: mail  - {}", a.groups);
    let entry: Vec<&str> = text
        .split("\n\n")
        .find(|e| e.starts_with(&header))
        .unwrap_or_else(|| panic!("no entry starting {header:?} in\n{text}"))
        .lines()
        .collect();
    let date = a
        .time
        .to_zoned_datetime(jiff::tz::TimeZone::system())
        .strftime("%Y %b %d %H:%M:%S")
        .to_string();
    assert_eq!(
        entry[1],
        format!("{date} (web01) any->{}", access_log.display())
    );
    assert_eq!(
        entry[2],
        format!("Rule: 31151 (level 10) -> '{}'", a.description)
    );
    assert_eq!(entry[3], "Src IP: 198.51.100.23");
    assert_eq!(entry[4], lines[13]);
    assert_eq!(&entry[4..], &log_lines[..log_lines.len().min(12)]);
    assert!(text.ends_with("\n\n"));

    // The port sshd's decoder read, where OSSEC prints it, kept by the store.
    assert_eq!(sshd_alert.alert.srcport.as_deref(), Some("52144"));
    let header = format!(
        "** Alert {}.{}: - ",
        sshd_alert.alert.time.as_second(),
        sshd_alert.id
    );
    let entry: Vec<&str> = text
        .split("\n\n")
        .find(|e| e.starts_with(&header))
        .unwrap_or_else(|| panic!("no entry starting {header:?} in\n{text}"))
        .lines()
        .collect();
    assert_eq!(
        &entry[3..],
        [
            "Src IP: 198.51.100.7",
            "Src Port: 52144",
            "User: root",
            sshd
        ]
    );

    // alerts.json: one object per line, Wazuh's field names.
    let json = std::fs::read_to_string(&json_file)?;
    assert!(json.ends_with('\n'));
    let objects: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let o = objects
        .iter()
        .find(|o| o["rule"]["id"] == "31151")
        .expect("31151 in alerts.json");
    assert_eq!(o["id"], alert_id.as_str());
    assert_eq!(o["rule"]["level"], 10);
    assert_eq!(o["rule"]["mail"], true);
    let groups: Vec<&str> = a.group_list().collect();
    assert_eq!(o["rule"]["groups"], serde_json::json!(groups));
    assert_eq!(o["agent"], serde_json::json!({"id": id, "name": "web01"}));
    assert_eq!(o["full_log"], lines[13].as_str());
    assert_eq!(o["previous_output"], log_lines[1..].join("\n").as_str());
    assert_eq!(o["data"]["srcip"], "198.51.100.23");
    let o5716 = objects
        .iter()
        .find(|o| o["rule"]["id"] == "5716")
        .expect("5716 in alerts.json");
    assert_eq!(o5716["data"]["srcport"], "52144");
    assert_eq!(o["location"], access_log.display().to_string());
    assert_eq!(o["decoder"]["name"], a.decoder.clone().unwrap().as_str());
    let ts = o["timestamp"].as_str().unwrap();
    let parsed = jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%.f%z", ts)?;
    assert_eq!(parsed, a.time);

    // jq reads every line and finds the same alert.
    let out = Command::new("jq")
        .args(["-r", "select(.rule.id == \"31151\") | .id"])
        .arg(&json_file)
        .output()
        .expect("jq (scripts/install-test-deps installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout)?.trim(), alert_id);
    let out = Command::new("jq")
        .args(["-e", "-s", "length"])
        .arg(&json_file)
        .output()?;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout)?.trim(),
        objects.len().to_string()
    );
    Ok(())
}
