//! Builders of the domain's input events with the tests' conventions: sids are a two-letter
//! prefix and a number (`sid("CH", 1)`), registrations happen at 1 s after the epoch, and event
//! ids say what the event is, so a duplicate is the same event sent twice.

use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryEvent, DeliveryEventKind,
    DeliveryStatus, MessageSid, ParticipantSid, Registration, StatusReport, StatusSource,
    Timestamp,
};

/// The sid with `prefix` and the number `n` as 32 hex digits: `sid("CH", 1)` is
/// `CH00000000000000000000000000000001`.
pub fn sid(prefix: &str, n: u64) -> String {
    format!("{prefix}{n:032x}")
}

/// When [`registration`] registers a receipt: 1 s after the epoch, before any provider time the
/// tests report.
pub const REGISTERED_AT_MILLIS: i64 = 1_000;

/// The receipt of `channel_message_id` on `channel`, for participant `MB{participant}` of message
/// `IM{message}` (whose index is `message`) in conversation `CH{conversation}`, of the default
/// chat service, expecting `expected` receipts in all.
pub fn registration(
    account: &str,
    channel: Channel,
    channel_message_id: &str,
    conversation: u64,
    message: u64,
    participant: u64,
    expected: u32,
) -> Registration {
    Registration {
        account: AccountSid::parse(account).unwrap(),
        chat_service: None,
        conversation: ConversationSid::parse(&sid("CH", conversation)).unwrap(),
        message: MessageSid::parse(&sid("IM", message)).unwrap(),
        message_index: message,
        participant: ParticipantSid::parse(&sid("MB", participant)).unwrap(),
        channel,
        channel_message_id: ChannelMessageId::parse(channel_message_id).unwrap(),
        expected_receipts: expected,
        registered_at: Timestamp::from_unix_millis(REGISTERED_AT_MILLIS),
    }
}

/// A report of `status` (the provider's word being the status's own) at `at_millis`.
pub fn report(
    account: &str,
    channel_message_id: &str,
    status: DeliveryStatus,
    at_millis: i64,
    error_code: Option<u32>,
    source: StatusSource,
) -> StatusReport {
    StatusReport {
        account: AccountSid::parse(account).unwrap(),
        channel_message_id: ChannelMessageId::parse(channel_message_id).unwrap(),
        status,
        raw_status: status.as_str().to_owned(),
        error_code,
        provider_time: Timestamp::from_unix_millis(at_millis),
        source,
    }
}

/// The event registering `registration`, with the id `reg-{channel message id}`.
pub fn registered(registration: Registration) -> DeliveryEvent {
    DeliveryEvent {
        event_id: format!("reg-{}", registration.channel_message_id),
        kind: DeliveryEventKind::Registered(registration),
    }
}

/// The event reporting `report`, with the id `rep-{channel message id}-{status}-{millis}`.
pub fn reported(report: StatusReport) -> DeliveryEvent {
    DeliveryEvent {
        event_id: format!(
            "rep-{}-{}-{}",
            report.channel_message_id,
            report.status,
            report.provider_time.unix_millis()
        ),
        kind: DeliveryEventKind::Reported(report),
    }
}

/// The same event, registered or reported for another account, under an event id of its own.
pub fn of_account(mut event: DeliveryEvent, account: &str) -> DeliveryEvent {
    let account = AccountSid::parse(account).unwrap();
    match &mut event.kind {
        DeliveryEventKind::Registered(r) => r.account = account,
        DeliveryEventKind::Reported(r) => r.account = account,
    }
    event.event_id = format!("{}-{}", event.event_id, event.receipt_key().account);
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_name_the_event() {
        let account = "AC00000000000000000000000000000001";
        let event = registered(registration(account, Channel::Sms, "SM1", 1, 2, 3, 1));
        assert_eq!(event.event_id, "reg-SM1");
        let event = reported(report(
            account,
            "SM1",
            DeliveryStatus::Read,
            2_500,
            None,
            StatusSource::TwilioMessaging,
        ));
        assert_eq!(event.event_id, "rep-SM1-read-2500");
        let other = of_account(event, "AC00000000000000000000000000000002");
        assert_eq!(
            other.event_id,
            "rep-SM1-read-2500-AC00000000000000000000000000000002"
        );
    }
}
