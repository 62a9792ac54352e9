//! E-mail notifications end to end: a real manager and agent, a real SMTP
//! server (aiosmtpd) on loopback, real log lines written to a file the
//! agent tails. The mails are read back from the server's Maildir and
//! checked against OSSEC's layout (section 7.2 of the semantics notes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use palisade_manager::mail::{EmailConfig, SmtpTls};
use palisade_manager::store::AlertFilter;
use palisade_tests::smtp::{ServerTls, SmtpServer};
use palisade_tests::{
    AgentHandle, LogCapture, ManagerHandle, append_lines, eventually, scan_lines,
};

/// A path traversal answered with 200: rule 31106, level 10, one line.
fn traversal_line(ip: &str) -> String {
    format!(
        "{ip} - - [28/Nov/2026:10:00:01 +0000] \"GET /view.php?file=../../etc/passwd HTTP/1.1\" 200 512 \"-\" \"curl/8.0\""
    )
}

fn email(smtp: &SmtpServer) -> EmailConfig {
    EmailConfig {
        enabled: true,
        smtp_server: "127.0.0.1".into(),
        smtp_port: smtp.port,
        tls: SmtpTls::None,
        from: "palisade@example.net".into(),
        reply_to: Some("secops@example.net".into()),
        to: vec!["ops@example.net".into()],
        idsname: Some("test-site".into()),
        retry_max: Duration::from_secs(2),
        ..EmailConfig::default()
    }
}

struct Setup {
    manager: ManagerHandle,
    agent: AgentHandle,
    agent_id: String,
    log: PathBuf,
}

async fn setup(email: EmailConfig) -> anyhow::Result<Setup> {
    let manager = ManagerHandle::start_with(|c| c.email = email).await?;
    let (agent_id, mut config, log) = manager.add_access_log_agent("web01").await?;
    // Responses are decided and reported, but the host is left alone.
    config.respond.dry_run = true;
    let agent = AgentHandle::start(config);
    Ok(Setup {
        manager,
        agent,
        agent_id,
        log,
    })
}

fn count(mails: &[palisade_tests::smtp::ReceivedMail], needle: &str) -> usize {
    mails.iter().map(|m| m.body.matches(needle).count()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_is_mailed_in_ossecs_layout() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let smtp = SmtpServer::start(tmp.path())?;
    let mut s = setup(email(&smtp)).await?;
    let lines = scan_lines("198.51.100.23");
    append_lines(&s.log, lines.iter().cloned())?;

    let mails = smtp.wait_for(1, Duration::from_secs(30)).await?;
    let store = s.manager.store().await?;
    let filter = AlertFilter {
        rule_id: Some(31151),
        ..AlertFilter::default()
    };
    let stored = store.alerts(&filter).await?;
    assert_eq!(stored.len(), 1);
    let alert = &stored[0].alert;
    // The 404s below level 7 are not mailed: only 31151. A later alert
    // that is mailed is the next mail (one mailer, in order), so nothing
    // of the scan can still be on its way.
    append_lines(&s.log, [traversal_line("198.51.100.24")])?;
    let after = smtp.wait_for(2, Duration::from_secs(30)).await?;
    assert_eq!(after.len(), 2, "{after:#?}");
    assert!(
        after[1].body.contains("Src IP: 198.51.100.24\n"),
        "{after:#?}"
    );
    let mail = &mails[0];

    let description = "Many 4xx answers to one address in 90 seconds (web scan).";
    assert_eq!(alert.description, description);
    assert_eq!(
        mail.header("Subject"),
        Some(format!("Palisade Alert - (web01) any - Level 10 - {description}").as_str())
    );
    // OSSEC writes the name bare; lettre quotes it (the same per RFC 5322).
    assert_eq!(
        mail.header("From"),
        Some("\"Palisade HIDS\" <palisade@example.net>")
    );
    assert_eq!(mail.header("To"), Some("ops@example.net"));
    assert_eq!(
        mail.header("Reply-To"),
        Some("\"Palisade HIDS\" <secops@example.net>")
    );
    assert_eq!(mail.header("X-IDS-Palisade"), Some("test-site"));
    let date = jiff::fmt::rfc2822::parse(mail.header("Date").unwrap())?;
    let skew = (date.timestamp().as_millisecond() - alert.time.as_millisecond()).abs();
    assert!(skew < 60_000, "Date {date} is {skew} ms from the alert");

    // The body, line by line.
    let when = alert
        .time
        .to_zoned_datetime(jiff::tz::TimeZone::system())
        .strftime("%Y %b %d %H:%M:%S")
        .to_string();
    let mut expected: Vec<String> = vec![
        String::new(),
        "Palisade Notification.".into(),
        when,
        String::new(),
        format!("Received From: (web01) any->{}", s.log.display()),
        format!("Rule: 31151 fired (level 10) -> \"{description}\""),
        "Src IP: 198.51.100.23".into(),
        "Portion of the log(s):".into(),
        String::new(),
    ];
    // The line that fired first, then every correlated line.
    let portion: Vec<String> = alert.log_lines().map(|l| l.into_owned()).collect();
    assert_eq!(portion[0], lines[13]);
    let mut sorted_portion = portion.clone();
    sorted_portion.sort();
    let mut sorted_scan = lines.clone();
    sorted_scan.sort();
    assert_eq!(sorted_portion, sorted_scan, "all 14 lines of the scan");
    expected.extend(portion);
    // The last empty line is the CRLF of the end-of-data marker
    // ("\r\n.\r\n"), which OSSEC's maild also sends after its body.
    expected.extend(
        ["", "", " --END OF NOTIFICATION", "", "", "", ""]
            .iter()
            .map(|l| l.to_string()),
    );
    let got: Vec<&str> = mail.body.split('\n').collect();
    assert_eq!(got, expected, "body:\n{}", mail.body);
    s.agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxperhour_two_sends_two_mails_then_one_digest() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    let tmp = tempfile::tempdir()?;
    let smtp = SmtpServer::start(tmp.path())?;
    let period = Duration::from_secs(20);
    let mut config = email(&smtp);
    config.max_per_period = 2;
    config.period = period;
    let mut errors = palisade_common::config::Problems::new();
    // A granular block: attacks also go to the web team, in the same mail.
    let raw: palisade_manager::mail::RawEmail =
        toml::from_str("[[alerts]]\nto = [\"web@example.net\"]\ngroup = \"attack\"\n")?;
    config.alerts = palisade_manager::mail::compile(raw, tmp.path(), &mut errors).alerts;
    assert!(errors.is_empty(), "{errors:?}");
    let mut s = setup(config).await?;

    // Start well inside a period, so that all ten alerts fall in one.
    let period_ms = period.as_millis() as i64;
    let into = jiff::Timestamp::now().as_millisecond() % period_ms;
    if into > period_ms / 3 {
        tokio::time::sleep(Duration::from_millis((period_ms - into + 300) as u64)).await;
    }
    let ips: Vec<String> = (1..=10).map(|n| format!("198.51.100.{n}")).collect();
    append_lines(&s.log, ips.iter().map(|ip| traversal_line(ip)))?;

    let store = s.manager.store().await?;
    let filter = AlertFilter {
        rule_id: Some(31106),
        ..AlertFilter::default()
    };
    eventually(Duration::from_secs(20), "ten 31106 alerts", || async {
        Ok((store.alerts(&filter).await?.len() == 10).then_some(()))
    })
    .await?;
    let mails = smtp.wait_for(2, Duration::from_secs(20)).await?;
    assert_eq!(mails.len(), 2, "only two before the period ends");
    for m in &mails {
        assert_eq!(count(std::slice::from_ref(m), "Palisade Notification."), 1);
        assert_eq!(m.header("To"), Some("ops@example.net, web@example.net"));
    }
    logs.wait_for(&["Mail budget for this period spent"])
        .await?;

    let mails = smtp.wait_for(3, period + Duration::from_secs(10)).await?;
    let digest = &mails[2];
    assert_eq!(
        count(std::slice::from_ref(digest), "Palisade Notification."),
        8
    );
    assert_eq!(
        count(std::slice::from_ref(digest), " --END OF NOTIFICATION"),
        8
    );
    assert!(
        digest
            .header("Subject")
            .is_some_and(|s| s.starts_with("Palisade Alert - (web01) any - Level 10 - ")),
        "{:?}",
        digest.header("Subject")
    );
    // Every alert is in exactly one mail.
    for ip in &ips {
        assert_eq!(count(&mails, &format!("Src IP: {ip}\n")), 1, "{ip}");
    }
    // No other mail follows: the next alert, in the new period, is the
    // next mail.
    append_lines(&s.log, [traversal_line("198.51.100.99")])?;
    let after = smtp.wait_for(4, Duration::from_secs(30)).await?;
    assert_eq!(after.len(), 4);
    assert!(after[3].body.contains("Src IP: 198.51.100.99\n"));
    s.agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mails_wait_for_a_server_that_is_down_and_ingestion_goes_on() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    let tmp = tempfile::tempdir()?;
    let mut smtp = SmtpServer::start(tmp.path())?;
    let mut config = email(&smtp);
    config.max_per_period = 9999;
    let mut s = setup(config).await?;
    let store = s.manager.store().await?;
    let mut written = 0usize;

    append_lines(&s.log, [traversal_line("198.51.100.200")])?;
    written += 1;
    smtp.wait_for(1, Duration::from_secs(20)).await?;

    smtp.stop()?;
    // No mail server while the mailer retries with backoff: every round's
    // lines are still received, judged and acknowledged.
    let rounds = 12;
    for round in 0..rounds {
        append_lines(&s.log, [traversal_line(&format!("198.51.100.{round}"))])?;
        written += 1;
        let id = s.agent_id.clone();
        eventually(
            Duration::from_secs(10),
            "the round's line archived",
            || async {
                Ok((store.archived_events(Some(&id)).await?.len() == written).then_some(()))
            },
        )
        .await?;
    }
    // The mailer keeps trying, its pause grown to retry_max (2 s): the
    // first round's mail has failed three times.
    eventually(
        Duration::from_secs(30),
        "the third attempt at the first mail",
        || async {
            let text = logs.text();
            Ok(text
                .lines()
                .any(|l| {
                    l.contains("Mail still not sent.")
                        && l.contains("attempt=3")
                        && l.contains("retry_in_s=2")
                })
                .then_some(()))
        },
    )
    .await?;
    let filter = AlertFilter {
        rule_id: Some(31106),
        ..AlertFilter::default()
    };
    assert_eq!(store.alerts(&filter).await?.len(), rounds + 1);
    assert_eq!(smtp.mails()?.len(), 1, "nothing could be delivered");

    smtp.restart()?;
    let mails = smtp.wait_for(rounds + 1, Duration::from_secs(30)).await?;
    for round in 0..rounds {
        assert_eq!(
            count(&mails, &format!("Src IP: 198.51.100.{round}\n")),
            1,
            "round {round}"
        );
    }
    s.agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_response_carried_out_is_mailed() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let smtp = SmtpServer::start(tmp.path())?;
    let mut config = email(&smtp);
    config.active_responses = true;
    let mut s = setup(config).await?;
    // The default manager.toml answers 31151 with route-null600.
    append_lines(&s.log, scan_lines("198.51.100.77"))?;
    let mails = smtp.wait_for(2, Duration::from_secs(30)).await?;
    let ar = mails
        .iter()
        .find(|m| {
            m.header("Subject")
                .is_some_and(|s| s.contains("Active Response"))
        })
        .expect("an active-response mail");
    assert_eq!(
        ar.header("Subject"),
        Some(
            format!(
                "Palisade Active Response - ({}) - route-null600 add 198.51.100.77 - executed",
                s.agent_id
            )
            .as_str()
        )
    );
    assert_eq!(ar.header("To"), Some("ops@example.net"));
    let lines: Vec<&str> = ar.body.split('\n').collect();
    assert_eq!(lines[1], "Palisade Notification.");
    assert_eq!(
        lines[4],
        format!("Received From: ({}) active-response", s.agent_id)
    );
    assert_eq!(lines[5], "Active response: route-null600 add executed");
    assert_eq!(lines[6], "Src IP: 198.51.100.77");
    assert!(
        lines[10].contains(" route-null600 add - 198.51.100.77 ") && lines[10].ends_with(" 31151"),
        "{}",
        lines[10]
    );
    s.agent.stop().await?;
    Ok(())
}

/// The server's certificate and key files (from a CA of the test's own)
/// and the CA's PEM for the mailer to trust.
fn smtp_certificate(dir: &std::path::Path) -> anyhow::Result<(PathBuf, PathBuf, Vec<u8>)> {
    let (ca, _) = palisade_manager::pki::CertificateAuthority::generate("mail test CA")?;
    let issued = ca.issue_server(&["127.0.0.1".to_string()])?;
    let (cert, key) = (dir.join("smtp.pem"), dir.join("smtp.key"));
    std::fs::write(&cert, &issued.cert_pem)?;
    std::fs::write(&key, &issued.key_pem)?;
    Ok((cert, key, ca.cert_pem().as_bytes().to_vec()))
}

/// One mailed alert over a protected connection: STARTTLS (which the
/// server requires before it takes mail) or SMTPS, the server's
/// certificate checked against the CA given in `tls_ca_file`.
async fn mail_over_tls(server: ServerTls, client: SmtpTls) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (cert, key, ca) = smtp_certificate(tmp.path())?;
    let smtp = SmtpServer::start_tls(tmp.path(), server, &cert, &key)?;
    let mut config = email(&smtp);
    config.tls = client;
    config.tls_ca_pem = Some(ca);
    let mut s = setup(config).await?;
    append_lines(&s.log, [traversal_line("198.51.100.23")])?;
    let mails = smtp.wait_for(1, Duration::from_secs(30)).await?;
    let subject = mails[0].header("Subject").unwrap_or_default();
    assert!(
        subject.starts_with("Palisade Alert - (web01) any - Level 10 - "),
        "{subject}"
    );
    assert!(
        mails[0].body.contains("Src IP: 198.51.100.23"),
        "{}",
        mails[0].body
    );
    s.agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_out_over_starttls() -> anyhow::Result<()> {
    mail_over_tls(ServerTls::StartTls, SmtpTls::StartTls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_out_over_smtps() -> anyhow::Result<()> {
    mail_over_tls(ServerTls::Smtps, SmtpTls::Tls).await
}

/// A measurement run by hand, not a check: the ingestion rate (lines
/// written until all are archived) with the mail server up, then down,
/// every line raising a mailed alert. Prints the two rates and their
/// ratio.
/// `cargo test -p palisade-tests --test mail -- --ignored --nocapture ingestion_rate`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn ingestion_rate_with_the_mail_server_up_and_down() -> anyhow::Result<()> {
    const LINES: usize = 3000;
    let tmp = tempfile::tempdir()?;
    let mut smtp = SmtpServer::start(tmp.path())?;
    let mut config = email(&smtp);
    config.max_per_period = 9999;
    let mut s = setup(config).await?;
    let store = s.manager.store().await?;
    let mut written = 0usize;
    let mut rates = Vec::new();
    for phase in ["up", "down"] {
        if phase == "down" {
            smtp.stop()?;
        }
        let lines: Vec<String> = (0..LINES)
            .map(|n| {
                traversal_line(&format!(
                    "10.{}.{}.{}",
                    n / 65536 % 256,
                    n / 256 % 256,
                    n % 256
                ))
            })
            .collect();
        let started = std::time::Instant::now();
        append_lines(&s.log, lines)?;
        written += LINES;
        let id = s.agent_id.clone();
        eventually(Duration::from_secs(300), "every line archived", || async {
            Ok((store.archived_events(Some(&id)).await?.len() >= written).then_some(()))
        })
        .await?;
        let rate = LINES as f64 / started.elapsed().as_secs_f64();
        println!(
            "mail server {phase}: {LINES} lines in {:?}, {rate:.0} lines/s",
            started.elapsed()
        );
        rates.push(rate);
    }
    println!(
        "ingestion rate, server down / server up: {:.2}",
        rates[1] / rates[0]
    );
    s.agent.stop().await?;
    Ok(())
}
