//! The read model as releases up to 0.1 wrote it (storage format 1), and what each of its
//! records becomes in format 2: text keys `{kind}/{sid}/…`, receipts and timelines in their wire
//! forms, and `t/…/{version}` entries nobody reads.

use prost::Message;
use receipts_domain::{
    AccountSid, ChatServiceSid, ConversationSid, DeliverySummary, MessageSid, Receipt, ReceiptSid,
    StatusCounts, Timestamp,
};
use receipts_proto::convert::timestamp_from_wire;
use receipts_proto::v1;

use super::{MessageView, decode, keys, records};
use crate::format::Moved;
use crate::{CorruptValue, StoreError};

/// What a format 1 record of the read model becomes: the same record under its compact key,
/// receipts and timelines in their compact forms, and nothing of the `t/` entries.
pub(super) fn moved(key: &[u8], value: &[u8]) -> Result<Moved, StoreError> {
    let bad = |e: crate::CorruptValue| StoreError::corrupt(key, e);
    let moved = match key.first() {
        Some(b'r') => {
            let (account, conversation, message, sid) = receipt_sids(key).map_err(bad)?;
            let wire: v1::Receipt = decode(key, value)?;
            let receipt = Receipt::try_from(&wire).map_err(|e| StoreError::corrupt(key, e))?;
            (
                keys::receipt(&account, &conversation, &message, &sid),
                records::StoredReceipt::from(&receipt).encode_to_vec(),
            )
        }
        Some(b'h') => {
            let (account, conversation, message, sid) = receipt_sids(key).map_err(bad)?;
            let wire: v1::StoredReceiptTimeline = decode(key, value)?;
            let timeline = receipts_proto::aggregates::timeline_from_stored(sid.clone(), &wire)
                .map_err(|e| StoreError::corrupt(key, e))?;
            (
                keys::timeline(&account, &conversation, &message, &sid),
                records::StoredTimeline::new(&timeline).encode_to_vec(),
            )
        }
        Some(b'm') => {
            let (account, conversation, index, message) = message_parts(key).map_err(bad)?;
            let wire: v1::StoredMessageDelivery = decode(key, value)?;
            let view = message_view(key, &account, &conversation, &wire)?;
            if (view.index, &view.message) != (index, &message) {
                return Err(StoreError::corrupt(
                    key,
                    "a message record of another message",
                ));
            }
            (
                keys::message(&account, &conversation, index, &message),
                records::StoredMessage::from(&view).encode_to_vec(),
            )
        }
        Some(b'n') => {
            let (account, conversation, message) = message_name_sids(key).map_err(bad)?;
            (
                keys::message_name(&account, &conversation, &message),
                value.to_vec(),
            )
        }
        Some(b'c') => {
            let (account, conversation) = rollup_sids(key).map_err(bad)?;
            (keys::rollup(&account, &conversation), value.to_vec())
        }
        Some(b't') => return Ok(None),
        _ => {
            return Err(StoreError::corrupt(
                key,
                "not a key of the read model's format 1",
            ));
        }
    };
    Ok(Some(moved))
}

/// A message of `account`'s `conversation` as format 1 stored it under `key`.
fn message_view(
    key: &[u8],
    account: &AccountSid,
    conversation: &ConversationSid,
    stored: &v1::StoredMessageDelivery,
) -> Result<MessageView, StoreError> {
    let chat_service = if stored.chat_service_sid.is_empty() {
        None
    } else {
        Some(
            ChatServiceSid::parse(&stored.chat_service_sid)
                .map_err(|e| StoreError::corrupt(key, e))?,
        )
    };
    let counts: StatusCounts = stored.counts.as_ref().map(Into::into).unwrap_or_default();
    Ok(MessageView {
        account: account.clone(),
        chat_service,
        conversation: conversation.clone(),
        message: MessageSid::parse(&stored.message_sid).map_err(|e| StoreError::corrupt(key, e))?,
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

/// A sid's text is 34 characters: two letters and 32 hex digits.
const SID: usize = 34;

fn sids(text: &str, count: usize) -> Result<Vec<&str>, CorruptValue> {
    let parts: Vec<&str> = text.split('/').collect();
    if parts.len() != count || parts.iter().any(|part| part.len() != SID) {
        return Err(format!("expected {count} sids").into());
    }
    Ok(parts)
}

/// The sids of an `r/` or `h/` key.
fn receipt_sids(
    key: &[u8],
) -> Result<(AccountSid, ConversationSid, MessageSid, ReceiptSid), CorruptValue> {
    let text = std::str::from_utf8(key.get(2..).ok_or("too short")?)?;
    let parts = sids(text, 4)?;
    Ok((
        AccountSid::parse(parts[0])?,
        ConversationSid::parse(parts[1])?,
        MessageSid::parse(parts[2])?,
        ReceiptSid::parse(parts[3])?,
    ))
}

/// The sids of a `n/{account}/{conversation}/{message}` key.
fn message_name_sids(
    key: &[u8],
) -> Result<(AccountSid, ConversationSid, MessageSid), CorruptValue> {
    let text = std::str::from_utf8(key.get(2..).ok_or("too short")?)?;
    let parts = sids(text, 3)?;
    Ok((
        AccountSid::parse(parts[0])?,
        ConversationSid::parse(parts[1])?,
        MessageSid::parse(parts[2])?,
    ))
}

/// The sids of a `c/{account}/{conversation}` key.
fn rollup_sids(key: &[u8]) -> Result<(AccountSid, ConversationSid), CorruptValue> {
    let text = std::str::from_utf8(key.get(2..).ok_or("too short")?)?;
    let parts = sids(text, 2)?;
    Ok((
        AccountSid::parse(parts[0])?,
        ConversationSid::parse(parts[1])?,
    ))
}

/// The parts of a `m/{account}/{conversation}/{index, 8 bytes}/{message}` key. The index is
/// binary and may hold a `/`, so the key is read by position.
fn message_parts(
    key: &[u8],
) -> Result<(AccountSid, ConversationSid, u64, MessageSid), CorruptValue> {
    let text = |range: std::ops::Range<usize>| -> Result<&str, CorruptValue> {
        Ok(std::str::from_utf8(key.get(range).ok_or("too short")?)?)
    };
    if key.len() != 2 + SID + 1 + SID + 1 + 8 + 1 + SID {
        return Err("not a message key".into());
    }
    let index_at = 2 + SID + 1 + SID + 1;
    let index: [u8; 8] = key[index_at..index_at + 8].try_into()?;
    Ok((
        AccountSid::parse(text(2..2 + SID)?)?,
        ConversationSid::parse(text(2 + SID + 1..2 + 2 * SID + 1)?)?,
        u64::from_be_bytes(index),
        MessageSid::parse(text(index_at + 9..key.len())?)?,
    ))
}
