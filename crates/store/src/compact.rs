//! The compact forms the stores write (format 2): sids as bytes rather than text, and records
//! that leave out what their key already says.
//!
//! A sid is its kind's two prefix letters and 32 hex digits. The letters are implied by where
//! the sid is stored, so only the digits are written: `0x00` and their 16 bytes when they are
//! lowercase, as Twilio writes them, otherwise `0x01` and the 32 digits as given, so a sid reads
//! back exactly as it was stored. Either way the form is self-delimiting, so several sids can
//! follow each other in a key; and for lowercase sids byte order is text order, so keys sort as
//! their sids do.
//!
//! A channel message id is kept verbatim, except that a Twilio-shaped one (two letters and 32
//! lowercase hex digits, an `SM…` or `MM…`) takes 19 bytes instead of 34.

use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ChatServiceSid, ConversationSid, DeliveryStatus,
    IdError, MessageSid, ParticipantSid, ReceiptSid, Registration, StatusReport, Timestamp,
};
use receipts_proto::convert::{
    channel_from_wire, channel_to_wire, source_from_wire, source_to_wire, status_from_wire,
    status_to_wire,
};

use crate::CorruptValue;

const HEX_DIGITS: usize = 32;
const BINARY: u8 = 0x00;
const AS_GIVEN: u8 = 0x01;

/// A kind of sid, as the stores write it.
pub(crate) trait Sid: Sized {
    const PREFIX: &'static str;
    fn as_str(&self) -> &str;
    fn parse(value: &str) -> Result<Self, IdError>;
}

macro_rules! sid {
    ($($name:ident),*) => {$(
        impl Sid for $name {
            const PREFIX: &'static str = $name::PREFIX;
            fn as_str(&self) -> &str {
                $name::as_str(self)
            }
            fn parse(value: &str) -> Result<Self, IdError> {
                $name::parse(value)
            }
        }
    )*};
}

sid!(
    AccountSid,
    ChatServiceSid,
    ConversationSid,
    MessageSid,
    ParticipantSid,
    ReceiptSid
);

fn is_lower_hex(digits: &str) -> bool {
    digits
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Appends `sid` in its compact, self-delimiting form.
pub(crate) fn put_sid<S: Sid>(out: &mut Vec<u8>, sid: &S) {
    let digits = &sid.as_str()[S::PREFIX.len()..];
    if is_lower_hex(digits) {
        out.push(BINARY);
        out.extend_from_slice(&hex::decode(digits).expect("a sid's digits are hex"));
    } else {
        out.push(AS_GIVEN);
        out.extend_from_slice(digits.as_bytes());
    }
}

/// `sid` in its compact form, for a record's field.
pub(crate) fn sid_bytes<S: Sid>(sid: &S) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + HEX_DIGITS);
    put_sid(&mut out, sid);
    out
}

/// Reads a sid from the front of `bytes` and moves past it.
pub(crate) fn take_sid<S: Sid>(bytes: &mut &[u8]) -> Result<S, CorruptValue> {
    let (&form, rest) = bytes.split_first().ok_or("a sid is missing")?;
    let (digits, rest) = match form {
        BINARY if rest.len() >= HEX_DIGITS / 2 => {
            let (raw, rest) = rest.split_at(HEX_DIGITS / 2);
            (hex::encode(raw), rest)
        }
        AS_GIVEN if rest.len() >= HEX_DIGITS => {
            let (raw, rest) = rest.split_at(HEX_DIGITS);
            (String::from_utf8(raw.to_vec())?, rest)
        }
        _ => return Err(format!("not a stored {} sid", S::PREFIX).into()),
    };
    *bytes = rest;
    Ok(S::parse(&format!("{}{digits}", S::PREFIX))?)
}

/// The sid a record's field holds, which must be all of it.
pub(crate) fn sid_from_bytes<S: Sid>(mut bytes: &[u8]) -> Result<S, CorruptValue> {
    let sid = take_sid(&mut bytes)?;
    if !bytes.is_empty() {
        return Err(format!("trailing bytes after a {} sid", S::PREFIX).into());
    }
    Ok(sid)
}

fn optional_sid_bytes<S: Sid>(sid: Option<&S>) -> Vec<u8> {
    sid.map(sid_bytes).unwrap_or_default()
}

fn optional_sid_from_bytes<S: Sid>(bytes: &[u8]) -> Result<Option<S>, CorruptValue> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        sid_from_bytes(bytes).map(Some)
    }
}

/// Appends `id`, which must come last where it is written (its length is not recorded).
pub(crate) fn put_channel_message_id(out: &mut Vec<u8>, id: &ChannelMessageId) {
    let id = id.as_str();
    let twilio_shaped = id.len() == 2 + HEX_DIGITS
        && id.as_bytes()[..2].iter().all(u8::is_ascii_alphabetic)
        && is_lower_hex(&id[2..]);
    if twilio_shaped {
        out.push(BINARY);
        out.extend_from_slice(&id.as_bytes()[..2]);
        out.extend_from_slice(&hex::decode(&id[2..]).expect("checked to be hex"));
    } else {
        out.push(AS_GIVEN);
        out.extend_from_slice(id.as_bytes());
    }
}

/// `id` in its compact form, for a record's field.
pub(crate) fn channel_message_id_bytes(id: &ChannelMessageId) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + id.as_str().len());
    put_channel_message_id(&mut out, id);
    out
}

/// The channel message id that is all of `bytes`.
pub(crate) fn channel_message_id_from(bytes: &[u8]) -> Result<ChannelMessageId, CorruptValue> {
    let text = match bytes.split_first() {
        Some((&BINARY, rest)) if rest.len() == 2 + HEX_DIGITS / 2 => {
            let letters = std::str::from_utf8(&rest[..2])?;
            format!("{letters}{}", hex::encode(&rest[2..]))
        }
        Some((&AS_GIVEN, rest)) => String::from_utf8(rest.to_vec())?,
        _ => return Err("not a stored channel message id".into()),
    };
    Ok(ChannelMessageId::parse(&text)?)
}

/// A status report without its account and channel message id, which are its receipt's.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StoredReport {
    #[prost(int32, tag = "1")]
    pub status: i32,
    /// Empty when it is the status's own name.
    #[prost(string, tag = "2")]
    pub raw_status: String,
    #[prost(uint32, optional, tag = "3")]
    pub error_code: Option<u32>,
    /// Unix milliseconds.
    #[prost(int64, tag = "4")]
    pub provider_time: i64,
    #[prost(int32, tag = "5")]
    pub source: i32,
}

impl From<&StatusReport> for StoredReport {
    fn from(report: &StatusReport) -> Self {
        let raw_status = if report.raw_status == report.status.as_str() {
            String::new()
        } else {
            report.raw_status.clone()
        };
        StoredReport {
            status: status_to_wire(report.status).into(),
            raw_status,
            error_code: report.error_code,
            provider_time: report.provider_time.unix_millis(),
            source: source_to_wire(report.source).into(),
        }
    }
}

impl StoredReport {
    /// The report of the receipt `account`'s `channel_message_id`.
    pub(crate) fn report(
        &self,
        account: &AccountSid,
        channel_message_id: &ChannelMessageId,
    ) -> Result<StatusReport, CorruptValue> {
        let status: DeliveryStatus =
            status_from_wire("status", self.status)?.ok_or("a stored report has no status")?;
        Ok(StatusReport {
            account: account.clone(),
            channel_message_id: channel_message_id.clone(),
            status,
            raw_status: if self.raw_status.is_empty() {
                status.as_str().to_owned()
            } else {
                self.raw_status.clone()
            },
            error_code: self.error_code,
            provider_time: Timestamp::from_unix_millis(self.provider_time),
            source: source_from_wire("source", self.source)?,
        })
    }
}

/// A registration without its account and channel message id (the projector's key) and, where
/// the query service keys it, without its conversation and message either.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StoredRegistration {
    /// Empty when the conversation belongs to the account's default service.
    #[prost(bytes = "vec", tag = "1")]
    pub chat_service: Vec<u8>,
    /// Empty where the key holds it.
    #[prost(bytes = "vec", tag = "2")]
    pub conversation: Vec<u8>,
    /// Empty where the key holds it.
    #[prost(bytes = "vec", tag = "3")]
    pub message: Vec<u8>,
    #[prost(uint64, tag = "4")]
    pub message_index: u64,
    #[prost(bytes = "vec", tag = "5")]
    pub participant: Vec<u8>,
    #[prost(int32, tag = "6")]
    pub channel: i32,
    #[prost(uint32, tag = "7")]
    pub expected_receipts: u32,
    /// Unix milliseconds.
    #[prost(int64, tag = "8")]
    pub registered_at: i64,
    /// Empty where the key holds it.
    #[prost(bytes = "vec", tag = "9")]
    pub channel_message_id: Vec<u8>,
}

/// Which of a registration's ids its key already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyedBy {
    /// The projector's key: account and channel message id.
    ChannelMessage,
    /// The query service's key: account, conversation and message.
    Message,
}

impl StoredRegistration {
    pub(crate) fn new(registration: &Registration, keyed_by: KeyedBy) -> Self {
        let (conversation, message, channel_message_id) = match keyed_by {
            KeyedBy::ChannelMessage => (
                sid_bytes(&registration.conversation),
                sid_bytes(&registration.message),
                Vec::new(),
            ),
            KeyedBy::Message => (
                Vec::new(),
                Vec::new(),
                channel_message_id_bytes(&registration.channel_message_id),
            ),
        };
        StoredRegistration {
            chat_service: optional_sid_bytes(registration.chat_service.as_ref()),
            conversation,
            message,
            message_index: registration.message_index,
            participant: sid_bytes(&registration.participant),
            channel: channel_to_wire(registration.channel).into(),
            expected_receipts: registration.expected_receipts,
            registered_at: registration.registered_at.unix_millis(),
            channel_message_id,
        }
    }

    /// The registration, with the ids its key holds: the channel message id when keyed by
    /// channel message, conversation and message when keyed by message.
    pub(crate) fn registration(
        &self,
        account: &AccountSid,
        keyed: Keyed<'_>,
    ) -> Result<Registration, CorruptValue> {
        let (conversation, message, channel_message_id) = match keyed {
            Keyed::ChannelMessage(id) => (
                sid_from_bytes(&self.conversation)?,
                sid_from_bytes(&self.message)?,
                id.clone(),
            ),
            Keyed::Message(conversation, message) => (
                conversation.clone(),
                message.clone(),
                channel_message_id_from(&self.channel_message_id)?,
            ),
        };
        let channel: Channel = channel_from_wire("channel", self.channel)?;
        Ok(Registration {
            account: account.clone(),
            chat_service: optional_sid_from_bytes(&self.chat_service)?,
            conversation,
            message,
            message_index: self.message_index,
            participant: sid_from_bytes(&self.participant)?,
            channel,
            channel_message_id,
            expected_receipts: self.expected_receipts,
            registered_at: Timestamp::from_unix_millis(self.registered_at),
        })
    }
}

/// The ids a record's key gave, besides the account.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Keyed<'a> {
    ChannelMessage(&'a ChannelMessageId),
    Message(&'a ConversationSid, &'a MessageSid),
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sid_digits() -> impl Strategy<Value = String> {
        prop_oneof!["[0-9a-f]{32}", "[0-9A-F]{32}", "[0-9a-fA-F]{32}",]
    }

    proptest! {
        #[test]
        fn sids_read_back_exactly_and_delimit_themselves(a in sid_digits(), b in sid_digits()) {
            let first = ConversationSid::parse(&format!("CH{a}")).unwrap();
            let second = MessageSid::parse(&format!("IM{b}")).unwrap();
            let mut key = Vec::new();
            put_sid(&mut key, &first);
            put_sid(&mut key, &second);
            let mut rest = key.as_slice();
            prop_assert_eq!(take_sid::<ConversationSid>(&mut rest).unwrap(), first);
            prop_assert_eq!(take_sid::<MessageSid>(&mut rest).unwrap(), second);
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn lowercase_sids_sort_as_their_text(a in "[0-9a-f]{32}", b in "[0-9a-f]{32}") {
            let (a, b) = (
                ReceiptSid::parse(&format!("DY{a}")).unwrap(),
                ReceiptSid::parse(&format!("DY{b}")).unwrap(),
            );
            prop_assert_eq!(sid_bytes(&a).cmp(&sid_bytes(&b)), a.as_str().cmp(b.as_str()));
            prop_assert_eq!(sid_bytes(&a).len(), 17);
        }

        #[test]
        fn channel_message_ids_read_back_exactly(
            id in prop_oneof![
                "[A-Z]{2}[0-9a-f]{32}",
                "[A-Z]{2}[0-9a-fA-F]{32}",
                "wamid\\.[A-Za-z0-9=]{1,60}",
                "smpp:[a-z]{1,8}:[0-9]{1,12}",
            ]
        ) {
            let id = ChannelMessageId::parse(&id).unwrap();
            prop_assert_eq!(channel_message_id_from(&channel_message_id_bytes(&id)).unwrap(), id);
        }
    }

    #[test]
    fn a_twilio_shaped_channel_message_id_takes_19_bytes() {
        let id = ChannelMessageId::parse("SM0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(channel_message_id_bytes(&id).len(), 19);
    }

    #[test]
    fn truncated_sids_are_refused() {
        let sid = AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap();
        let bytes = sid_bytes(&sid);
        assert!(sid_from_bytes::<AccountSid>(&bytes[..10]).is_err());
        assert!(sid_from_bytes::<AccountSid>(&[bytes.as_slice(), b"x"].concat()).is_err());
    }
}
