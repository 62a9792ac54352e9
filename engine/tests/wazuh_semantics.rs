//! One test per Wazuh semantic the dialect adds, on small hand-written
//! decoders and rules (the corpus test covers Wazuh's own files).

// Test code: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use jiff::Timestamp;
use palisade_engine::dialect::RulesetDialect;
use palisade_engine::engine::{Engine, EngineConfig, Ruleset};
use palisade_engine::predecode::predecode_in;

const DECODERS: &str = r#"
<decoder name="app">
  <program_name>^app$</program_name>
  <regex type="pcre2">user=(\w+) ip=(\S+) tag=(\w+) data=(\w+)</regex>
  <order>user, srcip, tag, data</order>
</decoder>
<decoder name="json">
  <prematch>^{\s*"</prematch>
  <plugin_decoder>JSON_Decoder</plugin_decoder>
</decoder>
"#;

const RULES: &str = r#"
<group name="t,">
  <rule id="1" level="0" noalert="1">
    <category>syslog</category>
    <description>Generic template for all syslog rules.</description>
  </rule>
  <rule id="100" level="3">
    <decoded_as>app</decoded_as>
    <description>app</description>
  </rule>
  <rule id="101" level="5">
    <if_sid>100</if_sid>
    <field name="tag" type="pcre2" negate="yes">^ok$</field>
    <description>tag is not ok</description>
    <mitre><id>T1110</id></mitre>
  </rule>
  <rule id="102" level="8" frequency="3" timeframe="60">
    <if_matched_sid>101</if_matched_sid>
    <same_field>tag</same_field>
    <different_srcip />
    <description>three bad tags from different addresses</description>
  </rule>
  <rule id="103" level="4" noalert="0">
    <if_sid>100</if_sid>
    <user>!root</user>
    <data>^keep$</data>
    <description>not root, data keep</description>
  </rule>
  <rule id="200" level="6">
    <decoded_as>json</decoded_as>
    <field name="a.b">^2$</field>
    <list field="a.user" lookup="match_key">etc/lists/users</list>
    <description>json</description>
  </rule>
  <rule id="201" level="3">
    <decoded_as>json</decoded_as>
    <field name="chain">^x$</field>
    <description>chain start</description>
  </rule>
  <rule id="202" level="5" timeframe="60">
    <if_matched_sid>201</if_matched_sid>
    <description>chain, second step</description>
  </rule>
  <rule id="203" level="7" timeframe="60">
    <if_matched_sid>202</if_matched_sid>
    <description>chain, third step</description>
  </rule>
  <rule id="204" level="4">
    <decoded_as>json</decoded_as>
    <field name="code">^null$</field>
    <description>a JSON null kept as the text null</description>
  </rule>
  <rule id="205" level="3">
    <decoded_as>json</decoded_as>
    <field name="g">^x$</field>
    <description>g</description>
  </rule>
  <rule id="206" level="6" timeframe="60">
    <if_matched_sid>205</if_matched_sid>
    <global_frequency />
    <description>g again, from any agent</description>
  </rule>
</group>
"#;

fn engine() -> Engine {
    // One directory per engine: tests run in parallel, and one rewriting
    // the list while another reads it would race.
    static ENGINES: AtomicUsize = AtomicUsize::new(0);
    let n = ENGINES.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("palisade-wazuh-sem-{}-{n}", std::process::id()));
    std::fs::create_dir_all(dir.join("lists")).unwrap();
    std::fs::write(dir.join("lists/users"), "alice:admin\n\"::1\":v6\n").unwrap();
    let rs = Ruleset::load_sources_in(
        RulesetDialect::Wazuh,
        &[("d.xml".into(), DECODERS.into())],
        &[("r.xml".into(), RULES.into())],
        Some(&dir),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(&dir).unwrap();
    Engine::new(Arc::new(rs), EngineConfig::default())
}

fn judge(e: &mut Engine, line: &str) -> Option<(u32, u32)> {
    judge_at(e, line, "stdin")
}

/// Judges `line` as coming from `location` (`(agent) ip->path` for an
/// agent's event).
fn judge_at(e: &mut Engine, line: &str, location: &str) -> Option<(u32, u32)> {
    let now: Timestamp = "2024-03-13T10:00:00Z".parse().unwrap();
    let mut ev = predecode_in(line.as_bytes(), location, "h", RulesetDialect::Wazuh);
    let verdict = {
        e.ruleset().decoders.decode(&mut ev);
        e.judge(&ev, now)
    };
    verdict.rule_and_level()
}

#[test]
fn negated_pcre2_field_and_mitre() {
    let mut e = engine();
    // `prog[pid]:msg` without a space is a program name in Wazuh's dialect.
    assert_eq!(
        judge(
            &mut e,
            "Dec 19 17:20:08 h app[1]:user=bob ip=1.1.1.1 tag=ok data=x"
        ),
        Some((100, 3))
    );
    assert_eq!(
        judge(
            &mut e,
            "Dec 19 17:20:08 h app[1]:user=bob ip=1.1.1.1 tag=bad data=x"
        ),
        Some((101, 5))
    );
    assert_eq!(e.ruleset().rules.rule(101).unwrap().mitre, ["T1110"]);
}

#[test]
fn frequency_fires_on_the_nth_event_with_static_filters() {
    let mut e = engine();
    let line = |ip: &str, tag: &str| {
        format!("Dec 19 17:20:08 h app[1]: user=bob ip={ip} tag={tag} data=x")
    };
    assert_eq!(judge(&mut e, &line("1.1.1.1", "bad")), Some((101, 5)));
    // Another tag: same_field keeps the first event out of its count.
    assert_eq!(judge(&mut e, &line("2.2.2.2", "worse")), Some((101, 5)));
    // One earlier event counts (1.1.1.1); 2.2.2.2's other tag does not.
    assert_eq!(judge(&mut e, &line("2.2.2.2", "bad")), Some((101, 5)));
    // The same address again: different_srcip keeps 2.2.2.2 out.
    assert_eq!(judge(&mut e, &line("2.2.2.2", "bad")), Some((101, 5)));
    // Two earlier events pass both filters: the third fires (frequency
    // 3, where OSSEC would need five).
    assert_eq!(judge(&mut e, &line("3.3.3.3", "bad")), Some((102, 8)));
}

#[test]
fn os_match_bang_negates_and_data_is_its_own_field() {
    let mut e = engine();
    let l = "Dec 19 17:20:08 h app[1]: user=bob ip=1.1.1.1 tag=ok data=keep";
    assert_eq!(judge(&mut e, l), Some((103, 4)));
    let l = "Dec 19 17:20:08 h app[1]: user=root ip=1.1.1.1 tag=ok data=keep";
    assert_eq!(judge(&mut e, l), Some((100, 3)));
}

#[test]
fn json_decoder_and_lists_on_dynamic_fields() {
    let mut e = engine();
    assert_eq!(
        judge(&mut e, r#"{"a":{"b":2,"user":"alice"}}"#),
        Some((200, 6))
    );
    assert_eq!(judge(&mut e, r#"{"a":{"b":2,"user":"eve"}}"#), None);
    assert_eq!(judge(&mut e, r#"{"a":{"b":3,"user":"alice"}}"#), None);
}

#[test]
fn wazuh_only_warnings() {
    let rules = r#"<group name="g,">
  <rule id="1" level="0"><category>syslog</category><description>root</description></rule>
  <rule id="100" level="3"><match>a</match><description>x</description></rule>
  <rule id="100" level="3"><match>b</match><description>duplicate</description></rule>
  <rule id="101" level="3"><if_sid>100, 999</if_sid><description>one missing sid</description></rule>
  <rule id="102" level="3"><if_sid>100|1</if_sid><description>malformed</description></rule>
  <rule id="103" level="3"><list field="srcip" lookup="match_key">etc/lists/none</list><description>no list</description></rule>
</group>"#;
    let rs = Ruleset::load_sources_in(
        RulesetDialect::Wazuh,
        &[],
        &[("r.xml".into(), rules.into())],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rs.rules.rules.len(), 3, "1, 100, 101 load");
    assert!(rs.rules.rule(1).is_some());
    assert!(rs.rules.rule(101).is_some());
    assert!(rs.rules.rule(102).is_none());
    assert!(rs.rules.rule(103).is_none());
    assert_eq!(rs.rules.warnings.len(), 4, "{:?}", rs.rules.warnings);
    // The same file is an error in OSSEC's dialect.
    assert!(Ruleset::load_sources(&[], &[("r.xml".into(), rules.into())], None).is_err());
}

#[test]
fn nested_if_matched_sid_chains_fire_again() {
    // Wazuh marks only the newest counted event when more than one was
    // counted: a rule needing one earlier event leaves it unmarked, so
    // the chain climbs on the third line and stays on top (OSSEC's
    // barrier would drop back to 201 there).
    let mut e = engine();
    let line = r#"{"chain":"x"}"#;
    let got: Vec<_> = (0..4).map(|_| judge(&mut e, line)).collect();
    assert_eq!(
        got,
        [
            Some((201, 3)),
            Some((202, 5)),
            Some((203, 7)),
            Some((203, 7))
        ]
    );
}

#[test]
fn a_json_null_is_the_text_null_by_default() {
    let mut e = engine();
    assert_eq!(judge(&mut e, r#"{"code":null}"#), Some((204, 4)));
}

#[test]
fn context_searches_stay_within_one_agent_unless_global_frequency() {
    let mut e = engine();
    let (a, b) = ("(a) any->/var/log/x", "(b) any->/var/log/x");
    let chain = r#"{"chain":"x"}"#;
    assert_eq!(judge_at(&mut e, chain, a), Some((201, 3)));
    // Agent b's event does not count agent a's.
    assert_eq!(judge_at(&mut e, chain, b), Some((201, 3)));
    assert_eq!(judge_at(&mut e, chain, a), Some((202, 5)));
    assert_eq!(judge_at(&mut e, chain, "stdin"), Some((201, 3)));
    // <global_frequency/>: every agent's events count.
    let g = r#"{"g":"x"}"#;
    assert_eq!(judge_at(&mut e, g, a), Some((205, 3)));
    assert_eq!(judge_at(&mut e, g, b), Some((206, 6)));
}
