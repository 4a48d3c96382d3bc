//! The read model's records as stored: a message's and a conversation's counters without the
//! sids their keys carry. Timelines are stored as `receipts_proto::aggregates` converts them.

use receipts_domain::{
    AccountSid, ChatServiceSid, ConversationSid, DeliverySummary, MessageSid, StatusCounts,
    Timestamp,
};
use receipts_proto::convert::{timestamp_from_wire, timestamp_to_wire};
use receipts_proto::v1;

use super::{MessageView, Rollup, corrupt};
use crate::StoreError;

/// A message of `account`'s `conversation` (both from its key) as stored under `key`.
pub(super) fn message_from_stored(
    key: &[u8],
    account: &AccountSid,
    conversation: &ConversationSid,
    stored: &v1::StoredMessageDelivery,
) -> Result<MessageView, StoreError> {
    let chat_service = if stored.chat_service_sid.is_empty() {
        None
    } else {
        Some(ChatServiceSid::parse(&stored.chat_service_sid).map_err(|e| corrupt(key, e))?)
    };
    let counts: StatusCounts = stored.counts.as_ref().map(Into::into).unwrap_or_default();
    Ok(MessageView {
        account: account.clone(),
        chat_service,
        conversation: conversation.clone(),
        message: MessageSid::parse(&stored.message_sid).map_err(|e| corrupt(key, e))?,
        index: stored.message_index,
        expected_receipts: stored.expected_receipts,
        counts,
        summary: DeliverySummary::new(stored.expected_receipts, &counts),
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

pub(super) fn message_to_stored(message: &MessageView) -> v1::StoredMessageDelivery {
    v1::StoredMessageDelivery {
        message_sid: message.message.to_string(),
        chat_service_sid: message
            .chat_service
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        message_index: message.index,
        expected_receipts: message.expected_receipts,
        counts: Some((&message.counts).into()),
        date_created: Some(timestamp_to_wire(message.date_created)),
        date_updated: Some(timestamp_to_wire(message.date_updated)),
    }
}

/// The rollup of `account`'s `conversation` (both from its key).
pub(super) fn rollup_from_stored(
    account: &AccountSid,
    conversation: &ConversationSid,
    stored: &v1::StoredConversationRollup,
) -> Rollup {
    let counts: StatusCounts = stored.counts.as_ref().map(Into::into).unwrap_or_default();
    Rollup {
        account: account.clone(),
        conversation: conversation.clone(),
        messages: stored.messages,
        receipts: counts.receipts(),
        counts,
        messages_with_failures: stored.messages_with_failures,
        last_updated: stored
            .last_updated
            .as_ref()
            .map_or(Timestamp::EPOCH, timestamp_from_wire),
    }
}

pub(super) fn rollup_to_stored(rollup: &Rollup) -> v1::StoredConversationRollup {
    v1::StoredConversationRollup {
        messages: rollup.messages,
        counts: Some((&rollup.counts).into()),
        messages_with_failures: rollup.messages_with_failures,
        last_updated: Some(timestamp_to_wire(rollup.last_updated)),
    }
}
