//! What `deploy/` ships is valid: the example manager configuration loads
//! (the agent's is checked by the agent's own tests), and the systemd units
//! pass `systemd-analyze verify`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn example_configurations_are_valid() {
    let manager = palisade_manager::ManagerConfig::load(&deploy().join("manager.toml")).unwrap();
    assert_eq!(
        manager.responses.len(),
        1,
        "the disabled example is left out"
    );
    assert_eq!(manager.responses[0].name, "route-null600");
    assert_eq!(
        manager.limits,
        palisade_manager::limits::LimitsConfig::default(),
        "[limits] lists the defaults"
    );
}

#[test]
fn systemd_units_verify() {
    palisade_test_needs::tool("systemd-analyze", "systemd");
    // The units name /usr/bin; verify them against the binaries just built.
    let bin = Path::new(env!("CARGO_BIN_EXE_palisade-manager"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for name in ["palisade-manager.service", "palisade-agent.service"] {
        let text = std::fs::read_to_string(deploy().join("systemd").join(name)).unwrap();
        assert!(text.contains("Type=notify"), "{name}");
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            text.replace("/usr/bin/", &format!("{}/", bin.display())),
        )
        .unwrap();
        units.push(path);
    }
    // `cargo test --workspace` builds palisade-agent beside palisade-manager.
    assert!(
        bin.join("palisade-agent").exists(),
        "build palisade-agent first (cargo build -p palisade-agent)"
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
