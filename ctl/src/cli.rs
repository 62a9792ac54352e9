//! The `palisadectl` command line: the operator's tool. It speaks OSSEC `agent_control`'s
//! flags (`-l`, `-lc`, `-L`, `-b IP -f RESPONSE -u ID`, `-s`, `-j`) and
//! offers the same operations, and more (unblock), as subcommands with
//! tables and `--json`. Everything goes through the manager's control API
//! with the operator certificate named in `ctl.toml` (`--config`, else
//! `PALISADE_CTL_CONFIG`, else `/etc/palisade/ctl.toml`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::{client, output};
use palisade_proto::v1::{
    ListBlocksRequest, ListRefusalsRequest, ListResponsesRequest, RunResponseRequest,
    UnblockRequest,
};

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
    /// List the available active responses.
    #[arg(short = 'L')]
    list_responses: bool,
    /// Run an active response against this address (with -f and -u or -a).
    #[arg(short = 'b', value_name = "IP", requires = "response")]
    block: Option<IpAddr>,
    /// The response to run, as -L names it (e.g. route-null600).
    #[arg(short = 'f', value_name = "RESPONSE", requires = "block")]
    response: Option<String>,
    /// The agent (-b).
    #[arg(short = 'u', value_name = "ID")]
    agent: Option<String>,
    /// Every agent (-b).
    #[arg(short = 'a', conflicts_with = "agent")]
    all_agents: bool,
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
    /// List the available active responses.
    Responses {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Run an active response against an address.
    Block {
        /// The address.
        ip: IpAddr,
        /// The response, as `responses` names it (e.g. route-null600).
        #[arg(short = 'f', long)]
        response: String,
        /// On these agents (repeatable).
        #[arg(
            short = 'u',
            long = "agent",
            value_name = "ID",
            required_unless_present = "all"
        )]
        agents: Vec<String>,
        /// On every agent.
        #[arg(long, conflicts_with = "agents")]
        all: bool,
    },
    /// Lift a block now, everywhere it is in force (or on the agents named).
    Unblock {
        /// The address.
        ip: IpAddr,
        /// Only on these agents (repeatable).
        #[arg(short = 'u', long = "agent", value_name = "ID")]
        agents: Vec<String>,
        /// On every agent that has it (the default).
        #[arg(long, conflicts_with = "agents")]
        all: bool,
    },
    /// The blocks in force: address, agent, response, rule, expiry.
    Blocks {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Active responses that were refused (white-listed or protected address ...), newest first.
    Refusals {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
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
        self.list
            || self.connected
            || self.not_connected
            || self.list_responses
            || self.block.is_some()
            || self.response.is_some()
            || self.agent.is_some()
            || self.all_agents
            || self.plain
            || self.json
    }
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    if cli.command.is_some() && cli.legacy.any() {
        return Err(Failure::Usage(
            "agent_control flags (-l, -L, -b ...) and subcommands cannot be mixed".into(),
        ));
    }
    let l = &cli.legacy;
    if cli.command.is_none() {
        if l.block.is_some() && l.agent.is_none() && !l.all_agents {
            return Err(Failure::Usage("-b needs -u ID or -a".into()));
        }
        if l.block.is_none() && !l.list && !l.list_responses {
            return Err(Failure::Usage(
                "nothing to do: give -l, -L, -b or a subcommand (see --help)".into(),
            ));
        }
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
        Some(Command::Responses { json }) => {
            let list = control
                .list_responses(ListResponsesRequest {})
                .await
                .map_err(client::call_failed)?
                .into_inner();
            if json {
                output::print_json(&output::responses_json(&list));
            } else {
                print!("{}", output::responses_table(&list));
            }
        }
        Some(Command::Block {
            ip,
            response,
            agents,
            all,
        }) => {
            let r = client::run_response(
                &mut control,
                RunResponseRequest {
                    srcip: ip.to_string(),
                    response: response.clone(),
                    agent_ids: agents,
                    all_agents: all,
                },
            )
            .await?;
            print!("{}", output::run_summary(&response, &ip.to_string(), &r));
        }
        Some(Command::Unblock { ip, agents, all }) => {
            let r = control
                .unblock(UnblockRequest {
                    srcip: ip.to_string(),
                    all_agents: all || agents.is_empty(),
                    agent_ids: agents,
                })
                .await
                .map_err(client::call_failed)?
                .into_inner();
            print!("{}", output::unblock_summary(&ip.to_string(), &r));
        }
        Some(Command::Blocks { json }) => {
            let list = control
                .list_blocks(ListBlocksRequest {})
                .await
                .map_err(client::call_failed)?
                .into_inner();
            if json {
                output::print_json(&output::blocks_json(&list));
            } else {
                print!("{}", output::blocks_table(&list));
            }
        }
        Some(Command::Refusals { limit, json }) => {
            let list = control
                .list_refusals(ListRefusalsRequest { limit })
                .await
                .map_err(client::call_failed)?
                .into_inner();
            if json {
                output::print_json(&output::refusals_json(&list));
            } else {
                print!("{}", output::refusals_table(&list));
            }
        }
        None if l.list_responses => {
            let list = control
                .list_responses(ListResponsesRequest {})
                .await
                .map_err(client::call_failed)?
                .into_inner();
            if l.json {
                output::print_json(&output::responses_json(&list));
            } else {
                print!("{}", output::agent_control_responses(&list));
            }
        }
        None if l.block.is_some() => {
            let ip = l.block.map(|ip| ip.to_string()).unwrap_or_default();
            let response = l.response.clone().unwrap_or_default();
            let r = client::run_response(
                &mut control,
                RunResponseRequest {
                    srcip: ip.clone(),
                    response: response.clone(),
                    agent_ids: l.agent.iter().cloned().collect(),
                    all_agents: l.all_agents,
                },
            )
            .await?;
            print!(
                "{}",
                output::agent_control_run(&response, l.agent.as_deref(), &r)
            );
        }
        None => {
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
