//! A delivery: one receipt update for one configured webhook, and the attempt it is at.
//!
//! The same JSON document is the pending entry in sled, the record on the retry topic (with its
//! due time) and the record on the dead-letter topic (with its last error), so a delivery can
//! travel between them unchanged but for its attempt counter.

use receipts_bus::TraceCarrier;
use receipts_proto::v1;
use receipts_webhook::{Attempt, AttemptOutcome};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Header of retry records: when the attempt is due (unix millis).
pub const DUE_AT_HEADER: &str = "receipts-due-at";
/// Header of replay markers on the DLQ: the `partition/offset` of the entry replayed.
pub const REPLAYED_HEADER: &str = "receipts-replayed";

/// One delivery of one receipt version to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryJob {
    /// `I-Twilio-Idempotency-Token` and Standard Webhooks `webhook-id`: derived from the
    /// receipt sid, its version and the webhook key, so every attempt (and a replay) carries
    /// the same one.
    pub token: String,
    /// The `webhook-configs` key of the webhook; its current configuration is looked up at
    /// every attempt (a URL changed meanwhile is honoured, a deleted webhook ends the delivery).
    pub webhook_key: String,
    /// The URL when the delivery was created, for inspection and DLQ filters.
    pub url: String,
    pub account_sid: String,
    pub receipt: v1::Receipt,
    /// The 0-based number of the next attempt.
    pub attempt: u32,
    pub due_at_ms: i64,
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// `partition/offset` of the DLQ entry this delivery was replayed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_from: Option<String>,
    /// The record this attempt was read from; its partition's committed offset stays before
    /// it until the attempt is settled. Never serialised: it is where *this* copy came from.
    #[serde(skip)]
    pub source: Option<Source>,
    /// The trace context of the record this attempt was read from: every attempt of the
    /// delivery continues the trace of the report that caused it. It travels in record
    /// headers, not in the JSON.
    #[serde(skip)]
    pub trace: TraceCarrier,
}

/// Where a pending attempt was read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One webhook attempt as the attempts topic records it, keyed by receipt sid: for operators
/// to see each attempt of a receipt's deliveries with its answer and latency. Written after the
/// attempt and never read back by the dispatcher, so losing one loses no delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub receipt_sid: String,
    pub version: u64,
    pub account_sid: String,
    pub conversation_sid: String,
    pub webhook_key: String,
    /// Redacted (credentials and query as `***`).
    pub url: String,
    pub token: String,
    /// 0-based.
    pub attempt: u32,
    /// When the request was sent, unix millis.
    pub at_ms: i64,
    pub latency_ms: u64,
    /// `delivered`, `retry`, `rejected` or `gone`.
    pub outcome: String,
    /// The answer: `HTTP 200`, or why the attempt failed.
    pub answer: String,
}

impl AttemptRecord {
    /// The record of `attempt` of `job`, sent at `sent_at_ms` to `url` (already redacted).
    pub fn of(job: &DeliveryJob, url: &str, sent_at_ms: i64, attempt: &Attempt) -> Self {
        let answer = match &attempt.outcome {
            AttemptOutcome::Delivered { status } => format!("HTTP {status}"),
            AttemptOutcome::Gone => "HTTP 410".to_owned(),
            AttemptOutcome::Retry { reason, .. } | AttemptOutcome::Reject { reason } => {
                reason.clone()
            }
        };
        AttemptRecord {
            receipt_sid: job.receipt.sid.clone(),
            version: job.receipt.version,
            account_sid: job.account_sid.clone(),
            conversation_sid: job.receipt.conversation_sid.clone(),
            webhook_key: job.webhook_key.clone(),
            url: url.to_owned(),
            token: job.token.clone(),
            attempt: job.attempt,
            at_ms: sent_at_ms,
            latency_ms: attempt.elapsed.as_millis() as u64,
            outcome: attempt.outcome.label().to_owned(),
            answer,
        }
    }
}

/// The idempotency token of `receipt_sid` at `version` for `webhook_key`.
pub fn delivery_token(receipt_sid: &str, version: u64, webhook_key: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [receipt_sid, &version.to_string(), webhook_key] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

impl DeliveryJob {
    pub fn new(receipt: v1::Receipt, webhook_key: String, url: String, now_ms: i64) -> Self {
        DeliveryJob {
            token: delivery_token(&receipt.sid, receipt.version, &webhook_key),
            account_sid: receipt.account_sid.clone(),
            webhook_key,
            url,
            receipt,
            attempt: 0,
            due_at_ms: now_ms,
            created_at_ms: now_ms,
            last_error: None,
            replayed_from: None,
            source: None,
            trace: TraceCarrier::default(),
        }
    }

    /// Tells attempts apart in the due queue: one delivery has at most one pending attempt,
    /// but the next one can be read back from the retry topic before this one is settled.
    pub fn pending_key(&self) -> Vec<u8> {
        format!("{}/{:010}", self.token, self.attempt).into_bytes()
    }

    /// The record key on the retry and dead-letter topics: the conversation, like
    /// `receipt-updates`.
    pub fn record_key(&self) -> &str {
        &self.receipt.conversation_sid
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a delivery serialises to JSON")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_depends_on_receipt_version_and_webhook() {
        let a = delivery_token("DY1", 1, "account/AC1");
        assert_eq!(a, delivery_token("DY1", 1, "account/AC1"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, delivery_token("DY1", 2, "account/AC1"));
        assert_ne!(a, delivery_token("DY1", 1, "service/AC1/IS1"));
        assert_ne!(a, delivery_token("DY2", 1, "account/AC1"));
    }

    #[test]
    fn a_job_round_trips_through_json() {
        let receipt = v1::Receipt {
            sid: "DY1".into(),
            version: 3,
            status: v1::DeliveryStatus::Read.into(),
            ..Default::default()
        };
        let mut job = DeliveryJob::new(receipt, "account/AC1".into(), "https://x".into(), 5);
        job.last_error = Some("HTTP 500".into());
        assert_eq!(DeliveryJob::from_json(&job.to_json()).unwrap(), job);
    }
}
