//! The literal matcher: OS_Match patterns, and OS_Regex or PCRE2 patterns
//! that turn out to be plain text with at most a `^`/`$` per alternative.
//!
//! Why a literal fast path: most shipped patterns are plain words with at
//! most an anchor, and a case-insensitive substring search (`memchr` for
//! one needle, a Teddy-accelerated Aho-Corasick for several) or a prefix
//! compare is several times faster than any regex engine on them.
//! Matching is ASCII-case-insensitive and leftmost-first, ties going to the
//! alternative written first, as in OSSEC.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

#[derive(Clone, Debug)]
enum Anchor {
    /// `^lit`
    Prefix,
    /// `lit$`
    Suffix,
    /// `^lit$`
    Exact,
}

#[derive(Clone, Debug)]
struct LitAlt {
    anchor: Anchor,
    needle: Vec<u8>,
    /// Source order of this alternative, for leftmost-first tie breaks.
    order: usize,
}

/// A compiled literal pattern: its alternatives split by anchoring.
#[derive(Clone, Debug)]
pub(super) struct Literal {
    /// Unanchored alternatives, searched together.
    anywhere: Option<Anywhere>,
    /// Source order of each `anywhere` pattern.
    anywhere_order: Vec<usize>,
    anchored: Vec<LitAlt>,
    /// Source order of an empty unanchored alternative (matches at 0).
    empty: Option<usize>,
    /// PCRE2's `$` also matches before a final newline.
    dollar_before_newline: bool,
}

impl Literal {
    /// Compiles alternatives given as (anchored at the start, text,
    /// anchored at the end); `dollar_before_newline` for PCRE2's `$`.
    /// `None` only when the searcher cannot be built (absurd sizes).
    pub(super) fn build(
        alts: Vec<(bool, Vec<u8>, bool)>,
        dollar_before_newline: bool,
    ) -> Option<Literal> {
        let mut anywhere = Vec::new();
        let mut anywhere_order = Vec::new();
        let mut anchored = Vec::new();
        let mut empty = None;
        for (order, (start, needle, end)) in alts.into_iter().enumerate() {
            let anchor = match (start, end) {
                (false, false) => {
                    if needle.is_empty() {
                        empty.get_or_insert(order);
                    } else {
                        anywhere.push(needle);
                        anywhere_order.push(order);
                    }
                    continue;
                }
                (true, false) => Anchor::Prefix,
                (false, true) => Anchor::Suffix,
                (true, true) => Anchor::Exact,
            };
            anchored.push(LitAlt {
                anchor,
                needle,
                order,
            });
        }
        let anywhere = Anywhere::build(anywhere)?;
        Some(Literal {
            anywhere,
            anywhere_order,
            anchored,
            empty,
            dollar_before_newline,
        })
    }

    fn suffix_end(&self, h: &[u8], n: &[u8]) -> Option<usize> {
        if ends_with_ci(h, n) {
            return Some(h.len());
        }
        if self.dollar_before_newline && h.last() == Some(&b'\n') {
            let h2 = &h[..h.len() - 1];
            if ends_with_ci(h2, n) {
                return Some(h2.len());
            }
        }
        None
    }

    /// A matcher that never matches.
    pub(super) fn never() -> Literal {
        Literal {
            anywhere: None,
            anywhere_order: Vec::new(),
            anchored: Vec::new(),
            empty: None,
            dollar_before_newline: false,
        }
    }

    pub(super) fn is_match(&self, h: &[u8]) -> bool {
        if self.empty.is_some() {
            return true;
        }
        if self.anchored.iter().any(|a| self.alt_match(a, h).is_some()) {
            return true;
        }
        self.anywhere.as_ref().is_some_and(|a| a.find(h).is_some())
    }

    pub(super) fn is_match_with<'l>(&self, h: &[u8], lowered: impl FnOnce() -> &'l [u8]) -> bool {
        if self.empty.is_some() {
            return true;
        }
        if self.anchored.iter().any(|a| self.alt_match(a, h).is_some()) {
            return true;
        }
        self.anywhere
            .as_ref()
            .is_some_and(|a| a.find_lowered(lowered()).is_some())
    }

    fn alt_match(&self, a: &LitAlt, h: &[u8]) -> Option<(usize, usize)> {
        let n = &a.needle;
        match a.anchor {
            Anchor::Prefix => starts_with_ci(h, n).then_some((0, n.len())),
            Anchor::Suffix => self.suffix_end(h, n).map(|e| (e - n.len(), e)),
            Anchor::Exact => {
                let ok = h.eq_ignore_ascii_case(n)
                    || (self.dollar_before_newline
                        && h.len() == n.len() + 1
                        && h.last() == Some(&b'\n')
                        && h[..n.len()].eq_ignore_ascii_case(n));
                ok.then_some((0, n.len()))
            }
        }
    }

    /// Leftmost match; ties go to the alternative written first.
    pub(super) fn find(&self, h: &[u8]) -> Option<(usize, usize)> {
        // (start, order, end)
        let mut best: Option<(usize, usize, usize)> = None;
        let mut consider = |start: usize, order: usize, end: usize| {
            if best.is_none_or(|(s, o, _)| (start, order) < (s, o)) {
                best = Some((start, order, end));
            }
        };
        if let Some(order) = self.empty {
            consider(0, order, 0);
        }
        for a in &self.anchored {
            if let Some((s, e)) = self.alt_match(a, h) {
                consider(s, a.order, e);
            }
        }
        if let Some(a) = &self.anywhere
            && let Some((start, end, pattern)) = a.find(h)
        {
            let order = self.anywhere_order.get(pattern).copied().unwrap_or(0);
            consider(start, order, end);
        }
        best.map(|(s, _, e)| (s, e))
    }

    /// See [`super::Pattern::first_bytes`]: known only when every
    /// alternative is anchored at the start.
    pub(super) fn first_bytes(&self) -> Option<[bool; 256]> {
        if self.anywhere.is_some() || self.empty.is_some() {
            return None;
        }
        let mut set = [false; 256];
        for a in &self.anchored {
            if matches!(a.anchor, Anchor::Suffix) {
                return None;
            }
            let b = *a.needle.first()?;
            set[usize::from(b.to_ascii_lowercase())] = true;
            set[usize::from(b.to_ascii_uppercase())] = true;
        }
        Some(set)
    }
}

/// The unanchored alternatives of a literal pattern, searched
/// case-sensitively for their lower-cased forms in a lower-cased copy of
/// the haystack. Why not Aho-Corasick's own `ascii_case_insensitive`: it
/// disables the SIMD prefilters (Teddy, memmem), and its automaton walk
/// cost ~1.2k instructions per call on an access-log line; lower-casing
/// the line is a vectorised copy, after which a single needle goes to
/// `memchr::memmem` and several to a case-sensitive, Teddy-accelerated
/// Aho-Corasick searcher.
#[derive(Clone, Debug)]
enum Anywhere {
    One(Box<memchr::memmem::Finder<'static>>),
    Many(AhoCorasick),
}

thread_local! {
    /// The lower-cased haystack, reused from call to call.
    static LOWER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Anywhere {
    fn build(needles: Vec<Vec<u8>>) -> Option<Option<Anywhere>> {
        let lower: Vec<Vec<u8>> = needles.iter().map(|n| n.to_ascii_lowercase()).collect();
        Some(match lower.as_slice() {
            [] => None,
            [one] => Some(Anywhere::One(Box::new(
                memchr::memmem::Finder::new(one.as_slice()).into_owned(),
            ))),
            _ => Some(Anywhere::Many(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(&lower)
                    .ok()?,
            )),
        })
    }

    /// Leftmost match: (start, end, index of the needle).
    fn find(&self, h: &[u8]) -> Option<(usize, usize, usize)> {
        LOWER.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                buf.extend(h.iter().map(u8::to_ascii_lowercase));
                self.find_lowered(&buf)
            }
            Err(_) => self.find_lowered(&h.to_ascii_lowercase()),
        })
    }

    /// `find` on a haystack already lower-cased.
    fn find_lowered(&self, low: &[u8]) -> Option<(usize, usize, usize)> {
        match self {
            Anywhere::One(f) => f.find(low).map(|s| (s, s + f.needle().len(), 0)),
            Anywhere::Many(ac) => ac
                .find(low)
                .map(|m| (m.start(), m.end(), m.pattern().as_usize())),
        }
    }
}

fn starts_with_ci(h: &[u8], n: &[u8]) -> bool {
    h.len() >= n.len() && h[..n.len()].eq_ignore_ascii_case(n)
}

fn ends_with_ci(h: &[u8], n: &[u8]) -> bool {
    h.len() >= n.len() && h[h.len() - n.len()..].eq_ignore_ascii_case(n)
}
