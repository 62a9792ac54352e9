//! Where the store lives, from `[storage] database`: an SQLite file (a
//! path or `sqlite://path`, the default) or a PostgreSQL URL
//! (`postgres://` or `postgresql://`). Any other `scheme://` is refused
//! rather than taken for a file name.

use std::fmt;
use std::path::{Path, PathBuf};

/// An SQLite file or a PostgreSQL database.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The SQLite file.
    Sqlite(PathBuf),
    /// The PostgreSQL connection URL (it may hold a password: shown
    /// without it).
    Postgres(String),
}

impl StoreLocation {
    /// Reads `[storage] database`; a relative SQLite path is taken from
    /// `base` (the configuration file's directory).
    pub fn parse(value: &str, base: &Path) -> Result<Self, String> {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(Self::Postgres(value.to_string()));
        }
        let path = value.strip_prefix("sqlite://").unwrap_or(value);
        if let Some((scheme, _)) = path.split_once("://") {
            return Err(format!(
                "unknown database scheme {scheme:?}: give an SQLite file path (or sqlite://PATH) or a postgres:// URL"
            ));
        }
        if path.is_empty() {
            return Err("empty: give an SQLite file path or a postgres:// URL".into());
        }
        Ok(Self::Sqlite(base.join(path)))
    }

    /// The SQLite file, when the store is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(path) => Some(path),
            Self::Postgres(_) => None,
        }
    }
}

impl From<&Path> for StoreLocation {
    fn from(path: &Path) -> Self {
        Self::Sqlite(path.to_path_buf())
    }
}

impl From<&PathBuf> for StoreLocation {
    fn from(path: &PathBuf) -> Self {
        Self::Sqlite(path.clone())
    }
}

impl From<PathBuf> for StoreLocation {
    fn from(path: PathBuf) -> Self {
        Self::Sqlite(path)
    }
}

impl From<&StoreLocation> for StoreLocation {
    fn from(location: &StoreLocation) -> Self {
        location.clone()
    }
}

/// The path, or the URL with its password replaced by `***`.
impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

/// `scheme://user:secret@host/db` as `scheme://user:***@host/db`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_urls_and_unknown_schemes() {
        let base = Path::new("/etc/palisade");
        assert_eq!(
            StoreLocation::parse("palisade.db", base).unwrap(),
            StoreLocation::Sqlite("/etc/palisade/palisade.db".into())
        );
        assert_eq!(
            StoreLocation::parse("sqlite:///var/lib/p.db", base).unwrap(),
            StoreLocation::Sqlite("/var/lib/p.db".into())
        );
        let url = "postgresql://palisade:s3cret@db.example:5432/palisade";
        let pg = StoreLocation::parse(url, base).unwrap();
        assert_eq!(pg, StoreLocation::Postgres(url.into()));
        assert_eq!(
            pg.to_string(),
            "postgresql://palisade:***@db.example:5432/palisade"
        );
        assert!(!format!("{pg:?}").contains("s3cret"));
        assert!(
            StoreLocation::parse("mysql://x/y", base)
                .unwrap_err()
                .contains("mysql")
        );
        assert!(StoreLocation::parse("", base).is_err());
    }
}
