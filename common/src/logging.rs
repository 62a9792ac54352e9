//! Tracing set-up for every binary: human-readable lines on stderr
//! (journald adds its own timestamps), colour only on a terminal,
//! `RUST_LOG` overriding the program's default filter.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `default` is the filter when `RUST_LOG`
/// is not set (`"info"` for the daemons, `"warn"` for a demonstration).
/// A second call does nothing.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
