//! `host-deny`: tcp-wrappers' `/etc/hosts.deny`, edited the way OSSEC's
//! `host-deny.sh` does (`ALL:<ip>`, `ALL:[<ip>]` for IPv6), but without
//! duplicates and with the delete written atomically (a temporary file in
//! the same directory, then rename) so a crash never leaves a half file.
//! Lines Palisade did not write are kept as they are. Edits are
//! serialised within the agent: an add racing a delete's rewrite would
//! otherwise lose its line.
//!
//! [`HostDeny`] is the `host-deny` [`Backend`] over the file.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::info;

use super::backend::{Backend, BackendError, Reconcile, Reconciled, Target};
use super::order::Action;

/// A hosts.deny failure.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct HostDenyError {
    /// The file.
    pub path: String,
    /// The error.
    pub source: std::io::Error,
}

/// The line OSSEC writes for `ip`.
pub fn deny_line(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ALL:{v4}"),
        IpAddr::V6(v6) => format!("ALL:[{v6}]"),
    }
}

/// Whether `line` denies exactly `ip` to every service (`ALL:ip`, with or
/// without spaces around the colon).
fn denies(line: &str, ip: IpAddr) -> bool {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    compact == deny_line(ip)
}

/// A hosts.deny file.
#[derive(Debug, Clone)]
pub struct HostsDeny {
    path: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl HostsDeny {
    /// The file at `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            lock: Arc::default(),
        }
    }

    fn err(&self, source: std::io::Error) -> HostDenyError {
        HostDenyError {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn read(&self) -> Result<String, HostDenyError> {
        match std::fs::read_to_string(&self.path) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Whether the file denies `ip`.
    pub fn contains(&self, ip: IpAddr) -> Result<bool, HostDenyError> {
        Ok(self.read()?.lines().any(|l| denies(l, ip)))
    }

    /// Appends `ALL:ip` unless the file already has it. Returns whether a
    /// line was added.
    pub fn add(&self, ip: IpAddr) -> Result<bool, HostDenyError> {
        let _editing = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let text = self.read()?;
        if text.lines().any(|l| denies(l, ip)) {
            return Ok(false);
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.err(e))?;
        let sep = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        f.write_all(format!("{sep}{}\n", deny_line(ip)).as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// Rewrites the file without the lines denying `ip`. Returns whether
    /// any was removed; a missing line (or file) is success.
    pub fn delete(&self, ip: IpAddr) -> Result<bool, HostDenyError> {
        let _editing = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let text = self.read()?;
        if !text.lines().any(|l| denies(l, ip)) {
            return Ok(false);
        }
        let mut kept = String::with_capacity(text.len());
        for line in text.lines().filter(|l| !denies(l, ip)) {
            kept.push_str(line);
            kept.push('\n');
        }
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "hosts.deny".into());
        let tmp = dir.join(format!(".{name}.palisade-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            if let Ok(meta) = std::fs::metadata(&self.path) {
                f.set_permissions(meta.permissions())?;
                let owner = nix::unistd::Uid::from_raw(std::os::unix::fs::MetadataExt::uid(&meta));
                let group = nix::unistd::Gid::from_raw(std::os::unix::fs::MetadataExt::gid(&meta));
                // Only root can give a file away; keeping root's own is enough then.
                let _ = nix::unistd::fchown(&f, Some(owner), Some(group));
            }
            f.write_all(kept.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.err(e));
        }
        Ok(true)
    }
}

/// `host-deny`: an `ALL:<ip>` line per blocked address.
#[derive(Debug)]
pub struct HostDeny {
    file: HostsDeny,
}

impl HostDeny {
    /// The response name.
    pub const NAME: &'static str = "host-deny";

    /// Edits the file at `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            file: HostsDeny::new(path),
        }
    }
}

#[async_trait::async_trait]
impl Backend for HostDeny {
    fn program(&self) -> String {
        super::arlog::builtin_program(Self::NAME)
    }

    fn describe(&self, action: Action) -> String {
        match action {
            Action::Add => "add it to hosts.deny".into(),
            Action::Delete => "remove it from hosts.deny".into(),
        }
    }

    async fn add(&self, target: &Target) -> Result<String, BackendError> {
        self.file.add(target.ip)?;
        Ok(format!(
            "{} in {}",
            deny_line(target.ip),
            self.file.path.display()
        ))
    }

    async fn delete(&self, target: &Target) -> Result<String, BackendError> {
        self.file.delete(target.ip)?;
        Ok(format!(
            "{} removed from {}",
            deny_line(target.ip),
            self.file.path.display()
        ))
    }

    /// Adds the lines of live blocks that are missing. Lines the ledger
    /// does not hold are left alone: they cannot be told from the
    /// operator's own.
    async fn reconcile(&self, cx: &Reconcile<'_>) -> Reconciled {
        let mut done = Reconciled::default();
        for b in cx.live() {
            let _guard = cx.lock(b.srcip).await;
            match self.file.add(b.srcip) {
                Ok(true) => {
                    info!(ip = %b.srcip, "hosts.deny line was missing; added again.");
                    done.readded += 1;
                }
                Ok(false) => {}
                Err(e) => done.errors.push(e.into()),
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn lines_follow_ossec() {
        assert_eq!(
            deny_line("198.51.100.7".parse().unwrap()),
            "ALL:198.51.100.7"
        );
        assert_eq!(
            deny_line("2001:db8::7".parse().unwrap()),
            "ALL:[2001:db8::7]"
        );
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(denies("ALL: 198.51.100.7", ip));
        assert!(denies("ALL:198.51.100.7", ip));
        assert!(!denies("ALL:198.51.100.70", ip));
        assert!(!denies("sshd:198.51.100.7", ip));
    }

    #[test]
    fn add_delete_without_duplicates_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.deny");
        std::fs::write(&path, "# comment\nsshd: 203.0.113.5\nALL:198.51.100.70").unwrap();
        let h = HostsDeny::new(&path);
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let b: IpAddr = "2001:db8::7".parse().unwrap();
        assert!(h.add(a).unwrap());
        assert!(!h.add(a).unwrap());
        assert!(h.add(b).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# comment\nsshd: 203.0.113.5\nALL:198.51.100.70\nALL:198.51.100.7\nALL:[2001:db8::7]\n"
        );
        assert!(h.contains(a).unwrap());
        assert!(h.delete(a).unwrap());
        assert!(!h.delete(a).unwrap());
        assert!(!h.contains(a).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# comment\nsshd: 203.0.113.5\nALL:198.51.100.70\nALL:[2001:db8::7]\n"
        );
        // Nothing but the file itself is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_file_is_created_on_add_and_fine_on_delete() {
        let dir = tempfile::tempdir().unwrap();
        let h = HostsDeny::new(&dir.path().join("hosts.deny"));
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(!h.delete(a).unwrap());
        assert!(h.add(a).unwrap());
        assert!(h.contains(a).unwrap());
    }
}
