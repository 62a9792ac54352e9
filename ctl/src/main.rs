//! `palisadectl`: the operator's tool. It speaks OSSEC `agent_control`'s
//! flags (`-l`, `-lc`, `-s`, `-j`) and offers the same operations as
//! subcommands with tables and `--json`. Everything goes through the
//! manager's control API with the operator certificate named in
//! `ctl.toml` (`--config`, else `PALISADE_CTL_CONFIG`, else
//! `/etc/palisade/ctl.toml`).

mod client;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit code for usage and configuration errors.
const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "palisadectl",
    version,
    about = "Operate a Palisade manager (agent_control compatible)",
    arg_required_else_help = true
)]
struct Cli {
    /// ctl.toml with the manager's address and the operator certificate.
    #[arg(
        long,
        global = true,
        env = "PALISADE_CTL_CONFIG",
        default_value = "/etc/palisade/ctl.toml"
    )]
    config: PathBuf,
    #[command(flatten)]
    legacy: Legacy,
    #[command(subcommand)]
    command: Option<Command>,
}

/// agent_control's flags.
#[derive(Debug, Args)]
#[command(next_help_heading = "agent_control compatible flags")]
struct Legacy {
    /// List agents (-lc: connected only, -ln: not connected).
    #[arg(short = 'l')]
    list: bool,
    /// With -l: only connected agents.
    #[arg(short = 'c', requires = "list")]
    connected: bool,
    /// With -l: only agents that are not connected.
    #[arg(short = 'n', requires = "list", conflicts_with = "connected")]
    not_connected: bool,
    /// Plain, script-friendly output (CSV).
    #[arg(short = 's')]
    plain: bool,
    /// JSON output.
    #[arg(short = 'j', conflicts_with = "plain")]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List agents.
    Agents {
        /// Only connected agents.
        #[arg(long)]
        connected: bool,
        /// Also removed agents.
        #[arg(long)]
        all: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("palisadectl: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("palisadectl: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("palisadectl: {msg}");
            ExitCode::from(1)
        }
    }
}

/// What went wrong, and whether it was the operator's input.
#[derive(Debug)]
pub enum Failure {
    /// Bad flags or configuration (exit 64).
    Usage(String),
    /// The manager could not be reached or refused (exit 1).
    Runtime(String),
}

impl Legacy {
    fn any(&self) -> bool {
        self.list || self.connected || self.not_connected || self.plain || self.json
    }
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    if cli.command.is_some() && cli.legacy.any() {
        return Err(Failure::Usage(
            "agent_control flags (-l, -s, -j ...) and subcommands cannot be mixed".into(),
        ));
    }
    let config = client::CtlConfig::load(&cli.config)?;
    let mut control = client::connect(&config).await?;
    match cli.command {
        Some(Command::Agents {
            connected,
            all,
            json,
        }) => {
            let list = client::list_agents(&mut control, connected, false, all).await?;
            if json {
                output::print_json(&output::agents_json(&list));
            } else {
                print!("{}", output::agents_table(&list));
            }
        }
        None => {
            let l = cli.legacy;
            if !l.list {
                return Err(Failure::Usage(
                    "nothing to do: give -l or a subcommand (see --help)".into(),
                ));
            }
            let list =
                client::list_agents(&mut control, l.connected, l.not_connected, false).await?;
            let with_manager = !l.not_connected;
            if l.json {
                output::print_json(&output::agent_control_json(&list, with_manager));
            } else if l.plain {
                print!("{}", output::agent_control_csv(&list, with_manager));
            } else {
                print!(
                    "{}",
                    output::agent_control_list(&list, with_manager, !l.connected)
                );
            }
        }
    }
    Ok(())
}
