//! Wall-clock time as a parameter: the agent's block expiries, and the
//! certificates the manager issues and the agent renews. Those are
//! wall-clock times (epoch milliseconds) because they outlive the process;
//! the daemons read the system clock ([`SystemClock`]). Tests pass a
//! [`ManualClock`] and move it forward, so a test of an expiry or of a
//! renewal due in 550 days neither sleeps nor depends on how loaded the
//! machine is.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

/// A future a clock resolves when its time has come.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a daemon reads the wall-clock time and waits for it.
pub trait Clock: Debug + Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Resolves once this clock reads `at_ms` or later (at once if it does
    /// already). It may resolve early; callers look at the clock again.
    fn sleep_until(&self, at_ms: i64) -> BoxFuture<'static, ()>;
}

/// The system's wall clock, waited on with tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        jiff::Timestamp::now().as_millisecond()
    }

    fn sleep_until(&self, at_ms: i64) -> BoxFuture<'static, ()> {
        let wait = u64::try_from(at_ms.saturating_sub(self.now_ms())).unwrap_or(0);
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that only moves when told to ([`ManualClock::advance`]); every
/// [`Clock::sleep_until`] whose time has come then resolves. Cheap to clone
/// (clones share the time).
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<i64>>,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self {
            now: Arc::new(watch::Sender::new(start_ms)),
        }
    }

    /// A clock reading the system's time now.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_ms())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now.send_modify(|now| *now = now.saturating_add(by));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, at_ms: i64) -> BoxFuture<'static, ()> {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as any clone of the clock; if the
            // last one is gone, time stands still and this never resolves.
            if now.wait_for(|t| *t >= at_ms).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_it_passes_their_time() {
        let clock = ManualClock::new(1_000);
        let sleeper = tokio::spawn(clock.sleep_until(3_000));
        clock.advance(Duration::from_millis(1_500));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        assert_eq!(clock.now_ms(), 2_500);
        clock.advance(Duration::from_millis(500));
        sleeper.await.unwrap();
        // A time already passed resolves at once.
        clock.sleep_until(0).await;
    }
}
