//! The non-pattern rule conditions: IP lists, `<time>`, `<weekday>`, CDB
//! lists and the compiled rules. Each is parsed once at load time into a
//! form that is cheap to test per event.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::dialect::RulesetDialect;
use crate::event::{Event, FieldName};
use crate::pattern::{Dialect, Pattern};

/// One `<srcip>`/`<dstip>` entry: an address or network, possibly negated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpEntry {
    /// `true` for a leading `!`.
    pub negated: bool,
    /// Network address (masked) and prefix length; `None` for `any`.
    pub net: Option<(IpAddr, u8)>,
}

/// All `<srcip>` (or `<dstip>`) entries of a rule, OSSEC `OS_IPFoundList`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList(pub Vec<IpEntry>);

fn mask_v4(a: u32, bits: u8) -> u32 {
    if bits == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(bits)))
    }
}

fn mask_v6(a: u128, bits: u8) -> u128 {
    if bits == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(bits)))
    }
}

impl IpEntry {
    /// Parses `[!]addr[/bits|/dotted-mask]` or `[!]any`.
    pub fn parse(text: &str) -> Result<IpEntry, String> {
        let t = text.trim();
        let (negated, t) = match t.strip_prefix('!') {
            Some(r) => (true, r.trim_start()),
            None => (false, t),
        };
        if t.eq_ignore_ascii_case("any") {
            return Ok(IpEntry { negated, net: None });
        }
        let (addr, mask) = match t.split_once('/') {
            Some((a, m)) => (a, Some(m)),
            None => (t, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid IP address '{text}'"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u8 = match mask {
            None => max,
            Some(m) => {
                if let Ok(b) = m.parse::<u8>() {
                    if b > max {
                        return Err(format!("invalid netmask in '{text}'"));
                    }
                    b
                } else if let (Ok(std::net::IpAddr::V4(mv4)), true) =
                    (m.parse::<IpAddr>(), ip.is_ipv4())
                {
                    let v = u32::from(mv4);
                    let ones = v.leading_ones();
                    if v.checked_shl(ones).unwrap_or(0) != 0 {
                        return Err(format!("invalid netmask in '{text}'"));
                    }
                    u8::try_from(ones).map_err(|_| format!("invalid netmask in '{text}'"))?
                } else {
                    return Err(format!("invalid netmask in '{text}'"));
                }
            }
        };
        let net = match ip {
            IpAddr::V4(v) => IpAddr::V4(mask_v4(u32::from(v), bits).into()),
            IpAddr::V6(v) => IpAddr::V6(mask_v6(u128::from(v), bits).into()),
        };
        Ok(IpEntry {
            negated,
            net: Some((net, bits)),
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (None, _) => true,
            (Some((IpAddr::V4(n), bits)), IpAddr::V4(a)) => {
                mask_v4(u32::from(a), bits) == u32::from(n)
            }
            (Some((IpAddr::V6(n), bits)), IpAddr::V6(a)) => {
                mask_v6(u128::from(a), bits) == u128::from(n)
            }
            _ => false,
        }
    }
}

impl IpList {
    /// OSSEC `OS_IPFoundList`: the first entry containing the address
    /// decides (`!` = no match); if none does, the opposite of the last
    /// entry's polarity. An address that does not parse never matches.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let Some(ip) = value.and_then(|v| v.trim().parse::<IpAddr>().ok()) else {
            return false;
        };
        for e in &self.0 {
            if e.contains(ip) {
                return !e.negated;
            }
        }
        self.0.last().is_some_and(|e| e.negated)
    }
}

/// A `<time>` range in minutes since midnight, after OSSEC's swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// Start minute (inclusive).
    pub start: u32,
    /// End minute (inclusive).
    pub end: u32,
    /// Match outside the range instead of inside.
    pub negated: bool,
}

fn parse_clock(s: &str) -> Option<u32> {
    let s = s.trim().to_ascii_lowercase();
    let (body, pm, am) = if let Some(b) = s.strip_suffix("pm") {
        (b.trim().to_string(), true, false)
    } else if let Some(b) = s.strip_suffix("am") {
        (b.trim().to_string(), false, true)
    } else {
        (s.clone(), false, false)
    };
    let (h, m) = match body.split_once(':') {
        Some((h, m)) => (h.trim().parse::<u32>().ok()?, m.trim().parse::<u32>().ok()?),
        None => (body.trim().parse::<u32>().ok()?, 0),
    };
    if m > 59 {
        return None;
    }
    let h = if pm {
        if h == 0 || h > 12 {
            return None;
        }
        if h == 12 { 12 } else { h + 12 }
    } else if am {
        if h == 0 || h > 12 {
            return None;
        }
        if h == 12 { 0 } else { h }
    } else {
        h
    };
    if h > 23 {
        return None;
    }
    Some(h * 60 + m)
}

impl TimeRange {
    /// OSSEC `OS_IsValidTime`: `hh:mm-hh:mm`, `hh-hh`, `h[:mm] am/pm - ...`,
    /// optional leading `!`. A range whose start is after its end is
    /// swapped and negated (so a wrap-around range excludes its endpoints),
    /// and a `!` on such a range is lost: OSSEC's bug, kept.
    pub fn parse(text: &str) -> Result<TimeRange, String> {
        let t = text.trim();
        let (negated, t) = match t.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, t),
        };
        let (a, b) = t
            .split_once('-')
            .ok_or_else(|| format!("invalid time range '{text}'"))?;
        let start = parse_clock(a).ok_or_else(|| format!("invalid time '{a}' in '{text}'"))?;
        let end = parse_clock(b).ok_or_else(|| format!("invalid time '{b}' in '{text}'"))?;
        if start > end {
            Ok(TimeRange {
                start: end,
                end: start,
                negated: true,
            })
        } else {
            Ok(TimeRange {
                start,
                end,
                negated,
            })
        }
    }

    /// Whether `minute` (since local midnight) is on time.
    pub fn matches(&self, minute: u32) -> bool {
        let inside = minute >= self.start && minute <= self.end;
        inside != self.negated
    }
}

/// A `<weekday>` set: bit 0 = Sunday .. bit 6 = Saturday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weekdays(pub u8);

impl Weekdays {
    /// OSSEC `OS_IsValidDay`: day names (full or three letters),
    /// `weekdays`, `weekends`, separated by commas or spaces. A leading `!`
    /// is rejected, as OSSEC's parser does (it never skips it).
    pub fn parse(text: &str) -> Result<Weekdays, String> {
        let mut bits = 0u8;
        for word in text
            .split([',', ' '])
            .map(str::trim)
            .filter(|w| !w.is_empty())
        {
            let w = word.to_ascii_lowercase();
            let b = match w.as_str() {
                "sunday" | "sun" => 1,
                "monday" | "mon" => 1 << 1,
                "tuesday" | "tue" => 1 << 2,
                "wednesday" | "wed" => 1 << 3,
                "thursday" | "thu" => 1 << 4,
                "friday" | "fri" => 1 << 5,
                "saturday" | "sat" => 1 << 6,
                "weekdays" => 0b0011_1110,
                "weekends" => 0b0100_0001,
                _ => return Err(format!("invalid weekday '{word}' (OSSEC accepts no '!')")),
            };
            bits |= b;
        }
        if bits == 0 {
            return Err(format!("invalid weekday '{text}'"));
        }
        Ok(Weekdays(bits))
    }

    /// `weekday`: 0 = Sunday.
    pub fn matches(&self, weekday: u8) -> bool {
        weekday < 7 && self.0 & (1 << weekday) != 0
    }
}

/// The event field a `<list>` looks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListField {
    /// `srcip`
    SrcIp,
    /// `srcport`
    SrcPort,
    /// `dstip`
    DstIp,
    /// `dstport`
    DstPort,
    /// `user`: srcuser first, then dstuser (the opposite of `<user>`).
    User,
    /// `url`
    Url,
    /// `id`
    Id,
    /// `hostname`
    Hostname,
    /// `program_name`
    ProgramName,
    /// `status`
    Status,
    /// `action`
    Action,
    /// Any other decoded field (Wazuh: a dynamic field by name).
    Named(FieldName),
}

impl ListField {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "srcip" => Self::SrcIp,
            "srcport" => Self::SrcPort,
            "dstip" => Self::DstIp,
            "dstport" => Self::DstPort,
            "user" => Self::User,
            "url" => Self::Url,
            "id" => Self::Id,
            "hostname" => Self::Hostname,
            "program_name" => Self::ProgramName,
            "status" => Self::Status,
            "action" => Self::Action,
            _ => return None,
        })
    }

    fn get<'e>(&self, ev: &'e Event) -> Option<&'e str> {
        let f = &ev.fields;
        match self {
            Self::SrcIp => f.srcip.as_deref(),
            Self::SrcPort => f.srcport.as_deref(),
            Self::DstIp => f.dstip.as_deref(),
            Self::DstPort => f.dstport.as_deref(),
            Self::User => f.srcuser.as_deref().or(f.dstuser.as_deref()),
            Self::Url => f.url.as_deref(),
            Self::Id => f.id.as_deref(),
            Self::Hostname => ev.hostname.as_deref(),
            Self::ProgramName => ev.program_name.as_deref(),
            Self::Status => f.status.as_deref(),
            Self::Action => f.action.as_deref(),
            Self::Named(name) => f.get(name),
        }
    }
}

/// `<list lookup=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// `match_key` (default).
    MatchKey,
    /// `not_match_key`.
    NotMatchKey,
    /// `match_key_value` (with `check_value`).
    MatchKeyValue,
    /// `address_match_key`.
    AddressMatchKey,
    /// `not_address_match_key`.
    NotAddressMatchKey,
    /// `address_match_key_value`: OSSEC inverts its result (bug, kept).
    AddressMatchKeyValue,
}

/// A loaded CDB-style list: `key:value` lines of a text file.
pub type KeyList = HashMap<String, String>;

/// Reads a list source: one `key:value` per line, lines without `:` are
/// skipped, the value may be empty (OSSEC `ossec-makelists`).
pub fn parse_list(text: &str) -> KeyList {
    let mut m = KeyList::new();
    for line in text.lines() {
        // A key may be quoted to hold a ':' (an IPv6 address), as Wazuh's
        // list compiler allows.
        if let Some(rest) = line.strip_prefix('"')
            && let Some((k, after)) = rest.split_once('"')
        {
            let v = after.strip_prefix(':').unwrap_or(after);
            m.insert(k.to_string(), v.to_string());
        } else if let Some((k, v)) = line.split_once(':') {
            m.insert(k.to_string(), v.to_string());
        }
    }
    m
}

/// One `<list>` condition.
#[derive(Debug)]
pub struct ListCheck {
    /// Field looked up.
    pub field: ListField,
    /// Lookup kind.
    pub lookup: Lookup,
    /// `check_value` (OS_Match) for the `*_value` lookups.
    pub check_value: Option<Pattern>,
    /// The path as written in the rule (the key into the loaded lists).
    pub path: String,
}

impl ListCheck {
    /// Parses the `<list>` element's attributes.
    pub fn parse(
        path: &str,
        field: Option<&str>,
        lookup: Option<&str>,
        check_value: Option<&str>,
        dialect: RulesetDialect,
    ) -> Result<ListCheck, String> {
        let field = field.ok_or("list without a 'field' attribute")?;
        let field = match ListField::parse(field) {
            Some(f) => f,
            None if dialect.is_wazuh() && !field.trim().is_empty() => {
                ListField::Named(FieldName::parse(field.trim()))
            }
            None => return Err(format!("invalid list field '{field}'")),
        };
        let lookup = match lookup.unwrap_or("match_key") {
            "match_key" => Lookup::MatchKey,
            "not_match_key" => Lookup::NotMatchKey,
            "match_key_value" => Lookup::MatchKeyValue,
            "address_match_key" => Lookup::AddressMatchKey,
            "not_address_match_key" => Lookup::NotAddressMatchKey,
            "address_match_key_value" => Lookup::AddressMatchKeyValue,
            other => return Err(format!("invalid list lookup '{other}'")),
        };
        let check_value = match check_value {
            Some(v) => Some(
                Pattern::new(Dialect::OsMatch, v)
                    .map_err(|e| format!("list check_value: {e:?}"))?,
            ),
            None => None,
        };
        if matches!(lookup, Lookup::MatchKeyValue | Lookup::AddressMatchKeyValue)
            && check_value.is_none()
        {
            return Err("list lookup *_value needs a 'check_value' attribute".to_string());
        }
        Ok(ListCheck {
            field,
            lookup,
            check_value,
            path: path.trim().to_string(),
        })
    }

    /// Runs the lookup against `list` (`None` = not loaded, i.e. empty).
    pub fn matches(&self, ev: &Event, list: Option<&KeyList>) -> bool {
        let Some(value) = self.field.get(ev) else {
            return false;
        };
        let empty = KeyList::new();
        let list = list.unwrap_or(&empty);
        let value_ok = |v: &String| {
            self.check_value
                .as_ref()
                .is_some_and(|p| p.is_match(v.as_bytes()))
        };
        match self.lookup {
            Lookup::MatchKey => list.contains_key(value),
            Lookup::NotMatchKey => !list.contains_key(value),
            Lookup::MatchKeyValue => list.get(value).is_some_and(value_ok),
            Lookup::AddressMatchKey => address_lookup(list, value).is_some(),
            Lookup::NotAddressMatchKey => address_lookup(list, value).is_none(),
            Lookup::AddressMatchKeyValue => !address_lookup(list, value).is_some_and(value_ok),
        }
    }
}

/// `10.1.2.3` tries `10.1.2.3`, `10.1.2.`, `10.1.`, `10.`.
fn address_lookup<'l>(list: &'l KeyList, ip: &str) -> Option<&'l String> {
    if let Some(v) = list.get(ip) {
        return Some(v);
    }
    let mut end = ip.len();
    while let Some(dot) = ip[..end].rfind('.') {
        if let Some(v) = list.get(&ip[..=dot]) {
            return Some(v);
        }
        end = dot;
    }
    None
}

/// The C functions OSSEC's `<compiled_rule>` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompiledRule {
    /// `comp_srcuser_dstuser`: matches when either user is missing or both
    /// are equal.
    SrcuserDstuser,
    /// `check_id_size`: `id` at least 10 characters.
    CheckIdSize,
    /// `comp_mswin_targetuser_calleruser_diff`.
    MswinTargetCallerDiff,
    /// `is_simple_http_request`: url is `/` or has no `?` (3.8 form).
    IsSimpleHttpRequest,
    /// `is_valid_crawler`: `log` starts with a known crawler prefix. The
    /// reverse-and-forward DNS check of OSSEC is not done (the engine does
    /// no I/O).
    IsValidCrawler,
}

impl CompiledRule {
    /// By C function name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.trim() {
            "comp_srcuser_dstuser" => Self::SrcuserDstuser,
            "check_id_size" => Self::CheckIdSize,
            "comp_mswin_targetuser_calleruser_diff" => Self::MswinTargetCallerDiff,
            "is_simple_http_request" => Self::IsSimpleHttpRequest,
            "is_valid_crawler" => Self::IsValidCrawler,
            _ => return None,
        })
    }

    /// Runs the function.
    pub fn matches(&self, ev: &Event) -> bool {
        let f = &ev.fields;
        match self {
            Self::SrcuserDstuser => match (&f.srcuser, &f.dstuser) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            },
            Self::CheckIdSize => f.id.as_ref().is_some_and(|id| id.len() >= 10),
            Self::MswinTargetCallerDiff => mswin_diff(ev.log()),
            Self::IsSimpleHttpRequest => {
                f.url.as_ref().is_some_and(|u| u == "/" || !u.contains('?'))
            }
            Self::IsValidCrawler => {
                const PREFIXES: [&[u8]; 7] = [
                    b"72.14.", b"209.85.", b"65.55.", b"207.46.", b"74.6.", b"72.30.", b"67.195.",
                ];
                let log = ev.log();
                PREFIXES.iter().any(|p| log.starts_with(p))
            }
        }
    }
}

fn mswin_diff(log: &[u8]) -> bool {
    let find = |needle: &[u8]| log.windows(needle.len()).position(|w| w == needle);
    let (Some(t), Some(c)) = (find(b"Target Account Name"), find(b"Caller User Name")) else {
        return false;
    };
    let colon = |from: usize| {
        log[from..]
            .iter()
            .position(|&b| b == b':')
            .map(|p| from + p + 1)
    };
    let (Some(mut t), Some(mut c)) = (colon(t), colon(c)) else {
        return false;
    };
    while t < log.len() {
        if log.get(t) != log.get(c) {
            return true;
        }
        if log[t] == b'\t' || (log[t] == b' ' && log.get(t + 1) == Some(&b' ')) {
            break;
        }
        t += 1;
        c += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> IpList {
        IpList(entries.iter().map(|e| IpEntry::parse(e).unwrap()).collect())
    }

    #[test]
    fn ip_lists_follow_os_ipfoundlist() {
        let l = list(&["10.0.0.0/8"]);
        assert!(l.matches(Some("10.1.2.3")));
        assert!(!l.matches(Some("11.1.2.3")));
        assert!(!l.matches(None));
        assert!(!l.matches(Some("not-an-ip")));
        // Negated only: everything else matches.
        let l = list(&["!192.168.0.0/16"]);
        assert!(!l.matches(Some("192.168.1.1")));
        assert!(l.matches(Some("8.8.8.8")));
        // First containing entry decides.
        let l = list(&["!10.1.0.0/16", "10.0.0.0/8"]);
        assert!(!l.matches(Some("10.1.2.3")));
        assert!(l.matches(Some("10.2.2.3")));
        assert!(!l.matches(Some("11.0.0.1")));
        let l = list(&["192.168.0.0/255.255.0.0", "2001:db8::/32"]);
        assert!(l.matches(Some("192.168.7.7")));
        assert!(l.matches(Some("2001:db8::1")));
        assert!(!l.matches(Some("2001:db9::1")));
        assert!(list(&["any"]).matches(Some("1.1.1.1")));
        assert!(IpEntry::parse("10.0.0.0/33").is_err());
        assert!(IpEntry::parse("10.0.0.0/255.0.255.0").is_err());
        assert!(IpEntry::parse("nope").is_err());
    }

    #[test]
    fn time_ranges() {
        let r = TimeRange::parse("6 pm - 8:30 am").unwrap();
        assert!(!r.matches(10 * 60));
        assert!(r.matches(19 * 60));
        assert!(r.matches(7 * 60));
        // Wrapped ranges exclude their endpoints.
        assert!(!r.matches(18 * 60));
        assert!(!r.matches(8 * 60 + 30));
        let r = TimeRange::parse("9:00-17:00").unwrap();
        assert!(r.matches(9 * 60) && r.matches(17 * 60) && !r.matches(17 * 60 + 1));
        let r = TimeRange::parse("!9-17").unwrap();
        assert!(!r.matches(12 * 60) && r.matches(18 * 60));
        // '!' on a wrapped range is lost (OSSEC bug).
        let r = TimeRange::parse("!18-8").unwrap();
        assert!(r.matches(20 * 60));
        let r = TimeRange::parse("12 am - 12 pm").unwrap();
        assert_eq!((r.start, r.end), (0, 720));
        assert!(TimeRange::parse("25:00-26:00").is_err());
        assert!(TimeRange::parse("noon").is_err());
    }

    #[test]
    fn weekdays() {
        let w = Weekdays::parse("weekends").unwrap();
        assert!(w.matches(0) && w.matches(6) && !w.matches(3));
        let w = Weekdays::parse("mon, Tuesday fri").unwrap();
        assert!(w.matches(1) && w.matches(2) && w.matches(5) && !w.matches(3));
        assert!(Weekdays::parse("!monday").is_err());
        assert!(Weekdays::parse("").is_err());
    }

    #[test]
    fn lists() {
        let l = parse_list("10.1.2.3:bad\n10.2.:net\nnocolon\nuser1:\n");
        assert_eq!(l.len(), 3);
        let mut ev = Event::default();
        ev.fields.srcip = Some("10.2.9.9".into());
        let c = ListCheck::parse(
            "x",
            Some("srcip"),
            Some("address_match_key"),
            None,
            RulesetDialect::Ossec,
        )
        .unwrap();
        assert!(c.matches(&ev, Some(&l)));
        let c = ListCheck::parse(
            "x",
            Some("srcip"),
            Some("match_key"),
            None,
            RulesetDialect::Ossec,
        )
        .unwrap();
        assert!(!c.matches(&ev, Some(&l)));
        let c = ListCheck::parse(
            "x",
            Some("srcip"),
            Some("not_match_key"),
            None,
            RulesetDialect::Ossec,
        )
        .unwrap();
        assert!(c.matches(&ev, None));
        ev.fields.srcuser = Some("user1".into());
        let c = ListCheck::parse("x", Some("user"), None, None, RulesetDialect::Ossec).unwrap();
        assert!(c.matches(&ev, Some(&l)));
        assert!(ListCheck::parse("x", Some("nope"), None, None, RulesetDialect::Ossec).is_err());
        assert!(ListCheck::parse("x", None, None, None, RulesetDialect::Ossec).is_err());
    }

    #[test]
    fn compiled_rules() {
        let mut ev = Event::default();
        assert!(CompiledRule::SrcuserDstuser.matches(&ev));
        ev.fields.srcuser = Some("a".into());
        ev.fields.dstuser = Some("b".into());
        assert!(!CompiledRule::SrcuserDstuser.matches(&ev));
        ev.fields.url = Some("/index.html".into());
        assert!(CompiledRule::IsSimpleHttpRequest.matches(&ev));
        ev.fields.url = Some("/a?b".into());
        assert!(!CompiledRule::IsSimpleHttpRequest.matches(&ev));
        ev.full_log = b"66.249.1.1 x".to_vec();
        assert!(!CompiledRule::IsValidCrawler.matches(&ev));
        ev.full_log = b"65.55.1.1 x".to_vec();
        assert!(CompiledRule::IsValidCrawler.matches(&ev));
        ev.full_log = b"Target Account Name: bob\tCaller User Name: alice\t".to_vec();
        assert!(CompiledRule::MswinTargetCallerDiff.matches(&ev));
        ev.full_log = b"Target Account Name: bob\tCaller User Name: bob\t".to_vec();
        assert!(!CompiledRule::MswinTargetCallerDiff.matches(&ev));
        assert!(CompiledRule::parse("nope").is_none());
    }
}
