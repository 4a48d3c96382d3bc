//! Receipt sids as clients see them: Twilio-shaped, and stable for a channel message.

use proptest::prelude::*;
use receipts_domain::{
    AccountSid, ChannelMessageId, IdError, ParticipantSid, ReceiptKey, ReceiptSid, ReceiptState,
    RegisterOutcome, Registration,
};

use crate::{channel_message, registration};

fn is_twilio_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn a_receipt_sid_is_shaped_like_twilios_and_survives_a_rebuild() {
    let first = registration("wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI", 2);
    let sid = first.receipt_sid();
    assert!(is_twilio_sid(sid.as_str(), "DY"), "{sid}");
    assert_eq!(sid.as_str().parse::<ReceiptSid>(), Ok(sid.clone()));

    // A fresh state built from the same registration, as after a restart, names it the same.
    let mut state = ReceiptState::default();
    let RegisterOutcome::Changed(change) = state.register(first.clone()).unwrap() else {
        panic!("the first registration creates the receipt");
    };
    assert_eq!(change.receipt.sid, sid);

    // The sid belongs to the account's channel message, not to who or what it was for.
    let other_account = Registration {
        account: AccountSid::parse("AC11111111111111111111111111111111").unwrap(),
        ..first.clone()
    };
    assert_ne!(other_account.receipt_sid(), sid);
    let other_participant = Registration {
        participant: ParticipantSid::derive(&["another"]),
        ..first
    };
    assert_eq!(other_participant.receipt_sid(), sid);
}

#[test]
fn smpp_ids_from_different_connections_are_different_receipts() {
    let a = Registration {
        channel_message_id: ChannelMessageId::smpp("smsc-eu", "42").unwrap(),
        ..registration("x", 1)
    };
    let b = Registration {
        channel_message_id: ChannelMessageId::smpp("smsc-us", "42").unwrap(),
        ..registration("x", 1)
    };
    assert_ne!(a.receipt_sid(), b.receipt_sid());
}

#[test]
fn malformed_ids_are_refused_with_a_reason() {
    let err = ReceiptSid::parse("DY123").unwrap_err();
    assert!(
        matches!(err, IdError::MalformedSid { prefix: "DY", .. }),
        "{err:?}"
    );
    assert_eq!(
        ChannelMessageId::parse(""),
        Err(IdError::EmptyChannelMessageId)
    );
    assert!(ChannelMessageId::parse(&"x".repeat(ChannelMessageId::MAX_LEN)).is_ok());
    assert_eq!(
        ChannelMessageId::parse(&"x".repeat(ChannelMessageId::MAX_LEN + 1)),
        Err(IdError::ChannelMessageIdTooLong {
            max: ChannelMessageId::MAX_LEN
        })
    );
}

proptest! {
    #[test]
    fn every_channel_message_gets_a_valid_receipt_sid_and_channel_message_sid(
        id in "[a-zA-Z0-9._:=+-]{1,64}",
        whatsapp in any::<bool>(),
    ) {
        let registration = Registration {
            channel_message_id: channel_message(&id),
            ..registration("x", 1)
        };
        let sid = registration.receipt_sid();
        prop_assert!(ReceiptSid::parse(sid.as_str()).is_ok(), "{}", sid);
        let shown = registration.channel_message_id.channel_message_sid(whatsapp);
        prop_assert!(
            is_twilio_sid(shown.as_str(), "SM")
                || is_twilio_sid(shown.as_str(), "WA")
                || shown.as_str() == id,
            "{}", shown
        );
        prop_assert_eq!(shown, registration.channel_message_id.channel_message_sid(whatsapp));
    }
}

proptest! {
    /// A receipt key reads back from its text form whatever the channel message id holds
    /// (slashes included), and two accounts' keys of the same id differ, as do their sids.
    #[test]
    fn receipt_keys_read_back_and_keep_accounts_apart(
        id in "[ -~]{1,64}",
        a in "[0-9a-f]{32}",
        b in "[0-9a-f]{32}",
    ) {
        prop_assume!(a != b);
        let id = ChannelMessageId::parse(&id).unwrap();
        let key = |hex: &str| ReceiptKey::new(AccountSid::parse(&format!("AC{hex}")).unwrap(), id.clone());
        let (ka, kb) = (key(&a), key(&b));
        prop_assert_eq!(ReceiptKey::parse(&ka.to_string()), Ok(ka.clone()));
        prop_assert_ne!(ka.to_string(), kb.to_string());
        prop_assert_ne!(ka.receipt_sid(), kb.receipt_sid());
    }
}

#[test]
fn a_text_that_is_not_a_receipt_key_is_refused() {
    assert_eq!(ReceiptKey::parse("SM1"), Err(IdError::NotReceiptKey));
    assert!(matches!(
        ReceiptKey::parse("nobody/SM1"),
        Err(IdError::MalformedSid { .. })
    ));
}
