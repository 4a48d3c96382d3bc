//! The key scheme of the module docs (storage format 2). Every tenant key starts with its kind
//! and then its account sid; sids are in the compact, self-delimiting form of `compact`.

use receipts_domain::{AccountSid, ConversationSid, MessageSid, ReceiptSid};

use crate::CorruptValue;
use crate::compact::{Sid, put_sid, take_sid};

const RECEIPT: u8 = 0x01;
const TIMELINE: u8 = 0x02;
const MESSAGE: u8 = 0x03;
const MESSAGE_NAME: u8 = 0x04;
const ROLLUP: u8 = 0x05;

fn start(kind: u8, account: &AccountSid, conversation: &ConversationSid) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 4 * 17 + 8);
    key.push(kind);
    put_sid(&mut key, account);
    put_sid(&mut key, conversation);
    key
}

fn then<S: Sid>(mut key: Vec<u8>, sid: &S) -> Vec<u8> {
    put_sid(&mut key, sid);
    key
}

/// Every key under `prefix` sorts before the returned key.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if let Some(next) = last.checked_add(1) {
            end.push(next);
            break;
        }
    }
    end
}

pub(super) fn receipts_of(
    account: &AccountSid,
    conversation: &ConversationSid,
    message: &MessageSid,
) -> Vec<u8> {
    then(start(RECEIPT, account, conversation), message)
}

pub(super) fn receipt(
    account: &AccountSid,
    conversation: &ConversationSid,
    message: &MessageSid,
    receipt: &ReceiptSid,
) -> Vec<u8> {
    then(receipts_of(account, conversation, message), receipt)
}

/// The sids of a receipt key, or of a timeline key (the same sids under another kind).
pub(super) fn receipt_sids(
    key: &[u8],
) -> Result<(AccountSid, ConversationSid, MessageSid, ReceiptSid), CorruptValue> {
    let mut rest = match key.split_first() {
        Some((&(RECEIPT | TIMELINE), rest)) => rest,
        _ => return Err("not a receipt or timeline key".into()),
    };
    let sids = (
        take_sid(&mut rest)?,
        take_sid(&mut rest)?,
        take_sid(&mut rest)?,
        take_sid(&mut rest)?,
    );
    if !rest.is_empty() {
        return Err("trailing bytes after a receipt key".into());
    }
    Ok(sids)
}

pub(super) fn timeline(
    account: &AccountSid,
    conversation: &ConversationSid,
    message: &MessageSid,
    receipt: &ReceiptSid,
) -> Vec<u8> {
    then(
        then(start(TIMELINE, account, conversation), message),
        receipt,
    )
}

pub(super) fn messages_of(account: &AccountSid, conversation: &ConversationSid) -> Vec<u8> {
    start(MESSAGE, account, conversation)
}

pub(super) fn message(
    account: &AccountSid,
    conversation: &ConversationSid,
    index: u64,
    message: &MessageSid,
) -> Vec<u8> {
    let mut key = messages_of(account, conversation);
    key.extend_from_slice(&index.to_be_bytes());
    put_sid(&mut key, message);
    key
}

/// The index and sid of the message a message key is of.
pub(super) fn message_parts(key: &[u8]) -> Result<(u64, MessageSid), CorruptValue> {
    let mut rest = match key.split_first() {
        Some((&MESSAGE, rest)) => rest,
        _ => return Err("not a message key".into()),
    };
    let _: AccountSid = take_sid(&mut rest)?;
    let _: ConversationSid = take_sid(&mut rest)?;
    let (index, mut rest) = rest
        .split_first_chunk::<8>()
        .ok_or("a message key without its index")?;
    let message = take_sid(&mut rest)?;
    if !rest.is_empty() {
        return Err("trailing bytes after a message key".into());
    }
    Ok((u64::from_be_bytes(*index), message))
}

pub(super) fn message_name(
    account: &AccountSid,
    conversation: &ConversationSid,
    message: &MessageSid,
) -> Vec<u8> {
    then(start(MESSAGE_NAME, account, conversation), message)
}

pub(super) fn rollup(account: &AccountSid, conversation: &ConversationSid) -> Vec<u8> {
    start(ROLLUP, account, conversation)
}
