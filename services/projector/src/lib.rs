//! Stage 1 of receipts (DESIGN §2–4a): consumes `delivery-events`, merges registrations and
//! status reports into receipts, stores them in sled and publishes every change on
//! `receipt-updates`.
//!
//! Kafka is the source of truth and sled a cache of it. Per batch, in this order: apply; publish
//! the receipt updates, dead letters and the changed states (to the compacted changelog, input
//! partition `p` to changelog partition `p`) and await every acknowledgement; store states,
//! offsets and changelog positions in one atomic sled write; commit the group offsets. Two
//! batches overlap: the next is applied, on top of this one's unstored states, while this one's
//! acknowledgements and write are on their way, and it is stored only after this one. A crash
//! anywhere replays records whose effects were not committed, onto state that already holds
//! them: the merge is idempotent, so the replay re-publishes identical updates (same sid, same
//! version) that consumers ignore by version. An instance assigned a partition restores its
//! state from the changelog first, from where its own copy ends, so scaling out, a new disk or an
//! old node rejoining all continue with the state and versions of one never-stopped instance.
//!
//! Layout: [`apply`] merges a batch without Kafka; [`cloudevents`] names the CloudEvents headers
//! of each published update; [`run`] runs the handler below on the consume
//! engine of `receipts-bus`, `pipeline` overlaps one batch's acknowledgements and store with
//! the next batch's apply; restore reads the changelog into sled.

pub mod apply;
pub mod cloudevents;
mod metrics;
mod pipeline;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use receipts_bus::changelog::{RestoreError, restore_partition};
use receipts_bus::consume::{BoxError, ConsumeError, Settling};
use receipts_bus::{
    Commit, Consumer, ConsumerOptions, Handler, KafkaSettings, Partition, PublishError, Publisher,
    Record, TopicNames, Transient,
};
use receipts_domain::{ReceiptKey, ReceiptState, Timestamp};
use receipts_runtime::clock::{self, SharedClock};
use receipts_runtime::config::{ConfigError, TelemetryConfig, Validate};
use receipts_runtime::metrics::Metrics;
use receipts_store::{PartitionOffset, ProjectorStore, StoreError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
    /// How the database is opened (`storage.cache_mb`: the engine's cache;
    /// `storage.write_buffer_mb`: fjall's memtables; `storage.engine`: `sled`, the default, or
    /// `fjall`).
    pub storage: receipts_store::StorageConfig,
    pub batch: BatchConfig,
    /// Parked reports older than this are reported (logged and counted), never dropped.
    pub parked_ttl_secs: u64,
    pub parked_check_secs: u64,
    /// Create missing topics at start with this many partitions (0: expect them to exist).
    pub create_topics_partitions: i32,
    /// Not ready once the broker has been unreachable (or batches failed) for this long.
    pub stale_after_secs: u64,
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
            storage: receipts_store::StorageConfig::default(),
            batch: BatchConfig::default(),
            parked_ttl_secs: 24 * 3600,
            parked_check_secs: 60,
            create_topics_partitions: 4,
            stale_after_secs: 30,
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
        self.storage
            .check()
            .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
        self.telemetry.validate().map_err(|e| e.within("telemetry"))
    }
}

/// Why the projector stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("kafka setup")]
    Bus(#[from] receipts_bus::BusError),
    #[error("store")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("restoring partition state")]
    Restore(#[from] RestoreError<StoreError>),
    #[error(transparent)]
    Consume(#[from] Box<ConsumeError<ProjectorError>>),
    #[error("a blocking task failed")]
    Join(#[from] tokio::task::JoinError),
    /// The batch before was not stored, so this one, applied on top of it, is not either.
    #[error("the batch before was not stored")]
    EarlierBatchNotStored,
}

impl Transient for ProjectorError {
    fn is_transient(&self) -> bool {
        match self {
            ProjectorError::Publish(e) => e.is_transient(),
            ProjectorError::Restore(e) => e.is_transient(),
            ProjectorError::Bus(e) => e.is_transient(),
            ProjectorError::EarlierBatchNotStored => true,
            _ => false,
        }
    }
}

/// Runs the projector until `shutdown` is cancelled, then finishes and stores the current batch.
pub async fn run(
    config: ProjectorConfig,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    let (data_dir, storage) = (config.data_dir.clone(), config.storage);
    let store: Arc<dyn ProjectorStore> = tokio::task::spawn_blocking(move || {
        receipts_store::open_projector_store(&data_dir, &storage)
    })
    .await??;
    run_with_store(config, store, clock::system(), metrics, shutdown).await
}

/// [`run`] on a store the caller opened (a bench watches it while the projector runs), reading
/// the time reports are parked at and parked reports expire by from `clock`.
pub async fn run_with_store(
    config: ProjectorConfig,
    store: Arc<dyn ProjectorStore>,
    clock: SharedClock,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    let component = metrics.readiness().component("projector");
    if config.create_topics_partitions > 0 {
        let specs = config.topics.specs(config.create_topics_partitions);
        receipts_bus::topics::ensure_topics(&config.kafka, &specs).await?;
    }
    let client_id = receipts_bus::settings::client_id(&config.group_id);
    let stored = {
        let store = store.clone();
        move |partition: &Partition| -> Result<Option<i64>, BoxError> {
            Ok(store.next_offset(&partition.topic, partition.partition)?)
        }
    };
    let options = ConsumerOptions::group(
        "projector",
        &client_id,
        &config.group_id,
        &[&config.topics.delivery_events],
    )
    .batch(
        config.batch.max_records,
        Duration::from_millis(config.batch.max_wait_ms),
    )
    .stale_after(Duration::from_secs(config.stale_after_secs));
    let consumer = Consumer::new(&config.kafka, options, Arc::new(stored), component)?;
    let metrics = ProjectorMetrics::register(metrics);
    let mut projector = Projector {
        publisher: Publisher::new(&config.kafka, &client_id)?,
        config,
        store,
        metrics,
        clock,
        unstored: Arc::default(),
        before: None,
        next_batch: 0,
    };
    info!(
        topic = %projector.config.topics.delivery_events,
        changelog = %projector.config.topics.projector_changelog,
        group = %projector.config.group_id,
        data_dir = %projector.config.data_dir.display(),
        "projector started"
    );
    let parked_check = tokio::spawn(check_parked(
        projector.store.clone(),
        projector.clock.clone(),
        projector.metrics.clone(),
        Duration::from_secs(projector.config.parked_ttl_secs),
        Duration::from_secs(projector.config.parked_check_secs),
        shutdown.clone(),
    ));
    let result = consumer.run(&mut projector, &shutdown).await;
    parked_check.abort();
    drop(consumer);
    let store = projector.store.clone();
    tokio::task::spawn_blocking(move || store.flush()).await??;
    info!("projector stopped");
    result.map_err(|e| ProjectorError::Consume(Box::new(e)))
}

/// The projector's handler on the consume engine: its publisher, its store and its metrics.
pub struct Projector {
    config: ProjectorConfig,
    store: Arc<dyn ProjectorStore>,
    publisher: Publisher,
    metrics: ProjectorMetrics,
    /// The time reports are parked at, and parked reports expire by.
    clock: SharedClock,
    /// States of batches applied but not stored yet (see `pipeline`).
    unstored: Arc<pipeline::Unstored>,
    /// Whether the last batch handed over was stored, once known.
    before: Option<pipeline::Stored>,
    next_batch: u64,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("group_id", &self.config.group_id)
            .finish_non_exhaustive()
    }
}

impl Handler for Projector {
    type Error = ProjectorError;

    async fn assigned(&mut self, partitions: &[Partition]) -> Result<(), ProjectorError> {
        // The input exists now (it may not have at start): so must its changelog.
        receipts_bus::topics::ensure_changelog(
            &self.config.kafka,
            &self.config.topics.delivery_events,
            &self.config.topics.projector_changelog,
        )
        .await?;
        for partition in partitions {
            self.restore(partition.partition).await?;
        }
        Ok(())
    }

    /// Apply, publish (and await acknowledgements), then store: in that order.
    async fn process(&mut self, records: Arc<[Record]>) -> Result<Commit, ProjectorError> {
        self.pipeline_batch(records).await?.wait().await
    }

    /// [`Handler::process`], returning once the updates are handed to the producer.
    async fn pipeline(
        &mut self,
        records: Arc<[Record]>,
    ) -> Result<Settling<ProjectorError>, ProjectorError> {
        self.pipeline_batch(records).await
    }

    fn unsettled_dropped(&mut self) {
        self.unstored.clear();
        self.before = None;
    }
}

impl Projector {
    /// Brings the local copy of `partition`'s state up to the end of its changelog partition.
    async fn restore(&self, partition: i32) -> Result<(), ProjectorError> {
        let topic = self.config.topics.projector_changelog.clone();
        let (store, kafka) = (self.store.clone(), self.config.kafka.clone());
        let from = store.next_offset(&topic, partition)?;
        let restored = tokio::task::spawn_blocking(move || {
            restore_partition(&kafka, &topic, partition, from, |records, next| {
                let states = changelog_states(records)?;
                let position = PartitionOffset {
                    topic: topic.clone(),
                    partition,
                    next_offset: next,
                };
                store.restore(&states, &position)
            })
        })
        .await??;
        if restored.records > 0 {
            info!(
                partition,
                records = restored.records,
                "projector state restored from the changelog"
            );
        }
        Ok(())
    }
}

/// Decodes changelog records into states, with the time each was written.
fn changelog_states(
    records: &[Record],
) -> Result<Vec<(ReceiptKey, ReceiptState, Timestamp)>, StoreError> {
    let mut states = Vec::with_capacity(records.len());
    for record in records {
        let origin = record.origin();
        let corrupt =
            |source: receipts_store::CorruptValue| StoreError::corrupt(origin.as_bytes(), source);
        let key = record
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .ok_or_else(|| corrupt("the key is not a receipt key".into()))?;
        let id = ReceiptKey::parse(key).map_err(|e| corrupt(e.into()))?;
        if record.payload().is_none() {
            continue;
        }
        let state =
            receipts_bus::record::decode_receipt_state(record).map_err(|e| corrupt(e.into()))?;
        let written = Timestamp::from_unix_millis(record.timestamp_millis().unwrap_or(0));
        states.push((id, state, written));
    }
    Ok(states)
}

/// Periodically reports parked reports older than the TTL. They stay stored and listable.
async fn check_parked(
    store: Arc<dyn ProjectorStore>,
    clock: SharedClock,
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
        let cutoff = clock.now().unix_millis() - ttl.as_millis() as i64;
        let expired: Vec<_> = parked
            .iter()
            .filter(|p| p.parked_since.unix_millis() < cutoff)
            .collect();
        metrics.parked.set(parked.len() as i64);
        metrics.parked_expired.set(expired.len() as i64);
        if let Some(oldest) = expired.first() {
            warn!(
                expired = expired.len(),
                oldest = %oldest.key,
                ttl_secs = ttl.as_secs(),
                "status reports are still waiting for their registration"
            );
        }
    }
}

/// Writes one line per parked report (parked since, account, channel message id, status,
/// provider time)
/// of the projector database in `data_dir`, on the engine `storage` names.
pub fn print_parked(
    data_dir: &std::path::Path,
    storage: &receipts_store::StorageConfig,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let store = receipts_store::open_projector_store(data_dir, storage)
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
            "parked_since_ms={} account_sid={} channel_message_id={} status={} provider_time_ms={}",
            entry.parked_since.unix_millis(),
            entry.key.account,
            entry.key.channel_message_id,
            status,
            at
        )?;
    }
    Ok(())
}
