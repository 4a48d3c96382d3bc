//! The dispatcher (DESIGN §2 "Dispatcher"): turns receipt changes into signed
//! `onDeliveryUpdated` webhooks, with durable retries through Kafka, a dead-letter topic and
//! its replay.
//!
//! Flow: the compacted `webhook-configs` topic is read to its end into memory before anything
//! is dispatched, then followed live ([`configs`]). One consumer group reads `receipt-updates`
//! and the retry topic on the consume engine; each batch becomes attempts in memory
//! ([`intake`]). Due attempts are made per endpoint, each endpoint with its own in-flight cap
//! and circuit breaker; failures go to the retry topic with their due time, hopeless ones to the
//! dead-letter topic, and 410 Gone disables the endpoint by writing its configuration back
//! ([`deliver`]). [`replay`] sends dead-lettered deliveries back.
//!
//! State moves with its partition (DESIGN §4a): what was settled per delivery is written to the
//! compacted dispatcher changelog before it is stored in sled ([`store`]), and the group's
//! committed offset of a partition never passes a record whose deliveries are unsettled. An
//! instance assigned a partition restores its state from the changelog and reads from the
//! committed offset, so a move re-sends nothing that was delivered, pending retries continue on
//! the new owner, and only attempts in flight at the moment of the move may repeat.
//!
//! Delivery is at least once: nothing pending is lost by a crash or a move, and a request may be
//! repeated with the same `I-Twilio-Idempotency-Token`.

pub mod configs;
pub mod deliver;
mod due;
pub mod intake;
pub mod job;
mod lanes;
mod metrics;
mod progress;
pub mod replay;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use receipts_bus::consume::{ConsumeError, nothing_stored};
use receipts_bus::{Consumer, ConsumerOptions, KafkaSettings, Publisher, TopicNames};
use receipts_domain::AccountSid;
use receipts_runtime::clock::{self, SharedClock};
use receipts_runtime::config::{ConfigError, Secret, TelemetryConfig, Validate};
use receipts_runtime::metrics::Metrics;
use receipts_webhook::sealed::SecretsKey;
use receipts_webhook::{AddressPolicy, RetrySchedule, WebhookClient};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use crate::deliver::BreakerConfig;
use crate::deliver::{Deliverer, DeliveryContext};
use crate::due::DueQueue;
use crate::intake::{Intake, IntakeError};
use crate::metrics::DispatcherMetrics;
use crate::progress::{ChangelogProgress, Unsettled};
pub use crate::replay::{
    DeadLetter, ReplayFilter, ReplayProgress, ReplayReport, dead_letters, replay_dlq,
};
use crate::store::{DispatcherStore, StoreError};

/// Everything the dispatcher needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DispatcherConfig {
    pub kafka: KafkaSettings,
    pub topics: TopicNames,
    /// Consumer group shared by all dispatcher instances.
    pub group_id: String,
    /// The sled database of this instance.
    pub data_dir: PathBuf,
    /// How the database is opened (`storage.cache_mb`: sled's page cache; `storage.engine` must
    /// be `sled`).
    pub storage: receipts_store::StorageConfig,
    /// Account sid → auth token, the key of `X-Twilio-Signature`. A delivery for an account
    /// without one is dead-lettered.
    pub accounts: BTreeMap<String, Secret>,
    /// Opens the signing secrets the query service sealed into webhook configurations: the same
    /// base64 of 32 bytes as its `webhook_secrets_key`. A delivery whose configuration has sealed
    /// secrets that cannot be opened is dead-lettered rather than sent unsigned.
    pub webhook_secrets_key: Secret,
    pub retry: RetrySchedule,
    /// One attempt's timeout (connect and response), 5 s like Twilio's.
    pub attempt_timeout_ms: u64,
    /// Private ranges webhooks may reach anyway (`allow = ["127.0.0.0/8"]`).
    pub ssrf: AddressPolicy,
    /// Attempts in flight per endpoint.
    pub endpoint_concurrency: usize,
    /// Pending attempts held in memory, the earliest due; later ones wait in the database.
    pub queue_in_memory: usize,
    pub breaker: BreakerConfig,
    pub batch_max_records: usize,
    /// Not ready once the broker has been unreachable for this long.
    pub stale_after_secs: u64,
    /// Create missing topics at start with this many partitions (0: expect them to exist).
    pub create_topics_partitions: i32,
    /// How often the DLQ size gauge is refreshed.
    pub dlq_poll_secs: u64,
    /// Address of the metrics endpoint; empty disables it.
    pub metrics_listen: String,
    pub telemetry: TelemetryConfig,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            kafka: KafkaSettings::default(),
            topics: TopicNames::default(),
            group_id: "receipts-dispatcher".into(),
            data_dir: PathBuf::from("data/dispatcher"),
            storage: receipts_store::StorageConfig::default(),
            accounts: BTreeMap::new(),
            webhook_secrets_key: Secret::default(),
            retry: RetrySchedule::default(),
            attempt_timeout_ms: 5_000,
            ssrf: AddressPolicy::default(),
            endpoint_concurrency: 4,
            queue_in_memory: 10_000,
            breaker: BreakerConfig::default(),
            batch_max_records: 1_000,
            stale_after_secs: 30,
            create_topics_partitions: 4,
            dlq_poll_secs: 30,
            metrics_listen: "127.0.0.1:9467".into(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Validate for DispatcherConfig {
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
        for (sid, token) in &self.accounts {
            AccountSid::parse(sid)
                .map_err(|e| ConfigError::invalid(format!("accounts.{sid}"), e.to_string()))?;
            if token.is_empty() {
                return Err(ConfigError::invalid(
                    format!("accounts.{sid}"),
                    "auth token must not be empty",
                ));
            }
        }
        self.secrets_key()?;
        self.retry
            .validate()
            .map_err(|e| ConfigError::invalid("retry", e.to_string()))?;
        for (key, value) in [
            ("attempt_timeout_ms", self.attempt_timeout_ms),
            ("endpoint_concurrency", self.endpoint_concurrency as u64),
            ("queue_in_memory", self.queue_in_memory as u64),
            ("batch_max_records", self.batch_max_records as u64),
            (
                "breaker.failure_threshold",
                u64::from(self.breaker.failure_threshold),
            ),
            ("dlq_poll_secs", self.dlq_poll_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        self.storage
            .check()
            .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
        self.storage
            .check_sled_only()
            .map_err(|reason| ConfigError::invalid("storage.engine", reason))?;
        self.telemetry.validate().map_err(|e| e.within("telemetry"))
    }
}

impl DispatcherConfig {
    /// The key opening sealed signing secrets, if one is configured.
    pub fn secrets_key(&self) -> Result<Option<SecretsKey>, ConfigError> {
        if self.webhook_secrets_key.is_empty() {
            return Ok(None);
        }
        SecretsKey::from_base64(self.webhook_secrets_key.expose())
            .map(Some)
            .map_err(|e| ConfigError::invalid("webhook_secrets_key", e.to_string()))
    }
}

/// Why the dispatcher stopped.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error("configuration")]
    Config(#[from] ConfigError),
    #[error("kafka setup")]
    Bus(#[from] receipts_bus::BusError),
    #[error("store")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Client(#[from] receipts_webhook::ClientError),
    #[error(transparent)]
    Intake(#[from] Box<ConsumeError<IntakeError>>),
    #[error(transparent)]
    Configs(#[from] Box<ConsumeError<configs::FollowError>>),
    #[error(transparent)]
    Publish(#[from] receipts_bus::PublishError),
    #[error("reading the dead-letter topic")]
    ReadDeadLetters(#[from] receipts_bus::changelog::RestoreError<std::convert::Infallible>),
    #[error("a blocking task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs the dispatcher on the system clock until `shutdown` is cancelled; see [`run_with_clock`].
pub async fn run(
    config: DispatcherConfig,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> Result<(), DispatcherError> {
    run_with_clock(config, metrics, clock::system(), shutdown).await
}

/// Runs the dispatcher until `shutdown` is cancelled: stops reading, stores the current batch,
/// waits a little for attempts in flight, flushes. Every wall-clock time it reads or writes
/// (due times, attempt times, secret expiry, `disabled_at`) comes from `clock`.
pub async fn run_with_clock(
    config: DispatcherConfig,
    metrics: &Metrics,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<(), DispatcherError> {
    if config.create_topics_partitions > 0 {
        let specs = config.topics.specs(config.create_topics_partitions);
        receipts_bus::topics::ensure_topics(&config.kafka, &specs).await?;
    }
    let readiness = metrics.readiness().clone();
    let metrics = DispatcherMetrics::register(metrics);
    let (data_dir, storage) = (config.data_dir.clone(), config.storage);
    let store = Arc::new(
        tokio::task::spawn_blocking(move || DispatcherStore::open_with(&data_dir, &storage))
            .await??,
    );

    // The whole configuration before the first delivery.
    let directory = Arc::new(RwLock::new(configs::Directory::default()));
    let (mut ready, follower) = configs::follow(
        &config.kafka,
        &config.topics.webhook_configs,
        directory.clone(),
        readiness.component("webhook-configs"),
        shutdown.clone(),
    )?;
    tokio::select! {
        _ = shutdown.cancelled() => { follower.abort(); return Ok(()) }
        _ = ready.wait_for(|ready| *ready) => {}
    }

    let client_id = receipts_bus::settings::client_id(&config.group_id);
    let publisher = Publisher::new(&config.kafka, &client_id)?;
    let unsettled = Arc::new(Unsettled::default());
    let changelog = Arc::new(ChangelogProgress::default());
    let deliverer = Deliverer::new(
        DeliveryContext {
            client: WebhookClient::new(
                config.ssrf.clone(),
                Duration::from_millis(config.attempt_timeout_ms),
            )?
            .with_clock(clock.clone()),
            store: store.clone(),
            directory: directory.clone(),
            accounts: config
                .accounts
                .iter()
                .map(|(sid, token)| (sid.clone(), token.clone()))
                .collect::<HashMap<_, _>>(),
            secrets_key: config.secrets_key()?,
            schedule: config.retry.clone(),
            publisher: publisher.clone(),
            topics: config.topics.clone(),
            metrics: metrics.clone(),
            endpoint_concurrency: config.endpoint_concurrency,
            breaker: config.breaker,
            unsettled: unsettled.clone(),
            changelog: changelog.clone(),
        },
        DueQueue::new(store.spill_tree()?, config.queue_in_memory).map_err(StoreError::from)?,
        clock.clone(),
        shutdown.clone(),
    );
    let delivering = tokio::spawn(
        deliverer
            .clone()
            .run(Duration::from_millis(config.attempt_timeout_ms + 1_000)),
    );

    let options = ConsumerOptions::group(
        "dispatcher",
        &client_id,
        &config.group_id,
        &[
            &config.topics.receipt_updates,
            &config.topics.webhook_retries,
        ],
    )
    .batch(config.batch_max_records, Duration::ZERO)
    .stale_after(Duration::from_secs(config.stale_after_secs));
    let consumer = Consumer::new(
        &config.kafka,
        options,
        Arc::new(nothing_stored),
        readiness.component("dispatcher"),
    )?;
    let mut intake = Intake {
        kafka: config.kafka.clone(),
        store: store.clone(),
        directory,
        deliverer,
        unsettled,
        changelog,
        metrics: metrics.clone(),
        clock,
        updates_topic: config.topics.receipt_updates.clone(),
        retries_topic: config.topics.webhook_retries.clone(),
        changelog_topic: config.topics.dispatcher_changelog.clone(),
    };
    let dlq_gauge = tokio::spawn(watch_dlq_size(
        publisher,
        config.topics.webhook_dlq.clone(),
        metrics,
        Duration::from_secs(config.dlq_poll_secs),
    ));
    info!(
        updates = %config.topics.receipt_updates,
        retries = %config.topics.webhook_retries,
        changelog = %config.topics.dispatcher_changelog,
        group = %config.group_id,
        "dispatcher started"
    );
    let mut follower = follower;
    let result = tokio::select! {
        result = consumer.run(&mut intake, &shutdown) => result.map_err(|e| DispatcherError::Intake(Box::new(e))),
        followed = &mut follower => match followed {
            Ok(Err(e)) => Err(DispatcherError::Configs(Box::new(e))),
            _ => Ok(()),
        },
    };
    shutdown.cancel();
    drop(intake);
    drop(consumer);
    let _ = delivering.await;
    dlq_gauge.abort();
    follower.abort();
    tokio::task::spawn_blocking(move || store.flush()).await??;
    info!("dispatcher stopped");
    result
}

/// Keeps `receipts_dispatcher_dlq_records` at the DLQ's high minus low watermark.
async fn watch_dlq_size(
    publisher: Publisher,
    topic: String,
    metrics: DispatcherMetrics,
    every: Duration,
) {
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        let (publisher, topic) = (publisher.clone(), topic.clone());
        let size = tokio::task::spawn_blocking(move || {
            publisher.partition_size(&topic, 0, Duration::from_secs(10))
        })
        .await;
        match size {
            Ok(Ok(size)) => {
                metrics.dlq_records.set(size);
            }
            Ok(Err(error)) => warn!(%error, "cannot read the dead-letter topic's size"),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use receipts_runtime::config::Validate;

    #[test]
    fn a_storage_engine_other_than_sled_is_refused_by_its_key() {
        let mut config = super::DispatcherConfig::default();
        assert!(config.validate().is_ok());
        config.storage.engine = receipts_store::StorageEngine::Fjall;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("storage.engine") && err.contains("projector and the query service"),
            "{err}"
        );
    }
}
