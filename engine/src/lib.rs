//! Palisade's analysis engine: a pure library that reads OSSEC-format decoder
//! and rule files and judges log lines the way OSSEC 3.x does.
//!
//! The engine performs no network or database I/O and never reads the clock:
//! the time an event arrived is always a parameter, so that tests and replays
//! are deterministic. The daemons (`palisade-manager`) feed it events and act
//! on what it returns.
//!
//! # Layout
//!
//! - [`xml`]: OSSEC's lenient XML dialect (several roots, bare `&`, `\<`),
//!   with line numbers for every element.
//! - [`pattern`]: the three pattern dialects (OS_Match, OS_Regex, PCRE2)
//!   behind one matcher type, all matching on bytes: `translate` (OS_Regex
//!   to `regex` syntax), `literal` (the fast path for plain-text patterns),
//!   `os_match`, `os_regex` with `anchored` (its first-positions filter and
//!   anchored DFA), `pcre`, and `captures` (buffers the regex matchers
//!   share).
//! - [`event`]: the decoded event that decoders fill and rules read.
//! - [`predecode`]: `OS_CleanMSG`, the syslog header and location split.
//! - [`decoder`]: `decoder.xml` semantics: `load` (XML to OSSEC's two
//!   parent lists, validated), `decode` (the `DecodeEvent` walk) and
//!   [`decoder::plugins`] (the compiled C plugin decoders).
//! - [`logtest`]: what `ossec-logtest` prints per line, and its `-U` exit code.
//! - [`ini`]: the INI dialect of OSSEC's ruleset test files.
//! - [`timestamp`]: a line's own time, for `time_source = "event"`.
//! - [`rule`]: rule XML, OSSEC's rule tree and per-event conditions:
//!   `parse` (XML to a rule), `tree` (placement), [`rule::cond`]
//!   (IP lists, time, CDB lists, compiled rules).
//! - [`correlate`]: frequency / `if_matched_*` state, bounded.
//! - [`steerable`]: OSSEC's decoders known to take an address or a user
//!   from text the client writes, for the start-up warning.
//! - [`engine`]: [`engine::Ruleset`] and [`engine::Engine`], events in, alerts out.
//! - [`default_ruleset`]: Palisade's own ruleset (`ruleset/`), embedded.
//! - [`ruletest`]: OSSEC INI ruleset tests run against a ruleset.
//! - [`logtest_rules`]: logtest's rule phase and `-a` (alerts only) mode.
//! - [`alert`]: the one alert model, from the engine to every output.
//! - [`alert_format`]: its layouts: alerts.log, alerts.json, e-mail.
//! - [`mitre`]: ATT&CK technique names and tactics for Wazuh's alerts.json.
//! - [`dialect`]: OSSEC or Wazuh, the rule language a ruleset is read in.
//! - [`wazuh`]: where a Wazuh `ruleset/` directory keeps its files.
//! - [`escape`]: the one escaping of text from outside (control
//!   characters made visible) for every output.
//! - [`error`]: file, line and reason for every load problem, and the one
//!   reader of decoder and rule files.
#![forbid(unsafe_code)]

pub mod alert;
pub mod alert_format;
pub mod correlate;
pub mod decoder;
pub mod default_ruleset;
pub mod dialect;
pub mod engine;
pub mod error;
pub mod escape;
pub mod event;
pub mod ini;
pub mod logtest;
pub mod logtest_rules;
pub mod mitre;
pub mod pattern;
pub mod predecode;
pub mod rule;
pub mod ruletest;
pub mod steerable;
pub mod timestamp;
pub mod wazuh;
pub mod xml;
