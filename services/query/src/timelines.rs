//! Timelines: the projector changelog → sled, with the changelog positions in the same write.
//!
//! The projector writes every changed state of a receipt to its compacted changelog, history
//! included: the earliest report of every status seen. A replica reads every partition of that
//! changelog itself and keeps, per receipt, the union of its states' histories (see
//! `receipts_domain::timeline`). A union needs no version gate and ignores order and replays, so
//! the overlap between a stored position and what was already applied changes nothing. A state
//! without registration has no receipt yet; its history comes back with the registered state.
//!
//! At start the follower first reads each partition from its stored position to where the
//! changelog ends at that moment, as a restore, and only then follows it on the consume engine:
//! until then the replica is not ready, because its timelines would be behind its receipts.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use receipts_bus::changelog::restore_partition;
use receipts_bus::consume::BoxError;
use receipts_bus::{
    Commit, Consumer, ConsumerOptions, Handler, KafkaSettings, Partition, Record, Transient,
};
use receipts_domain::ReceiptState;
use receipts_runtime::health::{Component, ComponentState};
use receipts_runtime::metrics::Metrics;
use receipts_store::{PartitionOffset, QueryStore, StoreError, TimelineStats};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::consume::{OutcomeLabel, ReadModelError, outcome as outcome_label};
use crate::{QueryConfig, QueryError};

/// Counts changelog records by what they did to the timelines.
#[derive(Debug, Clone, Default)]
struct Outcomes(Family<OutcomeLabel, Counter>);

impl Outcomes {
    fn count(&self, stats: &TimelineStats, undecodable: u64) {
        for (outcome, n) in [
            ("extended", stats.extended),
            ("unchanged", stats.unchanged),
            ("unregistered", stats.unregistered),
            ("undecodable", undecodable),
        ] {
            self.0.get_or_create(&outcome_label(outcome)).inc_by(n);
        }
    }
}

/// Reads every partition of the projector changelog into the timelines.
pub struct TimelineFollower {
    kafka: KafkaSettings,
    changelog: String,
    batch_max_records: usize,
    store: Arc<dyn QueryStore>,
    outcomes: Outcomes,
    component: Component,
}

impl std::fmt::Debug for TimelineFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimelineFollower")
            .field("changelog", &self.changelog)
            .finish_non_exhaustive()
    }
}

impl TimelineFollower {
    pub fn new(config: &QueryConfig, store: Arc<dyn QueryStore>, metrics: &Metrics) -> Self {
        let outcomes = Outcomes::default();
        metrics.register(
            "query_timeline_states",
            "projector changelog records by what they did to the timelines: extended, unchanged, unregistered, undecodable",
            outcomes.0.clone(),
        );
        TimelineFollower {
            kafka: config.kafka.clone(),
            changelog: config.topics.projector_changelog.clone(),
            batch_max_records: config.batch_max_records,
            store,
            outcomes,
            component: metrics.readiness().component("timelines"),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), QueryError> {
        let Some(ends) = self.changelog_ends(&shutdown).await? else {
            return Ok(());
        };
        self.component.set(ComponentState::Restoring {
            partitions: ends.len(),
        });
        let mut backoff = receipts_bus::errors::Backoff::default();
        loop {
            match self.catch_up(&ends).await {
                Ok(()) => break,
                Err(e) if e.is_transient() => {
                    let delay = backoff.next_delay();
                    warn!(changelog = %self.changelog, error = %receipts_bus::consume::error_chain(&e), retry_in_ms = delay.as_millis() as u64, "catching up with the projector changelog failed, trying again");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => {
                    self.component.set(ComponentState::Stopped {
                        reason: receipts_bus::consume::error_chain(&e),
                    });
                    return Err(QueryError::Timelines(e));
                }
            }
        }

        let store = self.store.clone();
        let stored = move |partition: &Partition| -> Result<Option<i64>, BoxError> {
            Ok(store.next_offset(&partition.topic, partition.partition)?)
        };
        let client_id = receipts_bus::settings::client_id("receipts-query-timelines");
        let options = ConsumerOptions::all_partitions("timelines", &client_id, &[&self.changelog])
            .batch(self.batch_max_records, std::time::Duration::ZERO);
        let consumer = Consumer::new(&self.kafka, options, Arc::new(stored), self.component)?;
        let mut handler = TimelineHandler {
            store: self.store,
            outcomes: self.outcomes,
        };
        consumer
            .run(&mut handler, &shutdown)
            .await
            .map_err(|e| QueryError::TimelineConsume(Box::new(e)))
    }

    /// Where every partition of the changelog ends now, once it exists; `None` if shut down
    /// while waiting for it.
    async fn changelog_ends(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<BTreeMap<i32, i64>>, QueryError> {
        let mut backoff = receipts_bus::errors::Backoff::default();
        loop {
            let (kafka, name) = (self.kafka.clone(), self.changelog.clone());
            match tokio::task::spawn_blocking(move || {
                receipts_bus::changelog::partition_ends(&kafka, &name)
            })
            .await?
            {
                Ok(ends) if !ends.is_empty() => return Ok(Some(ends)),
                Ok(_) => {}
                Err(e) if !e.is_transient() => return Err(e.into()),
                Err(_) => {}
            }
            let delay = backoff.next_delay();
            warn!(changelog = %self.changelog, retry_in_ms = delay.as_millis() as u64, "waiting for the projector changelog");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Reads every partition from its stored position up to `ends`, storing the timelines and
    /// positions chunk by chunk, so an interrupted catch-up resumes where it stopped.
    async fn catch_up(&self, ends: &BTreeMap<i32, i64>) -> Result<(), ReadModelError> {
        let mut records = 0u64;
        for &partition in ends.keys() {
            let (kafka, changelog, store) = (
                self.kafka.clone(),
                self.changelog.clone(),
                self.store.clone(),
            );
            let outcomes = self.outcomes.clone();
            let restored = tokio::task::spawn_blocking(move || {
                let from = store.next_offset(&changelog, partition)?;
                let restored = restore_partition(
                    &kafka,
                    &changelog,
                    partition,
                    from,
                    |chunk, next_offset| {
                        let (states, undecodable) = states(chunk);
                        let position = PartitionOffset {
                            topic: changelog.clone(),
                            partition,
                            next_offset,
                        };
                        let stats = store.apply_timelines(&states, &[position])?;
                        outcomes.count(&stats, undecodable);
                        Ok::<_, StoreError>(())
                    },
                )?;
                Ok::<_, ReadModelError>(restored)
            })
            .await??;
            records += restored.records;
        }
        info!(changelog = %self.changelog, records, "timelines caught up with the projector changelog");
        Ok(())
    }
}

struct TimelineHandler {
    store: Arc<dyn QueryStore>,
    outcomes: Outcomes,
}

impl Handler for TimelineHandler {
    type Error = ReadModelError;

    async fn process(&mut self, records: Arc<[Record]>) -> Result<Commit, ReadModelError> {
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
        }
        let (states, undecodable) = states(&records);
        let store = self.store.clone();
        let stats =
            tokio::task::spawn_blocking(move || store.apply_timelines(&states, &offsets)).await??;
        self.outcomes.count(&stats, undecodable);
        Ok(Commit::Batch)
    }
}

/// The receipt states in changelog records, and how many could not be read. Tombstones carry
/// no state. The projector is the only writer; a record it did not write correctly is counted
/// and skipped, never retried forever.
fn states(records: &[Record]) -> (Vec<ReceiptState>, u64) {
    let mut states = Vec::with_capacity(records.len());
    let mut undecodable = 0;
    for record in records {
        if record.payload().is_none() {
            continue;
        }
        match receipts_bus::record::decode_receipt_state(record) {
            Ok(state) => states.push(state),
            Err(error) => {
                undecodable += 1;
                warn!(origin = %record.origin(), error = %receipts_bus::consume::error_chain(&error), "undecodable changelog record skipped");
            }
        }
    }
    (states, undecodable)
}
