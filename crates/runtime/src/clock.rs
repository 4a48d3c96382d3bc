//! The clocks services are given ([`receipts_domain::Clock`]): the system's wall clock in
//! production, and one that follows tokio's time for tests.
//!
//! Durations (timeouts, back-off sleeps, how long a circuit stays open) are measured with
//! `tokio::time`; wall-clock timestamps (due times on the retry topic, attempt times, expiry)
//! come from a [`Clock`]. A [`TokioClock`] ties the two together, so a test under
//! `tokio::time::pause()` sees both advance together without sleeping for real.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use receipts_domain::Clock;
use receipts_domain::Timestamp;

/// A clock shared by every task of a service.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Timestamp::from_unix_millis(millis)
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// Wall-clock time that starts at a given instant and then advances exactly as tokio's clock
/// does: paused with `tokio::time::pause()`, moved by `tokio::time::advance` and by the
/// auto-advance of a paused runtime.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: Timestamp,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `start` now.
    pub fn starting_at(start: Timestamp) -> Self {
        TokioClock {
            start,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = self.origin.elapsed().as_millis() as i64;
        Timestamp::from_unix_millis(self.start.unix_millis() + elapsed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_system_clock_reads_the_present() {
        // 2025-01-01, a date already past when this was written.
        assert!(SystemClock.now().unix_millis() > 1_735_689_600_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_paused_time() {
        let clock = TokioClock::starting_at(Timestamp::from_unix_millis(1_000));
        assert_eq!(clock.now(), Timestamp::from_unix_millis(1_000));
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), Timestamp::from_unix_millis(91_000));
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(clock.now(), Timestamp::from_unix_millis(91_250));
    }
}
