//! What happens inside librdkafka's rebalance callback: partitions start at the group's
//! committed offsets (falling back to the stored ones, then the beginning), revoked partitions
//! wait for settling batches and commit their durable offsets synchronously, and the loop is
//! told through [`Shared`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol,
};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use receipts_runtime::health::Component;
use tracing::{error, info, warn};

use super::{BoxError, Commit, Partition, StoredOffsets};
use crate::record::Record;

#[derive(Debug)]
pub(super) enum Event {
    Assigned(Vec<Partition>),
    Revoked(Vec<Partition>),
}

#[derive(Debug, Default)]
pub(super) struct Assignments {
    /// Every assigned partition with the generation of its current assignment.
    pub(super) generation: HashMap<Partition, u64>,
    pub(super) next_generation: u64,
    pub(super) events: Vec<Event>,
    /// The next offsets whose effects are durable, to commit.
    pub(super) durable: HashMap<Partition, i64>,
}

#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) assignments: Mutex<Assignments>,
    /// Grows by one with every rebalance, so the loop notices one without taking the lock.
    pub(super) epoch: AtomicU64,
    /// How many batches are settling on their own (stored after their acknowledgements).
    settling: Mutex<usize>,
    settled: Condvar,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Assignments> {
        self.assignments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes the offsets `commit` makes durable for the partitions still assigned, and returns
    /// them to commit.
    pub(super) fn mark_durable(&self, records: &[Record], commit: &Commit) -> TopicPartitionList {
        let offsets: Vec<(Partition, i64)> = match commit {
            Commit::Batch => {
                let mut next: BTreeMap<Partition, i64> = BTreeMap::new();
                for record in records {
                    let entry = next
                        .entry(Partition::new(record.topic(), record.partition()))
                        .or_insert(0);
                    *entry = (*entry).max(record.offset() + 1);
                }
                next.into_iter().collect()
            }
            Commit::Offsets(offsets) => offsets.clone(),
        };
        let mut list = TopicPartitionList::new();
        let mut state = self.lock();
        for (partition, next) in offsets {
            if !state.generation.contains_key(&partition) {
                continue;
            }
            let _ = list.add_partition_offset(
                &partition.topic,
                partition.partition,
                Offset::Offset(next),
            );
            state.durable.insert(partition, next);
        }
        list
    }

    pub(super) fn settling_started(&self) {
        *self.settling.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    pub(super) fn settling_ended(&self) {
        *self.settling.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        self.settled.notify_all();
    }

    /// Blocks until no batch is settling. Called inside the rebalance callback, which runs on
    /// the thread of the loop's receive: the settling tasks run on the runtime's other threads
    /// (the loop leaves none settling while it receives on a single-threaded runtime).
    fn wait_settled(&self) {
        let wait = || {
            let settling = self.settling.lock().unwrap_or_else(PoisonError::into_inner);
            drop(
                self.settled
                    .wait_while(settling, |n| *n > 0)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        };
        if *self.settling.lock().unwrap_or_else(PoisonError::into_inner) == 0 {
            return;
        }
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }
}

/// Starts assigned partitions at the group's committed offsets (falling back to the stored
/// ones, then the beginning), commits durable offsets of revoked partitions, and tells the loop.
pub(super) struct EngineContext {
    pub(super) name: String,
    pub(super) shared: Arc<Shared>,
    pub(super) stored: Arc<dyn StoredOffsets>,
    pub(super) component: Component,
}

impl ClientContext for EngineContext {
    /// librdkafka's periodic statistics carry each partition's lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, stats) in &statistics.topics {
            for (&partition, p) in &stats.partitions {
                // -1 is the internal "unassigned" partition, and lag is -1 where unknown.
                if partition >= 0 && p.consumer_lag >= 0 {
                    self.component.set_lag(topic, partition, p.consumer_lag);
                }
            }
        }
    }
}

impl EngineContext {
    pub(super) fn start_offset(
        &self,
        partition: &Partition,
        committed: Option<&TopicPartitionList>,
    ) -> Result<Offset, BoxError> {
        let committed = committed
            .and_then(|list| list.find_partition(&partition.topic, partition.partition))
            .map(|element| element.offset());
        if let Some(Offset::Offset(next)) = committed {
            return Ok(Offset::Offset(next));
        }
        Ok(match self.stored.next_offset(partition)? {
            Some(next) => Offset::Offset(next),
            None => Offset::Beginning,
        })
    }

    pub(super) fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let committed = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(30))
            .map_err(|e| {
                // Without the group's offsets, stored ones (or the beginning) are still a
                // safe start: the handler's state is restored and replay is idempotent.
                warn!(consumer = %self.name, error = %e, "cannot read the group's committed offsets");
            })
            .ok();
        let mut assignment = TopicPartitionList::new();
        let mut assigned = Vec::new();
        for element in tpl.elements() {
            let partition = Partition::new(element.topic(), element.partition());
            match self.start_offset(&partition, committed.as_ref()) {
                Ok(offset) => {
                    info!(consumer = %self.name, %partition, ?offset, "partition assigned");
                    if let Err(e) = assignment.add_partition_offset(
                        element.topic(),
                        element.partition(),
                        offset,
                    ) {
                        error!(consumer = %self.name, %partition, error = %e, "cannot assign partition");
                        continue;
                    }
                    assigned.push(partition);
                }
                Err(e) => {
                    error!(consumer = %self.name, %partition, error = %e, "cannot read stored offset; partition left unassigned");
                }
            }
        }
        let assigned_now = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(&assignment),
            _ => consumer.assign(&assignment),
        };
        if let Err(e) = assigned_now {
            error!(consumer = %self.name, error = %e, "assignment failed");
            return;
        }
        let mut state = self.shared.lock();
        for partition in &assigned {
            state.next_generation += 1;
            let generation = state.next_generation;
            state.generation.insert(partition.clone(), generation);
        }
        state.events.push(Event::Assigned(assigned));
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Gives up the partitions in `tpl` (every partition, under the eager protocol).
    pub(super) fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        // Batches still settling finish first: nothing is published or stored for a partition
        // after it is given up, and their changelog records land before its next owner restores.
        self.shared.wait_settled();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let revoked: Vec<Partition> = {
            let mut state = self.shared.lock();
            let revoked: Vec<Partition> = if cooperative {
                tpl.elements()
                    .iter()
                    .map(|e| Partition::new(e.topic(), e.partition()))
                    .filter(|p| state.generation.remove(p).is_some())
                    .collect()
            } else {
                state.generation.drain().map(|(p, _)| p).collect()
            };
            let mut commit = TopicPartitionList::new();
            for partition in &revoked {
                if let Some(next) = state.durable.remove(partition) {
                    let _ = commit.add_partition_offset(
                        &partition.topic,
                        partition.partition,
                        Offset::Offset(next),
                    );
                }
            }
            // The next owner starts where this one's state is durable.
            if commit.count() > 0
                && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
            {
                warn!(consumer = %self.name, error = %e, "committing revoked partitions failed");
            }
            state.events.push(Event::Revoked(revoked.clone()));
            revoked
        };
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        info!(consumer = %self.name, partitions = revoked.len(), lost = consumer.assignment_lost(), "partitions revoked");
        let unassigned = if cooperative {
            consumer.incremental_unassign(tpl)
        } else {
            consumer.unassign()
        };
        if let Err(e) = unassigned {
            error!(consumer = %self.name, error = %e, "unassignment failed");
        }
    }
}

impl ConsumerContext for EngineContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        event: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match event {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                let code: rdkafka::error::RDKafkaErrorCode = other.into();
                error!(consumer = %self.name, error = %code, "rebalance failed");
                self.revoke(consumer, tpl);
            }
        }
    }
}
