//! A log line's own timestamp, for `time_source = "event"` (issue #4).
//!
//! OSSEC always correlates on arrival time. When logs are replayed or arrive
//! late (an agent that was offline, a spool being drained), arrival time
//! squeezes hours of events into seconds and frequency rules fire wrongly;
//! the line's own timestamp is then the better clock. This module finds it.
//!
//! Pure: the reference "now" (used to infer the year of syslog stamps, which
//! have none) and the zone of stamps without an offset are parameters.
//!
//! Recognised, in this order:
//! 1. at the start of the line: ISO 8601 / RFC 3339
//!    (`2024-03-10T13:55:36`, `T` or space, optional `.frac`/`,frac`,
//!    optional `Z`/`±hh:mm`/`±hhmm`/`±hh`), syslog `Mar 10 13:55:36`
//!    (`Mar  3` padded too), `2024 Mar 10 13:55:36`, and Apache error
//!    `[Sun Mar 10 13:55:36 2024]` (optionally with microseconds);
//! 2. anywhere in the first [`SCAN_LIMIT`] bytes: Apache/nginx access
//!    `[10/Mar/2024:13:55:36 +0000]`, then ISO 8601 starting at a word
//!    boundary (JSON logs, RFC 5424 after its `<pri>1 `).

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

/// How far into a line the unanchored forms are searched, so that a huge
/// line costs bounded time.
pub const SCAN_LIMIT: usize = 1024;

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// The line's own time, or `None` when it carries no recognised timestamp.
///
/// `reference` is "now" (for the year of syslog stamps: the year that puts
/// the stamp closest to `reference` wins, so a `Dec 31` line read on
/// January 1st belongs to the previous year and a `Jan 1` line read on
/// December 31st to the next); `zone` applies to stamps without an offset.
pub fn event_time(line: &[u8], reference: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
    let line = trim_start(line);
    if let Some(t) = iso8601_at(line, zone) {
        return Some(t);
    }
    if let Some(t) = syslog_at(line, reference, zone) {
        return Some(t);
    }
    if let Some(t) = year_syslog_at(line, zone) {
        return Some(t);
    }
    if let Some(t) = apache_error_at(line, zone) {
        return Some(t);
    }
    let head = &line[..line.len().min(SCAN_LIMIT)];
    for (i, &c) in head.iter().enumerate() {
        if c == b'['
            && let Some(t) = apache_access_at(&line[i..])
        {
            return Some(t);
        }
    }
    for (i, &c) in head.iter().enumerate() {
        if c.is_ascii_digit()
            && (i == 0 || !head[i - 1].is_ascii_alphanumeric())
            && let Some(t) = iso8601_at(&line[i..], zone)
        {
            return Some(t);
        }
    }
    None
}

/// [`event_time`] as milliseconds since the Unix epoch.
pub fn event_time_ms(line: &[u8], reference: Timestamp, zone: &TimeZone) -> Option<i64> {
    event_time(line, reference, zone).map(Timestamp::as_millisecond)
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &s[n..]
}

/// Reads exactly `n` ASCII digits at `i`.
fn num(s: &[u8], i: usize, n: usize) -> Option<i32> {
    let d = s.get(i..i + n)?;
    let mut v: i32 = 0;
    for &c in d {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i32::from(c - b'0');
    }
    Some(v)
}

fn byte(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

fn month(s: &[u8], i: usize) -> Option<i8> {
    let m = s.get(i..i + 3)?;
    MONTHS
        .iter()
        .position(|name| name.eq_ignore_ascii_case(m))
        .and_then(|p| i8::try_from(p + 1).ok())
}

fn datetime(y: i32, mo: i8, d: i8, h: i32, mi: i32, s: i32, nanos: i32) -> Option<DateTime> {
    // A leap second (":60") is read as the last second of the minute.
    let s = s.min(59);
    DateTime::new(
        i16::try_from(y).ok()?,
        mo,
        d,
        i8::try_from(h).ok()?,
        i8::try_from(mi).ok()?,
        i8::try_from(s).ok()?,
        nanos,
    )
    .ok()
}

fn checked_datetime(
    y: i32,
    mo: i8,
    d: i8,
    h: i32,
    mi: i32,
    s: i32,
    nanos: i32,
) -> Option<DateTime> {
    if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..=60).contains(&s) {
        return None;
    }
    if !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    datetime(y, mo, d, h, mi, s, nanos)
}

/// Fraction digits after `.`/`,` at `i`: (nanoseconds, bytes consumed).
fn fraction(s: &[u8], i: usize) -> (i32, usize) {
    if !matches!(byte(s, i), b'.' | b',') || !byte(s, i + 1).is_ascii_digit() {
        return (0, 0);
    }
    let mut n = 0;
    let mut nanos: i32 = 0;
    while byte(s, i + 1 + n).is_ascii_digit() {
        if n < 9 {
            nanos = nanos * 10 + i32::from(byte(s, i + 1 + n) - b'0');
        }
        n += 1;
    }
    let mut scale = n.min(9);
    while scale < 9 {
        nanos *= 10;
        scale += 1;
    }
    (nanos, n + 1)
}

/// `Z`, `±hh:mm`, `±hhmm` or `±hh` at `i`: (offset seconds, bytes consumed).
fn zone_suffix(s: &[u8], i: usize) -> Option<(i32, usize)> {
    match byte(s, i) {
        b'Z' | b'z' => Some((0, 1)),
        sign @ (b'+' | b'-') => {
            let h = num(s, i + 1, 2)?;
            let (m, used) = if byte(s, i + 3) == b':' {
                (num(s, i + 4, 2)?, 6)
            } else if let Some(m) = num(s, i + 3, 2) {
                (m, 5)
            } else {
                (0, 3)
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            Some((if sign == b'-' { -secs } else { secs }, used))
        }
        _ => None,
    }
}

fn resolve(dt: DateTime, offset: Option<i32>, zone: &TimeZone) -> Option<Timestamp> {
    match offset {
        Some(secs) => Offset::from_seconds(secs).ok()?.to_timestamp(dt).ok(),
        None => zone.to_timestamp(dt).ok(),
    }
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.frac][zone]` at the start of `s`.
fn iso8601_at(s: &[u8], zone: &TimeZone) -> Option<Timestamp> {
    let y = num(s, 0, 4)?;
    if byte(s, 4) != b'-' || byte(s, 7) != b'-' || !matches!(byte(s, 10), b'T' | b't' | b' ') {
        return None;
    }
    let mo = i8::try_from(num(s, 5, 2)?).ok()?;
    let d = i8::try_from(num(s, 8, 2)?).ok()?;
    let h = num(s, 11, 2)?;
    if byte(s, 13) != b':' || byte(s, 16) != b':' {
        return None;
    }
    let mi = num(s, 14, 2)?;
    let sec = num(s, 17, 2)?;
    let (nanos, used) = fraction(s, 19);
    let dt = checked_datetime(y, mo, d, h, mi, sec, nanos)?;
    let offset = zone_suffix(s, 19 + used).map(|(o, _)| o);
    resolve(dt, offset, zone)
}

/// `HH:MM:SS` at `i`.
fn clock(s: &[u8], i: usize) -> Option<(i32, i32, i32)> {
    if byte(s, i + 2) != b':' || byte(s, i + 5) != b':' {
        return None;
    }
    Some((num(s, i, 2)?, num(s, i + 3, 2)?, num(s, i + 6, 2)?))
}

/// Day of month as `dd`, ` d` or `0d` at `i` (two bytes).
fn day2(s: &[u8], i: usize) -> Option<i8> {
    let d = if byte(s, i) == b' ' {
        num(s, i + 1, 1)?
    } else {
        num(s, i, 2)?
    };
    i8::try_from(d).ok()
}

/// `Mmm dd HH:MM:SS` at the start of `s`, year inferred from `reference`.
fn syslog_at(s: &[u8], reference: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
    let mo = month(s, 0)?;
    if byte(s, 3) != b' ' || byte(s, 6) != b' ' {
        return None;
    }
    let d = day2(s, 4)?;
    let (h, mi, sec) = clock(s, 7)?;
    let (nanos, _) = fraction(s, 15);
    let ref_year = i32::from(zone.to_datetime(reference).year());
    let mut best: Option<(i128, Timestamp)> = None;
    for y in [ref_year - 1, ref_year, ref_year + 1] {
        let Some(dt) = checked_datetime(y, mo, d, h, mi, sec, nanos) else {
            continue;
        };
        let Some(t) = resolve(dt, None, zone) else {
            continue;
        };
        let dist = (i128::from(t.as_second()) - i128::from(reference.as_second())).abs();
        if best.is_none_or(|(b, _)| dist < b) {
            best = Some((dist, t));
        }
    }
    best.map(|(_, t)| t)
}

/// `YYYY Mmm dd HH:MM:SS` at the start of `s`.
fn year_syslog_at(s: &[u8], zone: &TimeZone) -> Option<Timestamp> {
    let y = num(s, 0, 4)?;
    if byte(s, 4) != b' ' || byte(s, 8) != b' ' || byte(s, 11) != b' ' {
        return None;
    }
    let mo = month(s, 5)?;
    let d = day2(s, 9)?;
    let (h, mi, sec) = clock(s, 12)?;
    resolve(checked_datetime(y, mo, d, h, mi, sec, 0)?, None, zone)
}

/// Apache error log `[Www Mmm dd HH:MM:SS[.micros] YYYY]` at the start.
fn apache_error_at(s: &[u8], zone: &TimeZone) -> Option<Timestamp> {
    if byte(s, 0) != b'[' || byte(s, 4) != b' ' || byte(s, 8) != b' ' || byte(s, 11) != b' ' {
        return None;
    }
    let mo = month(s, 5)?;
    let d = day2(s, 9)?;
    let (h, mi, sec) = clock(s, 12)?;
    let (nanos, used) = fraction(s, 20);
    let at = 20 + used;
    if byte(s, at) != b' ' {
        return None;
    }
    let y = num(s, at + 1, 4)?;
    if byte(s, at + 5) != b']' {
        return None;
    }
    resolve(checked_datetime(y, mo, d, h, mi, sec, nanos)?, None, zone)
}

/// Apache/nginx access `[dd/Mmm/YYYY:HH:MM:SS ±hhmm]` at the start of `s`.
fn apache_access_at(s: &[u8]) -> Option<Timestamp> {
    if byte(s, 0) != b'[' || byte(s, 3) != b'/' || byte(s, 7) != b'/' || byte(s, 12) != b':' {
        return None;
    }
    let d = i8::try_from(num(s, 1, 2)?).ok()?;
    let mo = month(s, 4)?;
    let y = num(s, 8, 4)?;
    let (h, mi, sec) = clock(s, 13)?;
    let (nanos, used) = fraction(s, 21);
    let z = 21 + used;
    if byte(s, z) != b' ' {
        return None;
    }
    let (offset, zl) = zone_suffix(s, z + 1)?;
    if byte(s, z + 1 + zl) != b']' {
        return None;
    }
    let dt = checked_datetime(y, mo, d, h, mi, sec, nanos)?;
    Offset::from_seconds(offset).ok()?.to_timestamp(dt).ok()
}

/// Which clock correlation runs on (`time_source` in the manager's config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeSource {
    /// The time the event arrived (OSSEC's behaviour).
    #[default]
    Arrival,
    /// The line's own timestamp, falling back to arrival time.
    Event,
}

/// The time to judge an event at, and whether the event's own time was
/// wanted but missing (the caller counts those and warns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JudgeTime {
    /// The time to pass to the engine.
    pub time: Timestamp,
    /// `true` when `TimeSource::Event` found no timestamp in the line.
    pub fell_back: bool,
}

/// The time an event is judged at under `source`: its arrival time, or
/// (for [`TimeSource::Event`]) the timestamp in its full line as received,
/// with arrival time as the reference for the year and the fallback when
/// the line carries none.
pub fn judge_time(
    event: &crate::event::Event,
    arrival: Timestamp,
    source: TimeSource,
    zone: &TimeZone,
) -> JudgeTime {
    if source == TimeSource::Arrival {
        return JudgeTime {
            time: arrival,
            fell_back: false,
        };
    }
    match event_time(&event.full_log, arrival, zone) {
        Some(time) => JudgeTime {
            time,
            fell_back: false,
        },
        None => JudgeTime {
            time: arrival,
            fell_back: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    fn t(line: &str, now: &str, zone: &TimeZone) -> Option<Timestamp> {
        event_time(line.as_bytes(), ts(now), zone)
    }

    #[test]
    fn apache_access() {
        let got = t(
            r#"1.2.3.4 - - [10/Mar/2024:13:55:36 +0000] "GET / HTTP/1.1" 200 1"#,
            "2030-01-01T00:00:00Z",
            &utc(),
        );
        assert_eq!(got, Some(ts("2024-03-10T13:55:36Z")));
        let got = t(
            r#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1"#,
            "2030-01-01T00:00:00Z",
            &utc(),
        );
        assert_eq!(got, Some(ts("2000-10-10T20:55:36Z")));
        assert_eq!(
            event_time_ms(
                b"x [10/Mar/2024:13:55:36 +0100] y",
                ts("2024-01-01T00:00:00Z"),
                &utc()
            ),
            Some(ts("2024-03-10T12:55:36Z").as_millisecond())
        );
    }

    #[test]
    fn syslog_same_year() {
        let got = t(
            "Mar 10 13:55:36 host sshd[1]: x",
            "2024-06-01T00:00:00Z",
            &utc(),
        );
        assert_eq!(got, Some(ts("2024-03-10T13:55:36Z")));
        let got = t("Mar  3 01:02:03 host x", "2024-06-01T00:00:00Z", &utc());
        assert_eq!(got, Some(ts("2024-03-03T01:02:03Z")));
    }

    #[test]
    fn syslog_december_line_read_in_january() {
        let got = t("Dec 31 23:59:58 h p: x", "2025-01-01T00:00:05Z", &utc());
        assert_eq!(got, Some(ts("2024-12-31T23:59:58Z")));
    }

    #[test]
    fn syslog_january_line_read_in_december() {
        // A sender whose clock is slightly ahead, across New Year.
        let got = t("Jan  1 00:00:03 h p: x", "2024-12-31T23:59:59Z", &utc());
        assert_eq!(got, Some(ts("2025-01-01T00:00:03Z")));
    }

    #[test]
    fn syslog_uses_local_zone() {
        let zone = TimeZone::fixed(Offset::from_seconds(2 * 3600).unwrap());
        let got = t("Mar 10 13:55:36 h p: x", "2024-06-01T00:00:00Z", &zone);
        assert_eq!(got, Some(ts("2024-03-10T11:55:36Z")));
    }

    #[test]
    fn iso_8601_variants() {
        let now = "2030-01-01T00:00:00Z";
        let zone = TimeZone::fixed(Offset::from_seconds(-5 * 3600).unwrap());
        assert_eq!(
            t("2024-03-10T13:55:36Z x", now, &zone),
            Some(ts("2024-03-10T13:55:36Z"))
        );
        assert_eq!(
            t("2024-03-10T13:55:36+02:00 x", now, &zone),
            Some(ts("2024-03-10T11:55:36Z"))
        );
        assert_eq!(
            t("2024-03-10T13:55:36-0400 x", now, &zone),
            Some(ts("2024-03-10T17:55:36Z"))
        );
        assert_eq!(
            t("2024-03-10T13:55:36.250Z x", now, &zone).map(Timestamp::as_millisecond),
            Some(ts("2024-03-10T13:55:36.25Z").as_millisecond())
        );
        assert_eq!(
            t("2009-05-22T09:36:46,214994-07:00 h p: x", now, &zone),
            Some(ts("2009-05-22T16:36:46.214994Z"))
        );
        // No zone: local.
        assert_eq!(
            t("2024-03-10 13:55:36 x", now, &zone),
            Some(ts("2024-03-10T18:55:36Z"))
        );
        assert_eq!(
            t("2024-03-10T13:55:36", now, &zone),
            Some(ts("2024-03-10T18:55:36Z"))
        );
    }

    #[test]
    fn iso_inside_line() {
        let got = t(
            r#"{"time":"2024-03-10T13:55:36Z","msg":"x"}"#,
            "2030-01-01T00:00:00Z",
            &utc(),
        );
        assert_eq!(got, Some(ts("2024-03-10T13:55:36Z")));
        let got = t(
            "<34>1 2003-10-11T22:14:15.003Z mymachine su - x",
            "2030-01-01T00:00:00Z",
            &utc(),
        );
        assert_eq!(got, Some(ts("2003-10-11T22:14:15.003Z")));
    }

    #[test]
    fn other_header_forms() {
        let now = "2030-01-01T00:00:00Z";
        assert_eq!(
            t("2015 Dec 29 10:00:01 h p: x", now, &utc()),
            Some(ts("2015-12-29T10:00:01Z"))
        );
        assert_eq!(
            t("[Fri Feb 11 18:06:35 2004] [warn] x", now, &utc()),
            Some(ts("2004-02-11T18:06:35Z"))
        );
        assert_eq!(
            t(
                "[Sun Mar 10 13:55:36.123456 2024] [core:error] x",
                now,
                &utc()
            ),
            Some(ts("2024-03-10T13:55:36.123456Z"))
        );
    }

    #[test]
    fn none_when_absent_or_invalid() {
        let now = "2024-06-01T00:00:00Z";
        for line in [
            "",
            "hello world",
            "Foo 10 13:55:36 x",
            "Mar 10 25:55:36 x",
            "2024-13-10T13:55:36Z",
            "2024-02-30T13:55:36Z",
            "[10/Mar/2024:13:55:36] no zone",
            "a2024-03-10T13:55:36Z",
            "Feb 30 10:00:00 x",
        ] {
            assert_eq!(t(line, now, &utc()), None, "{line}");
        }
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        let now = ts("2024-06-01T00:00:00Z");
        let mut big = vec![b'['; 1 << 20];
        big.extend_from_slice(b"10/Mar/2024:13:55:36 +0000]");
        // Beyond the scan limit: not found, and fast.
        assert_eq!(event_time(&big, now, &utc()), None);
        for line in [
            &[0xffu8, 0xfe][..],
            b"\0\0\0",
            b"9999-99-99T99:99:99Z",
            b"[99/Mar/9999:99:99:99 +9999]",
        ] {
            let _ = event_time(line, now, &utc());
        }
    }

    #[test]
    fn judge_time_uses_the_line_or_falls_back() {
        use crate::predecode::predecode;
        let arrival: Timestamp = "2024-03-10T15:00:00Z".parse().unwrap();
        let ev = predecode(
            br#"1.2.3.4 - - [10/Mar/2024:13:55:36 +0000] "GET / HTTP/1.1" 404 1 "-" "x""#,
            "/var/log/access.log",
            "m",
        );
        let own: Timestamp = "2024-03-10T13:55:36Z".parse().unwrap();
        let j = judge_time(&ev, arrival, TimeSource::Event, &utc());
        assert_eq!((j.time, j.fell_back), (own, false));
        let j = judge_time(&ev, arrival, TimeSource::Arrival, &utc());
        assert_eq!((j.time, j.fell_back), (arrival, false));
        let bare = predecode(b"no time here at all", "/var/log/x", "m");
        let j = judge_time(&bare, arrival, TimeSource::Event, &utc());
        assert_eq!((j.time, j.fell_back), (arrival, true));
    }
}
