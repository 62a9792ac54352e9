//! What an agent may send on its stream, checked before any of it is used.
//! An agent can be compromised, so its stream is input like a log line:
//! each rule here refuses with a reason the agent is told and the manager
//! logs at WARN, or adjusts and flags, never silently.
//!
//! - **Hello first**: the stream's first message must be Hello; anything
//!   else ends the stream ([`first_message`]).
//! - **Hello fields** (host name, OS, version, spool id) are bounded in
//!   length and may hold no control character; else the stream is refused
//!   ([`check_hello`]). They are shown to operators in tables and logs.
//! - **Sequences** ([`check_sequences`]): consecutive within a batch,
//!   within `1..=i64::MAX` (the store's integer; nothing saturates), and
//!   the first new one exactly follows the last accepted on the stream
//!   (stored, or in flight to the store), plus the events
//!   the agent says it lost (`lost_before`, its spool was full). A gap or
//!   a jump is refused, so a poisoned sequence (`u64::MAX`) is never
//!   stored and the agent's later events still are.
//! - **Locations** longer than [`MAX_LOCATION`] are cut, and control
//!   characters in them are escaped as every output escapes them
//!   (`palisade_engine::escape`: `\n` → `\\n`), with a WARN: a
//!   file name may hold a newline, and refusing the event would stall the
//!   agent or lose the line ([`clean_location`]).
//! - **Times** ([`sane_read_at`]): a `read_at` more than
//!   [`MAX_PAST`] before or [`MAX_FUTURE`] after arrival is replaced by
//!   the arrival time, and the archived event is flagged
//!   (`read_at_clamped`).
//! - **Lines** longer than `[limits] max_line_length` are cut and flagged
//!   `truncated`, as the agent flags its own cuts ([`cut_line`]).

use std::time::Duration;

use palisade_engine::escape::{escape_text, needs_escape};
use palisade_proto::v1::Hello;
use palisade_proto::v1::agent_message::Kind as AgentKind;

/// Longest host name accepted (DNS: 253, plus room).
pub const MAX_HOSTNAME: usize = 255;
/// Longest OS description accepted.
pub const MAX_OS: usize = 256;
/// Longest agent version accepted.
pub const MAX_VERSION: usize = 64;
/// Longest spool id accepted.
pub const MAX_SPOOL_ID: usize = 64;
/// Longest location kept (Linux's PATH_MAX); longer ones are cut.
pub const MAX_LOCATION: usize = 4096;
/// The largest sequence number: SQLite stores a signed 64-bit integer.
pub const MAX_SEQUENCE: u64 = i64::MAX as u64;
/// The most events one batch may say were lost before it.
pub const MAX_DECLARED_LOSS: u64 = 1 << 40;
/// How long before arrival a line may have been read (an agent spools
/// while the manager is away).
pub const MAX_PAST: Duration = Duration::from_secs(366 * 86_400);
/// How long after arrival a line may say it was read (clock skew).
pub const MAX_FUTURE: Duration = Duration::from_secs(86_400);
/// How long a new stream may take to say Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// An agent message the protocol does not allow; the text is the reason,
/// for the agent and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

/// What a message is, for reasons.
pub fn kind_name(kind: Option<&AgentKind>) -> &'static str {
    match kind {
        Some(AgentKind::Hello(_)) => "Hello",
        Some(AgentKind::Events(_)) => "an event batch",
        Some(AgentKind::CommandResult(_)) => "a command result",
        Some(AgentKind::Heartbeat(_)) => "a heartbeat",
        Some(AgentKind::Renew(_)) => "a renewal request",
        None => "an empty message",
    }
}

/// The stream's first message must be Hello.
pub fn first_message(kind: Option<AgentKind>) -> Result<Hello, Violation> {
    match kind {
        Some(AgentKind::Hello(hello)) => Ok(hello),
        other => Err(Violation(format!(
            "the first message must be Hello, not {}; nothing of it was stored",
            kind_name(other.as_ref())
        ))),
    }
}

/// Bounds and control characters of a Hello's fields.
pub fn check_hello(hello: &Hello) -> Result<(), Violation> {
    for (name, value, max) in [
        ("host name", &hello.hostname, MAX_HOSTNAME),
        ("OS", &hello.os, MAX_OS),
        ("agent version", &hello.agent_version, MAX_VERSION),
        ("spool id", &hello.spool_id, MAX_SPOOL_ID),
    ] {
        if value.len() > max {
            return Err(Violation(format!(
                "Hello's {name} is {} bytes long, above the limit of {max}",
                value.len()
            )));
        }
        if let Some(c) = value.chars().find(|&c| needs_escape(c)) {
            return Err(Violation(format!(
                "Hello's {name} holds the control character U+{:04X} (\"{}\")",
                u32::from(c),
                escape_text(value)
            )));
        }
    }
    Ok(())
}

/// What [`check_sequences`] found in an acceptable batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Nothing new (empty, or every event already stored).
    Stored,
    /// New events, following the last accepted one.
    Follows,
    /// New events after `lost` events the agent lost (its spool was
    /// full): sequences `stored + 1 ..= stored + lost`.
    AfterLoss {
        /// How many.
        lost: u64,
    },
}

/// Checks a batch's sequence numbers against `stored`, the agent's last
/// accepted one (stored, or in a batch still on its way to the store).
pub fn check_sequences(
    stored: u64,
    lost_before: u64,
    sequences: &[u64],
) -> Result<SequenceCheck, Violation> {
    let (Some(&first), Some(&last)) = (sequences.first(), sequences.last()) else {
        return Ok(SequenceCheck::Stored);
    };
    if let Some(&bad) = sequences.iter().find(|&&s| s == 0 || s > MAX_SEQUENCE) {
        return Err(Violation(format!(
            "sequence number {bad} is outside 1..={MAX_SEQUENCE}"
        )));
    }
    if let Some(pair) = sequences
        .windows(2)
        .find(|w| w[0].checked_add(1) != Some(w[1]))
    {
        return Err(Violation(format!(
            "sequence number {} follows {} in one batch: a batch holds consecutive sequence numbers",
            pair[1], pair[0]
        )));
    }
    if last <= stored {
        return Ok(SequenceCheck::Stored);
    }
    if first <= stored {
        // A batch resent in part: its new events follow `stored`.
        return Ok(SequenceCheck::Follows);
    }
    if lost_before > MAX_DECLARED_LOSS {
        return Err(Violation(format!(
            "the batch says {lost_before} events were lost before it, above the limit of {MAX_DECLARED_LOSS}"
        )));
    }
    let expected = stored + 1 + lost_before;
    if first != expected {
        let said = match lost_before {
            0 => String::new(),
            n => format!(" and {n} lost"),
        };
        return Err(Violation(format!(
            "sequence number {first} does not follow the last one accepted, {stored}{said} (expected {expected}): a gap or a jump"
        )));
    }
    Ok(match lost_before {
        0 => SequenceCheck::Follows,
        lost => SequenceCheck::AfterLoss { lost },
    })
}

/// A location as it is kept: cut at [`MAX_LOCATION`] bytes and control
/// characters escaped; `Err` carries the cleaned location and the reason
/// when anything changed.
pub fn clean_location(location: &str) -> Result<&str, (String, &'static str)> {
    let long = location.len() > MAX_LOCATION;
    let control = location.chars().any(needs_escape);
    if !long && !control {
        return Ok(location);
    }
    let mut end = location.len().min(MAX_LOCATION);
    while !location.is_char_boundary(end) {
        end -= 1;
    }
    let mut cleaned = escape_text(&location[..end]).into_owned();
    let reason = if long {
        cleaned.push_str("...");
        "longer than 4096 bytes; cut"
    } else {
        "holds control characters; escaped"
    };
    Err((cleaned, reason))
}

/// `read_at` if it lies within [`MAX_PAST`] and [`MAX_FUTURE`] of
/// `arrival` (both epoch ms), else `arrival` and `true` (clamped).
pub fn sane_read_at(read_at: i64, arrival: i64) -> (i64, bool) {
    let past = i64::try_from(MAX_PAST.as_millis()).unwrap_or(i64::MAX);
    let future = i64::try_from(MAX_FUTURE.as_millis()).unwrap_or(i64::MAX);
    if read_at < arrival.saturating_sub(past) || read_at > arrival.saturating_add(future) {
        (arrival, true)
    } else {
        (read_at, false)
    }
}

/// `line` cut at `max` bytes; `true` when it was cut.
pub fn cut_line(line: &[u8], max: usize) -> (&[u8], bool) {
    if line.len() > max {
        (&line[..max], true)
    } else {
        (line, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(r: Result<SequenceCheck, Violation>) -> String {
        match r {
            Err(Violation(why)) => why,
            Ok(v) => panic!("accepted: {v:?}"),
        }
    }

    #[test]
    fn sequences_follow_the_stored_one() {
        assert_eq!(
            check_sequences(10, 0, &[11, 12, 13]),
            Ok(SequenceCheck::Follows)
        );
        assert_eq!(check_sequences(0, 0, &[1]), Ok(SequenceCheck::Follows));
        assert_eq!(check_sequences(10, 0, &[]), Ok(SequenceCheck::Stored));
        // Resent, in whole or in part.
        assert_eq!(check_sequences(10, 0, &[9, 10]), Ok(SequenceCheck::Stored));
        assert_eq!(
            check_sequences(10, 5, &[9, 10, 11]),
            Ok(SequenceCheck::Follows)
        );
        // Declared loss.
        assert_eq!(
            check_sequences(10, 5, &[16, 17]),
            Ok(SequenceCheck::AfterLoss { lost: 5 })
        );
    }

    #[test]
    fn gaps_jumps_and_poison_are_refused() {
        assert!(refused(check_sequences(10, 0, &[12])).contains("a gap or a jump"));
        assert!(refused(check_sequences(10, 0, &[u64::MAX])).contains("outside"));
        assert!(refused(check_sequences(10, 0, &[MAX_SEQUENCE + 1])).contains("outside"));
        assert!(refused(check_sequences(10, 0, &[0])).contains("outside"));
        assert!(refused(check_sequences(10, 0, &[11, 13])).contains("consecutive"));
        assert!(refused(check_sequences(10, 0, &[11, 11])).contains("consecutive"));
        assert!(refused(check_sequences(10, 0, &[12, 11])).contains("consecutive"));
        // A loss larger than said, or than anything plausible.
        assert!(refused(check_sequences(10, 2, &[16])).contains("expected 13"));
        assert!(refused(check_sequences(10, u64::MAX, &[11])).contains("limit"));
        assert!(refused(check_sequences(10, MAX_DECLARED_LOSS + 1, &[12])).contains("limit"));
        // The largest storable sequence, exactly following: accepted,
        // and nothing after it (no wrap-around).
        assert_eq!(
            check_sequences(MAX_SEQUENCE - 1, 0, &[MAX_SEQUENCE]),
            Ok(SequenceCheck::Follows)
        );
        assert!(
            refused(check_sequences(MAX_SEQUENCE, 0, &[MAX_SEQUENCE, u64::MAX]))
                .contains("outside")
        );
    }

    #[test]
    fn hello_fields_are_bounded_and_plain() {
        let good = Hello {
            hostname: "web01".into(),
            os: "linux x86_64".into(),
            agent_version: "0.1.0".into(),
            spool_id: "3f2a".into(),
            ..Hello::default()
        };
        assert_eq!(check_hello(&good), Ok(()));
        let forged = Hello {
            hostname: "web01\n002  evil  active".into(),
            ..good.clone()
        };
        let why = check_hello(&forged).unwrap_err().0;
        assert!(
            why.contains("host name") && why.contains("U+000A") && !why.contains('\n'),
            "{why}"
        );
        let escape = Hello {
            agent_version: "\u{1b}[31mred".into(),
            ..good.clone()
        };
        assert!(
            check_hello(&escape)
                .unwrap_err()
                .0
                .contains("agent version")
        );
        let long = Hello {
            os: "x".repeat(MAX_OS + 1),
            ..good
        };
        assert!(
            check_hello(&long)
                .unwrap_err()
                .0
                .contains("above the limit")
        );
    }

    #[test]
    fn the_first_message_must_be_hello() {
        use palisade_proto::v1::EventBatch;
        assert!(first_message(Some(AgentKind::Hello(Hello::default()))).is_ok());
        let why = first_message(Some(AgentKind::Events(EventBatch::default())))
            .unwrap_err()
            .0;
        assert!(why.contains("must be Hello, not an event batch"), "{why}");
        assert!(first_message(None).is_err());
    }

    #[test]
    fn locations_are_cut_and_escaped() {
        assert_eq!(clean_location("/var/log/auth.log"), Ok("/var/log/auth.log"));
        let (clean, why) = clean_location("/tmp/a\n2026 forged").unwrap_err();
        assert_eq!(clean, "/tmp/a\\n2026 forged");
        assert!(why.contains("control"));
        let (clean, why) = clean_location(&"é".repeat(3000)).unwrap_err();
        assert!(clean.len() <= MAX_LOCATION + 3 && clean.ends_with("..."));
        assert!(why.contains("cut"));
    }

    #[test]
    fn times_out_of_range_become_the_arrival() {
        let now = 1_800_000_000_000;
        assert_eq!(sane_read_at(now - 1000, now), (now - 1000, false));
        assert_eq!(sane_read_at(0, now), (now, true));
        assert_eq!(sane_read_at(i64::MAX, now), (now, true));
        assert_eq!(sane_read_at(i64::MIN, now), (now, true));
        assert_eq!(sane_read_at(now + 3_600_000, now), (now + 3_600_000, false));
    }

    #[test]
    fn lines_are_cut_at_the_limit() {
        assert_eq!(cut_line(b"abcdef", 4), (&b"abcd"[..], true));
        assert_eq!(cut_line(b"abc", 4), (&b"abc"[..], false));
    }
}
