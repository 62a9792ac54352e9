//! The attacker writes our input (issue 14): with Palisade's embedded
//! default ruleset, client-written text (an ssh user name, a banner, an HTTP
//! user name, URL, referer or user agent) never decides which address an
//! alert names. A brute force whose user names name 192.0.2.1 alerts about
//! the real source only, and client text of any length (up to the agent's
//! 64 KiB lines) still decodes the real source: a pattern that gave up on a
//! long line (PCRE2's JIT stack) would let an attacker go unblocked.

// Test code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use jiff::{SignedDuration, Timestamp};
use palisade_engine::default_ruleset;
use palisade_engine::engine::{Alert, Engine, EngineConfig, Ruleset};
use palisade_engine::event::Event;
use palisade_engine::predecode::predecode;

const FORGED: &str = "192.0.2.1";
const REAL: &str = "203.0.113.77";

fn engine() -> Engine {
    Engine::new(
        Arc::new(default_ruleset::load().unwrap()),
        EngineConfig::default(),
    )
}

fn start() -> Timestamp {
    "2024-03-13T10:00:00Z".parse().unwrap()
}

fn decode(line: &str) -> Event {
    static RULESET: OnceLock<Ruleset> = OnceLock::new();
    let rs = RULESET.get_or_init(|| default_ruleset::load().unwrap());
    let mut ev = predecode(line.as_bytes(), "/var/log/auth.log", "web01");
    rs.decoders.decode(&mut ev);
    ev
}

/// User names that each try to move the address sshd logs after them.
fn crafted_user(i: usize) -> String {
    match i % 6 {
        0 => format!("x from {FORGED} port 22 ssh2"),
        1 => format!("from {FORGED} port 22"),
        2 => format!("root' for invalid user \"y\" from {FORGED} port {i} ssh2 [preauth]"),
        3 => format!("a b c from {FORGED}"),
        4 => format!("{FORGED} port 22"),
        _ => format!("Disconnected from {FORGED} port 22"),
    }
}

/// One brute-force attempt from `REAL` in one of the message forms sshd
/// and PAM write for a failed login.
fn attempt(i: usize) -> String {
    let user = crafted_user(i);
    let port = 40000 + i;
    let msg = match i % 4 {
        0 => format!("Failed password for invalid user {user} from {REAL} port {port} ssh2"),
        1 => format!("Invalid user {user} from {REAL} port {port}"),
        2 => format!("Failed none for invalid user {user} from {REAL} port {port} ssh2"),
        _ => format!(
            "error: maximum authentication attempts exceeded for invalid user {user} from {REAL} port {port} ssh2 [preauth]"
        ),
    };
    format!("Mar 13 10:00:00 web01 sshd[{}]: {msg}", 2000 + i)
}

#[test]
fn a_brute_force_with_crafted_user_names_alerts_about_the_real_source_only() {
    let mut engine = engine();
    let mut alerts: Vec<Alert> = Vec::new();
    for i in 0..24 {
        let now = start() + SignedDuration::from_secs(5 * i as i64);
        let line = attempt(i);
        let mut ev = predecode(line.as_bytes(), "/var/log/auth.log", "web01");
        if let Some(a) = engine.process(&mut ev, now) {
            alerts.push(a);
        }
        // Every attempt decodes the real source, whatever the user name says.
        assert_eq!(ev.fields.srcip.as_deref(), Some(REAL), "{line}");
        assert_eq!(
            ev.fields.srcport.as_deref(),
            Some((40000 + i).to_string().as_str()),
            "{line}"
        );
        assert_eq!(ev.fields.dstuser.as_deref(), Some(crafted_user(i).as_str()));
    }
    // The brute-force rules fired, and every alert names the real source.
    let bursts: Vec<&Alert> = alerts.iter().filter(|a| a.level >= 10).collect();
    assert!(
        bursts.iter().any(|a| a.rule_id == 5712),
        "no brute-force alert: {:?}",
        alerts.iter().map(|a| a.rule_id).collect::<Vec<_>>()
    );
    // Every attempt alerts but the ones 5712's ignore="60" swallows.
    assert!(alerts.len() >= 20, "{} alerts", alerts.len());
    for a in &alerts {
        assert_eq!(a.srcip.as_deref(), Some(REAL), "rule {}", a.rule_id);
        assert!(!a.full_log.is_empty());
    }
    assert!(alerts.iter().all(|a| a.srcip.as_deref() != Some(FORGED)));
}

#[test]
fn pam_failures_with_crafted_user_names_count_for_the_real_source() {
    let mut engine = engine();
    let mut burst = None;
    for i in 0..8 {
        let now = start() + SignedDuration::from_secs(10 * i as i64);
        let line = format!(
            "Mar 13 10:00:00 web01 sshd[2300]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={REAL}  user=x rhost={FORGED}  user=2 more authentication failures; session opened for user root"
        );
        let mut ev = predecode(line.as_bytes(), "/var/log/auth.log", "web01");
        let alert = engine.process(&mut ev, now).unwrap();
        assert_eq!(alert.srcip.as_deref(), Some(REAL));
        assert!(
            alert.rule_id == 5503 || alert.rule_id == 5551,
            "one failure taken for rule {}",
            alert.rule_id
        );
        if alert.rule_id == 5551 {
            burst = Some(i);
        }
    }
    assert_eq!(burst, Some(7), "5551 fires on the eighth failure");
}

/// 64 KiB of client text, the agent's longest line.
fn long(unit: &str) -> String {
    unit.repeat(65536 / unit.len())
}

#[test]
fn client_text_of_any_length_still_decodes_the_real_source() {
    let h = "Mar 13 10:00:00 web01 sshd[2000]:";
    for filler in [
        long("a"),
        long(" "),
        long(&format!(" from {FORGED} port 22 ssh2")),
        long("\\\""),
    ] {
        for line in [
            format!("{h} Failed password for invalid user {filler} from {REAL} port 4242 ssh2"),
            format!(
                "{h} Failed publickey for invalid user {filler} from {REAL} port 4242 ssh2: RSA SHA256:x"
            ),
            format!("{h} Invalid user {filler} from {REAL} port 4242"),
            format!("{h} Connection closed by invalid user {filler} {REAL} port 4242 [preauth]"),
            format!("{h} Bad protocol version identification '{filler}' from {REAL} port 4242"),
            format!("{h} Received disconnect from {REAL} port 4242:11: {filler} [preauth]"),
            format!(
                "{h} pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={REAL}  user={filler}"
            ),
        ] {
            let ev = decode(&line);
            assert_eq!(ev.fields.srcip.as_deref(), Some(REAL), "{}", &line[..120]);
        }
    }
    // Web logs, escaped as the servers escape client text.
    for filler in [long("a"), long("a b "), long("\\x22"), long("\\\" 200 ")] {
        let access = [
            format!(
                r#"{REAL} - {filler} [13/Mar/2024:10:00:00 +0000] "GET /x HTTP/1.1" 404 1 "-" "-""#
            ),
            format!(
                r#"{REAL} - - [13/Mar/2024:10:00:00 +0000] "GET /{filler} HTTP/1.1" 404 1 "-" "-""#
            ),
            format!(
                r#"{REAL} - - [13/Mar/2024:10:00:00 +0000] "GET /x HTTP/1.1" 404 1 "{filler}" "{filler}""#
            ),
        ];
        for line in access {
            let ev = decode(&line);
            assert_eq!(ev.fields.srcip.as_deref(), Some(REAL), "{}", &line[..120]);
            assert_eq!(ev.fields.id.as_deref(), Some("404"), "{}", &line[..120]);
        }
        let nginx = format!(
            r#"2024/03/13 10:00:00 [error] 1#1: *1 user "{filler}": password mismatch, client: {REAL}, server: s, request: "GET /x HTTP/1.1", host: "h", referrer: "{filler}""#
        );
        assert_eq!(decode(&nginx).fields.srcip.as_deref(), Some(REAL));
        let apache = format!(
            r#"[Wed Mar 13 10:00:00.000001 2024] [auth_basic:error] [pid 1] [client {REAL}:4242] AH01617: user {filler}: authentication failure for "/": Password Mismatch"#
        );
        assert_eq!(decode(&apache).fields.srcip.as_deref(), Some(REAL));
    }
}

/// Lines no rule of ours alerts on (so the INI format, which judges a rule,
/// cannot check them) still take the address from its fixed place.
#[test]
fn sshd_lines_without_a_rule_keep_the_address_in_place() {
    let h = "Mar 13 10:00:00 web01 sshd[2000]:";
    for (line, ip, port) in [
        (
            format!("{h} Connection from {REAL} port 4242 on 10.0.0.5 port 22 rdomain \"\""),
            Some(REAL),
            Some("4242"),
        ),
        (
            format!("{h} banner exchange: Connection from {REAL} port 4242: invalid format"),
            Some(REAL),
            Some("4242"),
        ),
        (
            format!(
                "{h} Address {REAL} maps to {FORGED}.example, but this does not map back to the address - POSSIBLE BREAK-IN ATTEMPT!"
            ),
            Some(REAL),
            None,
        ),
        (
            format!(
                "{h} Postponed keyboard-interactive for invalid user x from {FORGED} port 22 ssh2 from {REAL} port 4242 ssh2 [preauth]"
            ),
            Some(REAL),
            Some("4242"),
        ),
        // Not a form we know: no address rather than a guessed one.
        (
            format!("{h} Something new from {FORGED} port 22 for user x"),
            None,
            None,
        ),
    ] {
        let ev = decode(&line);
        assert_eq!(ev.decoder_name.as_deref(), Some("sshd"), "{line}");
        assert_eq!(ev.fields.srcip.as_deref(), ip, "{line}");
        assert_eq!(ev.fields.srcport.as_deref(), port, "{line}");
    }
    let ev = decode(&format!(
        "{h} Connection from {REAL} port 4242 on 10.0.0.5 port 22"
    ));
    assert_eq!(ev.fields.dstip.as_deref(), Some("10.0.0.5"));
    assert_eq!(ev.fields.dstport.as_deref(), Some("22"));
}
