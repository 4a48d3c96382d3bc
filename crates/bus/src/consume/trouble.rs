//! Transient errors, counted and logged once per backoff step.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::errors::Backoff;

/// Counts transient errors and logs them once per backoff step; says for how long the broker
/// has been away.
#[derive(Debug)]
pub(super) struct Trouble {
    pub(super) since: Option<Instant>,
    pub(super) unlogged: u64,
    pub(super) next_log: Instant,
    pub(super) backoff: Backoff,
}

impl Trouble {
    pub(super) fn new() -> Self {
        Trouble {
            since: None,
            unlogged: 0,
            next_log: Instant::now(),
            backoff: Backoff::default(),
        }
    }

    pub(super) fn record(&mut self, consumer: &str, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        self.since.get_or_insert(now);
        self.unlogged += 1;
        if now >= self.next_log {
            warn!(consumer, %error, errors = self.unlogged, "kafka trouble, waiting it out");
            self.unlogged = 0;
            self.next_log = now + self.backoff.next_delay();
        }
    }

    pub(super) fn over(&mut self, consumer: &str) {
        if let Some(since) = self.since.take() {
            info!(
                consumer,
                after_secs = since.elapsed().as_secs(),
                "kafka reachable again"
            );
            self.unlogged = 0;
            self.backoff.reset();
            self.next_log = Instant::now();
        }
    }

    pub(super) fn lasted(&self) -> Option<Duration> {
        self.since.map(|s| s.elapsed())
    }
}
