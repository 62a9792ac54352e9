//! OSSEC's three pattern dialects behind one matcher type, all matching on
//! bytes so that a log line with invalid UTF-8 or NUL bytes never panics.
//!
//! - OS_Match (`<match>`, `<program_name>`, rule field matchers):
//!   case-insensitive literal alternatives with per-alternative `^`/`$`
//!   (`os_match`).
//! - OS_Regex (`<regex>`, decoder `<prematch>`): OSSEC's own regex dialect,
//!   translated into `regex` crate syntax as OSSEC 3.x translates it into
//!   PCRE2 (`translate`), then run by the `regex` crate with fast paths
//!   (`os_regex`, `anchored`).
//! - PCRE2 (`*_pcre2` elements): compiled by the `pcre2` crate with
//!   `PCRE2_CASELESS` only (no UTF), like `os_pcre2_compile.c` (`pcre`).
//!
//! A pattern of any dialect that is only literal text runs on the literal
//! matcher (`literal`), several times faster than a regex engine.
//! Case-insensitivity is ASCII-only in all three dialects (OSSEC 2.x's
//! `charmap`; OSSEC 3.x with PCRE2 UTF would also fold non-ASCII letters,
//! a knowing difference).
//!
//! Submodules: `translate` (OS_Regex syntax to `regex` syntax, or to a
//! literal), `literal` (the literal matcher), `os_match` (OS_Match to a
//! literal), `os_regex` (the compiled OS_Regex matcher), `anchored` (its
//! first-positions filter and anchored DFA), `pcre` (PCRE2), `captures`
//! (capture buffers shared by the regex-backed matchers). This file is the
//! dispatch: [`Pattern`] picks the matcher at compile time.

mod anchored;
mod captures;
mod literal;
mod os_match;
mod os_regex;
mod pcre;
mod translate;

use std::fmt;
use std::ops::Range;

use literal::Literal;
use os_regex::OsRegex;
use pcre::{Pcre, pcre2_literal};
use translate::os_regex_literal;

pub use translate::translate_os_regex;

/// Which OSSEC dialect a pattern is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// OS_Match ("sregex"): literal alternatives with `^`/`$`.
    OsMatch,
    /// OS_Regex: OSSEC's regex dialect.
    OsRegex,
    /// PCRE2.
    Pcre2,
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::OsMatch => "OS_Match",
            Dialect::OsRegex => "OS_Regex",
            Dialect::Pcre2 => "PCRE2",
        })
    }
}

/// A pattern that failed to compile; the message names the dialect, the
/// pattern and the position of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(pub String);

/// A successful match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternMatch {
    /// Byte offset where the match starts.
    pub start: usize,
    /// Byte offset just after the match (OSSEC's decoder offset).
    pub end: usize,
    /// Capture groups 1..n as byte ranges into the haystack; `None` for a
    /// group that did not participate.
    pub captures: Vec<Option<Range<usize>>>,
}

/// A compiled pattern of one of the three dialects.
#[derive(Clone, Debug)]
pub struct Pattern {
    dialect: Dialect,
    source: String,
    imp: Imp,
}

#[derive(Clone, Debug)]
enum Imp {
    Literal(Box<Literal>),
    Regex(Box<OsRegex>),
    Pcre(Box<Pcre>),
}

impl Pattern {
    /// Compiles `source` in `dialect`.
    pub fn new(dialect: Dialect, source: &str) -> Result<Pattern, PatternError> {
        let imp = match dialect {
            Dialect::OsMatch => Imp::Literal(Box::new(os_match::compile(source))),
            Dialect::OsRegex => match os_regex_literal(source) {
                Some(lit) => Imp::Literal(Box::new(lit)),
                None => Imp::Regex(Box::new(OsRegex::compile(source)?)),
            },
            Dialect::Pcre2 => {
                if source.is_empty() {
                    return Err(PatternError("empty PCRE2 pattern".into()));
                }
                match pcre2_literal(source) {
                    Some(lit) => Imp::Literal(Box::new(lit)),
                    None => Imp::Pcre(Box::new(Pcre::compile(source)?)),
                }
            }
        };
        Ok(Pattern {
            dialect,
            source: source.to_string(),
            imp,
        })
    }

    /// The dialect the pattern was compiled in.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The pattern text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches anywhere in `haystack`.
    pub fn is_match(&self, haystack: &[u8]) -> bool {
        match &self.imp {
            Imp::Literal(l) => l.is_match(haystack),
            Imp::Regex(r) => r.is_match(haystack),
            Imp::Pcre(p) => p.is_match(haystack),
        }
    }

    /// [`is_match`](Self::is_match) for a caller that can supply the
    /// haystack lower-cased (ASCII) once for many patterns: `lowered` is
    /// only called, and must return `haystack.to_ascii_lowercase()`, when
    /// a literal search needs it.
    pub fn is_match_lowered<'l>(
        &self,
        haystack: &[u8],
        lowered: impl FnOnce() -> &'l [u8],
    ) -> bool {
        match &self.imp {
            Imp::Literal(l) => l.is_match_with(haystack, lowered),
            _ => self.is_match(haystack),
        }
    }

    /// The leftmost match's span, without capture groups (decoder
    /// prematches only need where it ends).
    pub fn find_span(&self, haystack: &[u8]) -> Option<(usize, usize)> {
        match &self.imp {
            Imp::Literal(l) => l.find(haystack),
            Imp::Regex(r) => r.find_span(haystack),
            Imp::Pcre(p) => p.find_span(haystack),
        }
    }

    /// The leftmost match's span; its capture groups 1..n are written into
    /// `groups` (cleared first, left empty for a pattern without groups).
    /// The buffer is the caller's so that a hot loop allocates nothing.
    pub fn find_into(
        &self,
        haystack: &[u8],
        groups: &mut Vec<Option<Range<usize>>>,
    ) -> Option<(usize, usize)> {
        match &self.imp {
            Imp::Literal(l) => {
                groups.clear();
                l.find(haystack)
            }
            Imp::Regex(r) => r.find_into(haystack, groups),
            Imp::Pcre(p) => p.find_into(haystack, groups),
        }
    }

    /// [`find_into`](Self::find_into) computed by the `regex` crate alone
    /// for OS_Regex patterns, never by the PCRE2 twin: the reference that
    /// the engines-agree test compares against.
    #[doc(hidden)]
    pub fn find_into_reference(
        &self,
        haystack: &[u8],
        groups: &mut Vec<Option<Range<usize>>>,
    ) -> Option<(usize, usize)> {
        match &self.imp {
            Imp::Regex(r) => r.find_into_reference(haystack, groups),
            _ => self.find_into(haystack, groups),
        }
    }

    /// The leftmost match with its capture groups.
    pub fn find(&self, haystack: &[u8]) -> Option<PatternMatch> {
        let mut captures = Vec::new();
        let (start, end) = self.find_into(haystack, &mut captures)?;
        Some(PatternMatch {
            start,
            end,
            captures,
        })
    }

    /// The bytes a match at offset 0 can start with, when every match must
    /// start at 0 and that is known; `None` otherwise. Lets a caller skip
    /// the pattern on the first byte of the haystack.
    pub fn first_bytes(&self) -> Option<[bool; 256]> {
        match &self.imp {
            Imp::Regex(r) => r.first_bytes(),
            Imp::Literal(l) => l.first_bytes(),
            Imp::Pcre(_) => None,
        }
    }

    /// Whether this pattern runs on the literal fast path (for tests and
    /// benchmarks).
    pub fn is_literal(&self) -> bool {
        matches!(self.imp, Imp::Literal(_))
    }
}

#[cfg(test)]
mod tests;
