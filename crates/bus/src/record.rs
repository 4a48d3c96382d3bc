//! Record payloads and headers.
//!
//! A [`Record`] is one consumed Kafka record, owned, so a batch can move to a blocking thread.
//! Its payload is protobuf unless its `content-type` header says JSON. Anything that cannot
//! become a valid domain event is a *poison* record: it will never succeed, so it is counted,
//! sent to a dead-letter topic with the reason, and skipped.

use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use receipts_domain::{DeliveryEvent, ReceiptChange, ReceiptState};
use receipts_proto::codec::{self, CONTENT_TYPE_HEADER, Encoding};
use receipts_proto::{ConversionError, v1};

/// The record header that carries a dead-lettered record's reason.
pub const ERROR_HEADER: &str = "receipts-error";
/// The record header that names the topic, partition and offset a dead-lettered record came from.
pub const ORIGIN_HEADER: &str = "receipts-origin";

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Record(OwnedMessage);

impl Record {
    pub(crate) fn new(message: OwnedMessage) -> Self {
        Record(message)
    }

    pub fn topic(&self) -> &str {
        self.0.topic()
    }

    pub fn partition(&self) -> i32 {
        self.0.partition()
    }

    pub fn offset(&self) -> i64 {
        self.0.offset()
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.0.key()
    }

    pub fn payload(&self) -> Option<&[u8]> {
        self.0.payload()
    }

    /// When the record was produced (or appended), in unix millis, if the broker says.
    pub fn timestamp_millis(&self) -> Option<i64> {
        self.0.timestamp().to_millis()
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        let headers = self.0.headers()?;
        headers
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(name))
            .and_then(|h| h.value)
    }

    /// Every header, in order.
    pub fn headers(&self) -> Vec<(&str, Option<&[u8]>)> {
        match self.0.headers() {
            Some(headers) => headers.iter().map(|h| (h.key, h.value)).collect(),
            None => Vec::new(),
        }
    }

    /// The value of the record's `content-type` header, if any.
    pub fn content_type(&self) -> Option<&[u8]> {
        self.header(CONTENT_TYPE_HEADER)
    }

    /// `topic/partition/offset`, how logs and dead letters name a record.
    pub fn origin(&self) -> String {
        format!("{}/{}/{}", self.topic(), self.partition(), self.offset())
    }

    /// A test or tool record that never came from a broker.
    pub fn detached(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Self {
        let headers = content_type.map(|value| {
            OwnedHeaders::new().insert(Header {
                key: CONTENT_TYPE_HEADER,
                value: Some(value),
            })
        });
        Record(OwnedMessage::new(
            payload,
            key,
            topic.to_owned(),
            rdkafka::Timestamp::NotAvailable,
            partition,
            offset,
            headers,
        ))
    }
}

impl Record {
    /// `outgoing` as a consumer would read it at `partition`/`offset`: its topic, key, payload
    /// and headers. For tests and tools.
    pub fn read_back(outgoing: &crate::Outgoing, partition: i32, offset: i64) -> Self {
        let mut headers = OwnedHeaders::new_with_capacity(outgoing.headers.len());
        for (key, value) in &outgoing.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        Record(OwnedMessage::new(
            outgoing.payload.clone(),
            Some(outgoing.key.clone()),
            outgoing.topic.clone(),
            rdkafka::Timestamp::NotAvailable,
            partition,
            offset,
            Some(headers),
        ))
    }
}

/// For tools and tests that read with a client of their own.
impl From<OwnedMessage> for Record {
    fn from(message: OwnedMessage) -> Self {
        Record(message)
    }
}

/// Why a record can never be applied.
#[derive(Debug, thiserror::Error)]
pub enum PoisonRecord {
    #[error("record has no payload")]
    EmptyPayload,
    #[error("record has no key")]
    MissingKey,
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    #[error(transparent)]
    Invalid(#[from] ConversionError),
}

/// Decodes a record's payload as the wire type `T`, honouring its `content-type`.
pub fn decode<T>(record: &Record) -> Result<T, PoisonRecord>
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    let encoding = Encoding::from_content_type(record.content_type())?;
    let payload = record.payload().ok_or(PoisonRecord::EmptyPayload)?;
    Ok(codec::decode(payload, encoding)?)
}

/// Decodes a `delivery-events` record into a validated event.
pub fn decode_delivery_event(record: &Record) -> Result<DeliveryEvent, PoisonRecord> {
    let wire: v1::Envelope = decode(record)?;
    Ok(DeliveryEvent::try_from(&wire)?)
}

/// Decodes a `receipt-updates` record into a validated receipt change.
pub fn decode_receipt_change(record: &Record) -> Result<ReceiptChange, PoisonRecord> {
    let wire: v1::ReceiptUpdated = decode(record)?;
    Ok(ReceiptChange::try_from(&wire)?)
}

/// Decodes a projector changelog record (not a tombstone) into the receipt state it holds.
pub fn decode_receipt_state(record: &Record) -> Result<ReceiptState, PoisonRecord> {
    let wire: v1::StoredReceiptState = decode(record)?;
    Ok(ReceiptState::try_from(&wire)?)
}

/// Headers announcing a payload's encoding.
pub fn content_type_headers(encoding: Encoding) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: CONTENT_TYPE_HEADER,
        value: Some(encoding.content_type()),
    })
}

#[cfg(test)]
mod tests {
    use receipts_domain::{
        AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryStatus, MessageSid,
        ParticipantSid, Receipt, ReceiptSid, Registration, StatusReport, StatusSource, Timestamp,
    };

    use super::*;

    fn change() -> ReceiptChange {
        let account = AccountSid::derive(&["account"]);
        let channel_message_id =
            ChannelMessageId::parse("SM00000000000000000000000000000001").expect("a message sid");
        ReceiptChange {
            receipt: Receipt {
                sid: ReceiptSid::derive(&["receipt"]),
                registration: Registration {
                    account: account.clone(),
                    chat_service: None,
                    conversation: ConversationSid::derive(&["conversation"]),
                    message: MessageSid::derive(&["message"]),
                    message_index: 3,
                    participant: ParticipantSid::derive(&["participant"]),
                    channel: Channel::Sms,
                    channel_message_id: channel_message_id.clone(),
                    expected_receipts: 2,
                    registered_at: Timestamp::from_unix_millis(1_764_000_000_000),
                },
                report: Some(StatusReport {
                    account,
                    channel_message_id,
                    status: DeliveryStatus::Undelivered,
                    raw_status: "undelivered".into(),
                    error_code: Some(30003),
                    provider_time: Timestamp::from_unix_millis(1_764_000_004_000),
                    source: StatusSource::TwilioMessaging,
                }),
                version: 4,
            },
            previous_status: Some(DeliveryStatus::Sent),
            previous_error_code: None,
        }
    }

    fn record(payload: Option<Vec<u8>>, content_type: Option<&str>) -> Record {
        Record::detached("updates", 0, 7, Some(b"CH".to_vec()), payload, content_type)
    }

    #[test]
    fn receipt_updates_decode_into_the_domain_in_either_encoding() {
        let wire = v1::ReceiptUpdated::from(&change());
        for encoding in [Encoding::Protobuf, Encoding::Json] {
            let payload = codec::encode(&wire, encoding);
            let content_type = (encoding == Encoding::Json).then(|| encoding.content_type());
            let decoded = decode_receipt_change(&record(Some(payload), content_type)).unwrap();
            assert_eq!(decoded, change());
            assert!(decoded.is_news());
        }
    }

    #[test]
    fn a_receipt_update_that_is_no_valid_change_is_poison() {
        assert!(matches!(
            decode_receipt_change(&record(None, None)),
            Err(PoisonRecord::EmptyPayload)
        ));
        let mut wire = v1::ReceiptUpdated::from(&change());
        wire.receipt = None;
        let payload = codec::encode(&wire, Encoding::Protobuf);
        assert!(matches!(
            decode_receipt_change(&record(Some(payload), None)),
            Err(PoisonRecord::Invalid(_))
        ));
        assert!(matches!(
            decode_receipt_change(&record(
                Some(b"{not json".to_vec()),
                Some("application/json")
            )),
            Err(PoisonRecord::Codec(_))
        ));
    }
}
