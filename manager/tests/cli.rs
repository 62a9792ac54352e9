//! `palisade-manager` as an operator runs it: init, agent add/remove,
//! check-config, and the exit codes of bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn manager(args: &[&str]) -> Output {
    manager_with_env(args, &[])
}

/// Runs the manager outside any SSH session, with `env` set.
fn manager_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade-manager"))
        .args(args)
        .env_remove("PALISADE_MANAGER_CONFIG")
        .env_remove("SSH_CONNECTION")
        .env_remove("SSH_CLIENT")
        .envs(env.iter().copied())
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

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_makes_a_complete_setup_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = manager(&[
        "init",
        "--dir",
        d,
        "--listen",
        "127.0.0.1:1514",
        "--san",
        "manager.example.net",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    for f in [
        "manager.toml",
        "palisade.db",
        "pki/ca.pem",
        "pki/manager.pem",
        "operator/ctl.toml",
        "operator/operator.pem",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    for key in ["pki/ca.key", "pki/manager.key", "operator/operator.key"] {
        assert_eq!(mode(&dir.path().join(key)), 0o600, "{key}");
    }
    let server = std::fs::read_to_string(dir.path().join("pki/manager.pem")).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(server.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer| c.to_vec())
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let sans = format!(
        "{:?}",
        cert.subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
    );
    for name in ["localhost", "manager.example.net", "127.0.0.1"] {
        assert!(
            sans.contains(name) || sans.contains("[127, 0, 0, 1]"),
            "{name} not in {sans}"
        );
    }

    let again = manager(&["init", "--dir", d]);
    assert_eq!(again.status.code(), Some(64), "{}", text(&again));
    assert!(text(&again).contains("--force"), "{}", text(&again));
    let forced = manager(&["init", "--dir", d, "--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
}

#[test]
fn init_white_lists_the_operators_ssh_session_and_says_so() {
    for (env, expected) in [
        (
            ("SSH_CONNECTION", "198.51.100.23 52114 192.0.2.10 22"),
            "198.51.100.23",
        ),
        (("SSH_CLIENT", "2001:db8::23 52114 22"), "2001:db8::23"),
        (
            ("SSH_CONNECTION", "::ffff:198.51.100.24 52114 192.0.2.10 22"),
            "198.51.100.24",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let out = manager_with_env(&["init", "--dir", d], &[env]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!(
                "white list:    {expected} added, the address of your SSH session"
            )),
            "{}",
            text(&out)
        );
        let toml = std::fs::read_to_string(dir.path().join("manager.toml")).unwrap();
        assert!(
            toml.contains(&format!(
                "white_list = [\"127.0.0.1\", \"::1\", \"{expected}\"]"
            )),
            "{toml}"
        );
        let config = dir.path().join("manager.toml");
        let check = manager(&["check-config", "-c", config.to_str().unwrap()]);
        assert!(check.status.success(), "{}", text(&check));
    }

    // Outside SSH, or with garbage in the variable, nothing is added.
    for env in [("TERM", "dumb"), ("SSH_CONNECTION", "$(reboot) 1 2 3")] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let out = manager_with_env(&["init", "--dir", d], &[env]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(!text(&out).contains("SSH session"), "{}", text(&out));
        let toml = std::fs::read_to_string(dir.path().join("manager.toml")).unwrap();
        assert!(
            toml.contains("white_list = [\"127.0.0.1\", \"::1\"]\n"),
            "{toml}"
        );
    }
}

#[test]
fn agents_are_added_with_sequential_ids_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(
        manager(&["init", "--dir", d, "--listen", "127.0.0.1:1514"])
            .status
            .success()
    );
    let config = dir.path().join("manager.toml");
    let c = config.to_str().unwrap();
    let out_dir = dir.path().join("bundle-web01");
    let add = manager(&[
        "agent",
        "add",
        "web01",
        "--ip",
        "10.0.0.5",
        "--out",
        out_dir.to_str().unwrap(),
        "-c",
        c,
    ]);
    assert!(add.status.success(), "{}", text(&add));
    assert!(
        text(&add).contains("ID: 001, Name: web01"),
        "{}",
        text(&add)
    );
    assert_eq!(mode(&out_dir.join("agent.key")), 0o600);
    let agent_toml = std::fs::read_to_string(out_dir.join("agent.toml")).unwrap();
    assert!(
        agent_toml.contains("address = \"127.0.0.1:1514\""),
        "{agent_toml}"
    );

    let second = manager(&["agent", "add", "web02", "-c", c]);
    assert!(
        text(&second).contains("ID: 002, Name: web02"),
        "{}",
        text(&second)
    );
    assert!(dir.path().join("agents/002-web02/agent.toml").exists());

    let dup = manager(&["agent", "add", "web01", "-c", c]);
    assert_eq!(dup.status.code(), Some(1), "{}", text(&dup));
    assert!(text(&dup).contains("already exists"), "{}", text(&dup));

    let bad_name = manager(&["agent", "add", "-rf", "-c", c]);
    assert_eq!(bad_name.status.code(), Some(64), "{}", text(&bad_name));
    let bad_ip = manager(&["agent", "add", "web03", "--ip", "10.0.0.999", "-c", c]);
    assert_eq!(bad_ip.status.code(), Some(64), "{}", text(&bad_ip));

    let removed = manager(&["agent", "remove", "001", "-c", c]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(text(&removed).contains("revoked"), "{}", text(&removed));
    let unknown = manager(&["agent", "remove", "042", "-c", c]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains("no agent with id 042"),
        "{}",
        text(&unknown)
    );
}

#[test]
fn a_garbage_config_names_the_field_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manager.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"0.0.0.0:1514\"\nlisen = \"typo\"\n",
    )
    .unwrap();
    for cmd in ["run", "check-config"] {
        let out = manager(&[cmd, "-c", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(64), "{}", text(&out));
        assert!(
            text(&out).contains("unknown field `lisen`"),
            "{}",
            text(&out)
        );
        assert!(text(&out).contains("manager.toml:3: "), "{}", text(&out));
    }
    std::fs::write(
        &path,
        "[server]\nlisten = \"here\"\n[global]\nwhite_list = [\"nope\"]\n",
    )
    .unwrap();
    let out = manager(&["run", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out).contains("server.listen"), "{}", text(&out));
    assert!(
        text(&out).contains("global.white_list[0]"),
        "{}",
        text(&out)
    );
    std::fs::write(&path, "\u{0}\u{1}binary garbage").unwrap();
    let out = manager(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let missing = manager(&[
        "run",
        "-c",
        dir.path().join("absent.toml").to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(64));
    let usage = manager(&["frobnicate"]);
    assert_eq!(usage.status.code(), Some(64));
}

#[test]
fn import_ossec_converts_ossecs_own_server_config_into_a_valid_one() {
    let conf = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/corpus/ossec/etc/ossec-server.conf"
    );
    let out = manager(&["import-ossec", conf]);
    assert!(out.status.success(), "{}", text(&out));
    let toml = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        toml.contains("white_list = [\"127.0.0.1\", \"::1\""),
        "{toml}"
    );
    let full = format!("[server]\nlisten = \"127.0.0.1:1514\"\n{toml}");
    let config =
        palisade_manager::ManagerConfig::parse(&full, Path::new("/etc/palisade/manager.toml"))
            .unwrap();
    let names: Vec<&str> = config.responses.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["host-deny600", "firewall-drop600"]);
    assert!(config.responses.iter().all(|r| r.level == 7));
    let missing = manager(&["import-ossec", "/nonexistent/ossec.conf"]);
    assert_eq!(missing.status.code(), Some(64));
}

#[test]
fn run_tells_systemd_when_it_is_ready_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(
        manager(&["init", "--dir", d, "--listen", "127.0.0.1:0"])
            .status
            .success()
    );
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade-manager"))
        .args([
            "run",
            "-c",
            dir.path().join("manager.toml").to_str().unwrap(),
        ])
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification within 20 s");
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(message.contains("READY=1"), "{message}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let n = socket.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(child.wait().unwrap().success());
}

/// OSSEC's unchanged decoders: `check-config` and the start-up name each
/// steerable one once, with the safer Palisade decoder; Palisade's own
/// ruleset gets no such warning.
#[test]
fn ossecs_steerable_decoders_are_warned_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(
        manager(&["init", "--dir", d, "--listen", "127.0.0.1:0"])
            .status
            .success()
    );
    let config = dir.path().join("manager.toml");
    let out = manager(&["check-config", "-c", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("steered"), "{}", text(&out));

    let etc = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/ossec/etc");
    let toml = std::fs::read_to_string(&config).unwrap().replace(
        "# ossec_etc = \"/var/ossec/etc\"",
        &format!("ossec_etc = \"{etc}\""),
    );
    assert!(toml.contains("\nossec_etc = "), "init's template changed");
    std::fs::write(&config, toml).unwrap();
    let out = manager(&["check-config", "-c", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let warnings = String::from_utf8_lossy(&out.stderr).into_owned();
    let count = |what: &str| warnings.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        count("decoder `ssh-invalid-user` can be steered"),
        1,
        "{warnings}"
    );
    assert!(warnings.contains("Palisade's `sshd-invalid`"), "{warnings}");
    assert_eq!(count("decoder `nginx-errorlog-ip` can be steered"), 1);
    assert_eq!(
        count("palisade-manager: warning: "),
        palisade_engine::steerable::KNOWN.len(),
        "{warnings}"
    );

    // The daemon's start-up: the same warnings, once, in its log.
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade-manager"))
        .args(["run", "-c", config.to_str().unwrap()])
        .env("RUST_LOG", "warn,palisade_manager=info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
    }
    let mut log = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(120)) {
        let started = line.contains("Manager started.");
        log.push(line);
        if started {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join("\n");
    assert!(log.contains("Manager started."), "{log}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("decoder `ssh-invalid-user` can be steered"))
            .count(),
        1,
        "{log}"
    );
}
