//! What Palisade's manager, agent and `palisadectl` share, so that each
//! concern has one home and the daemons do not depend on each other. Light
//! on purpose: no database, no engine.
//!
//! # Layout
//!
//! - [`config`]: configuration problems as (key path, message) pairs,
//!   located in the file from the TOML parser's spans (`file:line: key:
//!   reason`), every one at once.
//! - [`units`]: durations (a jiff span, 24-hour days) and sizes.
//! - [`network`]: addresses and CIDRs as written, IPv4-mapped forms folded.
//! - [`address`]: **the one address policy**, "may this IP be blocked?",
//!   applied by the manager and again by the agent.
//! - [`hostfacts`]: what the policy protects, read from the host
//!   (addresses, subnets, gateways, resolvers).
//! - [`time`]: epoch milliseconds, `jiff` and protobuf timestamps.
//! - [`clock`]: the wall clock as a parameter (system, or manual in tests).
//! - [`tls`]: the client side of mutual TLS, the CA fingerprint, error
//!   chains that show the TLS alert.
//! - [`bundle`]: the agent bundle's `agent.toml` and the default ports.
//! - [`systemd`]: readiness and watchdog for `Type=notify` units.
//! - [`logging`]: the tracing subscriber every binary installs.
//! - [`signal`]: SIGTERM/SIGINT to a cancellation token.
//! - [`exit`]: the exit codes (0, 1, 64).
//! - [`cli`]: parsing a command line with those codes, and checking a
//!   documented one without running it.
#![forbid(unsafe_code)]

pub mod address;
pub mod bundle;
pub mod cli;
pub mod clock;
pub mod config;
pub mod exit;
pub mod hostfacts;
pub mod logging;
pub mod network;
pub mod signal;
pub mod systemd;
pub mod time;
pub mod tls;
pub mod units;
