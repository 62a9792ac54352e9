//! The `palisade-agent` command line; `main.rs` only calls [`main`], so tests
//! can build the same program under another name and kill it for real.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::AgentConfig;
use clap::{Parser, Subcommand};
use palisade_common::config::{ConfigError, Problems};
use palisade_common::exit::Exit;
use palisade_common::{logging, signal, tls};
use tokio_util::sync::CancellationToken;

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
    palisade_common::cli::check_args::<Cli, _, _>(args)
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match palisade_common::cli::parse::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    tls::install_crypto_provider();
    let (path, from_start, check_only) = match cli.command {
        Command::Run { config, from_start } => (config.config, from_start, false),
        Command::CheckConfig(config) => (config.config, false, true),
        Command::Enroll(args) => return enroll(args),
    };
    logging::init("info");
    let invalid = |e: ConfigError| {
        eprintln!("palisade-agent: invalid configuration\n{e}");
        ExitCode::from(Exit::Usage)
    };
    let mut config = match AgentConfig::load(&path) {
        Ok(c) => c,
        Err(e) => return invalid(e),
    };
    if check_only {
        let mut missing = Problems::new();
        for (key, file) in [
            ("manager.ca_cert", &config.ca_cert),
            ("manager.cert", &config.cert),
            ("manager.key", &config.key),
        ] {
            if !file.exists() {
                missing.push(
                    key,
                    format!(
                        "{} does not exist (copy the bundle from `palisade-manager agent add`)",
                        file.display()
                    ),
                );
            }
        }
        let text = ConfigError::read(&path).unwrap_or_default();
        if let Err(e) = missing.into_result(&path, &text) {
            return invalid(e);
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
            return Exit::Failure.into();
        }
    };
    let stop = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(signal::cancel_on_signal(shutdown.clone()));
        crate::run_until(config, shutdown).await
    });
    // Every task and the spool are closed before the process is replaced.
    drop(runtime);
    match stop {
        Ok(crate::uplink::Stop::Shutdown) => ExitCode::SUCCESS,
        Ok(crate::uplink::Stop::Restart) => {
            let error = reexec();
            eprintln!("palisade-agent: cannot restart: {error}");
            Exit::Failure.into()
        }
        Err(e) => {
            eprintln!("palisade-agent: {e}");
            Exit::Failure.into()
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
        ExitCode::from(if e.is_usage() {
            Exit::Usage
        } else {
            Exit::Failure
        })
    };
    let pin = match (args.ca_fingerprint, args.ca_file) {
        (Some(f), _) => match tls::parse_fingerprint(&f) {
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
            return Exit::Failure.into();
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
