//! Which rule language a ruleset is written in. One engine judges both:
//! the dialect only configures how decoder and rule XML is read (Wazuh's
//! extra elements and attributes), how a few semantics differ (frequency on
//! the N-th event, static filters on any field), how `ruletest` groups its
//! cases and how alerts.json is shaped.

use std::fmt;
use std::str::FromStr;

/// The rule language of a ruleset (`[ruleset] dialect`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RulesetDialect {
    /// OSSEC 3.x, the default.
    #[default]
    Ossec,
    /// Wazuh 4.x.
    Wazuh,
}

impl RulesetDialect {
    /// Whether this is Wazuh's dialect.
    pub fn is_wazuh(self) -> bool {
        self == Self::Wazuh
    }

    /// The configuration word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ossec => "ossec",
            Self::Wazuh => "wazuh",
        }
    }
}

impl fmt::Display for RulesetDialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RulesetDialect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ossec" => Ok(Self::Ossec),
            "wazuh" => Ok(Self::Wazuh),
            other => Err(format!("{other:?} is not \"ossec\" or \"wazuh\"")),
        }
    }
}
