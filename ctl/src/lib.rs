//! `palisadectl`, the operator's tool, as a library so that end-to-end
//! tests can build the same program.
//!
//! # Layout
//!
//! - [`cli`]: the command line (agent_control's flags and the subcommands).
//! - [`client`]: `ctl.toml` and the control API connection.
//! - [`output`]: agent_control's text layouts, tables and JSON.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod output;
