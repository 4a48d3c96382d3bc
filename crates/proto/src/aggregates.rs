//! Conversions of aggregates: the projector's stored receipt state (with its history), and the
//! query read model's message deliveries, conversation rollups and receipt timelines, both as
//! stored and as the gRPC API shows them.

use receipts_domain::{
    ConversationRollup, History, MessageDelivery, ReceiptSid, ReceiptState, ReceiptTimeline,
    StatusReport, TimelineEntry,
};

use crate::convert::{
    registration_from_wire, required_time, source_to_wire, status_to_wire, timestamp_to_wire,
};
use crate::{ConversionError, v1};

impl From<&ReceiptState> for v1::StoredReceiptState {
    fn from(state: &ReceiptState) -> Self {
        v1::StoredReceiptState {
            registration: state.registration.as_ref().map(Into::into),
            registered_at: state
                .registration
                .as_ref()
                .map(|r| timestamp_to_wire(r.registered_at)),
            best: state.best.as_ref().map(Into::into),
            version: state.version,
            history: state.history.iter().map(Into::into).collect(),
        }
    }
}

/// A history off the wire. Records written before histories were kept have none; theirs is the
/// current report alone, which is all they still know.
fn history_from_wire(
    history: &[v1::StatusReported],
    best: Option<&StatusReport>,
) -> Result<History, ConversionError> {
    if history.is_empty() {
        return Ok(best.into_iter().collect());
    }
    let reports = history
        .iter()
        .map(StatusReport::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(reports.into_iter().collect())
}

impl TryFrom<&v1::StoredReceiptState> for ReceiptState {
    type Error = ConversionError;

    fn try_from(s: &v1::StoredReceiptState) -> Result<Self, Self::Error> {
        let registration = match &s.registration {
            None => None,
            Some(r) => Some(registration_from_wire(
                r,
                required_time("registered_at", s.registered_at.as_ref())?,
            )?),
        };
        let best: Option<StatusReport> = s.best.as_ref().map(TryInto::try_into).transpose()?;
        Ok(ReceiptState {
            history: history_from_wire(&s.history, best.as_ref())?,
            registration,
            best,
            version: s.version,
        })
    }
}

impl From<&ReceiptTimeline> for v1::StoredReceiptTimeline {
    fn from(timeline: &ReceiptTimeline) -> Self {
        v1::StoredReceiptTimeline {
            registered_at: Some(timestamp_to_wire(timeline.registered_at())),
            history: timeline.history().iter().map(Into::into).collect(),
        }
    }
}

/// The stored timeline of receipt `sid` (the sid is in the record's key).
pub fn timeline_from_stored(
    sid: ReceiptSid,
    stored: &v1::StoredReceiptTimeline,
) -> Result<ReceiptTimeline, ConversionError> {
    let registered_at = required_time("registered_at", stored.registered_at.as_ref())?;
    Ok(ReceiptTimeline::new(
        sid,
        registered_at,
        history_from_wire(&stored.history, None)?,
    ))
}

impl From<&TimelineEntry> for v1::TimelineEntry {
    fn from(entry: &TimelineEntry) -> Self {
        v1::TimelineEntry {
            status: status_to_wire(entry.status).into(),
            raw_status: entry.raw_status.clone(),
            error_code: entry.error_code.unwrap_or(0),
            source: entry
                .source
                .map_or(v1::StatusSource::Unspecified, source_to_wire)
                .into(),
            provider_timestamp: Some(timestamp_to_wire(entry.at)),
            // No order-independent meaning: see `TimelineEntry.version` in query.proto.
            version: 0,
        }
    }
}

impl From<&ReceiptTimeline> for v1::ReceiptTimeline {
    fn from(timeline: &ReceiptTimeline) -> Self {
        v1::ReceiptTimeline {
            receipt_sid: timeline.sid().to_string(),
            entries: timeline.entries().iter().map(Into::into).collect(),
        }
    }
}

impl From<&MessageDelivery> for v1::MessageDelivery {
    fn from(message: &MessageDelivery) -> Self {
        v1::MessageDelivery {
            account_sid: message.account.to_string(),
            chat_service_sid: message
                .chat_service
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            conversation_sid: message.conversation.to_string(),
            message_sid: message.message.to_string(),
            message_index: message.index,
            delivery: Some((&message.summary).into()),
            date_created: Some(timestamp_to_wire(message.date_created)),
            date_updated: Some(timestamp_to_wire(message.date_updated)),
        }
    }
}

impl From<&ConversationRollup> for v1::ConversationRollup {
    fn from(rollup: &ConversationRollup) -> Self {
        v1::ConversationRollup {
            account_sid: rollup.account.to_string(),
            conversation_sid: rollup.conversation.to_string(),
            messages: rollup.messages,
            receipts: rollup.receipts,
            counts: Some((&rollup.counts).into()),
            messages_with_failures: rollup.messages_with_failures,
            last_updated: Some(timestamp_to_wire(rollup.last_updated)),
        }
    }
}
