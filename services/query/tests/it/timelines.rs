//! Timelines end to end: the real projector in front of the query service, reports produced on
//! `delivery-events`, timelines read over gRPC.
//!
//! Reports that arrive out of provider order in one batch give the same timeline as reports in
//! provider order: every status with its provider time. A report that only adds to the history
//! reaches the timeline without a `ReceiptUpdated` on `receipt-updates`. A replica serves only
//! once its timelines caught up with the changelog.

use std::path::Path;

use rdkafka::producer::FutureRecord;
use receipts_bus::record::content_type_headers;
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryEvent, DeliveryEventKind,
    DeliveryStatus, MessageSid, ParticipantSid, ReceiptSid, Registration, StatusReport,
    StatusSource, Timestamp,
};
use receipts_projector::{BatchConfig, ProjectorConfig};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{ACCOUNT, Client, Harness, TOKEN, client, eventually, sid};

const CONVERSATION: u64 = 7;
const MESSAGE: u64 = 70;

/// The projector, run in this process on the harness's topics until stopped.
struct Projector {
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl Projector {
    fn start(harness: &Harness, data_dir: &Path) -> Self {
        let config = ProjectorConfig {
            kafka: harness.kafka.clone(),
            topics: harness.topics.clone(),
            group_id: receipts_testkit::unique("timelines-projector"),
            data_dir: data_dir.to_owned(),
            batch: BatchConfig {
                max_records: 1_000,
                max_wait_ms: 50,
            },
            create_topics_partitions: 0,
            metrics_listen: String::new(),
            ..ProjectorConfig::default()
        };
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            let metrics = receipts_runtime::metrics::Metrics::new();
            receipts_projector::run(config, &metrics, token)
                .await
                .expect("projector runs");
        });
        Projector { shutdown, handle }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap();
    }
}

fn registration(channel_message_id: &str, participant: u64) -> DeliveryEvent {
    DeliveryEvent {
        event_id: format!("reg-{channel_message_id}"),
        kind: DeliveryEventKind::Registered(Registration {
            account: AccountSid::parse(ACCOUNT).unwrap(),
            chat_service: None,
            conversation: ConversationSid::parse(&sid("CH", CONVERSATION)).unwrap(),
            message: MessageSid::parse(&sid("IM", MESSAGE)).unwrap(),
            message_index: MESSAGE,
            participant: ParticipantSid::parse(&sid("MB", participant)).unwrap(),
            channel: Channel::Whatsapp,
            channel_message_id: ChannelMessageId::parse(channel_message_id).unwrap(),
            expected_receipts: 3,
            registered_at: Timestamp::from_unix_millis(500),
        }),
    }
}

/// A WhatsApp report `seconds` after the epoch.
fn report(channel_message_id: &str, status: DeliveryStatus, seconds: i64) -> DeliveryEvent {
    DeliveryEvent {
        event_id: format!("rep-{channel_message_id}-{status}"),
        kind: DeliveryEventKind::Reported(StatusReport {
            account: AccountSid::parse(ACCOUNT).unwrap(),
            channel_message_id: ChannelMessageId::parse(channel_message_id).unwrap(),
            status,
            raw_status: status.as_str().to_owned(),
            error_code: None,
            provider_time: Timestamp::from_unix_millis(seconds * 1000),
            source: StatusSource::WhatsappCloud,
        }),
    }
}

/// Produces `events` on `delivery-events` together, awaiting every acknowledgement.
async fn produce(harness: &Harness, events: &[DeliveryEvent]) {
    let producer = harness.kafka.producer("timelines-test").unwrap();
    let mut acks = Vec::new();
    for event in events {
        let payload = codec::encode(&v1::Envelope::from(event), Encoding::Protobuf);
        let key = event.receipt_key().to_string();
        let record = FutureRecord::to(&harness.topics.delivery_events)
            .key(&key)
            .payload(&payload)
            .headers(content_type_headers(Encoding::Protobuf));
        acks.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for ack in acks {
        ack.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

fn receipt_sid(channel_message_id: &str) -> ReceiptSid {
    ReceiptSid::for_channel_message(
        &AccountSid::parse(ACCOUNT).unwrap(),
        &ChannelMessageId::parse(channel_message_id).unwrap(),
    )
}

/// (status, raw status, provider time in seconds, version) of every entry.
type Step = (v1::DeliveryStatus, String, Option<i64>, u64);

/// The timeline of a receipt once it has `entries` entries.
async fn timeline(client: &Client, channel_message_id: &str, entries: usize) -> Vec<Step> {
    let request = v1::GetReceiptTimelineRequest {
        conversation_sid: sid("CH", CONVERSATION),
        message_sid: sid("IM", MESSAGE),
        receipt_sid: receipt_sid(channel_message_id).to_string(),
    };
    let what = format!("{entries} timeline entries of {channel_message_id}");
    let timeline = eventually(&what, || {
        let mut client = client.clone();
        let request = request.clone();
        async move {
            let timeline = client
                .get_receipt_timeline(request)
                .await
                .ok()?
                .into_inner();
            (timeline.entries.len() >= entries).then_some(timeline)
        }
    })
    .await;
    timeline
        .entries
        .iter()
        .map(|e| {
            let at = e.provider_timestamp.as_ref().map(|t| t.seconds);
            (e.status(), e.raw_status.clone(), at, e.version)
        })
        .collect()
}

fn expected(statuses: &[(v1::DeliveryStatus, &str, i64)]) -> Vec<Step> {
    statuses
        .iter()
        .map(|(status, raw, at)| (*status, (*raw).to_owned(), Some(*at), 0))
        .collect()
}

/// Every version of receipt `sid` published on `receipt-updates` so far, in log order.
async fn published_versions(harness: &Harness, sid: &ReceiptSid) -> Vec<u64> {
    let (kafka, topic, sid) = (
        harness.kafka.clone(),
        harness.topics.receipt_updates.clone(),
        sid.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let mut versions = Vec::new();
        let ends = receipts_bus::changelog::partition_ends(&kafka, &topic).unwrap();
        for partition in ends.into_keys() {
            receipts_bus::changelog::restore_partition(
                &kafka,
                &topic,
                partition,
                None,
                |records, _| {
                    for record in records {
                        let update: v1::ReceiptUpdated =
                            receipts_bus::record::decode(record).unwrap();
                        let receipt = update.receipt.unwrap();
                        if receipt.sid == sid {
                            versions.push(receipt.version);
                        }
                    }
                    Ok::<_, std::io::Error>(())
                },
            )
            .unwrap();
        }
        versions
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timelines_show_every_reported_status_at_its_provider_time_whatever_the_arrival_order() {
    use v1::DeliveryStatus::{Delivered, Queued, Read, Sent};
    let harness = Harness::new().await;
    let (projector_dir, query_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let projector = Projector::start(&harness, projector_dir.path());
    let query = harness.start(query_dir.path()).await;
    let client = client(query.address, ACCOUNT, TOKEN).await;

    let (out_of_order, in_order, late) = ("wamid.out-of-order", "wamid.in-order", "wamid.late");
    // Registered first; then, in one batch, delivered (t=3 s), sent (t=1 s) and read (t=5 s).
    produce(&harness, &[registration(out_of_order, 1)]).await;
    produce(
        &harness,
        &[
            report(out_of_order, DeliveryStatus::Delivered, 3),
            report(out_of_order, DeliveryStatus::Sent, 1),
            report(out_of_order, DeliveryStatus::Read, 5),
        ],
    )
    .await;
    // The same reports in provider order.
    produce(
        &harness,
        &[
            registration(in_order, 2),
            report(in_order, DeliveryStatus::Sent, 1),
            report(in_order, DeliveryStatus::Delivered, 3),
            report(in_order, DeliveryStatus::Read, 5),
        ],
    )
    .await;
    let every_status = expected(&[
        (Queued, "", 0),
        (Sent, "sent", 1),
        (Delivered, "delivered", 3),
        (Read, "read", 5),
    ]);
    assert_eq!(timeline(&client, out_of_order, 4).await, every_status);
    assert_eq!(timeline(&client, in_order, 4).await, every_status);

    // Delivered and read first; the `sent` report turns up after everything else.
    produce(
        &harness,
        &[
            registration(late, 3),
            report(late, DeliveryStatus::Delivered, 3),
            report(late, DeliveryStatus::Read, 5),
        ],
    )
    .await;
    assert_eq!(
        timeline(&client, late, 3).await,
        expected(&[
            (Queued, "", 0),
            (Delivered, "delivered", 3),
            (Read, "read", 5)
        ])
    );
    produce(&harness, &[report(late, DeliveryStatus::Sent, 1)]).await;
    assert_eq!(timeline(&client, late, 4).await, every_status);
    // The projector publishes a batch's updates before its changelog, so by now any update
    // the late report caused would be on the topic: there is none.
    assert_eq!(
        published_versions(&harness, &receipt_sid(late)).await,
        [1, 2, 3],
        "registered, delivered, read: the late sent changed no current status"
    );

    // The read model still shows the current status, untouched by the late report.
    let mut reader = client.clone();
    let receipt = reader
        .get_receipt(v1::GetReceiptRequest {
            conversation_sid: sid("CH", CONVERSATION),
            message_sid: sid("IM", MESSAGE),
            receipt_sid: receipt_sid(late).to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((receipt.status(), receipt.version), (Read, 3));

    query.stop().await;
    projector.stop().await;
}

/// Writes every state to the projector changelog at once, keyed like the projector's.
async fn write_states(harness: &Harness, states: &[receipts_domain::ReceiptState]) {
    let producer = harness.kafka.producer("timelines-changelog").unwrap();
    let mut acks = Vec::new();
    for state in states {
        let registration = state.registration.as_ref().unwrap();
        let key = receipts_domain::ReceiptKey::new(
            registration.account.clone(),
            registration.channel_message_id.clone(),
        )
        .to_string();
        let payload = prost::Message::encode_to_vec(&v1::StoredReceiptState::from(state));
        let record = FutureRecord::to(&harness.topics.projector_changelog)
            .key(&key)
            .payload(&payload);
        acks.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for ack in acks {
        ack.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// A replica says it is serving only once its timelines caught up with the changelog as it was
/// at start: at the first SERVING, every receipt's timeline is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_only_once_its_timelines_caught_up_with_the_changelog() {
    use tonic_health::pb::health_check_response::ServingStatus;
    const RECEIPTS: u64 = 2_000;
    let harness = Harness::new().await;
    let mut projection = crate::support::Projection::default();
    let ids: Vec<String> = (0..RECEIPTS).map(|n| format!("SM{n:032x}")).collect();
    for (n, id) in (0..).zip(&ids) {
        projection.register(ACCOUNT, id, CONVERSATION, MESSAGE, n, RECEIPTS as u32);
        projection.report(id, DeliveryStatus::Delivered, 3_000, None);
        projection.report(id, DeliveryStatus::Sent, 1_000, None);
    }
    let states: Vec<_> = projection.states.values().cloned().collect();
    write_states(&harness, &states).await;

    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    eventually("the replica to serve", || {
        let mut health = health.clone();
        async move {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "receipts.v1.DeliveryQuery".into(),
                })
                .await
                .ok()?
                .into_inner();
            (status.status() == ServingStatus::Serving).then_some(())
        }
    })
    .await;

    let mut client = client(running.address, ACCOUNT, TOKEN).await;
    let mut missing = Vec::new();
    for id in &ids {
        let reply = client
            .get_receipt_timeline(v1::GetReceiptTimelineRequest {
                conversation_sid: sid("CH", CONVERSATION),
                message_sid: sid("IM", MESSAGE),
                receipt_sid: receipt_sid(id).to_string(),
            })
            .await;
        match reply {
            Ok(timeline) if timeline.get_ref().entries.len() == 3 => {}
            _ => missing.push(id.clone()),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {RECEIPTS} timelines were not there when the replica said it served",
        missing.len()
    );
    running.stop().await;
}
