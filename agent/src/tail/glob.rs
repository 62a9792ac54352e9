//! Expanding `location` patterns such as `/var/log/nginx/*.log`, as
//! OSSEC's glob(3) does: `*`, `?` and `[...]` (with ranges and `!`/`^`
//! negation) in any path component, never matching a leading `.` unless
//! the pattern has one. Patterns are expanded again on every poll, so
//! files that appear later are picked up.

use std::path::{Component, Path, PathBuf};

/// Whether `pattern` has wildcards.
pub fn is_pattern(pattern: &Path) -> bool {
    pattern.to_string_lossy().contains(['*', '?', '['])
}

/// The existing paths that match `pattern`, sorted.
pub fn expand(pattern: &Path) -> Vec<PathBuf> {
    let mut current = vec![PathBuf::new()];
    for component in pattern.components() {
        let mut next = Vec::new();
        match component {
            Component::Normal(part) if is_pattern(Path::new(part)) => {
                let pat = part.to_string_lossy();
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
                        .filter(|name| matches(&pat, &name.to_string_lossy()))
                        .collect();
                    names.sort();
                    next.extend(names.into_iter().map(|n| dir.join(n)));
                }
            }
            other => {
                next = current
                    .iter()
                    .map(|dir| dir.join(other.as_os_str()))
                    .collect();
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

/// Whether `name` matches the one-component `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    // Iterative with one backtrack point for the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((hit, len)) = class(&p[pi..], n[ni]) {
                        if hit {
                            pi += len;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class at the start of `p`; returns whether it
/// matched and the class's length, or `None` when `[` opens no class.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                hit = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                hit = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("*.log", "access.log"));
        assert!(!matches("*.log", "access.log.1"));
        assert!(matches("access.log*", "access.log.1"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("[ab]*", "beta"));
        assert!(!matches("[!ab]*", "beta"));
        assert!(matches("x[0-9].log", "x7.log"));
        assert!(!matches("x[0-9].log", "xa.log"));
        assert!(!matches("*", ".hidden"));
        assert!(matches(".*", ".hidden"));
        assert!(matches("*a*b*", "xxaxxbxx"));
        assert!(matches("[]]", "]"));
        assert!(matches("[", "["));
    }

    #[test]
    fn expands_directories_and_files() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "b", "c"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("a/x.log"), "").unwrap();
        std::fs::write(dir.path().join("b/y.log"), "").unwrap();
        std::fs::write(dir.path().join("b/y.txt"), "").unwrap();
        let found = expand(&dir.path().join("*/*.log"));
        assert_eq!(
            found,
            vec![dir.path().join("a/x.log"), dir.path().join("b/y.log")]
        );
        assert!(expand(&dir.path().join("nope/*.log")).is_empty());
        assert!(is_pattern(Path::new("/var/log/*.log")));
        assert!(!is_pattern(Path::new("/var/log/syslog")));
    }
}

/// Whether the whole `path` matches `pattern`, component by component.
pub fn matches_path(pattern: &Path, path: &Path) -> bool {
    let p: Vec<_> = pattern.components().collect();
    let n: Vec<_> = path.components().collect();
    p.len() == n.len()
        && p.iter().zip(&n).all(|(p, n)| match (p, n) {
            (Component::Normal(p), Component::Normal(n)) => {
                matches(&p.to_string_lossy(), &n.to_string_lossy())
            }
            (p, n) => p == n,
        })
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn whole_paths() {
        assert!(matches_path(
            Path::new("/var/log/*/*.log"),
            Path::new("/var/log/nginx/access.log")
        ));
        assert!(!matches_path(
            Path::new("/var/log/*.log"),
            Path::new("/var/log/nginx/access.log")
        ));
    }
}
