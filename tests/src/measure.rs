//! What the benchmarks (and a few tests) read about processes and feed
//! them: CPU seconds and memory from `/proc`, a generated access log, the
//! manager configuration the throughput runs use. One place, so every
//! figure in the notes is taken the same way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use palisade_manager::store::Store;

/// The programs environment variable `variable` names for a same-run
/// baseline (`label:PATH,...`: copies of earlier release builds), each
/// checked to exist; none when it is unset.
pub fn named_programs(variable: &str) -> Vec<(String, PathBuf)> {
    let named = std::env::var(variable).unwrap_or_default();
    named
        .split(',')
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (label, path) = entry
                .split_once(':')
                .unwrap_or_else(|| panic!("{variable} entries are label:PATH, not {entry:?}"));
            assert!(
                Path::new(path).is_file(),
                "no program at {path} ({variable})"
            );
            (label.to_string(), PathBuf::from(path))
        })
        .collect()
}

/// CPU seconds (user and system) a process has used so far ("self" for
/// this one): a figure the other work on a shared machine does not move.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here;
    // the kernel counts in USER_HZ, 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// A `/proc/PID/status` figure in KiB (`"VmRSS:"`, `"VmHWM:"`); 0 once
/// the process is gone.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `../shared`, beside the repository.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// Writes `lines` lines of the deterministic access log
/// (`shared/tools/gen_access_log.py`, seed 42) to `out`.
pub fn generate_access_log(lines: usize, out: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("python3")
        .arg(shared().join("tools/gen_access_log.py"))
        .args(["-n", &lines.to_string(), "--seed", "42", "-o"])
        .arg(out)
        .status()?;
    anyhow::ensure!(status.success(), "gen_access_log.py failed: {status}");
    Ok(())
}

/// The manager configuration the throughput runs use: event-time
/// correlation, `logall` as asked, and no per-agent rate limit (`init`
/// writes one; the benches measure what the pipeline can take, not the
/// limit).
///
/// # Panics
///
/// When `init`'s text has no `logall` or `agent_events_per_second` key.
pub fn throughput_manager_toml(text: String, logall: bool) -> String {
    let text = text.replace("time_source = \"arrival\"", "time_source = \"event\"");
    // `init` writes the keys; whatever their values, this run sets them.
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("logall") {
            out.push_str(&format!("logall = {logall}\n"));
        } else if line.starts_with("agent_events_per_second") {
            out.push_str("agent_events_per_second = 0\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        out.contains(&format!("logall = {logall}")),
        "no logall key in manager.toml"
    );
    assert!(
        out.contains("agent_events_per_second = 0"),
        "no [flow] agent_events_per_second key in manager.toml"
    );
    out
}

/// The `agent.toml` of the throughput runs: the defaults `agent add`
/// writes, one followed Apache log, responses decided and reported but
/// not carried out on this host (dry runs).
pub fn throughput_agent_toml(manager: SocketAddr, followed: &Path) -> String {
    format!(
        "[manager]\naddress = \"{manager}\"\nserver_name = \"localhost\"\nca_cert = \"ca.pem\"\ncert = \"agent.pem\"\nkey = \"agent.key\"\n\n\
         [spool]\ndatabase = \"agent.db\"\n\n[active_response]\ndry_run = true\n\n\
         [[localfile]]\nlocation = {:?}\nlog_format = \"apache\"\n",
        followed.display().to_string()
    )
}

/// A file first seen is read from its end: appends a line to `followed`
/// until agent `id` has stored one, to show the agent follows it (at most
/// a minute). Returns the agent's stored sequence then.
pub async fn warm_up(store: &Store, id: &str, followed: &Path) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        crate::append_lines(followed, ["warm up".to_string()])?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stored = store.agent(id).await?.map_or(0, |a| a.last_sequence);
        if stored > 0 {
            return Ok(stored);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "agent {id} never delivered a line"
        );
    }
}
