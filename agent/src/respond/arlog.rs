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
    action: &str,
    user: &str,
    ip: &str,
    alert_id: &str,
    rule_id: &str,
) -> String {
    format!(
        "{} {program} {action} {user} {ip} {alert_id} {rule_id}",
        date_text(at)
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
        let at: jiff::ZonedDateTime = "2011-05-07T03:17:27-05:00[America/Chicago]".parse().unwrap();
        let l = line(
            &at,
            &builtin_program("firewall-drop"),
            "add",
            "-",
            "172.16.0.1",
            "1304756247.60385",
            "31151",
        );
        assert_eq!(
            l,
            "Sat May  7 03:17:27 CDT 2011 /palisade/active-response/bin/firewall-drop.sh add - 172.16.0.1 1304756247.60385 31151"
        );
        // OSSEC's ar_log decoder (decoder.xml), in regex form.
        let prematch = regex_lite(&l);
        assert!(prematch, "{l}");
        let at: jiff::ZonedDateTime = "2024-11-17T13:05:09+00:00[UTC]".parse().unwrap();
        assert!(date_text(&at).starts_with("Sun Nov 17 13:05:09 UTC 2024"));
    }

    /// `^\w{3} \w+ +\d+ \d\d:\d\d:\d\d \w+ \d+ /\S+/active-response/bin/(\S+) (\S+) - (\S+) (\d+\.\d+) (\d+)`
    /// checked by hand (no regex crate in the agent).
    fn regex_lite(l: &str) -> bool {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 11
            && f[0].len() == 3
            && f[2].chars().all(|c| c.is_ascii_digit())
            && f[3].len() == 8
            && f[5].chars().all(|c| c.is_ascii_digit())
            && f[6].starts_with('/')
            && f[6].contains("/active-response/bin/")
            && f[8] == "-"
            && f[9].split_once('.').is_some_and(|(a, b)| {
                a.chars().all(|c| c.is_ascii_digit()) && b.chars().all(|c| c.is_ascii_digit())
            })
            && f[10].chars().all(|c| c.is_ascii_digit())
    }
}
