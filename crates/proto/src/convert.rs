//! Conversions between the wire types and the domain. Everything coming off the wire is
//! validated here, and every error names the field it is about, so a poison record can be
//! dead-lettered with a reason a person can act on.

use receipts_domain::{
    AccountSid, Amount, Channel, ChannelMessageId, ChatServiceSid, ConversationSid, DeliveryEvent,
    DeliveryEventKind, DeliveryStatus, DeliverySummary, IdError, MessageSid, ParticipantSid,
    Receipt, ReceiptChange, ReceiptSid, Registration, StatusCounts, StatusReport, StatusSource,
    Timestamp, UnknownStatus, map_provider_status,
};

use crate::v1;

/// Why a wire message could not become a domain value.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    #[error("`{0}` is missing")]
    Missing(&'static str),
    // Each message includes what was wrong, as an answer to a client shows it; so the inner
    // errors are not also sources, and a chain of causes names them once.
    #[error("`{field}` is invalid: {reason}")]
    InvalidId {
        field: &'static str,
        reason: IdError,
    },
    #[error("`{field}` has an unknown value {value}")]
    UnknownEnum { field: &'static str, value: i32 },
    #[error("`status`: {0}")]
    UnknownStatus(UnknownStatus),
}

impl From<UnknownStatus> for ConversionError {
    fn from(error: UnknownStatus) -> Self {
        ConversionError::UnknownStatus(error)
    }
}

fn id<T>(
    field: &'static str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, IdError>,
) -> Result<T, ConversionError> {
    if value.is_empty() {
        return Err(ConversionError::Missing(field));
    }
    parse(value).map_err(|reason| ConversionError::InvalidId { field, reason })
}

fn optional_id<T>(
    field: &'static str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, IdError>,
) -> Result<Option<T>, ConversionError> {
    if value.is_empty() {
        Ok(None)
    } else {
        id(field, value, parse).map(Some)
    }
}

fn error_code(code: u32) -> Option<u32> {
    (code != 0).then_some(code)
}

pub fn timestamp_to_wire(t: Timestamp) -> pbjson_types::Timestamp {
    let (seconds, nanos) = t.to_seconds_nanos();
    pbjson_types::Timestamp { seconds, nanos }
}

pub fn timestamp_from_wire(t: &pbjson_types::Timestamp) -> Timestamp {
    Timestamp::from_seconds_nanos(t.seconds, t.nanos)
}

pub(crate) fn required_time(
    field: &'static str,
    t: Option<&pbjson_types::Timestamp>,
) -> Result<Timestamp, ConversionError> {
    t.map(timestamp_from_wire)
        .ok_or(ConversionError::Missing(field))
}

pub fn channel_to_wire(channel: Channel) -> v1::Channel {
    match channel {
        Channel::Sms => v1::Channel::Sms,
        Channel::Whatsapp => v1::Channel::Whatsapp,
        Channel::Messenger => v1::Channel::Messenger,
        Channel::Rcs => v1::Channel::Rcs,
    }
}

pub fn channel_from_wire(field: &'static str, value: i32) -> Result<Channel, ConversionError> {
    match v1::Channel::try_from(value) {
        Ok(v1::Channel::Sms) => Ok(Channel::Sms),
        Ok(v1::Channel::Whatsapp) => Ok(Channel::Whatsapp),
        Ok(v1::Channel::Messenger) => Ok(Channel::Messenger),
        Ok(v1::Channel::Rcs) => Ok(Channel::Rcs),
        Ok(v1::Channel::Unspecified) => Err(ConversionError::Missing(field)),
        Err(_) => Err(ConversionError::UnknownEnum { field, value }),
    }
}

pub fn status_to_wire(status: DeliveryStatus) -> v1::DeliveryStatus {
    match status {
        DeliveryStatus::Queued => v1::DeliveryStatus::Queued,
        DeliveryStatus::Sent => v1::DeliveryStatus::Sent,
        DeliveryStatus::Delivered => v1::DeliveryStatus::Delivered,
        DeliveryStatus::Undelivered => v1::DeliveryStatus::Undelivered,
        DeliveryStatus::Failed => v1::DeliveryStatus::Failed,
        DeliveryStatus::Read => v1::DeliveryStatus::Read,
    }
}

/// `None` for `UNSPECIFIED`.
pub fn status_from_wire(
    field: &'static str,
    value: i32,
) -> Result<Option<DeliveryStatus>, ConversionError> {
    Ok(Some(match v1::DeliveryStatus::try_from(value) {
        Ok(v1::DeliveryStatus::Unspecified) => return Ok(None),
        Ok(v1::DeliveryStatus::Queued) => DeliveryStatus::Queued,
        Ok(v1::DeliveryStatus::Sent) => DeliveryStatus::Sent,
        Ok(v1::DeliveryStatus::Delivered) => DeliveryStatus::Delivered,
        Ok(v1::DeliveryStatus::Undelivered) => DeliveryStatus::Undelivered,
        Ok(v1::DeliveryStatus::Failed) => DeliveryStatus::Failed,
        Ok(v1::DeliveryStatus::Read) => DeliveryStatus::Read,
        Err(_) => return Err(ConversionError::UnknownEnum { field, value }),
    }))
}

pub fn source_to_wire(source: StatusSource) -> v1::StatusSource {
    match source {
        StatusSource::TwilioMessaging => v1::StatusSource::TwilioMessaging,
        StatusSource::WhatsappCloud => v1::StatusSource::WhatsappCloud,
        StatusSource::Smpp => v1::StatusSource::Smpp,
        StatusSource::Canonical => v1::StatusSource::Canonical,
    }
}

/// An unspecified source means canonical status names.
pub fn source_from_wire(field: &'static str, value: i32) -> Result<StatusSource, ConversionError> {
    match v1::StatusSource::try_from(value) {
        Ok(v1::StatusSource::TwilioMessaging) => Ok(StatusSource::TwilioMessaging),
        Ok(v1::StatusSource::WhatsappCloud) => Ok(StatusSource::WhatsappCloud),
        Ok(v1::StatusSource::Smpp) => Ok(StatusSource::Smpp),
        Ok(v1::StatusSource::Canonical | v1::StatusSource::Unspecified) => {
            Ok(StatusSource::Canonical)
        }
        Err(_) => Err(ConversionError::UnknownEnum { field, value }),
    }
}

pub fn amount_to_wire(amount: Amount) -> v1::DeliveryAmount {
    match amount {
        Amount::None => v1::DeliveryAmount::None,
        Amount::Some => v1::DeliveryAmount::Some,
        Amount::All => v1::DeliveryAmount::All,
    }
}

impl From<&Registration> for v1::ReceiptRegistered {
    fn from(r: &Registration) -> Self {
        v1::ReceiptRegistered {
            account_sid: r.account.to_string(),
            chat_service_sid: r
                .chat_service
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            conversation_sid: r.conversation.to_string(),
            message_sid: r.message.to_string(),
            message_index: r.message_index,
            participant_sid: r.participant.to_string(),
            channel: channel_to_wire(r.channel).into(),
            channel_message_id: r.channel_message_id.to_string(),
            expected_receipts: r.expected_receipts,
        }
    }
}

/// A registration from the wire; its time is the envelope's `occurred_at`.
pub fn registration_from_wire(
    r: &v1::ReceiptRegistered,
    registered_at: Timestamp,
) -> Result<Registration, ConversionError> {
    Ok(Registration {
        account: id("account_sid", &r.account_sid, AccountSid::parse)?,
        chat_service: optional_id(
            "chat_service_sid",
            &r.chat_service_sid,
            ChatServiceSid::parse,
        )?,
        conversation: id(
            "conversation_sid",
            &r.conversation_sid,
            ConversationSid::parse,
        )?,
        message: id("message_sid", &r.message_sid, MessageSid::parse)?,
        message_index: r.message_index,
        participant: id("participant_sid", &r.participant_sid, ParticipantSid::parse)?,
        channel: channel_from_wire("channel", r.channel)?,
        channel_message_id: id(
            "channel_message_id",
            &r.channel_message_id,
            ChannelMessageId::parse,
        )?,
        expected_receipts: r.expected_receipts,
        registered_at,
    })
}

impl From<&StatusReport> for v1::StatusReported {
    fn from(r: &StatusReport) -> Self {
        v1::StatusReported {
            account_sid: r.account.to_string(),
            channel_message_id: r.channel_message_id.to_string(),
            raw_status: r.raw_status.clone(),
            status: status_to_wire(r.status).into(),
            error_code: r.error_code.unwrap_or(0),
            provider_timestamp: Some(timestamp_to_wire(r.provider_time)),
            source: source_to_wire(r.source).into(),
        }
    }
}

impl TryFrom<&v1::StatusReported> for StatusReport {
    type Error = ConversionError;

    /// When `status` is unspecified it is mapped from `raw_status` with the source's table, so a
    /// hand-written JSON record may give only the provider's word.
    fn try_from(r: &v1::StatusReported) -> Result<Self, Self::Error> {
        let source = source_from_wire("source", r.source)?;
        let status = match status_from_wire("status", r.status)? {
            Some(status) => status,
            None if r.raw_status.is_empty() => return Err(ConversionError::Missing("status")),
            None => map_provider_status(source, &r.raw_status)?,
        };
        let raw_status = if r.raw_status.is_empty() {
            status.as_str().to_owned()
        } else {
            r.raw_status.clone()
        };
        Ok(StatusReport {
            account: id("account_sid", &r.account_sid, AccountSid::parse)?,
            channel_message_id: id(
                "channel_message_id",
                &r.channel_message_id,
                ChannelMessageId::parse,
            )?,
            status,
            raw_status,
            error_code: error_code(r.error_code),
            provider_time: required_time("provider_timestamp", r.provider_timestamp.as_ref())?,
            source,
        })
    }
}

impl From<&DeliveryEvent> for v1::Envelope {
    /// The envelope of an event. `occurred_at` is the registration time for registrations and
    /// the provider time for reports.
    fn from(e: &DeliveryEvent) -> Self {
        let (occurred_at, event) = match &e.kind {
            DeliveryEventKind::Registered(r) => (
                r.registered_at,
                v1::envelope::Event::ReceiptRegistered(r.into()),
            ),
            DeliveryEventKind::Reported(r) => (
                r.provider_time,
                v1::envelope::Event::StatusReported(r.into()),
            ),
        };
        v1::Envelope {
            event_id: e.event_id.clone(),
            occurred_at: Some(timestamp_to_wire(occurred_at)),
            event: Some(event),
        }
    }
}

impl TryFrom<&v1::Envelope> for DeliveryEvent {
    type Error = ConversionError;

    fn try_from(e: &v1::Envelope) -> Result<Self, Self::Error> {
        if e.event_id.is_empty() {
            return Err(ConversionError::Missing("event_id"));
        }
        let kind = match e.event.as_ref().ok_or(ConversionError::Missing("event"))? {
            v1::envelope::Event::ReceiptRegistered(r) => {
                let at = required_time("occurred_at", e.occurred_at.as_ref())?;
                DeliveryEventKind::Registered(registration_from_wire(r, at)?)
            }
            v1::envelope::Event::StatusReported(r) => DeliveryEventKind::Reported(r.try_into()?),
        };
        Ok(DeliveryEvent {
            event_id: e.event_id.clone(),
            kind,
        })
    }
}

impl From<&Receipt> for v1::Receipt {
    fn from(r: &Receipt) -> Self {
        let reg = &r.registration;
        let report = r.report.as_ref();
        v1::Receipt {
            sid: r.sid.to_string(),
            account_sid: reg.account.to_string(),
            chat_service_sid: reg
                .chat_service
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            conversation_sid: reg.conversation.to_string(),
            message_sid: reg.message.to_string(),
            message_index: reg.message_index,
            participant_sid: reg.participant.to_string(),
            channel: channel_to_wire(reg.channel).into(),
            channel_message_id: reg.channel_message_id.to_string(),
            channel_message_sid: reg
                .channel_message_id
                .channel_message_sid(reg.channel == Channel::Whatsapp)
                .to_string(),
            expected_receipts: reg.expected_receipts,
            status: status_to_wire(r.status()).into(),
            raw_status: report.map(|p| p.raw_status.clone()).unwrap_or_default(),
            error_code: r.error_code().unwrap_or(0),
            source: report
                .map_or(v1::StatusSource::Unspecified, |p| source_to_wire(p.source))
                .into(),
            provider_timestamp: report.map(|p| timestamp_to_wire(p.provider_time)),
            date_created: Some(timestamp_to_wire(r.date_created())),
            date_updated: Some(timestamp_to_wire(r.date_updated())),
            version: r.version,
        }
    }
}

impl TryFrom<&v1::Receipt> for Receipt {
    type Error = ConversionError;

    fn try_from(r: &v1::Receipt) -> Result<Self, Self::Error> {
        // A receipt repeats its registration's fields, so it is validated the same way.
        let registered = v1::ReceiptRegistered {
            account_sid: r.account_sid.clone(),
            chat_service_sid: r.chat_service_sid.clone(),
            conversation_sid: r.conversation_sid.clone(),
            message_sid: r.message_sid.clone(),
            message_index: r.message_index,
            participant_sid: r.participant_sid.clone(),
            channel: r.channel,
            channel_message_id: r.channel_message_id.clone(),
            expected_receipts: r.expected_receipts,
        };
        let registration = registration_from_wire(
            &registered,
            required_time("date_created", r.date_created.as_ref())?,
        )?;
        // A receipt carries a report exactly when a provider time is present.
        let report = match r.provider_timestamp.as_ref() {
            None => None,
            Some(t) => Some(StatusReport {
                account: registration.account.clone(),
                channel_message_id: registration.channel_message_id.clone(),
                status: status_from_wire("status", r.status)?
                    .ok_or(ConversionError::Missing("status"))?,
                raw_status: r.raw_status.clone(),
                error_code: error_code(r.error_code),
                provider_time: timestamp_from_wire(t),
                source: source_from_wire("source", r.source)?,
            }),
        };
        Ok(Receipt {
            sid: id("sid", &r.sid, ReceiptSid::parse)?,
            registration,
            report,
            version: r.version,
        })
    }
}

impl From<&ReceiptChange> for v1::ReceiptUpdated {
    fn from(c: &ReceiptChange) -> Self {
        v1::ReceiptUpdated {
            receipt: Some((&c.receipt).into()),
            previous_status: c
                .previous_status
                .map_or(v1::DeliveryStatus::Unspecified, status_to_wire)
                .into(),
            previous_error_code: c.previous_error_code.unwrap_or(0),
        }
    }
}

impl TryFrom<&v1::ReceiptUpdated> for ReceiptChange {
    type Error = ConversionError;

    fn try_from(u: &v1::ReceiptUpdated) -> Result<Self, Self::Error> {
        Ok(ReceiptChange {
            receipt: u
                .receipt
                .as_ref()
                .ok_or(ConversionError::Missing("receipt"))?
                .try_into()?,
            previous_status: status_from_wire("previous_status", u.previous_status)?,
            previous_error_code: Some(u.previous_error_code).filter(|code| *code != 0),
        })
    }
}

impl From<&StatusCounts> for v1::StatusCounts {
    fn from(c: &StatusCounts) -> Self {
        v1::StatusCounts {
            queued: c.queued,
            sent: c.sent,
            delivered: c.delivered,
            undelivered: c.undelivered,
            failed: c.failed,
            read: c.read,
        }
    }
}

impl From<&v1::StatusCounts> for StatusCounts {
    fn from(c: &v1::StatusCounts) -> Self {
        StatusCounts {
            queued: c.queued,
            sent: c.sent,
            delivered: c.delivered,
            undelivered: c.undelivered,
            failed: c.failed,
            read: c.read,
        }
    }
}

impl From<&DeliverySummary> for v1::DeliverySummary {
    fn from(s: &DeliverySummary) -> Self {
        v1::DeliverySummary {
            total: s.total,
            sent: amount_to_wire(s.sent_amount()).into(),
            delivered: amount_to_wire(s.delivered_amount()).into(),
            read: amount_to_wire(s.read_amount()).into(),
            failed: amount_to_wire(s.failed_amount()).into(),
            undelivered: amount_to_wire(s.undelivered_amount()).into(),
            sent_count: s.sent,
            delivered_count: s.delivered,
            read_count: s.read,
            failed_count: s.failed,
            undelivered_count: s.undelivered,
        }
    }
}
