//! OSSEC's compiled plugin decoders (`src/analysisd/decoders/plugins/`),
//! rewritten from their C behaviour. They print nothing in logtest, and they
//! run instead of a regex.
//!
//! None of the 236 OSSEC corpus cases reaches a plugin; they are covered by
//! the unit tests below, written from the examples in the C sources'
//! comments.

use std::sync::OnceLock;

use super::Plugin;
use crate::event::{Category, Event};
use crate::pattern::{Dialect, Pattern};

/// Name of the dynamic field where `OSSECAlert_Decoder` leaves the rule id
/// of a forwarded alert. OSSEC points the event straight at that rule
/// (`lf->generated_rule`); the rules engine is expected to honour this field
/// the same way.
pub const OSSEC_ALERT_RULE_ID: &str = "ossec_alert.rule_id";

/// Runs `plugin` on `event`.
pub(crate) fn run(plugin: Plugin, event: &mut Event) {
    match plugin {
        Plugin::Pf => pf(event),
        Plugin::SymantecWs => symantec_ws(event),
        Plugin::SonicWall => sonicwall(event),
        Plugin::OssecAlert => ossec_alert(event),
        // Run by the decoding walk itself: it needs the decoder's offset.
        Plugin::Json => {}
    }
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn find(h: &[u8], c: u8) -> Option<usize> {
    h.iter().position(|&x| x == c)
}

/// Splits `a.b.c.d.port` at the fourth dot.
fn split_port(v: &[u8]) -> (String, Option<String>) {
    let mut dots = 0;
    for (i, &c) in v.iter().enumerate() {
        if c == b'.' {
            dots += 1;
            if dots == 4 {
                return (s(&v[..i]), Some(s(&v[i + 1..])));
            }
        }
    }
    (s(v), None)
}

/// `PF_Decoder`: `... rule 2/(match) pass in on xl0: 1.2.3.4.6667 > 5.6.7.8.80: ...`.
fn pf(event: &mut Event) {
    let log = event.log().to_vec();
    let f = &mut event.fields;
    let Some(p) = find(&log, b')') else { return };
    let mut t = &log[p + 1..];
    if t.first() != Some(&b' ') {
        return;
    }
    t = &t[1..];
    match t.first() {
        Some(b'p') => f.action = Some("pass".into()),
        Some(b'b') => f.action = Some("block".into()),
        _ => return,
    }
    let Some(c) = find(t, b':') else { return };
    t = &t[c + 1..];
    if t.first() != Some(&b' ') {
        return;
    }
    t = &t[1..];
    let Some(sp) = find(t, b' ') else { return };
    let (ip, port) = split_port(&t[..sp]);
    f.srcip = Some(ip);
    if port.is_some() {
        f.srcport = port;
    }
    let rest = &t[sp + 1..];
    if !rest.starts_with(b"> ") {
        return;
    }
    let rest = &rest[2..];
    let Some(c) = find(rest, b':') else { return };
    let (ip, port) = split_port(&rest[..c]);
    f.dstip = Some(ip);
    if port.is_some() {
        f.dstport = port;
    }
    if let Some(&b) = rest[c + 1..].iter().find(|&&b| b != b' ') {
        f.protocol = Some(
            match b {
                b'u' => "UDP",
                b'i' => "ICMP",
                _ => "TCP",
            }
            .into(),
        );
    }
}

/// `SymantecWS_Decoder`: `date,time,k=v,...` with 10=user, 11=ip, 60=url,
/// 2=/3= id (the first of each wins).
fn symantec_ws(event: &mut Event) {
    let log = event.log().to_vec();
    let f = &mut event.fields;
    // OSSEC's second strchr starts AT the first comma, so only the date is
    // skipped: the time field is scanned too (harmless: it has no `k=`).
    let Some(first) = find(&log, b',') else {
        return;
    };
    let mut t = Some(&log[first + 1..]);
    while let Some(cur) = t {
        let take = |from: &[u8], max: usize| -> String {
            s(&from[..from.iter().take(max).take_while(|&&c| c != b',').count()])
        };
        if let Some(v) = cur.strip_prefix(b"10=") {
            f.dstuser.get_or_insert_with(|| take(v, 128));
        } else if let Some(v) = cur.strip_prefix(b"11=") {
            f.srcip.get_or_insert_with(|| take(v, 128));
        } else if let Some(v) = cur.strip_prefix(b"60=") {
            f.url.get_or_insert_with(|| take(v, 1024));
        } else if cur.starts_with(b"3=") || cur.starts_with(b"2=") {
            // OSSEC copies 9 bytes including the key and across commas.
            f.id.get_or_insert_with(|| s(&cur[..cur.len().min(9)]));
        }
        t = find(cur, b',').map(|i| &cur[i + 1..]);
    }
}

fn sonic_patterns() -> Option<&'static (Pattern, Pattern, Pattern)> {
    static P: OnceLock<Option<(Pattern, Pattern, Pattern)>> = OnceLock::new();
    P.get_or_init(|| {
        Some((
            Pattern::new(Dialect::OsRegex, r"pri=(\d) c=(\d+) m=(\d+) ").ok()?,
            Pattern::new(
                Dialect::OsRegex,
                r"src=(\d+.\d+.\d+.\d+):(\d+):\S+ dst=(\d+.\d+.\d+.\d+):(\d+):",
            )
            .ok()?,
            Pattern::new(Dialect::OsRegex, r"result=(\d+) dstname=(\S+) arg=(\S+)$").ok()?,
        ))
    })
    .as_ref()
}

fn cap(h: &[u8], m: &crate::pattern::PatternMatch, i: usize) -> Option<String> {
    m.captures.get(i)?.clone().map(|r| s(&h[r]))
}

/// `SonicWall_Decoder`: priority as status, message id as id, addresses and
/// ports, protocol, and a category/action from the message id.
fn sonicwall(event: &mut Event) {
    event.category = Category::Syslog;
    let Some((prid, sdip, prox)) = sonic_patterns() else {
        return;
    };
    let log = event.log().to_vec();
    let Some(m) = prid.find(&log) else { return };
    let (Some(status), Some(category), Some(id)) =
        (cap(&log, &m, 0), cap(&log, &m, 1), cap(&log, &m, 2))
    else {
        return;
    };
    event.fields.status = Some(status);
    event.fields.id = Some(id.clone());
    let rest = &log[m.end..];
    let Some(m2) = sdip.find(rest) else { return };
    let (Some(a), Some(b), Some(c), Some(d)) = (
        cap(rest, &m2, 0),
        cap(rest, &m2, 1),
        cap(rest, &m2, 2),
        cap(rest, &m2, 3),
    ) else {
        return;
    };
    let f = &mut event.fields;
    f.srcip = Some(a);
    f.srcport = Some(b);
    f.dstip = Some(c);
    f.dstport = Some(d);
    let after = &rest[m2.end..];
    let tail = find(after, b' ').map(|i| &after[i + 1..]);
    if let Some(p) = tail.and_then(|t| t.strip_prefix(b"proto=")) {
        let n = p
            .iter()
            .take(6)
            .take_while(|&&c| is_hostname_char(c) && c != b'/')
            .count();
        f.protocol = Some(s(&p[..n]));
    }
    let category = &category[..category.len().min(7)];
    match id.as_str() {
        _ if category == "32" => event.category = Category::Ids,
        "98" | "597" | "598" => {
            event.category = Category::Firewall;
            f.action = Some("pass".into());
        }
        "38" | "36" | "173" | "174" | "37" => {
            event.category = Category::Firewall;
            f.action = Some("drop".into());
        }
        "537" => {
            event.category = Category::Firewall;
            f.action = Some("close".into());
        }
        "97" => {
            event.category = Category::Squid;
            let Some(t) = tail else { return };
            let Some(m3) = prox.find(t) else { return };
            let Some(code) = cap(t, &m3, 0) else { return };
            f.id = Some(code);
            if let (Some(host), Some(arg)) = (cap(t, &m3, 1), cap(t, &m3, 2)) {
                f.url = Some(format!("{host}{arg}"));
            }
        }
        _ => {}
    }
}

/// OSSEC's `hostname_map` (`isValidChar`).
fn is_hostname_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'/' | b'_' | b'@' | b'(' | b')')
}

/// `OSSECAlert_Decoder`: `ossec: Alert Level: 3; Rule: 5715 - desc;
/// Location: host->/var/log/auth.log; srcip: 1.2.3.4; user: root;  <log>`.
/// Sets the rule id seam, srcip, dstuser, the combined location (also the
/// hostname), and replaces the log with the forwarded one. OSSEC also writes
/// an agent-info file; Palisade does not.
fn ossec_alert(event: &mut Event) {
    let log = event.log().to_vec();
    if !(log.starts_with(b"Alert Level: ") || log.starts_with(b"ossec: Alert Level:")) {
        return;
    }
    let Some(i) = find(&log, b';') else { return };
    let t = &log[i + 1..];
    let Some(i) = find(t, b':') else { return };
    let t = &t[i + 1..];
    let Some(t) = t.strip_prefix(b" ") else {
        return;
    };
    let Some(sp) = find(t, b' ') else { return };
    let rule_id = s(&t[..sp]);
    let t = &t[sp..];
    let Some(i) = find(t, b';') else { return };
    let Some(t) = t[i + 1..].strip_prefix(b" Location: ") else {
        return;
    };
    let Some(i) = find(t, b';') else { return };
    let location = format!("{}|{}", event.location, s(&t[..i]));
    event.location = location.clone();
    event.hostname = Some(location);
    let mut t = &t[i + 1..];
    while t.first() == Some(&b' ') && t.get(1) != Some(&b' ') {
        t = &t[1..];
        let Some(i) = find(t, b';') else { return };
        let v = &t[..i];
        if let Some(ip) = v.strip_prefix(b"srcip: ") {
            event.fields.srcip = Some(s(ip));
        }
        if let Some(u) = v.strip_prefix(b"user: ") {
            event.fields.dstuser = Some(s(u));
        }
        t = &t[i + 1..];
    }
    let n = t.iter().take_while(|&&c| c == b' ').count();
    event.full_log = t[n..].to_vec();
    event.log_offset = 0;
    // OSSEC sets `generated_rule` only when the whole line parsed.
    event
        .fields
        .dynamic
        .insert(OSSEC_ALERT_RULE_ID.into(), rule_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(log: &str) -> Event {
        Event {
            full_log: log.as_bytes().to_vec(),
            location: "stdin".into(),
            ..Event::default()
        }
    }

    #[test]
    fn pf_lines() {
        let mut e = ev(
            "Mar 30 15:33:26.483712 rule 2/(match) pass in on xl0: 140.211.166.3.6667 > 192.168.2.10.16290: P 7408:7677(269) ack 1773 win 2520",
        );
        pf(&mut e);
        let f = &e.fields;
        assert_eq!(f.action.as_deref(), Some("pass"));
        assert_eq!(f.srcip.as_deref(), Some("140.211.166.3"));
        assert_eq!(f.srcport.as_deref(), Some("6667"));
        assert_eq!(f.dstip.as_deref(), Some("192.168.2.10"));
        assert_eq!(f.dstport.as_deref(), Some("16290"));
        assert_eq!(f.protocol.as_deref(), Some("TCP"));
        let mut e = ev(
            "Mar 30 17:47:40.390143 rule 2/(match) block in on lo0: 127.0.0.1 > 127.0.0.1: icmp: echo reply",
        );
        pf(&mut e);
        assert_eq!(e.fields.action.as_deref(), Some("block"));
        assert_eq!(e.fields.srcport, None);
        assert_eq!(e.fields.protocol.as_deref(), Some("ICMP"));
    }

    #[test]
    fn symantec_lines() {
        let mut e = ev(
            "20070717,73614,1=5,11=1.2.3.4,1106=News,60=http://news.bbc.co.uk/,10=userX,1000=212.58.240.42,2=27",
        );
        symantec_ws(&mut e);
        let f = &e.fields;
        assert_eq!(f.srcip.as_deref(), Some("1.2.3.4"));
        assert_eq!(f.url.as_deref(), Some("http://news.bbc.co.uk/"));
        assert_eq!(f.dstuser.as_deref(), Some("userX"));
        assert_eq!(f.id.as_deref(), Some("2=27"));
    }

    #[test]
    fn sonicwall_lines() {
        let mut e = ev(
            "id=firewall sn=000SERIAL time=\"2007-01-03 14:48:06\" fw=1.1.1.1 pri=6 c=262144 m=98 msg=\"Connection Opened\" n=23419 src=2.2.2.2:36701:WAN dst=1.1.1.1:50000:WAN proto=tcp/50000",
        );
        sonicwall(&mut e);
        let f = &e.fields;
        assert_eq!(f.status.as_deref(), Some("6"));
        assert_eq!(f.id.as_deref(), Some("98"));
        assert_eq!(f.srcip.as_deref(), Some("2.2.2.2"));
        assert_eq!(f.srcport.as_deref(), Some("36701"));
        assert_eq!(f.dstip.as_deref(), Some("1.1.1.1"));
        assert_eq!(f.dstport.as_deref(), Some("50000"));
        assert_eq!(f.protocol.as_deref(), Some("tcp"));
        assert_eq!(f.action.as_deref(), Some("pass"));
        assert_eq!(e.category, Category::Firewall);
    }

    #[test]
    fn ossec_alert_line() {
        let mut e = ev(
            "ossec: Alert Level: 5; Rule: 5716 - SSHD authentication failed.; Location: (web01) 10.0.0.5->/var/log/auth.log; srcip: 1.2.3.4; user: root;  Nov 14 22:13:19 web01 sshd[123]: Failed password",
        );
        ossec_alert(&mut e);
        assert_eq!(
            e.fields
                .dynamic
                .get(OSSEC_ALERT_RULE_ID)
                .map(String::as_str),
            Some("5716")
        );
        assert_eq!(e.fields.srcip.as_deref(), Some("1.2.3.4"));
        assert_eq!(e.fields.dstuser.as_deref(), Some("root"));
        assert_eq!(e.location, "stdin|(web01) 10.0.0.5->/var/log/auth.log");
        assert_eq!(e.log(), b"Nov 14 22:13:19 web01 sshd[123]: Failed password");
    }
}
