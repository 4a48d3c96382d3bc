use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::Headers;
use receipts_domain::DeliveryStatus;
use receipts_proto::codec::Encoding;
use receipts_store::{ProjectorStore, SledProjectorStore};

use crate::support::{Harness, assert_no_more, key, read_updates, registration, report, sid};

/// Reports before their registration are parked and applied when it arrives; duplicates and
/// stale reports emit nothing; every change emits exactly one update with version + 1, keyed by
/// conversation; both encodings are accepted.
#[tokio::test]
async fn either_order_one_update_per_change() {
    let harness = Harness::new(2).await;
    let dir = tempfile::tempdir().unwrap();
    let (shutdown, running) = harness.spawn(dir.path());
    let reader = harness.reader(&harness.topics.receipt_updates);

    // wamid.a: read and delivered arrive before the registration (in the wrong order).
    // wamid.b: registered first, then sent, a duplicate sent, a stale queued, failed.
    harness
        .produce(
            &[
                report("wamid.a", DeliveryStatus::Read, 3_000),
                report("wamid.a", DeliveryStatus::Delivered, 2_000),
                registration("wamid.b", 7, 1, 2, 2),
                report("wamid.b", DeliveryStatus::Sent, 1_500),
            ],
            Encoding::Protobuf,
        )
        .await;
    harness
        .produce(
            &[
                report("wamid.b", DeliveryStatus::Sent, 1_500),
                report("wamid.b", DeliveryStatus::Queued, 1_200),
                registration("wamid.a", 7, 1, 1, 2),
                report("wamid.b", DeliveryStatus::Failed, 2_500),
            ],
            Encoding::Json,
        )
        .await;

    let updates = read_updates(&reader, 4).await;
    assert_no_more(&reader, Duration::from_secs(3)).await;
    for (key, _) in &updates {
        assert_eq!(key, &sid("CH", 7));
    }
    let of = |id: &str| -> Vec<_> {
        updates
            .iter()
            .filter(|(_, u)| u.receipt.registration.channel_message_id.as_str() == id)
            .map(|(_, u)| {
                (
                    u.previous_status,
                    u.receipt.status(),
                    u.receipt.version,
                    u.receipt.error_code(),
                )
            })
            .collect()
    };
    assert_eq!(of("wamid.a"), vec![(None, DeliveryStatus::Read, 1, None)]);
    assert_eq!(
        of("wamid.b"),
        vec![
            (None, DeliveryStatus::Queued, 1, None),
            (Some(DeliveryStatus::Queued), DeliveryStatus::Sent, 2, None),
            (
                Some(DeliveryStatus::Sent),
                DeliveryStatus::Failed,
                3,
                Some(63016)
            ),
        ]
    );

    shutdown.cancel();
    running.await.unwrap();
    let store = SledProjectorStore::open(dir.path()).unwrap();
    let a = store.state(&key("wamid.a")).unwrap().unwrap();
    assert_eq!(a.receipt().unwrap().status(), DeliveryStatus::Read);
    assert!(
        store.parked().unwrap().is_empty(),
        "the registration ended the wait"
    );
}

/// Undecodable bytes, unknown statuses and malformed sids go to the dead-letter topic with the
/// reason in a header, and the partition keeps moving.
#[tokio::test]
async fn poison_records_are_dead_lettered_and_skipped() {
    let harness = Harness::new(1).await;
    let dir = tempfile::tempdir().unwrap();
    let (shutdown, running) = harness.spawn(dir.path());
    let updates = harness.reader(&harness.topics.receipt_updates);
    let dead = harness.reader(&harness.topics.delivery_events_dlq);

    harness.produce_raw("garbage", &[0xff, 0xfe, 0x00]).await;
    let unknown_status = r#"{"eventId":"x1","occurredAt":"2026-01-01T00:00:00Z","statusReported":
        {"channelMessageId":"SM1","rawStatus":"teleported","providerTimestamp":"2026-01-01T00:00:00Z",
         "source":"STATUS_SOURCE_TWILIO_MESSAGING"}}"#;
    let bad_sid = r#"{"eventId":"x2","occurredAt":"2026-01-01T00:00:00Z","receiptRegistered":
        {"accountSid":"AC1","conversationSid":"CH1","messageSid":"IM1","participantSid":"MB1",
         "channel":"CHANNEL_SMS","channelMessageId":"SM1","expectedReceipts":1}}"#;
    for json in [unknown_status, bad_sid] {
        let record = rdkafka::producer::FutureRecord::to(&harness.topics.delivery_events)
            .key("SM1")
            .payload(json)
            .headers(receipts_bus::record::content_type_headers(Encoding::Json));
        harness
            .producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    harness
        .produce(&[registration("wamid.ok", 1, 1, 1, 1)], Encoding::Protobuf)
        .await;

    let mut reasons = Vec::new();
    while reasons.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(60), dead.recv())
            .await
            .unwrap()
            .unwrap();
        let headers = message.headers().unwrap();
        let reason = headers
            .iter()
            .find(|h| h.key == receipts_bus::record::ERROR_HEADER)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .expect("dead letters carry their reason");
        let origin = headers
            .iter()
            .find(|h| h.key == receipts_bus::record::ORIGIN_HEADER);
        assert!(origin.is_some(), "dead letters say where they came from");
        reasons.push(reason);
    }
    assert!(reasons[0].contains("protobuf"), "{reasons:?}");
    assert!(reasons[1].contains("teleported"), "{reasons:?}");
    assert!(reasons[2].contains("account_sid"), "{reasons:?}");
    // The good record behind the poison ones is applied.
    let applied = read_updates(&updates, 1).await;
    assert_eq!(
        applied[0]
            .1
            .receipt
            .registration
            .channel_message_id
            .as_str(),
        "wamid.ok"
    );

    shutdown.cancel();
    running.await.unwrap();
}

/// A restarted projector resumes from its stored offsets: nothing is re-applied, and new
/// reports continue the version sequence.
#[tokio::test]
async fn restart_resumes_from_stored_offsets() {
    let harness = Harness::new(1).await;
    let dir = tempfile::tempdir().unwrap();
    let reader = harness.reader(&harness.topics.receipt_updates);

    let (shutdown, running) = harness.spawn(dir.path());
    harness
        .produce(
            &[
                registration("wamid.r", 1, 1, 1, 1),
                report("wamid.r", DeliveryStatus::Sent, 2_000),
            ],
            Encoding::Protobuf,
        )
        .await;
    assert_eq!(read_updates(&reader, 2).await.len(), 2);
    shutdown.cancel();
    running.await.unwrap();

    let (shutdown, running) = harness.spawn(dir.path());
    harness
        .produce(
            &[report("wamid.r", DeliveryStatus::Delivered, 3_000)],
            Encoding::Protobuf,
        )
        .await;
    let next = read_updates(&reader, 1).await;
    assert_eq!(next[0].1.receipt.version, 3);
    assert_eq!(next[0].1.previous_status, Some(DeliveryStatus::Sent));
    assert_no_more(&reader, Duration::from_secs(3)).await;
    shutdown.cancel();
    running.await.unwrap();
}

/// A report whose registration never comes stays parked: it is counted, reported once it is
/// older than the TTL, and listed by `receipts-projector parked`; nothing is published for it.
#[tokio::test]
async fn parked_reports_past_their_ttl_are_reported_and_listed() {
    let harness = Harness::new(1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = harness.config(dir.path());
    config.parked_ttl_secs = 0;
    config.parked_check_secs = 1;
    let metrics = receipts_runtime::metrics::Metrics::new();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        async move { receipts_projector::run(config, &metrics, shutdown).await }
    });
    let updates = harness.reader(&harness.topics.receipt_updates);

    harness
        .produce(
            &[
                report("wamid.orphan", DeliveryStatus::Delivered, 5_000),
                report("wamid.orphan", DeliveryStatus::Sent, 4_000),
            ],
            Encoding::Protobuf,
        )
        .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !metrics
        .render()
        .contains("receipts_projector_parked_expired 1")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed the expired report:\n{}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        metrics.render().contains("receipts_projector_parked 1"),
        "{}",
        metrics.render()
    );
    assert_no_more(&updates, Duration::from_secs(1)).await;
    shutdown.cancel();
    running.await.unwrap().unwrap();

    let mut listing = Vec::new();
    receipts_projector::print_parked(dir.path(), &Default::default(), &mut listing).unwrap();
    let listing = String::from_utf8(listing).unwrap();
    assert!(listing.starts_with("1 parked report(s)"), "{listing}");
    assert!(
        listing.contains("channel_message_id=wamid.orphan status=delivered provider_time_ms=5000"),
        "{listing}"
    );
}

/// A projector started before its topic exists waits for it instead of stopping, and applies
/// what arrives once the topic is there.
#[tokio::test]
async fn a_missing_topic_is_waited_for() {
    let mut harness = Harness::new(1).await;
    // Point the projector at topics nobody has created yet.
    harness.topics = receipts_testkit::unique_topics();
    let dir = tempfile::tempdir().unwrap();
    let mut config = harness.config(dir.path());
    config.create_topics_partitions = 0;
    let metrics = receipts_runtime::metrics::Metrics::new();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { receipts_projector::run(config, &metrics, shutdown).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !running.is_finished(),
        "the projector must not stop over a missing topic"
    );

    receipts_bus::topics::ensure_topics(&harness.kafka, &harness.topics.specs(1))
        .await
        .unwrap();
    let updates = harness.reader(&harness.topics.receipt_updates);
    harness
        .produce(
            &[registration("wamid.late", 1, 1, 1, 1)],
            Encoding::Protobuf,
        )
        .await;
    let applied = read_updates(&updates, 1).await;
    assert_eq!(
        applied[0]
            .1
            .receipt
            .registration
            .channel_message_id
            .as_str(),
        "wamid.late"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
}
