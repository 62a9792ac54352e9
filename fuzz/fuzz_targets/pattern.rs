//! The three pattern dialects (OS_Regex translation included) never panic
//! on any pattern or haystack, and matches stay inside the haystack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_engine::pattern::{Dialect, Pattern};

fuzz_target!(|data: &[u8]| {
    // First byte: dialect; then pattern and haystack split at the first 0xFF.
    let Some((&d, rest)) = data.split_first() else {
        return;
    };
    let dialect = match d % 3 {
        0 => Dialect::OsMatch,
        1 => Dialect::OsRegex,
        _ => Dialect::Pcre2,
    };
    let (pat, hay) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let pat = String::from_utf8_lossy(pat);
    if let Ok(p) = Pattern::new(dialect, &pat) {
        let m = p.is_match(hay);
        let f = p.find(hay);
        assert_eq!(m, f.is_some(), "is_match and find disagree for {pat:?}");
        if let Some(f) = f {
            assert!(f.start <= f.end && f.end <= hay.len());
            for r in f.captures.iter().flatten() {
                assert!(r.start <= r.end && r.end <= hay.len());
            }
        }
    }
});
