//! Test hosts in network namespaces: a web server and an attacker joined
//! by a veth pair, each a namespace this test creates (`ip netns add`) and
//! deletes again on drop, so nothing outside them is ever touched. Also a
//! real nginx writing a real combined access log, and child processes that
//! die with the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Interface names are limited to 15 bytes.
    format!(
        "{prefix}{}{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn ip(args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out)
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with its loopback up.
    pub fn create(prefix: &str) -> anyhow::Result<Self> {
        let ns = Self {
            name: unique(prefix),
        };
        ip(&["netns", "add", &ns.name])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `ip -n NS ARGS` and returns its standard output.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        Ok(String::from_utf8_lossy(&ip(&all)?.stdout).into_owned())
    }

    /// Starts a long-running program inside the namespace, its output to `log`.
    pub fn spawn(&self, program: &Path, args: &[&str], log: &Path) -> anyhow::Result<NsChild> {
        let out = std::fs::File::create(log)?;
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(NsChild {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside would keep it alive: end them first.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins two namespaces with a veth pair and gives each end an IPv4 and an
/// IPv6 address (`/24` and `/64`, duplicate address detection off).
pub fn link(
    a: &Netns,
    a_addrs: (&str, &str),
    b: &Netns,
    b_addrs: (&str, &str),
) -> anyhow::Result<()> {
    let (va, vb) = (unique("va"), unique("vb"));
    ip(&[
        "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns", &b.name,
    ])?;
    for (ns, dev, (v4, v6)) in [(a, &va, a_addrs), (b, &vb, b_addrs)] {
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev])?;
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok(())
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct NsChild {
    child: Option<Child>,
    /// Where its output goes.
    pub log: PathBuf,
}

impl NsChild {
    /// Kills it with SIGKILL and waits.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Asks it to stop (SIGTERM) and waits up to `limit`, then kills it.
    pub fn stop(&mut self, limit: Duration) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = std::time::Instant::now() + limit;
        while let Some(c) = self.child.as_mut() {
            if matches!(c.try_wait(), Ok(Some(_))) || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Its output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real nginx in a namespace, serving `root` and writing the combined
/// access log.
#[derive(Debug)]
pub struct Nginx {
    /// The access log it writes.
    pub access_log: PathBuf,
    /// The process.
    pub process: NsChild,
}

impl Nginx {
    /// Starts nginx on port 80 (IPv4 and IPv6) inside `ns`, with its files
    /// under `dir`; `/` answers 200, anything else 404.
    pub fn start(ns: &Netns, dir: &Path) -> anyhow::Result<Self> {
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        std::fs::write(www.join("index.html"), "hello\n")?;
        let d = dir.display();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log {d}/access.log combined;\n  client_body_temp_path {d}/tmp-body;\n  proxy_temp_path {d}/tmp-proxy;\n  \
                 fastcgi_temp_path {d}/tmp-fcgi;\n  uwsgi_temp_path {d}/tmp-uwsgi;\n  scgi_temp_path {d}/tmp-scgi;\n  \
                 server {{\n    listen 80;\n    listen [::]:80;\n    root {d}/www;\n    location / {{ }}\n  }}\n}}\n"
            ),
        )?;
        let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| {
                anyhow::anyhow!("nginx is not installed (scripts/install-test-deps installs it)")
            })?;
        let process = ns.spawn(
            &nginx,
            &[
                "-c",
                &conf.display().to_string(),
                "-e",
                &format!("{d}/error.log"),
            ],
            &dir.join("nginx.out"),
        )?;
        let access_log = dir.join("access.log");
        // Ready when it answers.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ok = ns
                .command("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "1",
                    "http://127.0.0.1/",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "nginx did not start: {}",
                process.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            access_log,
            process,
        })
    }
}

/// An HTTP GET from inside `ns`; the status code, or `None` when the
/// request failed (no route, refused, timed out after `timeout`).
pub fn http_get(ns: &Netns, url: &str, timeout: Duration) -> Option<u16> {
    let out = ns
        .command("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            &format!("{:.1}", timeout.as_secs_f64()),
            "-A",
            "ZmEu",
            url,
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
