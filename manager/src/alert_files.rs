//! `alerts.log` and `alerts.json`: `[alerts]` in manager.toml.

use std::path::Path;

use serde::Deserialize;

/// `[alerts]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertFiles {}

/// The validated `[alerts]` section.
#[derive(Debug, Clone, Default)]
pub struct AlertFilesConfig {}

/// Checks `[alerts]`; problems go to `errors`, each naming its key.
pub fn compile(_raw: RawAlertFiles, _base: &Path, _errors: &mut Vec<String>) -> AlertFilesConfig {
    AlertFilesConfig {}
}
