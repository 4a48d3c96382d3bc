use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use receipts_bus::TopicSpec;
use receipts_bus::record::{PoisonRecord, content_type_headers, decode_delivery_event};
use receipts_bus::topics::ensure_topics;
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryEvent, DeliveryEventKind,
    DeliveryStatus, MessageSid, ParticipantSid, Registration, StatusReport, StatusSource,
    Timestamp,
};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;

fn events() -> Vec<DeliveryEvent> {
    let id = ChannelMessageId::parse("wamid.roundtrip").unwrap();
    vec![
        DeliveryEvent {
            event_id: "reg-1".into(),
            kind: DeliveryEventKind::Registered(Registration {
                account: AccountSid::parse("AC00000000000000000000000000000001").unwrap(),
                chat_service: None,
                conversation: ConversationSid::parse("CH00000000000000000000000000000002").unwrap(),
                message: MessageSid::parse("IM00000000000000000000000000000003").unwrap(),
                message_index: 0,
                participant: ParticipantSid::parse("MB00000000000000000000000000000004").unwrap(),
                channel: Channel::Whatsapp,
                channel_message_id: id.clone(),
                expected_receipts: 1,
                registered_at: Timestamp::from_unix_millis(1_000),
            }),
        },
        DeliveryEvent {
            event_id: "rep-1".into(),
            kind: DeliveryEventKind::Reported(StatusReport {
                account: AccountSid::parse("AC00000000000000000000000000000001").unwrap(),
                channel_message_id: id,
                status: DeliveryStatus::Read,
                raw_status: "read".into(),
                error_code: None,
                provider_time: Timestamp::from_unix_millis(2_000),
                source: StatusSource::WhatsappCloud,
            }),
        },
    ]
}

/// Envelopes produced in both encodings come back as the same events, in order, and a record
/// that is not an envelope is reported as poison rather than failing the consumer.
#[tokio::test]
async fn envelopes_round_trip_through_a_real_broker() {
    let kafka = receipts_testkit::kafka();
    let topic = receipts_testkit::unique("bus-roundtrip");
    ensure_topics(&kafka, &[TopicSpec::new(&topic, 1)])
        .await
        .unwrap();
    // Creating an existing topic is not an error.
    ensure_topics(&kafka, &[TopicSpec::new(&topic, 1)])
        .await
        .unwrap();

    let producer = kafka.producer("bus-test").unwrap();
    let mut sent = Vec::new();
    for encoding in [Encoding::Protobuf, Encoding::Json] {
        for event in events() {
            let payload = codec::encode(&v1::Envelope::from(&event), encoding);
            let key = event.receipt_key().to_string();
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&payload)
                .headers(content_type_headers(encoding));
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
            sent.push(event);
        }
    }
    let garbage = FutureRecord::to(&topic)
        .key("x")
        .payload(&[0xffu8, 0x01][..]);
    producer
        .send(garbage, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let consumer = kafka
        .consumer("bus-test", &receipts_testkit::unique("group"))
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut received = Vec::new();
    let mut poison = None;
    while received.len() + usize::from(poison.is_some()) < sent.len() + 1 {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("records arrive within a minute")
            .unwrap();
        let message = receipts_bus::Record::from(message.detach());
        match decode_delivery_event(&message) {
            Ok(event) => {
                assert_eq!(
                    message.key(),
                    Some(event.receipt_key().to_string().as_bytes())
                );
                received.push(event);
            }
            Err(reason) => poison = Some(reason),
        }
    }
    assert_eq!(received, sent);
    assert!(matches!(poison, Some(PoisonRecord::Codec(_))), "{poison:?}");
}
