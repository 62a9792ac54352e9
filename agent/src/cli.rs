//! The `palisade-agent` command line; `main.rs` only calls [`main`], so tests
//! can build the same program under another name and kill it for real.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::AgentConfig;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Exit code for usage and configuration errors (BSD `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "palisade-agent",
    version,
    about = "Palisade's agent: ships logs to the manager and carries out active responses"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The agent's configuration file.
    #[arg(
        short = 'c',
        long = "config",
        env = "PALISADE_AGENT_CONFIG",
        default_value = "/etc/palisade/agent.toml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Read files seen for the first time from their start.
        #[arg(long)]
        from_start: bool,
    },
    /// Check the configuration and report every problem.
    CheckConfig(ConfigArg),
    /// Get this agent's identity from the manager with a one-time token (the key stays here).
    Enroll(EnrollArgs),
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("pin").args(["ca_fingerprint", "ca_file"]))]
struct EnrollArgs {
    /// The manager's enrollment endpoint, HOST:PORT (port 1515 by default in manager.toml).
    #[arg(long, value_name = "HOST:PORT")]
    manager: String,
    /// The one-time token from `palisade-manager token create`.
    #[arg(long, env = "PALISADE_ENROLL_TOKEN", hide_env_values = true)]
    token: String,
    /// The agent name to register (default: the token's name, else this host's name).
    #[arg(long)]
    name: Option<String>,
    /// SHA-256 fingerprint of the manager's CA (`palisade-manager ca fingerprint`).
    #[arg(long, value_name = "SHA256")]
    ca_fingerprint: Option<String>,
    /// A copy of the manager's CA certificate (its pki/ca.pem), instead of a fingerprint.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Where to write agent.toml, agent.pem, agent.key and ca.pem.
    #[arg(long, default_value = "/etc/palisade")]
    dir: PathBuf,
    /// Replace an identity already in --dir.
    #[arg(long)]
    force: bool,
}

/// Whether `args` (program name first) is a valid command line; the error
/// as clap words it. For checking documented commands without running them.
pub fn check_args<I, T>(args: I) -> Result<(), String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (path, from_start, check_only) = match cli.command {
        Command::Run { config, from_start } => (config.config, from_start, false),
        Command::CheckConfig(config) => (config.config, false, true),
        Command::Enroll(args) => return enroll(args),
    };
    init_tracing();
    let mut config = match AgentConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("palisade-agent: invalid configuration\n{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if check_only {
        let missing: Vec<String> = [
            ("manager.ca_cert", &config.ca_cert),
            ("manager.cert", &config.cert),
            ("manager.key", &config.key),
        ]
        .iter()
        .filter(|(_, p)| !p.exists())
        .map(|(key, p)| {
            format!(
                "{}: {key}: {} does not exist (copy the bundle from `palisade-manager agent add`)",
                path.display(),
                p.display()
            )
        })
        .collect();
        if !missing.is_empty() {
            eprintln!(
                "palisade-agent: invalid configuration\n{}",
                missing.join("\n")
            );
            return ExitCode::from(EXIT_USAGE);
        }
        println!("{}: configuration is valid", path.display());
        return ExitCode::SUCCESS;
    }
    config.read_from_start |= from_start;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("palisade-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        crate::run_until(config, shutdown).await
    });
    // Every task and the spool are closed before the process is replaced.
    drop(runtime);
    match stop {
        Ok(crate::uplink::Stop::Shutdown) => ExitCode::SUCCESS,
        Ok(crate::uplink::Stop::Restart) => {
            let error = reexec();
            eprintln!("palisade-agent: cannot restart: {error}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("palisade-agent: {e}");
            ExitCode::from(1)
        }
    }
}

/// Replaces this process with the same binary and arguments (a restart
/// asked by the manager): the process id stays, so it works the same under
/// systemd and without it. Returns only on failure.
fn reexec() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let program = match std::env::current_exe() {
        Ok(p) => {
            // A binary replaced by an upgrade shows as "path (deleted)":
            // start the new one at the same path.
            let text = p.to_string_lossy();
            match text.strip_suffix(" (deleted)") {
                Some(path) => PathBuf::from(path),
                None => p,
            }
        }
        Err(e) => return e,
    };
    tracing::info!(program = %program.display(), "Restarting.");
    std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .exec()
}

/// `enroll`: one line on success or on failure, nothing else.
fn enroll(args: EnrollArgs) -> ExitCode {
    use crate::enroll::{CaPin, EnrollOptions};
    let fail = |e: crate::enroll::EnrollError| {
        eprintln!("palisade-agent: {e}");
        ExitCode::from(if e.is_usage() { EXIT_USAGE } else { 1 })
    };
    let pin = match (args.ca_fingerprint, args.ca_file) {
        (Some(f), _) => match crate::enroll::parse_fingerprint(&f) {
            Ok(f) => CaPin::Fingerprint(f),
            Err(e) => return fail(crate::enroll::EnrollError::Usage(e)),
        },
        (None, Some(file)) => CaPin::File(file),
        (None, None) => {
            return fail(crate::enroll::EnrollError::Usage(
                "give --ca-fingerprint or --ca-file".into(),
            ));
        }
    };
    let options = EnrollOptions {
        manager: args.manager,
        token: args.token,
        name: args.name,
        pin,
        dir: args.dir,
        force: args.force,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("palisade-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(crate::enroll::enroll(&options)) {
        Ok(done) => {
            println!(
                "Enrolled: ID: {}, Name: {}, manager {}. Start the agent: palisade-agent run -c {}",
                done.id,
                done.name,
                done.manager_address,
                done.config.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("Shutting down.");
    shutdown.cancel();
}
