//! `palisade-manager quickstart`: a newcomer's first look. In a temporary
//! directory it creates the PKI and database, runs a manager and one agent
//! on loopback, replays a scanner's burst of 404s into a web access log and
//! shows the alert it raises, then stops everything and removes the
//! directory (also on Ctrl-C).

use std::io::Write;
use std::time::Duration;

use palisade_agent::AgentConfig;
use palisade_agent::config::Localfile;
use tokio_util::sync::CancellationToken;

use crate::config::ManagerConfig;
use crate::setup::{self, InitOptions};
use crate::store::{AlertFilter, Store, StoredAlert};

/// The address the replayed scanner comes from (TEST-NET-3, never routed).
const SCANNER: &str = "203.0.113.7";

/// The paths a ZmEu scan asks for, as OSSEC reported one.
const SCAN: [&str; 14] = [
    "/phpadmin/scripts/setup.php",
    "/typo3/phpmyadmin/scripts/setup.php",
    "/mysqladmin/scripts/setup.php",
    "/mysql/scripts/setup.php",
    "/myadmin/scripts/setup.php",
    "/dbadmin/scripts/setup.php",
    "/db/scripts/setup.php",
    "/admin/phpmyadmin/scripts/setup.php",
    "/admin/pma/scripts/setup.php",
    "/admin/scripts/setup.php",
    "/scripts/setup.php",
    "/pma/scripts/setup.php",
    "/phpMyAdmin/scripts/setup.php",
    "/sqladmin/scripts/setup.php",
];

/// Runs the demonstration; returns an error message on failure.
pub async fn run(out: &mut dyn Write) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("palisade-quickstart-")
        .tempdir()?;
    let interrupt = CancellationToken::new();
    let shutdown = interrupt.child_token();
    let interrupted = {
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupt.cancel();
            }
        })
    };
    let result = tokio::select! {
        r = demo(dir.path(), &shutdown, out) => r,
        _ = interrupt.cancelled() => {
            writeln!(out, "\nInterrupted: stopping and cleaning up.")?;
            Ok(())
        }
    };
    shutdown.cancel();
    interrupted.abort();
    // Give the daemons a moment to close their databases before removal.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let path = dir.path().display().to_string();
    dir.close()?;
    writeln!(out, "Removed {path}.")?;
    result
}

async fn demo(
    dir: &std::path::Path,
    shutdown: &CancellationToken,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    writeln!(out, "Palisade quickstart in {}", dir.display())?;
    let report = setup::init(&InitOptions {
        dir: dir.to_path_buf(),
        sans: vec![],
        listen: "127.0.0.1:0".parse()?,
        advertise: None,
        force: false,
    })
    .await?;
    writeln!(
        out,
        "  created a CA, the manager's certificate, an operator certificate and {}",
        report.database.display()
    )?;

    let mut config = ManagerConfig::load(&report.config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    config.listen = listener.local_addr()?;
    config.advertise = config.listen.to_string();
    let manager = tokio::spawn(crate::run(config.clone(), listener, shutdown.clone()));
    writeln!(out, "  manager listening on {} (mutual TLS)", config.listen)?;

    let bundle = setup::add_agent(&config, "web01", None, None).await?;
    let mut agent_config = AgentConfig::load(&bundle.config)?;
    let access_log = dir.join("access.log");
    std::fs::write(&access_log, "")?;
    agent_config.localfiles = vec![Localfile {
        location: access_log.clone(),
        log_format: "apache".into(),
    }];
    agent_config.read_from_start = true;
    agent_config.poll_interval = Duration::from_millis(50);
    let agent = tokio::spawn(palisade_agent::run(agent_config, shutdown.clone()));
    writeln!(
        out,
        "  agent {} ({}) registered; it follows {}",
        bundle.id,
        bundle.name,
        access_log.display()
    )?;

    let store = Store::open(&config.database).await?;
    wait_for(Duration::from_secs(15), || async {
        Ok(store
            .agent(&bundle.id)
            .await?
            .and_then(|a| a.first_seen)
            .is_some())
    })
    .await
    .map_err(|_| anyhow::anyhow!("the agent did not connect within 15 s"))?;
    writeln!(out, "  agent {} connected\n", bundle.id)?;

    writeln!(out, "Replaying a scan from {SCANNER} into the access log:")?;
    let mut file = std::fs::OpenOptions::new().append(true).open(&access_log)?;
    writeln!(
        file,
        "192.0.2.10 - - [{}] \"GET / HTTP/1.1\" 200 5120 \"-\" \"Mozilla/5.0\"",
        apache_now()
    )?;
    for (i, path) in SCAN.iter().enumerate() {
        let line = format!(
            "{SCANNER} - - [{}] \"GET {path} HTTP/1.1\" 404 303 \"-\" \"ZmEu\"",
            apache_now()
        );
        writeln!(file, "{line}")?;
        writeln!(out, "  {:>2}  GET {path} -> 404", i + 1)?;
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let filter = AlertFilter {
        rule_id: Some(31151),
        ..AlertFilter::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let found = loop {
        let found = store.alerts(&filter).await?;
        if !found.is_empty() {
            break found;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("no alert for the scan within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    writeln!(
        out,
        "\nThe manager raised this alert (alerts.log layout):\n"
    )?;
    for alert in &found {
        write!(out, "{}", alerts_log_text(alert))?;
    }
    writeln!(
        out,
        "Active responses (a null route for {SCANNER}, lifted after its timeout) are not in this build yet."
    )?;
    writeln!(out, "\nWhere to look next:")?;
    writeln!(
        out,
        "  palisade-manager init --dir /etc/palisade           # a real manager"
    )?;
    writeln!(
        out,
        "  palisade-manager agent add web01 -c /etc/palisade/manager.toml"
    )?;
    writeln!(
        out,
        "  palisade-manager logtest                            # try log lines against the rules"
    )?;
    writeln!(
        out,
        "  palisadectl --config /etc/palisade/operator/ctl.toml -l"
    )?;
    store.close().await;
    shutdown.cancel();
    let _ = manager.await;
    let _ = agent.await;
    Ok(())
}

async fn wait_for<F, Fut>(limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await? {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn apache_now() -> String {
    jiff::ZonedDateTime::now()
        .strftime("%d/%b/%Y:%H:%M:%S %z")
        .to_string()
}

/// An alert in OSSEC's alerts.log layout.
pub fn alerts_log_text(stored: &StoredAlert) -> String {
    let a = &stored.alert;
    let time = jiff::Timestamp::from_millisecond(a.time).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let local = time.to_zoned_datetime(jiff::tz::TimeZone::system());
    let mut s = format!(
        "** Alert {}.{}: - {},\n{} {}\nRule: {} (level {}) -> '{}'\n",
        time.as_second(),
        stored.id,
        a.groups,
        local.strftime("%Y %b %d %H:%M:%S"),
        a.location,
        a.rule_id,
        a.level,
        a.description
    );
    if let Some(ip) = &a.srcip {
        s.push_str(&format!("Src IP: {ip}\n"));
    }
    if let Some(user) = &a.dstuser {
        s.push_str(&format!("User: {user}\n"));
    }
    for line in a.log.split(|b| *b == b'\n') {
        s.push_str(&String::from_utf8_lossy(line));
        s.push('\n');
    }
    s.push('\n');
    s
}
