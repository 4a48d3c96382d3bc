//! The worked examples of the Conversations docs and of contract §8, replayed as registrations and
//! provider reports through the real merge and counters.

use receipts_domain::{Channel, ChannelError, DeliveryStatus, Registration, StatusSource};

use crate::{Message, provider_report, registration, rendered};

const TWILIO: StatusSource = StatusSource::TwilioMessaging;
const WHATSAPP: StatusSource = StatusSource::WhatsappCloud;

fn whatsapp(id: &str, expected_receipts: u32) -> Registration {
    Registration {
        channel: Channel::Whatsapp,
        ..registration(id, expected_receipts)
    }
}

/// Applies Twilio `raw` statuses to SMS channel message `id`, one second apart.
fn sms_history(message: &mut Message, id: &str, raws: &[&str]) {
    for (second, raw) in (1..).zip(raws) {
        message.report(provider_report(id, TWILIO, raw, None, second * 1000));
    }
}

#[test]
fn docs_example_five_recipients_sent_all_delivered_some_read_some() {
    // Two WhatsApp recipients read it, one SMS was delivered, two SMS are still at `sent`.
    let mut message = Message::default();
    for id in ["wamid.a", "wamid.b"] {
        message.register(whatsapp(id, 5)).unwrap();
    }
    for id in ["SMs1", "SMs2", "SMs3"] {
        message.register(registration(id, 5)).unwrap();
    }
    message.report(provider_report("wamid.a", WHATSAPP, "sent", None, 1000));
    message.report(provider_report(
        "wamid.a",
        WHATSAPP,
        "delivered",
        None,
        2000,
    ));
    message.report(provider_report("wamid.a", WHATSAPP, "read", None, 3000));
    // The second WhatsApp recipient's read receipt overtakes its delivery receipt.
    message.report(provider_report("wamid.b", WHATSAPP, "read", None, 3000));
    message.report(provider_report("wamid.b", WHATSAPP, "sent", None, 1000));
    message.report(provider_report(
        "wamid.b",
        WHATSAPP,
        "delivered",
        None,
        2000,
    ));
    sms_history(
        &mut message,
        "SMs1",
        &["queued", "sending", "sent", "delivered"],
    );
    sms_history(&mut message, "SMs2", &["queued", "sent"]);
    sms_history(&mut message, "SMs3", &["sending", "sent"]);

    let summary = message.summary();
    assert_eq!(
        rendered(&summary),
        (5, ["all", "some", "some", "none", "none"])
    );
    assert_eq!(
        (summary.sent, summary.delivered, summary.read),
        (5, 3, 2),
        "exact counts are cumulative: read ⊆ delivered ⊆ sent"
    );
    assert_eq!(message.receipt("wamid.b").status(), DeliveryStatus::Read);
    assert_eq!(message.receipt("SMs1").status(), DeliveryStatus::Delivered);
    assert_eq!(message.receipt("SMs2").status(), DeliveryStatus::Sent);
}

#[test]
fn spec_example_two_recipients_one_read_one_sent() {
    let mut message = Message::default();
    message.register(whatsapp("wamid.a", 2)).unwrap();
    message.register(registration("SMs1", 2)).unwrap();
    message.report(provider_report("wamid.a", WHATSAPP, "read", None, 5000));
    sms_history(&mut message, "SMs1", &["sent"]);

    assert_eq!(
        rendered(&message.summary()),
        (2, ["all", "some", "some", "none", "none"])
    );
}

#[test]
fn no_reports_yet_renders_every_bucket_none() {
    let mut message = Message::default();
    for id in ["SMs1", "SMs2", "SMs3"] {
        message.register(registration(id, 3)).unwrap();
    }
    assert_eq!(
        rendered(&message.summary()),
        (3, ["none", "none", "none", "none", "none"])
    );
    assert_eq!(message.counts().queued, 3);
    assert_eq!(message.receipt("SMs1").status(), DeliveryStatus::Queued);
    assert_eq!(message.receipt("SMs1").error_code(), None);

    // Nothing registered at all: a zero total, and nothing is `all` of nothing.
    assert_eq!(
        rendered(&Message::default().summary()),
        (0, ["none", "none", "none", "none", "none"])
    );
}

#[test]
fn one_failure_with_error_30003_shows_failed_some_and_the_code() {
    let mut message = Message::default();
    for id in ["SMs1", "SMs2", "SMs3"] {
        message.register(registration(id, 3)).unwrap();
    }
    message.report(provider_report("SMs1", TWILIO, "sent", None, 1000));
    message.report(provider_report("SMs1", TWILIO, "failed", Some(30003), 2000));
    // A `sent` that arrives late, even stamped later, does not undo the failure.
    message.report(provider_report("SMs1", TWILIO, "sent", None, 9000));
    sms_history(&mut message, "SMs2", &["sent", "delivered"]);
    sms_history(&mut message, "SMs3", &["sent", "delivered"]);

    let failed = message.receipt("SMs1");
    assert_eq!(failed.status(), DeliveryStatus::Failed);
    assert_eq!(failed.error_code(), Some(30003));
    let summary = message.summary();
    assert_eq!(
        rendered(&summary),
        (3, ["some", "some", "none", "some", "none"])
    );
    assert_eq!((summary.sent, summary.failed), (2, 1));
}

#[test]
fn every_recipient_delivered_is_delivered_all() {
    let mut message = Message::default();
    for id in ["SMs1", "SMs2", "SMs3", "SMs4"] {
        message.register(registration(id, 4)).unwrap();
        sms_history(&mut message, id, &["queued", "sent", "delivered"]);
    }
    assert_eq!(
        rendered(&message.summary()),
        (4, ["all", "all", "none", "none", "none"])
    );
}

#[test]
fn all_is_not_reached_before_every_expected_receipt_is_registered() {
    let mut message = Message::default();
    for id in ["SMs1", "SMs2"] {
        message.register(registration(id, 4)).unwrap();
        sms_history(&mut message, id, &["sent", "delivered"]);
    }
    assert_eq!(
        rendered(&message.summary()),
        (4, ["some", "some", "none", "none", "none"])
    );

    for id in ["SMs3", "SMs4"] {
        message.register(registration(id, 4)).unwrap();
        sms_history(&mut message, id, &["sent", "delivered"]);
    }
    assert_eq!(
        rendered(&message.summary()),
        (4, ["all", "all", "none", "none", "none"])
    );
}

#[test]
fn chat_participants_have_no_receipts_and_do_not_count() {
    // A message to two SMS participants and three chat participants.
    let participants = [
        ("SMs1", "sms"),
        ("chat-1", "chat"),
        ("SMs2", "SMS"),
        ("chat-2", "chat"),
        ("chat-3", " Chat "),
    ];
    let channels: Vec<_> = participants
        .iter()
        .map(|(id, channel)| (*id, channel.parse::<Channel>()))
        .collect();
    assert_eq!(
        channels
            .iter()
            .filter(|(_, c)| *c == Err(ChannelError::Chat))
            .count(),
        3,
        "a chat participant cannot be given a receipt channel"
    );
    let non_chat: Vec<(&str, Channel)> = channels
        .iter()
        .filter_map(|(id, channel)| channel.clone().ok().map(|c| (*id, c)))
        .collect();
    let expected_receipts = u32::try_from(non_chat.len()).unwrap();
    assert_eq!(expected_receipts, 2);

    let mut message = Message::default();
    for (id, channel) in non_chat {
        message
            .register(Registration {
                channel,
                ..registration(id, expected_receipts)
            })
            .unwrap();
        sms_history(&mut message, id, &["sent", "delivered"]);
    }
    assert_eq!(
        rendered(&message.summary()),
        (2, ["all", "all", "none", "none", "none"])
    );
}

#[test]
fn channel_names_parse_case_insensitively_and_unknown_ones_are_errors() {
    assert_eq!("WhatsApp".parse::<Channel>(), Ok(Channel::Whatsapp));
    assert_eq!("mms".parse::<Channel>(), Ok(Channel::Sms));
    for channel in Channel::ALL {
        assert_eq!(channel.as_str().parse::<Channel>(), Ok(channel));
    }
    assert_eq!("chat".parse::<Channel>(), Err(ChannelError::Chat));
    assert_eq!(
        "fax".parse::<Channel>(),
        Err(ChannelError::Unknown("fax".to_owned()))
    );
}
