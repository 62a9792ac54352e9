//! Quantities as operators write them in configuration files and on the
//! command line: durations (`"600s"`, `"10m"`, `"1h30m"`, `"90d"`) and sizes
//! (`"256MiB"`). Both daemons and `palisadectl` read them here, so a value
//! means the same everywhere.

use std::time::Duration;

/// Parses a duration written as `"600s"`, `"10m"`, `"250ms"`, `"1h30m"` or
/// `"90d"`: a jiff span whose days are 24 hours (retention periods and
/// token lifetimes are given in days). Months and years, which have no
/// fixed length, and negative spans are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |e: jiff::Error| format!("{s:?} is not a duration like \"30s\" or \"10m\" ({e})");
    let span: jiff::Span = s.parse().map_err(bad)?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(bad)?;
    Duration::try_from(d).map_err(|_| format!("{s:?} must not be negative"))
}

/// Parses a size such as `"256MiB"`, `"512KiB"`, `"1GiB"`, `"10MB"` or
/// `"1000"` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit_size: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("{s:?} is not a size like \"256MiB\"")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_size))
        .ok_or_else(|| format!("{s:?} is not a size like \"256MiB\""))
}

/// A size as a configuration file may write it: a number of bytes
/// (`65536`) or text with a unit (`"64KiB"`); [`SizeSetting::bytes`]
/// reads either.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum SizeSetting {
    /// A plain number of bytes.
    Bytes(u64),
    /// Text such as `"64KiB"` ([`parse_size`]).
    Text(String),
}

impl SizeSetting {
    /// The size in bytes.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Self::Bytes(n) => Ok(*n),
            Self::Text(t) => parse_size(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units_and_whole_days() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("600s"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert!(
            parse_duration("1 month").is_err(),
            "months have no fixed length"
        );
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999GiB").is_err(), "overflow");
    }
}
