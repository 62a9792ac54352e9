//! Stateful behaviour with OSSEC's shipped rules, checked against what
//! OSSEC 3.8.0's own `ossec-logtest` did with the same input (spec 2.8,
//! "Reproduced by running ossec-logtest"): frequency fires on the N+2nd
//! event, only final alerts count, barriers, windows, `ignore`, level 0.
//! Each line is pre-decoded, decoded with the real decoders and judged; the
//! clock is a parameter advanced by the test.

use std::path::Path;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use palisade_engine::engine::{Engine, EngineConfig, Ruleset, Verdict};
use palisade_engine::predecode::predecode;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/ossec");

fn ruleset(rel: &str) -> Arc<Ruleset> {
    match Ruleset::load_ossec_etc(&Path::new(CORPUS).join(rel)) {
        Ok(r) => Arc::new(r),
        Err(e) => panic!("{rel}: {e}"),
    }
}

fn start() -> Timestamp {
    match "2024-03-13T10:00:00Z".parse() {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

struct Run {
    engine: Engine,
    now: Timestamp,
}

impl Run {
    fn new(rel: &str) -> Self {
        Self {
            engine: Engine::new(ruleset(rel), EngineConfig::default()),
            now: start(),
        }
    }

    fn advance(&mut self, secs: i64) {
        self.now += SignedDuration::from_secs(secs);
    }

    fn feed(&mut self, line: &str) -> Verdict {
        let mut ev = predecode(line.as_bytes(), "/var/log/access.log", "manager");
        self.engine.ruleset().decoders.decode(&mut ev);
        self.engine.judge(&ev, self.now)
    }

    fn rule(&mut self, line: &str) -> Option<(u32, u32)> {
        self.feed(line).rule_and_level()
    }
}

fn access(ip: &str, url: &str, status: u32) -> String {
    format!(
        r#"{ip} - - [13/Mar/2024:10:00:00 +0000] "GET {url} HTTP/1.1" {status} 512 "-" "Mozilla/5.0""#
    )
}

fn both(test: impl Fn(&str)) {
    test("etc");
    test("legacy-3.3.0/etc");
}

#[test]
fn zmeu_scan_fires_31151_on_the_14th_404_and_again_on_the_28th() {
    both(|rel| {
        let mut r = Run::new(rel);
        for i in 1..=30 {
            r.advance(2);
            let got = r.feed(&access(
                "203.0.113.7",
                &format!("/phpmyadmin{i}/index.php"),
                404,
            ));
            let expect = if i == 14 || i == 28 {
                (31151, 10)
            } else {
                (31101, 5)
            };
            assert_eq!(got.rule_and_level(), Some(expect), "{rel}: request {i}");
            if i == 14 {
                let Verdict::Alert(a) = got else {
                    panic!("{rel}: no alert on 14th")
                };
                // All 13 earlier lines are attached, newest first.
                assert_eq!(a.correlated.len(), 13, "{rel}");
                assert!(a.correlated[0].contains("/phpmyadmin13/"), "{rel}");
                assert!(a.correlated[12].contains("/phpmyadmin1/"), "{rel}");
                assert!(a.group_list().any(|g| g == "web_scan"), "{rel}");
            }
        }
    });
}

#[test]
fn interleaved_attackers_and_the_barrier() {
    both(|rel| {
        let mut r = Run::new(rel);
        let mut fired = Vec::new();
        let seq: Vec<(&str, usize)> = std::iter::repeat_n("198.51.100.2", 7)
            .chain(std::iter::repeat_n("203.0.113.9", 14))
            .chain(std::iter::repeat_n("198.51.100.2", 17))
            .scan((0usize, 0usize), |(b, a), ip| {
                let n = if ip.starts_with("198") {
                    *b += 1;
                    *b
                } else {
                    *a += 1;
                    *a
                };
                Some((ip, n))
            })
            .collect();
        for (ip, n) in seq {
            r.advance(1);
            if r.rule(&access(ip, "/x.php", 404)) == Some((31151, 10)) {
                fired.push((ip, n));
            }
        }
        // A fires on its 14th; B only on its 21st, not its 14th: A's
        // firing put a barrier in front of B's first seven events.
        assert_eq!(
            fired,
            vec![("203.0.113.9", 14), ("198.51.100.2", 21)],
            "{rel}"
        );
    });
}

#[test]
fn a_window_that_expires() {
    both(|rel| {
        let mut r = Run::new(rel);
        // 13 errors, then a pause longer than the 90 s timeframe.
        for _ in 0..13 {
            r.advance(1);
            assert_eq!(
                r.rule(&access("192.0.2.50", "/a.php", 404)),
                Some((31101, 5))
            );
        }
        r.advance(120);
        for i in 1..=14 {
            r.advance(1);
            let expect = if i == 14 { (31151, 10) } else { (31101, 5) };
            assert_eq!(
                r.rule(&access("192.0.2.50", "/a.php", 404)),
                Some(expect),
                "{rel}: {i}"
            );
        }
        // Just inside / outside the window: 13 events at t, t+1..; the 14th
        // at exactly 90 s after the oldest still counts (age <= timeframe).
        let mut r = Run::new(rel);
        for _ in 0..13 {
            assert_eq!(
                r.rule(&access("192.0.2.51", "/b.php", 404)),
                Some((31101, 5))
            );
        }
        r.advance(90);
        assert_eq!(
            r.rule(&access("192.0.2.51", "/b.php", 404)),
            Some((31151, 10)),
            "{rel}"
        );
        let mut r = Run::new(rel);
        for _ in 0..13 {
            assert_eq!(
                r.rule(&access("192.0.2.52", "/b.php", 404)),
                Some((31101, 5))
            );
        }
        r.advance(91);
        assert_eq!(
            r.rule(&access("192.0.2.52", "/b.php", 404)),
            Some((31101, 5)),
            "{rel}"
        );
    });
}

#[test]
fn level_zero_child_swallows_and_does_not_count() {
    both(|rel| {
        let mut r = Run::new(rel);
        for i in 1..=13 {
            r.advance(1);
            assert_eq!(
                r.rule(&access("192.0.2.60", &format!("/p{i}.php"), 404)),
                Some((31101, 5))
            );
        }
        // A 404 for a static file ends as 31102 (level 0): silent, not stored.
        r.advance(1);
        let v = r.feed(&access("192.0.2.60", "/favicon.ico", 404));
        assert_eq!(v, Verdict::Silent { rule_id: 31102 }, "{rel}");
        assert!(v.clone().into_alert().is_none());
        r.advance(1);
        // The next .php 404 is the 14th counted one: fires (line 15 overall).
        assert_eq!(
            r.rule(&access("192.0.2.60", "/p14.php", 404)),
            Some((31151, 10)),
            "{rel}"
        );
    });
}

fn ssh(line_no: u32, body: &str) -> String {
    format!(
        "Mar 13 10:00:{:02} web1 sshd[{}]: {body}",
        line_no % 60,
        1000 + line_no
    )
}

#[test]
fn sshd_frequency_and_ignore() {
    both(|rel| {
        // 17 × failed password from one IP → 5720 on lines 8 and 16.
        let mut r = Run::new(rel);
        let mut fired = Vec::new();
        for i in 1..=17 {
            r.advance(1);
            let got = r.rule(&ssh(
                i,
                "Failed password for root from 1.2.3.4 port 22 ssh2",
            ));
            if got == Some((5720, 10)) {
                fired.push(i);
            } else {
                assert_eq!(got, Some((5716, 5)), "{rel}: line {i}");
            }
        }
        assert_eq!(fired, vec![8, 16], "{rel}");

        // 17 × invalid user → 5712 on line 8; line 16 matches 5712 but its
        // ignore="60" drops the event entirely.
        let mut r = Run::new(rel);
        for i in 1..=17 {
            r.advance(1);
            let v = r.feed(&ssh(i, &format!("Invalid user bob{i} from 5.6.7.8")));
            match i {
                8 => assert_eq!(v.rule_and_level(), Some((5712, 10)), "{rel}"),
                16 => assert_eq!(
                    v,
                    Verdict::Suppressed {
                        rule_id: 5712,
                        level: 10
                    },
                    "{rel}"
                ),
                _ => assert_eq!(v.rule_and_level(), Some((5710, 5)), "{rel}: line {i}"),
            }
        }

        // A noalert parent falls through to the generic syslog rules.
        let mut r = Run::new(rel);
        assert_eq!(
            r.rule("Mar 13 10:00:00 web1 sshd[125]: error: something odd happened"),
            Some((1002, 2)),
            "{rel}"
        );
    });
}

#[test]
fn ignore_window_restarts_after_it_ends() {
    both(|rel| {
        let mut r = Run::new(rel);
        let mut firings = Vec::new();
        let mut suppressed = Vec::new();
        // Enough invalid users to fire 5712 repeatedly; 5 s apart.
        for i in 1..=40 {
            r.advance(5);
            match r.feed(&ssh(i, &format!("Invalid user u{i} from 9.9.9.9"))) {
                Verdict::Alert(a) if a.rule_id == 5712 => firings.push(i),
                Verdict::Suppressed { rule_id: 5712, .. } => suppressed.push(i),
                _ => {}
            }
        }
        // 5712 matches on lines 8, 16, 24, 32, 40 (every 8th: the firing
        // event is not in 5710's list). ignore="60": 16 is 40 s after the
        // firing at 8 -> dropped; 24 is 80 s after 8 -> alerts and restarts
        // the window; 32 is dropped; 40 alerts.
        assert_eq!(firings, vec![8, 24, 40], "{rel}");
        assert_eq!(suppressed, vec![16, 32], "{rel}");
    });
}

#[test]
fn a_flood_of_distinct_sources_keeps_memory_bounded() {
    let rs = ruleset("etc");
    let limits = palisade_engine::correlate::CorrelateLimits {
        memory_size: 2048,
        key_cap: 1024,
        ..Default::default()
    };
    let mut engine = Engine::new(
        rs,
        EngineConfig {
            limits,
            ..EngineConfig::default()
        },
    );
    let mut now = start();
    for i in 0..20_000u32 {
        now += SignedDuration::from_millis(10);
        let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        let mut ev = predecode(
            access(&ip, "/x.php", 404).as_bytes(),
            "/var/log/access.log",
            "m",
        );
        engine.ruleset().decoders.decode(&mut ev);
        let v = engine.judge(&ev, now);
        assert_eq!(v.rule_and_level(), Some((31101, 5)));
    }
    assert!(engine.state().stored_events() <= 2048);
    assert!(engine.state().list_entries() <= 2 * 2048);
}

#[test]
fn long_lines_keep_the_memory_bounded_in_bytes_and_still_correlate() {
    let limits = palisade_engine::correlate::CorrelateLimits {
        memory_bytes: 100 << 10,
        event_bytes: 1 << 10,
        ..Default::default()
    };
    let mut engine = Engine::new(
        ruleset("etc"),
        EngineConfig {
            limits,
            ..EngineConfig::default()
        },
    );
    let mut now = start();
    // Under 7900 bytes: a longer access line is an alert of its own
    // (31115, maxsize).
    let padding = "A".repeat(6_000);
    let mut scans = 0;
    for i in 0..600u32 {
        now += SignedDuration::from_millis(100);
        // Every 14th address scans: 14 long 404s in a row fire 31151.
        let ip = format!("10.0.{}.{}", (i / 14) / 250, (i / 14) % 250);
        // A long user agent, as nginx writes big headers.
        let line = format!(
            r#"{ip} - - [13/Mar/2024:10:00:00 +0000] "GET /{i}.php HTTP/1.1" 404 512 "-" "{padding}""#
        );
        let mut ev = predecode(line.as_bytes(), "/var/log/access.log", "m");
        engine.ruleset().decoders.decode(&mut ev);
        let verdict = engine.judge(&ev, now);
        if let Verdict::Alert(a) = &verdict
            && a.rule_id == 31151
        {
            scans += 1;
            assert!(!a.correlated.is_empty());
            for line in &a.correlated {
                assert!(line.len() <= 1 << 10, "a correlated line of {}", line.len());
                assert!(line.starts_with(&ip), "{line:.60}");
            }
        }
        // One event past the budget at most, however long the lines.
        assert!(
            engine.state().stored_bytes() <= (100 << 10) + 4_000,
            "{} bytes held after {i} events",
            engine.state().stored_bytes()
        );
    }
    assert!(engine.state().stored_events() < 600);
    assert_eq!(scans, 600 / 14, "every address's 14th 404 fires 31151");
}
