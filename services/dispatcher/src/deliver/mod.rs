//! Attempts: when they are due, who may send them, and what their outcome leads to.
//!
//! Pending deliveries wait in a due-time queue. When one is due it moves to its endpoint's own
//! queue, and each endpoint has its own worker, so a slow or dead endpoint only ever delays
//! itself:
//! - at most `endpoint_concurrency` attempts per endpoint are in flight at once;
//! - a circuit breaker opens after `failure_threshold` transient failures in a row; while open
//!   the endpoint's deliveries wait (still pending in sled), then a single probe decides whether
//!   it closes again.
//!
//! Order: the versions of one receipt go to a webhook one at a time, in version order, through
//! the receipt's lane ([`crate::lanes`]); different receipts are in flight to an endpoint at
//! once, and a receipt waiting for its retry holds back only itself. A delivery whose receipt
//! version is not newer than the newest version already delivered to the same webhook is
//! dropped as stale (counted, never sent), and every request carries the version in
//! `X-Receipts-Receipt-Version`.
//!
//! Outcomes are *settled*: delivered → the delivered version is raised and the delivery marked
//! settled; a transient failure → the next attempt is produced to the retry topic (to the same
//! partition) with its due time, and the delivery marked as living there at that attempt;
//! rejected, exhausted or gone → the delivery is produced to the dead-letter topic with its last
//! error and marked settled; 410 Gone also writes the webhook's configuration back to
//! `webhook-configs` with `disabled_at` set. Every mark is written to the dispatcher changelog
//! and acknowledged before it is stored, and only then does the attempt stop holding back its
//! partition's committed offset ([`Unsettled`]). A failure to produce leaves the attempt pending
//! and tries again a second later. Everything is at least once: a crash or a partition move
//! after a request was answered but before its outcome was settled sends it again, with the
//! same `I-Twilio-Idempotency-Token`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use receipts_bus::record::ERROR_HEADER;
use receipts_bus::{Outgoing, Partition, Publisher, TopicNames};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_runtime::config::Secret;
use receipts_store::PartitionOffset;
use receipts_webhook::sealed::{self, SecretsKey};
use receipts_webhook::{
    Attempt, AttemptOutcome, DeliveryPayload, Method, RetrySchedule, WebhookClient, WebhookRequest,
    redacted_url,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, warn};

use crate::configs::SharedDirectory;
use crate::due::DueQueue;
use crate::job::{AttemptRecord, DUE_AT_HEADER, DeliveryJob};
use crate::lanes::Lanes;
use crate::metrics::{DispatcherMetrics, ScopeLabel};
use crate::progress::{ChangelogProgress, Unsettled};
use crate::store::{DispatcherStore, Entry, SETTLED, delivered_entry, progress_entry};
use crate::{now_ms, timestamp_now};

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

const REQUEUE_AFTER: Duration = Duration::from_secs(1);
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

#[derive(Debug)]
struct Endpoint {
    key: String,
    queue: Mutex<VecDeque<DeliveryJob>>,
    ready: Notify,
    permits: Arc<Semaphore>,
    breaker: Mutex<Breaker>,
}

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

/// How an attempt ended, for what it leaves behind.
#[derive(Debug, Clone, Copy)]
enum Settlement {
    Delivered,
    /// The next attempt, this one, lives on the retry topic.
    Retrying(u32),
    /// Dead-lettered or dropped: nothing more to do.
    Done,
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
    due: Mutex<DueQueue>,
    /// Every attempt between its enqueueing and its settlement, by token and attempt.
    pending: Mutex<std::collections::HashSet<(String, u32)>>,
    lanes: Lanes,
    wake: Notify,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Deliverer {
    pub(crate) fn new(
        context: DeliveryContext,
        due: DueQueue,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Deliverer {
            context,
            due: Mutex::new(due),
            pending: Mutex::default(),
            lanes: Lanes::default(),
            wake: Notify::new(),
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
        let mut due = lock(&self.due);
        let mut pending = lock(&self.pending);
        for job in jobs {
            self.context.metrics.backlog.inc();
            pending.insert((job.token.clone(), job.attempt));
            due.insert(job);
        }
        drop(pending);
        drop(due);
        self.wake.notify_one();
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
        lock(&self.due).retain(&mut forget);
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
            let mut due = lock(&self.due);
            for job in lanes.released {
                due.insert(job);
            }
            self.wake.notify_one();
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

    /// Puts a delivery whose outcome could not be stored back in the queue.
    fn requeue(&self, mut job: DeliveryJob) {
        job.due_at_ms = now_ms() + REQUEUE_AFTER.as_millis() as i64;
        lock(&self.due).insert(job);
        self.wake.notify_one();
    }

    /// Moves due deliveries to their endpoints until shutdown, then waits (up to `grace`) for
    /// the attempts in flight.
    pub(crate) async fn run(self: Arc<Self>, grace: Duration) {
        loop {
            let now = now_ms();
            let (ready, next) = {
                let mut due = lock(&self.due);
                let taken = (due.take_due(now), due.next_due());
                self.context.metrics.paged_out.set(due.paged_out() as i64);
                taken
            };
            for job in ready {
                if let Some(job) = self.lanes.admit(job) {
                    self.endpoint(&job.webhook_key).push(job);
                }
            }
            let wait = next.map_or(Duration::from_secs(3600), |at| {
                Duration::from_millis((at - now).max(1) as u64)
            });
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
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

    fn endpoint(self: &Arc<Self>, key: &str) -> Arc<Endpoint> {
        let mut endpoints = lock(&self.endpoints);
        if let Some(endpoint) = endpoints.get(key) {
            return endpoint.clone();
        }
        let endpoint = Arc::new(Endpoint {
            key: key.to_owned(),
            queue: Mutex::default(),
            ready: Notify::new(),
            permits: Arc::new(Semaphore::new(self.context.endpoint_concurrency)),
            breaker: Mutex::default(),
        });
        endpoints.insert(key.to_owned(), endpoint.clone());
        self.tracker
            .spawn(self.clone().endpoint_worker(endpoint.clone()));
        endpoint
    }

    async fn endpoint_worker(self: Arc<Self>, endpoint: Arc<Endpoint>) {
        loop {
            let job = loop {
                if let Some(job) = lock(&endpoint.queue).pop_front() {
                    break job;
                }
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = endpoint.ready.notified() => {}
                }
            };
            let open_for = lock(&endpoint.breaker)
                .open_until
                .map(|until| until.saturating_duration_since(Instant::now()));
            if let Some(wait) = open_for {
                debug!(endpoint = %endpoint.key, ?wait, "circuit open, waiting to probe");
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let permit = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                permit = endpoint.permits.clone().acquire_owned() => {
                    permit.expect("endpoint semaphores are never closed")
                }
            };
            if open_for.is_some() {
                // Half-open: one probe at a time decides.
                self.attempt(&endpoint, job).await;
                drop(permit);
            } else {
                let (this, endpoint) = (self.clone(), endpoint.clone());
                self.tracker.spawn(async move {
                    this.attempt(&endpoint, job).await;
                    drop(permit);
                });
            }
        }
    }

    /// One attempt, as a span in the trace of the update that caused the delivery (for a retry:
    /// a child of the attempt before it).
    async fn attempt(self: &Arc<Self>, endpoint: &Endpoint, job: DeliveryJob) {
        let span = tracing::info_span!(
            "webhook attempt",
            otel.name = "deliver webhook",
            receipts.delivery.attempt = job.attempt,
            receipts.delivery.token = %job.token,
            receipts.webhook.key = %job.webhook_key,
            receipts.receipt.sid = %job.receipt.sid,
            receipts.receipt.version = job.receipt.version,
            receipts.delivery.outcome = tracing::field::Empty,
        );
        job.trace.adopt(&span);
        self.attempt_in_span(endpoint, job).instrument(span).await
    }

    async fn attempt_in_span(self: &Arc<Self>, endpoint: &Endpoint, job: DeliveryJob) {
        let cx = &self.context;
        let config = cx
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&job.webhook_key)
            .cloned();
        let Some(config) = config else {
            info!(webhook = %job.webhook_key, "webhook no longer configured, delivery dropped");
            cx.metrics.dropped("unconfigured");
            return self.settle(job, Settlement::Done).await;
        };
        if config.disabled_at.is_some() {
            let reason = format!("endpoint disabled: {}", config.disabled_reason);
            return self.dead_letter(job, reason).await;
        }
        match cx
            .store
            .delivered_version(&job.webhook_key, &job.receipt.sid)
        {
            Ok(Some(delivered)) if delivered >= job.receipt.version => {
                debug!(receipt = %job.receipt.sid, version = job.receipt.version, delivered, "stale delivery dropped");
                cx.metrics.dropped("stale");
                return self.settle(job, Settlement::Done).await;
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "cannot read the delivered version"),
        }
        let Some(auth_token) = cx.accounts.get(&job.account_sid) else {
            let reason = format!("no auth token configured for account {}", job.account_sid);
            return self.dead_letter(job, reason).await;
        };
        let method = match config.method.parse::<Method>() {
            Ok(method) => method,
            Err(e) => return self.dead_letter(job, e.to_string()).await,
        };
        let Some(payload) = DeliveryPayload::of(&job.receipt) else {
            cx.metrics.dropped("no_status");
            return self.settle(job, Settlement::Done).await;
        };
        let signing_secrets = match sealed::signing_secrets(
            &config,
            &job.webhook_key,
            cx.secrets_key.as_ref(),
            now_ms(),
        ) {
            Ok(secrets) => secrets,
            Err(error) => return self.dead_letter(job, error.to_string()).await,
        };
        let request = WebhookRequest {
            url: config.post_webhook_url.clone(),
            method,
            payload,
            auth_token: auth_token.expose().to_owned(),
            idempotency_token: job.token.clone(),
            signing_secrets,
            receipt_version: job.receipt.version,
        };
        let sent_at_ms = now_ms();
        let attempt = cx.client.send(&request).await;
        cx.metrics
            .latency
            .get_or_create(&ScopeLabel::of_key(&job.webhook_key))
            .observe(attempt.elapsed.as_secs_f64());
        self.record_attempt(&job, &request.url, sent_at_ms, &attempt);
        cx.metrics.attempt(attempt.outcome.label());
        tracing::Span::current().record("receipts.delivery.outcome", attempt.outcome.label());
        match attempt.outcome {
            AttemptOutcome::Delivered { status } => {
                debug!(endpoint = %redacted_url(&request.url), status, attempt = job.attempt, "webhook delivered");
                self.record(endpoint, true);
                self.settle(job, Settlement::Delivered).await;
            }
            AttemptOutcome::Gone => {
                self.record(endpoint, true);
                if self.disable(&job.webhook_key, config).await {
                    self.dead_letter(job, "HTTP 410 Gone: endpoint disabled".into())
                        .await;
                } else {
                    // Its configuration changed while the attempt was out: the next attempt
                    // goes by the new one.
                    self.retry(
                        job,
                        "HTTP 410 Gone from a replaced configuration".into(),
                        None,
                    )
                    .await;
                }
            }
            AttemptOutcome::Retry {
                reason,
                retry_after,
            } => {
                warn!(endpoint = %redacted_url(&request.url), attempt = job.attempt, %reason, "webhook delivery failed");
                self.record(endpoint, false);
                self.retry(job, reason, retry_after).await;
            }
            AttemptOutcome::Reject { reason } => {
                self.record(endpoint, true);
                self.dead_letter(job, reason).await;
            }
        }
    }

    /// Writes the attempt to the attempts topic in the background: the delivery does not wait
    /// for it, and a record lost to a broker outage only leaves a gap in what operators see.
    fn record_attempt(&self, job: &DeliveryJob, url: &str, sent_at_ms: i64, attempt: &Attempt) {
        let record = AttemptRecord::of(job, &redacted_url(url), sent_at_ms, attempt);
        let payload = serde_json::to_vec(&record).expect("an attempt serialises to JSON");
        let outgoing = Outgoing::new(
            &self.context.topics.webhook_attempts,
            record.receipt_sid.as_str(),
            payload,
        )
        .content_type(Encoding::Json);
        let publisher = self.context.publisher.clone();
        self.tracker.spawn(async move {
            let sent = tokio::time::timeout(PRODUCE_TIMEOUT, publisher.send_all(&[outgoing])).await;
            if !matches!(sent, Ok(Ok(_))) {
                debug!(receipt = %record.receipt_sid, attempt = record.attempt, "webhook attempt not recorded");
            }
        });
    }

    /// Feeds the circuit breaker: `alive` is any answer but a transient failure.
    fn record(&self, endpoint: &Endpoint, alive: bool) {
        let mut breaker = lock(&endpoint.breaker);
        if alive {
            if breaker.open_until.is_some() {
                info!(endpoint = %endpoint.key, "circuit closed");
                self.context
                    .metrics
                    .breakers_open
                    .get_or_create(&ScopeLabel::of_key(&endpoint.key))
                    .dec();
            }
            *breaker = Breaker::default();
            return;
        }
        breaker.failures += 1;
        if breaker.failures >= self.context.breaker.failure_threshold {
            if breaker.open_until.is_none() {
                warn!(endpoint = %endpoint.key, failures = breaker.failures, "circuit opened");
                self.context
                    .metrics
                    .breaker_opened
                    .get_or_create(&ScopeLabel::of_key(&endpoint.key))
                    .inc();
                self.context
                    .metrics
                    .breakers_open
                    .get_or_create(&ScopeLabel::of_key(&endpoint.key))
                    .inc();
            }
            breaker.open_until =
                Some(Instant::now() + Duration::from_millis(self.context.breaker.open_ms));
        }
    }

    async fn retry(
        self: &Arc<Self>,
        job: DeliveryJob,
        reason: String,
        retry_after: Option<Duration>,
    ) {
        let next = job.attempt + 1;
        let delay = self
            .context
            .schedule
            .delay_before(next, retry_after, &mut rand::rng());
        let Some(delay) = delay else {
            let reason = format!("gave up after {next} attempts: {reason}");
            return self.dead_letter(job, reason).await;
        };
        let mut retry = job.clone();
        retry.attempt = next;
        retry.due_at_ms = now_ms() + delay.as_millis() as i64;
        retry.last_error = Some(reason);
        let mut record = Outgoing::new(
            &self.context.topics.webhook_retries,
            retry.record_key(),
            retry.to_json(),
        )
        .content_type(Encoding::Json)
        .header(DUE_AT_HEADER, retry.due_at_ms.to_string())
        // The next attempt continues this one's trace.
        .traced_by(&job.trace)
        .traced(&tracing::Span::current());
        // The retry partition of a conversation is its receipt-updates partition, so the
        // retry moves with the partition that owns the delivery.
        if let Some(source) = &job.source {
            record = record.to_partition(source.partition);
        }
        if self.produce(record).await {
            self.settle(job, Settlement::Retrying(next)).await;
        } else {
            self.requeue(job);
        }
    }

    async fn dead_letter(self: &Arc<Self>, mut job: DeliveryJob, reason: String) {
        warn!(webhook = %job.webhook_key, endpoint = %redacted_url(&job.url), receipt = %job.receipt.sid, %reason, "webhook delivery dead-lettered");
        job.last_error = Some(reason.clone());
        // The dead-letter record shows the URL redacted: it is read by operators and tools, and
        // a replay delivers to the configuration's URL, not to this one.
        let mut listed = job.clone();
        listed.url = redacted_url(&job.url);
        let record = Outgoing::new(
            &self.context.topics.webhook_dlq,
            job.record_key(),
            listed.to_json(),
        )
        .content_type(Encoding::Json)
        .header(ERROR_HEADER, reason.as_str())
        .traced_by(&job.trace)
        .traced(&tracing::Span::current());
        if self.produce(record).await {
            self.context.metrics.dead_lettered.inc();
            self.settle(job, Settlement::Done).await;
        } else {
            self.requeue(job);
        }
    }

    /// Writes the configuration back with `disabled_at` set, and applies it at once — only if
    /// it is still the configuration the attempt used: a write made since (a new URL, say) wins
    /// over the 410 of the old one. False when nothing was disabled for that reason.
    async fn disable(&self, key: &str, mut config: v1::WebhookConfig) -> bool {
        let current = self
            .context
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned();
        if current.as_ref() != Some(&config) {
            info!(webhook = %key, "410 Gone for a configuration replaced since the attempt began; the newer one stays as written");
            return false;
        }
        config.disabled_at = Some(timestamp_now());
        config.disabled_reason = format!(
            "{} answered 410 Gone; write the configuration again to enable it",
            config.post_webhook_url
        );
        warn!(webhook = %key, endpoint = %redacted_url(&config.post_webhook_url), "webhook endpoint disabled after 410 Gone");
        self.context.metrics.endpoints_disabled.inc();
        let payload = codec::encode(&config, Encoding::Protobuf);
        let record = Outgoing::new(&self.context.topics.webhook_configs, key, payload)
            .content_type(Encoding::Protobuf);
        if !self.produce(record).await {
            error!(webhook = %key, "cannot write the disabled configuration; disabled in memory only");
        }
        self.context
            .directory
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(key.to_owned(), Some(config));
        true
    }

    async fn produce(&self, record: Outgoing) -> bool {
        let sent = tokio::time::timeout(
            PRODUCE_TIMEOUT,
            self.context
                .publisher
                .send_all(std::slice::from_ref(&record)),
        )
        .await;
        match sent {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                error!(error = %receipts_bus::consume::error_chain(&error), "producing failed; the delivery stays pending");
                false
            }
            Err(_) => {
                error!(topic = %record.topic, "producing timed out; the delivery stays pending");
                false
            }
        }
    }

    /// Records how an attempt ended: in the changelog (acknowledged) first, then locally; then
    /// the attempt stops holding back its partition's committed offset.
    async fn settle(self: &Arc<Self>, job: DeliveryJob, settlement: Settlement) {
        let cx = &self.context;
        let mut entries: Vec<Entry> = Vec::with_capacity(2);
        match settlement {
            Settlement::Delivered => {
                entries.push(progress_entry(&job.token, SETTLED));
                let newest = cx
                    .store
                    .delivered_version(&job.webhook_key, &job.receipt.sid)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
                    .max(job.receipt.version);
                entries.push(delivered_entry(&job.webhook_key, &job.receipt.sid, newest));
            }
            Settlement::Retrying(attempt) => entries.push(progress_entry(&job.token, attempt)),
            Settlement::Done => entries.push(progress_entry(&job.token, SETTLED)),
        }
        let mut positions = Vec::new();
        let mut landed_at: Option<(i32, Vec<i64>)> = None;
        if let Some(source) = &job.source {
            let records: Vec<Outgoing> = entries
                .iter()
                .map(|(key, value)| Outgoing {
                    topic: cx.topics.dispatcher_changelog.clone(),
                    partition: Some(source.partition),
                    key: key.clone(),
                    payload: Some(value.clone()),
                    headers: Vec::new(),
                })
                .collect();
            let mut backoff = receipts_bus::errors::Backoff::default();
            let landed = loop {
                match cx.publisher.send_all(&records).await {
                    Ok(landed) => break landed,
                    Err(error) if error.is_transient() && !self.shutdown.is_cancelled() => {
                        warn!(error = %receipts_bus::consume::error_chain(&error), "writing a delivery's outcome to the changelog failed, trying again");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                    Err(error) => {
                        // Not settled: whoever reads its record next attempts it again.
                        error!(error = %receipts_bus::consume::error_chain(&error), "cannot write a delivery's outcome to the changelog");
                        cx.metrics.backlog.dec();
                        lock(&self.pending).remove(&(job.token.clone(), job.attempt));
                        return;
                    }
                }
            };
            landed_at = Some((source.partition, landed.iter().map(|l| l.offset).collect()));
            cx.changelog.landed(source.partition, &landed);
        }
        // The entries first; the changelog position they reach only afterwards, in a write of
        // its own: a position is stored only once every entry before it is (settlements finish
        // in any order), so a restore from it never skips an entry lost with a crash.
        let store = cx.store.clone();
        let written = tokio::task::spawn_blocking(move || store.write(&entries, &[])).await;
        cx.metrics.backlog.dec();
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                error!(%error, "cannot store a delivery's outcome; it is restored from the changelog")
            }
            Err(error) => error!(%error, "storing a delivery's outcome failed"),
        }
        if let Some((partition, offsets)) = landed_at {
            let position = cx.changelog.stored(partition, &offsets);
            positions.push(PartitionOffset {
                topic: cx.topics.dispatcher_changelog.clone(),
                partition,
                next_offset: position,
            });
            let store = cx.store.clone();
            if let Ok(Err(error)) =
                tokio::task::spawn_blocking(move || store.write(&[], &positions)).await
            {
                warn!(%error, "cannot store the changelog position; the next restore reads more");
            }
        }
        if let Some(source) = &job.source {
            cx.unsettled.remove(source);
        }
        lock(&self.pending).remove(&(job.token.clone(), job.attempt));
        // Delivered or ended for good: the receipt's next version may go. A retry keeps the
        // lane until its own attempts end.
        if !matches!(settlement, Settlement::Retrying(_))
            && let Some(next) = self.lanes.finish(&job)
        {
            self.endpoint(&next.webhook_key).push(next);
        }
    }
}

impl Endpoint {
    fn push(&self, job: DeliveryJob) {
        lock(&self.queue).push_back(job);
        self.ready.notify_one();
    }
}
