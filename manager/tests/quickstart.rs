//! The README's first command works and leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn quickstart_catches_the_scan_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_palisade-manager"))
        .arg("quickstart")
        .env("TMPDIR", tmp.path())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("agent 001 connected"), "{stdout}");
    assert!(stdout.contains("Rule: 31151 (level 10)"), "{stdout}");
    assert!(stdout.contains("Src IP: 203.0.113.7"), "{stdout}");
    assert!(stdout.contains("Removed "), "{stdout}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
