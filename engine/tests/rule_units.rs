//! Rule features one at a time, on small rule files and hand-filled events
//! (no decoders): tree order, concatenation, overwrite, `noalert` vs level
//! 0, IP negation, `<var>`, `<time>`/`<weekday>` from the `now` parameter,
//! `if_group`/`if_level` placement, lists, and load errors reported together.

use std::sync::Arc;

use palisade_engine::decoder::DecoderSet;
use palisade_engine::engine::{Engine, EngineConfig, Ruleset, Verdict};
use palisade_engine::event::{Category, Event};
use palisade_engine::rule::{LoadOptions, RuleSet};

const TEMPLATES: &str = r#"<group name="syslog,"><rule id="1" level="0" noalert="1"><category>syslog</category><description>t</description></rule></group>
<group name="web-log,"><rule id="4" level="0" noalert="1"><category>web-log</category><description>t</description></rule></group>"#;

fn rules(extra: &str) -> RuleSet {
    rules_with(extra, &LoadOptions::default())
}

fn rules_with(extra: &str, opts: &LoadOptions) -> RuleSet {
    let src = vec![
        ("rules_config.xml".to_string(), TEMPLATES.to_string()),
        ("test.xml".to_string(), extra.to_string()),
    ];
    match RuleSet::load(&src, opts) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

fn engine(rs: RuleSet) -> Engine {
    Engine::new(
        Arc::new(Ruleset::new(DecoderSet::default(), rs)),
        EngineConfig::default(),
    )
}

fn ev(log: &str) -> Event {
    Event {
        full_log: log.as_bytes().to_vec(),
        hostname: Some("h".into()),
        location: "/var/log/x".into(),
        ..Event::default()
    }
}

fn at(t: &str) -> jiff::Timestamp {
    match t.parse() {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

const NOON_WED: &str = "2024-03-13T12:00:00Z";

fn judge(e: &mut Engine, event: &Event) -> Option<(u32, u32)> {
    e.judge(event, at(NOON_WED)).rule_and_level()
}

#[test]
fn siblings_level_zero_first_then_high_to_low_ties_in_load_order() {
    let rs = rules(
        r#"<group name="g,">
  <rule id="100" level="3"><match>x</match><description>p</description></rule>
  <rule id="101" level="5"><if_sid>100</if_sid><match>a</match><description>a</description></rule>
  <rule id="102" level="10"><if_sid>100</if_sid><match>b</match><description>b</description></rule>
  <rule id="103" level="0"><if_sid>100</if_sid><match>c</match><description>c</description></rule>
  <rule id="104" level="5"><if_sid>100</if_sid><match>d</match><description>d</description></rule>
  <rule id="105" level="7" accuracy="0"><if_sid>100</if_sid><match>e</match><description>e</description></rule>
</group>"#,
    );
    assert_eq!(rs.child_ids(100), vec![103, 102, 101, 104, 105]);
    let mut e = engine(rs);
    // Deepest match wins; level 0 swallows before the level-10 sibling.
    assert_eq!(
        e.judge(&ev("x c b"), at(NOON_WED)),
        Verdict::Silent { rule_id: 103 }
    );
    assert_eq!(judge(&mut e, &ev("x b a")), Some((102, 10)));
    assert_eq!(judge(&mut e, &ev("x a d")), Some((101, 5)));
    assert_eq!(judge(&mut e, &ev("x zzz")), Some((100, 3)));
    assert_eq!(judge(&mut e, &ev("nothing")), None);
}

#[test]
fn noalert_falls_through_to_siblings() {
    let rs = rules(
        r#"<group name="g,">
  <rule id="200" level="0" noalert="1"><match>svc</match><description>parent</description></rule>
  <rule id="201" level="6"><if_sid>200</if_sid><match>bad</match><description>child</description></rule>
  <rule id="202" level="2"><match>odd</match><description>generic</description></rule>
</group>"#,
    );
    let mut e = engine(rs);
    assert_eq!(judge(&mut e, &ev("svc bad")), Some((201, 6)));
    // 200 matches but no child does: noalert -> the sibling 202 is tried.
    assert_eq!(judge(&mut e, &ev("svc odd")), Some((202, 2)));
    assert_eq!(judge(&mut e, &ev("svc fine")), None);
}

#[test]
fn repeated_elements_are_concatenated_and_vars_substituted() {
    let rs = rules(
        r#"<var name="WORDS">alpha|beta</var>
<group name="g,">
  <rule id="300" level="4">
    <match>foo|</match><match>bar</match>
    <description>first </description><description>second</description>
    <group>extra,</group>
  </rule>
  <rule id="301" level="4"><match>$WORDS</match><description>v</description></rule>
</group>"#,
    );
    let r = rs
        .rule(300)
        .map(|r| (r.description.clone(), r.group.clone()));
    assert_eq!(r, Some(("first second".into(), "g,extra,".into())));
    let mut e = engine(rs);
    assert_eq!(judge(&mut e, &ev("xx BAR yy")), Some((300, 4)));
    assert_eq!(judge(&mut e, &ev("a beta b")), Some((301, 4)));
    assert_eq!(judge(&mut e, &ev("foobar")), Some((300, 4)));
    assert_eq!(judge(&mut e, &ev("fo ba")), None);
}

#[test]
fn overwrite_replaces_the_definition_in_place() {
    let rs = rules(
        r#"<group name="g,">
  <rule id="400" level="3"><match>one</match><description>old</description></rule>
  <rule id="400" level="9" overwrite="yes"><match>two</match><description>new</description></rule>
</group>"#,
    );
    let mut e = engine(rs);
    assert_eq!(judge(&mut e, &ev("one")), None);
    let v = e
        .judge(&ev("two"), at(NOON_WED))
        .into_alert()
        .map(|a| (a.rule_id, a.level, a.description));
    assert_eq!(v, Some((400, 9, "new".into())));
}

#[test]
fn ip_lists_with_negation_and_cidr() {
    let rs = rules(
        r#"<group name="g,">
  <rule id="500" level="5"><match>login</match><srcip>!10.0.0.0/8</srcip><description>outside</description></rule>
</group>"#,
    );
    let mut e = engine(rs);
    let mut inside = ev("login");
    inside.fields.srcip = Some("10.2.3.4".into());
    let mut outside = ev("login");
    outside.fields.srcip = Some("192.0.2.1".into());
    assert_eq!(judge(&mut e, &inside), None);
    assert_eq!(judge(&mut e, &outside), Some((500, 5)));
    assert_eq!(judge(&mut e, &ev("login")), None, "no srcip: no match");
}

#[test]
fn time_and_weekday_use_the_now_parameter() {
    let rs = rules(
        r#"<group name="g,">
  <rule id="600" level="7"><match>ok</match><time>6 pm - 8:30 am</time><description>night</description></rule>
  <rule id="601" level="6"><match>ok</match><weekday>weekends</weekday><description>weekend</description></rule>
</group>"#,
    );
    let mut e = engine(rs);
    assert_eq!(
        e.judge(&ev("ok"), at("2024-03-13T12:00:00Z"))
            .rule_and_level(),
        None
    );
    assert_eq!(
        e.judge(&ev("ok"), at("2024-03-13T22:00:00Z"))
            .rule_and_level(),
        Some((600, 7))
    );
    assert_eq!(
        e.judge(&ev("ok"), at("2024-03-16T12:00:00Z"))
            .rule_and_level(),
        Some((601, 6))
    );
    // The zone parameter shifts local time: 12:00 UTC is 21:00 in UTC+9.
    let zone = jiff::tz::TimeZone::fixed(jiff::tz::offset(9));
    let rs = rules(
        r#"<group name="g,"><rule id="600" level="7"><match>ok</match><time>6 pm - 8:30 am</time><description>n</description></rule></group>"#,
    );
    let mut e = Engine::new(
        Arc::new(Ruleset::new(DecoderSet::default(), rs)),
        EngineConfig {
            zone,
            ..EngineConfig::default()
        },
    );
    assert_eq!(
        e.judge(&ev("ok"), at("2024-03-13T12:00:00Z"))
            .rule_and_level(),
        Some((600, 7))
    );
}

#[test]
fn if_group_and_if_level_and_category_placement() {
    let rs = rules(
        r#"<group name="authentication_success,">
  <rule id="700" level="3"><match>accepted</match><description>ok</description></rule>
  <rule id="701" level="12"><match>root</match><description>critical</description></rule>
</group>
<group name="policy,">
  <rule id="702" level="9"><if_group>authentication_succ</if_group><match>admin</match><description>policy</description></rule>
  <rule id="703" level="13"><if_level>12</if_level><match>again</match><description>lvl</description></rule>
  <rule id="704" level="4"><category>web-log</category><match>GET</match><description>web</description></rule>
</group>"#,
    );
    assert!(rs.child_ids(700).contains(&702));
    assert!(rs.child_ids(701).contains(&703));
    let mut e = engine(rs);
    assert_eq!(judge(&mut e, &ev("accepted admin")), Some((702, 9)));
    assert_eq!(judge(&mut e, &ev("root again")), Some((703, 13)));
    assert_eq!(
        judge(&mut e, &ev("GET /")),
        None,
        "syslog event never reaches web-log rules"
    );
    let mut web = ev("GET /");
    web.category = Category::WebLog;
    assert_eq!(judge(&mut e, &web), Some((704, 4)));
}

#[test]
fn cdb_lists_from_text_files() {
    let dir = std::env::temp_dir().join(format!("palisade-lists-{}", std::process::id()));
    let lists = dir.join("lists");
    if let Err(e) = std::fs::create_dir_all(&lists) {
        panic!("{e}");
    }
    if let Err(e) = std::fs::write(lists.join("bad-ips"), "192.0.2.:net\n198.51.100.7:host\n") {
        panic!("{e}");
    }
    let opts = LoadOptions {
        list_dir: Some(dir.clone()),
        ..LoadOptions::default()
    };
    let rs = rules_with(
        r#"<group name="g,"><rule id="800" level="8"><match>conn</match><list field="srcip" lookup="address_match_key">etc/lists/bad-ips</list><description>bad</description></rule></group>"#,
        &opts,
    );
    let mut e = engine(rs);
    let mut a = ev("conn");
    a.fields.srcip = Some("192.0.2.99".into());
    assert_eq!(judge(&mut e, &a), Some((800, 8)));
    a.fields.srcip = Some("203.0.113.1".into());
    assert_eq!(judge(&mut e, &a), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_load_error_at_once_with_file_and_line() {
    let src = vec![
        ("rules_config.xml".to_string(), TEMPLATES.to_string()),
        (
            "bad.xml".to_string(),
            r#"<group name="g,">
  <rule id="900" level="3"><match>a</match><bogus>x</bogus><description>d</description></rule>
  <rule id="901" level="3"><if_sid>12345</if_sid><description>d</description></rule>
  <rule id="902" level="3" frequency="4"><match>a</match><description>d</description></rule>
  <rule id="903" level="x"><match>a</match></rule>
  <rule id="904" level="3"><options>no_log,no_email_alert</options></rule>
  <rule id="905" level="3"><weekday>!monday</weekday></rule>
  <rule id="906" level="3"></rule>
</group>
<notagroup/>"#
                .to_string(),
        ),
    ];
    let errs = match RuleSet::load(&src, &LoadOptions::default()) {
        Ok(_) => panic!("must fail"),
        Err(e) => e.0,
    };
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    for l in [2, 3, 4, 5, 6, 7, 8, 10] {
        assert!(lines.contains(&l), "no error for line {l}: {errs:#?}");
    }
    assert!(errs.iter().all(|e| e.file == "bad.xml"));
}
