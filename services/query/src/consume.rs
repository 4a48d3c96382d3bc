//! The read model: `receipt-updates` → sled, with the offsets in the same write, on the consume
//! engine of `receipts-bus`.
//!
//! A replica reads every partition itself, starting each at the offset stored with its state.
//! A replica with nothing stored for a partition whose beginning retention has removed (a new
//! replica, a new disk, or one that was away longer than retention) first bootstraps from the
//! projector's compacted changelog — the table of every current receipt — and then follows
//! `receipt-updates` from the oldest record still there. Snapshots are applied only when newer
//! than the stored version, so the overlap changes nothing. Timelines are not made here: they
//! follow the projector changelog (see [`crate::timelines`]), so they are whole even for receipts
//! older than the retained updates.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use receipts_bus::changelog::{RestoreError, restore_partition};
use receipts_bus::consume::BoxError;
use receipts_bus::{
    BusError, Commit, Consumer, ConsumerOptions, Handler, Partition, Record, Transient,
};
use receipts_domain::ReceiptChange;
use receipts_runtime::metrics::Metrics;
use receipts_store::{PartitionOffset, QueryStore, StoreError};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{QueryConfig, QueryError};

/// The `outcome` label of the read model's record counters (updates and timelines alike).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    outcome: &'static str,
}

pub(crate) fn outcome(outcome: &'static str) -> OutcomeLabel {
    OutcomeLabel { outcome }
}

/// Why the read model cannot go on: its `receipt-updates` reader or its timeline follower.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("reading topic bounds")]
    Bus(#[from] BusError),
    /// Bootstrapping the receipts, or catching the timelines up.
    #[error("reading the projector changelog")]
    Changelog(#[from] RestoreError<StoreError>),
    #[error("a blocking task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl Transient for ReadModelError {
    fn is_transient(&self) -> bool {
        match self {
            ReadModelError::Bus(e) => e.is_transient(),
            ReadModelError::Changelog(e) => e.is_transient(),
            ReadModelError::Store(_) | ReadModelError::Join(_) => false,
        }
    }
}

/// Reads every partition of `receipt-updates` into the store and tells watchers what changed.
pub struct ReadModel {
    config: QueryConfig,
    store: Arc<dyn QueryStore>,
    updates: broadcast::Sender<Arc<ReceiptChange>>,
    records: Family<OutcomeLabel, Counter>,
    component: receipts_runtime::health::Component,
}

impl std::fmt::Debug for ReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModel")
            .field("topic", &self.config.topics.receipt_updates)
            .finish_non_exhaustive()
    }
}

impl ReadModel {
    pub fn new(
        config: &QueryConfig,
        store: Arc<dyn QueryStore>,
        updates: broadcast::Sender<Arc<ReceiptChange>>,
        metrics: &Metrics,
    ) -> Result<Self, QueryError> {
        let records = Family::default();
        metrics.register(
            "query_updates",
            "receipt-updates records by outcome: applied, duplicate, stale, undecodable",
            records.clone(),
        );
        Ok(ReadModel {
            config: config.clone(),
            store,
            updates,
            records,
            component: metrics.readiness().component("read-model"),
        })
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), QueryError> {
        let topic = self.config.topics.receipt_updates.clone();
        // Where each partition starts: the stored offset, or — when nothing is stored or the
        // stored offset fell off the log — the oldest record still there, after a bootstrap.
        let marks = {
            let (kafka, topic) = (self.config.kafka.clone(), topic.clone());
            let mut backoff = receipts_bus::errors::Backoff::default();
            loop {
                let (kafka, name) = (kafka.clone(), topic.clone());
                match tokio::task::spawn_blocking(move || {
                    receipts_bus::changelog::watermarks(&kafka, &name)
                })
                .await?
                {
                    Ok(marks) if !marks.is_empty() => break marks,
                    Ok(_) => {}
                    Err(e) if !e.is_transient() => return Err(e.into()),
                    Err(_) => {}
                }
                let delay = backoff.next_delay();
                warn!(%topic, retry_in_ms = delay.as_millis() as u64, "waiting for the receipt updates topic");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        };
        let mut starts: BTreeMap<i32, Option<i64>> = BTreeMap::new();
        let mut bootstrap = false;
        for (&partition, &(low, _)) in &marks {
            let stored = self.store.next_offset(&topic, partition)?;
            if stored.unwrap_or(0) < low {
                bootstrap = true;
                starts.insert(partition, Some(low));
            } else {
                starts.insert(partition, stored);
            }
        }
        let starts = Arc::new(starts);
        let stored = move |partition: &Partition| -> Result<Option<i64>, BoxError> {
            Ok(starts.get(&partition.partition).copied().flatten())
        };
        let client_id = receipts_bus::settings::client_id("receipts-query");
        let options = ConsumerOptions::all_partitions("read-model", &client_id, &[&topic])
            .batch(self.config.batch_max_records, std::time::Duration::ZERO);
        let consumer = Consumer::new(
            &self.config.kafka,
            options,
            Arc::new(stored),
            self.component.clone(),
        )?;
        let mut handler = ReadModelHandler {
            kafka: self.config.kafka.clone(),
            changelog: self.config.topics.projector_changelog.clone(),
            bootstrap,
            store: self.store,
            updates: self.updates,
            records: self.records,
        };
        consumer
            .run(&mut handler, &shutdown)
            .await
            .map_err(|e| QueryError::Consume(Box::new(e)))
    }
}

struct ReadModelHandler {
    kafka: receipts_bus::KafkaSettings,
    changelog: String,
    bootstrap: bool,
    store: Arc<dyn QueryStore>,
    updates: broadcast::Sender<Arc<ReceiptChange>>,
    records: Family<OutcomeLabel, Counter>,
}

impl Handler for ReadModelHandler {
    type Error = ReadModelError;

    async fn assigned(&mut self, _partitions: &[Partition]) -> Result<(), ReadModelError> {
        if !std::mem::take(&mut self.bootstrap) {
            return Ok(());
        }
        let (kafka, changelog) = (self.kafka.clone(), self.changelog.clone());
        let partitions: Vec<i32> = {
            let (kafka, changelog) = (kafka.clone(), changelog.clone());
            tokio::task::spawn_blocking(move || {
                receipts_bus::changelog::partition_ends(&kafka, &changelog)
            })
            .await??
            .into_keys()
            .collect()
        };
        info!(%changelog, partitions = partitions.len(), "bootstrapping the read model from the projector changelog");
        let mut receipts = 0u64;
        for partition in partitions {
            let (kafka, changelog, store) = (kafka.clone(), changelog.clone(), self.store.clone());
            let restored = tokio::task::spawn_blocking(move || {
                restore_partition(&kafka, &changelog, partition, None, |records, _| {
                    let changes = snapshots(records);
                    store.apply(&changes, &[]).map(|_| ())
                })
            })
            .await;
            match restored {
                Ok(Ok(restored)) => receipts += restored.records,
                Ok(Err(e)) => {
                    self.bootstrap = true;
                    return Err(e.into());
                }
                Err(e) => {
                    self.bootstrap = true;
                    return Err(e.into());
                }
            }
        }
        info!(records = receipts, "read model bootstrapped");
        Ok(())
    }

    async fn process(&mut self, records: Arc<[Record]>) -> Result<Commit, ReadModelError> {
        // Each update's span continues the projector's trace until the batch is stored.
        let _spans: Vec<tracing::Span> = records
            .iter()
            .map(|record| receipts_bus::trace::record_span(record, "apply", None))
            .collect();
        let mut changes = Vec::with_capacity(records.len());
        let mut offsets: Vec<PartitionOffset> = Vec::new();
        for record in records.iter() {
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
            match receipts_bus::record::decode_receipt_change(record) {
                Ok(change) => changes.push(change),
                Err(error) => {
                    // The projector is the only writer; a record it did not write correctly is
                    // counted and skipped, never retried forever.
                    warn!(origin = %record.origin(), error = %receipts_bus::consume::error_chain(&error), "undecodable receipt update skipped");
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
        Ok(Commit::Batch)
    }
}

/// The current receipts in projector changelog records (parked reports have none yet).
fn snapshots(records: &[Record]) -> Vec<ReceiptChange> {
    let mut changes = Vec::with_capacity(records.len());
    for record in records {
        match receipts_bus::record::decode_receipt_state(record) {
            Ok(state) => {
                if let Some(receipt) = state.receipt() {
                    changes.push(ReceiptChange {
                        receipt,
                        previous_status: None,
                        previous_error_code: None,
                    });
                }
            }
            Err(error) => {
                warn!(origin = %record.origin(), error = %receipts_bus::consume::error_chain(&error), "undecodable changelog record skipped")
            }
        }
    }
    changes
}
