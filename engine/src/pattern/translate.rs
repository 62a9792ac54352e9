//! OS_Regex syntax (`<regex>`, decoder `<prematch>`): OSSEC's own regex
//! dialect, translated token by token into a `regex::bytes` pattern exactly
//! as OSSEC 3.x translates it into PCRE2 (`src/os_regex/os_converter.c`):
//! classes from the OSSEC tables, `.` literal and `\.` any byte, `+`/`*`
//! quantifiers only after a `\x` token, all lazy except the last one before
//! `|` or the end, caseless. A pattern that is only literal text is
//! recognised here too, so that it runs on the literal matcher instead.
//!
//! Why translate rather than interpret OS_Regex: the `regex` crate gives
//! linear-time matching and literal prefilters for free.

use super::PatternError;
use super::literal::Literal;

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
pub(super) fn os_regex_literal(source: &str) -> Option<Literal> {
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
