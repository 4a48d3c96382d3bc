//! The views as the API's types.

use receipts_proto::convert::timestamp_to_wire;
use receipts_proto::v1;

use super::records::timeline_to_stored;
use super::{MessageView, Rollup, TimelineEntry};

impl From<&TimelineEntry> for v1::TimelineEntry {
    fn from(entry: &TimelineEntry) -> Self {
        timeline_to_stored(entry)
    }
}

impl From<&MessageView> for v1::MessageDelivery {
    fn from(view: &MessageView) -> Self {
        v1::MessageDelivery {
            account_sid: view.account.to_string(),
            chat_service_sid: view
                .chat_service
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            conversation_sid: view.conversation.to_string(),
            message_sid: view.message.to_string(),
            message_index: view.index,
            delivery: Some((&view.summary).into()),
            date_created: Some(timestamp_to_wire(view.date_created)),
            date_updated: Some(timestamp_to_wire(view.date_updated)),
        }
    }
}

impl From<&Rollup> for v1::ConversationRollup {
    fn from(rollup: &Rollup) -> Self {
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
