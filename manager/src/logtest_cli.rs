//! `palisade-manager logtest` and `ruletest`: the engine's logtest and
//! ruletest over stdin, stdout and the chosen ruleset.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use palisade_common::exit::Exit;
use palisade_engine::engine::Ruleset;
use palisade_engine::logtest::{Logtest, UnitTest};
use palisade_engine::logtest_rules::{AlertsOnly, EngineRulePhase};
use palisade_engine::timestamp::TimeSource;
use palisade_engine::{default_ruleset, ruletest};

use crate::ruleset::Judging;

/// `logtest`'s switches.
#[derive(Debug, Clone, Default)]
pub struct LogtestOptions {
    /// `-a`.
    pub alerts_only: bool,
    /// `--json` (with `-a`): alerts.json lines.
    pub json: bool,
    /// `-q`.
    pub quiet: bool,
    /// `-v`.
    pub verbose: bool,
    /// `-U rule:level:decoder`.
    pub unit_test: Option<String>,
    /// `--now`.
    pub now: Option<String>,
    /// `--event-time` (else `[ruleset] time_source` of `-c`).
    pub event_time: bool,
}

/// Parses `--now`: an RFC 3339 instant, or a civil time in the local zone.
fn parse_now(text: &str, zone: &TimeZone) -> Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let civil: jiff::civil::DateTime = text
        .parse()
        .map_err(|e| format!("--now {text:?}: not a time like 2026-11-25T10:00:00 ({e})"))?;
    zone.to_ambiguous_timestamp(civil)
        .compatible()
        .map_err(|e| format!("--now {text:?}: {e}"))
}

fn usage(message: &str) -> ExitCode {
    eprintln!("palisade-manager: {message}");
    ExitCode::from(Exit::Usage)
}

/// Reads lines from stdin and prints what ossec-logtest prints, judging
/// as `judging` says (the `[ruleset]` of `-c`, else OSSEC's defaults).
pub fn logtest(ruleset: Ruleset, judging: Judging, options: &LogtestOptions) -> ExitCode {
    let config = judging.engine_config();
    let zone = config.zone.clone();
    let pinned = match options
        .now
        .as_deref()
        .map(|n| parse_now(n, &zone))
        .transpose()
    {
        Ok(p) => p,
        Err(e) => return usage(&e),
    };
    let unit_test = match options
        .unit_test
        .as_deref()
        .map(UnitTest::parse)
        .transpose()
    {
        Ok(u) => u,
        Err(e) => return usage(&format!("-U: {e}")),
    };
    let host = crate::setup::host_name();
    let host = host.split('.').next().unwrap_or("localhost").to_string();
    let ruleset = Arc::new(ruleset);
    let source = if options.event_time {
        TimeSource::Event
    } else {
        judging.time_source
    };
    let clock = || pinned.unwrap_or_else(Timestamp::now);
    let mut phase = EngineRulePhase::new(ruleset.clone(), config, clock()).with_time_source(source);
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !options.quiet {
        eprintln!("palisade-manager logtest: Type one log per line.\n");
    }
    let mut lines = stdin.lock().split(b'\n');
    if options.alerts_only {
        let mut stream = AlertsOnly::new(phase, &host).with_json(options.json);
        for line in lines.by_ref() {
            let Ok(mut line) = line else { break };
            strip_cr(&mut line);
            if stream.line(&line, clock(), &mut out).is_err() {
                return ExitCode::from(Exit::Failure);
            }
        }
        return ExitCode::SUCCESS;
    }
    let decoders = &ruleset.decoders;
    let mut session = Logtest::new(decoders, &host).with_verbose(options.verbose);
    if let Some(ut) = unit_test {
        session = session.with_unit_test(ut);
    }
    let mut session = session.with_rules(&mut phase);
    for line in lines {
        let Ok(mut line) = line else { break };
        strip_cr(&mut line);
        if let Some(result) = session.line(&line)
            && out
                .write_all(result.text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
        {
            return ExitCode::from(Exit::Failure);
        }
    }
    let code = session.exit_code();
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}

fn strip_cr(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
}

/// Runs INI test files (or the built-in ruleset's tests), judging as
/// `judging` says.
pub fn ruletest(
    ruleset: Ruleset,
    judging: Judging,
    now: Option<&str>,
    files: &[PathBuf],
) -> ExitCode {
    let config = judging.engine_config();
    let zone = config.zone.clone();
    let now = match now.map(|n| parse_now(n, &zone)).transpose() {
        Ok(Some(t)) => t,
        Ok(None) => ruletest::business_hours(&zone),
        Err(e) => return usage(&e),
    };
    let ruleset = Arc::new(ruleset);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let summary = if files.is_empty() {
        ruletest::run_sources(&ruleset, default_ruleset::TESTS, now, &config, &mut out)
    } else {
        ruletest::run_files(&ruleset, files, now, &config, &mut out)
    };
    match summary {
        Ok(s) if s.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(Exit::Failure),
        Err(e) => {
            eprintln!("palisade-manager: {e}");
            ExitCode::from(Exit::Failure)
        }
    }
}
