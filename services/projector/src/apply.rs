//! Applying one batch of `delivery-events` records to the stored receipt states.
//!
//! This is the projector without Kafka: given records in log order, it loads each receipt's
//! state (an account's channel message), merges the event into it, and collects what the batch must publish
//! (receipt updates and dead letters) and store (states, parked index, next offsets). The caller
//! publishes first and stores second, so a crash in between replays the batch and re-publishes
//! identical updates (same sid, same version).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use receipts_bus::Record;
use receipts_bus::record::decode_delivery_event;
use receipts_domain::{
    DeliveryEventKind, ReceiptChange, ReceiptKey, ReceiptState, RegisterOutcome, ReportOutcome,
    Timestamp,
};
use receipts_store::{PartitionOffset, ProjectorBatch, ProjectorStore, StoreError};

/// A record that can never be applied, with where it came from.
#[derive(Debug)]
pub struct DeadLetter {
    pub record: Record,
    pub reason: String,
}

/// What applying a batch produced.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Receipt changes in the order they happened.
    pub updates: Vec<ReceiptChange>,
    /// The index, in the batch, of the record that caused each update (same order): the update
    /// continues that record's trace.
    pub update_sources: Vec<usize>,
    pub dead_letters: Vec<DeadLetter>,
    pub store: ProjectorBatch,
    /// The input partition of every state in `store.states` (same order): its changelog
    /// record goes to the same partition of the changelog.
    pub state_partitions: Vec<i32>,
    pub stats: BatchStats,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub records: u64,
    pub changed: u64,
    pub parked: u64,
    /// Reports that only added to a receipt's history: stored, not published.
    pub recorded: u64,
    pub unchanged: u64,
    pub dead_lettered: u64,
}

struct Loaded {
    state: ReceiptState,
    dirty: bool,
    partition: i32,
}

/// Applies `records` (in log order) on top of what `store` holds. `now` stamps newly parked
/// reports. Nothing is written: the outcome says what to publish and what to store.
pub fn apply_batch(
    store: &dyn ProjectorStore,
    records: &[Record],
    now: Timestamp,
) -> Result<BatchOutcome, StoreError> {
    let mut outcome = BatchOutcome::default();
    let mut states: HashMap<ReceiptKey, Loaded> = HashMap::new();
    let mut offsets: HashMap<(String, i32), i64> = HashMap::new();

    for (index, record) in records.iter().enumerate() {
        outcome.stats.records += 1;
        let next = record.offset() + 1;
        offsets
            .entry((record.topic().to_owned(), record.partition()))
            .and_modify(|o| *o = (*o).max(next))
            .or_insert(next);

        let event = match decode_delivery_event(record) {
            Ok(event) => event,
            Err(poison) => {
                outcome.dead_letter(record, &poison);
                continue;
            }
        };
        let id = event.receipt_key();
        let loaded = match states.entry(id.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(Loaded {
                state: store.state(&id)?.unwrap_or_default(),
                dirty: false,
                partition: record.partition(),
            }),
        };
        let was_parked = loaded.state.parked_report().is_some();
        match event.kind {
            DeliveryEventKind::Registered(registration) => {
                match loaded.state.register(registration) {
                    Ok(RegisterOutcome::Changed(change)) => {
                        loaded.dirty = true;
                        if was_parked {
                            outcome.store.unparked.push(id);
                        }
                        outcome.updates.push(change);
                        outcome.update_sources.push(index);
                        outcome.stats.changed += 1;
                    }
                    Ok(RegisterOutcome::Unchanged) => outcome.stats.unchanged += 1,
                    Err(conflict) => outcome.dead_letter(record, &conflict),
                }
            }
            DeliveryEventKind::Reported(report) => {
                let merged = loaded.state.merge_report(report);
                // A report that only adds to the history (a late `sent` after `delivered`)
                // changes the stored state, so it is stored and changelogged, but it leaves
                // the current receipt and its version alone and emits nothing.
                loaded.dirty |= merged.changed_state();
                match merged.outcome {
                    ReportOutcome::Changed(change) => {
                        outcome.updates.push(change);
                        outcome.update_sources.push(index);
                        outcome.stats.changed += 1;
                    }
                    ReportOutcome::Parked => {
                        if !was_parked {
                            outcome.store.parked.push((id, now));
                        }
                        outcome.stats.parked += 1;
                    }
                    ReportOutcome::Unchanged if merged.history_grew => {
                        outcome.stats.recorded += 1;
                    }
                    ReportOutcome::Unchanged => outcome.stats.unchanged += 1,
                }
            }
        }
    }

    for (id, loaded) in states.into_iter().filter(|(_, loaded)| loaded.dirty) {
        outcome.state_partitions.push(loaded.partition);
        outcome.store.states.push((id, loaded.state));
    }
    outcome.store.offsets = offsets
        .into_iter()
        .map(|((topic, partition), next_offset)| PartitionOffset {
            topic,
            partition,
            next_offset,
        })
        .collect();
    Ok(outcome)
}

impl BatchOutcome {
    fn dead_letter(&mut self, record: &Record, reason: &dyn std::fmt::Display) {
        self.stats.dead_lettered += 1;
        self.dead_letters.push(DeadLetter {
            record: record.clone(),
            reason: reason.to_string(),
        });
    }
}
