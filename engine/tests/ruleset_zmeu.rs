//! The seed ZmEu scan from issue #4 against Palisade's own ruleset: 14
//! requests from one address within 90 s fire 31151 (level 10) on the
//! 14th 4xx and not before, for an IPv4 and an IPv6 client. With OSSEC's
//! rules these lines end as the user-agent rule and are never counted.

// Test and measurement code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use palisade_engine::default_ruleset;
use palisade_engine::engine::{Engine, EngineConfig, Verdict};
use palisade_engine::predecode::predecode;

/// The scan as OSSEC reported it, plus three more setup.php paths to make 14.
const SCAN: [(&str, u32); 14] = [
    ("/phpadmin/scripts/setup.php", 303),
    ("/typo3/phpmyadmin/scripts/setup.php", 311),
    ("/mysqladmin/scripts/setup.php", 305),
    ("/mysql/scripts/setup.php", 300),
    ("/myadmin/scripts/setup.php", 302),
    ("/dbadmin/scripts/setup.php", 302),
    ("/db/scripts/setup.php", 297),
    ("/admin/phpmyadmin/scripts/setup.php", 311),
    ("/admin/pma/scripts/setup.php", 304),
    ("/admin/scripts/setup.php", 300),
    ("/scripts/setup.php", 294),
    ("/phpmyadmin/scripts/setup.php", 303),
    ("/pma/scripts/setup.php", 298),
    ("/web/phpMyAdmin/scripts/setup.php", 309),
];

fn start() -> Timestamp {
    "2024-03-13T10:00:00Z".parse().unwrap()
}

fn line(ip: &str, i: usize, path: &str, size: u32) -> String {
    format!(
        r#"{ip} - - [13/Mar/2024:10:00:{:02} +0000] "GET {path} HTTP/1.1" 404 {size} "-" "ZmEu""#,
        i * 6
    )
}

/// Feeds the scan from `ip`, 6 s apart (78 s in all); returns each line's
/// (rule, level).
fn scan(engine: &mut Engine, ip: &str) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for (i, (path, size)) in SCAN.iter().enumerate() {
        let now = start() + SignedDuration::from_secs(6 * i as i64);
        let mut ev = predecode(
            line(ip, i, path, *size).as_bytes(),
            "/var/log/apache2/access.log",
            "web01",
        );
        engine.ruleset().decoders.decode(&mut ev);
        assert_eq!(ev.fields.srcip.as_deref(), Some(ip));
        let v = engine.judge(&ev, now);
        if let Verdict::Alert(a) = &v
            && a.rule_id == 31151
        {
            // The alert carries the 13 earlier lines, newest first.
            assert_eq!(a.correlated.len(), 13);
            assert!(a.correlated[0].contains(SCAN[12].0));
        }
        out.push(v.rule_and_level().unwrap());
    }
    out
}

fn engine() -> Engine {
    Engine::new(
        Arc::new(default_ruleset::load().unwrap()),
        EngineConfig::default(),
    )
}

#[test]
fn fourteenth_4xx_fires_31151_ipv4_and_ipv6() {
    for ip in ["198.51.100.23", "2001:db8:5ca7::23"] {
        let mut e = engine();
        let got = scan(&mut e, ip);
        for (i, r) in got.iter().enumerate().take(13) {
            assert_eq!(*r, (31184, 6), "{ip}: line {} fired early", i + 1);
        }
        assert_eq!(got[13], (31151, 10), "{ip}");
    }
}

#[test]
fn two_scanners_do_not_add_up() {
    // Interleaved: 7 from each address is not 14 from one.
    let mut e = engine();
    let mut rules = Vec::new();
    for (i, (path, size)) in SCAN.iter().enumerate() {
        let ip = if i % 2 == 0 { "192.0.2.1" } else { "192.0.2.2" };
        let mut ev = predecode(line(ip, i, path, *size).as_bytes(), "/var/log/a", "m");
        e.ruleset().decoders.decode(&mut ev);
        rules.push(e.judge(&ev, start() + SignedDuration::from_secs(i as i64)));
    }
    assert!(rules.iter().all(|v| v.rule_and_level() == Some((31184, 6))));
}

#[test]
fn the_same_scan_spread_over_more_than_90_seconds_does_not_fire() {
    let mut e = engine();
    for (i, (path, size)) in SCAN.iter().enumerate() {
        let mut ev = predecode(line("192.0.2.9", i, path, *size).as_bytes(), "/a", "m");
        e.ruleset().decoders.decode(&mut ev);
        let v = e.judge(&ev, start() + SignedDuration::from_secs(8 * i as i64));
        assert_eq!(v.rule_and_level(), Some((31184, 6)), "line {}", i + 1);
    }
}
