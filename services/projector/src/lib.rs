//! Stage 1 of receipts (DESIGN §2–4a): consumes `delivery-events`, merges registrations and
//! status reports into receipts, stores them in sled and publishes every change on
//! `receipt-updates`.
//!
//! Kafka is the source of truth and sled a cache of it. Per batch, in this order: apply; publish
//! the receipt updates, dead letters and the changed states (to the compacted changelog, input
//! partition `p` to changelog partition `p`) and await every acknowledgement; store states,
//! offsets and changelog positions in one atomic sled write; commit the group offsets. A crash
//! anywhere replays records whose effects were not committed, onto state that already holds
//! them: the merge is idempotent, so the replay re-publishes identical updates (same sid, same
//! version) that consumers ignore by version. An instance assigned a partition restores its
//! state from the changelog first, from where its own copy ends, so scaling out, a new disk or an
//! old node rejoining all continue with the state and versions of one never-stopped instance.
//!
//! Layout: [`apply`] merges a batch without Kafka; [`cloudevents`] names the CloudEvents headers
//! of each published update; [`run`] runs the handler below on the consume
//! engine of `receipts-bus`; restore reads the changelog into sled.

pub mod apply;
pub mod cloudevents;
mod metrics;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use receipts_bus::changelog::{RestoreError, restore_partition};
use receipts_bus::consume::{BoxError, ConsumeError};
use receipts_bus::trace::record_span;
use receipts_bus::{
    Commit, Consumer, ConsumerOptions, Handler, KafkaSettings, Outgoing, Partition, PublishError,
    Publisher, Record, TopicNames, Transient,
};
use receipts_domain::{ReceiptKey, ReceiptState, Timestamp};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_runtime::config::{ConfigError, TelemetryConfig, Validate};
use receipts_runtime::metrics::Metrics;
use receipts_store::{PartitionOffset, ProjectorStore, SledProjectorStore, StoreError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apply::{BatchOutcome, apply_batch};
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
    /// How the database is opened (`storage.cache_mb`: sled's page cache).
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
            .map_err(|reason| ConfigError::invalid("storage.cache_mb", reason))?;
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
}

impl Transient for ProjectorError {
    fn is_transient(&self) -> bool {
        match self {
            ProjectorError::Publish(e) => e.is_transient(),
            ProjectorError::Restore(e) => e.is_transient(),
            ProjectorError::Bus(e) => e.is_transient(),
            _ => false,
        }
    }
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
    let (data_dir, storage) = (config.data_dir.clone(), config.storage);
    let store: Arc<dyn ProjectorStore> = Arc::new(
        tokio::task::spawn_blocking(move || SledProjectorStore::open_with(&data_dir, &storage))
            .await??,
    );
    run_with_store(config, store, metrics, shutdown).await
}

/// [`run`] on a store the caller opened (a bench watches it while the projector runs).
pub async fn run_with_store(
    config: ProjectorConfig,
    store: Arc<dyn ProjectorStore>,
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
        let started = Instant::now();
        // One span per record, in the record's trace, lasting until its batch is stored; the
        // updates a record causes carry its span's context.
        let spans: Vec<tracing::Span> = records
            .iter()
            .map(|record| record_span(record, "apply", Some(&self.config.group_id)))
            .collect();
        let store = self.store.clone();
        let mut outcome =
            tokio::task::spawn_blocking(move || apply_batch(&*store, &records, now())).await??;
        self.publish(&mut outcome, &spans).await?;
        self.metrics.record(&outcome.stats);
        let (store, batch) = (self.store.clone(), outcome.store);
        tokio::task::spawn_blocking(move || store.commit(&batch)).await??;
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(Commit::Batch)
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

    async fn publish(
        &self,
        outcome: &mut BatchOutcome,
        spans: &[tracing::Span],
    ) -> Result<(), ProjectorError> {
        let topics = &self.config.topics;
        let mut pending =
            Vec::with_capacity(outcome.updates.len() * 2 + outcome.dead_letters.len());
        for (change, &source) in outcome.updates.iter().zip(&outcome.update_sources) {
            let key = change.receipt.registration.conversation.as_str();
            let payload = codec::encode(&v1::ReceiptUpdated::from(change), Encoding::Protobuf);
            let mut update = Outgoing::new(&topics.receipt_updates, key, payload)
                .content_type(Encoding::Protobuf)
                .traced(&spans[source]);
            for (name, value) in cloudevents::receipt_updated_headers(change) {
                update = update.header(name, value);
            }
            pending.push(update);
        }
        for dead in &outcome.dead_letters {
            warn!(
                origin = %dead.record.origin(),
                reason = %dead.reason,
                "delivery event dead-lettered"
            );
            pending.push(Outgoing::dead_letter(
                &topics.delivery_events_dlq,
                &dead.record,
                &dead.reason,
            ));
        }
        // The derived events first, the changelog after their acknowledgements: a state change
        // in the changelog is always one whose updates reached Kafka, so a partition restored
        // from it never holds a change whose update was lost with a crash in between.
        self.publisher.send_all(&pending).await?;
        let mut changelog = Vec::with_capacity(outcome.store.states.len());
        for ((id, state), partition) in outcome.store.states.iter().zip(&outcome.state_partitions) {
            let payload = v1::StoredReceiptState::from(state).encode_to_vec();
            changelog.push(
                Outgoing::new(&topics.projector_changelog, id.to_string(), payload)
                    .to_partition(*partition)
                    .content_type(Encoding::Protobuf),
            );
        }
        let landed = self.publisher.send_all(&changelog).await?;
        // The changelog positions this batch reaches are stored with it.
        let mut positions: Vec<PartitionOffset> = Vec::new();
        for at in &landed {
            match positions.iter_mut().find(|p| p.partition == at.partition) {
                Some(p) => p.next_offset = p.next_offset.max(at.offset + 1),
                None => positions.push(PartitionOffset {
                    topic: topics.projector_changelog.clone(),
                    partition: at.partition,
                    next_offset: at.offset + 1,
                }),
            }
        }
        outcome.store.offsets.extend(positions);
        self.metrics
            .updates_published
            .inc_by(outcome.updates.len() as u64);
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
                oldest = %oldest.key,
                ttl_secs = ttl.as_secs(),
                "status reports are still waiting for their registration"
            );
        }
    }
}

/// Writes one line per parked report (parked since, account, channel message id, status,
/// provider time)
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
