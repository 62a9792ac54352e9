//! Escaping what Palisade did not write, for every output a person or a
//! line-based tool reads: alerts.log, mail, `logtest -a`, the manager's
//! own log, `palisadectl`'s tables and lines.
//!
//! Log lines, locations, host names and versions come from agents and
//! from the clients whose requests the agents' hosts log: the attacker
//! writes them. Printed raw, a newline forges an alerts.log entry or a
//! table row, a carriage return hides what came before it, and an escape
//! sequence drives the operator's terminal. So every output passes what it
//! did not write through [`escape_text`], which replaces each such
//! character with a visible, ASCII escape:
//!
//! - C0 controls and DEL: `\n`, `\r`, `\t`, else `\xNN` (ESC is `\x1b`,
//!   which leaves the rest of an escape sequence as plain text);
//! - C1 controls (U+0080 to U+009F: a lone U+009B is a CSI on some
//!   terminals), the line and paragraph separators U+2028 and U+2029, and
//!   the bidirectional embeddings, overrides and isolates (U+202A to
//!   U+202E, U+2066 to U+2069, which reorder what a table shows): `\u{XXXX}`.
//!
//! Everything else, backslashes included, is kept as it is: the escape is
//! for reading, not a reversible encoding (nginx's own `\x22` stays
//! readable). JSON outputs keep the data exact instead: serde_json escapes
//! C0 (`\n`, `\u001b`), and [`json_safe`] adds `\uXXXX` for DEL and the
//! other characters above, which a JSON reader decodes back.

use std::borrow::Cow;
use std::fmt;

/// Whether `c` is escaped by [`escape_text`] and [`json_safe`].
pub fn needs_escape(c: char) -> bool {
    c.is_control() // C0, DEL and C1 (Unicode's Cc)
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every character [`needs_escape`] names replaced by a visible
/// escape (borrowed when there is none, the usual case).
pub fn escape_text(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(needs_escape) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// [`escape_text`] of bytes: invalid UTF-8 becomes U+FFFD first.
pub fn escape_bytes(b: &[u8]) -> Cow<'_, str> {
    match String::from_utf8_lossy(b) {
        Cow::Borrowed(s) => escape_text(s),
        Cow::Owned(s) => Cow::Owned(escape_text(&s).into_owned()),
    }
}

fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write as _;
    if !needs_escape(c) {
        out.push(c);
        return;
    }
    // Writing to a String cannot fail.
    let _ = match c {
        '\n' => write!(out, "\\n"),
        '\r' => write!(out, "\\r"),
        '\t' => write!(out, "\\t"),
        '\0'..='\u{7f}' => write!(out, "\\x{:02x}", u32::from(c)),
        _ => write!(out, "\\u{{{:04x}}}", u32::from(c)),
    };
}

/// A value that prints [`escape_text`]ed: for `tracing` fields and
/// `format!` arguments holding text from outside
/// (`warn!(location = %Escaped(&location), ...)`).
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape_text(self.0))
    }
}

/// A JSON text (as serde_json writes it) with every character
/// [`needs_escape`] names that serde_json leaves raw (DEL, C1, the
/// separators and the bidirectional controls) written as `\uXXXX`. The value read
/// back is unchanged; only the bytes a terminal or a line reader sees are.
/// Such characters only occur inside JSON strings, where `\uXXXX` is
/// valid.
pub fn json_safe(json: String) -> String {
    if !json.contains(needs_escape) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        // C0 is serde_json's to escape (and a pretty printer's own
        // newlines are structure).
        if needs_escape(c) && c > '\u{1f}' {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// `s` cut to at most `max` bytes at a character boundary, then escaped:
/// a hostile line as a log message quotes it.
pub fn escape_truncated(s: &[u8], max: usize) -> String {
    let cut = &s[..s.len().min(max)];
    let mut text = escape_bytes(cut).into_owned();
    if s.len() > max {
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_and_unchanged() {
        let line = r#"1.2.3.4 - - "GET /a\x22b HTTP/1.1" 404 é ü"#;
        assert!(matches!(escape_text(line), Cow::Borrowed(_)));
        assert_eq!(escape_text(line), line);
    }

    #[test]
    fn every_control_is_visible() {
        assert_eq!(
            escape_text("a\nb\rc\td\x1b[31me\0f\x7fg"),
            r"a\nb\rc\td\x1b[31me\x00f\x7fg"
        );
        assert_eq!(
            escape_text("x\u{9b}31m\u{85}y\u{2028}z\u{202e}w"),
            r"x\u{009b}31m\u{0085}y\u{2028}z\u{202e}w"
        );
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let e = escape_text(&c.to_string()).into_owned();
            assert!(
                e.starts_with('\\') && e.chars().all(|c| c.is_ascii_graphic()),
                "{c:?} -> {e:?}"
            );
        }
    }

    #[test]
    fn bytes_and_display() {
        assert_eq!(escape_bytes(b"a\xffb\n"), "a\u{fffd}b\\n");
        assert_eq!(format!("<{}>", Escaped("x\r\ny")), r"<x\r\ny>");
        assert_eq!(escape_truncated(b"ab\ncd", 3), r"ab\n...");
        assert_eq!(escape_truncated("é".as_bytes(), 1), "\u{fffd}...");
    }

    #[test]
    fn json_keeps_the_value_and_shows_no_control() {
        let raw = "a\x1b[2J\nb\x7f\u{9b}c\u{2028}d\u{202e}e";
        let text = json_safe(serde_json::json!({ "full_log": raw }).to_string());
        assert!(!text.chars().any(needs_escape), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["full_log"], raw);
    }
}
