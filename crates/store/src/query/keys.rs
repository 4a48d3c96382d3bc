//! The key scheme of the module docs. Every tenant key starts with `{kind}/{account}/`.

use receipts_domain::{AccountSid, ConversationSid, MessageSid, ReceiptSid};

fn join(kind: &str, parts: &[&str]) -> Vec<u8> {
    let mut key = kind.as_bytes().to_vec();
    for part in parts {
        key.push(b'/');
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// Every key under `prefix` sorts before the returned key.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    // Our prefixes are ASCII and end in `/`, so the last byte can always grow.
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
    let mut key = join(
        "r",
        &[account.as_str(), conversation.as_str(), message.as_str()],
    );
    key.push(b'/');
    key
}

pub(super) fn receipt(
    account: &AccountSid,
    conversation: &ConversationSid,
    message: &MessageSid,
    receipt: &ReceiptSid,
) -> Vec<u8> {
    let mut key = receipts_of(account, conversation, message);
    key.extend_from_slice(receipt.as_str().as_bytes());
    key
}

pub(super) fn timeline(
    account: &AccountSid,
    conversation: &ConversationSid,
    message: &MessageSid,
    receipt: &ReceiptSid,
) -> Vec<u8> {
    join(
        "h",
        &[
            account.as_str(),
            conversation.as_str(),
            message.as_str(),
            receipt.as_str(),
        ],
    )
}

pub(super) fn messages_of(account: &AccountSid, conversation: &ConversationSid) -> Vec<u8> {
    let mut key = join("m", &[account.as_str(), conversation.as_str()]);
    key.push(b'/');
    key
}

pub(super) fn message(
    account: &AccountSid,
    conversation: &ConversationSid,
    index: u64,
    message: &MessageSid,
) -> Vec<u8> {
    let mut key = messages_of(account, conversation);
    key.extend_from_slice(&index.to_be_bytes());
    key.push(b'/');
    key.extend_from_slice(message.as_str().as_bytes());
    key
}

pub(super) fn message_name(
    account: &AccountSid,
    conversation: &ConversationSid,
    message: &MessageSid,
) -> Vec<u8> {
    join(
        "n",
        &[account.as_str(), conversation.as_str(), message.as_str()],
    )
}

pub(super) fn rollup(account: &AccountSid, conversation: &ConversationSid) -> Vec<u8> {
    join("c", &[account.as_str(), conversation.as_str()])
}
