//! Attempts: when they are due, who may send them, and what their outcome leads to.
//!
//! Pending deliveries wait in a due-time queue ([`handoff`]). When one is due it moves to its
//! endpoint's own queue, and each endpoint has its own worker ([`endpoint`]), so a slow or dead
//! endpoint only ever delays itself:
//! - at most `endpoint_concurrency` attempts per endpoint are in flight at once;
//! - a circuit breaker ([`breaker`]) opens after `failure_threshold` transient failures in a
//!   row; while open the endpoint's deliveries wait (still pending in sled), then a single probe
//!   decides whether it closes again.
//!
//! Order: the versions of one receipt go to a webhook one at a time, in version order, through
//! the receipt's lane ([`crate::lanes`]); different receipts are in flight to an endpoint at
//! once, and a receipt waiting for its retry holds back only itself. A delivery whose receipt
//! version is not newer than the newest version already delivered to the same webhook is
//! dropped as stale (counted, never sent), and every request carries the version in
//! `X-Receipts-Receipt-Version` ([`attempt`]).
//!
//! Outcomes ([`outcome`]) are *settled* ([`settle`]): delivered → the delivered version is
//! raised and the delivery marked settled; a transient failure → the next attempt is produced to
//! the retry topic (to the same partition) with its due time, and the delivery marked as living
//! there at that attempt; rejected, exhausted or gone → the delivery is produced to the
//! dead-letter topic with its last error and marked settled; 410 Gone also writes the webhook's
//! configuration back to `webhook-configs` with `disabled_at` set. Every mark is written to the
//! dispatcher changelog and acknowledged before it is stored, and only then does the attempt stop
//! holding back its partition's committed offset ([`Unsettled`]) and hand its receipt's lane on;
//! the settlements of many attempts share one changelog send and one sled write. An attempt
//! gives back its endpoint's request slot as soon as its request is answered. A failure to
//! produce leaves the attempt pending and tries again a second later.
//! Everything is at least once: a crash or a partition move after a request was answered but
//! before its outcome was settled sends it again, with the same `I-Twilio-Idempotency-Token`.
//!
//! Wall-clock times (due times, attempt times, secret expiry, `disabled_at`) come from the clock
//! the dispatcher is given; durations (circuit open time, waits) are `tokio::time`.

mod attempt;
mod breaker;
mod endpoint;
mod handoff;
mod outcome;
mod settle;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use receipts_bus::{Partition, Publisher, TopicNames};
use receipts_runtime::clock::SharedClock;
use receipts_runtime::config::Secret;
use receipts_webhook::sealed::SecretsKey;
use receipts_webhook::{RetrySchedule, WebhookClient};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use self::breaker::BreakerConfig;
use self::endpoint::Endpoint;
use self::handoff::DueHandoff;
use self::settle::Settler;
use crate::configs::SharedDirectory;
use crate::due::DueQueue;
use crate::job::DeliveryJob;
use crate::lanes::Lanes;
use crate::metrics::DispatcherMetrics;
use crate::progress::{ChangelogProgress, Unsettled};
use crate::store::DispatcherStore;

const REQUEUE_AFTER: Duration = Duration::from_secs(1);
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything an attempt needs.
pub(crate) struct DeliveryContext {
    pub(crate) client: WebhookClient,
    pub(crate) store: Arc<DispatcherStore>,
    pub(crate) directory: SharedDirectory,
    pub(crate) accounts: HashMap<String, Secret>,
    pub(crate) secrets_key: Option<SecretsKey>,
    pub(crate) schedule: RetrySchedule,
    pub(crate) publisher: Publisher,
    pub(crate) topics: TopicNames,
    pub(crate) metrics: DispatcherMetrics,
    pub(crate) endpoint_concurrency: usize,
    pub(crate) breaker: BreakerConfig,
    pub(crate) unsettled: Arc<Unsettled>,
    pub(crate) changelog: Arc<ChangelogProgress>,
}

impl std::fmt::Debug for DeliveryContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryContext")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// The due-time queue, the endpoints and their workers.
#[derive(Debug)]
pub(crate) struct Deliverer {
    context: DeliveryContext,
    handoff: DueHandoff,
    /// Every attempt between its enqueueing and its settlement, by token and attempt.
    pending: Mutex<HashSet<(String, u32)>>,
    lanes: Lanes,
    settler: Settler,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Deliverer {
    pub(crate) fn new(
        context: DeliveryContext,
        due: DueQueue,
        clock: SharedClock,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let paged_out = context.metrics.paged_out.clone();
        Arc::new(Deliverer {
            context,
            handoff: DueHandoff::new(due, clock, paged_out),
            pending: Mutex::default(),
            lanes: Lanes::default(),
            settler: Settler::default(),
            endpoints: Mutex::default(),
            tracker: TaskTracker::new(),
            shutdown,
        })
    }

    /// Adds deliveries to attempt when due.
    pub(crate) fn enqueue(&self, jobs: Vec<DeliveryJob>) {
        if jobs.is_empty() {
            return;
        }
        let mut pending = lock(&self.pending);
        for job in &jobs {
            self.context.metrics.backlog.inc();
            pending.insert((job.token.clone(), job.attempt));
        }
        drop(pending);
        self.handoff.insert(jobs);
    }

    /// Whether the same attempt is pending already (its record was read twice).
    pub(crate) fn is_queued(&self, job: &DeliveryJob) -> bool {
        lock(&self.pending).contains(&(job.token.clone(), job.attempt))
    }

    /// Forgets the queued attempts read from `partitions`, taken over by another instance.
    /// Attempts already in flight finish (and may be repeated by the new owner).
    pub(crate) fn drop_partitions(&self, partitions: &[Partition]) {
        let revoked = |job: &DeliveryJob| {
            job.source.as_ref().is_some_and(|s| {
                partitions
                    .iter()
                    .any(|p| p.topic == s.topic && p.partition == s.partition)
            })
        };
        let mut dropped = 0usize;
        let mut forget = |job: &DeliveryJob| {
            if revoked(job) {
                lock(&self.pending).remove(&(job.token.clone(), job.attempt));
                dropped += 1;
                false
            } else {
                true
            }
        };
        self.handoff.retain(&mut forget);
        for endpoint in lock(&self.endpoints).values() {
            lock(&endpoint.queue).retain(|job| forget(job));
        }
        let lanes = self.lanes.forget(|source| {
            partitions
                .iter()
                .any(|p| p.topic == source.topic && p.partition == source.partition)
        });
        for job in &lanes.dropped {
            forget(job);
        }
        if !lanes.released.is_empty() {
            self.handoff.insert(lanes.released);
        }
        for partition in partitions {
            self.context.unsettled.forget(partition);
        }
        self.context.metrics.backlog.dec_by(dropped as i64);
        if dropped > 0 {
            info!(
                dropped,
                "queued deliveries of revoked partitions left to their new owner"
            );
        }
    }

    /// Moves due deliveries to their endpoints until shutdown, then waits (up to `grace`) for
    /// the attempts in flight.
    pub(crate) async fn run(self: Arc<Self>, grace: Duration) {
        while let Some(mut ready) = self.handoff.due(&self.shutdown).await {
            // Versions of one receipt due together take its lane oldest first, so each is
            // delivered rather than the newest first and the others then dropped as stale.
            ready.sort_by_key(|job| job.receipt.version);
            for job in ready {
                if let Some(job) = self.lanes.admit(job) {
                    self.endpoint(&job.webhook_key).push(job);
                }
            }
        }
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                "attempts still in flight at shutdown stay pending and are sent again on restart"
            );
        }
    }
}
