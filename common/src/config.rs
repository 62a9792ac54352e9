//! Configuration problems and where they are written. Both daemons read
//! their TOML in two stages: serde refuses unknown keys and wrong types
//! (TOML gives the position), then each section checks meanings and adds a
//! [`Problem`] per mistake, naming its key path (`localfile[1].log_format`).
//! Every problem is reported at once, as `file:line: key: reason`, the line
//! found from the TOML parser's own spans, so an operator fixes the file in
//! one pass.

use std::path::Path;

use toml::de::{DeTable, DeValue};

/// One mistake in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path (`server.listen`, `localfile[1].log_format`,
    /// `global.white_list[2]`, `active_response[0]`); empty when the
    /// problem is the file itself (unreadable, not TOML).
    pub key: String,
    /// What is wrong, for the operator.
    pub message: String,
    /// The 1-based line it is written on, when it is written at all.
    pub line: Option<usize>,
}

/// The problems found while checking a configuration, not yet located.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem with the value at `key`.
    pub fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
            line: None,
        });
    }

    /// Adds the problems another check found.
    pub fn append(&mut self, mut other: Problems) {
        self.0.append(&mut other.0);
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The problems, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// The key of each problem, in the order found.
    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|p| p.key.as_str()).collect()
    }

    /// Every problem located in `text`, the file as read from `file`.
    pub fn into_error(self, file: &Path, text: &str) -> ConfigError {
        let locator = KeyLocator::new(text);
        let problems = self
            .0
            .into_iter()
            .map(|p| Problem {
                line: p.line.or_else(|| locator.line(&p.key)),
                ..p
            })
            .collect();
        ConfigError {
            file: file.display().to_string(),
            problems,
        }
    }

    /// `Ok` when nothing was found, else every problem located.
    pub fn into_result(self, file: &Path, text: &str) -> Result<(), ConfigError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.into_error(file, text))
        }
    }
}

impl std::ops::Index<usize> for Problems {
    type Output = Problem;

    fn index(&self, i: usize) -> &Problem {
        &self.0[i]
    }
}

/// A configuration that cannot be used, with every reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, as given.
    pub file: String,
    /// Every problem, located where possible.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// Reads a configuration file; a file that cannot be read is an error
    /// of its own.
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            problems: vec![Problem {
                key: String::new(),
                message: format!("cannot read: {e}"),
                line: None,
            }],
        })
    }

    /// Reads `text` into `T` (the raw shape of a file), or the one problem
    /// TOML found (bad syntax, unknown key, wrong type) with its line.
    pub fn deserialize<T: serde::de::DeserializeOwned>(
        path: &Path,
        text: &str,
    ) -> Result<T, ConfigError> {
        toml::from_str(text).map_err(|e| Self::from_toml(path, text, &e))
    }

    /// A file TOML cannot read, with the line TOML points at.
    pub fn from_toml(path: &Path, text: &str, error: &toml::de::Error) -> Self {
        let line = error.span().map(|span| line_at(text, span.start));
        ConfigError {
            file: path.display().to_string(),
            problems: vec![Problem {
                key: String::new(),
                message: error.message().trim().replace('\n', " "),
                line,
            }],
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file)?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if !p.key.is_empty() {
                write!(f, ": {}", p.key)?;
            }
            write!(f, ": {}", p.message)?;
        }
        Ok(())
    }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_at(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Finds where key paths are written in a TOML text, from the parser's
/// spans.
pub struct KeyLocator<'a> {
    text: &'a str,
    root: Option<DeValue<'a>>,
}

impl std::fmt::Debug for KeyLocator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLocator").finish_non_exhaustive()
    }
}

/// One step of a key path.
#[derive(Debug, PartialEq, Eq)]
enum Step<'p> {
    Key(&'p str),
    Index(usize),
}

/// `a.b[1]."c d"` as steps; `None` for a path that is not one.
fn steps(path: &str) -> Option<Vec<Step<'_>>> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"')?;
            out.push(Step::Key(&quoted[..end]));
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            out.push(Step::Key(&rest[..end]));
            rest = &rest[end..];
        }
        while let Some(index) = rest.strip_prefix('[') {
            let end = index.find(']')?;
            out.push(Step::Index(index[..end].parse().ok()?));
            rest = &index[end + 1..];
        }
        match rest.strip_prefix('.') {
            Some(r) => rest = r,
            None if rest.is_empty() => {}
            None => return None,
        }
    }
    Some(out)
}

impl<'a> KeyLocator<'a> {
    /// Parses `text` once; a text TOML cannot parse locates nothing.
    pub fn new(text: &'a str) -> Self {
        let root = DeTable::parse(text)
            .ok()
            .map(|doc| DeValue::Table(doc.into_inner()));
        Self { text, root }
    }

    /// The line where `path` is written: a key's own line, an array
    /// element's line, an `[[array]]` table's header. A key that is not
    /// written (a default found wrong, a required key missing) is placed
    /// at the nearest enclosing table or key that is; `None` when nothing
    /// of the path is written.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut current = self.root.as_ref()?;
        let mut at = None;
        for step in steps(path)? {
            let next = match step {
                Step::Key(k) => current
                    .as_table()
                    .and_then(|t| t.get_key_value(k))
                    .map(|(key, value)| (key.span().start, value)),
                Step::Index(i) => current
                    .as_array()
                    .and_then(|a| a.get(i))
                    .map(|value| (value.span().start, value)),
            };
            let Some((start, value)) = next else {
                break;
            };
            at = Some(start);
            current = value.get_ref();
        }
        at.map(|start| line_at(self.text, start))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const TEXT: &str = "[manager]\naddress = \"m:1\"\n\n[[localfile]]\nlocation = \"/a\"\n[[localfile]]\nlocation = \"/b\"\nlog_format = \"x\"\n[active_response]\nwhite_list = [\"a\",\n  \"b\"]\n[active_response.commands]\n\"bad name\" = \"/x\"\n";

    #[test]
    fn key_paths_are_located_from_the_parsers_spans() {
        let l = KeyLocator::new(TEXT);
        assert_eq!(l.line("manager.address"), Some(2));
        assert_eq!(l.line("localfile[1].log_format"), Some(8));
        assert_eq!(l.line("localfile[1]"), Some(6));
        assert_eq!(l.line("localfile[0]"), Some(4));
        assert_eq!(l.line("active_response.white_list[0]"), Some(10));
        assert_eq!(l.line("active_response.white_list[1]"), Some(11));
        assert_eq!(l.line("active_response.commands.\"bad name\""), Some(13));
        // Not written: the nearest enclosing part that is.
        assert_eq!(l.line("localfile[0].log_format"), Some(4));
        assert_eq!(l.line("manager.server_name"), Some(1));
        assert_eq!(l.line("agent.poll_interval"), None);
        assert_eq!(l.line(""), None);
        assert_eq!(KeyLocator::new("not = [toml").line("not"), None);
    }

    #[test]
    fn paths_are_read_into_steps() {
        assert_eq!(
            steps("a.b[2][0].\"c.d\".e").unwrap(),
            [
                Step::Key("a"),
                Step::Key("b"),
                Step::Index(2),
                Step::Index(0),
                Step::Key("c.d"),
                Step::Key("e"),
            ]
        );
        assert!(steps("a[x]").is_none());
        assert!(steps("a[1]b").is_none());
    }

    #[test]
    fn every_problem_is_shown_with_file_line_and_key() {
        let mut p = Problems::new();
        p.push("localfile[1].log_format", "bad");
        p.push("spool", "x");
        p.push("", "whole file");
        let e = p.into_error(Path::new("a.toml"), TEXT);
        assert_eq!(
            e.to_string(),
            "a.toml:8: localfile[1].log_format: bad\na.toml: spool: x\na.toml: whole file"
        );
        assert_eq!(e.problems[0].key, "localfile[1].log_format");
        assert_eq!(e.problems[0].message, "bad");
    }

    #[test]
    fn toml_errors_carry_their_line() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Raw {
            a: u32,
        }
        let e = ConfigError::deserialize::<Raw>(Path::new("m.toml"), "a = 1\nb = 2\n").unwrap_err();
        assert!(
            e.to_string().starts_with("m.toml:2: unknown field `b`"),
            "{e}"
        );
        assert!(Problems::new().into_result(Path::new("m.toml"), "").is_ok());
    }
}
