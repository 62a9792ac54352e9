//! Fast paths for a translated OS_Regex whose every match starts at 0
//! (most decoder prematches: `^\w\w\w \d+ `, `^%PIX-`): the bytes allowed
//! at its first fixed-width positions, which reject most lines on a few
//! loads, and a dense anchored DFA, which finds the match end in one pass.
//!
//! Both are read off the pattern's `regex-syntax` HIR at compile time; a
//! pattern they do not understand simply gets neither, and the `regex`
//! crate decides alone.

use regex_syntax::hir::{Hir, Look};

/// The HIR of a translated OS_Regex when every match of it starts at 0.
fn start_anchored_hir(translated: &str) -> Option<Hir> {
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(translated)
        .ok()?;
    hir.properties()
        .look_set_prefix()
        .contains(Look::Start)
        .then_some(hir)
}

/// The leading fixed-width part of a pattern whose every match starts at
/// 0: for each of its first positions, the bytes allowed there; `None`
/// when that cannot be shown (not anchored, or a possibly empty start).
pub(super) fn prefix_filter(translated: &str) -> Option<Vec<[bool; 256]>> {
    let hir = start_anchored_hir(translated)?;
    let (sets, _) = prefix_sets(&hir)?;
    (!sets.is_empty()).then_some(sets)
}

/// Bytes a dense DFA may take (per pattern, and while determinising).
const DFA_LIMIT: usize = 1 << 18;

/// The anchored dense DFA of a translated OS_Regex whose every match
/// starts at 0 (see `OsRegex::dfa`).
pub(super) fn anchored_dfa(translated: &str) -> Option<regex_automata::dfa::dense::DFA<Vec<u32>>> {
    use regex_automata::dfa::{StartKind, dense};
    use regex_automata::nfa::thompson;
    use regex_automata::util::syntax;
    start_anchored_hir(translated)?;
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
fn prefix_sets(h: &Hir) -> Option<(Vec<[bool; 256]>, bool)> {
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
pub(super) fn start_anchored(body: &str) -> bool {
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
