use proptest::prelude::*;
use receipts_domain::{
    DeliveryEvent, DeliveryEventKind, DeliveryStatus, DeliverySummary, Receipt, ReceiptChange,
    ReceiptState, RegisterOutcome, ReportOutcome, StatusCounts, StatusSource, Timestamp,
};
use receipts_proto::{ConversionError, v1};

use crate::{registration, report};

fn registered_change(status: Option<DeliveryStatus>) -> ReceiptChange {
    let mut state = ReceiptState::default();
    let RegisterOutcome::Changed(mut change) = state.register(registration("wamid.abc")).unwrap()
    else {
        panic!("first registration must change the state")
    };
    if let Some(status) = status {
        let ReportOutcome::Changed(next) = state.apply_report(report("wamid.abc", status)) else {
            panic!("a report on a registered receipt must change it")
        };
        change = next;
    }
    change
}

#[test]
fn events_round_trip_through_the_envelope() {
    for kind in [
        DeliveryEventKind::Registered(registration("wamid.abc")),
        DeliveryEventKind::Reported(report("wamid.abc", DeliveryStatus::Failed)),
    ] {
        let event = DeliveryEvent {
            event_id: "ev-1".into(),
            kind,
        };
        let wire = v1::Envelope::from(&event);
        assert_eq!(DeliveryEvent::try_from(&wire).unwrap(), event);
    }
}

#[test]
fn receipt_updates_round_trip_with_and_without_a_report() {
    for status in [
        None,
        Some(DeliveryStatus::Read),
        Some(DeliveryStatus::Failed),
    ] {
        let change = registered_change(status);
        let wire = v1::ReceiptUpdated::from(&change);
        assert_eq!(ReceiptChange::try_from(&wire).unwrap(), change);
    }
}

#[test]
fn the_wire_receipt_shows_the_twilio_shaped_channel_message_sid_beside_the_verbatim_id() {
    let change = registered_change(Some(DeliveryStatus::Read));
    let wire = v1::Receipt::from(&change.receipt);
    assert_eq!(wire.channel_message_id, "wamid.abc");
    assert!(wire.channel_message_sid.starts_with("WA"));
    assert_eq!(wire.channel_message_sid.len(), 34);
    assert_eq!(wire.status(), v1::DeliveryStatus::Read);
    assert_eq!(wire.version, 2);
    assert!(wire.sid.starts_with("DY"));
}

#[test]
fn a_report_without_a_mapped_status_is_mapped_from_its_raw_status() {
    let wire = v1::StatusReported {
        account_sid: "AC00000000000000000000000000000001".into(),
        channel_message_id: "smpp:eu:42".into(),
        raw_status: "UNDELIV".into(),
        status: v1::DeliveryStatus::Unspecified.into(),
        error_code: 30003,
        provider_timestamp: Some(pbjson_types::Timestamp {
            seconds: 10,
            nanos: 0,
        }),
        source: v1::StatusSource::Smpp.into(),
    };
    let report = receipts_domain::StatusReport::try_from(&wire).unwrap();
    assert_eq!(report.status, DeliveryStatus::Undelivered);
    assert_eq!(report.source, StatusSource::Smpp);
    assert_eq!(report.error_code, Some(30003));
    assert_eq!(report.provider_time, Timestamp::from_unix_millis(10_000));
}

#[test]
fn invalid_wire_values_name_the_field() {
    let mut reg = v1::ReceiptRegistered::from(&registration("wamid.abc"));
    reg.conversation_sid = "CHnope".into();
    let envelope = v1::Envelope {
        event_id: "e".into(),
        occurred_at: Some(pbjson_types::Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        event: Some(v1::envelope::Event::ReceiptRegistered(reg)),
    };
    let err = DeliveryEvent::try_from(&envelope).unwrap_err();
    assert!(err.to_string().contains("`conversation_sid`"), "{err}");

    let unknown = v1::StatusReported {
        account_sid: "AC00000000000000000000000000000001".into(),
        channel_message_id: "SM1".into(),
        raw_status: "teleported".into(),
        source: v1::StatusSource::TwilioMessaging.into(),
        provider_timestamp: Some(Default::default()),
        ..Default::default()
    };
    let err = receipts_domain::StatusReport::try_from(&unknown).unwrap_err();
    assert!(matches!(err, ConversionError::UnknownStatus(_)), "{err}");
    assert!(err.to_string().contains("teleported"), "{err}");

    // A report belongs to an account: without one it is refused, naming the field.
    let anonymous = v1::StatusReported {
        account_sid: String::new(),
        ..v1::StatusReported::from(&report("SM1", DeliveryStatus::Read))
    };
    let err = receipts_domain::StatusReport::try_from(&anonymous).unwrap_err();
    assert!(
        matches!(err, ConversionError::Missing("account_sid")),
        "{err}"
    );

    let no_time = v1::StatusReported {
        provider_timestamp: None,
        raw_status: "sent".into(),
        ..unknown
    };
    let err = receipts_domain::StatusReport::try_from(&no_time).unwrap_err();
    assert!(err.to_string().contains("`provider_timestamp`"), "{err}");

    let empty = v1::Envelope {
        event_id: "e".into(),
        ..Default::default()
    };
    let err = DeliveryEvent::try_from(&empty).unwrap_err();
    assert!(err.to_string().contains("`event`"), "{err}");

    let mut reg = v1::ReceiptRegistered::from(&registration("wamid.abc"));
    reg.channel = 42;
    let envelope = v1::Envelope {
        event_id: "e".into(),
        occurred_at: Some(Default::default()),
        event: Some(v1::envelope::Event::ReceiptRegistered(reg)),
    };
    let err = DeliveryEvent::try_from(&envelope).unwrap_err();
    assert!(err.to_string().contains("`channel`"), "{err}");
}

#[test]
fn summaries_render_amounts_and_exact_counts() {
    let counts = StatusCounts {
        sent: 2,
        delivered: 1,
        read: 2,
        ..Default::default()
    };
    let wire = v1::DeliverySummary::from(&DeliverySummary::new(5, &counts));
    assert_eq!(wire.total, 5);
    assert_eq!(wire.sent(), v1::DeliveryAmount::All);
    assert_eq!(wire.delivered(), v1::DeliveryAmount::Some);
    assert_eq!(wire.read(), v1::DeliveryAmount::Some);
    assert_eq!(wire.failed(), v1::DeliveryAmount::None);
    assert_eq!(wire.undelivered(), v1::DeliveryAmount::None);
    assert_eq!(
        (wire.sent_count, wire.delivered_count, wire.read_count),
        (5, 3, 2)
    );
    assert_eq!(StatusCounts::from(&v1::StatusCounts::from(&counts)), counts);
}

fn any_status() -> impl Strategy<Value = DeliveryStatus> {
    proptest::sample::select(DeliveryStatus::ALL.to_vec())
}

fn any_source() -> impl Strategy<Value = StatusSource> {
    proptest::sample::select(StatusSource::ALL.to_vec())
}

proptest! {
    #[test]
    fn any_receipt_survives_protobuf_and_json(
        status in any_status(),
        source in any_source(),
        millis in -10_000_000_000i64..10_000_000_000_000,
        error_code in proptest::option::of(1u32..100_000),
        version in 1u64..1_000,
        has_report in any::<bool>(),
    ) {
        let mut reg = registration("SM0123456789abcdef0123456789abcdef");
        reg.chat_service = None;
        let receipt = Receipt {
            sid: reg.receipt_sid(),
            report: has_report.then(|| receipts_domain::StatusReport {
                account: reg.account.clone(),
                channel_message_id: reg.channel_message_id.clone(),
                status,
                raw_status: format!("raw-{status}"),
                error_code,
                provider_time: Timestamp::from_unix_millis(millis),
                source,
            }),
            registration: reg,
            version,
        };
        let wire = v1::Receipt::from(&receipt);
        let bytes = receipts_proto::codec::encode(&wire, receipts_proto::codec::Encoding::Protobuf);
        let json = receipts_proto::codec::encode(&wire, receipts_proto::codec::Encoding::Json);
        for (payload, encoding) in [
            (bytes, receipts_proto::codec::Encoding::Protobuf),
            (json, receipts_proto::codec::Encoding::Json),
        ] {
            let decoded: v1::Receipt = receipts_proto::codec::decode(&payload, encoding).unwrap();
            prop_assert_eq!(&decoded, &wire);
            prop_assert_eq!(Receipt::try_from(&decoded).unwrap(), receipt.clone());
        }
    }
}
