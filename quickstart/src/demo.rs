//! The demonstration: in a temporary directory it creates the PKI and database, runs a manager and
//! one agent on loopback, replays a scanner's burst of 404s into a web
//! access log and shows, as it happens, the alert (in OSSEC's notification
//! layout), the active response sent, the null route installed and the
//! block lifted at its timeout. Then it says where to look next, and
//! removes everything (also on Ctrl-C).
//!
//! As root, everything runs inside a private network namespace made for
//! the occasion (`unshare`), so the route is real but touches nothing of
//! the host, and vanishes with the namespace. As another user the agent
//! runs its responses in dry-run mode and says what it would have done.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use palisade_agent::AgentConfig;
use palisade_engine::alert_format;
use palisade_manager::ManagerConfig;
use palisade_manager::setup::{self, InitOptions};
use palisade_manager::store::{AlertFilter, Store};
use palisade_quickstart::SCAN;
use tokio_util::sync::CancellationToken;

/// The address the replayed scanner comes from (TEST-NET-3, never routed).
const SCANNER: &str = "203.0.113.7";

/// How the quickstart runs.
#[derive(Debug, Clone)]
pub struct QuickstartOptions {
    /// Do not ask before creating the namespace.
    pub yes: bool,
    /// How long the demonstration block lasts.
    pub block_for: Duration,
}

impl Default for QuickstartOptions {
    fn default() -> Self {
        Self {
            yes: false,
            block_for: Duration::from_secs(10),
        }
    }
}

/// Runs the demonstration (blocking: it makes its own runtime, in its own
/// network namespace when root).
pub fn run(options: &QuickstartOptions) -> anyhow::Result<()> {
    let root = nix::unistd::geteuid().is_root();
    let mut out = std::io::stdout();
    if root && !options.yes && std::io::stdin().is_terminal() {
        write!(
            out,
            "The quickstart runs as root: it creates a private network namespace for a real null route, and removes it afterwards. Continue? [Y/n] "
        )?;
        out.flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim().eq_ignore_ascii_case("n") || answer.trim().eq_ignore_ascii_case("no") {
            writeln!(out, "Nothing was done.")?;
            return Ok(());
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("palisade-quickstart-")
        .tempdir()?;
    let path = dir.path().to_path_buf();
    let options = options.clone();
    let worker = std::thread::Builder::new()
        .name("palisade-quickstart".into())
        .spawn(move || -> anyhow::Result<()> {
            if root {
                // This thread, its children and their threads only.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
                let up = std::process::Command::new("ip")
                    .args(["link", "set", "lo", "up"])
                    .status();
                anyhow::ensure!(
                    up.is_ok_and(|s| s.success()),
                    "cannot bring up the namespace's loopback (is iproute2 installed?)"
                );
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(interruptible(&path, &options, root))
        })?;
    let result = worker
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the quickstart thread panicked")));
    let shown = dir.path().display().to_string();
    dir.close()?;
    println!(
        "Removed {shown}{}.",
        if root {
            " and the network namespace"
        } else {
            ""
        }
    );
    result
}

async fn interruptible(dir: &Path, options: &QuickstartOptions, root: bool) -> anyhow::Result<()> {
    let interrupt = CancellationToken::new();
    let shutdown = interrupt.child_token();
    // Ctrl-C (or SIGTERM) stops the demonstration and still cleans up.
    let signal = tokio::spawn(palisade_common::signal::cancel_on_signal(interrupt.clone()));
    let result = tokio::select! {
        r = demo(dir, options, root, &shutdown) => r,
        _ = interrupt.cancelled() => {
            println!("\nInterrupted: stopping and cleaning up.");
            Ok(())
        }
    };
    shutdown.cancel();
    signal.abort();
    // Let the daemons close their databases before the directory goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    result
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("  {spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

async fn wait_until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unreachable_routes() -> String {
    std::process::Command::new("ip")
        .args(["route", "show", "type", "unreachable"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

async fn demo(
    dir: &Path,
    options: &QuickstartOptions,
    root: bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    println!("Palisade quickstart in {}", dir.display());
    if root {
        println!(
            "  running as root, inside a private network namespace: blocks are real routes there"
        );
    } else {
        println!(
            "  not running as root: the agent runs its responses as a dry run and says what it would do"
        );
    }
    let report = setup::init(&InitOptions {
        dir: dir.to_path_buf(),
        sans: vec![],
        listen: "127.0.0.1:0".parse()?,
        advertise: None,
        force: false,
    })
    .await?;
    println!(
        "  created a CA, the manager's certificate, an operator certificate and {}",
        report.database
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let block_secs = options.block_for.as_secs().max(1);
    std::fs::write(
        &report.config,
        format!(
            "[server]\nlisten = \"{addr}\"\nadvertise = \"{addr}\"\n[global]\nwhite_list = [\"127.0.0.1\", \"::1\"]\n\
             [ruleset]\nbarrier = \"per-source\"\n\
             [[active_response]]\ncommand = \"route-null\"\nlocation = \"local\"\nrules_id = [31151]\ntimeout = \"{block_secs}s\"\n"
        ),
    )?;
    let config = ManagerConfig::load(&report.config)?;
    let manager = tokio::spawn(palisade_manager::run(
        config.clone(),
        listener,
        shutdown.clone(),
    ));
    println!("  manager listening on {addr} (mutual TLS)");

    let bundle = setup::add_agent(&config, "web01", None, None).await?;
    let access_log = dir.join("access.log");
    std::fs::write(&access_log, "")?;
    std::fs::write(
        &bundle.config,
        format!(
            "[manager]\naddress = \"{addr}\"\n[spool]\ndatabase = \"agent.db\"\n\
             [agent]\npoll_interval = \"50ms\"\nread_from_start = true\n\
             [[localfile]]\nlocation = \"{}\"\nlog_format = \"apache\"\n\
             [active_response]\ndry_run = {}\nlog_file = \"active-responses.log\"\nhosts_deny = \"hosts.deny\"\n",
            access_log.display(),
            !root
        ),
    )?;
    let agent_config = AgentConfig::load(&bundle.config)?;
    let agent = tokio::spawn(palisade_agent::run(agent_config, shutdown.clone()));
    println!(
        "  agent {} ({}) registered; it follows {}",
        bundle.id,
        bundle.name,
        access_log.display()
    );

    let store = Store::open(&config.database).await?;
    let waiting = spinner("waiting for the agent to connect");
    wait_until(
        Duration::from_secs(15),
        "the agent's connection",
        || async {
            Ok(store
                .agent(&bundle.id)
                .await?
                .and_then(|a| a.first_seen)
                .map(|_| ()))
        },
    )
    .await?;
    waiting.finish_and_clear();
    println!("  agent {} connected\n", bundle.id);

    println!("Replaying a scan from {SCANNER} into the access log:");
    let mut file = std::fs::OpenOptions::new().append(true).open(&access_log)?;
    writeln!(
        file,
        "192.0.2.10 - - [{}] \"GET / HTTP/1.1\" 200 5120 \"-\" \"Mozilla/5.0\"",
        apache_now()
    )?;
    let started = Instant::now();
    for (i, path) in SCAN.iter().enumerate() {
        writeln!(
            file,
            "{SCANNER} - - [{}] \"GET {path} HTTP/1.1\" 404 303 \"-\" \"ZmEu\"",
            apache_now()
        )?;
        println!("  {:>2}  GET {path} -> 404", i + 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let filter = AlertFilter {
        rule_id: Some(31151),
        ..AlertFilter::default()
    };
    let alert = wait_until(
        Duration::from_secs(15),
        "the alert for the scan",
        || async { Ok(store.alerts(&filter).await?.into_iter().next()) },
    )
    .await?;
    println!("\nThe manager raised this alert (as OSSEC would mail it):\n");
    println!(
        "Subject: {}",
        alert_format::notification_subject(&alert.alert)
    );
    print!(
        "{}",
        alert_format::notification_body(&alert.alert, &jiff::tz::TimeZone::system())
    );

    let response = wait_until(Duration::from_secs(15), "the active response", || async {
        Ok(store
            .responses_for_alert(alert.id)
            .await?
            .into_iter()
            .find(|r| r.executed_at.is_some() || r.status == "failed"))
    })
    .await?;
    println!(
        "Active response {} sent to agent {} for {}; the agent answered: {}",
        response.request.response,
        response.request.agent_id,
        response.request.srcip.as_deref().unwrap_or("-"),
        response.message.as_deref().unwrap_or("-")
    );
    println!(
        "  {:.1} s from the first 404 written to the block in force",
        started.elapsed().as_secs_f64()
    );
    if root {
        println!(
            "  route table of the quickstart namespace: {}",
            unreachable_routes()
        );
    } else {
        println!(
            "  (dry run: nothing was changed on this host; as root the agent installs an unreachable route)"
        );
    }

    let holding = spinner(&format!(
        "block in force; it is lifted at its timeout ({block_secs} s)"
    ));
    let lifted = wait_until(
        Duration::from_secs(block_secs + 30),
        "the block's end",
        || async { Ok(store.response(response.id).await?.and_then(|r| r.undone_at)) },
    )
    .await?;
    holding.finish_and_clear();
    let executed = response.executed_at.unwrap_or(lifted);
    println!(
        "Block lifted at its timeout, {:.1} s after it was installed.",
        (lifted - executed) as f64 / 1000.0
    );
    if root {
        let left = unreachable_routes();
        println!(
            "  route table of the quickstart namespace: {}",
            if left.is_empty() {
                "(no unreachable routes)"
            } else {
                &left
            }
        );
    }

    println!("\nWhere to look next:");
    println!(
        "  palisade-manager init --dir /etc/palisade             # a real manager: CA, certificates, manager.toml"
    );
    println!("  palisade-manager agent add web01 -c /etc/palisade/manager.toml");
    println!(
        "  palisade-manager logtest                              # try log lines against the rules"
    );
    println!("  palisadectl --config /etc/palisade/operator/ctl.toml -l   # agent_control's -l");
    println!(
        "  palisadectl --config /etc/palisade/operator/ctl.toml alerts --follow   # alerts as they are stored"
    );
    println!(
        "  palisade-manager token create -c /etc/palisade/manager.toml   # agents enroll themselves ([enrollment])"
    );
    println!("  docs/migrating-from-ossec.md, docs/rules.md, docs/operations.md, deploy/");
    store.close().await;
    shutdown.cancel();
    let _ = manager.await;
    let _ = agent.await;
    Ok(())
}

fn apache_now() -> String {
    jiff::ZonedDateTime::now()
        .strftime("%d/%b/%Y:%H:%M:%S %z")
        .to_string()
}
