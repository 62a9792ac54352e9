//! Pruning old alerts and archived events: `[retention]` in manager.toml.

use std::path::Path;

use serde::Deserialize;

/// `[retention]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {}

/// The validated `[retention]` section.
#[derive(Debug, Clone, Default)]
pub struct RetentionConfig {}

/// Checks `[retention]`; problems go to `errors`, each naming its key.
pub fn compile(_raw: RawRetention, _base: &Path, _errors: &mut Vec<String>) -> RetentionConfig {
    RetentionConfig {}
}
