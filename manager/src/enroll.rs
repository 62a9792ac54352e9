//! Agent enrollment with one-time tokens: `[enrollment]` in manager.toml.

use std::path::Path;

use serde::Deserialize;

/// `[enrollment]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnrollment {}

/// The validated `[enrollment]` section.
#[derive(Debug, Clone, Default)]
pub struct EnrollmentConfig {}

/// Checks `[enrollment]`; problems go to `errors`, each naming its key.
pub fn compile(_raw: RawEnrollment, _base: &Path, _errors: &mut Vec<String>) -> EnrollmentConfig {
    EnrollmentConfig {}
}
