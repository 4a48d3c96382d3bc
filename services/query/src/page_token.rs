//! Opaque page tokens. A token carries the cursor of the next page and a MAC over the cursor and
//! the list it belongs to (account, conversation, message, order), so a token cannot be forged,
//! altered, or replayed against another list: any of these is `InvalidArgument`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use receipts_domain::{AccountSid, ConversationSid, MessageSid};
use receipts_store::SortOrder;
use sha2::Sha256;

const MAC_LEN: usize = 12;

#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens([redacted])")
    }
}

/// A token that was not issued by this service for this list.
#[derive(Debug, thiserror::Error)]
#[error("page_token is not a token this list issued")]
pub struct InvalidToken;

/// The list of a message's receipts. gRPC and REST use the same scopes, so a token from either
/// pages the other.
pub fn receipts_scope(
    account: &AccountSid,
    conversation: &ConversationSid,
    message: &MessageSid,
) -> String {
    format!("receipts/{account}/{conversation}/{message}")
}

/// The list of a conversation's messages in one order.
pub fn messages_scope(
    account: &AccountSid,
    conversation: &ConversationSid,
    order: SortOrder,
) -> String {
    format!("messages/{account}/{conversation}/{order:?}")
}

impl PageTokens {
    /// Tokens signed with `key`. Instances that share a key accept each other's tokens.
    pub fn new(key: &[u8]) -> Self {
        // Any key length is fine for HMAC; fold it to a fixed size to keep the type simple.
        let mut folded = [0u8; 32];
        let mut mac =
            Hmac::<Sha256>::new_from_slice(b"receipts page tokens").expect("any key size");
        mac.update(key);
        folded.copy_from_slice(&mac.finalize().into_bytes());
        PageTokens { key: folded }
    }

    fn keyed(&self, scope: &str, cursor: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key size");
        mac.update(scope.as_bytes());
        mac.update(&[0]);
        mac.update(cursor.as_bytes());
        mac
    }

    fn mac(&self, scope: &str, cursor: &str) -> [u8; MAC_LEN] {
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&self.keyed(scope, cursor).finalize().into_bytes()[..MAC_LEN]);
        out
    }

    pub fn issue(&self, scope: &str, cursor: &str) -> String {
        let mut bytes = self.mac(scope, cursor).to_vec();
        bytes.extend_from_slice(cursor.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor in `token`, if this service issued it for `scope`.
    pub fn open(&self, scope: &str, token: &str) -> Result<String, InvalidToken> {
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| InvalidToken)?;
        if bytes.len() < MAC_LEN {
            return Err(InvalidToken);
        }
        let (mac, cursor) = bytes.split_at(MAC_LEN);
        let cursor = std::str::from_utf8(cursor).map_err(|_| InvalidToken)?;
        // The MAC crate's own check: constant time over the truncated tag.
        self.keyed(scope, cursor)
            .verify_truncated_left(mac)
            .map(|()| cursor.to_owned())
            .map_err(|_| InvalidToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_open_only_for_their_own_list_and_key() {
        let tokens = PageTokens::new(b"key");
        let token = tokens.issue("receipts/AC1/CH1/IM1", "DY42");
        assert_eq!(tokens.open("receipts/AC1/CH1/IM1", &token).unwrap(), "DY42");
        assert!(tokens.open("receipts/AC2/CH1/IM1", &token).is_err());
        assert!(
            PageTokens::new(b"other key")
                .open("receipts/AC1/CH1/IM1", &token)
                .is_err()
        );
        assert!(tokens.open("receipts/AC1/CH1/IM1", "garbage!").is_err());
        assert!(tokens.open("receipts/AC1/CH1/IM1", "").is_err());
        let mut forged = URL_SAFE_NO_PAD.decode(&token).unwrap();
        *forged.last_mut().unwrap() ^= 1;
        assert!(
            tokens
                .open("receipts/AC1/CH1/IM1", &URL_SAFE_NO_PAD.encode(forged))
                .is_err()
        );
    }
}
