//! One attempt of a delivery: its webhook's current configuration, the checks that can end it
//! without a request (unconfigured, disabled, stale, no auth token, no status to tell), the
//! signed request, and what its answer leads to ([`super::outcome`]).

use std::sync::{Arc, PoisonError};

use receipts_bus::Outgoing;
use receipts_proto::codec::Encoding;
use receipts_proto::v1;
use receipts_webhook::sealed;
use receipts_webhook::{
    Attempt, AttemptOutcome, DeliveryPayload, Method, WebhookRequest, redacted_url,
};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{Instrument, debug, info, warn};

use super::endpoint::Endpoint;
use super::settle::Settlement;
use super::{Deliverer, PRODUCE_TIMEOUT};
use crate::job::{AttemptRecord, DeliveryJob};
use crate::metrics::ScopeLabel;

/// Why a delivery ends without a request.
enum Ending {
    /// Dropped, counted by this reason: stale, unconfigured, no_status.
    Dropped(&'static str),
    DeadLetter(String),
}

impl Deliverer {
    /// One attempt, as a span in the trace of the update that caused the delivery (for a retry:
    /// a child of the attempt before it). `permit` is one of the endpoint's requests in flight:
    /// it is given back as soon as the request is answered, so that settling the outcome (a
    /// changelog round trip) does not hold back the endpoint's next request. The receipt's next
    /// version still waits for the settlement (its lane), so per-receipt order is unchanged.
    pub(super) async fn attempt(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        job: DeliveryJob,
        permit: OwnedSemaphorePermit,
    ) {
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
        self.attempt_in_span(endpoint, job, permit)
            .instrument(span)
            .await
    }

    async fn attempt_in_span(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        job: DeliveryJob,
        permit: OwnedSemaphorePermit,
    ) {
        let cx = &self.context;
        // An attempt that ends without a request gives its slot back before settling.
        let (request, config) = match self.prepare(&job) {
            Ok(prepared) => prepared,
            Err(ending) => {
                drop(permit);
                return match ending {
                    Ending::Dropped(reason) => {
                        cx.metrics.dropped(reason);
                        self.settle(job, Settlement::Done).await
                    }
                    Ending::DeadLetter(reason) => self.dead_letter(job, reason).await,
                };
            }
        };
        let sent_at_ms = self.handoff.now_ms();
        let attempt = cx.client.send(&request).await;
        drop(permit);
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

    /// The signed request of `job` and its webhook's configuration, or why the delivery ends
    /// without one.
    fn prepare(&self, job: &DeliveryJob) -> Result<(WebhookRequest, v1::WebhookConfig), Ending> {
        let cx = &self.context;
        let config = cx
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&job.webhook_key)
            .cloned();
        let Some(config) = config else {
            info!(webhook = %job.webhook_key, "webhook no longer configured, delivery dropped");
            return Err(Ending::Dropped("unconfigured"));
        };
        if config.disabled_at.is_some() {
            let reason = format!("endpoint disabled: {}", config.disabled_reason);
            return Err(Ending::DeadLetter(reason));
        }
        match cx
            .store
            .delivered_version(&job.webhook_key, job.receipt.sid.as_str())
        {
            Ok(Some(delivered)) if delivered >= job.receipt.version => {
                debug!(receipt = %job.receipt.sid, version = job.receipt.version, delivered, "stale delivery dropped");
                return Err(Ending::Dropped("stale"));
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "cannot read the delivered version"),
        }
        let Some(auth_token) = cx.accounts.get(&job.account_sid) else {
            let reason = format!("no auth token configured for account {}", job.account_sid);
            return Err(Ending::DeadLetter(reason));
        };
        let method = config
            .method
            .parse::<Method>()
            .map_err(|e| Ending::DeadLetter(e.to_string()))?;
        let Some(payload) = DeliveryPayload::of(&job.receipt) else {
            return Err(Ending::Dropped("no_status"));
        };
        let signing_secrets = sealed::signing_secrets(
            &config,
            &job.webhook_key,
            cx.secrets_key.as_ref(),
            self.handoff.now_ms(),
        )
        .map_err(|error| Ending::DeadLetter(error.to_string()))?;
        let request = WebhookRequest {
            url: config.post_webhook_url.clone(),
            method,
            payload,
            auth_token: auth_token.expose().to_owned(),
            idempotency_token: job.token.clone(),
            signing_secrets,
            receipt_version: job.receipt.version,
        };
        Ok((request, config))
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
}
