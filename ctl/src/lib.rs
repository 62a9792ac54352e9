//! `palisadectl`, the operator's tool, as a library so that end-to-end
//! tests can build the same program.
//!
//! # Layout
//!
//! - [`cli`]: the command line (agent_control's flags and the subcommands).
//! - [`client`]: `ctl.toml` and the control API connection.
//! - [`output`]: agent_control's text layouts, tables and JSON.
//!
//! The client side of mutual TLS, the exit codes, durations (`--since`)
//! and timestamp conversions come from `palisade_common`, as the daemons'
//! do. This crate depends on no daemon: its end-to-end tests, which run a
//! real manager and agents, live in `palisade-tests` (`tests/tests/ctl_*`).
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod output;

/// `print!` that ends quietly on a closed pipe ([`output::emit`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::emit(format_args!($($arg)*)) };
}

/// `println!` that ends quietly on a closed pipe ([`output::emit`]).
#[macro_export]
macro_rules! outln {
    () => { $crate::output::emit(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::emit(format_args!("{}\n", format_args!($($arg)*))) };
}
