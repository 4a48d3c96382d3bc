//! An endpoint's circuit breaker, as a small state machine over tokio's clock.
//!
//! Closed, it counts transient failures in a row; the `failure_threshold`-th opens it for
//! `open_ms`. While open, the endpoint's deliveries wait (still pending). Once that time has
//! passed the circuit is half-open: one attempt at a time probes the endpoint, and its outcome
//! closes the circuit again (any answer but a transient failure) or opens it for another
//! `open_ms`. Time is `tokio::time::Instant`, so a paused runtime drives it in tests.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// When an endpoint's circuit opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    /// Transient failures in a row that open the circuit.
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_ms: 30_000,
        }
    }
}

/// Where a circuit stands at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CircuitState {
    /// Attempts go out as they come, up to the endpoint's concurrency.
    Closed,
    /// Nothing goes out for this long yet.
    Open(Duration),
    /// The open time has passed: one probe at a time decides.
    HalfOpen,
}

/// What an outcome did to the circuit, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Unchanged,
    Opened { failures: u32 },
    Closed,
}

#[derive(Debug, Default)]
pub(crate) struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    pub(crate) fn state(&self, now: Instant) -> CircuitState {
        match self.open_until {
            None => CircuitState::Closed,
            Some(until) if until > now => CircuitState::Open(until - now),
            Some(_) => CircuitState::HalfOpen,
        }
    }

    /// Feeds one outcome in: `alive` is any answer but a transient failure.
    pub(crate) fn record(
        &mut self,
        alive: bool,
        config: &BreakerConfig,
        now: Instant,
    ) -> Transition {
        if alive {
            let was_open = self.open_until.is_some();
            *self = Breaker::default();
            return if was_open {
                Transition::Closed
            } else {
                Transition::Unchanged
            };
        }
        self.failures += 1;
        if self.failures < config.failure_threshold {
            return Transition::Unchanged;
        }
        let opened = self.open_until.is_none();
        // A failed probe (or a failure of an attempt already out when it opened) keeps it open
        // for another full period from now.
        self.open_until = Some(now + Duration::from_millis(config.open_ms));
        if opened {
            Transition::Opened {
                failures: self.failures,
            }
        } else {
            Transition::Unchanged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BreakerConfig = BreakerConfig {
        failure_threshold: 3,
        open_ms: 30_000,
    };

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_half_opens_once_the_time_has_passed() {
        let mut breaker = Breaker::default();
        assert_eq!(breaker.state(Instant::now()), CircuitState::Closed);
        for _ in 0..2 {
            assert_eq!(
                breaker.record(false, &CONFIG, Instant::now()),
                Transition::Unchanged
            );
        }
        assert_eq!(breaker.state(Instant::now()), CircuitState::Closed);
        assert_eq!(
            breaker.record(false, &CONFIG, Instant::now()),
            Transition::Opened { failures: 3 }
        );
        assert_eq!(
            breaker.state(Instant::now()),
            CircuitState::Open(Duration::from_secs(30))
        );

        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            breaker.state(Instant::now()),
            CircuitState::Open(Duration::from_secs(20))
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(breaker.state(Instant::now()), CircuitState::HalfOpen);

        // A failed probe opens it for a full period again.
        assert_eq!(
            breaker.record(false, &CONFIG, Instant::now()),
            Transition::Unchanged
        );
        assert_eq!(
            breaker.state(Instant::now()),
            CircuitState::Open(Duration::from_secs(30))
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(breaker.state(Instant::now()), CircuitState::HalfOpen);

        // A probe that gets an answer closes it, and the count starts over.
        assert_eq!(
            breaker.record(true, &CONFIG, Instant::now()),
            Transition::Closed
        );
        assert_eq!(breaker.state(Instant::now()), CircuitState::Closed);
        for _ in 0..2 {
            breaker.record(false, &CONFIG, Instant::now());
        }
        assert_eq!(breaker.state(Instant::now()), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_between_failures_resets_the_count() {
        let mut breaker = Breaker::default();
        breaker.record(false, &CONFIG, Instant::now());
        breaker.record(false, &CONFIG, Instant::now());
        assert_eq!(
            breaker.record(true, &CONFIG, Instant::now()),
            Transition::Unchanged
        );
        breaker.record(false, &CONFIG, Instant::now());
        breaker.record(false, &CONFIG, Instant::now());
        assert_eq!(breaker.state(Instant::now()), CircuitState::Closed);
    }
}
