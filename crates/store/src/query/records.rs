//! The read model's records as stored, each without the sids its key carries: a receipt and a
//! timeline in the compact forms of `compact`, a message's and a conversation's counters.

use receipts_domain::{
    AccountSid, ConversationSid, DeliverySummary, History, MessageSid, Receipt, ReceiptSid,
    ReceiptTimeline, StatusCounts, Timestamp,
};

use crate::CorruptValue;
use crate::compact::{self, Keyed, KeyedBy, StoredRegistration, StoredReport};
use receipts_proto::convert::{timestamp_from_wire, timestamp_to_wire};
use receipts_proto::v1;

use super::{MessageView, Rollup, decode, keys};
use crate::StoreError;

/// A message without its account, conversation, index and sid (its key).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct StoredMessage {
    /// Empty when the conversation belongs to the account's default service.
    #[prost(bytes = "vec", tag = "1")]
    pub chat_service: Vec<u8>,
    /// The greatest `expected_receipts` of the message's receipts.
    #[prost(uint64, tag = "2")]
    pub expected_receipts: u64,
    #[prost(message, optional, tag = "3")]
    pub counts: Option<v1::StatusCounts>,
    /// The earliest creation and the latest update time of its receipts' versions seen, unix
    /// milliseconds.
    #[prost(int64, tag = "4")]
    pub date_created: i64,
    #[prost(int64, tag = "5")]
    pub date_updated: i64,
}

impl From<&MessageView> for StoredMessage {
    fn from(message: &MessageView) -> Self {
        StoredMessage {
            chat_service: message
                .chat_service
                .as_ref()
                .map(compact::sid_bytes)
                .unwrap_or_default(),
            expected_receipts: message.expected_receipts,
            counts: Some((&message.counts).into()),
            date_created: message.date_created.unix_millis(),
            date_updated: message.date_updated.unix_millis(),
        }
    }
}

impl StoredMessage {
    /// Message `message` with index `index` of `account`'s `conversation`.
    pub(super) fn message(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        index: u64,
        message: MessageSid,
    ) -> Result<MessageView, CorruptValue> {
        let chat_service = if self.chat_service.is_empty() {
            None
        } else {
            Some(compact::sid_from_bytes(&self.chat_service)?)
        };
        let counts: StatusCounts = self.counts.as_ref().map(Into::into).unwrap_or_default();
        Ok(MessageView {
            account: account.clone(),
            chat_service,
            conversation: conversation.clone(),
            message,
            index,
            expected_receipts: self.expected_receipts,
            counts,
            summary: DeliverySummary::new(self.expected_receipts, &counts),
            date_created: Timestamp::from_unix_millis(self.date_created),
            date_updated: Timestamp::from_unix_millis(self.date_updated),
        })
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

/// A receipt without its account, conversation, message and receipt sids (its key), and with
/// its report's account and channel message id left to the registration's.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct StoredReceipt {
    #[prost(message, optional, tag = "1")]
    pub registration: Option<StoredRegistration>,
    #[prost(message, optional, tag = "2")]
    pub report: Option<StoredReport>,
    #[prost(uint64, tag = "3")]
    pub version: u64,
}

impl From<&Receipt> for StoredReceipt {
    fn from(receipt: &Receipt) -> Self {
        StoredReceipt {
            registration: Some(StoredRegistration::new(
                &receipt.registration,
                KeyedBy::Message,
            )),
            report: receipt.report.as_ref().map(Into::into),
            version: receipt.version,
        }
    }
}

impl StoredReceipt {
    /// The receipt `sid` of `account`'s `message` in `conversation`.
    pub(super) fn receipt(
        &self,
        (account, conversation, message, sid): (
            AccountSid,
            ConversationSid,
            MessageSid,
            ReceiptSid,
        ),
    ) -> Result<Receipt, CorruptValue> {
        let registration = self
            .registration
            .as_ref()
            .ok_or("a stored receipt has no registration")?
            .registration(&account, Keyed::Message(&conversation, &message))?;
        let report = self
            .report
            .as_ref()
            .map(|report| report.report(&account, &registration.channel_message_id))
            .transpose()?;
        Ok(Receipt {
            sid,
            registration,
            report,
            version: self.version,
        })
    }
}

/// A receipt's timeline: its reports without account and channel message id, which are given
/// once (the account by the key).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct StoredTimeline {
    #[prost(bytes = "vec", tag = "1")]
    pub channel_message_id: Vec<u8>,
    /// Unix milliseconds.
    #[prost(int64, tag = "2")]
    pub registered_at: i64,
    #[prost(message, repeated, tag = "3")]
    pub history: Vec<StoredReport>,
}

impl StoredTimeline {
    /// `timeline` as stored. Its reports all carry the receipt's channel message id, which is
    /// written once, and not at all while there are none.
    pub(super) fn new(timeline: &ReceiptTimeline) -> Self {
        StoredTimeline {
            channel_message_id: timeline
                .history()
                .iter()
                .next()
                .map(|report| compact::channel_message_id_bytes(&report.channel_message_id))
                .unwrap_or_default(),
            registered_at: timeline.registered_at().unix_millis(),
            history: timeline.history().iter().map(Into::into).collect(),
        }
    }

    pub(super) fn timeline(
        &self,
        account: &AccountSid,
        sid: ReceiptSid,
    ) -> Result<ReceiptTimeline, CorruptValue> {
        let history = if self.history.is_empty() {
            Vec::new()
        } else {
            let id = compact::channel_message_id_from(&self.channel_message_id)?;
            self.history
                .iter()
                .map(|report| report.report(account, &id))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(ReceiptTimeline::new(
            sid,
            Timestamp::from_unix_millis(self.registered_at),
            history.into_iter().collect::<History>(),
        ))
    }
}

/// The receipt stored as `value` under `key`, which holds its sids.
pub(super) fn receipt_from(key: &[u8], value: &[u8]) -> Result<Receipt, StoreError> {
    let sids = keys::receipt_sids(key).map_err(|e| StoreError::corrupt(key, e))?;
    let stored: StoredReceipt = decode(key, value)?;
    stored
        .receipt(sids)
        .map_err(|e| StoreError::corrupt(key, e))
}

/// The message of `account`'s `conversation` stored as `value` under `key`, which holds its index
/// and sid.
pub(super) fn message_from(
    key: &[u8],
    value: &[u8],
    account: &AccountSid,
    conversation: &ConversationSid,
) -> Result<MessageView, StoreError> {
    let (index, message) = keys::message_parts(key).map_err(|e| StoreError::corrupt(key, e))?;
    let stored: StoredMessage = decode(key, value)?;
    stored
        .message(account, conversation, index, message)
        .map_err(|e| StoreError::corrupt(key, e))
}
