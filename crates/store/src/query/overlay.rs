//! One batch's changes on top of what the tree holds, read at most once per key and written in
//! one atomic batch.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use prost::Message;
use receipts_domain::{AccountSid, ConversationSid, MessageSid, Receipt};
use receipts_proto::v1;

use super::records::{MessageRecord, RollupRecord, timeline_to_stored};
use super::{ApplyStats, SledQueryStore, TimelineEntry, has_failures, keys};
use crate::StoreError;

/// A value read at most once per batch, and whether the batch changed it.
#[derive(Debug)]
struct Slot<T> {
    value: Option<T>,
    dirty: bool,
}

impl<T> Slot<T> {
    /// The slot of `key` in `slots`, read with `load` the first time the batch touches it.
    fn load<K: Eq + Hash>(
        slots: &mut HashMap<K, Slot<T>>,
        key: K,
        load: impl FnOnce(&K) -> Result<Option<T>, StoreError>,
    ) -> Result<&mut Slot<T>, StoreError> {
        Ok(match slots.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let value = load(entry.key())?;
                entry.insert(Slot {
                    value,
                    dirty: false,
                })
            }
        })
    }
}

/// What one batch has changed so far, on top of what the tree holds. A receipt, message or
/// conversation is read from the tree the first time the batch touches it; later changes in the
/// same batch see the batch's own writes, so several versions of one receipt in a batch are
/// applied one after the other.
pub(super) struct Overlay<'a> {
    store: &'a SledQueryStore,
    receipts: HashMap<Vec<u8>, Slot<Receipt>>,
    messages: HashMap<(AccountSid, ConversationSid, MessageSid), Slot<MessageRecord>>,
    rollups: HashMap<(AccountSid, ConversationSid), Slot<RollupRecord>>,
    /// Timeline entries are never rewritten, so they go straight into the write.
    write: sled::Batch,
    pub(super) stats: ApplyStats,
}

impl<'a> Overlay<'a> {
    pub(super) fn new(store: &'a SledQueryStore) -> Self {
        Overlay {
            store,
            receipts: HashMap::new(),
            messages: HashMap::new(),
            rollups: HashMap::new(),
            write: sled::Batch::default(),
            stats: ApplyStats::default(),
        }
    }

    /// Applies one snapshot if it is newer than the stored one; says whether it was.
    pub(super) fn apply(&mut self, receipt: &Receipt) -> Result<bool, StoreError> {
        let registration = &receipt.registration;
        let (account, conversation, message) = (
            &registration.account,
            &registration.conversation,
            &registration.message,
        );

        let receipt_key = keys::receipt(account, conversation, message, &receipt.sid);
        let store = self.store;
        let stored = Slot::load(&mut self.receipts, receipt_key, |key| {
            store.load_receipt(key)
        })?;
        let previous = match &stored.value {
            Some(current) if current.version == receipt.version => {
                self.stats.duplicates += 1;
                return Ok(false);
            }
            Some(current) if current.version > receipt.version => {
                self.stats.stale += 1;
                return Ok(false);
            }
            // The counters hold the stored status, not the snapshot's `previous_status`: the two
            // differ only if a version never reached us, and then only the stored one keeps the
            // counters equal to a recount.
            current => current.as_ref().map(Receipt::status),
        };
        let status = receipt.status();
        stored.value = Some(receipt.clone());
        stored.dirty = true;
        self.stats.applied += 1;

        let timeline_key = keys::timeline_entry(
            account,
            conversation,
            message,
            &receipt.sid,
            receipt.version,
        );
        self.write.insert(
            timeline_key,
            timeline_to_stored(&TimelineEntry::of(receipt)).encode_to_vec(),
        );

        let message_key = (account.clone(), conversation.clone(), message.clone());
        let slot = Slot::load(&mut self.messages, message_key, |_| {
            store.load_message(account, conversation, message)
        })?;
        let new_message = slot.value.is_none();
        let record = slot
            .value
            .get_or_insert_with(|| MessageRecord::first_seen(receipt));
        slot.dirty = true;
        let had_failures = has_failures(&record.counts);
        record.counts.record(previous, status);
        let has_failures_now = has_failures(&record.counts);
        record.expected_receipts = record
            .expected_receipts
            .max(u64::from(registration.expected_receipts));
        record.date_created = record.date_created.min(receipt.date_created());
        record.date_updated = record.date_updated.max(receipt.date_updated());

        let rollup_key = (account.clone(), conversation.clone());
        let slot = Slot::load(&mut self.rollups, rollup_key, |_| {
            store.load_rollup(&keys::rollup(account, conversation))
        })?;
        let rollup = slot.value.get_or_insert_with(RollupRecord::default);
        slot.dirty = true;
        if new_message {
            rollup.messages += 1;
        }
        rollup.counts.record(previous, status);
        // A message counts as failing while any of its receipts is failed or undelivered; only
        // its 0 ↔ >0 transitions move the conversation's count.
        match (had_failures, has_failures_now) {
            (false, true) => rollup.messages_with_failures += 1,
            (true, false) => {
                rollup.messages_with_failures = rollup.messages_with_failures.saturating_sub(1);
            }
            _ => {}
        }
        rollup.last_updated = rollup.last_updated.max(receipt.date_updated());
        Ok(true)
    }

    /// The batch's writes, for one atomic apply.
    pub(super) fn into_write(self) -> sled::Batch {
        let mut write = self.write;
        for (key, slot) in self.receipts {
            if let (true, Some(receipt)) = (slot.dirty, slot.value) {
                write.insert(key, v1::Receipt::from(&receipt).encode_to_vec());
            }
        }
        for ((account, conversation, message), slot) in self.messages {
            if let (true, Some(record)) = (slot.dirty, slot.value) {
                write.insert(
                    keys::message_name(&account, &conversation, &message),
                    &record.index.to_be_bytes(),
                );
                write.insert(
                    keys::message(&account, &conversation, record.index, &message),
                    record.to_stored().encode_to_vec(),
                );
            }
        }
        for ((account, conversation), slot) in self.rollups {
            if let (true, Some(rollup)) = (slot.dirty, slot.value) {
                write.insert(
                    keys::rollup(&account, &conversation),
                    rollup.to_stored().encode_to_vec(),
                );
            }
        }
        write
    }
}
