//! A real SMTP server on loopback for the mail tests: Debian's aiosmtpd
//! (`python3-aiosmtpd`, installed by `scripts/install-test-deps`), storing
//! what it receives in a Maildir that the tests read back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs the server.
const AIOSMTPD: &str = "/usr/bin/aiosmtpd";

/// A running (or stopped) aiosmtpd; killed on drop.
#[derive(Debug)]
pub struct SmtpServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The Maildir it delivers to.
    pub maildir: PathBuf,
    log: PathBuf,
    /// `--tlscert`/`--smtpscert` and their keys, when it speaks TLS.
    tls_args: Vec<String>,
    child: Option<Child>,
}

/// How the server protects connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTls {
    /// Plain SMTP, then STARTTLS, which it requires before accepting mail.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Smtps,
}

/// A received mail.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// Headers in order, unfolded.
    pub headers: Vec<(String, String)>,
    /// The body, with `\n` line ends.
    pub body: String,
}

impl ReceivedMail {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn parse(raw: &str) -> Self {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                // A folded line continues the previous header (RFC 5322 2.2.3).
                if let Some((_, v)) = headers.last_mut() {
                    v.push_str(line);
                }
            } else if let Some((n, v)) = line.split_once(':') {
                headers.push((n.to_string(), v.trim_start().to_string()));
            }
        }
        Self {
            headers,
            body: body.to_string(),
        }
    }
}

impl SmtpServer {
    /// Starts aiosmtpd on a free loopback port, delivering to `dir/Maildir`.
    /// Fails (it does not skip) when aiosmtpd is missing.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with_tls(dir, None)
    }

    /// As [`Self::start`], speaking TLS with the certificate and key (PEM
    /// files) given.
    pub fn start_tls(dir: &Path, tls: ServerTls, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        Self::start_with_tls(dir, Some((tls, cert, key)))
    }

    fn start_with_tls(dir: &Path, tls: Option<(ServerTls, &Path, &Path)>) -> anyhow::Result<Self> {
        let tls_args = match tls {
            None => Vec::new(),
            Some((mode, cert, key)) => {
                let (c, k) = match mode {
                    ServerTls::StartTls => ("--tlscert", "--tlskey"),
                    ServerTls::Smtps => ("--smtpscert", "--smtpskey"),
                };
                vec![
                    c.to_string(),
                    cert.display().to_string(),
                    k.to_string(),
                    key.display().to_string(),
                ]
            }
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let maildir = dir.join("Maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub))?;
        }
        let mut server = Self {
            port,
            maildir,
            log: dir.join("aiosmtpd.log"),
            tls_args,
            child: None,
        };
        server.restart()?;
        Ok(server)
    }

    /// Starts the server again on the same port (after [`Self::stop`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if !Path::new(AIOSMTPD).exists() {
            anyhow::bail!(
                "{AIOSMTPD} is not installed (scripts/install-test-deps installs python3-aiosmtpd)"
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(AIOSMTPD)
            .args(["-n", "-l", &format!("127.0.0.1:{}", self.port)])
            .args(&self.tls_args)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!(
                    "aiosmtpd exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!("aiosmtpd did not listen on port {} in 10 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kills the server; the port refuses connections until a restart.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Every mail received so far, in the order they were delivered.
    pub fn mails(&self) -> anyhow::Result<Vec<ReceivedMail>> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            for entry in std::fs::read_dir(self.maildir.join(sub))? {
                let entry = entry?;
                files.push((entry.metadata()?.modified()?, entry.path()));
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| Ok(ReceivedMail::parse(&std::fs::read_to_string(p)?)))
            .collect()
    }

    /// Waits up to `limit` until at least `n` mails arrived, and returns them.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> anyhow::Result<Vec<ReceivedMail>> {
        crate::eventually(limit, &format!("{n} mails"), || async {
            let mails = self.mails()?;
            Ok((mails.len() >= n).then_some(mails))
        })
        .await
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
