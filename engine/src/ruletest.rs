//! `palisade-manager ruletest FILE.ini...`: OSSEC's ruleset unit tests
//! (`contrib/ossec-testing/tests/*.ini`) run against a [`Ruleset`], judged
//! the way OSSEC's runner judges them, so that a ruleset (ours, OSSEC's, or
//! a user's local rules) can be checked in CI without OSSEC.
//!
//! Semantics (`shared/corpus/README.md`):
//! - every `log N pass|fail` key is one case; its line is pre-decoded with
//!   location `stdin`, decoded and judged, and the triple (decoder name,
//!   rule id, level) is compared with the section's `decoder`, `rule` and
//!   `alert` as `ossec-logtest -U` compares them (case-insensitive text); a
//!   `pass` key needs all three equal, a `fail` key anything else;
//! - each case gets a fresh engine, because OSSEC's runner starts one
//!   `ossec-logtest` per case, so no state crosses cases;
//! - the clock is the caller's (`now`, in the configuration's zone for
//!   `<time>`/`<weekday>`): the corpus assumes business hours, see
//!   [`business_hours`]; so is the rest of the engine's configuration
//!   (the manager passes its `[ruleset]` barrier).
//!
//! Wazuh's runner (a ruleset read in the Wazuh dialect): a key repeated
//! in a section is one case whose lines are fed, in order, to one engine
//! (Wazuh's `MultiOrderedDict` joins them into one logtest session); the
//! last line's triple is judged.
//!
//! Palisade extension, for correlation rules that OSSEC's format cannot
//! test: a section with `sequence = yes` is ONE case. Its `log` keys are
//! fed in file order to one engine (state kept), `interval` seconds apart
//! (default 1, first line at `now`), and only the last line's triple is
//! judged against the last key's `pass`/`fail`. OSSEC's runner ignores the
//! unknown keys, but would run each line on its own, so such files are for
//! Palisade only (`ruleset/README.md`).
//!
//! Palisade extension, for decoders that must take an address from the
//! right place: field keys in a section (`srcip = 203.0.113.5`, `user =`,
//! see [`ini::FIELD_KEYS`]) join the expected triple. A `pass` key then
//! needs the triple AND every named field equal (an empty value: the field
//! was not decoded); a `fail` key, anything else. OSSEC's runner ignores
//! these keys (it checks the triple only).

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::engine::{Engine, EngineConfig, Ruleset, Verdict};
use crate::event::{Event, FieldName};
use crate::ini::{self, RepeatedKeys, Section};
use crate::logtest::{LOCATION, RuleOutcome, UnitTest};
use crate::predecode::predecode_in;

/// The host name logtest gives lines whose header names none.
pub const MANAGER_HOST: &str = "localhost";

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases that gave the expected result.
    pub passed: usize,
    /// Cases that did not, plus files that could not be read.
    pub failed: usize,
}

impl Summary {
    fn add(&mut self, other: Summary) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Wednesday 2024-03-13, 10:00 in `zone`: the default `ruletest` clock
/// (OSSEC's corpus assumes business hours on a weekday).
pub fn business_hours(zone: &TimeZone) -> Timestamp {
    let dt = jiff::civil::date(2024, 3, 13).at(10, 0, 0, 0);
    match zone.to_ambiguous_timestamp(dt).compatible() {
        Ok(t) => t,
        // 10:00 exists in every zone on that day; keep a sane answer anyway.
        Err(_) => Timestamp::from_second(1_710_324_000).unwrap_or(Timestamp::UNIX_EPOCH),
    }
}

/// Runs test files from disk; prints every failure and a final
/// `N passed, M failed` line to `out`. An unreadable file counts as one
/// failure and the run goes on.
pub fn run_files(
    ruleset: &Arc<Ruleset>,
    files: &[PathBuf],
    now: Timestamp,
    config: &EngineConfig,
    out: &mut dyn Write,
) -> io::Result<Summary> {
    let mut total = Summary::default();
    for f in files {
        match std::fs::read(f) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let name = f.display().to_string();
                total.add(run_one(ruleset, &name, &text, now, config, out)?);
            }
            Err(e) => {
                writeln!(out, "FAIL {}: cannot read: {e}", f.display())?;
                total.failed += 1;
            }
        }
    }
    summary_line(total, out)?;
    Ok(total)
}

/// Runs test files given as `(name, content)` (the embedded default tests);
/// prints like [`run_files`].
pub fn run_sources(
    ruleset: &Arc<Ruleset>,
    files: &[(&str, &str)],
    now: Timestamp,
    config: &EngineConfig,
    out: &mut dyn Write,
) -> io::Result<Summary> {
    let mut total = Summary::default();
    for (name, text) in files {
        total.add(run_one(ruleset, name, text, now, config, out)?);
    }
    summary_line(total, out)?;
    Ok(total)
}

fn summary_line(s: Summary, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{} passed, {} failed", s.passed, s.failed)
}

/// What one case produced.
struct Actual {
    decoder: Option<String>,
    verdict: Verdict,
    event: Event,
}

impl Actual {
    fn triple(&self) -> String {
        let (rule, level) = match self.verdict.rule_and_level() {
            Some((r, l)) => (r.to_string(), l.to_string()),
            None => ("none".into(), "none".into()),
        };
        format!(
            "rule {rule}, level {level}, decoder {}",
            self.decoder.as_deref().unwrap_or("none")
        )
    }
}

fn truthy(v: Option<&str>) -> bool {
    v.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "yes" | "true" | "1" | "on"))
}

fn run_one(
    ruleset: &Arc<Ruleset>,
    name: &str,
    text: &str,
    now: Timestamp,
    config: &EngineConfig,
    out: &mut dyn Write,
) -> io::Result<Summary> {
    let wazuh = ruleset.dialect.is_wazuh();
    let repeated = if wazuh {
        RepeatedKeys::Join
    } else {
        RepeatedKeys::Overwrite
    };
    let parsed = ini::parse_with(text, repeated);
    for e in &parsed.errors {
        writeln!(
            out,
            "warning: {name}:{e} (ignored, as configparser would keep going)"
        )?;
    }
    let mut s = Summary::default();
    let sequences: Vec<&Section> = parsed
        .sections
        .iter()
        .filter(|s| truthy(s.get("sequence")))
        .collect();
    let singles = ini::Ini {
        sections: parsed
            .sections
            .iter()
            .filter(|s| !truthy(s.get("sequence")))
            .cloned()
            .collect(),
        errors: Vec::new(),
    };
    for case in ini::test_cases(&singles) {
        let mut engine = Engine::new(Arc::clone(ruleset), config.clone());
        let actual = if wazuh {
            feed_session(&mut engine, &case.log, now)
        } else {
            feed(&mut engine, &case.log, now)
        };
        let ut = UnitTest {
            rule: case.rule.clone(),
            alert: case.alert.clone(),
            decoder: case.decoder.clone(),
        };
        let ok = judge(&ut, &case.fields, &actual) == case.expect_match;
        if ok {
            s.passed += 1;
        } else {
            s.failed += 1;
            report(
                out,
                name,
                case.line,
                &case.section,
                &case.key,
                &case.log,
                &ut,
                &case.fields,
                case.expect_match,
                &actual,
            )?;
        }
    }
    for sec in sequences {
        let (Some(rule), Some(alert), Some(decoder)) =
            (sec.get("rule"), sec.get("alert"), sec.get("decoder"))
        else {
            writeln!(
                out,
                "FAIL {name}:{} [{}]: a sequence needs rule, alert and decoder",
                sec.line, sec.name
            )?;
            s.failed += 1;
            continue;
        };
        let interval = match sec.get("interval").map(str::parse::<i64>) {
            None => 1,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                writeln!(
                    out,
                    "FAIL {name}:{} [{}]: interval must be whole seconds",
                    sec.line, sec.name
                )?;
                s.failed += 1;
                continue;
            }
        };
        let logs: Vec<&(String, String, usize)> = sec
            .entries
            .iter()
            .filter(|(k, _, _)| k.starts_with("log "))
            .collect();
        let Some(last) = logs.last() else { continue };
        let mut engine = Engine::new(Arc::clone(ruleset), config.clone());
        let mut t = now;
        let mut actual = None;
        for (_, line, _) in &logs {
            actual = Some(feed(&mut engine, line, t));
            t += SignedDuration::from_secs(interval);
        }
        let Some(actual) = actual else { continue };
        let ut = UnitTest {
            rule: rule.to_string(),
            alert: alert.to_string(),
            decoder: decoder.to_string(),
        };
        let expect_match = !last.0.ends_with("fail");
        let fields = sec.field_expectations();
        if judge(&ut, &fields, &actual) == expect_match {
            s.passed += 1;
        } else {
            s.failed += 1;
            let key = format!("{} (line {} of the sequence)", last.0, logs.len());
            report(
                out,
                name,
                last.2,
                &sec.name,
                &key,
                &last.1,
                &ut,
                &fields,
                expect_match,
                &actual,
            )?;
        }
    }
    Ok(s)
}

/// Wazuh's runner: a multi-line value is one logtest session, every line
/// judged in turn with its state kept; the verdict is the last line's.
fn feed_session(engine: &mut Engine, lines: &str, now: Timestamp) -> Actual {
    let mut last = None;
    for line in lines.split('\n') {
        last = Some(feed(engine, line, now));
    }
    last.unwrap_or_else(|| feed(engine, "", now))
}

fn feed(engine: &mut Engine, line: &str, now: Timestamp) -> Actual {
    let dialect = engine.ruleset().dialect;
    let mut event = predecode_in(line.as_bytes(), LOCATION, MANAGER_HOST, dialect);
    engine.ruleset().decoders.decode(&mut event);
    let verdict = engine.judge(&event, now);
    Actual {
        decoder: event.decoder_name.clone(),
        verdict,
        event,
    }
}

/// The value `event` decoded for a field key (`user` is `dstuser`).
fn decoded<'e>(event: &'e Event, key: &str) -> Option<&'e str> {
    event.fields.get(&FieldName::parse(key))
}

/// `ossec-logtest -U` exit code 0, and every expected field as decoded
/// (an empty expectation: not decoded, or decoded empty).
fn judge(ut: &UnitTest, fields: &[(String, String)], a: &Actual) -> bool {
    let fields_ok = fields
        .iter()
        .all(|(k, v)| decoded(&a.event, k).unwrap_or_default() == v);
    fields_ok && triple_matches(ut, a)
}

fn triple_matches(ut: &UnitTest, a: &Actual) -> bool {
    let outcome = a.verdict.rule_and_level().map(|(id, level)| RuleOutcome {
        id,
        level,
        description: String::new(),
        info: Vec::new(),
        alert: level > 0,
    });
    ut.exit_code(&a.event, outcome.as_ref()) == 0
}

#[allow(clippy::too_many_arguments)]
fn report(
    out: &mut dyn Write,
    file: &str,
    line: usize,
    section: &str,
    key: &str,
    log: &str,
    ut: &UnitTest,
    fields: &[(String, String)],
    expect_match: bool,
    actual: &Actual,
) -> io::Result<()> {
    let not = if expect_match { "" } else { "NOT " };
    writeln!(out, "FAIL {file}:{line} [{section}] {key}")?;
    writeln!(out, "    log:      {log}")?;
    writeln!(
        out,
        "    expected: {not}rule {}, level {}, decoder {}",
        ut.rule,
        ut.alert,
        if ut.decoder.is_empty() {
            "(empty)"
        } else {
            &ut.decoder
        }
    )?;
    writeln!(out, "    actual:   {}", actual.triple())?;
    for (k, v) in fields {
        writeln!(
            out,
            "    field {k}: expected {v:?}, decoded {:?}",
            decoded(&actual.event, k).unwrap_or_default()
        )?;
    }
    Ok(())
}
