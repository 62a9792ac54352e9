//! `palisade-agent` refuses a bad configuration with the field named and
//! exit code 64.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade-agent"))
        .args(args)
        .env_remove("PALISADE_AGENT_CONFIG")
        .output()
        .expect("runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_garbage_config_names_the_field_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    let p = path.to_str().unwrap();
    std::fs::write(
        &path,
        "[manager]\naddress = \"m:1514\"\n[[localfile]]\nlocation = \"/x\"\nformat = \"apache\"\n",
    )
    .unwrap();
    for cmd in ["run", "check-config"] {
        let out = agent(&[cmd, "-c", p]);
        assert_eq!(out.status.code(), Some(64), "{}", text(&out));
        assert!(
            text(&out).contains("unknown field `format`"),
            "{}",
            text(&out)
        );
    }
    std::fs::write(
        &path,
        "[manager]\naddress = \"nowhere\"\n[agent]\nheartbeat_interval = \"often\"\n",
    )
    .unwrap();
    let out = agent(&["run", "-c", p]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out).contains("manager.address"), "{}", text(&out));
    assert!(
        text(&out).contains("agent.heartbeat_interval"),
        "{}",
        text(&out)
    );
    std::fs::write(&path, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    assert_eq!(agent(&["run", "-c", p]).status.code(), Some(64));
    std::fs::write(&path, "[manager]\naddress = \"m.example.net:1514\"\n").unwrap();
    let missing = agent(&["check-config", "-c", p]);
    assert_eq!(missing.status.code(), Some(64));
    assert!(
        text(&missing).contains("manager.ca_cert"),
        "{}",
        text(&missing)
    );
    for f in ["ca.pem", "agent.pem", "agent.key"] {
        std::fs::write(dir.path().join(f), "").unwrap();
    }
    let ok = agent(&["check-config", "-c", p]);
    assert!(ok.status.success(), "{}", text(&ok));
}
