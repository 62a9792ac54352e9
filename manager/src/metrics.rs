//! The Prometheus endpoint: `[metrics]` in manager.toml (off by default).

use std::path::Path;

use serde::Deserialize;

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {}

/// The validated `[metrics]` section.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {}

/// Checks `[metrics]`; problems go to `errors`, each naming its key.
pub fn compile(_raw: RawMetrics, _base: &Path, _errors: &mut Vec<String>) -> MetricsConfig {
    MetricsConfig {}
}
