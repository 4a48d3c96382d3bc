//! Conversions between wire and domain types, both ways, and both record encodings; wire
//! compatibility with the released descriptor sets.

mod aggregates;
mod codec;
mod compat;
mod convert;

use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ChatServiceSid, ConversationSid, DeliveryStatus,
    MessageSid, ParticipantSid, Registration, StatusReport, StatusSource, Timestamp,
};

pub(crate) fn registration(channel_message_id: &str) -> Registration {
    Registration {
        account: AccountSid::parse("AC00000000000000000000000000000001").unwrap(),
        chat_service: Some(ChatServiceSid::parse("IS00000000000000000000000000000002").unwrap()),
        conversation: ConversationSid::parse("CH00000000000000000000000000000003").unwrap(),
        message: MessageSid::parse("IM00000000000000000000000000000004").unwrap(),
        message_index: 7,
        participant: ParticipantSid::parse("MB00000000000000000000000000000005").unwrap(),
        channel: Channel::Whatsapp,
        channel_message_id: ChannelMessageId::parse(channel_message_id).unwrap(),
        expected_receipts: 3,
        registered_at: Timestamp::from_unix_millis(1_764_000_000_123),
    }
}

pub(crate) fn report(channel_message_id: &str, status: DeliveryStatus) -> StatusReport {
    StatusReport {
        account: AccountSid::parse("AC00000000000000000000000000000001").unwrap(),
        channel_message_id: ChannelMessageId::parse(channel_message_id).unwrap(),
        status,
        raw_status: status.as_str().to_owned(),
        error_code: (status == DeliveryStatus::Failed).then_some(63016),
        provider_time: Timestamp::from_unix_millis(1_764_000_005_000),
        source: StatusSource::WhatsappCloud,
    }
}
