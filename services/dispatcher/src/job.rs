//! A delivery: one receipt update for one configured webhook, and the attempt it is at.
//!
//! The same JSON document is the pending entry in sled, the record on the retry topic (with its
//! due time) and the record on the dead-letter topic (with its last error), so a delivery can
//! travel between them unchanged but for its attempt counter.
//!
//! In memory a delivery holds the domain [`Receipt`]; its JSON holds the receipt in the wire
//! form those topics have always carried (the proto3 JSON of `v1::Receipt`, documented in
//! docs/asyncapi.yaml), converted at the edge by [`wire_receipt`].

use receipts_bus::TraceCarrier;
use receipts_domain::Receipt;
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
    #[serde(with = "wire_receipt")]
    pub receipt: Receipt,
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
            receipt_sid: job.receipt.sid.to_string(),
            version: job.receipt.version,
            account_sid: job.account_sid.clone(),
            conversation_sid: job.receipt.registration.conversation.to_string(),
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
    pub fn new(receipt: Receipt, webhook_key: String, url: String, now_ms: i64) -> Self {
        DeliveryJob {
            token: delivery_token(receipt.sid.as_str(), receipt.version, &webhook_key),
            account_sid: receipt.registration.account.to_string(),
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
        self.receipt.registration.conversation.as_str()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a delivery serialises to JSON")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The receipt of a delivery's JSON: the proto3 JSON mapping of `v1::Receipt`, field for field
/// what the retry and dead-letter topics carried before the dispatcher held domain receipts. A
/// receipt that is no valid domain receipt fails to load, like any undecodable record.
mod wire_receipt {
    use receipts_domain::Receipt;
    use receipts_proto::v1;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        receipt: &Receipt,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        v1::Receipt::from(receipt).serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Receipt, D::Error> {
        let wire = v1::Receipt::deserialize(deserializer)?;
        Receipt::try_from(&wire).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use receipts_domain::{
        AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryStatus, MessageSid,
        ParticipantSid, ReceiptSid, Registration, StatusReport, StatusSource, Timestamp,
    };
    use receipts_proto::v1;

    use super::*;

    /// Version `version` of the receipt named `name`, read, reported at `version` seconds.
    pub(crate) fn receipt(name: &str, version: u64) -> Receipt {
        let account = AccountSid::derive(&["account"]);
        let channel_message_id = ChannelMessageId::parse(&format!("wamid.{name}")).unwrap();
        Receipt {
            sid: ReceiptSid::derive(&[name]),
            registration: Registration {
                account: account.clone(),
                chat_service: None,
                conversation: ConversationSid::derive(&[name]),
                message: MessageSid::derive(&[name]),
                message_index: 0,
                participant: ParticipantSid::derive(&[name]),
                channel: Channel::Whatsapp,
                channel_message_id: channel_message_id.clone(),
                expected_receipts: 1,
                registered_at: Timestamp::from_unix_millis(1_584_989_117_000),
            },
            report: Some(StatusReport {
                account,
                channel_message_id,
                status: DeliveryStatus::Read,
                raw_status: "read".into(),
                error_code: None,
                provider_time: Timestamp::from_unix_millis(
                    1_584_989_117_000 + version as i64 * 1000,
                ),
                source: StatusSource::WhatsappCloud,
            }),
            version,
        }
    }

    /// A first attempt of `receipt(name, version)` to the account webhook, due at `due_at_ms`.
    pub(crate) fn job(name: &str, version: u64, due_at_ms: i64) -> DeliveryJob {
        DeliveryJob::new(
            receipt(name, version),
            "account/AC1".into(),
            "https://x".into(),
            due_at_ms,
        )
    }

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
        let mut job = job("DY1", 3, 5);
        job.last_error = Some("HTTP 500".into());
        assert_eq!(DeliveryJob::from_json(&job.to_json()).unwrap(), job);
    }

    /// What the dispatcher wrote to sled and to the retry and dead-letter topics while its jobs
    /// held the wire receipt: the same fields, in the same order, with `v1::Receipt`.
    #[derive(Serialize)]
    struct WireJob {
        token: String,
        webhook_key: String,
        url: String,
        account_sid: String,
        receipt: v1::Receipt,
        attempt: u32,
        due_at_ms: i64,
        created_at_ms: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        replayed_from: Option<String>,
    }

    #[test]
    fn records_written_with_wire_receipts_load_and_are_written_back_unchanged() {
        for (version, last_error, replayed_from) in [
            (1, None, None),
            (7, Some("HTTP 503".to_owned()), Some("0/12".to_owned())),
        ] {
            let domain = receipt("DY9", version);
            let written = serde_json::to_vec(&WireJob {
                token: delivery_token(domain.sid.as_str(), version, "account/AC1"),
                webhook_key: "account/AC1".into(),
                url: "https://x/***".into(),
                account_sid: domain.registration.account.to_string(),
                receipt: v1::Receipt::from(&domain),
                attempt: 2,
                due_at_ms: 1_764_000_005_000,
                created_at_ms: 1_764_000_000_000,
                last_error: last_error.clone(),
                replayed_from: replayed_from.clone(),
            })
            .unwrap();
            let job = DeliveryJob::from_json(&written).unwrap();
            assert_eq!(job.receipt, domain);
            assert_eq!(job.last_error, last_error);
            assert_eq!(job.replayed_from, replayed_from);
            assert_eq!(
                String::from_utf8(job.to_json()).unwrap(),
                String::from_utf8(written).unwrap()
            );
        }
    }

    #[test]
    fn a_record_whose_receipt_is_not_valid_does_not_load() {
        let mut value = serde_json::to_value(job("DY1", 1, 0)).unwrap();
        value["receipt"]["sid"] = "not a sid".into();
        assert!(DeliveryJob::from_json(&serde_json::to_vec(&value).unwrap()).is_err());
    }
}
