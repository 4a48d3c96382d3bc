//! When the next attempt is due.
//!
//! `delays[n]` is the wait before attempt `n` (0-based), so the default schedule
//! `[0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h]` makes eight attempts in all, the first one at
//! once. Every wait is jittered by ±`jitter` (20 % by default) so that receivers that failed
//! together are not retried together. A receiver's `Retry-After` lengthens the wait (never
//! shortens it), bounded by `retry_after_max`; `max_delay` caps the result.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// A retry schedule; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetrySchedule {
    /// Milliseconds to wait before each attempt; the length is the number of attempts.
    pub delays_ms: Vec<u64>,
    /// Relative jitter, 0.0 ..= 1.0.
    pub jitter: f64,
    /// The longest `Retry-After` honoured.
    pub retry_after_max_ms: u64,
    /// No wait is longer than this.
    pub max_delay_ms: u64,
}

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            delays_ms: vec![
                0,
                5 * SECOND,
                5 * MINUTE,
                30 * MINUTE,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                10 * HOUR,
            ],
            jitter: 0.2,
            retry_after_max_ms: HOUR,
            max_delay_ms: 12 * HOUR,
        }
    }
}

/// A schedule that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSchedule {
    #[error("delays_ms must name at least one attempt")]
    NoAttempts,
    #[error("jitter must be between 0 and 1")]
    Jitter,
}

impl RetrySchedule {
    pub fn validate(&self) -> Result<(), InvalidSchedule> {
        if self.delays_ms.is_empty() {
            return Err(InvalidSchedule::NoAttempts);
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(InvalidSchedule::Jitter);
        }
        Ok(())
    }

    /// How many attempts a delivery gets.
    pub fn attempts(&self) -> u32 {
        self.delays_ms.len() as u32
    }

    /// The wait before attempt `next` (0-based) after the previous one failed, or `None` when
    /// the schedule is exhausted.
    pub fn delay_before(
        &self,
        next: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        let base = *self.delays_ms.get(next as usize)?;
        let jittered = if base == 0 || self.jitter == 0.0 {
            base as f64
        } else {
            base as f64 * rng.random_range((1.0 - self.jitter)..=(1.0 + self.jitter))
        };
        let mut delay = Duration::from_millis(jittered.round() as u64);
        if let Some(asked) = retry_after {
            delay = delay.max(asked.min(Duration::from_millis(self.retry_after_max_ms)));
        }
        Some(delay.min(Duration::from_millis(self.max_delay_ms)))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn default_schedule_is_eight_attempts_with_jitter_within_twenty_percent() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.attempts(), 8);
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(
            schedule.delay_before(0, None, &mut rng),
            Some(Duration::ZERO)
        );
        for (n, base) in schedule.delays_ms.iter().enumerate().skip(1) {
            for _ in 0..200 {
                let d = schedule.delay_before(n as u32, None, &mut rng).unwrap();
                let ms = d.as_millis() as f64;
                let base = *base as f64;
                assert!(
                    ms >= base * 0.8 - 1.0 && ms <= base * 1.2 + 1.0,
                    "{n}: {ms}"
                );
            }
        }
        assert_eq!(schedule.delay_before(8, None, &mut rng), None);
    }

    #[test]
    fn retry_after_lengthens_within_bounds() {
        let schedule = RetrySchedule {
            delays_ms: vec![0, 100, 100],
            jitter: 0.0,
            retry_after_max_ms: 10_000,
            max_delay_ms: 60_000,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let delay = |ra| {
            schedule
                .clone()
                .delay_before(1, ra, &mut StdRng::seed_from_u64(1))
        };
        assert_eq!(delay(None), Some(Duration::from_millis(100)));
        assert_eq!(
            delay(Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            delay(Some(Duration::from_secs(3600))),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            delay(Some(Duration::ZERO)),
            Some(Duration::from_millis(100))
        );
        assert_eq!(schedule.delay_before(3, None, &mut rng), None);
    }

    #[test]
    fn the_cap_bounds_every_wait() {
        let schedule = RetrySchedule {
            delays_ms: vec![0, 100 * HOUR],
            max_delay_ms: HOUR,
            ..Default::default()
        };
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(
            schedule.delay_before(1, None, &mut rng),
            Some(Duration::from_millis(HOUR))
        );
    }

    #[test]
    fn invalid_schedules_are_refused() {
        let mut schedule = RetrySchedule::default();
        assert_eq!(schedule.validate(), Ok(()));
        schedule.jitter = 1.5;
        assert_eq!(schedule.validate(), Err(InvalidSchedule::Jitter));
        schedule.delays_ms.clear();
        assert_eq!(schedule.validate(), Err(InvalidSchedule::NoAttempts));
    }
}
