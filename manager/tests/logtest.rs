//! `logtest` and `ruletest` as an operator runs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn manager(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade-manager"))
        .args(args)
        .env_remove("PALISADE_MANAGER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn corpus() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/corpus/ossec"
    ))
}

const SCAN_404: &str = "198.51.100.23 - - [10/Mar/2024:13:55:36 +0000] \"GET /phpmyadmin/scripts/setup.php HTTP/1.1\" 404 303 \"-\" \"ZmEu\"\n";

#[test]
fn the_builtin_ruleset_passes_its_own_tests() {
    let out = manager(&["ruletest"], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
}

#[test]
fn a_wrong_expectation_fails_with_both_triples() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("wrong.ini");
    std::fs::write(
        &ini,
        format!(
            "[scanner]\nlog 1 pass = {SCAN_404}rule = 31101\nalert = 5\ndecoder = web-accesslog\n"
        ),
    )
    .unwrap();
    let out = manager(&["ruletest", ini.to_str().unwrap()], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("31101"), "{stdout}");
    assert_eq!(stdout.lines().last().unwrap(), "0 passed, 1 failed");
}

#[test]
fn ossec_corpus_passes_against_both_ossec_sets() {
    let tests: Vec<String> = std::fs::read_dir(corpus().join("contrib/ossec-testing/tests"))
        .expect("../shared/corpus is needed for the OSSEC compatibility tests")
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".ini"))
        .collect();
    for etc in ["etc", "legacy-3.3.0/etc"] {
        let etc = corpus().join(etc);
        let mut args = vec!["ruletest", "--ossec-etc", etc.to_str().unwrap()];
        args.extend(tests.iter().map(String::as_str));
        let out = manager(&args, "");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {stdout}", etc.display());
        assert_eq!(stdout.lines().last().unwrap(), "236 passed, 0 failed");
    }
}

#[test]
fn logtest_shows_three_phases_and_sets_the_exit_code() {
    let out = manager(&["logtest", "-q", "-U", "31101:5:web-accesslog"], SCAN_404);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("**Phase 1: Completed pre-decoding."),
        "{stdout}"
    );
    assert!(
        stdout.contains("       decoder: 'web-accesslog'"),
        "{stdout}"
    );
    assert!(stdout.contains("       srcip: '198.51.100.23'"), "{stdout}");
    assert!(
        stdout.contains("**Phase 3: Completed filtering (rules)."),
        "{stdout}"
    );
    let rule = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Rule id: '"))
        .unwrap()
        .trim_end_matches('\'')
        .to_string();
    let level = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Level: '"))
        .unwrap()
        .trim_end_matches('\'')
        .to_string();
    // Exactly what it printed: exit 0.
    let ok = manager(
        &[
            "logtest",
            "-q",
            "-U",
            &format!("{rule}:{level}:web-accesslog"),
        ],
        SCAN_404,
    );
    assert_eq!(ok.status.code(), Some(0));
    let wrong_decoder = manager(
        &["logtest", "-q", "-U", &format!("{rule}:{level}:sshd")],
        SCAN_404,
    );
    assert_eq!(wrong_decoder.status.code(), Some(3));
    let wrong_rule = manager(
        &["logtest", "-q", "-U", &format!("1:{level}:web-accesslog")],
        SCAN_404,
    );
    assert_eq!(wrong_rule.status.code(), Some(2));
    let wrong_level = manager(
        &["logtest", "-q", "-U", &format!("{rule}:15:web-accesslog")],
        SCAN_404,
    );
    assert_eq!(wrong_level.status.code(), Some(1));
}

#[test]
fn logtest_a_prints_31151_on_the_fourteenth_404_only() {
    let lines: String = (0..14)
        .map(|i| format!("198.51.100.23 - - [10/Mar/2024:13:55:{i:02} +0000] \"GET /probe{i}.php HTTP/1.1\" 404 303 \"-\" \"ZmEu\"\n"))
        .collect();
    let thirteen: String = lines.lines().take(13).map(|l| format!("{l}\n")).collect();
    let out = manager(
        &["logtest", "-q", "-a", "--now", "2026-11-25T10:00:00"],
        &thirteen,
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Rule: 31151"));
    let out = manager(
        &["logtest", "-q", "-a", "--now", "2026-11-25T10:00:00"],
        &lines,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Rule: 31151 (level 10) -> "), "{stdout}");
    assert!(stdout.contains("Src IP: 198.51.100.23"), "{stdout}");
    assert!(stdout.starts_with("** Alert "), "{stdout}");
}

#[test]
fn a_broken_rule_file_is_reported_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("local.xml"),
        "<group name=\"local,\">\n  <rule id=\"100001\" level=\"5\">\n    <if_sid>31100</if_sid>\n    <regex>(unclosed</regex>\n  </rule>\n  <rule id=\"100002\" level=\"99\">\n    <match>x</match>\n  </rule>\n</group>\n",
    )
    .unwrap();
    let out = manager(
        &["logtest", "--rules-dir", dir.path().to_str().unwrap()],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    // Both problems at once: the rule with the bad pattern, and the second rule.
    assert!(
        stderr.contains("local.xml:2: invalid <regex> pattern '(unclosed'"),
        "{stderr}"
    );
    assert!(stderr.contains("local.xml:6: rule 100002"), "{stderr}");
}

#[test]
fn logtest_v_shows_the_rules_tried() {
    let out = manager(&["logtest", "-q", "-v"], SCAN_404);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("**Rule debugging:"), "{stdout}");
    assert!(stdout.contains("    Trying rule: 31100 - "), "{stdout}");
    assert!(stdout.contains("       *Rule 31100 matched."), "{stdout}");
    assert!(stdout.contains("       *Trying child rules."), "{stdout}");
    let quiet = manager(&["logtest", "-q"], SCAN_404);
    assert!(!String::from_utf8_lossy(&quiet.stdout).contains("Rule debugging"));
}

/// Two scanners: B 7 times, A 14 times, B 7 more (OSSEC's barrier case,
/// see engine/tests/ruleset_barrier.rs): B's 14th 404 fires 31151 with
/// `barrier = "per-source"` and not with OSSEC's global barrier.
fn two_scanners() -> Vec<String> {
    let mut n = 0;
    let mut line = |ip: &str| {
        n += 1;
        format!(
            "{ip} - - [10/Mar/2024:13:55:00 +0000] \"GET /probe{n}.php HTTP/1.1\" 404 303 \"-\" \"ZmEu\""
        )
    };
    let mut lines: Vec<String> = (0..7).map(|_| line("198.51.100.2")).collect();
    lines.extend((0..14).map(|_| line("198.51.100.1")));
    lines.extend((0..7).map(|_| line("198.51.100.2")));
    lines
}

#[test]
fn logtest_and_ruletest_with_c_judge_with_the_managers_ruleset_settings() {
    let dir = tempfile::tempdir().unwrap();
    let out = manager(&["init", "--dir", &dir.path().display().to_string()], "");
    assert!(out.status.success(), "{out:?}");
    let config = dir.path().join("manager.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("barrier = \"per-source\""), "{text}");
    let config = config.display().to_string();

    let input: String = two_scanners().iter().map(|l| format!("{l}\n")).collect();
    let scans = |extra: &[&str]| {
        let mut args = vec!["logtest", "-q", "-a", "--now", "2026-11-25T10:00:00"];
        args.extend(extra);
        let stdout = String::from_utf8(manager(&args, &input).stdout).unwrap();
        let mut fired: Vec<String> = stdout
            .split("\n\n")
            .filter(|e| e.contains("Rule: 31151 "))
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("Src IP: ")))
            .map(str::to_string)
            .collect();
        fired.sort();
        fired
    };
    // Without -c, OSSEC's barrier: A's firing hid B's first seven.
    assert_eq!(scans(&[]), ["198.51.100.1"]);
    // With the manager's configuration, as the manager judges: both.
    assert_eq!(scans(&["-c", &config]), ["198.51.100.1", "198.51.100.2"]);

    // ruletest: the same sequence, B's 14th expected to fire.
    let mut ini = String::from("[B fires on its 14th 404]\nsequence = yes\n");
    for (i, l) in two_scanners().iter().enumerate() {
        ini.push_str(&format!("log {} pass = {l}\n", i + 1));
    }
    ini.push_str("rule = 31151\nalert = 10\ndecoder = web-accesslog\n");
    let file = dir.path().join("barrier.ini");
    std::fs::write(&file, ini).unwrap();
    let file = file.display().to_string();
    let out = manager(&["ruletest", &file], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = manager(&["ruletest", "-c", &config, &file], "");
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("1 passed, 0 failed\n"),
        "{out:?}"
    );
    assert!(out.status.success());
}

/// A small Wazuh `ruleset/` directory in a temporary place: Wazuh's sshd
/// decoders and rules (read from `shared/corpus/wazuh`, never kept in the
/// repo) and a local file whose duplicate rule id Wazuh only warns about.
fn small_wazuh_ruleset() -> PathBuf {
    let wazuh = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/corpus/wazuh/ruleset"
    ));
    let dir = std::env::temp_dir().join(format!("palisade-wazuh-cli-{}", std::process::id()));
    for sub in ["decoders", "rules"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for (sub, file) in [
        ("decoders", "0310-ssh_decoders.xml"),
        ("rules", "0010-rules_config.xml"),
        ("rules", "0095-sshd_rules.xml"),
    ] {
        std::fs::copy(wazuh.join(sub).join(file), dir.join(sub).join(file))
            .unwrap_or_else(|e| panic!("{sub}/{file} of the Wazuh corpus: {e}"));
    }
    std::fs::write(
        dir.join("rules/9999-local.xml"),
        "<group name=\"local,\">\n<rule id=\"5760\" level=\"3\"><if_sid>5700</if_sid><match>x</match><description>dup</description></rule>\n</group>\n",
    )
    .unwrap();
    dir
}

#[test]
fn logtest_json_prints_wazuhs_alert_shape_and_warnings() {
    let dir = small_wazuh_ruleset();
    let line = "Dec  7 10:00:01 web01 sshd[123]: Failed password for root from 203.0.113.7 port 4242 ssh2\n";
    let out = manager(
        &[
            "logtest",
            "--wazuh-ruleset",
            dir.to_str().unwrap(),
            "-q",
            "-a",
            "--json",
            "--now",
            "2026-12-07T10:00:00Z",
        ],
        line,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim_end()).expect(&stdout);
    assert_eq!(v["rule"]["id"], "5760");
    assert_eq!(v["rule"]["mitre"]["technique"][0], "Password Guessing");
    assert_eq!(v["rule"]["firedtimes"], 1);
    assert_eq!(v["decoder"]["parent"], "sshd");
    assert_eq!(v["data"]["srcip"], "203.0.113.7");
    assert_eq!(v["agent"]["id"], "000");
    // The load warnings, counted, on stderr; not fatal.
    assert!(
        stderr.contains("9999-local.xml:2: rule id 5760 is duplicated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the ruleset loaded with 1 warning\n"),
        "{stderr}"
    );
    // --json belongs to -a.
    let out = manager(&["logtest", "--json"], "");
    assert!(!out.status.success());
}
