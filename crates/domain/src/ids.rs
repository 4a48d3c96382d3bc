//! Sids and channel message ids.
//!
//! A sid is two prefix letters and 32 hex digits, as in Twilio's APIs. Each kind of resource has
//! its own type so that a conversation sid can never be passed where a message sid is expected.
//! Sids are stored as given; comparisons are exact.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Why an id was refused. The message names the kind of id and the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be `{prefix}` followed by 32 hex digits, got {value:?}")]
    MalformedSid {
        kind: &'static str,
        prefix: &'static str,
        value: String,
    },
    #[error("channel message id must not be empty")]
    EmptyChannelMessageId,
    #[error("channel message id is longer than {max} bytes")]
    ChannelMessageIdTooLong { max: usize },
    #[error("channel message id contains a control character")]
    ChannelMessageIdControlChar,
    #[error("a receipt key is `{{account sid}}/{{channel message id}}`")]
    NotReceiptKey,
}

const SID_HEX_LEN: usize = 32;

fn is_sid_with_prefix(value: &str, prefix: &str) -> bool {
    value.len() == prefix.len() + SID_HEX_LEN
        && value.starts_with(prefix)
        && value[prefix.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// 32 lowercase hex digits derived from `parts`, separated unambiguously.
fn derived_hex(domain: &str, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(domain.as_bytes());
    for part in parts {
        // Length-prefixing keeps ("ab", "c") and ("a", "bc") apart.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..SID_HEX_LEN / 2])
}

macro_rules! sid_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// Validates `value` as a sid of this kind.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                if is_sid_with_prefix(value, $prefix) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(IdError::MalformedSid { kind: $kind, prefix: $prefix, value: value.to_owned() })
                }
            }

            /// A sid of this kind whose hex part is derived from `parts`: the same parts always
            /// give the same sid.
            pub fn derive(parts: &[&str]) -> Self {
                Self(format!("{}{}", $prefix, derived_hex($prefix, parts)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

sid_type!(
    /// An account (`AC…`): the tenant every other resource belongs to.
    AccountSid, "AC", "account sid"
);
sid_type!(
    /// A Conversations chat service (`IS…`).
    ChatServiceSid, "IS", "chat service sid"
);
sid_type!(
    /// A conversation (`CH…`).
    ConversationSid, "CH", "conversation sid"
);
sid_type!(
    /// A message within a conversation (`IM…`).
    MessageSid, "IM", "message sid"
);
sid_type!(
    /// A conversation participant (`MB…`).
    ParticipantSid, "MB", "participant sid"
);
sid_type!(
    /// A delivery receipt (`DY…`): one per (message, non-chat participant).
    ReceiptSid, "DY", "receipt sid"
);
sid_type!(
    /// A conversation-scoped webhook (`WH…`).
    WebhookSid, "WH", "webhook sid"
);

impl ReceiptSid {
    /// The receipt sid of a channel message sent from an account. A replay or a rebuild of the
    /// state yields the same sid, so derived events and the read model agree across restarts.
    pub fn for_channel_message(account: &AccountSid, channel_message: &ChannelMessageId) -> Self {
        Self::derive(&[account.as_str(), channel_message.as_str()])
    }
}

/// The id a channel returned when the message was handed to it, kept verbatim: a Twilio `SM…`
/// sid, a WhatsApp `wamid.…`, or an SMSC's message id scoped by its connection.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelMessageId(String);

impl ChannelMessageId {
    /// Longest id accepted; real ids are far shorter, this only bounds storage keys.
    pub const MAX_LEN: usize = 256;

    pub fn parse(value: &str) -> Result<Self, IdError> {
        if value.is_empty() {
            return Err(IdError::EmptyChannelMessageId);
        }
        if value.len() > Self::MAX_LEN {
            return Err(IdError::ChannelMessageIdTooLong { max: Self::MAX_LEN });
        }
        if value.chars().any(char::is_control) {
            return Err(IdError::ChannelMessageIdControlChar);
        }
        Ok(Self(value.to_owned()))
    }

    /// The id of a message submitted over SMPP. SMSC message ids are only unique per SMSC
    /// connection, so the connection name is part of the id.
    pub fn smpp(connection: &str, smsc_message_id: &str) -> Result<Self, IdError> {
        Self::parse(&format!("smpp:{connection}:{smsc_message_id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Twilio-shaped `channel_message_sid` shown by the REST facade: the id itself when it
    /// already is two letters and 32 hex digits, otherwise a sid derived from it with the
    /// channel's prefix (`WA` for WhatsApp, `SM` for everything else).
    pub fn channel_message_sid(&self, whatsapp: bool) -> ChannelMessageSid {
        let id = self.0.as_str();
        let already_sid = id.len() == 2 + SID_HEX_LEN
            && id.as_bytes()[..2].iter().all(u8::is_ascii_alphabetic)
            && id[2..].bytes().all(|b| b.is_ascii_hexdigit());
        if already_sid {
            ChannelMessageSid(id.to_owned())
        } else {
            let prefix = if whatsapp { "WA" } else { "SM" };
            ChannelMessageSid(format!("{prefix}{}", derived_hex("channel-message", &[id])))
        }
    }
}

impl FromStr for ChannelMessageId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ChannelMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelMessageId({:?})", self.0)
    }
}

/// What a receipt is keyed by: the account that sent the message and the id the channel gave it.
/// Channel message ids are only unique per account (another tenant may well see, or guess, the
/// same `SM…`, `wamid.…` or SMSC id), so every report and registration is scoped by the account
/// it was authenticated for and only ever meets receipts of that account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReceiptKey {
    pub account: AccountSid,
    pub channel_message_id: ChannelMessageId,
}

impl ReceiptKey {
    pub fn new(account: AccountSid, channel_message_id: ChannelMessageId) -> Self {
        ReceiptKey {
            account,
            channel_message_id,
        }
    }

    /// Reads the key back from its `Display` form.
    pub fn parse(encoded: &str) -> Result<Self, IdError> {
        let (account, id) = encoded.split_once('/').ok_or(IdError::NotReceiptKey)?;
        Ok(ReceiptKey {
            account: AccountSid::parse(account)?,
            channel_message_id: ChannelMessageId::parse(id)?,
        })
    }

    pub fn receipt_sid(&self) -> ReceiptSid {
        ReceiptSid::for_channel_message(&self.account, &self.channel_message_id)
    }
}

/// `{account sid}/{channel message id}`: the Kafka key of the events of one receipt, and the
/// key of its state. Account sids never hold a `/`, so the first one separates the two.
impl fmt::Display for ReceiptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.channel_message_id)
    }
}

/// A channel message id in Twilio's `^[a-zA-Z]{2}[0-9a-fA-F]{32}$` shape, see
/// [`ChannelMessageId::channel_message_sid`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelMessageSid(String);

impl ChannelMessageSid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelMessageSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "AC0123456789abcdef0123456789ABCDEF";

    #[test]
    fn sids_accept_their_prefix_and_32_hex_digits() {
        assert_eq!(AccountSid::parse(AC).unwrap().as_str(), AC);
        for bad in [
            "",
            "AC",
            "AC0123456789abcdef0123456789abcde",   // 31 hex
            "AC0123456789abcdef0123456789abcdef0", // 33 hex
            "ac0123456789abcdef0123456789abcdef",  // lowercase prefix
            "CH0123456789abcdef0123456789abcdef",  // other prefix
            "AC0123456789abcdef0123456789abcdeg",  // not hex
        ] {
            let err = AccountSid::parse(bad).unwrap_err();
            assert!(err.to_string().contains("account sid"), "{err}");
        }
    }

    #[test]
    fn each_kind_checks_its_own_prefix() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert!(ChatServiceSid::parse(&format!("IS{hex}")).is_ok());
        assert!(ConversationSid::parse(&format!("CH{hex}")).is_ok());
        assert!(MessageSid::parse(&format!("IM{hex}")).is_ok());
        assert!(ParticipantSid::parse(&format!("MB{hex}")).is_ok());
        assert!(ReceiptSid::parse(&format!("DY{hex}")).is_ok());
        assert!(WebhookSid::parse(&format!("WH{hex}")).is_ok());
        assert!(MessageSid::parse(&format!("CH{hex}")).is_err());
    }

    #[test]
    fn receipt_sid_is_deterministic_and_depends_on_both_inputs() {
        let account = AccountSid::parse(AC).unwrap();
        let other = AccountSid::parse("AC11111111111111111111111111111111").unwrap();
        let id = ChannelMessageId::parse("wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI").unwrap();
        let a = ReceiptSid::for_channel_message(&account, &id);
        assert_eq!(a, ReceiptSid::for_channel_message(&account, &id));
        assert!(ReceiptSid::parse(a.as_str()).is_ok());
        assert_ne!(a, ReceiptSid::for_channel_message(&other, &id));
        let id2 = ChannelMessageId::parse("wamid.other").unwrap();
        assert_ne!(a, ReceiptSid::for_channel_message(&account, &id2));
    }

    #[test]
    fn channel_message_ids_are_kept_verbatim_and_bounded() {
        let id = ChannelMessageId::parse("wamid.ABC==").unwrap();
        assert_eq!(id.as_str(), "wamid.ABC==");
        assert_eq!(
            ChannelMessageId::parse(""),
            Err(IdError::EmptyChannelMessageId)
        );
        assert!(ChannelMessageId::parse(&"x".repeat(257)).is_err());
        assert!(ChannelMessageId::parse("a\nb").is_err());
        let smpp = ChannelMessageId::smpp("smsc-eu", "12345").unwrap();
        assert_eq!(smpp.as_str(), "smpp:smsc-eu:12345");
        assert_ne!(smpp, ChannelMessageId::smpp("smsc-us", "12345").unwrap());
    }

    #[test]
    fn channel_message_sid_keeps_twilio_sids_and_derives_the_rest() {
        let sm = ChannelMessageId::parse("SM0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(sm.channel_message_sid(false).as_str(), sm.as_str());
        let wamid = ChannelMessageId::parse("wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI").unwrap();
        let derived = wamid.channel_message_sid(true);
        assert!(derived.as_str().starts_with("WA"));
        assert_eq!(derived.as_str().len(), 34);
        assert!(derived.as_str()[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(derived, wamid.channel_message_sid(true));
        let smsc = ChannelMessageId::smpp("c1", "42").unwrap();
        assert!(smsc.channel_message_sid(false).as_str().starts_with("SM"));
    }
}
