//! Record payloads and headers.
//!
//! A record's payload is protobuf unless its `content-type` header says JSON. Anything that
//! cannot become a valid domain event is a *poison* record: it will never succeed, so it is
//! counted, sent to a dead-letter topic with the reason, and skipped.

use rdkafka::message::{Headers, Message, OwnedHeaders};
use receipts_domain::DeliveryEvent;
use receipts_proto::codec::{self, CONTENT_TYPE_HEADER, Encoding};
use receipts_proto::{ConversionError, v1};

/// The record header that carries a dead-lettered record's reason.
pub const ERROR_HEADER: &str = "receipts-error";
/// The record header that names the topic, partition and offset a dead-lettered record came from.
pub const ORIGIN_HEADER: &str = "receipts-origin";

/// Why a record can never be applied.
#[derive(Debug, thiserror::Error)]
pub enum PoisonRecord {
    #[error("record has no payload")]
    EmptyPayload,
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    #[error(transparent)]
    Invalid(#[from] ConversionError),
}

/// The value of the record's `content-type` header, if any.
pub fn content_type<M: Message>(message: &M) -> Option<&[u8]> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(CONTENT_TYPE_HEADER))
        .and_then(|h| h.value)
}

/// Decodes a `delivery-events` record into a validated event.
pub fn decode_delivery_event<M: Message>(message: &M) -> Result<DeliveryEvent, PoisonRecord> {
    let encoding = Encoding::from_content_type(content_type(message))?;
    let payload = message.payload().ok_or(PoisonRecord::EmptyPayload)?;
    let wire: v1::Envelope = codec::decode(payload, encoding)?;
    Ok(DeliveryEvent::try_from(&wire)?)
}

/// Headers announcing a payload's encoding.
pub fn content_type_headers(encoding: Encoding) -> OwnedHeaders {
    OwnedHeaders::new().insert(rdkafka::message::Header {
        key: CONTENT_TYPE_HEADER,
        value: Some(encoding.content_type()),
    })
}
