//! The one error type for loading decoder and rule files: every problem
//! carries its file, line and reason, and loaders collect all of them
//! instead of stopping at the first, so an operator fixes a broken file in
//! one pass.

use std::fmt;
use std::path::PathBuf;

/// One problem found while loading a decoder or rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file, as the caller named it.
    pub file: String,
    /// 1-based line of the element at fault (0 when no line applies).
    pub line: usize,
    /// What is wrong, in words an operator can act on.
    pub reason: String,
}

impl LoadError {
    /// Builds an error for `file` at `line`.
    pub fn new(file: impl Into<String>, line: usize, reason: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.reason)
        }
    }
}

impl std::error::Error for LoadError {}

/// Every problem found in one load, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// Reads `paths` in order as (file name, text) pairs, invalid UTF-8
/// replaced, and hands them to `load`. A file that cannot be read is
/// reported, before the loader's own problems, and fails the load.
pub(crate) fn load_files_with<T>(
    paths: &[PathBuf],
    load: impl FnOnce(&[(String, String)]) -> Result<T, LoadErrors>,
) -> Result<T, LoadErrors> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        match std::fs::read(p) {
            Ok(bytes) => sources.push((name, String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) => errors.push(LoadError::new(name, 0, format!("cannot read: {e}"))),
        }
    }
    match load(&sources) {
        Ok(loaded) if errors.is_empty() => Ok(loaded),
        Ok(_) => Err(LoadErrors(errors)),
        Err(LoadErrors(more)) => {
            errors.extend(more);
            Err(LoadErrors(errors))
        }
    }
}
