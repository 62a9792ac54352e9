//! PCRE2 (`*_pcre2` elements): compiled by the `pcre2` crate with
//! `PCRE2_CASELESS` only (no UTF), like OSSEC 3.x's `os_pcre2_compile.c`.
//! A pattern that is only literal text is recognised here, so that it runs
//! on the literal matcher instead.

use std::ops::Range;

use super::PatternError;
use super::captures::{Pool, push_groups};
use super::literal::Literal;

/// A `*_pcre2` pattern with its reusable capture locations.
#[derive(Debug)]
pub(super) struct Pcre {
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

impl Pcre {
    /// Compiles a non-empty PCRE2 pattern that is not a plain literal.
    pub(super) fn compile(source: &str) -> Result<Pcre, PatternError> {
        let re = pcre2::bytes::RegexBuilder::new()
            .caseless(true)
            .jit_if_available(true)
            .build(source)
            .map_err(|e| PatternError(format!("invalid PCRE2 pattern `{source}`: {e}")))?;
        Ok(Pcre {
            re,
            locs: Pool::default(),
        })
    }

    /// A PCRE2 run-time error (match limit) counts as no match, as in
    /// OSSEC.
    pub(super) fn is_match(&self, h: &[u8]) -> bool {
        self.re.is_match(h).unwrap_or(false)
    }

    pub(super) fn find_span(&self, h: &[u8]) -> Option<(usize, usize)> {
        self.re.find(h).ok()?.map(|m| (m.start(), m.end()))
    }

    pub(super) fn find_into(
        &self,
        h: &[u8],
        out: &mut Vec<Option<Range<usize>>>,
    ) -> Option<(usize, usize)> {
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

/// A PCRE2 pattern that is only literal text (with `\` + punctuation
/// escapes), `|` alternatives and a leading `^` / trailing `$` per
/// alternative.
pub(super) fn pcre2_literal(source: &str) -> Option<Literal> {
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
