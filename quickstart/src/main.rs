//! `palisade-quickstart`: watch Palisade catch and block a scanner (see
//! the library's documentation and [`demo`]).

mod demo;

use std::process::ExitCode;

use clap::Parser;
use palisade_common::exit::Exit;
use palisade_common::{logging, tls};

#[derive(Debug, Parser)]
#[command(
    name = "palisade-quickstart",
    version,
    about = "Watch Palisade catch and block a scanner: a manager and an agent on loopback in a temporary directory"
)]
struct Cli {
    /// Do not ask before creating the network namespace (as root).
    #[arg(long, short = 'y')]
    yes: bool,
    /// How long the demonstration block lasts, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = palisade_common::units::parse_duration)]
    block_for: std::time::Duration,
}

fn main() -> ExitCode {
    let cli = match palisade_common::cli::parse::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    tls::install_crypto_provider();
    logging::init("warn");
    let options = demo::QuickstartOptions {
        yes: cli.yes,
        block_for: cli.block_for,
    };
    match demo::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-quickstart: {e:#}");
            Exit::Failure.into()
        }
    }
}
