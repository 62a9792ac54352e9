//! Time on the wire and in the stores. The daemons keep instants as epoch
//! milliseconds (SQLite columns, the spool) or as `jiff::Timestamp`; the
//! protocol carries `google.protobuf.Timestamp`. These are the only
//! conversions between them. Values from the wire may come from a hostile
//! peer: the arithmetic saturates instead of overflowing.

use prost_types::Timestamp;

/// Epoch milliseconds as a protobuf timestamp.
pub fn proto_from_millis(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        // Below 1000 * 1_000_000, so it fits.
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// A protobuf timestamp as epoch milliseconds (sub-millisecond part cut).
pub fn millis_from_proto(t: &Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos / 1_000_000))
}

/// A jiff timestamp as a protobuf timestamp.
pub fn proto_from_jiff(t: jiff::Timestamp) -> Timestamp {
    Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

/// A protobuf timestamp as a jiff timestamp; `None` outside jiff's range.
pub fn jiff_from_proto(t: &Timestamp) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(t.seconds, t.nanos).ok()
}

/// Epoch milliseconds as an operator reads them: UTC, to the second.
pub fn show_millis(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms - ms.rem_euclid(1000))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn milliseconds_round_trip() {
        for ms in [0, 1, 999, 1000, 1_700_000_000_250, -1, -1001] {
            assert_eq!(millis_from_proto(&proto_from_millis(ms)), ms, "{ms}");
        }
        let t = proto_from_millis(1_700_000_000_250);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 250_000_000));
        let before_epoch = proto_from_millis(-1);
        assert_eq!(
            (before_epoch.seconds, before_epoch.nanos),
            (-1, 999_000_000)
        );
    }

    #[test]
    fn hostile_values_do_not_overflow() {
        let t = Timestamp {
            seconds: i64::MAX,
            nanos: 999_999_999,
        };
        assert_eq!(millis_from_proto(&t), i64::MAX);
        assert_eq!(jiff_from_proto(&t), None);
    }

    #[test]
    fn jiff_round_trips() {
        let t = jiff::Timestamp::from_millisecond(1_700_000_000_250).unwrap();
        let p = proto_from_jiff(t);
        assert_eq!((p.seconds, p.nanos), (1_700_000_000, 250_000_000));
        assert_eq!(jiff_from_proto(&p), Some(t));
    }
}
