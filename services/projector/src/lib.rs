//! Stage 1 of receipts (DESIGN §2–4): consumes `delivery-events`, merges registrations and
//! status reports into receipts, stores them in sled and publishes every change on
//! `receipt-updates`.
//!
//! Exactly-once state: a batch's receipt updates are acknowledged by Kafka *before* the batch
//! is stored, and the batch is stored together with the next offset of every partition it read.
//! On assignment the consumer seeks to those stored offsets, not to the group's committed ones
//! (which are only committed for lag monitoring). A crash anywhere replays exactly the records
//! whose effects were not stored, and re-publishes identical updates that consumers ignore by
//! version.
//!
//! Layout: [`apply`] merges a batch without Kafka; [`run`] is the consume → apply → publish →
//! store loop; `context` seeks partitions to the stored offsets on assignment.

pub mod apply;
mod context;
mod metrics;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use receipts_bus::errors::{Backoff, is_fatal};
use receipts_bus::record::{ERROR_HEADER, ORIGIN_HEADER, content_type_headers};
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_domain::Timestamp;
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_runtime::config::{ConfigError, TelemetryConfig, Validate};
use receipts_runtime::metrics::Metrics;
use receipts_store::{ProjectorStore, SledProjectorStore, StoreError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::apply::{BatchOutcome, Record, apply_batch};
use crate::context::{ProjectorConsumer, SeekToStored};
use crate::metrics::ProjectorMetrics;

/// Everything the projector needs to run. Defaults suit a local broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectorConfig {
    pub kafka: KafkaSettings,
    pub topics: TopicNames,
    /// Consumer group shared by all projector instances.
    pub group_id: String,
    /// The sled database of this instance.
    pub data_dir: PathBuf,
    pub batch: BatchConfig,
    /// Parked reports older than this are reported (logged and counted), never dropped.
    pub parked_ttl_secs: u64,
    pub parked_check_secs: u64,
    /// Create missing topics at start with this many partitions (0: expect them to exist).
    pub create_topics_partitions: i32,
    /// Address of the metrics endpoint; empty disables it.
    pub metrics_listen: String,
    pub telemetry: TelemetryConfig,
}

/// How records are grouped: a batch closes at `max_records` or `max_wait_ms` after its first
/// record, whichever comes first.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchConfig {
    pub max_records: usize,
    pub max_wait_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: 5_000,
            max_wait_ms: 20,
        }
    }
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            kafka: KafkaSettings::default(),
            topics: TopicNames::default(),
            group_id: "receipts-projector".into(),
            data_dir: PathBuf::from("data/projector"),
            batch: BatchConfig::default(),
            parked_ttl_secs: 24 * 3600,
            parked_check_secs: 60,
            create_topics_partitions: 4,
            metrics_listen: "127.0.0.1:9464".into(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Validate for ProjectorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "kafka.bootstrap_servers",
                "must not be empty",
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::invalid("group_id", "must not be empty"));
        }
        if self.batch.max_records == 0 {
            return Err(ConfigError::invalid(
                "batch.max_records",
                "must be at least 1",
            ));
        }
        if self.parked_check_secs == 0 {
            return Err(ConfigError::invalid(
                "parked_check_secs",
                "must be at least 1",
            ));
        }
        self.telemetry.validate().map_err(|e| e.within("telemetry"))
    }
}

/// Why the projector stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("kafka setup: {0}")]
    Bus(#[from] receipts_bus::BusError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("publishing to {topic} failed: {source}")]
    Publish {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("a blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Timestamp::from_unix_millis(millis)
}

/// Runs the projector until `shutdown` is cancelled, then finishes and stores the current batch.
pub async fn run(
    config: ProjectorConfig,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    if config.create_topics_partitions > 0 {
        let specs = config.topics.specs(config.create_topics_partitions);
        receipts_bus::topics::ensure_topics(&config.kafka, &specs).await?;
    }
    let data_dir = config.data_dir.clone();
    let store: Arc<dyn ProjectorStore> =
        Arc::new(tokio::task::spawn_blocking(move || SledProjectorStore::open(&data_dir)).await??);
    Projector::new(config, store, metrics)?.run(shutdown).await
}

/// A running projector: its clients, its store and its metrics.
pub struct Projector {
    config: ProjectorConfig,
    store: Arc<dyn ProjectorStore>,
    consumer: ProjectorConsumer,
    producer: FutureProducer,
    metrics: ProjectorMetrics,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("group_id", &self.config.group_id)
            .finish_non_exhaustive()
    }
}

impl Projector {
    pub fn new(
        config: ProjectorConfig,
        store: Arc<dyn ProjectorStore>,
        metrics: &Metrics,
    ) -> Result<Self, ProjectorError> {
        let client_id = format!("{}-{}", config.group_id, std::process::id());
        let mut consumer_config = config.kafka.consumer_config(&client_id, &config.group_id);
        // A stored offset that fell off the log is lost data: fail loudly, never reset silently.
        // Partitions without a stored offset are assigned from the beginning explicitly.
        consumer_config.set("auto.offset.reset", "error");
        consumer_config.set("statistics.interval.ms", "5000");
        let metrics = ProjectorMetrics::register(metrics);
        let consumer: ProjectorConsumer =
            consumer_config.create_with_context(SeekToStored::new(
                store.clone(),
                config.topics.delivery_events.clone(),
                metrics.lag.clone(),
            ))?;
        consumer.subscribe(&[&config.topics.delivery_events])?;
        let producer = config.kafka.producer(&client_id)?;
        Ok(Projector {
            config,
            store,
            consumer,
            producer,
            metrics,
        })
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProjectorError> {
        info!(
            topic = %self.config.topics.delivery_events,
            group = %self.config.group_id,
            data_dir = %self.config.data_dir.display(),
            "projector started"
        );
        let parked_check = tokio::spawn(check_parked(
            self.store.clone(),
            self.metrics.clone(),
            Duration::from_secs(self.config.parked_ttl_secs),
            Duration::from_secs(self.config.parked_check_secs),
            shutdown.clone(),
        ));
        let result = self.consume(&shutdown).await;
        parked_check.abort();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush()).await??;
        info!("projector stopped");
        result
    }

    async fn consume(&self, shutdown: &CancellationToken) -> Result<(), ProjectorError> {
        let max_wait = Duration::from_millis(self.config.batch.max_wait_ms);
        let mut backoff = Backoff::default();
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                message = self.consumer.recv() => message,
            };
            let first = match first {
                Ok(message) => message.detach(),
                Err(error) if !is_fatal(&error) => {
                    let delay = backoff.next_delay();
                    warn!(%error, retry_in_ms = delay.as_millis() as u64, "consuming delivery events failed");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            backoff.reset();
            let started = Instant::now();
            let mut records = vec![first];
            let deadline = tokio::time::Instant::now() + max_wait;
            while records.len() < self.config.batch.max_records {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(Ok(message)) => records.push(message.detach()),
                    // The batch ends here; the error shows again on the next receive.
                    Ok(Err(error)) if !is_fatal(&error) => break,
                    Ok(Err(error)) => return Err(error.into()),
                    Err(_) => break,
                }
            }
            self.process(records).await?;
            self.metrics
                .batch_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Apply, publish (and await acknowledgements), then store: in that order.
    async fn process(&self, records: Vec<Record>) -> Result<(), ProjectorError> {
        let store = self.store.clone();
        let outcome =
            tokio::task::spawn_blocking(move || apply_batch(&*store, records, now())).await??;
        self.publish(&outcome).await?;
        self.metrics.record(&outcome.stats);
        let (store, BatchOutcome { store: batch, .. }) = (self.store.clone(), outcome);
        let offsets = batch.offsets.clone();
        tokio::task::spawn_blocking(move || store.commit(&batch)).await??;
        self.after_store(&offsets);
        Ok(())
    }

    async fn publish(&self, outcome: &BatchOutcome) -> Result<(), ProjectorError> {
        let topics = &self.config.topics;
        let mut pending = Vec::with_capacity(outcome.updates.len() + outcome.dead_letters.len());
        for change in &outcome.updates {
            let key = change.receipt.registration.conversation.as_str().to_owned();
            let payload = codec::encode(&v1::ReceiptUpdated::from(change), Encoding::Protobuf);
            pending.push((
                topics.receipt_updates.as_str(),
                key.into_bytes(),
                payload,
                content_type_headers(Encoding::Protobuf),
            ));
        }
        for dead in &outcome.dead_letters {
            let record = &dead.record;
            warn!(
                partition = record.partition(),
                offset = record.offset(),
                reason = %dead.reason,
                "delivery event dead-lettered"
            );
            let origin = format!(
                "{}/{}/{}",
                record.topic(),
                record.partition(),
                record.offset()
            );
            let mut headers = OwnedHeaders::new()
                .insert(Header {
                    key: ERROR_HEADER,
                    value: Some(dead.reason.as_str()),
                })
                .insert(Header {
                    key: ORIGIN_HEADER,
                    value: Some(origin.as_str()),
                });
            if let Some(original) = record.headers() {
                use rdkafka::message::Headers;
                for header in original.iter() {
                    headers = headers.insert(header);
                }
            }
            pending.push((
                topics.delivery_events_dlq.as_str(),
                record.key().unwrap_or_default().to_vec(),
                record.payload().unwrap_or_default().to_vec(),
                headers,
            ));
        }

        // Every record is enqueued, in order, before any acknowledgement is awaited, so a batch
        // travels together instead of one record per round trip. A full queue is waited out.
        let failed = |topic: &str, source| ProjectorError::Publish {
            topic: topic.to_owned(),
            source,
        };
        let mut acks = Vec::with_capacity(pending.len());
        for (topic, key, payload, headers) in &pending {
            let mut record = FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(headers.clone());
            let ack = loop {
                match self.producer.send_result(record) {
                    Ok(ack) => break ack,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((source, _)) => return Err(failed(topic, source)),
                }
            };
            acks.push((*topic, ack));
        }
        for (topic, ack) in acks {
            match ack.await {
                Ok(Ok(_)) => {}
                Ok(Err((source, _))) => return Err(failed(topic, source)),
                Err(_) => return Err(failed(topic, KafkaError::Canceled)),
            }
        }
        self.metrics
            .updates_published
            .inc_by(outcome.updates.len() as u64);
        Ok(())
    }

    /// Commits the stored offsets to the group: advisory, for lag monitoring by any Kafka tool
    /// and by the `projector_partition_lag` metric.
    fn after_store(&self, offsets: &[receipts_store::PartitionOffset]) {
        let mut list = TopicPartitionList::new();
        for offset in offsets {
            if let Err(error) = list.add_partition_offset(
                &offset.topic,
                offset.partition,
                Offset::Offset(offset.next_offset),
            ) {
                debug!(%error, "cannot list offset for commit");
            }
        }
        if list.count() > 0
            && let Err(error) = self.consumer.commit(&list, CommitMode::Async)
        {
            debug!(%error, "advisory offset commit failed");
        }
    }
}

/// Periodically reports parked reports older than the TTL. They stay stored and listable.
async fn check_parked(
    store: Arc<dyn ProjectorStore>,
    metrics: ProjectorMetrics,
    ttl: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let store = store.clone();
        let parked = match tokio::task::spawn_blocking(move || store.parked()).await {
            Ok(Ok(parked)) => parked,
            Ok(Err(error)) => {
                warn!(%error, "cannot list parked reports");
                continue;
            }
            Err(error) => {
                warn!(%error, "parked check failed");
                continue;
            }
        };
        let cutoff = now().unix_millis() - ttl.as_millis() as i64;
        let expired: Vec<_> = parked
            .iter()
            .filter(|p| p.parked_since.unix_millis() < cutoff)
            .collect();
        metrics.parked.set(parked.len() as i64);
        metrics.parked_expired.set(expired.len() as i64);
        if let Some(oldest) = expired.first() {
            warn!(
                expired = expired.len(),
                oldest = %oldest.channel_message_id,
                ttl_secs = ttl.as_secs(),
                "status reports are still waiting for their registration"
            );
        }
    }
}

/// Writes one line per parked report (parked since, channel message id, status, provider time)
/// of the projector database in `data_dir`.
pub fn print_parked(
    data_dir: &std::path::Path,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let store = SledProjectorStore::open(data_dir)
        .with_context(|| format!("opening projector database {}", data_dir.display()))?;
    let parked = store.parked()?;
    writeln!(out, "{} parked report(s)", parked.len())?;
    for entry in parked {
        let (status, at) = entry
            .report
            .map(|r| (r.status.as_str(), r.provider_time.unix_millis()))
            .unwrap_or(("-", 0));
        writeln!(
            out,
            "parked_since_ms={} channel_message_id={} status={} provider_time_ms={}",
            entry.parked_since.unix_millis(),
            entry.channel_message_id,
            status,
            at
        )?;
    }
    Ok(())
}
