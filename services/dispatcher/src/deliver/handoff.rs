//! The hand-off from the due-time queue to the endpoints: pending attempts wait in the
//! [`DueQueue`] by their due time (wall-clock millis, as the retry topic carries them) and come
//! out once the injected clock has reached it.
//!
//! Waiting is a `tokio::time::sleep` until the earliest due time, cut short when an earlier
//! attempt is queued; so with a clock that follows tokio's ([`TokioClock`]) a paused runtime
//! releases attempts exactly at their due times without sleeping for real.
//!
//! [`TokioClock`]: receipts_runtime::clock::TokioClock

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use receipts_runtime::clock::SharedClock;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::lock;
use crate::due::DueQueue;
use crate::job::DeliveryJob;

/// How long the hand-off sleeps when nothing is queued, unless woken.
const IDLE: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub(crate) struct DueHandoff {
    queue: Mutex<DueQueue>,
    wake: Notify,
    clock: SharedClock,
    /// `dispatcher_queue_paged_out`.
    paged_out: Gauge,
}

impl DueHandoff {
    pub(crate) fn new(queue: DueQueue, clock: SharedClock, paged_out: Gauge) -> Self {
        DueHandoff {
            queue: Mutex::new(queue),
            wake: Notify::new(),
            clock,
            paged_out,
        }
    }

    pub(crate) fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The current wall-clock time in unix millis.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now().unix_millis()
    }

    /// Queues attempts, each to come out at its `due_at_ms`.
    pub(crate) fn insert(&self, jobs: impl IntoIterator<Item = DeliveryJob>) {
        let mut queue = lock(&self.queue);
        for job in jobs {
            queue.insert(job);
        }
        drop(queue);
        self.wake.notify_one();
    }

    /// Keeps only the queued attempts `keep` says yes to.
    pub(crate) fn retain(&self, keep: impl FnMut(&DeliveryJob) -> bool) {
        lock(&self.queue).retain(keep);
    }

    /// Waits until at least one attempt is due and takes every due one, earliest first; `None`
    /// once `shutdown` is cancelled.
    pub(crate) async fn due(&self, shutdown: &CancellationToken) -> Option<Vec<DeliveryJob>> {
        loop {
            let now = self.now_ms();
            let (ready, next) = {
                let mut queue = lock(&self.queue);
                let taken = (queue.take_due(now), queue.next_due());
                self.paged_out.set(queue.paged_out() as i64);
                taken
            };
            if !ready.is_empty() {
                return Some(ready);
            }
            let wait = next.map_or(IDLE, |at| Duration::from_millis((at - now).max(1) as u64));
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use receipts_domain::Timestamp;
    use receipts_runtime::clock::TokioClock;
    use receipts_webhook::RetrySchedule;

    use super::*;
    use crate::deliver::outcome::next_attempt;
    use crate::job::tests::job;

    const START_MS: i64 = 1_764_000_000_000;

    fn handoff() -> (DueHandoff, SharedClock) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let queue = DueQueue::new(db.open_tree("spill").unwrap(), 16).unwrap();
        let clock: SharedClock = Arc::new(TokioClock::starting_at(Timestamp::from_unix_millis(
            START_MS,
        )));
        (
            DueHandoff::new(queue, clock.clone(), Gauge::default()),
            clock,
        )
    }

    fn schedule() -> RetrySchedule {
        RetrySchedule {
            delays_ms: vec![0, 5_000, 300_000],
            jitter: 0.0,
            retry_after_max_ms: 3_600_000,
            max_delay_ms: 43_200_000,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_come_out_when_their_backoff_has_passed() {
        let (handoff, clock) = handoff();
        let shutdown = CancellationToken::new();
        let first = job("DY1", 1, clock.now().unix_millis());
        handoff.insert([first.clone()]);
        let started = tokio::time::Instant::now();
        let out = handoff.due(&shutdown).await.unwrap();
        assert_eq!(out, std::slice::from_ref(&first));
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "a new delivery is due at once"
        );

        // The first attempt failed: the second is due 5 s later, the third 5 min after that.
        let mut rng = StdRng::seed_from_u64(1);
        let second = next_attempt(&first, &schedule(), None, clock.now(), &mut rng).unwrap();
        assert_eq!(second.attempt, 1);
        assert_eq!(second.due_at_ms, START_MS + 5_000);
        handoff.insert([second.clone()]);
        let out = handoff.due(&shutdown).await.unwrap();
        assert_eq!(out, std::slice::from_ref(&second));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(clock.now().unix_millis(), START_MS + 5_000);

        let third = next_attempt(&second, &schedule(), None, clock.now(), &mut rng).unwrap();
        assert_eq!(third.due_at_ms, START_MS + 305_000);
        handoff.insert([third]);
        handoff.due(&shutdown).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(305));

        // The schedule has three attempts: none after the third.
        let mut last = second;
        last.attempt = 2;
        assert!(next_attempt(&last, &schedule(), None, clock.now(), &mut rng).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_lengthens_the_wait_and_an_earlier_attempt_goes_first() {
        let (handoff, clock) = handoff();
        let shutdown = CancellationToken::new();
        let mut rng = StdRng::seed_from_u64(1);
        let first = job("DY1", 1, clock.now().unix_millis());
        let slow = next_attempt(
            &first,
            &schedule(),
            Some(Duration::from_secs(120)),
            clock.now(),
            &mut rng,
        )
        .unwrap();
        assert_eq!(slow.due_at_ms, START_MS + 120_000, "Retry-After: 120");
        handoff.insert([slow.clone()]);

        // Queued while the hand-off sleeps towards the slow one, an attempt due sooner wakes it.
        let sooner = job("DY2", 1, START_MS + 1_000);
        let inserting = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            handoff.insert([sooner.clone()]);
        };
        let started = tokio::time::Instant::now();
        let (out, ()) = tokio::join!(handoff.due(&shutdown), inserting);
        assert_eq!(out.unwrap(), [sooner]);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(handoff.due(&shutdown).await.unwrap(), [slow]);
        assert_eq!(started.elapsed(), Duration::from_secs(120));

        shutdown.cancel();
        assert!(handoff.due(&shutdown).await.is_none());
    }
}
