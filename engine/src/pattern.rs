//! OSSEC's three pattern dialects behind one matcher type, all matching on
//! bytes so that a log line with invalid UTF-8 or NUL bytes never panics.
//!
//! - OS_Match (`<match>`, `<program_name>`, rule field matchers): a
//!   case-insensitive literal search with `|` alternatives and `^`/`$`
//!   anchors on each alternative (OSSEC 2.x semantics, spec 3.1: an inner
//!   `^`/`$` is literal; 3.x would turn it into an anchor).
//! - OS_Regex (`<regex>`, decoder `<prematch>`): OSSEC's own regex dialect,
//!   translated token by token into a `regex::bytes` pattern exactly as
//!   OSSEC 3.x translates it into PCRE2 (`src/os_regex/os_converter.c`):
//!   classes from the OSSEC tables, `.` literal and `\.` any byte, `+`/`*`
//!   quantifiers only after a `\x` token, all lazy except the last one before
//!   `|` or the end, caseless.
//! - PCRE2 (`*_pcre2` elements): compiled by the `pcre2` crate with
//!   `PCRE2_CASELESS` only (no UTF), like `os_pcre2_compile.c`.
//!
//! Why translate rather than interpret OS_Regex: the `regex` crate gives
//! linear-time matching and literal prefilters for free. Why a literal fast
//! path: most shipped patterns are plain words with at most an anchor, and a
//! case-insensitive Aho-Corasick or prefix compare is several times faster
//! than any regex engine on them.
//!
//! Case-insensitivity is ASCII-only in all three dialects (OSSEC 2.x's
//! `charmap`; OSSEC 3.x with PCRE2 UTF would also fold non-ASCII letters,
//! a knowing difference).

use std::fmt;
use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

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
struct OsRegex {
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

/// The leading fixed-width part of a pattern whose every match starts at
/// 0: for each of its first positions, the bytes allowed there; `None`
/// when that cannot be shown (not anchored, or a possibly empty start).
fn prefix_filter(translated: &str) -> Option<Vec<[bool; 256]>> {
    use regex_syntax::hir::Look;
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(translated)
        .ok()?;
    if !hir.properties().look_set_prefix().contains(Look::Start) {
        return None;
    }
    let (sets, _) = prefix_sets(&hir)?;
    (!sets.is_empty()).then_some(sets)
}

/// Bytes a dense DFA may take (per pattern, and while determinising).
const DFA_LIMIT: usize = 1 << 18;

/// The anchored dense DFA of a translated OS_Regex whose every match
/// starts at 0 (see `OsRegex::dfa`).
fn anchored_dfa(translated: &str) -> Option<regex_automata::dfa::dense::DFA<Vec<u32>>> {
    use regex_automata::dfa::{StartKind, dense};
    use regex_automata::nfa::thompson;
    use regex_automata::util::syntax;
    use regex_syntax::hir::Look;
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(translated)
        .ok()?;
    if !hir.properties().look_set_prefix().contains(Look::Start) {
        return None;
    }
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(regex_automata::MatchKind::LeftmostFirst)
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(DFA_LIMIT))
                .determinize_size_limit(Some(DFA_LIMIT)),
        )
        .syntax(syntax::Config::new().utf8(false))
        .thompson(thompson::Config::new().utf8(false))
        .build(translated)
        .ok()
}

/// At most this many positions are checked.
const PREFIX_MAX: usize = 8;

/// The byte sets of the first positions of any match of `h`, and whether
/// `h` is entirely that fixed-width prefix (so that what follows it in a
/// concatenation continues the prefix). `None`: not understood.
fn prefix_sets(h: &regex_syntax::hir::Hir) -> Option<(Vec<[bool; 256]>, bool)> {
    use regex_syntax::hir::{Class, HirKind};
    let one = |set: [bool; 256]| Some((vec![set], true));
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Some((Vec::new(), true)),
        HirKind::Literal(l) => {
            let sets =
                l.0.iter()
                    .take(PREFIX_MAX)
                    .map(|&b| {
                        let mut set = [false; 256];
                        set[usize::from(b)] = true;
                        set
                    })
                    .collect();
            Some((sets, l.0.len() <= PREFIX_MAX))
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut set = [false; 256];
            for r in c.ranges() {
                for b in r.start()..=r.end() {
                    set[usize::from(b)] = true;
                }
            }
            one(set)
        }
        HirKind::Class(Class::Unicode(c)) => {
            let mut set = [false; 256];
            for r in c.ranges() {
                let (lo, hi) = (u32::from(r.start()), u32::from(r.end()));
                if hi > 0x7f {
                    return None;
                }
                for b in lo..=hi {
                    set[usize::try_from(b).ok()?] = true;
                }
            }
            one(set)
        }
        HirKind::Repetition(r) => {
            if r.min == 0 {
                return Some((Vec::new(), false));
            }
            let (sets, complete) = prefix_sets(&r.sub)?;
            Some((sets, complete && r.min == 1 && r.max == Some(1)))
        }
        HirKind::Capture(c) => prefix_sets(&c.sub),
        HirKind::Concat(items) => {
            let mut out = Vec::new();
            for item in items {
                let (sets, complete) = prefix_sets(item)?;
                out.extend(sets);
                if !complete || out.len() >= PREFIX_MAX {
                    out.truncate(PREFIX_MAX);
                    return Some((out, false));
                }
            }
            Some((out, true))
        }
        HirKind::Alternation(alts) => {
            let mut all = Vec::new();
            for a in alts {
                all.push(prefix_sets(a)?);
            }
            let len = all.iter().map(|(s, _)| s.len()).min().unwrap_or(0);
            let same = all.iter().all(|(s, c)| *c && s.len() == len);
            let mut out = vec![[false; 256]; len];
            for (sets, _) in &all {
                for (o, set) in out.iter_mut().zip(sets) {
                    for (x, y) in o.iter_mut().zip(set) {
                        *x |= *y;
                    }
                }
            }
            Some((out, same))
        }
    }
}

/// Whether a translated OS_Regex starts with `^` and has no `|`.
fn start_anchored(body: &str) -> bool {
    let b = body.as_bytes();
    if b.first() != Some(&b'^') {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'|' => return false,
            _ => i += 1,
        }
    }
    true
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

/// A `*_pcre2` pattern with its reusable capture locations.
#[derive(Debug)]
struct Pcre {
    re: pcre2::bytes::Regex,
    locs: Pool<pcre2::bytes::CaptureLocations>,
}

impl Clone for Pcre {
    fn clone(&self) -> Self {
        Self {
            re: self.re.clone(),
            locs: Pool::default(),
        }
    }
}

/// A few reusable capture-location buffers: allocating them costs more
/// than a short match. Patterns are shared between threads, so the pool
/// is a mutex that is only ever `try_lock`ed: a contended caller simply
/// allocates a fresh buffer instead of waiting.
struct Pool<T>(std::sync::Mutex<Vec<T>>);

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool(std::sync::Mutex::new(Vec::new()))
    }
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pool")
    }
}

impl<T> Pool<T> {
    fn take(&self) -> Option<T> {
        self.0.try_lock().ok()?.pop()
    }

    fn give(&self, t: T) {
        if let Ok(mut v) = self.0.try_lock()
            && v.len() < 4
        {
            v.push(t);
        }
    }
}

/// Capture slots 1..n as byte ranges, written into `out` (cleared first).
fn push_groups(
    out: &mut Vec<Option<Range<usize>>>,
    n: usize,
    get: impl Fn(usize) -> Option<(usize, usize)>,
) {
    out.clear();
    out.extend((1..n).map(|i| get(i).map(|(s, e)| s..e)));
}

impl OsRegex {
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

    fn find_into(&self, h: &[u8], out: &mut Vec<Option<Range<usize>>>) -> Option<(usize, usize)> {
        if self.rejects(h) {
            out.clear();
            return None;
        }
        self.find_into_engines(h, out)
    }

    fn is_match(&self, h: &[u8]) -> bool {
        !self.rejects(h)
            && match self.dfa_end(h) {
                Some(r) => r.is_some(),
                None => self.re.is_match(h),
            }
    }

    fn find_span(&self, h: &[u8]) -> Option<(usize, usize)> {
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
}

impl Pcre {
    fn find_into(&self, h: &[u8], out: &mut Vec<Option<Range<usize>>>) -> Option<(usize, usize)> {
        let n = self.re.captures_len();
        if n == 1 {
            out.clear();
            let m = self.re.find(h).ok()??;
            return Some((m.start(), m.end()));
        }
        let mut locs = self
            .locs
            .take()
            .unwrap_or_else(|| self.re.capture_locations());
        let r = match self.re.captures_read(&mut locs, h) {
            Ok(Some(m)) => {
                push_groups(out, n, |i| locs.get(i));
                Some((m.start(), m.end()))
            }
            _ => None,
        };
        self.locs.give(locs);
        r
    }
}

impl Pattern {
    /// Compiles `source` in `dialect`.
    pub fn new(dialect: Dialect, source: &str) -> Result<Pattern, PatternError> {
        let imp = match dialect {
            Dialect::OsMatch => Imp::Literal(Box::new(Literal::os_match(source))),
            Dialect::OsRegex => match os_regex_literal(source) {
                Some(lit) => Imp::Literal(Box::new(lit)),
                None => {
                    let translated = translate_os_regex(source)?;
                    let re = regex::bytes::RegexBuilder::new(&translated)
                        .build()
                        .map_err(|e| {
                            PatternError(format!(
                                "invalid OS_Regex `{source}` (translated to `{translated}`): {e}"
                            ))
                        })?;
                    Imp::Regex(Box::new(OsRegex::new(re, &translated)))
                }
            },
            Dialect::Pcre2 => {
                if source.is_empty() {
                    return Err(PatternError("empty PCRE2 pattern".into()));
                }
                match pcre2_literal(source) {
                    Some(lit) => Imp::Literal(Box::new(lit)),
                    None => {
                        let re = pcre2::bytes::RegexBuilder::new()
                            .caseless(true)
                            .jit_if_available(true)
                            .build(source)
                            .map_err(|e| {
                                PatternError(format!("invalid PCRE2 pattern `{source}`: {e}"))
                            })?;
                        Imp::Pcre(Box::new(Pcre {
                            re,
                            locs: Pool::default(),
                        }))
                    }
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
            // A PCRE2 run-time error (match limit) counts as no match, as
            // in OSSEC.
            Imp::Pcre(p) => p.re.is_match(haystack).unwrap_or(false),
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
            Imp::Pcre(p) => p.re.find(haystack).ok()?.map(|m| (m.start(), m.end())),
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
            Imp::Regex(r) => {
                let mut locs = r.re.capture_locations();
                let m = r.re.captures_read(&mut locs, haystack)?;
                push_groups(groups, r.re.captures_len(), |i| locs.get(i));
                Some((m.start(), m.end()))
            }
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
            Imp::Regex(r) => r.prefix.as_ref().and_then(|p| p.first().copied()),
            Imp::Literal(l) => {
                if l.anywhere.is_some() || l.empty.is_some() {
                    return None;
                }
                let mut set = [false; 256];
                for a in &l.anchored {
                    if matches!(a.anchor, Anchor::Suffix) {
                        return None;
                    }
                    let b = *a.needle.first()?;
                    set[usize::from(b.to_ascii_lowercase())] = true;
                    set[usize::from(b.to_ascii_uppercase())] = true;
                }
                Some(set)
            }
            Imp::Pcre(_) => None,
        }
    }

    /// Whether this pattern runs on the literal fast path (for tests and
    /// benchmarks).
    pub fn is_literal(&self) -> bool {
        matches!(self.imp, Imp::Literal(_))
    }
}

// ---------------------------------------------------------------------------
// Literal matcher: OS_Match, and literal-only OS_Regex / PCRE2 patterns.

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

#[derive(Clone, Debug)]
struct Literal {
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
    fn build(alts: Vec<(bool, Vec<u8>, bool)>, dollar_before_newline: bool) -> Option<Literal> {
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

    /// OS_Match: split on `|`, then a leading `^` and a trailing `$` anchor
    /// each alternative; everything else is literal.
    fn os_match(source: &str) -> Literal {
        let alts = source
            .split('|')
            .map(|alt| {
                let b = alt.as_bytes();
                let (start, b) = match b.strip_prefix(b"^") {
                    Some(rest) => (true, rest),
                    None => (false, b),
                };
                let (end, b) = match b.strip_suffix(b"$") {
                    Some(rest) => (true, rest),
                    None => (false, b),
                };
                (start, b.to_vec(), end)
            })
            .collect();
        // Building can only fail on absurd sizes; fall back to an empty
        // matcher that never matches rather than panicking.
        Literal::build(alts, false).unwrap_or(Literal {
            anywhere: None,
            anywhere_order: Vec::new(),
            anchored: Vec::new(),
            empty: None,
            dollar_before_newline: false,
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

    fn is_match(&self, h: &[u8]) -> bool {
        if self.empty.is_some() {
            return true;
        }
        if self.anchored.iter().any(|a| self.alt_match(a, h).is_some()) {
            return true;
        }
        self.anywhere.as_ref().is_some_and(|a| a.find(h).is_some())
    }

    fn is_match_with<'l>(&self, h: &[u8], lowered: impl FnOnce() -> &'l [u8]) -> bool {
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
    fn find(&self, h: &[u8]) -> Option<(usize, usize)> {
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

// ---------------------------------------------------------------------------
// OS_Regex.

/// The literal character an OSSEC escape stands for (`\$ \( \) \{ \} \[ \]
/// \\ \| \<`, and `\t`), or `None` for class tokens and invalid escapes.
fn os_regex_escape_literal(c: u8) -> Option<u8> {
    match c {
        b't' => Some(b'\t'),
        b'$' | b'(' | b')' | b'{' | b'}' | b'[' | b']' | b'\\' | b'|' | b'<' => Some(c),
        _ => None,
    }
}

/// Is the `+`/`*` at `i` a quantifier? OSSEC's converter only checks that
/// the byte two positions before is a backslash.
fn is_quantifier(p: &[u8], i: usize) -> bool {
    i >= 2 && p[i - 2] == b'\\'
}

/// An OS_Regex made only of literal characters (with per-alternative `^`/`$`)
/// runs on the literal fast path.
fn os_regex_literal(source: &str) -> Option<Literal> {
    let p = source.as_bytes();
    let mut alts = Vec::new();
    let mut cur = Vec::new();
    let mut start = false;
    let mut end = false;
    let mut at_alt_start = true;
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        if end {
            // Something after a `$`: not a simple anchored literal.
            if c != b'|' {
                return None;
            }
        }
        match c {
            b'^' if at_alt_start => {
                start = true;
                at_alt_start = false;
                i += 1;
                continue;
            }
            b'|' => {
                alts.push((start, std::mem::take(&mut cur), end));
                start = false;
                end = false;
                at_alt_start = true;
                i += 1;
                continue;
            }
            b'$' => end = true,
            b'\\' => {
                let lit = os_regex_escape_literal(*p.get(i + 1)?)?;
                if matches!(p.get(i + 2), Some(b'+' | b'*')) {
                    return None;
                }
                cur.push(lit);
                i += 2;
                at_alt_start = false;
                continue;
            }
            b'(' | b')' | b'^' => return None,
            b'+' | b'*' if is_quantifier(p, i) => return None,
            _ => cur.push(c),
        }
        at_alt_start = false;
        i += 1;
    }
    alts.push((start, cur, end));
    Literal::build(alts, false)
}

/// Translates OS_Regex into `regex` crate syntax, mirroring OSSEC 3.x's
/// `OSRegex_ConvertRegex` and its `OSREGEX_TO_PCRE2_FIX` (the last
/// quantifier before `|` or the end is greedy, all others lazy).
pub fn translate_os_regex(source: &str) -> Result<String, PatternError> {
    let p = source.as_bytes();
    let mut out = String::with_capacity(p.len() * 2 + 8);
    out.push_str("(?i-u)");
    let prefix = out.len();
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        if (c == b'+' || c == b'*') && is_quantifier(p, i) {
            out.push(c as char);
            out.push('?');
            i += 1;
            continue;
        }
        if c == b'\\' {
            let Some(&n) = p.get(i + 1) else {
                return Err(PatternError(format!(
                    "invalid OS_Regex `{source}`: trailing backslash at byte {i}"
                )));
            };
            let rep = match n {
                b'p' => r#"[()*+,.:;<=>?\[\]!"'#%&$|{}-]"#,
                b's' => "[ ]",
                b'W' => "[^A-Za-z0-9@_-]",
                b'w' => "[A-Za-z0-9@_-]",
                b'd' => "[0-9]",
                b'D' => "[^0-9]",
                b'S' => "[^ ]",
                b'.' => "(?s:.)",
                b't' => r"\t",
                b'$' => r"\$",
                b'(' => r"\(",
                b')' => r"\)",
                b'{' => r"\{",
                b'}' => r"\}",
                b'[' => r"\[",
                b']' => r"\]",
                b'\\' => r"\\",
                b'|' => r"\|",
                b'<' => "<",
                _ => {
                    return Err(PatternError(format!(
                        "invalid OS_Regex `{source}`: unknown escape `\\{}` at byte {i}",
                        String::from_utf8_lossy(&p[i + 1..(i + 2).min(p.len())])
                    )));
                }
            };
            out.push_str(rep);
            i += 2;
            continue;
        }
        match c {
            // `\z`, not `$`: OSSEC converts `$` to `(?!\n)$`, which its
            // greedy-last fix does not see through, so `\d+$` stays lazy.
            b'$' => out.push_str(r"\z"),
            b'.' | b'[' | b']' | b'{' | b'}' | b'+' | b'?' | b'*' => {
                out.push('\\');
                out.push(c as char);
            }
            b'(' | b')' | b'|' | b'^' => out.push(c as char),
            // Everything else is a literal byte: printable ASCII is literal
            // in the `regex` crate too (outside classes, without `x`);
            // control and non-ASCII bytes are written as `\xHH` so that they
            // match that byte under `(?-u)`.
            c if c == b' ' || c.is_ascii_graphic() => out.push(c as char),
            c => out.push_str(&format!("\\x{c:02X}")),
        }
        i += 1;
    }
    Ok(make_last_quantifier_greedy(&out, prefix))
}

/// OSSEC's `OSREGEX_TO_PCRE2_FIX`: `(?<!\\)([+*])\?(\)*(?:[|$]|$))` is
/// replaced by `$1$2`, i.e. a lazy quantifier followed only by `)`s and then
/// `|`, `$` or the end of the pattern becomes greedy.
fn make_last_quantifier_greedy(conv: &str, from: usize) -> String {
    let b = conv.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..from]);
    let mut i = from;
    while i < b.len() {
        let c = b[i];
        if (c == b'+' || c == b'*') && b.get(i + 1) == Some(&b'?') && i > 0 && b[i - 1] != b'\\' {
            let mut j = i + 2;
            while b.get(j) == Some(&b')') {
                j += 1;
            }
            if matches!(b.get(j), None | Some(b'|' | b'$')) {
                out.push(c);
                out.extend_from_slice(&b[i + 2..j]);
                if let Some(&t) = b.get(j) {
                    out.push(t);
                    j += 1;
                }
                i = j;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    // Only ASCII was inserted or removed around ASCII bytes.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

// ---------------------------------------------------------------------------
// PCRE2 literal fast path.

/// A PCRE2 pattern that is only literal text (with `\` + punctuation
/// escapes), `|` alternatives and a leading `^` / trailing `$` per
/// alternative.
fn pcre2_literal(source: &str) -> Option<Literal> {
    let p = source.as_bytes();
    let mut alts = Vec::new();
    for alt in split_unescaped_pipe(p)? {
        let (start, mut a) = match alt.strip_prefix(b"^") {
            Some(rest) => (true, rest),
            None => (false, alt),
        };
        let mut end = false;
        if a.last() == Some(&b'$') && !ends_with_escape(a) {
            end = true;
            a = &a[..a.len() - 1];
        }
        let mut lit = Vec::with_capacity(a.len());
        let mut i = 0;
        while i < a.len() {
            let c = a[i];
            match c {
                b'\\' => {
                    let n = *a.get(i + 1)?;
                    if !n.is_ascii_punctuation() {
                        return None;
                    }
                    lit.push(n);
                    i += 2;
                    continue;
                }
                b'^' | b'$' | b'.' | b'[' | b']' | b'(' | b')' | b'?' | b'*' | b'+' | b'{'
                | b'}' | b'#' => return None,
                c if !c.is_ascii() => return None,
                _ => lit.push(c),
            }
            i += 1;
        }
        alts.push((start, lit, end));
    }
    Literal::build(alts, true)
}

fn ends_with_escape(a: &[u8]) -> bool {
    let n = a.len().saturating_sub(1);
    let backslashes = a[..n].iter().rev().take_while(|&&c| c == b'\\').count();
    backslashes % 2 == 1
}

fn split_unescaped_pipe(p: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' => i += 2,
            b'|' => {
                out.push(&p[start..i]);
                start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    if start > p.len() {
        return None;
    }
    out.push(&p[start..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(d: Dialect, p: &str, h: &str) -> bool {
        Pattern::new(d, p).is_ok_and(|pat| pat.is_match(h.as_bytes()))
    }

    // Pairs from OSSEC's own os_regex tests (ossec-hids src/tests/test_os_regex.c).
    const MATCH_TRUE: &[(&str, &str)] = &[
        ("abc", "abcd"),
        ("abcd", "abcd"),
        ("a", "a"),
        ("a", "aa"),
        ("^a", "ab"),
        ("test", "testa"),
        ("test", "testest"),
        ("lalaila", "lalalalaila"),
        ("abc|cde", "cde"),
        ("^aa|ee|ii|oo|uu", "dfgdsii"),
        ("Abc", "abc"),
        ("ZBE", "zbe"),
        ("ABC", "ABc"),
        ("^A", "a"),
        ("a|E", "abcdef"),
        ("daniel", "daniel"),
        ("DANIeL", "daNIel"),
        ("^abc ", "abc "),
        ("ddd|eee|fff|ggg|ggg|hhh|iii", "iii"),
        ("kwo|fe|fw|wfW|edW|dwDF|WdW|dw|d|^la", "la"),
        ("^a", "a"),
        ("^ab$", "ab"),
        ("c$", "c"),
        ("c$", "lalalalac"),
        ("^bin$|^shell$", "bin"),
        ("^bin$|^shell$", "shell"),
        ("^bin$|^shell$|^ftp$", "shell"),
        ("^bin$|^shell$|^ftp$", "ftp"),
    ];
    const MATCH_FALSE: &[(&str, &str)] = &[
        ("abc", "abb"),
        ("^ab", " ab"),
        ("test", "tes"),
        ("abcd", "abc"),
        ("abbb", "abb"),
        ("abbbbbbbb", "abbbbbbb"),
        ("a|b|c| ", "def"),
        ("lala$", "lalalalalal"),
        ("^ab$", "abc"),
        ("zzzz$", "zzzzzzzzzzzz "),
        ("^bin$|^shell$", "bina"),
        ("^bin$|^shell$", "shella"),
        ("^bin$|^shell$", "ashell"),
    ];
    const REGEX_TRUE: &[(&str, &str)] = &[
        (r"\s+123", "  123"),
        (r"\s*123", "123"),
        (r"\s123", " 123"),
        (r"\w+\s+\w+", "a 1"),
        (r"\w+\d+\w+\s+", "ab12fb12fd12 "),
        (r"^\s*\w\s*\w+", "a   l a  a"),
        (r"\w+\s+\w+\d+\s$", "a aa11 "),
        (r"^su\S*: BAD su", "su: BAD SU dcid to root on /dev/ttyp0"),
        (r"^su\s*: BAD su", "su: BAD SU dcid to root on /dev/ttyp0"),
        (r"^abc\sabc", "abc abcd"),
        (r"^abc\s\s*abc", "abc abcd"),
        (r"^\s+\sl", "     lala"),
        (r"^\s*\sl", "     lala"),
        (r"^\s\s+l", "     lala"),
        (r"^\s+\s l", "     lala"),
        (r"^\s*\s lal\w$", "  lala"),
        (r"test123test\d+$", "test123test123"),
        (
            r"^kernel: \S+ \.+ SRC=\S+ DST=\S+ \.+ PROTO=\w+ SPT=\d+ DPT=\d+ ",
            "kernel: IPTABLE IN=eth0 OUT= MAC=ff:ff:ff:ff:ff:ff:00:03:93:db:2e:b4:08:00 SRC=10.4.11.40 DST=255.255.255.255 LEN=180 TOS=0x00 PREC=0x00 TTL=64 ID=4753 PROTO=UDP SPT=49320 DPT=2222 LEN=160",
        ),
        (r"test (\w+)la", "test abclala"),
        (r"(\w+) (\w+)", "wofl wofl"),
        (
            r"^\S+ [(\d+:\d+:\d+)] \.+ (\d+.\d+.\d+.\d+)\p*\d* -> (\d+.\d+.\d+.\d+)\p*",
            "snort: [1:469:3] ICMP PING NMAP [Classification: Attempted Information Leak] [Priority: 2]: {ICMP} 10.4.12.26 -> 10.4.10.231",
        ),
        (
            r"^\S+ [(\d+:\d+:\d+)] \.+ (\d+.\d+.\d+.\d+)\p*\d* -> (\d+.\d+.\d+.\d+)\p*",
            "snort: [1:1420:11] SNMP trap tcp [Classification: Attempted Information Leak] [Priority: 2]: {TCP} 10.4.12.26:37020 -> 10.4.10.231:162",
        ),
    ];
    const REGEX_FALSE: &[(&str, &str)] = &[
        (r"\w+\s+\w+\d+\s$", "a aa11  "),
        (r"^\s+\s     l", "     lala"),
        (r"test123test\d+", "test123test"),
        (r"test123test\d+$", "test123test"),
        ("(lalala", "lalala"),
        (r"test123(\d)", "test123a"),
        (r"\(test)", "test"),
        (r"(\w+)(\d+)", "1 1"),
    ];

    #[test]
    fn ossec_os_match_pairs() {
        for (p, h) in MATCH_TRUE {
            assert!(
                m(Dialect::OsMatch, p, h),
                "OS_Match {p:?} should match {h:?}"
            );
        }
        for (p, h) in MATCH_FALSE {
            assert!(
                !m(Dialect::OsMatch, p, h),
                "OS_Match {p:?} must not match {h:?}"
            );
        }
    }

    #[test]
    fn ossec_os_regex_pairs() {
        // OSSEC runs the OS_Match pairs through OS_Regex too.
        for (p, h) in MATCH_TRUE.iter().chain(REGEX_TRUE) {
            assert!(
                m(Dialect::OsRegex, p, h),
                "OS_Regex {p:?} should match {h:?}"
            );
        }
        for (p, h) in MATCH_FALSE.iter().chain(REGEX_FALSE) {
            assert!(
                !m(Dialect::OsRegex, p, h),
                "OS_Regex {p:?} must not match {h:?}"
            );
        }
    }

    fn caps(p: &str, h: &str) -> Vec<String> {
        let pat = Pattern::new(Dialect::OsRegex, p).unwrap();
        let found = pat.find(h.as_bytes()).unwrap();
        found
            .captures
            .iter()
            .flatten()
            .map(|r| h[r.clone()].to_string())
            .collect()
    }

    #[test]
    fn ossec_extraction_pairs() {
        assert_eq!(caps(r"123(\w+\s+)abc", "123sdf    abc"), ["sdf    "]);
        assert_eq!(caps(r"123(\w+\s+)abc", "abc123sdf    abc"), ["sdf    "]);
        assert_eq!(
            caps(r"123 (\d+.\d.\d.\d\d*\d*)", "123 45.6.5.567"),
            ["45.6.5.567"]
        );
        assert_eq!(
            caps(
                r"from (\S*\d+.\d+.\d+.\d\d*\d*)",
                "sshd[21576]: Illegal user web14 from ::ffff:212.227.60.55"
            ),
            ["::ffff:212.227.60.55"]
        );
        assert_eq!(
            caps(
                r"^sshd[\d+]: Accepted \S+ for (\S+) from (\S+) port ",
                "sshd[21405]: Accepted password for root from 192.1.1.1 port 6023"
            ),
            ["root", "192.1.1.1"]
        );
        assert_eq!(
            caps(
                r": \((\S+)@(\S+)\) [",
                "pure-ftpd: (?@enigma.lab.ossec.net) [INFO] New connection from enigma.lab.ossec.net"
            ),
            ["?", "enigma.lab.ossec.net"]
        );
    }

    #[test]
    fn laziness_and_translation() {
        assert_eq!(
            translate_os_regex(r"^(\S+) \d+ (\w+)").unwrap(),
            r"(?i-u)^([^ ]+?) [0-9]+? ([A-Za-z0-9@_-]+)"
        );
        assert_eq!(
            translate_os_regex(r"a\d+|b\w*").unwrap(),
            r"(?i-u)a[0-9]+|b[A-Za-z0-9@_-]*"
        );
        // `$` keeps the quantifier lazy (OSSEC's fix does not see through
        // the converted anchor), which gives the same match anyway.
        assert_eq!(translate_os_regex(r"\d+$").unwrap(), r"(?i-u)[0-9]+?\z");
        // Lazy inner quantifier: the capture stops at the first ':'.
        assert_eq!(caps(r"^(\S+): (\S+)", "a:b: c: d"), ["a:b", "c:"]);
        assert!(Pattern::new(Dialect::OsRegex, r"\q").is_err());
        assert!(Pattern::new(Dialect::OsRegex, "a\\").is_err());
        // `.` is literal, `\.` is any character.
        assert!(m(Dialect::OsRegex, "a.c", "a.c"));
        assert!(!m(Dialect::OsRegex, "a.c", "abc"));
        assert!(m(Dialect::OsRegex, r"a\.c", "abc"));
        // `+` not after a class is literal.
        assert!(m(Dialect::OsRegex, "a+", "A+"));
        assert!(!m(Dialect::OsRegex, "a+", "aa"));
        // \w includes - @ _ ; \s is only the space; \p is punctuation.
        assert!(m(Dialect::OsRegex, r"^\w+$", "a-b@c_d"));
        assert!(!m(Dialect::OsRegex, r"^a\sb$", "a\tb"));
        assert!(m(Dialect::OsRegex, r"^a\tb$", "a\tb"));
        assert!(m(Dialect::OsRegex, r"^\p+$", "()*+,-.:;<=>?[]!\"'#$%&{}|"));
        assert!(!m(Dialect::OsRegex, r"\p", "/\\^_~@`"));
        assert!(m(Dialect::OsRegex, r"\<a>", "<a>"));
        // Only `<` may be escaped, not `>`.
        assert!(Pattern::new(Dialect::OsRegex, r"\<a\>").is_err());
    }

    #[test]
    fn literal_fast_paths() {
        for (d, p) in [
            (Dialect::OsMatch, "Failed password|^refused"),
            (Dialect::OsRegex, "^Accepted"),
            (Dialect::OsRegex, "authentication failure; $"),
            (Dialect::Pcre2, r"^sshd$"),
            (Dialect::Pcre2, r"\[error\] |^x"),
        ] {
            assert!(Pattern::new(d, p).unwrap().is_literal(), "{p}");
        }
        assert!(!Pattern::new(Dialect::OsRegex, r"^\d").unwrap().is_literal());
        assert!(!Pattern::new(Dialect::Pcre2, r"^\d").unwrap().is_literal());
        let p = Pattern::new(Dialect::Pcre2, r"\[error\] ").unwrap();
        let f = p.find(b"[Sun x] [ERROR] boom").unwrap();
        assert_eq!((f.start, f.end), (8, 16));
        let p = Pattern::new(Dialect::OsMatch, "zz|^ab").unwrap();
        assert_eq!(p.find(b"abzz").map(|f| (f.start, f.end)), Some((0, 2)));
        // PCRE2 `$` also matches before a final newline.
        assert!(m(Dialect::Pcre2, "^sshd$", "sshd\n"));
        assert!(!m(Dialect::OsMatch, "^sshd$", "sshd\n"));
    }

    #[test]
    fn pcre2_is_caseless_and_bytes() {
        assert!(m(
            Dialect::Pcre2,
            r"^Failed \S+ for (\S+)",
            "FAILED password for root"
        ));
        let p = Pattern::new(Dialect::Pcre2, r"^(\S+) port (\d+?): |^(\S+): ").unwrap();
        let f = p.find(b"1.2.3.4: x").unwrap();
        assert_eq!(f.captures, vec![None, None, Some(0..7)]);
        assert!(Pattern::new(Dialect::Pcre2, "").is_err());
        assert!(Pattern::new(Dialect::Pcre2, "(").is_err());
    }

    #[test]
    fn first_byte_filter_and_lowercased_literals() {
        assert!(prefix_filter(&translate_os_regex(r"^\d+ x").unwrap()).is_some());
        assert!(m(Dialect::OsRegex, r"^\d+ x", "12 x"));
        assert!(!m(Dialect::OsRegex, r"^\d+ x", "a12 x"));
        assert!(!m(Dialect::OsRegex, r"^\d+ x", ""));
        assert!(m(Dialect::OsRegex, r"^A\d|^b", "B"));
        let p = prefix_filter(&translate_os_regex(r"^\w\w\w \d+ ").unwrap()).unwrap();
        assert_eq!(p.len(), 5);
        assert!(m(Dialect::OsRegex, r"^\w\w\w \d+ ", "Mar 10 x"));
        assert!(!m(Dialect::OsRegex, r"^\w\w\w \d+ ", "187.1.2.3 x"));
        assert!(!m(Dialect::OsRegex, r"^\w\w\w \d+ ", "Mar"));
        // Alternatives: position-wise union, up to the shortest.
        let p = prefix_filter(&translate_os_regex(r"^%PIX-|^\w\w\w \d\d").unwrap()).unwrap();
        assert_eq!(p.len(), 5);
        assert!(m(Dialect::OsRegex, r"^%PIX-|^\w\w\w \d\d", "%PIX-4"));
        assert!(m(Dialect::OsRegex, r"^%PIX-|^\w\w\w \d\d", "Jan 01"));
        assert!(!m(Dialect::OsRegex, r"^%PIX-|^\w\w\w \d\d", "%ASA-4"));
        // Not every alternative anchored, or a possibly empty start: no
        // filter, and the regex decides.
        assert!(prefix_filter(&translate_os_regex(r"^a\d|b").unwrap()).is_none());
        assert!(m(Dialect::OsRegex, r"^a\d|b", "xb"));
        assert!(prefix_filter(&translate_os_regex(r"^\d*x").unwrap()).is_none());
        assert!(m(Dialect::OsRegex, r"^\d*x", "x"));
        assert!(m(Dialect::OsRegex, r"^(\w+) (\d+)", "Ab 12"));
        assert!(!m(Dialect::OsRegex, r"^(\w+) (\d+)", " Ab 12"));
        // Literal alternatives: ASCII case folds, other bytes do not.
        assert!(m(Dialect::OsMatch, "\u{c4}bc|zz", "x\u{c4}BC"));
        assert!(!m(Dialect::OsMatch, "\u{c4}bc|zz", "x\u{e4}bc"));
        assert!(m(Dialect::OsMatch, "NIKTO", "ua: nikto/2"));
        let p = Pattern::new(Dialect::OsMatch, "b|ab|B").unwrap();
        assert_eq!(p.find(b"xAB").map(|f| (f.start, f.end)), Some((1, 3)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]
        /// The first-positions filter and the PCRE2 twin against the
        /// `regex` crate alone, on random start-anchored OS_Regex patterns
        /// over a small alphabet (so that runs, lazy quantifiers and
        /// backtracking all happen).
        #[test]
        fn fast_paths_agree_with_the_regex_crate(
            toks in proptest::collection::vec(0usize..14, 1..9),
            groups in proptest::collection::vec(proptest::bool::ANY, 9),
            dollar in proptest::bool::ANY,
            hay in proptest::collection::vec(proptest::sample::select(b"ab1 \".-:".to_vec()), 0..24),
        ) {
            const T: [&str; 14] = [
                r"\S+", r"\d+", r"\w+", r"\s", r"\S*", "a", " ", "\"", ".", r"\.+",
                r"\p", r"\d*", r"\w", r"\.",
            ];
            let mut src = String::from("^");
            for (i, &t) in toks.iter().enumerate() {
                if groups[i] { src.push('('); src.push_str(T[t]); src.push(')'); } else { src.push_str(T[t]); }
            }
            if dollar { src.push('$'); }
            let p = Pattern::new(Dialect::OsRegex, &src).unwrap();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let x = p.find_into(&hay, &mut a);
            let y = p.find_into_reference(&hay, &mut b);
            proptest::prop_assert_eq!(x, y, "{} on {:?}", src, String::from_utf8_lossy(&hay));
            if x.is_some() {
                proptest::prop_assert_eq!(&a, &b, "{} on {:?}", src, String::from_utf8_lossy(&hay));
            }
            proptest::prop_assert_eq!(p.find_span(&hay), y);
            proptest::prop_assert_eq!(p.is_match(&hay), y.is_some());
        }
    }

    #[test]
    fn hostile_haystacks() {
        let pats = [
            Pattern::new(Dialect::OsMatch, "needle|^x|y$").unwrap(),
            Pattern::new(Dialect::OsRegex, r"(\w+)\s(\S+)$").unwrap(),
            Pattern::new(Dialect::Pcre2, r"(\w+)\s(\S+)$").unwrap(),
            Pattern::new(Dialect::OsRegex, r"\.+needle").unwrap(),
        ];
        let mut big = vec![b'a'; 1 << 20];
        big.extend_from_slice(b" \xff\xfe\0needle");
        for p in &pats {
            let _ = p.is_match(b"\xff\xfe\0\x80");
            let _ = p.find(b"\xff\xfe\0\x80");
            assert!(p.is_match(&big), "{}", p.source());
            let f = p.find(&big).unwrap();
            assert!(f.end <= big.len());
        }
        // NUL bytes are ordinary bytes.
        assert!(m(Dialect::OsRegex, r"a\.b", "a\0b"));
        let p = Pattern::new(Dialect::OsRegex, r"a\.b").unwrap();
        assert!(p.is_match(b"a\xffb"));
    }
}
