//! What an attempt's answer leads to, besides its settlement: the next attempt on the retry
//! topic (to the same partition, with its due time), the dead-letter topic, and the write-back
//! of a configuration disabled by 410 Gone. A failure to produce leaves the attempt pending and
//! tries again a second later ([`Deliverer::requeue`]).

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rand::Rng;
use receipts_bus::Outgoing;
use receipts_bus::record::ERROR_HEADER;
use receipts_domain::Timestamp;
use receipts_proto::codec::{self, Encoding};
use receipts_proto::convert::timestamp_to_wire;
use receipts_proto::v1;
use receipts_webhook::{RetrySchedule, redacted_url};
use tracing::{error, info, warn};

use super::settle::Settlement;
use super::{Deliverer, PRODUCE_TIMEOUT, REQUEUE_AFTER};
use crate::job::{DUE_AT_HEADER, DeliveryJob};

/// The attempt after `job`'s failed one, due after the schedule's delay (jittered by `rng`,
/// lengthened by the receiver's `Retry-After`) from `now`; `None` when the schedule has no
/// attempt left.
pub(super) fn next_attempt(
    job: &DeliveryJob,
    schedule: &RetrySchedule,
    retry_after: Option<Duration>,
    now: Timestamp,
    rng: &mut impl Rng,
) -> Option<DeliveryJob> {
    let next = job.attempt + 1;
    let delay = schedule.delay_before(next, retry_after, rng)?;
    let mut retry = job.clone();
    retry.attempt = next;
    retry.due_at_ms = now.unix_millis() + delay.as_millis() as i64;
    Some(retry)
}

impl Deliverer {
    /// Puts a delivery whose outcome could not be produced back in the queue.
    pub(super) fn requeue(&self, mut job: DeliveryJob) {
        job.due_at_ms = self.handoff.now_ms() + REQUEUE_AFTER.as_millis() as i64;
        self.handoff.insert([job]);
    }

    /// Produces the next attempt to the retry topic with its due time, or dead-letters the
    /// delivery once the schedule is exhausted.
    pub(super) async fn retry(
        self: &Arc<Self>,
        job: DeliveryJob,
        reason: String,
        retry_after: Option<Duration>,
    ) {
        let now = self.handoff.clock().now();
        let next = next_attempt(
            &job,
            &self.context.schedule,
            retry_after,
            now,
            &mut rand::rng(),
        );
        let Some(mut retry) = next else {
            let reason = format!("gave up after {} attempts: {reason}", job.attempt + 1);
            return self.dead_letter(job, reason).await;
        };
        let next = retry.attempt;
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

    pub(super) async fn dead_letter(self: &Arc<Self>, mut job: DeliveryJob, reason: String) {
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
    pub(super) async fn disable(&self, key: &str, mut config: v1::WebhookConfig) -> bool {
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
        config.disabled_at = Some(timestamp_to_wire(self.handoff.clock().now()));
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

    pub(super) async fn produce(&self, record: Outgoing) -> bool {
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
}
