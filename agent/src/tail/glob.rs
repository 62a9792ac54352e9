//! `location` patterns such as `/var/log/nginx/*.log`, read as OSSEC's
//! glob(3) reads them: `*`, `?` and `[...]` (ranges, `!` negation) in any
//! path component, never across a `/`, never matching a leading `.`
//! unless the pattern has one there. Patterns are expanded again on every
//! poll, so files that appear later are picked up.
//!
//! Each component is matched by the `glob` crate's [`glob::Pattern`]. Its
//! directory walker is not used: it drops every dot file when a leading
//! dot must be literal (so `.*` would find nothing) and cannot take
//! non-UTF-8 names. Three glibc habits the crate does not share are
//! translated before a component is compiled, and only these:
//! - `**` is no recursive wildcard in glob(3), just `*` twice;
//! - `[^...]` negates like `[!...]`;
//! - a `[` that opens no class stands for itself (the crate refuses the
//!   whole pattern).

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use glob::{MatchOptions, Pattern};

/// glob(3) with no flags: case matters, `/` and a leading `.` only match
/// themselves.
const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

/// Whether `pattern` has wildcards.
pub fn is_pattern(pattern: &Path) -> bool {
    pattern.to_string_lossy().contains(['*', '?', '['])
}

/// One path component of a pattern.
#[derive(Debug, Clone)]
enum Part {
    /// Matches itself (also `/`, `.` and `..`).
    Literal(OsString),
    /// Matches the names of a directory's entries.
    Wild(Pattern),
}

/// A compiled `location` pattern.
#[derive(Debug, Clone)]
pub struct LocationPattern {
    parts: Vec<Part>,
}

/// Compiles one component, with glob(3)'s habits (see the module docs).
fn compile(component: &str) -> Pattern {
    let mut text = component.to_owned();
    while text.contains("**") {
        text = text.replace("**", "*");
    }
    let mut text = text.replace("[^", "[!");
    // Each round makes one unclosed `[` literal, so this ends.
    for _ in 0..=text.len() {
        match Pattern::new(&text) {
            Ok(p) => return p,
            Err(e) => {
                let mut chars: Vec<char> = text.chars().collect();
                if chars.get(e.pos) != Some(&'[') {
                    break;
                }
                chars.splice(e.pos..=e.pos, ['[', '[', ']']);
                text = chars.into_iter().collect();
            }
        }
    }
    // Not reached for anything glob(3) accepts; match the text as it is.
    Pattern::new(&Pattern::escape(component)).unwrap_or_default()
}

impl LocationPattern {
    /// Compiles `pattern` (a path, with wildcards or not).
    pub fn new(pattern: &Path) -> Self {
        let parts = pattern
            .components()
            .map(|c| match c {
                Component::Normal(part) if is_pattern(Path::new(part)) => {
                    Part::Wild(compile(&part.to_string_lossy()))
                }
                other => Part::Literal(other.as_os_str().to_owned()),
            })
            .collect();
        Self { parts }
    }

    /// The existing paths that match, sorted within each directory.
    pub fn expand(&self) -> Vec<PathBuf> {
        let mut current = vec![PathBuf::new()];
        for part in &self.parts {
            let mut next = Vec::new();
            match part {
                Part::Wild(pattern) => {
                    for dir in &current {
                        let listing = if dir.as_os_str().is_empty() {
                            Path::new(".")
                        } else {
                            dir.as_path()
                        };
                        let Ok(entries) = std::fs::read_dir(listing) else {
                            continue;
                        };
                        let mut names: Vec<_> = entries
                            .filter_map(|e| e.ok())
                            .map(|e| e.file_name())
                            .filter(|name| pattern.matches_with(&name.to_string_lossy(), OPTIONS))
                            .collect();
                        names.sort();
                        next.extend(names.into_iter().map(|n| dir.join(n)));
                    }
                }
                Part::Literal(name) => {
                    next = current.iter().map(|dir| dir.join(name)).collect();
                }
            }
            current = next;
            if current.is_empty() {
                break;
            }
        }
        current.retain(|p| p.exists());
        current
    }

    /// Whether the whole `path` matches, component by component.
    pub fn matches(&self, path: &Path) -> bool {
        let names: Vec<_> = path.components().collect();
        self.parts.len() == names.len()
            && self
                .parts
                .iter()
                .zip(&names)
                .all(|(part, name)| match part {
                    Part::Literal(literal) => literal.as_os_str() == name.as_os_str(),
                    Part::Wild(pattern) => match name {
                        Component::Normal(n) => pattern.matches_with(&n.to_string_lossy(), OPTIONS),
                        _ => false,
                    },
                })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Whether the file name `name` matches the one-component `pattern`.
    fn matches(pattern: &str, name: &str) -> bool {
        compile(pattern).matches_with(name, OPTIONS)
    }

    #[test]
    fn wildcards() {
        assert!(matches("*.log", "access.log"));
        assert!(!matches("*.log", "access.log.1"));
        assert!(matches("access.log*", "access.log.1"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("[ab]*", "beta"));
        assert!(!matches("[!ab]*", "beta"));
        assert!(!matches("[^ab]*", "beta"));
        assert!(matches("[^ab]*", "gamma"));
        assert!(matches("x[0-9].log", "x7.log"));
        assert!(!matches("x[0-9].log", "xa.log"));
        assert!(!matches("*", ".hidden"));
        assert!(matches(".*", ".hidden"));
        assert!(matches("*a*b*", "xxaxxbxx"));
        assert!(matches("[]]", "]"));
        assert!(matches("[", "["));
        assert!(matches("[*.log", "[x.log"));
        assert!(!matches("[*.log", "x.log"));
        assert!(matches("access-**.log", "access-2025-01-01.log"));
        assert!(matches(
            "access-[0-9][0-9][0-9][0-9]-*.log",
            "access-2025-01.log"
        ));
        // No braces in glob(3) without GLOB_BRACE.
        assert!(matches("{a,b}*.log", "{a,b}x.log"));
        assert!(!matches("{a,b}*.log", "ax.log"));
    }

    #[test]
    fn expands_directories_and_files() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "b", "c", ".d"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("a/x.log"), "").unwrap();
        std::fs::write(dir.path().join("a/.x.log"), "").unwrap();
        std::fs::write(dir.path().join("b/y.log"), "").unwrap();
        std::fs::write(dir.path().join("b/y.txt"), "").unwrap();
        std::fs::write(dir.path().join(".d/z.log"), "").unwrap();
        let found = LocationPattern::new(&dir.path().join("*/*.log")).expand();
        assert_eq!(
            found,
            vec![dir.path().join("a/x.log"), dir.path().join("b/y.log")]
        );
        let hidden = LocationPattern::new(&dir.path().join("a/.*")).expand();
        assert_eq!(hidden, vec![dir.path().join("a/.x.log")]);
        assert!(
            LocationPattern::new(&dir.path().join("nope/*.log"))
                .expand()
                .is_empty()
        );
        assert!(is_pattern(Path::new("/var/log/*.log")));
        assert!(!is_pattern(Path::new("/var/log/syslog")));
    }

    #[test]
    fn whole_paths() {
        let p = LocationPattern::new(Path::new("/var/log/*/*.log"));
        assert!(p.matches(Path::new("/var/log/nginx/access.log")));
        assert!(!p.matches(Path::new("/var/log/nginx/access.log.1")));
        assert!(!p.matches(Path::new("/var/lib/nginx/access.log")));
        let p = LocationPattern::new(Path::new("/var/log/*.log"));
        assert!(!p.matches(Path::new("/var/log/nginx/access.log")));
        assert!(p.matches(Path::new("/var/log/syslog.log")));
    }
}
