//! Builders for input events and a harness that runs projectors in-process.

use std::path::Path;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use receipts_bus::record::content_type_headers;
use receipts_bus::topics::ensure_topics;
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryEvent, DeliveryEventKind,
    DeliveryStatus, MessageSid, ParticipantSid, ReceiptChange, Registration, StatusReport,
    StatusSource, Timestamp,
};
use receipts_projector::{BatchConfig, ProjectorConfig};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) const ACCOUNT: &str = "AC00000000000000000000000000000001";

pub(crate) struct Harness {
    pub(crate) kafka: KafkaSettings,
    pub(crate) topics: TopicNames,
    pub(crate) group: String,
    pub(crate) producer: FutureProducer,
}

impl Harness {
    pub(crate) async fn new(partitions: i32) -> Self {
        let kafka = receipts_testkit::kafka();
        let topics = receipts_testkit::unique_topics();
        ensure_topics(&kafka, &topics.specs(partitions))
            .await
            .unwrap();
        let producer = kafka.producer("projector-test").unwrap();
        Harness {
            group: receipts_testkit::unique("projector"),
            kafka,
            topics,
            producer,
        }
    }

    pub(crate) fn config(&self, data_dir: &Path) -> ProjectorConfig {
        let mut kafka = self.kafka.clone();
        // Quick group moves in tests: a stopped member is noticed within seconds.
        kafka
            .properties
            .insert("session.timeout.ms".into(), "6000".into());
        kafka
            .properties
            .insert("heartbeat.interval.ms".into(), "500".into());
        ProjectorConfig {
            kafka,
            topics: self.topics.clone(),
            group_id: self.group.clone(),
            data_dir: data_dir.to_owned(),
            batch: BatchConfig {
                max_records: 1_000,
                max_wait_ms: 20,
            },
            metrics_listen: String::new(),
            ..ProjectorConfig::default()
        }
    }

    /// Runs a projector in this process until the returned token is cancelled.
    pub(crate) fn spawn(&self, data_dir: &Path) -> (CancellationToken, JoinHandle<()>) {
        let shutdown = CancellationToken::new();
        let config = self.config(data_dir);
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            let metrics = receipts_runtime::metrics::Metrics::new();
            receipts_projector::run(config, &metrics, token)
                .await
                .expect("projector runs");
        });
        (shutdown, handle)
    }

    pub(crate) async fn produce(&self, events: &[DeliveryEvent], encoding: Encoding) {
        let mut acks = Vec::new();
        for event in events {
            let payload = codec::encode(&v1::Envelope::from(event), encoding);
            let key = event.channel_message_id().to_string();
            let record = FutureRecord::to(&self.topics.delivery_events)
                .key(&key)
                .payload(&payload)
                .headers(content_type_headers(encoding));
            acks.push(
                self.producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .unwrap(),
            );
        }
        for ack in acks {
            ack.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    }

    pub(crate) async fn produce_raw(&self, key: &str, payload: &[u8]) {
        let record = FutureRecord::to(&self.topics.delivery_events)
            .key(key)
            .payload(payload);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    pub(crate) fn reader(&self, topic: &str) -> StreamConsumer {
        let consumer = self
            .kafka
            .consumer("projector-test-reader", &receipts_testkit::unique("reader"))
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        consumer
    }
}

/// Reads `count` receipt updates, failing if they do not arrive within a minute.
pub(crate) async fn read_updates(
    reader: &StreamConsumer,
    count: usize,
) -> Vec<(String, ReceiptChange)> {
    let mut updates = Vec::with_capacity(count);
    while updates.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(60), reader.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} updates arrived", updates.len()))
            .unwrap();
        let wire: v1::ReceiptUpdated =
            codec::decode(message.payload().unwrap(), Encoding::Protobuf).unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        updates.push((key, ReceiptChange::try_from(&wire).unwrap()));
    }
    updates
}

/// Nothing more arrives within `quiet`.
pub(crate) async fn assert_no_more(reader: &StreamConsumer, quiet: Duration) {
    if let Ok(message) = tokio::time::timeout(quiet, reader.recv()).await {
        let message = message.unwrap();
        panic!("unexpected record at offset {}", message.offset());
    }
}

pub(crate) fn sid(prefix: &str, n: u64) -> String {
    format!("{prefix}{n:032x}")
}

pub(crate) fn registration(
    channel_message_id: &str,
    conversation: u64,
    message: u64,
    participant: u64,
    expected: u32,
) -> DeliveryEvent {
    DeliveryEvent {
        event_id: format!("reg-{channel_message_id}"),
        kind: DeliveryEventKind::Registered(Registration {
            account: AccountSid::parse(ACCOUNT).unwrap(),
            chat_service: None,
            conversation: ConversationSid::parse(&sid("CH", conversation)).unwrap(),
            message: MessageSid::parse(&sid("IM", message)).unwrap(),
            message_index: message,
            participant: ParticipantSid::parse(&sid("MB", participant)).unwrap(),
            channel: Channel::Whatsapp,
            channel_message_id: ChannelMessageId::parse(channel_message_id).unwrap(),
            expected_receipts: expected,
            registered_at: Timestamp::from_unix_millis(1_000),
        }),
    }
}

pub(crate) fn report(
    channel_message_id: &str,
    status: DeliveryStatus,
    at_millis: i64,
) -> DeliveryEvent {
    DeliveryEvent {
        event_id: format!("rep-{channel_message_id}-{status}-{at_millis}"),
        kind: DeliveryEventKind::Reported(StatusReport {
            channel_message_id: ChannelMessageId::parse(channel_message_id).unwrap(),
            status,
            raw_status: status.as_str().to_owned(),
            error_code: matches!(status, DeliveryStatus::Failed | DeliveryStatus::Undelivered)
                .then_some(63016),
            provider_time: Timestamp::from_unix_millis(at_millis),
            source: StatusSource::WhatsappCloud,
        }),
    }
}
