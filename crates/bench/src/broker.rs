//! The broker a stage runs on, and topics of its own: an embedded mock cluster started for the
//! stage (its handle cannot leave its thread, so it lives on one), or a real broker where the
//! stage's topics are created under a unique prefix and deleted afterwards.

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use receipts_bus::embedded::EmbeddedBroker;
use receipts_bus::{KafkaSettings, TopicNames};

use super::{BenchArgs, StageReport, per_sec};

/// A broker with a fresh set of topics; dropping it stops the embedded broker.
pub struct StageBroker {
    pub kafka: KafkaSettings,
    pub topics: TopicNames,
    embedded: Option<EmbeddedBroker>,
}

impl std::fmt::Debug for StageBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageBroker")
            .field("bootstrap", &self.kafka.bootstrap_servers)
            .field("embedded", &self.embedded.is_some())
            .finish()
    }
}

impl StageBroker {
    /// Starts the embedded broker (no `--kafka`) or creates fresh topics on `--kafka`; every
    /// client of the stage gets the `--kafka-property` settings.
    pub async fn start(args: &BenchArgs, stage: &str, partitions: i32) -> anyhow::Result<Self> {
        let prefix = format!("bench-{stage}-{:08x}", rand::random::<u32>());
        let topics = TopicNames::with_prefix(&prefix);
        let mut broker = match args.kafka.as_deref() {
            Some(servers) => {
                let kafka = KafkaSettings::new(servers);
                receipts_bus::topics::ensure_topics(&kafka, &topics.specs(partitions))
                    .await
                    .with_context(|| format!("creating the bench topics on {servers}"))?;
                StageBroker {
                    kafka,
                    topics,
                    embedded: None,
                }
            }
            None => {
                let specs = topics.specs(partitions);
                let embedded =
                    tokio::task::spawn_blocking(move || EmbeddedBroker::start(specs)).await??;
                StageBroker {
                    kafka: KafkaSettings::new(embedded.bootstrap()),
                    topics,
                    embedded: Some(embedded),
                }
            }
        };
        for (key, value) in &args.kafka_property {
            broker.kafka.properties.insert(key.clone(), value.clone());
        }
        Ok(broker)
    }

    /// Deletes the stage's topics from a real broker (the embedded one simply stops).
    pub async fn finish(self) {
        if self.embedded.is_some() {
            return;
        }
        let names = [
            &self.topics.delivery_events,
            &self.topics.receipt_updates,
            &self.topics.webhook_configs,
            &self.topics.webhook_retries,
            &self.topics.webhook_dlq,
            &self.topics.delivery_events_dlq,
        ];
        let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let admin: Result<AdminClient<DefaultClientContext>, _> =
            self.kafka.client_config("receipts-bench-admin").create();
        if let Ok(admin) = admin {
            let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            // Leftover topics only cost disk space on a development broker.
            let _ = admin.delete_topics(&names, &options).await;
        }
    }

    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }
}

/// Produces `records` (key, payload) to `topic` with the services' producer settings, as fast as
/// the producer takes them, and waits until every one is acknowledged. Returns how long that took.
pub async fn produce_all(
    kafka: &KafkaSettings,
    topic: &str,
    records: Vec<(Vec<u8>, Vec<u8>)>,
) -> anyhow::Result<Duration> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    let mut config = kafka.producer_config("receipts-bench-producer");
    config.set("queue.buffering.max.messages", "1000000");
    config.set("queue.buffering.max.kbytes", "1048576");
    let topic = topic.to_owned();
    let elapsed = tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
        let producer: ThreadedProducer<DefaultProducerContext> = config.create()?;
        let headers =
            receipts_bus::record::content_type_headers(receipts_proto::codec::Encoding::Protobuf);
        let started = std::time::Instant::now();
        for (key, payload) in &records {
            let mut record = BaseRecord::to(&topic)
                .key(key)
                .payload(payload)
                .headers(headers.clone());
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((error, _)) => return Err(error.into()),
                }
            }
        }
        producer.flush(Duration::from_secs(120))?;
        if producer.in_flight_count() > 0 {
            anyhow::bail!(
                "{} records were not acknowledged",
                producer.in_flight_count()
            );
        }
        Ok(started.elapsed())
    })
    .await??;
    Ok(elapsed)
}

/// The high watermark (end offset) of every partition of `topic`.
pub async fn end_offsets(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<Vec<(i32, i64)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let config = kafka.consumer_config("receipts-bench-watermarks", "receipts-bench-watermarks");
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(i32, i64)>> {
        let consumer: BaseConsumer = config.create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(30))?;
        let mut ends = Vec::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                let (_, high) =
                    consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(30))?;
                ends.push((p.id(), high));
            }
        }
        anyhow::ensure!(!ends.is_empty(), "topic {topic} has no partitions");
        Ok(ends)
    })
    .await?
}

/// Produces a stage's whole input backlog to `topic` before anything consumes it, reports its
/// mean record size and produce rate, and returns the record count and the end offsets that
/// mark "everything read".
pub async fn produce_backlog(
    report: &mut StageReport,
    kafka: &KafkaSettings,
    topic: &str,
    records: Vec<(Vec<u8>, Vec<u8>)>,
    unit: &str,
) -> anyhow::Result<(u64, Vec<(i32, i64)>)> {
    let total = records.len() as u64;
    let bytes: usize = records.iter().map(|(k, p)| k.len() + p.len()).sum();
    report.metric(
        "mean record size (key + payload)",
        bytes as f64 / total.max(1) as f64,
        "bytes",
    );
    let produced_in = produce_all(kafka, topic, records).await?;
    report.metric("produced up front", per_sec(total, produced_in), unit);
    let ends = end_offsets(kafka, topic).await?;
    anyhow::ensure!(
        ends.iter().map(|(_, e)| *e as u64).sum::<u64>() == total,
        "the topic does not hold exactly the {total} records produced"
    );
    Ok((total, ends))
}
