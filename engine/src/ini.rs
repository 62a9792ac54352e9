//! The INI dialect of OSSEC's ruleset test files
//! (`contrib/ossec-testing/tests/*.ini`), read with Python `configparser`
//! semantics because that is what OSSEC's runner (`runtests.py`) used.
//!
//! What matters for those files: `[section]` headers (a repeated section is
//! merged into the first), `key = value` or `key: value` split at the first
//! `=` or `:`, keys lower-cased, values trimmed, full-line `#`/`;` comments,
//! indented lines continuing the previous value (joined with `\n`), and a
//! repeated key overwriting the earlier value in place (Python 2's
//! behaviour; Python 3's strict mode would refuse the file). Values are raw:
//! no `%` interpolation and no inline comments (Python 2's runner would also
//! cut a value at ` ;`, which truncates the `sudo` lines; Palisade feeds
//! whole lines, as the corpus README's baseline runner does).

use std::fmt;

/// One `[section]` with its keys in first-seen order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Header text between the brackets.
    pub name: String,
    /// Line of the first header.
    pub line: usize,
    /// `(lower-cased key, value, line of the key)`.
    pub entries: Vec<(String, String, usize)>,
}

impl Section {
    /// The value of `key` (already lower-case).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }
}

/// A syntax problem (a line that is neither header, option nor
/// continuation). Python collects these and raises them at the end; so do
/// we, keeping what parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniError {
    /// 1-based line.
    pub line: usize,
    /// The offending line.
    pub text: String,
}

impl fmt::Display for IniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: cannot parse {:?}", self.line, self.text)
    }
}

impl std::error::Error for IniError {}

/// A parsed file: sections in order, plus the lines that did not parse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    /// Sections in first-seen order.
    pub sections: Vec<Section>,
    /// Unparsable lines (Python's `ParsingError`).
    pub errors: Vec<IniError>,
}

/// What a key repeated in one section does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RepeatedKeys {
    /// Replaces the earlier value in place (OSSEC's runner, Python 2).
    #[default]
    Overwrite,
    /// Joins the values into one multi-line value, in file order (Wazuh's
    /// runner: `RawConfigParser(dict_type=MultiOrderedDict, strict=False)`).
    Join,
}

/// Parses INI text, a repeated key overwriting the earlier value.
pub fn parse(text: &str) -> Ini {
    parse_with(text, RepeatedKeys::Overwrite)
}

/// Parses INI text with the given treatment of repeated keys.
pub fn parse_with(text: &str, repeated: RepeatedKeys) -> Ini {
    let mut ini = Ini::default();
    // Current section index and current key index, with the value lines.
    let mut cur: Option<usize> = None;
    let mut opt: Option<usize> = None;
    let mut values: Vec<Vec<Vec<String>>> = Vec::new();
    let mut indent_level = 0usize;
    for (n, raw) in text.split('\n').enumerate() {
        let lineno = n + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let stripped = line.trim();
        let is_comment = stripped.starts_with('#') || stripped.starts_with(';');
        let value = if is_comment { "" } else { stripped };
        if value.is_empty() {
            if !is_comment && let (Some(s), Some(o)) = (cur, opt) {
                values[s][o].push(String::new());
            }
            continue;
        }
        let cur_indent = line.len() - line.trim_start().len();
        if let (Some(s), Some(o)) = (cur, opt)
            && cur_indent > indent_level
        {
            values[s][o].push(value.to_string());
            continue;
        }
        indent_level = cur_indent;
        if let Some(header) = section_header(value) {
            let idx = match ini.sections.iter().position(|s| s.name == header) {
                Some(i) => i,
                None => {
                    ini.sections.push(Section {
                        name: header.to_string(),
                        line: lineno,
                        entries: Vec::new(),
                    });
                    values.push(Vec::new());
                    ini.sections.len() - 1
                }
            };
            cur = Some(idx);
            opt = None;
            continue;
        }
        let Some(s) = cur else {
            ini.errors.push(IniError {
                line: lineno,
                text: line.to_string(),
            });
            continue;
        };
        match split_option(value) {
            Some((key, val)) => {
                let key = key.to_lowercase();
                let sec = &mut ini.sections[s];
                let o = match sec.entries.iter().position(|(k, _, _)| *k == key) {
                    Some(o) => {
                        sec.entries[o].2 = lineno;
                        match repeated {
                            RepeatedKeys::Overwrite => values[s][o] = vec![val.to_string()],
                            RepeatedKeys::Join => values[s][o].push(val.to_string()),
                        }
                        o
                    }
                    None => {
                        sec.entries.push((key, String::new(), lineno));
                        values[s].push(vec![val.to_string()]);
                        sec.entries.len() - 1
                    }
                };
                opt = Some(o);
            }
            None => {
                ini.errors.push(IniError {
                    line: lineno,
                    text: line.to_string(),
                });
            }
        }
    }
    for (s, sec) in ini.sections.iter_mut().enumerate() {
        for (o, e) in sec.entries.iter_mut().enumerate() {
            e.1 = values[s][o].join("\n").trim_end().to_string();
        }
    }
    ini
}

/// `\[(?P<header>.+)\]` matched at the start (greedy: up to the last `]`).
fn section_header(v: &str) -> Option<&str> {
    let rest = v.strip_prefix('[')?;
    let end = rest.rfind(']')?;
    (end > 0).then(|| &rest[..end])
}

/// `(?P<option>.*?)\s*(?P<vi>[=:])\s*(?P<value>.*)$`: split at the first
/// `=` or `:`; the option may not be empty.
fn split_option(v: &str) -> Option<(&str, &str)> {
    let i = v.find(['=', ':'])?;
    let key = v[..i].trim_end();
    if key.is_empty() {
        return None;
    }
    Some((key, v[i + 1..].trim()))
}

/// One runnable OSSEC test: a `log N pass|fail` key and its section's
/// expectations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    /// Section name.
    pub section: String,
    /// The `log ...` key.
    pub key: String,
    /// Line of the key in the file.
    pub line: usize,
    /// The log line to feed.
    pub log: String,
    /// `false` for keys ending in `fail`: the triple must NOT match.
    pub expect_match: bool,
    /// Expected rule id (`rule =`).
    pub rule: String,
    /// Expected level (`alert =`).
    pub alert: String,
    /// Expected decoder name (`decoder =`), possibly empty.
    pub decoder: String,
    /// Palisade extension: expected decoded fields (`srcip = 203.0.113.5`,
    /// `user =` for "none decoded"), as `(key, value)` in file order; see
    /// [`FIELD_KEYS`].
    pub fields: Vec<(String, String)>,
}

/// Section keys that name a decoded field whose value a case checks
/// (Palisade extension; OSSEC's runner ignores them). `user` is `dstuser`,
/// as in a decoder's `order`.
pub const FIELD_KEYS: &[&str] = &[
    "srcip",
    "dstip",
    "srcport",
    "dstport",
    "protocol",
    "action",
    "srcuser",
    "dstuser",
    "user",
    "id",
    "url",
    "status",
    "extra_data",
];

impl Section {
    /// The section's field expectations (keys of [`FIELD_KEYS`]), in file
    /// order.
    pub fn field_expectations(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .filter(|(k, _, _)| FIELD_KEYS.contains(&k.as_str()))
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The cases of one file, as `runtests.py` enumerates them: every key that
/// starts with `log `; a section without `rule`, `alert` or `decoder` is
/// skipped (the Python runner would crash on it).
pub fn test_cases(ini: &Ini) -> Vec<TestCase> {
    let mut out = Vec::new();
    for s in &ini.sections {
        let (Some(rule), Some(alert), Some(decoder)) =
            (s.get("rule"), s.get("alert"), s.get("decoder"))
        else {
            continue;
        };
        for (k, v, line) in &s.entries {
            if !k.starts_with("log ") {
                continue;
            }
            out.push(TestCase {
                section: s.name.clone(),
                key: k.clone(),
                line: *line,
                log: v.clone(),
                expect_match: !k.ends_with("fail"),
                rule: rule.to_string(),
                alert: alert.to_string(),
                decoder: decoder.to_string(),
                fields: s.field_expectations(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configparser_semantics() {
        let text = "; comment\n[a]\nLog 1 pass = x = y: z\nrule = 1\n  continued\n\n[b]\nk: v\n[a]\nrule = 2\nalert=3\n# c\ndecoder =\nbogus line\n";
        let ini = parse(text);
        assert_eq!(ini.sections.len(), 2);
        let a = &ini.sections[0];
        assert_eq!(a.get("log 1 pass"), Some("x = y: z"));
        // Overwritten in place by the merged duplicate section.
        assert_eq!(a.get("rule"), Some("2"));
        assert_eq!(a.entries[1].0, "rule");
        assert_eq!(a.get("decoder"), Some(""));
        assert_eq!(ini.sections[1].get("k"), Some("v"));
        assert_eq!(ini.errors.len(), 1);
        assert_eq!(ini.errors[0].line, 14);
        let cases = test_cases(&ini);
        assert_eq!(cases.len(), 1);
        assert!(cases[0].expect_match);
        assert!(cases[0].fields.is_empty());
    }

    #[test]
    fn field_keys_become_expectations() {
        let text = "[s]\nlog 1 pass = x\nrule = 1\nalert = 2\ndecoder = d\nsrcip = 2001:db8::1\nuser =\nsequence = yes\n";
        let cases = test_cases(&parse(text));
        assert_eq!(
            cases[0].fields,
            vec![
                ("srcip".to_string(), "2001:db8::1".to_string()),
                ("user".to_string(), String::new())
            ]
        );
    }

    #[test]
    fn wazuh_joins_repeated_keys() {
        let text = "[s]\nlog 1 pass = a\nrule = 1\nlog 1 pass = b\nlog 2 pass = c\n";
        let joined = parse_with(text, RepeatedKeys::Join);
        assert_eq!(joined.sections[0].get("log 1 pass"), Some("a\nb"));
        assert_eq!(joined.sections[0].get("log 2 pass"), Some("c"));
        assert_eq!(parse(text).sections[0].get("log 1 pass"), Some("b"));
    }

    #[test]
    fn continuation_lines_join() {
        let ini = parse("[s]\nk = a\n  b\n\n  c\n\n");
        assert_eq!(ini.sections[0].get("k"), Some("a\nb\n\nc"));
    }
}
