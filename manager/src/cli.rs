//! The `palisade-manager` command line; `main.rs` only calls [`main`], so tests
//! can build the same program under another name and kill it for real.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{DEFAULT_PORT, ManagerConfig};
use crate::setup::{self, InitOptions, SetupError};
use clap::{Parser, Subcommand};
use palisade_common::config::{ConfigError, Problems};
use palisade_common::exit::Exit;
use palisade_common::{logging, signal, tls};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "palisade-manager",
    version,
    about = "Palisade's central manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The manager's configuration file.
    #[arg(
        short = 'c',
        long = "config",
        env = "PALISADE_MANAGER_CONFIG",
        default_value = "/etc/palisade/manager.toml"
    )]
    config: PathBuf,
}

/// Which decoders and rules `logtest` and `ruletest` judge with.
#[derive(Debug, Clone, clap::Args)]
struct RulesetArgs {
    /// An OSSEC etc directory: decoder.xml, and rules/ in the <include> order of ossec.conf.
    #[arg(long, value_name = "DIR")]
    ossec_etc: Option<PathBuf>,
    /// A Wazuh ruleset/ directory (decoders/, rules/, lists/, testing/ruleset/), read in Wazuh's dialect.
    #[arg(long, value_name = "DIR", conflicts_with = "ossec_etc")]
    wazuh_ruleset: Option<PathBuf>,
    /// Decoder files to use instead of the built-in decoders (repeatable).
    #[arg(long = "decoders", value_name = "FILE")]
    decoders: Vec<PathBuf>,
    /// A directory of rule files (*.xml, in file-name order) instead of the built-in rules.
    #[arg(long, value_name = "DIR")]
    rules_dir: Option<PathBuf>,
    /// Use the [ruleset] of this manager.toml.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a CA, the server certificate, an operator bundle, manager.toml and the database.
    Init {
        /// Where to put them.
        #[arg(long, default_value = "/etc/palisade")]
        dir: PathBuf,
        /// Extra host names or addresses for the server certificate (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// The address to listen on.
        #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
        listen: SocketAddr,
        /// host:port that agents are told to connect to.
        #[arg(long)]
        advertise: Option<String>,
        /// Replace an existing setup.
        #[arg(long)]
        force: bool,
    },
    /// Run the manager.
    Run(ConfigArg),
    /// Check the configuration and report every problem.
    CheckConfig(ConfigArg),
    /// Judge log lines from stdin as ossec-logtest does: pre-decoding, decoding, rules.
    Logtest {
        #[command(flatten)]
        ruleset: RulesetArgs,
        /// Print only alerts, in alerts.log layout, for the whole stream.
        #[arg(short = 'a')]
        alerts_only: bool,
        /// With -a: print each alert as an alerts.json line instead (Wazuh's shape for a Wazuh ruleset).
        #[arg(long, requires = "alerts_only")]
        json: bool,
        /// No banner.
        #[arg(short = 'q')]
        quiet: bool,
        /// Show every rule tried, as ossec-logtest -v does.
        #[arg(short = 'v')]
        verbose: bool,
        /// Exit code from the last line: rule:level:decoder (0 all equal, 3 decoder, 2 rule, 1 level differs, 255 no rule).
        #[arg(short = 'U', value_name = "RULE:LEVEL:DECODER")]
        unit_test: Option<String>,
        /// Pin the clock <time>, <weekday> and timeframes see (e.g. 2026-11-25T10:00:00, local time).
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
        /// Correlate on each line's own timestamp instead of the arrival time.
        #[arg(long)]
        event_time: bool,
    },
    /// Run OSSEC ruleset test files (INI); ends with 'N passed, M failed'.
    Ruletest {
        #[command(flatten)]
        ruleset: RulesetArgs,
        /// The clock (default: a weekday at 10:00 local, as OSSEC's corpus assumes).
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
        /// Test files; without any, the built-in ruleset's own tests.
        files: Vec<PathBuf>,
    },
    /// Print the TOML equivalent of an ossec.conf's <command>, <active-response> and white_list blocks.
    ImportOssec {
        /// The OSSEC configuration file.
        file: PathBuf,
        /// Merge into this manager.toml (checked before it is written; the
        /// previous version is kept as FILE.bak) instead of printing.
        #[arg(long, value_name = "MANAGER_TOML")]
        into: Option<PathBuf>,
    },
    /// Register or remove agents.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Register, remove or list operators (palisadectl users).
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// One-time enrollment tokens for `palisade-agent enroll`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The manager's CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Copy the SQLite store of manager.toml into an empty PostgreSQL database (stop the manager first).
    MigrateStore {
        /// The PostgreSQL database, e.g. postgres://palisade:SECRET@db.example.org/palisade.
        #[arg(long, value_name = "URL")]
        to: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a new single-use token (shown once; only its hash is stored).
    Create {
        /// How long the token is good for (default: [enrollment] token_ttl, 1h).
        #[arg(long, value_parser = crate::cli::token_ttl)]
        ttl: Option<std::time::Duration>,
        /// The agent name it registers (default: what the agent asks, else its host name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List tokens: unused, used (by which agent) or expired.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Register an operator and write its palisadectl bundle (certificate, key, ctl.toml).
    Add {
        /// The operator's name.
        name: String,
        /// Where to write the bundle (default: operators/NAME beside manager.toml).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove an operator: its certificate is refused from then on, also on open connections.
    Remove {
        /// The operator's name.
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List operators, removed ones too.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Print the CA certificate's SHA-256 fingerprint, for `palisade-agent enroll --ca-fingerprint`.
    Fingerprint {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Register an agent and write its bundle (certificate, key, agent.toml).
    Add {
        /// The agent's name.
        name: String,
        /// The address or network the agent connects from (default: any).
        #[arg(long)]
        ip: Option<String>,
        /// Where to write the bundle.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove an agent: its certificate is refused from then on.
    Remove {
        /// The agent's id, e.g. 001.
        id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Whether `args` (program name first) is a valid command line; the error
/// as clap words it. For checking documented commands without running them.
pub fn check_args<I, T>(args: I) -> Result<(), String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    palisade_common::cli::check_args::<Cli, _, _>(args)
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match palisade_common::cli::parse::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    tls::install_crypto_provider();
    logging::init("info");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Memory freed by agents' streams is returned from every thread.
        .on_thread_park(palisade_malloc::collect_if_released)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("palisade-manager: cannot start the runtime: {e}");
            return Exit::Failure.into();
        }
    };
    runtime.block_on(dispatch(cli.command))
}

fn load_config(path: &std::path::Path) -> Result<ManagerConfig, ExitCode> {
    ManagerConfig::load(path).map_err(|e| {
        eprintln!("palisade-manager: invalid configuration\n{e}");
        ExitCode::from(Exit::Usage)
    })
}

/// The rules `logtest`/`ruletest` judge with, and how: with `-c`, the
/// manager's `[ruleset]` whole (the files and the engine settings).
fn load_ruleset(
    args: &RulesetArgs,
    test_runner: bool,
) -> Result<(palisade_engine::engine::Ruleset, crate::ruleset::Judging), ExitCode> {
    let (source, judging) = match &args.config {
        Some(path) => {
            let config = load_config(path)?;
            let judging = crate::ruleset::Judging::of(&config);
            (config.ruleset, judging)
        }
        None => Default::default(),
    };
    let source = match (&args.ossec_etc, &args.wazuh_ruleset) {
        (Some(etc), _) => crate::ruleset::RulesetSource {
            ossec_etc: Some(etc.clone()),
            wazuh_ruleset: None,
            dialect: palisade_engine::dialect::RulesetDialect::Ossec,
            ..source
        },
        (None, Some(dir)) => crate::ruleset::RulesetSource {
            ossec_etc: None,
            wazuh_ruleset: Some(dir.clone()),
            ..source
        },
        (None, None) => source,
    };
    let ruleset = crate::ruleset::load_with(
        &source,
        &args.decoders,
        args.rules_dir.as_deref(),
        test_runner,
    )
    .map_err(|e| {
        eprintln!("palisade-manager: the ruleset has errors:\n{e}");
        ExitCode::from(Exit::Usage)
    })?;
    print_warnings(&ruleset.rules.warnings);
    Ok((ruleset, judging))
}

/// The ruleset's load warnings on stderr, then their count, as Wazuh's
/// analysisd reports what it left out or ignored; they are not fatal.
fn print_warnings(warnings: &[palisade_engine::error::LoadError]) {
    if warnings.is_empty() {
        return;
    }
    for w in warnings {
        eprintln!("palisade-manager: warning: {w}");
    }
    let n = warnings.len();
    let s = if n == 1 { "" } else { "s" };
    eprintln!("palisade-manager: the ruleset loaded with {n} warning{s}");
}

fn setup_failed(e: SetupError) -> ExitCode {
    eprintln!("palisade-manager: {e}");
    match e {
        SetupError::Usage(_) | SetupError::Config(_) => ExitCode::from(Exit::Usage),
        _ => ExitCode::from(Exit::Failure),
    }
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Init {
            dir,
            sans,
            listen,
            advertise,
            force,
        } => {
            let options = InitOptions {
                dir,
                sans,
                listen,
                advertise,
                force,
            };
            match setup::init(&options).await {
                Ok(report) => {
                    println!("Created a Palisade manager in {}", options.dir.display());
                    println!("  configuration: {}", report.config.display());
                    println!("  database:      {}", report.database);
                    println!(
                        "  operator:      {} (for palisadectl --config)",
                        report.ctl_config.display()
                    );
                    if let Some(ip) = report.ssh_client {
                        println!(
                            "  white list:    {ip} added, the address of your SSH session (never blocked)"
                        );
                    }
                    if let Ok(f) =
                        crate::enroll::ca_fingerprint(&options.dir.join("pki").join("ca.pem"))
                    {
                        println!("  CA fingerprint (SHA-256): {f}");
                    }
                    println!(
                        "Next: palisade-manager agent add NAME -c {}",
                        report.config.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => setup_failed(e),
            }
        }
        Command::Logtest {
            ruleset,
            alerts_only,
            json,
            quiet,
            verbose,
            unit_test,
            now,
            event_time,
        } => {
            let options = crate::logtest_cli::LogtestOptions {
                alerts_only,
                json,
                quiet,
                verbose,
                unit_test,
                now,
                event_time,
            };
            match load_ruleset(&ruleset, false) {
                Ok((rs, judging)) => crate::logtest_cli::logtest(rs, judging, &options),
                Err(code) => code,
            }
        }
        Command::Ruletest {
            ruleset,
            now,
            files,
        } => match load_ruleset(&ruleset, true) {
            Ok((rs, judging)) => crate::logtest_cli::ruletest(rs, judging, now.as_deref(), &files),
            Err(code) => code,
        },
        Command::ImportOssec { file, into } => {
            let text = match std::fs::read(&file) {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => {
                    eprintln!("palisade-manager: {}: {e}", file.display());
                    return ExitCode::from(Exit::Usage);
                }
            };
            match crate::import_ossec::convert(&file.display().to_string(), &text) {
                Ok(toml) => match into {
                    None => {
                        print!("{toml}");
                        ExitCode::SUCCESS
                    }
                    Some(target) => import_into(&target, &toml),
                },
                Err(e) => {
                    eprintln!("palisade-manager: {e}");
                    ExitCode::from(Exit::Usage)
                }
            }
        }
        Command::CheckConfig(arg) => match load_config(&arg.config) {
            Ok(config) => {
                let mut missing = Problems::new();
                for (key, path) in [
                    ("server.ca_cert", &config.ca_cert),
                    ("server.cert", &config.cert),
                    ("server.key", &config.key),
                ] {
                    if !path.exists() {
                        missing.push(key, format!("{} does not exist", path.display()));
                    }
                }
                let text = ConfigError::read(&arg.config).unwrap_or_default();
                let ruleset = match crate::ruleset::load(&config.ruleset) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("palisade-manager: the ruleset does not load\n{e}");
                        return ExitCode::from(Exit::Usage);
                    }
                };
                // Warnings, not errors: OSSEC's decoders stay usable as they are.
                for finding in crate::ruleset::steerable_decoders(&ruleset) {
                    eprintln!("palisade-manager: warning: {finding}");
                }
                match missing.into_result(&arg.config, &text) {
                    Ok(()) => {
                        println!("{}: configuration is valid", arg.config.display());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        ExitCode::from(Exit::Usage)
                    }
                }
            }
            Err(code) => code,
        },
        Command::Run(arg) => {
            let config = match load_config(&arg.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let listeners = match crate::Listeners::bind(&config).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("palisade-manager: {e}");
                    return ExitCode::from(Exit::Failure);
                }
            };
            let shutdown = CancellationToken::new();
            tokio::spawn(signal::cancel_on_signal(shutdown.clone()));
            match crate::run(config, listeners, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("palisade-manager: {e}");
                    ExitCode::from(Exit::Failure)
                }
            }
        }
        Command::Token { command } => token_command(command).await,
        Command::MigrateStore { to, config } => migrate_store(&to, &config.config).await,
        Command::Operator { command } => operator_command(command).await,
        Command::Ca {
            command: CaCommand::Fingerprint { config },
        } => {
            let config = match load_config(&config.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match crate::enroll::ca_fingerprint(&config.ca_cert) {
                Ok(f) => {
                    println!("{f}");
                    ExitCode::SUCCESS
                }
                Err(e) => setup_failed(e),
            }
        }
        Command::Agent { command } => match command {
            AgentCommand::Add {
                name,
                ip,
                out,
                config,
            } => {
                let config = match load_config(&config.config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                match setup::add_agent(&config, &name, ip.as_deref(), out.as_deref()).await {
                    Ok(bundle) => {
                        println!("Agent added: ID: {}, Name: {}", bundle.id, bundle.name);
                        println!(
                            "Bundle: {} (copy it to the agent host; run palisade-agent run -c {})",
                            bundle.dir.display(),
                            bundle.config.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => setup_failed(e),
                }
            }
            AgentCommand::Remove { id, config } => {
                let config = match load_config(&config.config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                match setup::remove_agent(&config, &id).await {
                    Ok(name) => {
                        println!(
                            "Agent removed: ID: {id}, Name: {name}. Its certificate is revoked."
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => setup_failed(e),
                }
            }
        },
    }
}

/// `migrate-store`: copies the configured SQLite store into the empty
/// PostgreSQL database `to`, showing each table's progress, and says what
/// to change in manager.toml.
async fn migrate_store(to: &str, config_path: &std::path::Path) -> ExitCode {
    use std::io::Write as _;

    use crate::store::{Store, StoreLocation};

    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let target = match StoreLocation::parse(to, std::path::Path::new("/")) {
        Ok(t @ StoreLocation::Postgres(_)) => t,
        Ok(StoreLocation::Sqlite(_)) => {
            eprintln!("palisade-manager: --to must be a postgres:// URL");
            return ExitCode::from(Exit::Usage);
        }
        Err(e) => {
            eprintln!("palisade-manager: --to: {e}");
            return ExitCode::from(Exit::Usage);
        }
    };
    if config.database.sqlite_path().is_none() {
        eprintln!(
            "palisade-manager: {} already uses {}; migrate-store copies an SQLite store",
            config_path.display(),
            config.database
        );
        return ExitCode::from(Exit::Usage);
    }
    let copy = async {
        let source = Store::open(&config.database).await?;
        let target_store = Store::open(&target).await?;
        let mut stderr = std::io::stderr();
        let copied = source
            .copy_to(&target_store, |table, done, total| {
                let _ = write!(stderr, "\r  {table:<22} {done:>10} / {total}");
                if done == total {
                    let _ = writeln!(stderr);
                }
            })
            .await;
        source.close().await;
        target_store.close().await;
        copied
    };
    match copy.await {
        Ok(tables) => {
            println!("Copied {} to {target}:", config.database);
            for t in &tables {
                println!("  {:<22} {:>10} rows (checked)", t.table, t.target_rows);
            }
            println!(
                "Now set, in {}:\n  [storage]\n  database = \"{target}\"\n(with the password of --to) \
                 and start the manager; agents reconnect with their certificates. Keep {} as a backup.",
                config_path.display(),
                config.database
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\npalisade-manager: migrate-store: {e}");
            ExitCode::from(Exit::Failure)
        }
    }
}

async fn token_command(command: TokenCommand) -> ExitCode {
    match command {
        TokenCommand::Create { ttl, name, config } => {
            let config = match load_config(&config.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match crate::enroll::create_token(&config, ttl, name.as_deref()).await {
                Ok(t) => {
                    println!("{}", t.token);
                    let only = t
                        .name
                        .as_deref()
                        .map(|n| format!(", for agent {n}"))
                        .unwrap_or_default();
                    eprintln!(
                        "Single use, expires {}{only}.",
                        crate::store::show_time(t.expires_at)
                    );
                    eprintln!("CA fingerprint (SHA-256): {}", t.ca_fingerprint);
                    eprintln!(
                        "On the agent: palisade-agent enroll --manager {} --token {} --ca-fingerprint {}",
                        t.enroll_address, t.token, t.ca_fingerprint
                    );
                    if !config.enrollment.enabled {
                        eprintln!(
                            "Note: enrollment is off; set [enrollment] enabled = true in {} and restart the manager.",
                            config.source.display()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => setup_failed(e),
            }
        }
        TokenCommand::List { json, config } => {
            let config = match load_config(&config.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let store = match crate::store::Store::open(&config.database).await {
                Ok(s) => s,
                Err(e) => return setup_failed(e.into()),
            };
            let tokens = store.tokens().await;
            store.close().await;
            let tokens = match tokens {
                Ok(t) => t,
                Err(e) => return setup_failed(e.into()),
            };
            let now = crate::store::now_ms();
            let show = crate::store::show_time;
            let state = |t: &crate::store::TokenRow| match t.used_at {
                Some(_) => "used",
                None if t.expires_at <= now => "expired",
                None => "unused",
            };
            if json {
                let rows: Vec<serde_json::Value> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t.id,
                            "name": t.name,
                            "created_at": show(t.created_at),
                            "expires_at": show(t.expires_at),
                            "status": state(t),
                            "used_at": t.used_at.map(show),
                            "used_by": t.used_by,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
                return ExitCode::SUCCESS;
            }
            println!("{:<5} {:<20} {:<21} STATUS", "ID", "NAME", "EXPIRES");
            for t in tokens {
                let status = match (t.used_at, &t.used_by) {
                    (Some(at), by) => format!(
                        "used by agent {} at {}",
                        by.as_deref().unwrap_or("?"),
                        show(at)
                    ),
                    _ => state(&t).to_string(),
                };
                println!(
                    "{:<5} {:<20} {:<21} {status}",
                    t.id,
                    t.name.as_deref().unwrap_or("-"),
                    crate::store::show_time(t.expires_at)
                );
            }
            ExitCode::SUCCESS
        }
    }
}

async fn operator_command(command: OperatorCommand) -> ExitCode {
    use crate::identities;
    match command {
        OperatorCommand::Add { name, out, config } => {
            let config = match load_config(&config.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match identities::add_operator(&config, &name, out.as_deref()).await {
                Ok(bundle) => {
                    println!("Operator added: {name}");
                    println!(
                        "Bundle: {} (give it to the operator; palisadectl -c {})",
                        bundle.dir.display(),
                        bundle.ctl_config.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => setup_failed(e),
            }
        }
        OperatorCommand::Remove { name, config } => {
            let config = match load_config(&config.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match identities::remove_operator(&config, &name).await {
                Ok(_) => {
                    println!("Operator removed: {name}. Its certificate is revoked.");
                    ExitCode::SUCCESS
                }
                Err(e) => setup_failed(e),
            }
        }
        OperatorCommand::List { json, config } => {
            let config = match load_config(&config.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let operators = match identities::list_operators(&config).await {
                Ok(o) => o,
                Err(e) => return setup_failed(e),
            };
            let show = crate::store::show_time;
            if json {
                let rows: Vec<serde_json::Value> = operators
                    .iter()
                    .map(|o| {
                        serde_json::json!({
                            "name": o.name,
                            "serial": o.cert_serial,
                            "registered_at": show(o.registered_at),
                            "removed_at": o.removed_at.map(show),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
                return ExitCode::SUCCESS;
            }
            println!(
                "{:<20} {:<21} {:<32} STATUS",
                "NAME", "REGISTERED", "SERIAL"
            );
            for o in operators {
                let status = match o.removed_at {
                    Some(at) => format!("removed {}", show(at)),
                    None => "active".to_string(),
                };
                println!(
                    "{:<20} {:<21} {:<32} {status}",
                    o.name,
                    show(o.registered_at),
                    o.cert_serial
                );
            }
            ExitCode::SUCCESS
        }
    }
}

/// Parses `--ttl`: from 1s to 30d.
pub fn token_ttl(s: &str) -> Result<std::time::Duration, String> {
    crate::enroll::check_ttl(s)
}

/// `import-ossec --into`: merges, checks the result as `check-config`
/// would, keeps the old file as `.bak`, then replaces it.
fn import_into(target: &Path, imported: &str) -> ExitCode {
    let existing = match std::fs::read_to_string(target) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("palisade-manager: {}: {e}", target.display());
            return ExitCode::from(Exit::Usage);
        }
    };
    let (merged, added) = match crate::import_ossec::merge_into(&existing, imported) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("palisade-manager: {}: {e}", target.display());
            return ExitCode::from(Exit::Usage);
        }
    };
    if let Err(e) = ManagerConfig::parse(&merged, target) {
        eprintln!(
            "palisade-manager: the merged configuration would be invalid; {} is unchanged\n{e}",
            target.display()
        );
        return ExitCode::from(Exit::Usage);
    }
    if added.is_empty() {
        println!("Nothing to add: {} already has it all.", target.display());
        return ExitCode::SUCCESS;
    }
    let mut backup = target.as_os_str().to_owned();
    backup.push(".bak");
    let mut temp = target.as_os_str().to_owned();
    temp.push(".new");
    // The copy keeps the file's permissions; the new file gets them too.
    let written = std::fs::copy(target, &backup)
        .and_then(|_| std::fs::write(&temp, &merged))
        .and_then(|()| std::fs::metadata(target))
        .and_then(|m| std::fs::set_permissions(&temp, m.permissions()))
        .and_then(|()| std::fs::rename(&temp, target));
    if let Err(e) = written {
        eprintln!("palisade-manager: {}: {e}", target.display());
        return ExitCode::from(Exit::Failure);
    }
    println!(
        "Merged into {} (previous version: {}):",
        target.display(),
        Path::new(&backup).display()
    );
    for a in added {
        println!("  added {a}");
    }
    ExitCode::SUCCESS
}
