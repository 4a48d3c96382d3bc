//! The read-model loop: `receipt-updates` → sled, with the offsets in the same write.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use receipts_bus::errors::{Backoff, is_fatal};
use receipts_domain::ReceiptChange;
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_runtime::metrics::Metrics;
use receipts_store::{PartitionOffset, QueryStore};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{QueryConfig, QueryError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Reads every partition of `receipt-updates` into the store and tells watchers what changed.
pub struct ReadModel {
    consumer: Arc<StreamConsumer>,
    topic: String,
    store: Arc<dyn QueryStore>,
    updates: broadcast::Sender<Arc<ReceiptChange>>,
    max_records: usize,
    records: Family<OutcomeLabel, Counter>,
}

impl std::fmt::Debug for ReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModel")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

fn outcome(outcome: &'static str) -> OutcomeLabel {
    OutcomeLabel { outcome }
}

impl ReadModel {
    pub fn new(
        config: &QueryConfig,
        store: Arc<dyn QueryStore>,
        updates: broadcast::Sender<Arc<ReceiptChange>>,
        metrics: &Metrics,
    ) -> Result<Self, QueryError> {
        // A replica reads every partition itself, so it joins no group: the group id is only
        // required by librdkafka and never used for assignment.
        let client_id = format!("receipts-query-{}", std::process::id());
        let mut consumer_config = config.kafka.consumer_config(&client_id, &client_id);
        consumer_config.set("auto.offset.reset", "error");
        let consumer: Arc<StreamConsumer> = Arc::new(consumer_config.create()?);
        let records = Family::default();
        metrics.register(
            "query_updates",
            "receipt-updates records by outcome: applied, duplicate, stale, undecodable",
            records.clone(),
        );
        Ok(ReadModel {
            consumer,
            topic: config.topics.receipt_updates.clone(),
            store,
            updates,
            max_records: config.batch_max_records,
            records,
        })
    }

    /// Assigns every partition at the offset stored with the state (the beginning if none),
    /// waiting while the topic does not exist yet. Returns false if shut down while waiting.
    async fn assign(&self, shutdown: &CancellationToken) -> Result<bool, QueryError> {
        let mut backoff = Backoff::default();
        let partitions = loop {
            let metadata = {
                let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
                tokio::task::spawn_blocking(move || {
                    consumer.fetch_metadata(Some(&topic), Duration::from_secs(30))
                })
                .await?
            };
            let partitions: Vec<i32> = match metadata {
                Ok(metadata) => metadata
                    .topics()
                    .iter()
                    .filter(|t| t.name() == self.topic)
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect(),
                Err(error) if is_fatal(&error) => return Err(error.into()),
                Err(_) => Vec::new(),
            };
            if !partitions.is_empty() {
                break partitions;
            }
            let delay = backoff.next_delay();
            warn!(topic = %self.topic, retry_in_ms = delay.as_millis() as u64, "waiting for the receipt updates topic");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(delay) => {}
            }
        };
        let mut assignment = TopicPartitionList::new();
        for partition in partitions {
            let offset = match self.store.next_offset(&self.topic, partition)? {
                Some(next) => Offset::Offset(next),
                None => Offset::Beginning,
            };
            assignment.add_partition_offset(&self.topic, partition, offset)?;
        }
        info!(topic = %self.topic, partitions = assignment.count(), "reading receipt updates");
        self.consumer.assign(&assignment)?;
        Ok(true)
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), QueryError> {
        if !self.assign(&shutdown).await? {
            return Ok(());
        }
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                message = self.consumer.recv() => message?.detach(),
            };
            let mut records = vec![first];
            // Take what is already buffered, without waiting: the read model's latency is the
            // time of one batch.
            while records.len() < self.max_records {
                match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                    Ok(message) => records.push(message?.detach()),
                    Err(_) => break,
                }
            }
            self.apply(records).await?;
        }
    }

    async fn apply(&self, records: Vec<rdkafka::message::OwnedMessage>) -> Result<(), QueryError> {
        let mut changes = Vec::with_capacity(records.len());
        let mut offsets: Vec<PartitionOffset> = Vec::new();
        for record in &records {
            let next_offset = record.offset() + 1;
            match offsets
                .iter_mut()
                .find(|o| o.partition == record.partition())
            {
                Some(o) => o.next_offset = o.next_offset.max(next_offset),
                None => offsets.push(PartitionOffset {
                    topic: record.topic().to_owned(),
                    partition: record.partition(),
                    next_offset,
                }),
            }
            match decode(record) {
                Ok(change) => changes.push(change),
                Err(reason) => {
                    // The projector is the only writer; a record it did not write correctly is
                    // counted and skipped, never retried forever.
                    warn!(partition = record.partition(), offset = record.offset(), %reason, "undecodable receipt update skipped");
                    self.records.get_or_create(&outcome("undecodable")).inc();
                }
            }
        }
        let store = self.store.clone();
        let (stats, changes) = tokio::task::spawn_blocking(move || {
            store
                .apply(&changes, &offsets)
                .map(|stats| (stats, changes))
        })
        .await??;
        self.records
            .get_or_create(&outcome("applied"))
            .inc_by(stats.applied);
        self.records
            .get_or_create(&outcome("duplicate"))
            .inc_by(stats.duplicates);
        self.records
            .get_or_create(&outcome("stale"))
            .inc_by(stats.stale);
        if self.updates.receiver_count() > 0 {
            let mut changes: Vec<Option<ReceiptChange>> = changes.into_iter().map(Some).collect();
            for position in stats.applied_positions {
                if let Some(change) = changes[position].take() {
                    // No watcher is not an error.
                    let _ = self.updates.send(Arc::new(change));
                }
            }
        }
        Ok(())
    }
}

fn decode(record: &rdkafka::message::OwnedMessage) -> Result<ReceiptChange, String> {
    let encoding = Encoding::from_content_type(receipts_bus::record::content_type(record))
        .map_err(|e| e.to_string())?;
    let payload = record.payload().ok_or("record has no payload")?;
    let wire: v1::ReceiptUpdated = codec::decode(payload, encoding).map_err(|e| e.to_string())?;
    ReceiptChange::try_from(&wire).map_err(|e| e.to_string())
}
