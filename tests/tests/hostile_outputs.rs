//! Outputs escape what they did not write, end to end: a real agent ships
//! an access-log line whose client address, user and user agent hold
//! terminal sequences (C0 ESC, BEL, CR and their 8-bit C1 forms CSI and
//! OSC), a line separator, a bidirectional override, a fake alerts.log
//! header and a fake table row; the real manager judges it (rule 31106,
//! mailed). Pre-decoding deletes C0 controls as OSSEC 3.8 does; every
//! other control reaches the outputs only escaped (`\u{009b}`,
//! `\u{2028}`, ...): alerts.log, the notification mail (real SMTP
//! server), `palisadectl alerts` (table and JSON), `agents` and
//! `refusals`, while alerts.json and `--json` keep the value exact. The
//! renderers' own tests cover the fields a real agent cannot send (a
//! Hello's host name and version, a location with a newline).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ctl_common;

use std::time::Duration;

use ctl_common::{Agent, ctl, eventually, start_with, stderr, stdout};
use palisade_manager::mail::{EmailConfig, SmtpTls};
use palisade_tests::smtp::SmtpServer;

/// What may not appear raw in any output: ESC, BEL, CR, CSI, OSC, the
/// line separator, the right-to-left override.
const RAW: [char; 7] = [
    '\x1b', '\x07', '\r', '\u{9b}', '\u{9d}', '\u{2028}', '\u{202e}',
];

const CLIENT: &str = "203.0.113.9\u{9b}2J\u{9d}0;owned";
const CLIENT_SHOWN: &str = r"203.0.113.9\u{009b}2J\u{009d}0;owned";
const USER: &str = "bob\x1b[31m";
const AGENT_TEXT: &str = "curl\r** Alert 1764324001.0: - fake,\x07\u{202e} 001  web99  6.6.6.6  -  Active\u{2028}** Alert 1.1: - fake2,";
/// As shown: C0 deleted by pre-decoding, the rest escaped.
const AGENT_SHOWN: &str = r"curl** Alert 1764324001.0: - fake,\u{202e} 001  web99  6.6.6.6  -  Active\u{2028}** Alert 1.1: - fake2,";

fn hostile_line() -> String {
    format!(
        "{CLIENT} - {USER} [28/Nov/2026:10:00:01 +0000] \"GET /view.php?file=../../etc/passwd HTTP/1.1\" 200 512 \"-\" \"{AGENT_TEXT}\""
    )
}

/// The line as the engine keeps it: C0 and DEL deleted (OSSEC 3.8).
fn judged_line() -> String {
    hostile_line()
        .chars()
        .filter(|&c| c >= ' ' && c != '\x7f')
        .collect()
}

fn assert_no_raw_control(what: &str, text: &str) {
    assert!(!text.contains(RAW), "{what} holds a raw control:\n{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_reaches_every_output_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(tmp.path()).unwrap();
    let port = smtp.port;
    let m = start_with(|c| {
        c.email = EmailConfig {
            enabled: true,
            smtp_server: "127.0.0.1".into(),
            smtp_port: port,
            tls: SmtpTls::None,
            from: "palisade@example.net".into(),
            to: vec!["ops@example.net".into()],
            retry_max: Duration::from_secs(2),
            ..EmailConfig::default()
        };
        let log = c.alert_files.log_file.clone().expect("alerts.log is on");
        c.alert_files.json_file = Some(log.with_file_name("alerts.json"));
    })
    .await;
    let log_file = m.config.alert_files.log_file.clone().unwrap();
    let json_file = m.config.alert_files.json_file.clone().unwrap();
    let agent = Agent::add(&m, "web01", Duration::from_secs(30)).await;
    agent.append(&[hostile_line()]);

    // alerts.log: one entry, its header the only line starting "** Alert",
    // the line's controls visible.
    let alerts_log = eventually(Duration::from_secs(60), "alerts.log entry", || {
        let path = log_file.clone();
        async move {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|t| t.contains("Rule: 31106"))
        }
    })
    .await;
    assert_no_raw_control("alerts.log", &alerts_log);
    assert_eq!(
        alerts_log
            .lines()
            .filter(|l| l.starts_with("** Alert"))
            .count(),
        1,
        "{alerts_log}"
    );
    assert!(
        alerts_log.contains(&format!("Src IP: {CLIENT_SHOWN}\n")),
        "{alerts_log}"
    );
    assert!(
        alerts_log.contains(&format!("\"{AGENT_SHOWN}\"\n")),
        "{alerts_log}"
    );

    // alerts.json: the value exact, the text free of raw controls.
    let json = eventually(Duration::from_secs(30), "alerts.json line", || {
        let path = json_file.clone();
        async move {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|t| t.contains("31106"))
        }
    })
    .await;
    assert_no_raw_control("alerts.json", &json);
    assert_eq!(json.lines().count(), 1, "{json}");
    let v: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
    assert_eq!(v["full_log"], judged_line());
    assert_eq!(v["data"]["srcip"], CLIENT);

    // The mail: body and headers.
    let mails = smtp.wait_for(1, Duration::from_secs(60)).await.unwrap();
    let mail = &mails[0];
    assert_no_raw_control("the mail body", &mail.body);
    assert!(
        mail.body.contains(&format!("Src IP: {CLIENT_SHOWN}\n")),
        "{}",
        mail.body
    );
    assert!(mail.body.contains(AGENT_SHOWN), "{}", mail.body);
    for (name, value) in &mail.headers {
        assert_no_raw_control(name, value);
    }

    // palisadectl alerts: a table of one row, its SRCIP escaped; the JSON
    // exact.
    let out = ctl(&m.ctl, &["alerts"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert_no_raw_control("palisadectl alerts", &table);
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table.contains(CLIENT_SHOWN), "{table}");
    let out = ctl(&m.ctl, &["alerts", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_no_raw_control("palisadectl alerts --json", &text);
    let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(v[0]["srcip"], CLIENT);
    assert_eq!(v[0]["log"][0], judged_line());

    // palisadectl agents and refusals: whatever the rows hold, one line
    // each, no raw control.
    let out = ctl(&m.ctl, &["agents"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let agents = stdout(&out);
    assert_no_raw_control("palisadectl agents", &agents);
    assert_eq!(agents.lines().count(), 2, "{agents}");
    let out = ctl(&m.ctl, &["refusals"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_raw_control("palisadectl refusals", &stdout(&out));
}
