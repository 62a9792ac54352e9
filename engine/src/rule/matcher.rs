//! A rule's pattern condition on one value: a compiled [`Pattern`] plus
//! Wazuh's `negate="yes"`. OSSEC rules never negate; Wazuh's invert the
//! outcome of a pattern on a value that is present (a missing field fails
//! the condition either way, as `w_expression_match` is never reached).

use crate::pattern::{Dialect, Pattern, PatternError};

/// A pattern condition, possibly negated.
#[derive(Debug, Clone)]
pub struct Matcher {
    pattern: Pattern,
    negate: bool,
}

impl Matcher {
    /// Compiles `source` in `dialect`.
    pub fn new(dialect: Dialect, source: &str, negate: bool) -> Result<Matcher, PatternError> {
        Ok(Matcher {
            pattern: Pattern::new(dialect, source)?,
            negate,
        })
    }

    /// The pattern.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// Whether `negate="yes"`.
    pub fn is_negated(&self) -> bool {
        self.negate
    }

    /// Whether the condition holds for a present value.
    pub fn is_match(&self, value: &[u8]) -> bool {
        self.pattern.is_match(value) != self.negate
    }

    /// [`Pattern::is_match_lowered`], negated as configured.
    pub fn is_match_lowered<'l>(&self, value: &[u8], lowered: impl FnOnce() -> &'l [u8]) -> bool {
        self.pattern.is_match_lowered(value, lowered) != self.negate
    }

    /// Whether the condition holds for a value that may be missing (a
    /// missing value never satisfies it).
    pub fn holds(&self, value: Option<&str>) -> bool {
        value.is_some_and(|v| self.is_match(v.as_bytes()))
    }
}

impl From<Pattern> for Matcher {
    fn from(pattern: Pattern) -> Self {
        Matcher {
            pattern,
            negate: false,
        }
    }
}
