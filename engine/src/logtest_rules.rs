//! The rules engine behind `logtest`: the [`RulePhase`] that
//! [`crate::logtest::Logtest`] calls for Phase 3, and the `-a` mode that
//! prints only alerts, in alerts.log layout (or as alerts.json lines,
//! `-a --json`), for a whole stream of lines.
//!
//! `logtest` is a session: correlation state is kept across lines, as in
//! `ossec-logtest`, so pasting a burst of 404s shows 31151 on the 14th. The
//! engine never reads the clock; the caller sets the arrival time of each
//! line ([`EngineRulePhase::set_now`]), and with
//! [`TimeSource::Event`] the line's own timestamp is used instead when it
//! has one (`logtest --event-time`, for replaying old logs).

use std::io::{self, Write};
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::alert::DEFAULT_EMAIL_ALERT_LEVEL;
use crate::alert_format::{alert_json, alerts_log_entry};
use crate::engine::{Alert, Engine, EngineConfig, Ruleset, TraceLine, Verdict};
use crate::event::Event;
use crate::logtest::{LOCATION, RuleOutcome, RulePhase};
use crate::predecode::predecode_in;
use crate::timestamp::{TimeSource, judge_time};

/// Phase 3 backed by the real engine.
#[derive(Debug)]
pub struct EngineRulePhase {
    engine: Engine,
    zone: TimeZone,
    now: Timestamp,
    time_source: TimeSource,
    fell_back: u64,
    last_alert: Option<Alert>,
}

impl EngineRulePhase {
    /// A session over `ruleset`; `now` is the arrival time used until
    /// [`set_now`](Self::set_now) changes it.
    pub fn new(ruleset: Arc<Ruleset>, config: EngineConfig, now: Timestamp) -> Self {
        Self {
            zone: config.zone.clone(),
            engine: Engine::new(ruleset, config),
            now,
            time_source: TimeSource::Arrival,
            fell_back: 0,
            last_alert: None,
        }
    }

    /// Chooses the correlation clock.
    pub fn with_time_source(mut self, source: TimeSource) -> Self {
        self.time_source = source;
        self
    }

    /// Sets the arrival time of the next lines.
    pub fn set_now(&mut self, now: Timestamp) {
        self.now = now;
    }

    /// Lines judged at arrival time because they carried no timestamp
    /// (only counted with [`TimeSource::Event`]).
    pub fn fell_back(&self) -> u64 {
        self.fell_back
    }

    /// The alert of the last evaluated line, if it alerted.
    pub fn take_alert(&mut self) -> Option<Alert> {
        self.last_alert.take()
    }

    /// The engine (ruleset, correlation state).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Judges a decoded event: the verdict, and the alert kept for
    /// [`take_alert`](Self::take_alert).
    pub fn judge(&mut self, event: &Event) -> Verdict {
        let t = judge_time(event, self.now, self.time_source, &self.zone);
        if t.fell_back {
            self.fell_back += 1;
        }
        let verdict = self.engine.judge(event, t.time);
        self.last_alert = match &verdict {
            Verdict::Alert(a) => Some((**a).clone()),
            _ => None,
        };
        verdict
    }
}

impl EngineRulePhase {
    /// [`judge`](Self::judge), also returning the rules tried, as
    /// `ossec-logtest -v` prints them.
    pub fn judge_traced(&mut self, event: &Event) -> (Verdict, Vec<TraceLine>) {
        let t = judge_time(event, self.now, self.time_source, &self.zone);
        if t.fell_back {
            self.fell_back += 1;
        }
        let (verdict, trace) = self.engine.judge_traced(event, t.time);
        self.last_alert = match &verdict {
            Verdict::Alert(a) => Some((**a).clone()),
            _ => None,
        };
        (verdict, trace)
    }

    fn outcome(&self, verdict: &Verdict) -> Option<RuleOutcome> {
        let rules = &self.engine.ruleset().rules;
        let (id, level, alert) = match verdict {
            Verdict::NoMatch => return None,
            Verdict::Silent { rule_id } => (*rule_id, 0, false),
            Verdict::Suppressed { rule_id, level } => (*rule_id, *level, false),
            Verdict::Alert(a) => (a.rule_id, a.level, a.log_it()),
        };
        let rule = rules.rule(id);
        Some(RuleOutcome {
            id,
            level,
            description: rule.map(|r| r.description.clone()).unwrap_or_default(),
            info: rule
                .map(|r| {
                    r.info
                        .iter()
                        .map(|i| (info_kind(&i.kind).to_string(), i.value.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            alert,
        })
    }
}

impl RulePhase for EngineRulePhase {
    fn evaluate(&mut self, event: &Event) -> Option<RuleOutcome> {
        let verdict = self.judge(event);
        self.outcome(&verdict)
    }

    fn evaluate_traced(&mut self, event: &Event) -> (Option<RuleOutcome>, Vec<String>) {
        let (verdict, trace) = self.judge_traced(event);
        let lines = trace.iter().map(ToString::to_string).collect();
        (self.outcome(&verdict), lines)
    }
}

/// The label ossec-logtest prints for an `<info type=...>` entry.
fn info_kind(kind: &str) -> &str {
    match kind.to_ascii_lowercase().as_str() {
        "link" => "Link",
        "cve" => "CVE",
        "osvdb" => "OSVDB",
        "bugtrackid" => "BUGTRACKID",
        _ => "Text",
    }
}

/// `logtest -a`: lines in, alerts.log entries out, state kept throughout.
#[derive(Debug)]
pub struct AlertsOnly {
    phase: EngineRulePhase,
    manager_host: String,
    zone: TimeZone,
    email_alert_level: u32,
    offset: u64,
    json: bool,
}

impl AlertsOnly {
    /// A stream over `phase`; `manager_host` names the manager for lines
    /// without a host in their header.
    pub fn new(phase: EngineRulePhase, manager_host: &str) -> Self {
        Self {
            zone: phase.zone.clone(),
            phase,
            manager_host: manager_host.to_string(),
            email_alert_level: DEFAULT_EMAIL_ALERT_LEVEL,
            offset: 0,
            json: false,
        }
    }

    /// Prints each alert as one alerts.json line (the manager's own event:
    /// agent `000`, named after the manager) instead of an alerts.log entry.
    pub fn with_json(mut self, json: bool) -> Self {
        self.json = json;
        self
    }

    /// Sets `email_alert_level` (for the ` mail ` flag).
    pub fn with_email_alert_level(mut self, level: u32) -> Self {
        self.email_alert_level = level;
        self
    }

    /// The rule phase (for its fallback count and engine state).
    pub fn phase(&self) -> &EngineRulePhase {
        &self.phase
    }

    /// Judges one input line (without its newline) that arrived at
    /// `arrival`; writes its alerts.log entry (or alerts.json line) to `out` if it alerted and
    /// is logged. Lines shorter than two bytes are skipped, as logtest does.
    pub fn line(
        &mut self,
        line: &[u8],
        arrival: Timestamp,
        out: &mut dyn Write,
    ) -> io::Result<Option<Alert>> {
        if line.len() < 2 {
            return Ok(None);
        }
        let dialect = self.phase.engine.ruleset().dialect;
        let mut event = predecode_in(line, LOCATION, &self.manager_host, dialect);
        self.phase.engine.ruleset().decoders.decode(&mut event);
        self.phase.set_now(arrival);
        self.phase.judge(&event);
        let Some(alert) = self.phase.take_alert() else {
            return Ok(None);
        };
        if alert.log_it() {
            let mail = alert.mail_flag(self.email_alert_level);
            let text = if self.json {
                let mut line = alert_json(
                    &alert,
                    self.offset,
                    None,
                    mail,
                    &self.manager_host,
                    &self.zone,
                );
                line.push('\n');
                line
            } else {
                alerts_log_entry(&alert, self.offset, mail, &self.zone)
            };
            out.write_all(text.as_bytes())?;
            self.offset += text.len() as u64;
        }
        Ok(Some(alert))
    }
}
