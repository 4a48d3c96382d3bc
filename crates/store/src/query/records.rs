//! The read model's records as stored: a message's and a conversation's counters without the
//! sids their keys carry, and timeline entries.

use receipts_domain::{
    AccountSid, ChatServiceSid, ConversationSid, DeliverySummary, MessageSid, Receipt,
    StatusCounts, Timestamp,
};
use receipts_proto::convert::{
    source_from_wire, source_to_wire, status_from_wire, status_to_wire, timestamp_from_wire,
    timestamp_to_wire,
};
use receipts_proto::v1;

use super::{MessageView, Rollup, TimelineEntry, corrupt};
use crate::StoreError;

/// A message as stored, without the account and conversation its key carries.
#[derive(Debug, Clone)]
pub(super) struct MessageRecord {
    pub(super) message: MessageSid,
    pub(super) chat_service: Option<ChatServiceSid>,
    pub(super) index: u64,
    pub(super) expected_receipts: u64,
    pub(super) counts: StatusCounts,
    pub(super) date_created: Timestamp,
    pub(super) date_updated: Timestamp,
}

impl MessageRecord {
    /// A message with no receipts yet, described by the first receipt that names it.
    pub(super) fn first_seen(receipt: &Receipt) -> Self {
        let registration = &receipt.registration;
        MessageRecord {
            message: registration.message.clone(),
            chat_service: registration.chat_service.clone(),
            index: registration.message_index,
            expected_receipts: 0,
            counts: StatusCounts::default(),
            date_created: receipt.date_created(),
            date_updated: receipt.date_updated(),
        }
    }

    pub(super) fn from_stored(
        key: &[u8],
        stored: &v1::StoredMessageDelivery,
    ) -> Result<Self, StoreError> {
        let chat_service = if stored.chat_service_sid.is_empty() {
            None
        } else {
            Some(ChatServiceSid::parse(&stored.chat_service_sid).map_err(|e| corrupt(key, e))?)
        };
        Ok(MessageRecord {
            message: MessageSid::parse(&stored.message_sid).map_err(|e| corrupt(key, e))?,
            chat_service,
            index: stored.message_index,
            expected_receipts: stored.expected_receipts,
            counts: stored.counts.as_ref().map(Into::into).unwrap_or_default(),
            date_created: stored
                .date_created
                .as_ref()
                .map_or(Timestamp::EPOCH, timestamp_from_wire),
            date_updated: stored
                .date_updated
                .as_ref()
                .map_or(Timestamp::EPOCH, timestamp_from_wire),
        })
    }

    pub(super) fn to_stored(&self) -> v1::StoredMessageDelivery {
        v1::StoredMessageDelivery {
            message_sid: self.message.to_string(),
            chat_service_sid: self
                .chat_service
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            message_index: self.index,
            expected_receipts: self.expected_receipts,
            counts: Some((&self.counts).into()),
            date_created: Some(timestamp_to_wire(self.date_created)),
            date_updated: Some(timestamp_to_wire(self.date_updated)),
        }
    }

    pub(super) fn view(self, account: &AccountSid, conversation: &ConversationSid) -> MessageView {
        MessageView {
            account: account.clone(),
            chat_service: self.chat_service,
            conversation: conversation.clone(),
            message: self.message,
            index: self.index,
            expected_receipts: self.expected_receipts,
            counts: self.counts,
            summary: DeliverySummary::new(self.expected_receipts, &self.counts),
            date_created: self.date_created,
            date_updated: self.date_updated,
        }
    }
}

/// A conversation's counters as stored.
#[derive(Debug, Clone, Default)]
pub(super) struct RollupRecord {
    pub(super) messages: u64,
    pub(super) counts: StatusCounts,
    pub(super) messages_with_failures: u64,
    pub(super) last_updated: Timestamp,
}

impl RollupRecord {
    pub(super) fn from_stored(stored: &v1::StoredConversationRollup) -> Self {
        RollupRecord {
            messages: stored.messages,
            counts: stored.counts.as_ref().map(Into::into).unwrap_or_default(),
            messages_with_failures: stored.messages_with_failures,
            last_updated: stored
                .last_updated
                .as_ref()
                .map_or(Timestamp::EPOCH, timestamp_from_wire),
        }
    }

    pub(super) fn to_stored(&self) -> v1::StoredConversationRollup {
        v1::StoredConversationRollup {
            messages: self.messages,
            counts: Some((&self.counts).into()),
            messages_with_failures: self.messages_with_failures,
            last_updated: Some(timestamp_to_wire(self.last_updated)),
        }
    }

    pub(super) fn view(self, account: &AccountSid, conversation: &ConversationSid) -> Rollup {
        Rollup {
            account: account.clone(),
            conversation: conversation.clone(),
            messages: self.messages,
            receipts: self.counts.receipts(),
            counts: self.counts,
            messages_with_failures: self.messages_with_failures,
            last_updated: self.last_updated,
        }
    }
}

pub(super) fn timeline_to_stored(entry: &TimelineEntry) -> v1::TimelineEntry {
    v1::TimelineEntry {
        status: status_to_wire(entry.status).into(),
        raw_status: entry.raw_status.clone(),
        error_code: entry.error_code.unwrap_or(0),
        source: entry
            .source
            .map_or(v1::StatusSource::Unspecified, source_to_wire)
            .into(),
        provider_timestamp: entry.provider_time.map(timestamp_to_wire),
        version: entry.version,
    }
}

pub(super) fn timeline_from_stored(
    key: &[u8],
    stored: &v1::TimelineEntry,
) -> Result<TimelineEntry, StoreError> {
    let status = status_from_wire("status", stored.status)
        .map_err(|e| corrupt(key, e))?
        .ok_or_else(|| corrupt(key, "timeline entry has no status"))?;
    // Entries of versions without a report have neither a source nor a provider time.
    let source = if stored.source == i32::from(v1::StatusSource::Unspecified) {
        None
    } else {
        Some(source_from_wire("source", stored.source).map_err(|e| corrupt(key, e))?)
    };
    Ok(TimelineEntry {
        status,
        raw_status: stored.raw_status.clone(),
        error_code: (stored.error_code != 0).then_some(stored.error_code),
        source,
        provider_time: stored.provider_timestamp.as_ref().map(timestamp_from_wire),
        version: stored.version,
    })
}
