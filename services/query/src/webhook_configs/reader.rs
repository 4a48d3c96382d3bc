//! The reader of `webhook-configs`: it follows the compacted topic into the shared view and
//! records how far it got, which reads and writes wait on (see the parent module).

use std::collections::BTreeMap;
use std::sync::Arc;

use receipts_bus::consume::ConsumeError;
use receipts_bus::{BusError, Commit, Consumer, Handler, Partition, Record, Transient};
use receipts_proto::v1;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::View;
use crate::QueryError;

/// Reads `webhook-configs` into the shared view; see the module docs.
pub struct ConfigReader {
    pub(super) consumer: Consumer,
    pub(super) handler: ConfigHandler,
}

pub(super) struct ConfigHandler {
    pub(super) kafka: receipts_bus::KafkaSettings,
    pub(super) topic: String,
    pub(super) view: Arc<View>,
    /// Each partition's end when it was assigned: reads wait until these are reached.
    pub(super) targets: BTreeMap<i32, i64>,
}

impl std::fmt::Debug for ConfigReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigReader")
            .field("topic", &self.handler.topic)
            .finish_non_exhaustive()
    }
}

impl ConfigReader {
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), QueryError> {
        self.consumer
            .run(&mut self.handler, &shutdown)
            .await
            .map_err(QueryError::from)
    }
}

/// Why the configuration reader cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ConfigReadError {
    #[error("reading the ends of the webhook-configs partitions")]
    Ends(#[from] BusError),
    #[error("a blocking task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl Transient for ConfigReadError {
    fn is_transient(&self) -> bool {
        match self {
            ConfigReadError::Ends(e) => e.is_transient(),
            ConfigReadError::Join(_) => false,
        }
    }
}

impl From<ConsumeError<ConfigReadError>> for QueryError {
    fn from(e: ConsumeError<ConfigReadError>) -> Self {
        QueryError::ConfigReader(Box::new(e))
    }
}

impl Handler for ConfigHandler {
    type Error = ConfigReadError;

    /// Notes every partition's end at start: the topic counts as loaded once they are reached.
    async fn assigned(&mut self, _partitions: &[Partition]) -> Result<(), ConfigReadError> {
        let (kafka, topic) = (self.kafka.clone(), self.topic.clone());
        self.targets = tokio::task::spawn_blocking(move || {
            receipts_bus::changelog::partition_ends(&kafka, &topic)
        })
        .await??;
        let targets = self.targets.clone();
        self.view.progress.send_modify(|p| {
            p.loaded = targets
                .iter()
                .all(|(partition, high)| p.next.get(partition).copied().unwrap_or(0) >= *high);
        });
        Ok(())
    }

    async fn process(&mut self, records: Arc<[Record]>) -> Result<Commit, ConfigReadError> {
        for record in records.iter() {
            self.apply(record);
        }
        Ok(Commit::Batch)
    }
}

impl ConfigHandler {
    fn apply(&self, record: &Record) {
        let key = record
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        let (partition, offset) = (record.partition(), record.offset());
        match (key, record.payload()) {
            (None, _) => {
                warn!(
                    partition,
                    offset, "webhook configuration without a key skipped"
                );
            }
            (Some(key), None) => {
                self.view
                    .configs
                    .write()
                    .expect("no panics holding the lock")
                    .remove(&key);
            }
            (Some(key), Some(_)) => match receipts_bus::record::decode::<v1::WebhookConfig>(record)
            {
                Ok(config) => {
                    self.view
                        .configs
                        .write()
                        .expect("no panics holding the lock")
                        .insert(key, config);
                }
                Err(reason) => {
                    warn!(partition, offset, %reason, "undecodable webhook configuration skipped");
                }
            },
        }
        self.view.progress.send_modify(|p| {
            p.next.insert(partition, offset + 1);
            if !p.loaded {
                p.loaded = self
                    .targets
                    .iter()
                    .all(|(partition, high)| p.next.get(partition).copied().unwrap_or(0) >= *high);
            }
        });
    }
}
