//! The compiled OS_Regex matcher: a translated pattern run by the `regex`
//! crate, with the fast paths that make decoder prematches and captures
//! cheap (a first-positions filter and an anchored DFA from
//! [`super::anchored`], a PCRE2 JIT twin for capture groups).

use std::ops::Range;

use super::PatternError;
use super::anchored::{anchored_dfa, prefix_filter, start_anchored};
use super::captures::{Pool, push_groups};
use super::translate::translate_os_regex;

/// A translated OS_Regex. The `regex` crate decides whether and where it
/// matches (linear time, literal prefilters, lazy DFA); capture groups are
/// then extracted by a PCRE2 JIT twin anchored (`\G`) at the match start.
/// Why: OS_Regex quantifiers are lazy, which makes many decoder patterns
/// ambiguous (`HTTP\S+" ` — `\S` also matches `"`), and for those the
/// `regex` crate falls back from its one-pass DFA to a bounded
/// backtracker that costs ~100 instructions per byte; PCRE2's JIT runs
/// the same leftmost-first search about ten times faster. Both engines
/// give Perl's leftmost-first semantics, so the groups are the same; the
/// single anchored attempt keeps PCRE2's backtracking bounded, and a PCRE2
/// error (match limit) falls back to the `regex` crate's own captures.
#[derive(Debug)]
pub(super) struct OsRegex {
    re: regex::bytes::Regex,
    /// `\G(?:...)` twin for capture extraction; `None` when the pattern has
    /// no group or PCRE2 refused it.
    caps: Option<pcre2::bytes::Regex>,
    /// The pattern is `^...` without alternatives: it can only match at
    /// 0, so PCRE2 makes its single attempt without asking the `regex`
    /// crate first.
    start_anchored: bool,
    /// For a pattern that can only match at 0: the bytes allowed at each of
    /// its first fixed-width positions (`^\w\w\w ` gives four). Rejecting
    /// on them costs a few loads instead of a `regex` search (~200
    /// instructions), which matters when an event is tried against a list of prematch-only parent
    /// decoders (an access-log line meets 15 of OSSEC 3.3.0's before
    /// `web-accesslog`).
    prefix: Option<Vec<[bool; 256]>>,
    /// For a pattern whose every match starts at 0: a fully compiled
    /// (dense) forward DFA, which finds the match end in one anchored pass
    /// at a few instructions per byte, where the `regex` crate's lazy DFA
    /// costs ~10 and a fixed overhead per call. Decoder prematches are
    /// mostly of this kind. `None` when too large to build.
    dfa: Option<regex_automata::dfa::dense::DFA<Vec<u32>>>,
    pcre_locs: Pool<pcre2::bytes::CaptureLocations>,
    locs: Pool<regex::bytes::CaptureLocations>,
}

impl Clone for OsRegex {
    fn clone(&self) -> Self {
        Self {
            re: self.re.clone(),
            caps: self.caps.clone(),
            start_anchored: self.start_anchored,
            prefix: self.prefix.clone(),
            dfa: self.dfa.clone(),
            pcre_locs: Pool::default(),
            locs: Pool::default(),
        }
    }
}

impl OsRegex {
    /// Translates and compiles an OS_Regex that is not a plain literal.
    pub(super) fn compile(source: &str) -> Result<OsRegex, PatternError> {
        let translated = translate_os_regex(source)?;
        let re = regex::bytes::RegexBuilder::new(&translated)
            .build()
            .map_err(|e| {
                PatternError(format!(
                    "invalid OS_Regex `{source}` (translated to `{translated}`): {e}"
                ))
            })?;
        Ok(OsRegex::new(re, &translated))
    }

    fn new(re: regex::bytes::Regex, translated: &str) -> Self {
        let caps = if re.captures_len() > 1 {
            let body = translated.strip_prefix("(?i-u)").unwrap_or(translated);
            pcre2::bytes::RegexBuilder::new()
                .caseless(true)
                .dotall(false)
                .jit_if_available(true)
                .build(&format!("\\G(?:{body})"))
                .ok()
                .filter(|p| p.captures_len() == re.captures_len())
        } else {
            None
        };
        let body = translated.strip_prefix("(?i-u)").unwrap_or(translated);
        OsRegex {
            prefix: prefix_filter(translated),
            dfa: anchored_dfa(translated),
            re,
            caps,
            start_anchored: start_anchored(body),
            pcre_locs: Pool::default(),
            locs: Pool::default(),
        }
    }

    /// Whether the first-byte table rules a match out.
    fn rejects(&self, h: &[u8]) -> bool {
        self.prefix.as_ref().is_some_and(|p| {
            h.len() < p.len() || p.iter().zip(h).any(|(set, &b)| !set[usize::from(b)])
        })
    }

    pub(super) fn find_into(
        &self,
        h: &[u8],
        out: &mut Vec<Option<Range<usize>>>,
    ) -> Option<(usize, usize)> {
        if self.rejects(h) {
            out.clear();
            return None;
        }
        self.find_into_engines(h, out)
    }

    pub(super) fn is_match(&self, h: &[u8]) -> bool {
        !self.rejects(h)
            && match self.dfa_end(h) {
                Some(r) => r.is_some(),
                None => self.re.is_match(h),
            }
    }

    pub(super) fn find_span(&self, h: &[u8]) -> Option<(usize, usize)> {
        if self.rejects(h) {
            return None;
        }
        match self.dfa_end(h) {
            Some(r) => r.map(|end| (0, end)),
            None => self.re.find(h).map(|m| (m.start(), m.end())),
        }
    }

    /// The end of the match at 0 by the dense DFA; `None` when there is no
    /// DFA (or it gave up).
    fn dfa_end(&self, h: &[u8]) -> Option<Option<usize>> {
        use regex_automata::dfa::Automaton;
        let dfa = self.dfa.as_ref()?;
        let input = regex_automata::Input::new(h).anchored(regex_automata::Anchored::Yes);
        dfa.try_search_fwd(&input)
            .ok()
            .map(|m| m.map(|m| m.offset()))
    }

    /// `find_into` by the `regex` crate and the PCRE2 twin.
    fn find_into_engines(
        &self,
        h: &[u8],
        out: &mut Vec<Option<Range<usize>>>,
    ) -> Option<(usize, usize)> {
        let n = self.re.captures_len();
        if n == 1 {
            out.clear();
            let m = self.re.find(h)?;
            return Some((m.start(), m.end()));
        }
        if let Some(p) = &self.caps
            && self.start_anchored
        {
            let mut locs = self
                .pcre_locs
                .take()
                .unwrap_or_else(|| p.capture_locations());
            let r = p.captures_read_at(&mut locs, h, 0);
            if let Ok(Some(_)) = &r {
                push_groups(out, n, |i| locs.get(i));
            }
            self.pcre_locs.give(locs);
            match r {
                Ok(Some(m)) => return Some((m.start(), m.end())),
                Ok(None) => return None,
                // Match limit: let the `regex` crate decide.
                Err(_) => {}
            }
        } else if let Some(p) = &self.caps {
            let m = self.re.find(h)?;
            let mut locs = self
                .pcre_locs
                .take()
                .unwrap_or_else(|| p.capture_locations());
            let got = match p.captures_read_at(&mut locs, h, m.start()) {
                Ok(Some(pm)) if pm.start() == m.start() && pm.end() == m.end() => {
                    push_groups(out, n, |i| locs.get(i));
                    true
                }
                _ => false,
            };
            self.pcre_locs.give(locs);
            if got {
                return Some((m.start(), m.end()));
            }
        }
        let mut locs = self
            .locs
            .take()
            .unwrap_or_else(|| self.re.capture_locations());
        let r = self.re.captures_read(&mut locs, h).map(|m| {
            push_groups(out, n, |i| locs.get(i));
            (m.start(), m.end())
        });
        self.locs.give(locs);
        r
    }

    /// See [`super::Pattern::first_bytes`].
    pub(super) fn first_bytes(&self) -> Option<[bool; 256]> {
        self.prefix.as_ref().and_then(|p| p.first().copied())
    }

    /// `find_into` by the `regex` crate alone (see
    /// [`super::Pattern::find_into_reference`]).
    pub(super) fn find_into_reference(
        &self,
        h: &[u8],
        out: &mut Vec<Option<Range<usize>>>,
    ) -> Option<(usize, usize)> {
        let mut locs = self.re.capture_locations();
        let m = self.re.captures_read(&mut locs, h)?;
        push_groups(out, self.re.captures_len(), |i| locs.get(i));
        Some((m.start(), m.end()))
    }
}
