use receipts_domain::{DeliveryEvent, DeliveryEventKind, DeliveryStatus};
use receipts_proto::codec::{self, CodecError, Encoding};
use receipts_proto::v1;

use crate::{registration, report};

#[test]
fn content_type_selects_the_encoding() {
    assert_eq!(
        Encoding::from_content_type(None).unwrap(),
        Encoding::Protobuf
    );
    assert_eq!(
        Encoding::from_content_type(Some(b"application/json; charset=utf-8")).unwrap(),
        Encoding::Json
    );
    assert_eq!(
        Encoding::from_content_type(Some(b"Application/JSON")).unwrap(),
        Encoding::Json
    );
    assert_eq!(
        Encoding::from_content_type(Some(b"application/x-protobuf")).unwrap(),
        Encoding::Protobuf
    );
    let err = Encoding::from_content_type(Some(b"text/csv")).unwrap_err();
    assert!(matches!(err, CodecError::UnsupportedContentType(_)));
}

#[test]
fn envelopes_round_trip_in_both_encodings() {
    for kind in [
        DeliveryEventKind::Registered(registration("wamid.x")),
        DeliveryEventKind::Reported(report("wamid.x", DeliveryStatus::Delivered)),
    ] {
        let event = DeliveryEvent {
            event_id: "id-1".into(),
            kind,
        };
        let wire = v1::Envelope::from(&event);
        for encoding in [Encoding::Protobuf, Encoding::Json] {
            let bytes = codec::encode(&wire, encoding);
            let back: v1::Envelope = codec::decode(&bytes, encoding).unwrap();
            assert_eq!(DeliveryEvent::try_from(&back).unwrap(), event);
        }
    }
}

/// What a person would type into a console producer: proto3 JSON names, enum names, RFC 3339
/// timestamps.
#[test]
fn hand_written_json_events_decode() {
    let json = r#"{
        "eventId": "manual-1",
        "occurredAt": "2026-11-27T10:00:00Z",
        "statusReported": {
            "accountSid": "AC0123456789abcdef0123456789abcdef",
            "channelMessageId": "SM0123456789abcdef0123456789abcdef",
            "rawStatus": "undelivered",
            "errorCode": 30005,
            "providerTimestamp": "2026-11-27T10:00:01.250Z",
            "source": "STATUS_SOURCE_TWILIO_MESSAGING"
        }
    }"#;
    let wire: v1::Envelope = codec::decode(json.as_bytes(), Encoding::Json).unwrap();
    let event = DeliveryEvent::try_from(&wire).unwrap();
    let DeliveryEventKind::Reported(report) = event.kind else {
        panic!("expected a report")
    };
    assert_eq!(report.status, DeliveryStatus::Undelivered);
    assert_eq!(report.error_code, Some(30005));
    assert_eq!(report.provider_time.unix_millis(), 1_795_773_601_250);
}

#[test]
fn garbage_is_a_decode_error_not_a_panic() {
    let err = codec::decode::<v1::Envelope>(&[0xff, 0xff, 0xff], Encoding::Protobuf).unwrap_err();
    assert!(matches!(err, CodecError::Protobuf(_)));
    let err = codec::decode::<v1::Envelope>(b"{not json", Encoding::Json).unwrap_err();
    assert!(matches!(err, CodecError::Json(_)));
}
