//! The pure part of `palisade-manager logtest`, OSSEC's `ossec-logtest`
//! (`src/analysisd/testrule.c`): per input line, the text logtest prints
//! for pre-decoding (Phase 1) and decoding (Phase 2), the rule phase through
//! a seam the rules engine plugs into (Phase 3), and the `-U
//! rule:level:decoder` exit code that OSSEC's ruleset test runner judges.
//!
//! The output reproduces OSSEC's `print_out` calls (each adds a newline):
//! a blank line, `**Phase 1: Completed pre-decoding.` with `full event`,
//! `hostname`, `program_name` (`(null)` when absent, as glibc prints a NULL
//! string) and `log`; then `**Phase 2: Completed decoding.` with the
//! PARENT decoder's name and every field as it is assigned (`proto` for
//! protocol, `extra_data` for data), or `No decoder matched.`.
//!
//! `-U` compares the name the event reports (`Event::decoder_name`): the
//! parent's name for an ordinary child, the child's own name for a child
//! with `use_own_name` (e.g. `postfix-reject`, whose Phase 2 line still
//! says `postfix`). That is OSSEC's `lf->decoder_info->name` after
//! `os_setdecoderids` renamed the children.

use crate::decoder::DecoderSet;
use crate::event::Event;
use crate::predecode::predecode_in;

/// What `ossec-logtest` prints before the first line (`ARGV0` is
/// `ossec-testrule` in OSSEC's build).
pub const BANNER: &str = "ossec-testrule: Type one log per line.\n\n";

/// The location OSSEC's logtest gives every line.
pub const LOCATION: &str = "stdin";

/// The rule the rule phase chose for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOutcome {
    /// Rule id.
    pub id: u32,
    /// Rule level.
    pub level: u32,
    /// Rule description.
    pub description: String,
    /// `<info>` entries as (kind, text): kind is `Text`, `Link`, `CVE`,
    /// `OSVDB` or `BUGTRACKID`.
    pub info: Vec<(String, String)>,
    /// Whether an alert would be logged (`**Alert to be generated.`).
    pub alert: bool,
}

/// Phase 3, supplied by the rules engine. It may keep state between lines
/// (frequency rules): logtest runs one session over all its input.
pub trait RulePhase {
    /// The final rule for a decoded event, or `None` when no rule matched.
    fn evaluate(&mut self, event: &Event) -> Option<RuleOutcome>;

    /// [`evaluate`](Self::evaluate) plus the rule-debugging lines that
    /// `ossec-logtest -v` prints (one `String` per line, without newline).
    /// The default records none.
    fn evaluate_traced(&mut self, event: &Event) -> (Option<RuleOutcome>, Vec<String>) {
        (self.evaluate(event), Vec::new())
    }
}

/// The `-U rule:alert:decoder` expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitTest {
    /// Expected rule id, as text.
    pub rule: String,
    /// Expected level, as text.
    pub alert: String,
    /// Expected decoder name.
    pub decoder: String,
}

impl UnitTest {
    /// Parses `rule:alert:decoder` (the decoder part may contain `:`).
    pub fn parse(s: &str) -> Result<UnitTest, String> {
        let mut it = s.splitn(3, ':');
        match (it.next(), it.next(), it.next()) {
            (Some(rule), Some(alert), Some(decoder)) => Ok(UnitTest {
                rule: rule.to_string(),
                alert: alert.to_string(),
                decoder: decoder.to_string(),
            }),
            _ => Err(
                "-U requires the matching format to be \"<rule_id>:<alert_level>:<decoder_name>\""
                    .into(),
            ),
        }
    }

    /// Whether the decoder part matches (case-insensitive, as `strcasecmp`).
    pub fn decoder_matches(&self, event: &Event) -> bool {
        event
            .decoder_name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(&self.decoder))
    }

    /// The exit code for one line: 3 decoder differs (or none matched),
    /// 255 decoded but no rule matched, 2 rule id differs, 1 only the level
    /// differs, 0 all equal.
    pub fn exit_code(&self, event: &Event, outcome: Option<&RuleOutcome>) -> i32 {
        if !self.decoder_matches(event) {
            return 3;
        }
        let Some(r) = outcome else { return 255 };
        if !self.rule.eq_ignore_ascii_case(&r.id.to_string()) {
            return 2;
        }
        if !self.alert.eq_ignore_ascii_case(&r.level.to_string()) {
            return 1;
        }
        0
    }
}

/// What one input line produced.
#[derive(Debug, Clone)]
pub struct LineResult {
    /// The text logtest prints for this line.
    pub text: String,
    /// The decoded event.
    pub event: Event,
    /// The rule phase's answer, when a rule phase is present.
    pub outcome: Option<RuleOutcome>,
}

/// A logtest session over one decoder set.
pub struct Logtest<'a> {
    decoders: &'a DecoderSet,
    manager_host: String,
    rules: Option<&'a mut dyn RulePhase>,
    unit_test: Option<UnitTest>,
    exit_code: i32,
    verbose: bool,
}

impl<'a> Logtest<'a> {
    /// A session; `manager_host` is the host name used for lines whose
    /// header names none (OSSEC: `gethostname` up to the first dot).
    pub fn new(decoders: &'a DecoderSet, manager_host: &str) -> Self {
        Logtest {
            decoders,
            manager_host: manager_host.to_string(),
            rules: None,
            unit_test: None,
            exit_code: 0,
            verbose: false,
        }
    }

    /// `-v`: print, after Phase 2, `**Rule debugging:` and every rule
    /// tried, as `ossec-logtest -v` does (needs a rule phase).
    pub fn with_verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Adds the rule phase (Phase 3).
    pub fn with_rules(mut self, rules: &'a mut dyn RulePhase) -> Self {
        self.rules = Some(rules);
        self
    }

    /// Adds a `-U` expectation.
    pub fn with_unit_test(mut self, ut: UnitTest) -> Self {
        self.unit_test = Some(ut);
        self
    }

    /// The exit code so far: that of the last line with `-U`, else 0.
    pub fn exit_code(&self) -> i32 {
        self.exit_code
    }

    /// Processes one line (without its newline). Returns `None` for lines
    /// OSSEC skips: shorter than two bytes.
    pub fn line(&mut self, line: &[u8]) -> Option<LineResult> {
        if line.len() < 2 {
            return None;
        }
        let dialect = self.decoders.dialect();
        let mut event = predecode_in(line, LOCATION, &self.manager_host, dialect);
        let mut text = String::from("\n\n");
        phase1(&mut text, &event);
        let trace = self.decoders.decode_traced(&mut event);
        if self.decoders.has_list_for(&event) {
            text.push_str("\n**Phase 2: Completed decoding.\n");
            match &trace.parent_name {
                Some(p) => {
                    text.push_str(&format!("       decoder: '{p}'\n"));
                    for (label, value) in &trace.assigned {
                        text.push_str(&format!("       {label}: '{value}'\n"));
                    }
                }
                None => text.push_str("       No decoder matched.\n"),
            }
        }
        let outcome = match self.rules.as_deref_mut() {
            Some(r) if self.verbose => {
                // testrule.c: `print_out("\n**Rule debugging:")`, then
                // one line per rule tried.
                let (outcome, lines) = r.evaluate_traced(&event);
                text.push_str("\n**Rule debugging:\n");
                for l in lines {
                    text.push_str(&l);
                    text.push('\n');
                }
                outcome
            }
            Some(r) => r.evaluate(&event),
            None => None,
        };
        if let Some(r) = &outcome {
            phase3(&mut text, r);
        }
        if let Some(ut) = &self.unit_test {
            self.exit_code = ut.exit_code(&event, outcome.as_ref());
        }
        Some(LineResult {
            text,
            event,
            outcome,
        })
    }
}

fn phase1(text: &mut String, e: &Event) {
    let full = String::from_utf8_lossy(&e.full_log);
    let log = String::from_utf8_lossy(e.log());
    text.push_str("**Phase 1: Completed pre-decoding.\n");
    text.push_str(&format!("       full event: '{full}'\n"));
    text.push_str(&format!(
        "       hostname: '{}'\n",
        e.hostname.as_deref().unwrap_or("(null)")
    ));
    text.push_str(&format!(
        "       program_name: '{}'\n",
        e.program_name.as_deref().unwrap_or("(null)")
    ));
    text.push_str(&format!("       log: '{log}'\n"));
}

fn phase3(text: &mut String, r: &RuleOutcome) {
    text.push_str("\n**Phase 3: Completed filtering (rules).\n");
    text.push_str(&format!("       Rule id: '{}'\n", r.id));
    text.push_str(&format!("       Level: '{}'\n", r.level));
    text.push_str(&format!("       Description: '{}'\n", r.description));
    for (kind, data) in &r.info {
        text.push_str(&format!("       Info - {kind}: '{data}'\n"));
    }
    if r.alert {
        text.push_str("**Alert to be generated.\n\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECODERS: &str = r#"
<decoder name="sshd">
  <program_name>^sshd</program_name>
</decoder>
<decoder name="sshd-success">
  <parent>sshd</parent>
  <prematch>^Accepted</prematch>
  <regex offset="after_prematch">^ \S+ for (\S+) from (\S+) port </regex>
  <order>user, srcip</order>
</decoder>
<decoder name="postfix">
  <program_name>^postfix</program_name>
</decoder>
<decoder name="postfix-reject">
  <use_own_name>true</use_own_name>
  <parent>postfix</parent>
  <prematch>^NOQUEUE: reject: </prematch>
  <regex offset="after_prematch">^\w+ from \S+[(\S+)]</regex>
  <order>srcip</order>
</decoder>
"#;

    fn set() -> DecoderSet {
        DecoderSet::load(&[("t.xml".into(), DECODERS.into())]).unwrap()
    }

    struct Fixed(Option<RuleOutcome>);
    impl RulePhase for Fixed {
        fn evaluate(&mut self, _: &Event) -> Option<RuleOutcome> {
            self.0.clone()
        }
    }

    #[test]
    fn phases_text() {
        let set = set();
        let mut lt = Logtest::new(&set, "manager");
        let r = lt
            .line(b"Nov 14 22:13:19 web01 sshd[123]: Accepted password for root from 1.2.3.4 port 22 ssh2")
            .unwrap();
        assert_eq!(
            r.text,
            "\n\n**Phase 1: Completed pre-decoding.\n\
             \x20      full event: 'Nov 14 22:13:19 web01 sshd[123]: Accepted password for root from 1.2.3.4 port 22 ssh2'\n\
             \x20      hostname: 'web01'\n\
             \x20      program_name: 'sshd'\n\
             \x20      log: 'Accepted password for root from 1.2.3.4 port 22 ssh2'\n\
             \n**Phase 2: Completed decoding.\n\
             \x20      decoder: 'sshd'\n\
             \x20      dstuser: 'root'\n\
             \x20      srcip: '1.2.3.4'\n"
        );
        let r = lt.line(b"GET / HTTP/1.1").unwrap();
        assert!(
            r.text
                .contains("       hostname: 'manager'\n       program_name: '(null)'\n")
        );
        // No parent without program_name exists: Phase 2 is not printed.
        assert!(!r.text.contains("Phase 2"));
        let r = lt.line(b"Nov 14 22:13:19 web01 cron[1]: hello").unwrap();
        assert!(
            r.text
                .ends_with("**Phase 2: Completed decoding.\n       No decoder matched.\n")
        );
        assert!(lt.line(b"x").is_none());
    }

    #[test]
    fn unit_test_exit_codes() {
        let set = set();
        let line: &[u8] = b"Nov 14 22:13:19 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from mail.example.net[5.6.7.8]: 554";
        let ok = RuleOutcome {
            id: 3303,
            level: 5,
            description: "d".into(),
            info: vec![],
            alert: true,
        };
        let cases = [
            ("3303:5:postfix-reject", Some(ok.clone()), 0),
            ("3303:5:POSTFIX-REJECT", Some(ok.clone()), 0),
            ("3303:5:postfix", Some(ok.clone()), 3),
            ("3304:5:postfix-reject", Some(ok.clone()), 2),
            ("3303:6:postfix-reject", Some(ok.clone()), 1),
            ("3303:5:postfix-reject", None, 255),
        ];
        for (ut, outcome, code) in cases {
            let mut rules = Fixed(outcome);
            let mut lt = Logtest::new(&set, "m")
                .with_rules(&mut rules)
                .with_unit_test(UnitTest::parse(ut).unwrap());
            let r = lt.line(line).unwrap();
            assert_eq!(lt.exit_code(), code, "{ut}");
            // Phase 2 prints the parent's name even for use_own_name.
            assert!(
                r.text
                    .contains("       decoder: 'postfix'\n       srcip: '5.6.7.8'\n")
            );
            if code != 255 {
                assert!(r.text.contains("Rule id: '3303'"));
            }
        }
        assert!(UnitTest::parse("1:2").is_err());
    }
}
