//! Capture bookkeeping shared by the two regex-backed matchers (OS_Regex and
//! PCRE2): reusable capture-location buffers, and the conversion of capture
//! slots into the byte ranges [`super::PatternMatch`] reports.

use std::fmt;
use std::ops::Range;

/// A few reusable capture-location buffers: allocating them costs more
/// than a short match. Patterns are shared between threads, so the pool
/// is a mutex that is only ever `try_lock`ed: a contended caller simply
/// allocates a fresh buffer instead of waiting.
pub(super) struct Pool<T>(std::sync::Mutex<Vec<T>>);

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool(std::sync::Mutex::new(Vec::new()))
    }
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pool")
    }
}

impl<T> Pool<T> {
    pub(super) fn take(&self) -> Option<T> {
        self.0.try_lock().ok()?.pop()
    }

    pub(super) fn give(&self, t: T) {
        if let Ok(mut v) = self.0.try_lock()
            && v.len() < 4
        {
            v.push(t);
        }
    }
}

/// Capture slots 1..n as byte ranges, written into `out` (cleared first).
pub(super) fn push_groups(
    out: &mut Vec<Option<Range<usize>>>,
    n: usize,
    get: impl Fn(usize) -> Option<(usize, usize)>,
) {
    out.clear();
    out.extend((1..n).map(|i| get(i).map(|(s, e)| s..e)));
}
