//! The README's first command works, as root (a real null route in a
//! private network namespace) and as an ordinary user (a dry run), and
//! leaves nothing behind: no files, no namespaces, no routes, no processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn palisade_routes() -> String {
    let out = Command::new("ip")
        .args(["route", "show", "table", "all", "proto", "173"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Named network namespaces that could be the quickstart's (other tests
/// running at the same time make namespaces of their own).
fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains("palisade") || l.contains("quickstart"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

fn run_quickstart(as_nobody: bool) -> String {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (routes, netns) = (palisade_routes(), namespaces());
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_palisade-quickstart"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_palisade-quickstart"))
    };
    let out = cmd
        .args(["--yes", "--block-for", "2s"])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("agent 001 connected"), "{stdout}");
    assert!(stdout.contains("Palisade Notification."), "{stdout}");
    assert!(stdout.contains("Rule: 31151 fired (level 10)"), "{stdout}");
    assert!(stdout.contains("Src IP: 203.0.113.7"), "{stdout}");
    assert!(
        stdout.contains("Active response route-null2 sent to agent 001 for 203.0.113.7"),
        "{stdout}"
    );
    assert!(stdout.contains("Block lifted at its timeout"), "{stdout}");
    assert!(stdout.contains("Where to look next:"), "{stdout}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(palisade_routes(), routes, "routes changed on the host");
    assert_eq!(namespaces(), netns, "namespaces changed on the host");
    stdout
}

#[test]
#[cfg_attr(not(palisade_root), ignore = "needs root: a network namespace")]
fn quickstart_as_root_blocks_in_its_own_namespace() {
    palisade_test_needs::root();
    let stdout = run_quickstart(false);
    assert!(
        stdout.contains("unreachable 203.0.113.7 proto 173"),
        "{stdout}"
    );
    assert!(stdout.contains("(no unreachable routes)"), "{stdout}");
    assert!(stdout.contains("and the network namespace."), "{stdout}");
}

#[test]
fn quickstart_as_an_ordinary_user_is_a_dry_run() {
    if !nix::unistd::geteuid().is_root() {
        // Already an ordinary user: run it as we are.
        let out = Command::new(env!("CARGO_BIN_EXE_palisade-quickstart"))
            .args(["--yes", "--block-for", "2s"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("would add a null route"));
        return;
    }
    let stdout = run_quickstart(true);
    assert!(
        stdout.contains("would add a null route (dry run"),
        "{stdout}"
    );
    assert!(!stdout.contains("proto 173"), "{stdout}");
}
