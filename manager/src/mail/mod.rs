//! E-mail notifications (OSSEC's maild): `[email]` in manager.toml.

use std::path::Path;

use serde::Deserialize;

/// `[email]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    /// OSSEC's `email_notification`.
    #[serde(default)]
    pub enabled: bool,
}

/// The validated `[email]` section.
#[derive(Debug, Clone, Default)]
pub struct EmailConfig {
    /// Send mail at all.
    pub enabled: bool,
}

/// Checks `[email]`; problems go to `errors`, each naming its key.
pub fn compile(raw: RawEmail, _base: &Path, _errors: &mut Vec<String>) -> EmailConfig {
    EmailConfig {
        enabled: raw.enabled,
    }
}
