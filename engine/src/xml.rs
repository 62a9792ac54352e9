//! OSSEC's lenient XML dialect, read the way `os_xml` (`src/os_xml/os_xml.c`)
//! reads it.
//!
//! OSSEC's rule and decoder files are not well-formed XML: a file holds many
//! root elements, `&` appears bare, there are no entities, and `\<` inside
//! content is a literal `<` (the backslash is kept, because the pattern
//! dialects give it meaning). A standard XML parser rejects the shipped
//! files, so Palisade reads them with the same rules as OSSEC, and keeps the
//! 1-based line of every element so that loaders can point at the culprit.
//!
//! Faithful details: content is not trimmed; text outside any element is
//! ignored; comments (`<!-- ... -->`, also closed by `!>`) may appear anywhere,
//! even inside content; an attribute value is quoted with `"` or `'` and may
//! not contain `>`; a duplicate attribute is an error; a closing tag must
//! repeat the element name exactly. Known differences: OSSEC's fixed buffer
//! sizes (`XML_MAXSIZE`) are not enforced, and the stray `>` that OSSEC adds
//! to a parent's text after `<child />` (space before the slash) is dropped.

use std::fmt;

use crate::dialect::RulesetDialect;

/// One element with its attributes, text and children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// The element name, exactly as written.
    pub name: String,
    /// Attributes in the order written.
    pub attrs: Vec<(String, String)>,
    /// The element's text content, untrimmed. As in OSSEC, for an element
    /// with children this is only the text after the last child.
    pub text: String,
    /// Child elements, in order.
    pub children: Vec<Element>,
    /// 1-based line of the opening tag.
    pub line: usize,
}

impl Element {
    /// The value of attribute `name` (exact, case-sensitive name).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A syntax error, with the line where it was detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for XmlError {}

struct Reader<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
}

impl Reader<'_> {
    fn next(&mut self) -> Option<u8> {
        let c = *self.src.get(self.pos)?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, XmlError> {
        Err(XmlError {
            line: self.line,
            message: message.into(),
        })
    }

    /// Called just after a `<`. Skips a comment if one starts here.
    /// Returns true when a comment was skipped.
    fn comment(&mut self) -> Result<bool, XmlError> {
        if self.peek() != Some(b'!') {
            return Ok(false);
        }
        self.next();
        loop {
            match self.next() {
                None => return self.err("Comment not closed."),
                Some(b'!') if self.peek() == Some(b'>') => {
                    self.next();
                    return Ok(true);
                }
                Some(b'-') if self.src[self.pos..].starts_with(b"->") => {
                    self.next();
                    self.next();
                    return Ok(true);
                }
                Some(_) => {}
            }
        }
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

enum TagEnd {
    Open,
    SelfClosed,
}

/// Parses a whole file: every top-level element, in order.
pub fn parse(src: &str) -> Result<Vec<Element>, XmlError> {
    parse_with(src, false)
}

/// [`parse`] as Wazuh's reader does it: a doubled backslash is an escaped
/// backslash, so `E:\\</field>` closes the element (OSSEC's reader would
/// take that `<` as text).
pub fn parse_wazuh(src: &str) -> Result<Vec<Element>, XmlError> {
    parse_with(src, true)
}

/// Parses as the chosen dialect's reader does, then applies `<var>`s.
pub fn parse_in(src: &str, dialect: RulesetDialect) -> Result<Vec<Element>, XmlError> {
    if dialect.is_wazuh() {
        parse_wazuh(src).and_then(apply_wazuh_variables)
    } else {
        parse(src).and_then(apply_variables)
    }
}

fn parse_with(src: &str, backslash_pairs: bool) -> Result<Vec<Element>, XmlError> {
    let mut r = Reader {
        src: src.as_bytes(),
        pos: 0,
        line: 1,
    };
    let mut roots = Vec::new();
    // Open elements, innermost last, with their raw text bytes.
    let mut stack: Vec<(Element, Vec<u8>)> = Vec::new();
    // os_xml's `prevv`: a backslash was seen, so a following `<` is text.
    let mut escaped = false;

    while let Some(c) = r.next() {
        if c == b'\\' {
            escaped = !(backslash_pairs && escaped);
        } else if escaped && c != b'<' {
            escaped = false;
        }
        if c == b'<' && r.comment()? {
            continue;
        }
        let Some((_, text)) = stack.last_mut() else {
            // Outside any element: only an unescaped `<` matters.
            if c == b'<' && !escaped {
                if r.peek() == Some(b'/') {
                    return r.err("Element not opened.");
                }
                open_tag(&mut r, &mut stack, &mut roots)?;
            }
            continue;
        };
        if c == b'<' && !escaped {
            if r.peek() == Some(b'/') {
                r.next();
                close_tag(&mut r, &mut stack, &mut roots)?;
            } else {
                // The parent's text restarts after each child (os_xml resets
                // its content buffer).
                text.clear();
                open_tag(&mut r, &mut stack, &mut roots)?;
            }
            escaped = false;
        } else {
            text.push(c);
            if c == b'<' {
                escaped = false;
            }
        }
    }
    if let Some((e, _)) = stack.first() {
        return Err(XmlError {
            line: r.line,
            message: format!(
                "End of file and some elements were not closed (element '{}' opened at line {}).",
                e.name, e.line
            ),
        });
    }
    Ok(roots)
}

fn attach(stack: &mut [(Element, Vec<u8>)], roots: &mut Vec<Element>, e: Element) {
    match stack.last_mut() {
        Some((parent, _)) => parent.children.push(e),
        None => roots.push(e),
    }
}

fn open_tag(
    r: &mut Reader<'_>,
    stack: &mut Vec<(Element, Vec<u8>)>,
    roots: &mut Vec<Element>,
) -> Result<(), XmlError> {
    let line = r.line;
    let mut name = Vec::new();
    let end = loop {
        match r.next() {
            None => return r.err("End of file and some elements were not closed."),
            Some(b'>') => break b'>',
            Some(c) if is_space(c) => break c,
            Some(c) => name.push(c),
        }
    };
    let mut self_closed = false;
    if name.last() == Some(&b'/') {
        name.pop();
        self_closed = true;
    }
    let mut el = Element {
        name: lossy(&name),
        line,
        ..Element::default()
    };
    if end != b'>' {
        match attributes(r, &mut el)? {
            TagEnd::Open => {}
            TagEnd::SelfClosed => self_closed = true,
        }
    }
    if self_closed {
        attach(stack, roots, el);
    } else {
        stack.push((el, Vec::new()));
    }
    Ok(())
}

fn close_tag(
    r: &mut Reader<'_>,
    stack: &mut Vec<(Element, Vec<u8>)>,
    roots: &mut Vec<Element>,
) -> Result<(), XmlError> {
    let mut name = Vec::new();
    loop {
        match r.next() {
            None => return r.err("End of file and some elements were not closed."),
            Some(b'>') => break,
            Some(c) => name.push(c),
        }
    }
    let Some((mut el, text)) = stack.pop() else {
        return r.err("Element not opened.");
    };
    if name != el.name.as_bytes() {
        return r.err(format!(
            "Element '{}' (line {}) not closed: found '</{}>'.",
            el.name,
            el.line,
            lossy(&name)
        ));
    }
    el.text = lossy(&text);
    attach(stack, roots, el);
    Ok(())
}

fn attributes(r: &mut Reader<'_>, el: &mut Element) -> Result<TagEnd, XmlError> {
    loop {
        // Skip blanks before an attribute name.
        let mut attr = Vec::new();
        loop {
            match r.next() {
                None => return r.err("End of file while reading an attribute."),
                Some(b'>') if attr.is_empty() => return Ok(TagEnd::Open),
                Some(b'/') if attr.is_empty() => {
                    if r.peek() == Some(b'>') {
                        r.next();
                    }
                    return Ok(TagEnd::SelfClosed);
                }
                Some(b'>' | b'/') => {
                    return r.err(format!("Attribute '{}' has no value.", lossy(&attr)));
                }
                Some(b'=') => break,
                Some(c) if is_space(c) => {
                    if !attr.is_empty() {
                        return r.err(format!("Attribute '{}' has no value.", lossy(&attr)));
                    }
                }
                Some(c) => attr.push(c),
            }
        }
        let attr = lossy(&attr);
        if el.attrs.iter().any(|(n, _)| *n == attr) {
            return r.err(format!("Attribute '{attr}' already defined."));
        }
        let mut quote = r.next();
        while quote.is_some_and(is_space) {
            quote = r.next();
        }
        let quote = match quote {
            Some(q @ (b'"' | b'\'')) => q,
            None => return r.err("End of file while reading an attribute."),
            Some(_) => {
                return r.err(format!("Attribute '{attr}' not followed by a \" or '."));
            }
        };
        let mut value = Vec::new();
        loop {
            match r.next() {
                None => return r.err("End of file while reading an attribute."),
                Some(c) if c == quote => break,
                Some(b'>') => return r.err(format!("Attribute '{attr}' not closed.")),
                Some(c) => value.push(c),
            }
        }
        let value = lossy(&value);
        match r.next() {
            Some(c) if is_space(c) => {}
            Some(b'>') => {
                el.attrs.push((attr, value));
                return Ok(TagEnd::Open);
            }
            Some(b'/') => {
                el.attrs.push((attr, value));
                if r.peek() == Some(b'>') {
                    r.next();
                }
                return Ok(TagEnd::SelfClosed);
            }
            None => return r.err("End of file while reading an attribute."),
            Some(_) => {
                return r.err(format!("Bad attribute closing for '{attr}'='{value}'."));
            }
        }
        el.attrs.push((attr, value));
    }
}

/// Applies OSSEC `<var name="X">value</var>` variables
/// (`os_xml_variables.c`, spec 2.10) and removes the top-level `<var>`
/// elements.
///
/// Variables are defined by top-level `var` elements (name compared
/// case-insensitively) and apply to every element text and attribute value
/// longer than two bytes that comes after the first definition, in document
/// order. `$NAME` ends at `$`, `.`, `|`, `,`, a space or the end; once a
/// variable exists an unknown `$NAME` is an error, while a bare `$` (a
/// regex anchor) is left alone. A nested `<var>` is left in place for the
/// loader to reject.
pub fn apply_variables(elements: Vec<Element>) -> Result<Vec<Element>, XmlError> {
    apply_variables_with(elements, false)
}

/// [`apply_variables`] for Wazuh's files, where `$(field)` is a
/// reference to a decoded field (filled into descriptions when an alert
/// is made), not a variable: it is left as written.
pub fn apply_wazuh_variables(elements: Vec<Element>) -> Result<Vec<Element>, XmlError> {
    apply_variables_with(elements, true)
}

fn apply_variables_with(
    elements: Vec<Element>,
    keep_field_refs: bool,
) -> Result<Vec<Element>, XmlError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut out = Vec::with_capacity(elements.len());
    for mut el in elements {
        if el.name.eq_ignore_ascii_case("var") {
            let mut name = None;
            for (n, v) in &el.attrs {
                if n.eq_ignore_ascii_case("name") {
                    name = Some(v.clone());
                } else {
                    return Err(XmlError {
                        line: el.line,
                        message: "Only \"name\" is allowed as an attribute for a variable".into(),
                    });
                }
            }
            let Some(name) = name else {
                return Err(XmlError {
                    line: el.line,
                    message: "Bad formed variable. No value set".into(),
                });
            };
            if !vars.is_empty() {
                el.text = substitute(&el.text, &vars, el.line, keep_field_refs)?;
            }
            vars.push((name, el.text));
            continue;
        }
        if !vars.is_empty() {
            substitute_tree(&mut el, &vars, keep_field_refs)?;
        }
        out.push(el);
    }
    Ok(out)
}

fn substitute_tree(
    el: &mut Element,
    vars: &[(String, String)],
    keep_field_refs: bool,
) -> Result<(), XmlError> {
    for (_, v) in &mut el.attrs {
        *v = substitute(v, vars, el.line, keep_field_refs)?;
    }
    el.text = substitute(&el.text, vars, el.line, keep_field_refs)?;
    for c in &mut el.children {
        substitute_tree(c, vars, keep_field_refs)?;
    }
    Ok(())
}

fn substitute(
    s: &str,
    vars: &[(String, String)],
    line: usize,
    keep_field_refs: bool,
) -> Result<String, XmlError> {
    if s.len() <= 2 || !s.contains('$') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after.find(['$', '.', '|', ',', ' ']).unwrap_or(after.len());
        let name = &after[..end];
        if name.is_empty() || (keep_field_refs && name.starts_with('(')) {
            out.push('$');
            rest = after;
            continue;
        } else if let Some((_, v)) = vars
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            out.push_str(v);
        } else {
            return Err(XmlError {
                line,
                message: format!("Unknown variable: {name}"),
            });
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_roots_comments_and_lines() {
        let src = "<!-- head -->\n<a x=\"1\">\n  <b>t&x</b>\n</a>\n<c y='2'/>\n<d/>";
        let els = parse(src).unwrap();
        assert_eq!(els.len(), 3);
        assert_eq!(els[0].name, "a");
        assert_eq!(els[0].line, 2);
        assert_eq!(els[0].attr("x"), Some("1"));
        assert_eq!(els[0].children[0].text, "t&x");
        assert_eq!(els[0].children[0].line, 3);
        assert_eq!(els[1].attr("y"), Some("2"));
        assert_eq!(els[2].name, "d");
        assert!(els[2].children.is_empty());
    }

    #[test]
    fn escaped_lt_is_text_and_content_untrimmed() {
        let els = parse(r"<regex> \<(\S+)\> a<!-- c -->b </regex>").unwrap();
        assert_eq!(els[0].text, r" \<(\S+)\> ab ");
    }

    #[test]
    fn comment_closed_by_bang() {
        let els = parse("<!-- old style !> <a>1</a>").unwrap();
        assert_eq!(els[0].text, "1");
    }

    #[test]
    fn errors() {
        assert!(parse("<a>").is_err());
        assert!(parse("</a>").is_err());
        assert!(parse("<a></b>").is_err());
        assert!(parse("<a x=1></a>").is_err());
        assert!(parse("<a x></a>").is_err());
        assert!(parse("<a x=\"1\" x=\"2\"></a>").is_err());
        assert!(parse("<a x=\"1>\"></a>").is_err());
        assert!(parse("<!-- never closed").is_err());
        let e = parse("<a>\n<b>\n</a>").unwrap_err();
        assert_eq!(e.line, 3);
    }

    #[test]
    fn self_closing_with_space_and_attributes() {
        assert!(parse("<a k = \"v\"></a>").is_err());
        let els = parse("<a><b /><c k= \"v\"/>tail</a>").unwrap();
        assert_eq!(els[0].children.len(), 2);
        assert_eq!(els[0].children[1].attr("k"), Some("v"));
        assert_eq!(els[0].text, "tail");
    }

    #[test]
    fn invalid_utf8_nul_and_huge_input() {
        let bytes = b"<a>\xff\xfe\0x</a>";
        let s = String::from_utf8_lossy(bytes);
        let els = parse(&s).unwrap();
        assert!(els[0].text.ends_with("\0x"));
        let big = format!("<a>{}</a>", "x".repeat(1 << 20));
        assert_eq!(parse(&big).unwrap()[0].text.len(), 1 << 20);
        let deep = "<a>".repeat(100_000);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn variables() {
        let src = "<var name=\"BAD\">x|y</var>\n<rule a=\"$BAD\"><m>^a$|$bad.z</m><n>$</n></rule>";
        let els = apply_variables(parse(src).unwrap()).unwrap();
        assert_eq!(els.len(), 1);
        assert_eq!(els[0].attr("a"), Some("x|y"));
        assert_eq!(els[0].children[0].text, "^a$|x|y.z");
        assert_eq!(els[0].children[1].text, "$");
        let bad = parse("<var name=\"A\">1</var><r>$NOPE</r>").unwrap();
        assert!(apply_variables(bad).is_err());
        // Before any definition `$` text is untouched.
        let before = apply_variables(parse("<r>$NOPE</r>").unwrap()).unwrap();
        assert_eq!(before[0].text, "$NOPE");
    }
}
