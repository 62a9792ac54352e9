//! `active-responses.log` in OSSEC's line format, so that OSSEC's `ar_log`
//! decoder and rules 601..606 (and anyone's scripts that read the file)
//! keep working: `` `date` program action user ip alert_id rule_id ``, e.g.
//! `Sat May  7 03:17:27 CDT 2011 /var/ossec/active-response/bin/firewall-drop.sh add - 172.16.0.1 1304756247.60385 31151`.
//!
//! Custom scripts are logged under their executable path, as OSSEC's own
//! scripts log `$0`. Built-in responses have no script, so they are logged
//! under [`BUILTIN_PROGRAM_DIR`]`/<name>.sh`, a name (not a file) chosen so
//! the decoder's `/\S+/active-response/bin/(\S+)` yields OSSEC's action
//! names (`route-null.sh`, ...).

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::order::Action;

/// The pseudo directory built-in responses are logged under.
pub const BUILTIN_PROGRAM_DIR: &str = "/palisade/active-response/bin";

/// The program name logged for a built-in response.
pub fn builtin_program(name: &str) -> String {
    format!("{BUILTIN_PROGRAM_DIR}/{name}.sh")
}

/// date(1)'s default format in the C locale: `Sat May  7 03:17:27 CDT 2011`.
pub fn date_text(t: &jiff::ZonedDateTime) -> String {
    t.strftime("%a %b %e %H:%M:%S %Z %Y").to_string()
}

/// One line, without the newline. Fields never contain spaces or line
/// breaks: the caller validated them.
pub fn line(
    at: &jiff::ZonedDateTime,
    program: &str,
    action: Action,
    user: &str,
    ip: &str,
    alert_id: &str,
    rule_id: &str,
) -> String {
    format!(
        "{} {program} {} {user} {ip} {alert_id} {rule_id}",
        date_text(at),
        action.as_str()
    )
}

/// The log file.
#[derive(Debug, Clone)]
pub struct ArLog {
    path: PathBuf,
}

impl ArLog {
    /// The log at `path` (created on first write).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// Appends one line in a single write, so concurrent writers never
    /// interleave within a line.
    pub async fn append(&self, line: &str) -> std::io::Result<()> {
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        f.write_all(format!("{line}\n").as_bytes()).await?;
        f.flush().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn lines_match_ossec_and_its_decoder() {
        let at: jiff::ZonedDateTime = "2011-05-07T03:17:27-05:00[America/Chicago]"
            .parse()
            .unwrap();
        let l = line(
            &at,
            &builtin_program("firewall-drop"),
            Action::Add,
            "-",
            "172.16.0.1",
            "1304756247.60385",
            "31151",
        );
        assert_eq!(
            l,
            "Sat May  7 03:17:27 CDT 2011 /palisade/active-response/bin/firewall-drop.sh add - 172.16.0.1 1304756247.60385 31151"
        );
        // OSSEC's ar_log decoder (etc/decoder.xml, 3.8), prematch then pcre2.
        let decoder = regex::Regex::new(concat!(
            r"^[A-Za-z0-9@_-]{3} [A-Za-z0-9@_-]+?[ ]+?\d+? \d{2}:\d{2}:\d{2} [A-Za-z0-9@_-]+? \d+? /\S+/active-response",
            r"/bin/(\S+) (\S+) - (\S+) (\d+?\.\d+?) (\d+)",
        ))
        .unwrap();
        let c = decoder.captures(&l).unwrap();
        assert_eq!(&c[1], "firewall-drop.sh");
        assert_eq!(&c[2], "add");
        assert_eq!(&c[3], "172.16.0.1");
        assert_eq!(&c[4], "1304756247.60385");
        assert_eq!(&c[5], "31151");
        let at: jiff::ZonedDateTime = "2024-11-17T13:05:09+00:00[UTC]".parse().unwrap();
        assert!(date_text(&at).starts_with("Sun Nov 17 13:05:09 UTC 2024"));
    }
}
