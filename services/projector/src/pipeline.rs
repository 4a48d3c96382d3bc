//! Two batches in flight: batch N+1 is applied and its updates handed to the producer while
//! batch N's acknowledgements, changelog records and sled write are still on their way.
//!
//! Invariants, in the order a batch goes through them:
//! - N+1 is applied on top of N's states before N is stored ([`Unstored`] holds them), so its
//!   updates carry the versions a never-pipelined projector would give them.
//! - N+1's receipt updates are handed to the one producer after N's, so updates of a key stay in
//!   order per partition.
//! - A batch's changelog records are handed over only after its updates and dead letters were
//!   acknowledged and after the batch before it was stored; its states and offsets are stored
//!   only after the changelog records were acknowledged. So batches are stored in order.
//! - If N fails, N+1 fails without storing anything; the engine forgets the unstored states
//!   ([`Handler::unsettled_dropped`](receipts_bus::Handler::unsettled_dropped)) and hands both
//!   over again. The updates already produced are re-produced identically (same sid, same
//!   version), which consumers ignore by version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prost::Message as _;
use receipts_bus::consume::Settling;
use receipts_bus::trace::record_span;
use receipts_bus::{Commit, Outgoing, Record};
use receipts_domain::{ReceiptKey, ReceiptState, Timestamp};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_store::{ParkedEntry, PartitionOffset, ProjectorBatch, ProjectorStore, StoreError};
use tokio::sync::oneshot;
use tracing::warn;

use crate::apply::{BatchOutcome, apply_batch};
use crate::{Projector, ProjectorError, cloudevents};

/// States of batches applied but not stored yet, each with the batch that last changed it.
#[derive(Debug, Default)]
pub(crate) struct Unstored {
    states: Mutex<HashMap<ReceiptKey, (u64, ReceiptState)>>,
}

impl Unstored {
    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<ReceiptKey, (u64, ReceiptState)>> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hold(&self, batch: u64, states: &[(ReceiptKey, ReceiptState)]) {
        let mut held = self.states();
        for (id, state) in states {
            held.insert(id.clone(), (batch, state.clone()));
        }
    }

    /// `batch` is stored: its states are read from the store again, unless a later batch
    /// changed them since.
    fn release(&self, batch: u64, states: &[(ReceiptKey, ReceiptState)]) {
        let mut held = self.states();
        for (id, _) in states {
            if held.get(id).is_some_and(|(by, _)| *by == batch) {
                held.remove(id);
            }
        }
    }

    pub(crate) fn clear(&self) {
        self.states().clear();
    }

    fn get(&self, id: &ReceiptKey) -> Option<ReceiptState> {
        self.states().get(id).map(|(_, state)| state.clone())
    }
}

/// The store as the next batch sees it: unstored states first.
struct Pending {
    store: Arc<dyn ProjectorStore>,
    unstored: Arc<Unstored>,
}

impl ProjectorStore for Pending {
    fn state(&self, id: &ReceiptKey) -> Result<Option<ReceiptState>, StoreError> {
        match self.unstored.get(id) {
            Some(state) => Ok(Some(state)),
            None => self.store.state(id),
        }
    }

    fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        self.store.next_offset(topic, partition)
    }

    fn commit(&self, batch: &ProjectorBatch) -> Result<(), StoreError> {
        self.store.commit(batch)
    }

    fn restore(
        &self,
        states: &[(ReceiptKey, ReceiptState, Timestamp)],
        position: &PartitionOffset,
    ) -> Result<(), StoreError> {
        self.store.restore(states, position)
    }

    fn parked(&self) -> Result<Vec<ParkedEntry>, StoreError> {
        self.store.parked()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.store.flush()
    }
}

/// Whether the batch handed over before the current one was stored; `None` once it is known
/// (or nothing came before).
pub(crate) type Stored = oneshot::Receiver<bool>;

impl Projector {
    /// Applies `records`, hands their updates and dead letters to the producer and returns the
    /// rest (acknowledgements, changelog, store) to settle while the next batch is applied.
    pub(crate) async fn pipeline_batch(
        &mut self,
        records: Arc<[Record]>,
    ) -> Result<Settling<ProjectorError>, ProjectorError> {
        let started = Instant::now();
        // One span per record, in the record's trace, lasting until its batch is stored; the
        // updates a record causes carry its span's context.
        let spans: Vec<tracing::Span> = records
            .iter()
            .map(|record| record_span(record, "apply", Some(&self.config.group_id)))
            .collect();
        let view = Pending {
            store: self.store.clone(),
            unstored: self.unstored.clone(),
        };
        let now = self.clock.now();
        let mut outcome =
            tokio::task::spawn_blocking(move || apply_batch(&view, &records, now)).await??;
        let derived = self.derived_events(&outcome, &spans);
        let handed = self.publisher.enqueue(&derived).await?;
        let batch = self.next_batch;
        self.next_batch += 1;
        self.unstored.hold(batch, &outcome.store.states);
        let (stored_tx, stored_rx) = oneshot::channel();
        let before = self.before.replace(stored_rx);
        let (publisher, store, unstored) = (
            self.publisher.clone(),
            self.store.clone(),
            self.unstored.clone(),
        );
        let (metrics, changelog_topic) = (
            self.metrics.clone(),
            self.config.topics.projector_changelog.clone(),
        );
        Ok(Settling::pending(async move {
            let settled = async {
                handed.landed().await?;
                // The changelog after the updates' acknowledgements: a state change in the
                // changelog is always one whose updates reached Kafka, so a partition restored
                // from it never holds a change whose update was lost with a crash in between.
                if let Some(before) = before
                    && before.await != Ok(true)
                {
                    return Err(ProjectorError::EarlierBatchNotStored);
                }
                let changelog = changelog_records(&changelog_topic, &outcome);
                let landed = publisher.send_all(&changelog).await?;
                outcome
                    .store
                    .offsets
                    .extend(changelog_positions(&changelog_topic, &landed));
                let batch_store = std::mem::take(&mut outcome.store);
                let store_states = {
                    let store = store.clone();
                    tokio::task::spawn_blocking(move || {
                        store.commit(&batch_store).map(|()| batch_store.states)
                    })
                    .await??
                };
                unstored.release(batch, &store_states);
                metrics.record(&outcome.stats);
                metrics
                    .updates_published
                    .inc_by(outcome.updates.len() as u64);
                metrics
                    .batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                drop(spans);
                Ok(Commit::Batch)
            }
            .await;
            let _ = stored_tx.send(settled.is_ok());
            settled
        }))
    }

    /// The batch's receipt updates (in the order they happened) and dead letters.
    fn derived_events(&self, outcome: &BatchOutcome, spans: &[tracing::Span]) -> Vec<Outgoing> {
        let topics = &self.config.topics;
        let mut derived = Vec::with_capacity(outcome.updates.len() + outcome.dead_letters.len());
        for (change, &source) in outcome.updates.iter().zip(&outcome.update_sources) {
            let key = change.receipt.registration.conversation.as_str();
            let payload = codec::encode(&v1::ReceiptUpdated::from(change), Encoding::Protobuf);
            let mut update = Outgoing::new(&topics.receipt_updates, key, payload)
                .content_type(Encoding::Protobuf)
                .traced(&spans[source]);
            for (name, value) in cloudevents::receipt_updated_headers(change) {
                update = update.header(name, value);
            }
            derived.push(update);
        }
        for dead in &outcome.dead_letters {
            warn!(
                origin = %dead.record.origin(),
                reason = %dead.reason,
                "delivery event dead-lettered"
            );
            derived.push(Outgoing::dead_letter(
                &topics.delivery_events_dlq,
                &dead.record,
                &dead.reason,
            ));
        }
        derived
    }
}

/// The changed states, input partition `p` to changelog partition `p`.
fn changelog_records(topic: &str, outcome: &BatchOutcome) -> Vec<Outgoing> {
    let states = outcome.store.states.iter().zip(&outcome.state_partitions);
    states
        .map(|((id, state), partition)| {
            let payload = v1::StoredReceiptState::from(state).encode_to_vec();
            Outgoing::new(topic, id.to_string(), payload)
                .to_partition(*partition)
                .content_type(Encoding::Protobuf)
        })
        .collect()
}

/// The changelog positions a batch reaches, stored with it.
fn changelog_positions(topic: &str, landed: &[receipts_bus::Landed]) -> Vec<PartitionOffset> {
    let mut positions: Vec<PartitionOffset> = Vec::new();
    for at in landed {
        match positions.iter_mut().find(|p| p.partition == at.partition) {
            Some(p) => p.next_offset = p.next_offset.max(at.offset + 1),
            None => positions.push(PartitionOffset {
                topic: topic.to_owned(),
                partition: at.partition,
                next_offset: at.offset + 1,
            }),
        }
    }
    positions
}

#[cfg(test)]
mod tests {
    use receipts_domain::{AccountSid, ChannelMessageId};

    use super::*;

    fn key(id: &str) -> ReceiptKey {
        ReceiptKey::new(
            AccountSid::parse("AC00000000000000000000000000000001").unwrap(),
            ChannelMessageId::parse(id).unwrap(),
        )
    }

    #[test]
    fn a_stored_batch_releases_only_the_states_no_later_batch_changed() {
        let unstored = Unstored::default();
        let (a, b) = (key("wamid.a"), key("wamid.b"));
        let state = ReceiptState::default();
        unstored.hold(0, &[(a.clone(), state.clone()), (b.clone(), state.clone())]);
        unstored.hold(1, &[(b.clone(), state.clone())]);

        unstored.release(0, &[(a.clone(), state.clone()), (b.clone(), state.clone())]);
        assert!(
            unstored.get(&a).is_none(),
            "batch 0 is stored: read a from the store"
        );
        assert!(
            unstored.get(&b).is_some(),
            "batch 1 changed b and is not stored"
        );

        unstored.release(1, &[(b.clone(), state.clone())]);
        assert!(unstored.get(&b).is_none());

        unstored.hold(2, &[(a.clone(), state)]);
        unstored.clear();
        assert!(
            unstored.get(&a).is_none(),
            "dropped batches leave nothing behind"
        );
    }
}
