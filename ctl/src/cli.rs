//! The `palisadectl` command line: the operator's tool. It speaks OSSEC `agent_control`'s
//! flags (`-l`, `-lc`, `-ln`, `-i ID`, `-R ID`, `-u ID -R`, `-L`,
//! `-b IP -f RESPONSE -u ID`, `-s`, `-j`) and
//! offers the same operations, and more (unblock), as subcommands with
//! tables and `--json`. Everything goes through the manager's control API
//! with the operator certificate named in `ctl.toml` (`--config`, else
//! `PALISADE_CTL_CONFIG`, else `/etc/palisade/ctl.toml`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use palisade_common::exit::Exit;

use crate::{client, output};
use palisade_proto::v1::{
    GetAgentRequest, ListAlertsRequest, ListBlocksRequest, ListRefusalsRequest,
    ListResponsesRequest, RemoveAgentRequest, ResetBreakerRequest, RunResponseRequest,
    StatusRequest, UnblockRequest,
};

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
    /// Information on one agent (000: the manager).
    #[arg(short = 'i', value_name = "ID")]
    info: Option<String>,
    /// Ask an agent to restart itself (-R ID, or -u ID -R, or -R -a).
    #[arg(short = 'R', value_name = "ID", num_args = 0..=1, default_missing_value = "")]
    restart: Option<String>,
    /// List the available active responses.
    #[arg(short = 'L')]
    list_responses: bool,
    /// Run an active response against this address (with -f and -u or -a).
    #[arg(short = 'b', value_name = "IP", requires = "response")]
    block: Option<IpAddr>,
    /// The response to run, as -L names it (e.g. route-null600).
    #[arg(short = 'f', value_name = "RESPONSE", requires = "block")]
    response: Option<String>,
    /// The agent (-b, -R).
    #[arg(short = 'u', value_name = "ID")]
    agent: Option<String>,
    /// Every agent (-b, -R).
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
    /// One agent in detail, or `agent remove ID`.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Agent {
        /// The agent's id (000: the manager).
        #[arg(required = true)]
        id: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<AgentAction>,
    },
    /// Alerts, newest last: the latest `--limit`, then with `--follow` every
    /// new one as it is stored.
    Alerts {
        /// Only alerts this recent: 90s, 30m, 1h, 2d, 1w, or an RFC 3339 time.
        #[arg(long, value_name = "AGE|TIME")]
        since: Option<String>,
        /// Only alerts of this level or higher.
        #[arg(long, value_name = "LEVEL")]
        level: Option<u32>,
        /// Only alerts of this rule.
        #[arg(long, value_name = "ID")]
        rule: Option<u32>,
        /// Only alerts from this agent (000: the manager).
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
        /// Only alerts with this source address.
        #[arg(long, value_name = "IP")]
        srcip: Option<IpAddr>,
        /// At most this many (the newest); with --follow, of the backlog.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Keep going: print each new alert as it is stored.
        #[arg(long, short = 'f')]
        follow: bool,
        /// JSON output (with --follow: one object a line).
        #[arg(long)]
        json: bool,
    },
    /// The manager: version, uptime, events per second, agents, alerts;
    /// and every manager on its database with its agents and rates.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Name each manager's agents.
        #[arg(long, short = 'v')]
        verbose: bool,
    },
    /// Ask agents to restart themselves (spool and blocks are kept).
    Restart {
        /// The agents.
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Every connected agent.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
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
    /// The active-response circuit breaker: `breaker reset ID` lets new
    /// blocks on an agent resume after it tripped.
    Breaker {
        #[command(subcommand)]
        action: BreakerAction,
    },
}

#[derive(Debug, Subcommand)]
enum BreakerAction {
    /// Close a tripped breaker: new blocks on the agent resume.
    Reset {
        /// The agent's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum AgentAction {
    /// Remove an agent: revoke its certificate and end its stream (as
    /// `palisade-manager agent remove`).
    Remove {
        /// The agent's id.
        id: String,
        /// Why, for the manager's log.
        #[arg(long, default_value = "")]
        reason: String,
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
    palisade_common::cli::check_args::<Cli, _, _>(args)
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match palisade_common::cli::parse_one_line::<Cli>("palisadectl") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    palisade_common::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("palisadectl: cannot start the runtime: {e}");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The message may quote the manager's or an agent's words.
        Err(Failure::Usage(msg)) => {
            eprintln!("palisadectl: {}", output::escaped(&msg));
            Exit::Usage.into()
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("palisadectl: {}", output::escaped(&msg));
            Exit::Failure.into()
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
            || self.info.is_some()
            || self.restart.is_some()
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
        if l.restart.as_deref() == Some("") && l.agent.is_none() && !l.all_agents {
            return Err(Failure::Usage(
                "-R needs an agent: -R ID, -u ID -R or -R -a".into(),
            ));
        }
        if l.block.is_none()
            && !l.list
            && !l.list_responses
            && l.info.is_none()
            && l.restart.is_none()
        {
            return Err(Failure::Usage(
                "nothing to do: give -l, -i, -R, -L, -b or a subcommand (see --help)".into(),
            ));
        }
    }
    let since = match &cli.command {
        Some(Command::Alerts {
            since: Some(since), ..
        }) => Some(parse_since(since)?),
        _ => None,
    };
    let config = client::CtlConfig::load(&cli.config)?;
    let mut control = client::connect(&config).await?;
    match cli.command {
        Some(Command::Agent {
            action: Some(AgentAction::Remove { id, reason, json }),
            ..
        }) => {
            let agent = control
                .remove_agent(RemoveAgentRequest {
                    agent_id: id,
                    reason,
                })
                .await
                .map_err(client::call_failed)?
                .into_inner();
            output::show(
                json,
                &agent,
                output::agent_detail_json,
                output::removed_text,
            );
        }
        Some(Command::Agent { id, json, .. }) => {
            let agent = control
                .get_agent(GetAgentRequest {
                    agent_id: id.unwrap_or_default(),
                })
                .await
                .map_err(client::call_failed)?
                .into_inner();
            output::show(
                json,
                &agent,
                output::agent_detail_json,
                output::agent_detail,
            );
        }
        Some(Command::Alerts {
            level,
            rule,
            agent,
            srcip,
            limit,
            follow,
            json,
            ..
        }) => {
            let request = ListAlertsRequest {
                since,
                min_level: level.unwrap_or(0),
                rule_id: rule.unwrap_or(0),
                agent_id: agent.unwrap_or_default(),
                srcip: srcip.map(|ip| ip.to_string()).unwrap_or_default(),
                limit,
                after_id: 0,
                before_id: 0,
            };
            if follow {
                return client::follow_alerts(&mut control, request, json).await;
            }
            let mut alerts = client::list_alerts(&mut control, request).await?;
            alerts.reverse();
            output::show(
                json,
                alerts.as_slice(),
                output::alerts_json,
                output::alerts_table,
            );
        }
        Some(Command::Status { json, verbose }) => {
            let status = control
                .status(StatusRequest {})
                .await
                .map_err(client::call_failed)?
                .into_inner();
            output::show(
                json,
                &status,
                output::status_json,
                if verbose {
                    output::status_text_verbose
                } else {
                    output::status_text_block
                },
            );
        }
        Some(Command::Restart { ids, all }) => {
            let r = client::restart(&mut control, ids, all).await?;
            for id in &r.sent_to {
                let via = match r.forwarded.contains(id) {
                    true => " (through the manager holding it)",
                    false => "",
                };
                crate::outln!("agent {}: asked to restart{via}", output::escaped(id));
            }
            for id in &r.not_connected {
                crate::outln!(
                    "agent {}: not connected, not restarted",
                    output::escaped(id)
                );
            }
        }
        Some(Command::Agents {
            connected,
            all,
            json,
        }) => {
            let list = client::list_agents(&mut control, connected, false, all).await?;
            output::show(json, &list, output::agents_json, output::agents_table);
        }
        Some(Command::Responses { json }) => {
            let list = control
                .list_responses(ListResponsesRequest {})
                .await
                .map_err(client::call_failed)?
                .into_inner();
            output::show(json, &list, output::responses_json, output::responses_table);
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
            crate::out!("{}", output::run_summary(&response, &ip.to_string(), &r));
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
            crate::out!("{}", output::unblock_summary(&ip.to_string(), &r));
        }
        Some(Command::Blocks { json }) => {
            let list = control
                .list_blocks(ListBlocksRequest {})
                .await
                .map_err(client::call_failed)?
                .into_inner();
            output::show(json, &list, output::blocks_json, output::blocks_table);
        }
        Some(Command::Breaker {
            action: BreakerAction::Reset { id },
        }) => {
            let reset = control
                .reset_breaker(ResetBreakerRequest {
                    agent_id: id.clone(),
                })
                .await
                .map_err(client::call_failed)?
                .into_inner();
            if reset.was_tripped {
                crate::outln!("breaker of agent {id}: reset, new blocks resume");
            } else {
                crate::outln!("breaker of agent {id}: was not tripped");
            }
        }
        Some(Command::Refusals { limit, json }) => {
            let list = control
                .list_refusals(ListRefusalsRequest { limit })
                .await
                .map_err(client::call_failed)?
                .into_inner();
            output::show(json, &list, output::refusals_json, output::refusals_table);
        }
        None if l.info.is_some() => {
            let agent = control
                .get_agent(GetAgentRequest {
                    agent_id: l.info.clone().unwrap_or_default(),
                })
                .await
                .map_err(client::call_failed)?
                .into_inner();
            if l.json {
                output::print_json(&output::agent_control_info_json(&agent));
            } else if l.plain {
                crate::out!("{}", output::agent_control_info_csv(&agent));
            } else {
                crate::out!("{}", output::agent_control_info(&agent));
            }
        }
        None if l.restart.is_some() => {
            let named = l
                .restart
                .clone()
                .filter(|id| !id.is_empty())
                .or_else(|| l.agent.clone());
            let ids: Vec<String> = named.iter().cloned().collect();
            let r = client::restart(&mut control, ids, l.all_agents && named.is_none()).await?;
            if l.json {
                output::print_json(&output::restart_json(&r));
            } else if let Some(id) = named {
                crate::out!("{}", output::agent_control_restart(&id));
            } else {
                crate::out!("{}", output::agent_control_restart_all(&r));
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
                crate::out!("{}", output::agent_control_responses(&list));
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
            crate::out!(
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
                crate::out!("{}", output::agent_control_csv(&list, with_manager));
            } else {
                crate::out!(
                    "{}",
                    output::agent_control_list(&list, with_manager, !l.connected)
                );
            }
        }
    }
    Ok(())
}

/// `--since`: an age (`90s`, `30m`, `1h`, `2d`, `1w`, `1h30m`) back from
/// now, or an RFC 3339 time.
fn parse_since(text: &str) -> Result<prost_types::Timestamp, Failure> {
    let bad = || {
        Failure::Usage(format!(
            "invalid --since {text:?}: give an age such as 30m, 1h, 2d, or an RFC 3339 time"
        ))
    };
    // Ages are read as the daemons read durations.
    let at = match text.parse::<jiff::Timestamp>() {
        Ok(t) => t,
        Err(_) => {
            let age = palisade_common::units::parse_duration(text).map_err(|_| bad())?;
            jiff::Timestamp::now().checked_sub(age).map_err(|_| bad())?
        }
    };
    Ok(palisade_common::time::proto_from_jiff(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_ages_and_times() {
        let now = jiff::Timestamp::now().as_second();
        let t = parse_since("1h").unwrap();
        assert!((now - 3600 - t.seconds).abs() <= 2);
        let t = parse_since("2d").unwrap();
        assert!((now - 172_800 - t.seconds).abs() <= 2);
        assert_eq!(
            parse_since("2026-01-02T03:04:05Z").unwrap().seconds,
            1_767_323_045
        );
        assert!(parse_since("1y").is_err());
        assert!(parse_since("h").is_err());
    }

    #[test]
    fn agent_control_flags_parse_as_typed() {
        for args in [
            &["palisadectl", "-lc"][..],
            &["palisadectl", "-ln"],
            &["palisadectl", "-ls"],
            &["palisadectl", "-lj"],
            &["palisadectl", "-i", "001"],
            &["palisadectl", "-i", "001", "-s"],
            &["palisadectl", "-R", "001"],
            &["palisadectl", "-u", "001", "-R"],
            &["palisadectl", "-R", "-a"],
            &["palisadectl", "agent", "001"],
            &["palisadectl", "agent", "remove", "001"],
            &[
                "palisadectl",
                "alerts",
                "--since",
                "1h",
                "--level",
                "10",
                "--follow",
            ],
        ] {
            check_args(args.iter().copied()).unwrap();
        }
        let cli = Cli::try_parse_from(["palisadectl", "-u", "001", "-R"]).unwrap();
        assert_eq!(cli.legacy.restart.as_deref(), Some(""));
        assert_eq!(cli.legacy.agent.as_deref(), Some("001"));
        let cli = Cli::try_parse_from(["palisadectl", "-R", "002"]).unwrap();
        assert_eq!(cli.legacy.restart.as_deref(), Some("002"));
        let cli = Cli::try_parse_from(["palisadectl", "agent", "remove", "003"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Agent { action: Some(AgentAction::Remove { ref id, .. }), .. }) if id == "003"
        ));
        let cli = Cli::try_parse_from(["palisadectl", "agent", "004"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Agent { id: Some(ref id), action: None, .. }) if id == "004")
        );
        assert!(check_args(["palisadectl", "agent"]).is_err());
    }
}
