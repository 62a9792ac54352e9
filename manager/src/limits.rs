//! `[limits]` in manager.toml: how much of what an agent sends the manager
//! takes in, so that no line, message or memory can grow without bound.
//!
//! ```toml
//! [limits]
//! max_line_length = "64KiB"      # longer lines are cut and flagged
//! max_batch_bytes = "4MiB"       # announced in Welcome; agents batch below it
//! max_message_size = "8MiB"      # gRPC messages larger than this are refused
//! correlation_memory = "64MiB"   # events kept for frequency rules, in bytes
//! correlation_event_bytes = "16KiB" # of each kept event's line
//! ```
//!
//! The attacker writes the lines (nginx escapes a big request header into
//! a long access-log line), so every size is bounded by default. The
//! message limit must leave headroom above the batch limit: an agent's
//! batch is never refused for its size, and so is never resent forever.

use palisade_common::config::Problems;
use palisade_common::units::SizeSetting;
use palisade_engine::correlate::{CorrelateLimits, DEFAULT_EVENT_BYTES, DEFAULT_MEMORY_BYTES};
use serde::Deserialize;

/// `max_line_length` by default, as the agent's.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 64 << 10;
/// `max_batch_bytes` by default (tonic's own default message limit).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 << 20;
/// The smallest `max_line_length`.
pub const MIN_LINE_LENGTH: usize = 256;
/// The largest `max_line_length` (the agent's largest).
pub const MAX_LINE_LENGTH: usize = 16 << 20;
/// The smallest `max_batch_bytes`.
pub const MIN_BATCH_BYTES: usize = 64 << 10;
/// What `max_message_size` must leave above `max_batch_bytes`: the other
/// messages of the stream and the framing.
pub const MESSAGE_HEADROOM: usize = 64 << 10;

/// `[limits]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    max_line_length: Option<SizeSetting>,
    max_batch_bytes: Option<SizeSetting>,
    max_message_size: Option<SizeSetting>,
    correlation_memory: Option<SizeSetting>,
    correlation_event_bytes: Option<SizeSetting>,
}

/// The validated `[limits]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Lines longer than this are cut and flagged before the engine, the
    /// archive and the alerts see them.
    pub max_line_length: usize,
    /// The most bytes an encoded event batch may take, announced to agents
    /// in Welcome.
    pub max_batch_bytes: usize,
    /// The most bytes of one gRPC message the manager decodes.
    pub max_message_size: usize,
    /// The correlation memory's byte bounds (the event count is OSSEC's
    /// `memory_size`, 8192).
    pub correlation: CorrelateLimits,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_line_length: DEFAULT_MAX_LINE_LENGTH,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_message_size: 2 * DEFAULT_MAX_BATCH_BYTES,
            correlation: CorrelateLimits::default(),
        }
    }
}

/// Checks `[limits]`; problems go to `errors`, each naming its key.
pub fn compile(raw: RawLimits, errors: &mut Problems) -> LimitsConfig {
    let defaults = LimitsConfig::default();
    let mut size = |key: &str, v: &Option<SizeSetting>, min: usize, max: usize| -> Option<usize> {
        let bytes = v.as_ref()?.bytes();
        match bytes.map(|n| usize::try_from(n).unwrap_or(usize::MAX)) {
            Ok(n) if n < min => errors.push(
                format!("limits.{key}"),
                format!("{n} bytes is below the minimum {min}"),
            ),
            Ok(n) if n > max => errors.push(
                format!("limits.{key}"),
                format!("{n} bytes is above the maximum {max}"),
            ),
            Ok(n) => return Some(n),
            Err(e) => errors.push(format!("limits.{key}"), e),
        }
        None
    };
    let max_line_length = size(
        "max_line_length",
        &raw.max_line_length,
        MIN_LINE_LENGTH,
        MAX_LINE_LENGTH,
    )
    .unwrap_or(defaults.max_line_length);
    let max_batch_bytes = size(
        "max_batch_bytes",
        &raw.max_batch_bytes,
        MIN_BATCH_BYTES,
        1 << 30,
    )
    .unwrap_or(defaults.max_batch_bytes);
    let max_message_size = size(
        "max_message_size",
        &raw.max_message_size,
        MIN_BATCH_BYTES + MESSAGE_HEADROOM,
        2 << 30,
    );
    let memory_bytes = size(
        "correlation_memory",
        &raw.correlation_memory,
        1 << 20,
        16 << 30,
    )
    .unwrap_or(DEFAULT_MEMORY_BYTES);
    let event_bytes = size(
        "correlation_event_bytes",
        &raw.correlation_event_bytes,
        MIN_LINE_LENGTH,
        MAX_LINE_LENGTH,
    )
    .unwrap_or(DEFAULT_EVENT_BYTES);
    let max_message_size = match max_message_size {
        Some(n) if n < max_batch_bytes + MESSAGE_HEADROOM => {
            errors.push(
                "limits.max_message_size",
                format!(
                    "{n} bytes leaves less than {MESSAGE_HEADROOM} bytes above limits.max_batch_bytes ({max_batch_bytes})"
                ),
            );
            2 * max_batch_bytes
        }
        Some(n) => n,
        None => 2 * max_batch_bytes,
    };
    LimitsConfig {
        max_line_length,
        max_batch_bytes,
        max_message_size,
        correlation: CorrelateLimits {
            memory_bytes,
            event_bytes,
            ..CorrelateLimits::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> (LimitsConfig, Vec<String>) {
        let raw: RawLimits = toml::from_str(text).unwrap();
        let mut errors = Problems::new();
        let config = compile(raw, &mut errors);
        (
            config,
            errors.keys().into_iter().map(String::from).collect(),
        )
    }

    #[test]
    fn defaults_leave_headroom_above_the_batch() {
        let (c, errors) = compile_text("");
        assert!(errors.is_empty());
        assert_eq!(c, LimitsConfig::default());
        assert_eq!(c.max_line_length, 64 << 10);
        assert!(c.max_message_size >= c.max_batch_bytes + MESSAGE_HEADROOM);
    }

    #[test]
    fn sizes_take_units_and_numbers() {
        let (c, errors) = compile_text(
            "max_line_length = \"1MiB\"\nmax_batch_bytes = 1048576\nmax_message_size = \"2MiB\"\ncorrelation_memory = \"8MiB\"",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.max_line_length, 1 << 20);
        assert_eq!(c.max_batch_bytes, 1 << 20);
        assert_eq!(c.max_message_size, 2 << 20);
        assert_eq!(c.correlation.memory_bytes, 8 << 20);
        // Unset: twice the batch.
        let (c, _) = compile_text("max_batch_bytes = \"1MiB\"");
        assert_eq!(c.max_message_size, 2 << 20);
    }

    #[test]
    fn a_message_limit_without_headroom_is_refused() {
        let (_, errors) = compile_text("max_batch_bytes = \"4MiB\"\nmax_message_size = \"4MiB\"");
        assert_eq!(errors, ["limits.max_message_size"]);
        let (_, errors) = compile_text("max_line_length = 10\ncorrelation_event_bytes = \"lots\"");
        assert_eq!(
            errors,
            ["limits.max_line_length", "limits.correlation_event_bytes"]
        );
    }
}
