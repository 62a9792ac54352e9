//! The manager's running counters, in one place: `palisadectl status` and
//! the Prometheus endpoint read them, the ingest, responder and mail paths
//! move them. Plain atomics, so counting never waits on a lock held by a
//! reader; only the one-minute rate window has a (short) lock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::now_ms;

/// Seconds in the rate window.
const WINDOW: usize = 60;
/// One slot more than the window, for the second still filling.
const SLOTS: usize = WINDOW + 1;

/// Counters since the manager started.
#[derive(Debug)]
pub struct Stats {
    /// When the manager started (epoch ms).
    pub started_at: i64,
    /// Events received from agents (stored or judged), resends excluded.
    pub events_received: AtomicU64,
    /// Alerts stored, by level (0..=15; higher levels count as 15).
    pub alerts_by_level: [AtomicU64; 16],
    /// Active-response commands decided (by rules or operators).
    pub responses_issued: AtomicU64,
    /// Commands handed to a connected agent.
    pub responses_delivered: AtomicU64,
    /// Commands an agent reported as failed.
    pub responses_failed: AtomicU64,
    /// Mails waiting to be sent.
    pub mail_queue: AtomicU64,
    /// Mails sent.
    pub mails_sent: AtomicU64,
    /// Mails given up on (queue full, or rejected by the server).
    pub mails_dropped: AtomicU64,
    rate: Mutex<RateWindow>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new(now_ms())
    }
}

/// Events per whole second over the last [`WINDOW`] seconds.
#[derive(Debug)]
struct RateWindow {
    /// `(second, count)` per slot, slot = second % SLOTS.
    slots: [(i64, u64); SLOTS],
}

impl Stats {
    /// Counters starting at `started_at` (epoch ms).
    pub fn new(started_at: i64) -> Self {
        Self {
            started_at,
            events_received: AtomicU64::new(0),
            alerts_by_level: std::array::from_fn(|_| AtomicU64::new(0)),
            responses_issued: AtomicU64::new(0),
            responses_delivered: AtomicU64::new(0),
            responses_failed: AtomicU64::new(0),
            mail_queue: AtomicU64::new(0),
            mails_sent: AtomicU64::new(0),
            mails_dropped: AtomicU64::new(0),
            rate: Mutex::new(RateWindow {
                slots: [(i64::MIN, 0); SLOTS],
            }),
        }
    }

    /// Counts `n` events received now.
    pub fn events(&self, n: u64) {
        self.events_at(n, now_ms());
    }

    fn events_at(&self, n: u64, now_ms: i64) {
        self.events_received.fetch_add(n, Ordering::Relaxed);
        let second = now_ms.div_euclid(1000);
        let slot = usize::try_from(second.rem_euclid(SLOTS as i64)).unwrap_or(0);
        if let Ok(mut w) = self.rate.lock() {
            let s = &mut w.slots[slot];
            if s.0 == second {
                s.1 += n;
            } else {
                *s = (second, n);
            }
        }
    }

    /// Counts a stored alert of `level`.
    pub fn alert(&self, level: u32) {
        let i = usize::try_from(level).unwrap_or(15).min(15);
        self.alerts_by_level[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Alerts stored, all levels.
    pub fn alerts(&self) -> u64 {
        self.alerts_by_level
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Events received per second over the last minute (or since start, if
    /// that is shorter), whole seconds only.
    pub fn events_per_second(&self) -> f64 {
        self.events_per_second_at(now_ms())
    }

    fn events_per_second_at(&self, now_ms: i64) -> f64 {
        let now = now_ms.div_euclid(1000);
        let Ok(w) = self.rate.lock() else {
            return 0.0;
        };
        // The current second is still filling; count the finished ones.
        let total: u64 = w
            .slots
            .iter()
            .filter(|(s, _)| *s < now && *s >= now - WINDOW as i64)
            .map(|(_, n)| n)
            .sum();
        let up = (now - self.started_at.div_euclid(1000)).clamp(1, WINDOW as i64);
        total as f64 / up as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_finished_seconds_of_the_last_minute() {
        let s = Stats::new(0);
        for second in 0..120_i64 {
            s.events_at(10, second * 1000 + 500);
        }
        s.events_at(1000, 120_000); // the current second is not counted yet
        assert_eq!(s.events_per_second_at(120_000), 10.0);
        assert_eq!(s.events_received.load(Ordering::Relaxed), 2200);
        // Nothing for a minute: the rate falls to zero.
        assert_eq!(s.events_per_second_at(200_000), 0.0);
    }

    #[test]
    fn a_young_manager_divides_by_its_age() {
        let s = Stats::new(10_000);
        s.events_at(30, 10_100);
        s.events_at(30, 11_100);
        assert_eq!(s.events_per_second_at(13_000), 20.0);
    }

    #[test]
    fn alerts_are_counted_by_level() {
        let s = Stats::new(0);
        s.alert(10);
        s.alert(10);
        s.alert(99);
        assert_eq!(s.alerts_by_level[10].load(Ordering::Relaxed), 2);
        assert_eq!(s.alerts_by_level[15].load(Ordering::Relaxed), 1);
        assert_eq!(s.alerts(), 3);
    }
}
