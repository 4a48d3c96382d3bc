//! One batch's changes on top of what the tree holds, read at most once per key and written in
//! one atomic batch. The rules of each change are the domain's; this only loads and saves.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use prost::Message;
use receipts_domain::{
    AccountSid, ConversationRollup, ConversationSid, MessageDelivery, MessageSid, Receipt,
    ReceiptState, ReceiptTimeline, Verdict,
};

use super::{ApplyStats, ReadModelStore, TimelineStats, keys, records};
use crate::StoreError;
use crate::engine::{Engine, Write};

/// A value read at most once per batch, and whether the batch changed it.
#[derive(Debug)]
struct Slot<T> {
    value: Option<T>,
    dirty: bool,
    /// Nothing was stored when the batch first touched it.
    new: bool,
}

impl<T: PartialEq> Slot<T> {
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
                    new: value.is_none(),
                    value,
                    dirty: false,
                })
            }
        })
    }

    /// Holds `value` from now on; it is written only if it differs from what was held.
    fn set(&mut self, value: T) -> bool {
        if self.value.as_ref() == Some(&value) {
            return false;
        }
        self.value = Some(value);
        self.dirty = true;
        true
    }
}

type MessageKey = (AccountSid, ConversationSid, MessageSid);

/// What one batch has changed so far, on top of what the tree holds. A receipt, message,
/// conversation or timeline is read from the tree the first time the batch touches it; later
/// changes in the same batch see the batch's own writes, so several versions of one receipt in a
/// batch are applied one after the other.
pub(super) struct Overlay<'a, E> {
    store: &'a ReadModelStore<E>,
    receipts: HashMap<Vec<u8>, Slot<Receipt>>,
    messages: HashMap<MessageKey, Slot<MessageDelivery>>,
    rollups: HashMap<(AccountSid, ConversationSid), Slot<ConversationRollup>>,
    timelines: HashMap<Vec<u8>, Slot<ReceiptTimeline>>,
}

impl<'a, E: Engine> Overlay<'a, E> {
    pub(super) fn new(store: &'a ReadModelStore<E>) -> Self {
        Overlay {
            store,
            receipts: HashMap::new(),
            messages: HashMap::new(),
            rollups: HashMap::new(),
            timelines: HashMap::new(),
        }
    }

    /// Applies one snapshot by the domain's version verdict; says whether it replaced the
    /// stored receipt.
    pub(super) fn apply(
        &mut self,
        receipt: &Receipt,
        stats: &mut ApplyStats,
    ) -> Result<bool, StoreError> {
        let registration = &receipt.registration;
        let (account, conversation, message) = (
            &registration.account,
            &registration.conversation,
            &registration.message,
        );
        let store = self.store;

        let receipt_key = keys::receipt(account, conversation, message, &receipt.sid);
        let stored = Slot::load(&mut self.receipts, receipt_key, |key| {
            store.load_receipt(key)
        })?;
        let verdict = Verdict::of(stored.value.as_ref(), receipt);
        match verdict {
            // The stored receipt itself: nothing it could change.
            Verdict::Duplicate => {
                stats.duplicates += 1;
                return Ok(false);
            }
            Verdict::Stale => stats.stale += 1,
            Verdict::Newer { .. } => {
                stored.set(receipt.clone());
                stats.applied += 1;
            }
        }

        let message_key = (account.clone(), conversation.clone(), message.clone());
        let slot = Slot::load(&mut self.messages, message_key, |_| {
            store.load_message(account, conversation, message)
        })?;
        let before = slot.value.clone();
        let after = before
            .clone()
            .unwrap_or_else(|| MessageDelivery::of(receipt))
            .apply(receipt, verdict);
        slot.set(after.clone());

        let slot = Slot::load(
            &mut self.rollups,
            (account.clone(), conversation.clone()),
            |_| store.load_rollup(account, conversation),
        )?;
        let rollup = slot
            .value
            .clone()
            .unwrap_or_else(|| ConversationRollup::empty(account.clone(), conversation.clone()))
            .apply(receipt, verdict, before.as_ref(), &after);
        slot.set(rollup);
        Ok(verdict.is_newer())
    }

    /// Adds a projector state to its receipt's timeline.
    pub(super) fn apply_timeline(
        &mut self,
        state: &ReceiptState,
        stats: &mut TimelineStats,
    ) -> Result<(), StoreError> {
        let Some(registration) = &state.registration else {
            stats.unregistered += 1;
            return Ok(());
        };
        let sid = registration.receipt_sid();
        let key = keys::timeline(
            &registration.account,
            &registration.conversation,
            &registration.message,
            &sid,
        );
        let store = self.store;
        let slot = Slot::load(&mut self.timelines, key, |key| {
            store.load_timeline(key, &registration.account, &sid)
        })?;
        let timeline = match slot.value.clone() {
            Some(timeline) => timeline.apply(state),
            None => ReceiptTimeline::of(state).expect("the state is registered"),
        };
        if slot.set(timeline) {
            stats.extended += 1;
        } else {
            stats.unchanged += 1;
        }
        Ok(())
    }

    /// The batch's writes, for one atomic apply.
    pub(super) fn into_write(self) -> Write {
        let mut write = Write::default();
        for (key, slot) in self.receipts {
            if let (true, Some(receipt)) = (slot.dirty, slot.value) {
                write.insert(key, records::StoredReceipt::from(&receipt).encode_to_vec());
            }
        }
        for ((account, conversation, message), slot) in self.messages {
            if let (true, Some(record)) = (slot.dirty, slot.value) {
                // A message keeps the index it was created with, so its name is written once.
                if slot.new {
                    write.insert(
                        keys::message_name(&account, &conversation, &message),
                        record.index.to_be_bytes(),
                    );
                }
                write.insert(
                    keys::message(&account, &conversation, record.index, &message),
                    records::StoredMessage::from(&record).encode_to_vec(),
                );
            }
        }
        for ((account, conversation), slot) in self.rollups {
            if let (true, Some(rollup)) = (slot.dirty, slot.value) {
                write.insert(
                    keys::rollup(&account, &conversation),
                    records::rollup_to_stored(&rollup).encode_to_vec(),
                );
            }
        }
        for (key, slot) in self.timelines {
            if let (true, Some(timeline)) = (slot.dirty, slot.value) {
                write.insert(key, records::StoredTimeline::new(&timeline).encode_to_vec());
            }
        }
        write
    }
}
