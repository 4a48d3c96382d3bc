//! The query service's read model (DESIGN §2, stage 2): the receipts of `receipt-updates`, per
//! message its delivery counters, per conversation a rollup, and per receipt its timeline.
//!
//! Keys, all in one tree so a Kafka batch is one atomic write. Every key of a tenant's data starts
//! with its account sid, so a read made for one account can only ever reach that account's data.
//! Sids have a fixed length and no `/`, so the separators are unambiguous.
//! - `r/{account}/{conversation}/{message}/{receipt}` → `Receipt` (protobuf), the latest applied
//!   version; receipt sids order a message's receipts for paging;
//! - `t/{account}/{conversation}/{message}/{receipt}/{version}` → `TimelineEntry` (protobuf), one
//!   per applied version; the version is big-endian, so a prefix scan reads oldest first;
//! - `m/{account}/{conversation}/{message index}/{message}` → `StoredMessageDelivery`; the index is
//!   big-endian, so sled's byte order is message order in both directions;
//! - `n/{account}/{conversation}/{message}` → the message's index (big-endian), to find its record
//!   by sid;
//! - `c/{account}/{conversation}` → `StoredConversationRollup`;
//! - `o/{topic}/{partition}` → next offset.
//!
//! A receipt snapshot is applied only if its version is newer than the stored one, so re-delivered
//! and stale snapshots change nothing. Counters are moved by exactly the stored status and the new
//! one on every applied snapshot (DESIGN §3), never recounted.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::ops::Bound;
use std::path::Path;

use prost::Message;
use receipts_domain::{
    AccountSid, ChatServiceSid, ConversationSid, DeliveryStatus, DeliverySummary, MessageSid,
    Receipt, ReceiptChange, ReceiptSid, StatusCounts, StatusSource, Timestamp,
};
use receipts_proto::convert::{
    source_from_wire, source_to_wire, status_from_wire, status_to_wire, timestamp_from_wire,
    timestamp_to_wire,
};
use receipts_proto::v1;

use crate::StoreError;
use crate::offsets::{self, PartitionOffset};

/// What applying one batch of receipt changes did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Snapshots newer than the stored receipt, now applied.
    pub applied: u64,
    /// Snapshots of exactly the stored version: re-deliveries.
    pub duplicates: u64,
    /// Snapshots older than the stored version.
    pub stale: u64,
    /// Positions in the batch of the applied snapshots, in order: what watchers are told about.
    pub applied_positions: Vec<usize>,
}

/// One conversation message with its delivery counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    pub account: AccountSid,
    pub chat_service: Option<ChatServiceSid>,
    pub conversation: ConversationSid,
    pub message: MessageSid,
    pub index: u64,
    /// The greatest `expected_receipts` any of its receipts announced.
    pub expected_receipts: u64,
    /// Its receipts by current status.
    pub counts: StatusCounts,
    /// Derived from `expected_receipts` and `counts`.
    pub summary: DeliverySummary,
    /// The earliest creation time of its receipts.
    pub date_created: Timestamp,
    /// The latest update time of any applied receipt version.
    pub date_updated: Timestamp,
}

impl MessageView {
    /// Whether at least one of its receipts failed or was undelivered.
    pub fn has_failures(&self) -> bool {
        has_failures(&self.counts)
    }
}

/// Counters over one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollup {
    pub account: AccountSid,
    pub conversation: ConversationSid,
    pub messages: u64,
    /// Equal to `counts.receipts()`.
    pub receipts: u64,
    /// All its receipts by current status.
    pub counts: StatusCounts,
    /// Messages with at least one failed or undelivered receipt.
    pub messages_with_failures: u64,
    /// The latest update time of any applied receipt version.
    pub last_updated: Timestamp,
}

/// One applied version of a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub status: DeliveryStatus,
    /// The provider's word; empty while no report had arrived.
    pub raw_status: String,
    pub error_code: Option<u32>,
    /// `None` while no report had arrived.
    pub source: Option<StatusSource>,
    pub provider_time: Option<Timestamp>,
    pub version: u64,
}

impl TimelineEntry {
    fn of(receipt: &Receipt) -> Self {
        let report = receipt.report.as_ref();
        TimelineEntry {
            status: receipt.status(),
            raw_status: report.map(|r| r.raw_status.clone()).unwrap_or_default(),
            error_code: receipt.error_code(),
            source: report.map(|r| r.source),
            provider_time: report.map(|r| r.provider_time),
            version: receipt.version,
        }
    }
}

/// Which way to walk a conversation's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    Ascending,
    Descending,
}

/// One page of a listing. `next` is the cursor to pass as `after` for the following page, and
/// `None` on the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

/// The query service's storage. Implementations must write each [`QueryStore::apply`] atomically,
/// offsets included.
pub trait QueryStore: Send + Sync + 'static {
    /// Applies `batch` in order, each snapshot only if it is newer than the stored version of its
    /// receipt, and stores `offsets` in the same atomic write.
    fn apply(
        &self,
        batch: &[ReceiptChange],
        offsets: &[PartitionOffset],
    ) -> Result<ApplyStats, StoreError>;

    fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError>;

    fn receipt(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
        receipt: &ReceiptSid,
    ) -> Result<Option<Receipt>, StoreError>;

    /// A message's receipts ordered by receipt sid, at most `page_size` (at least one) of them,
    /// starting after the receipt sid `after`. An unknown message has no receipts.
    fn receipts_page(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
        page_size: usize,
        after: Option<&ReceiptSid>,
    ) -> Result<Page<Receipt, ReceiptSid>, StoreError>;

    fn message(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
    ) -> Result<Option<MessageView>, StoreError>;

    /// A conversation's messages ordered by message index, at most `page_size` (at least one) of
    /// them, starting after the message index `after` in the given order.
    fn messages_page(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        order: SortOrder,
        page_size: usize,
        after: Option<u64>,
    ) -> Result<Page<MessageView, u64>, StoreError>;

    fn rollup(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
    ) -> Result<Option<Rollup>, StoreError>;

    /// Every applied version of a receipt, oldest first; `None` for an unknown receipt.
    fn timeline(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
        receipt: &ReceiptSid,
    ) -> Result<Option<Vec<TimelineEntry>>, StoreError>;

    /// Makes every applied batch durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// [`QueryStore`] on sled.
#[derive(Debug, Clone)]
pub struct SledQueryStore {
    tree: sled::Tree,
    db: sled::Db,
}

impl SledQueryStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, &crate::StorageConfig::default())
    }

    pub fn open_with(dir: &Path, storage: &crate::StorageConfig) -> Result<Self, StoreError> {
        let db = crate::open_db_with(dir, storage)?;
        Ok(Self::from_db(db)?)
    }

    pub fn from_db(db: sled::Db) -> Result<Self, sled::Error> {
        Ok(SledQueryStore {
            tree: db.open_tree("query")?,
            db,
        })
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    fn get<T: Message + Default>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.tree
            .get(key)?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    fn load_receipt(&self, key: &[u8]) -> Result<Option<Receipt>, StoreError> {
        self.get::<v1::Receipt>(key)?
            .map(|stored| Receipt::try_from(&stored).map_err(|e| corrupt(key, e)))
            .transpose()
    }

    fn load_message(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let name_key = keys::message_name(account, conversation, message);
        let Some(index) = self.tree.get(&name_key)? else {
            return Ok(None);
        };
        let index: [u8; 8] = index
            .as_ref()
            .try_into()
            .map_err(|_| corrupt(&name_key, "message index is not 8 bytes"))?;
        let key = keys::message(account, conversation, u64::from_be_bytes(index), message);
        let stored = self
            .get::<v1::StoredMessageDelivery>(&key)?
            .ok_or_else(|| corrupt(&name_key, "names a message that is not stored"))?;
        MessageRecord::from_stored(&key, &stored).map(Some)
    }

    fn load_rollup(&self, key: &[u8]) -> Result<Option<RollupRecord>, StoreError> {
        Ok(self
            .get::<v1::StoredConversationRollup>(key)?
            .map(|stored| RollupRecord::from_stored(&stored)))
    }
}

impl QueryStore for SledQueryStore {
    fn apply(
        &self,
        batch: &[ReceiptChange],
        offsets: &[PartitionOffset],
    ) -> Result<ApplyStats, StoreError> {
        let mut overlay = Overlay::new(self);
        for (position, change) in batch.iter().enumerate() {
            if overlay.apply(&change.receipt)? {
                overlay.stats.applied_positions.push(position);
            }
        }
        let stats = std::mem::take(&mut overlay.stats);
        let mut write = overlay.into_write();
        for offset in offsets {
            offsets::write(&mut write, offset);
        }
        self.tree.apply_batch(write)?;
        Ok(stats)
    }

    fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        offsets::read(&self.tree, topic, partition)
    }

    fn receipt(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
        receipt: &ReceiptSid,
    ) -> Result<Option<Receipt>, StoreError> {
        self.load_receipt(&keys::receipt(account, conversation, message, receipt))
    }

    fn receipts_page(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
        page_size: usize,
        after: Option<&ReceiptSid>,
    ) -> Result<Page<Receipt, ReceiptSid>, StoreError> {
        let prefix = keys::receipts_of(account, conversation, message);
        let start = match after {
            Some(sid) => Bound::Excluded([prefix.as_slice(), sid.as_str().as_bytes()].concat()),
            None => Bound::Included(prefix.clone()),
        };
        let range = (start, Bound::Excluded(keys::prefix_end(&prefix)));
        Page::collect(
            page_size,
            self.tree.range(range),
            |key, value| {
                let stored: v1::Receipt = decode(key, value)?;
                Receipt::try_from(&stored).map_err(|e| corrupt(key, e))
            },
            |receipt| receipt.sid.clone(),
        )
    }

    fn message(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
    ) -> Result<Option<MessageView>, StoreError> {
        Ok(self
            .load_message(account, conversation, message)?
            .map(|record| record.view(account, conversation)))
    }

    fn messages_page(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        order: SortOrder,
        page_size: usize,
        after: Option<u64>,
    ) -> Result<Page<MessageView, u64>, StoreError> {
        let prefix = keys::messages_of(account, conversation);
        let at_index = |index: u64| [prefix.as_slice(), &index.to_be_bytes()].concat();
        let end = Bound::Excluded(keys::prefix_end(&prefix));
        let to_view = |key: &[u8], value: &[u8]| {
            let stored: v1::StoredMessageDelivery = decode(key, value)?;
            Ok(MessageRecord::from_stored(key, &stored)?.view(account, conversation))
        };
        let cursor = |view: &MessageView| view.index;
        match (order, after) {
            (SortOrder::Ascending, None) => Page::collect(
                page_size,
                self.tree.range((Bound::Included(prefix.clone()), end)),
                to_view,
                cursor,
            ),
            (SortOrder::Ascending, Some(after)) => match after.checked_add(1) {
                Some(next) => Page::collect(
                    page_size,
                    self.tree.range((Bound::Included(at_index(next)), end)),
                    to_view,
                    cursor,
                ),
                None => Ok(Page::empty()),
            },
            (SortOrder::Descending, after) => {
                let upper = after.map_or(end, |after| Bound::Excluded(at_index(after)));
                Page::collect(
                    page_size,
                    self.tree
                        .range((Bound::Included(prefix.clone()), upper))
                        .rev(),
                    to_view,
                    cursor,
                )
            }
        }
    }

    fn rollup(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
    ) -> Result<Option<Rollup>, StoreError> {
        Ok(self
            .load_rollup(&keys::rollup(account, conversation))?
            .map(|record| record.view(account, conversation)))
    }

    fn timeline(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
        receipt: &ReceiptSid,
    ) -> Result<Option<Vec<TimelineEntry>>, StoreError> {
        let mut entries = Vec::new();
        for item in
            self.tree
                .scan_prefix(keys::timeline_of(account, conversation, message, receipt))
        {
            let (key, value) = item?;
            let stored: v1::TimelineEntry = decode(&key, &value)?;
            entries.push(timeline_from_stored(&key, &stored)?);
        }
        // Every applied version adds an entry, so a known receipt never has an empty timeline.
        Ok((!entries.is_empty()).then_some(entries))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

impl<T, C> Page<T, C> {
    fn empty() -> Self {
        Page {
            items: Vec::new(),
            next: None,
        }
    }

    /// Up to `page_size` (at least one) items of `entries`, with the cursor of the last one when
    /// more follow.
    fn collect(
        page_size: usize,
        entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
        mut item: impl FnMut(&[u8], &[u8]) -> Result<T, StoreError>,
        cursor: impl FnOnce(&T) -> C,
    ) -> Result<Self, StoreError> {
        let page_size = page_size.max(1);
        let mut items = Vec::new();
        let mut more = false;
        for entry in entries {
            let (key, value) = entry?;
            if items.len() == page_size {
                more = true;
                break;
            }
            items.push(item(&key, &value)?);
        }
        let next = if more { items.last().map(cursor) } else { None };
        Ok(Page { items, next })
    }
}

fn has_failures(counts: &StatusCounts) -> bool {
    counts.failed + counts.undelivered > 0
}

/// A message as stored, without the account and conversation its key carries.
#[derive(Debug, Clone)]
struct MessageRecord {
    message: MessageSid,
    chat_service: Option<ChatServiceSid>,
    index: u64,
    expected_receipts: u64,
    counts: StatusCounts,
    date_created: Timestamp,
    date_updated: Timestamp,
}

impl MessageRecord {
    /// A message with no receipts yet, described by the first receipt that names it.
    fn first_seen(receipt: &Receipt) -> Self {
        let registration = &receipt.registration;
        MessageRecord {
            message: registration.message.clone(),
            chat_service: registration.chat_service.clone(),
            index: registration.message_index,
            expected_receipts: 0,
            counts: StatusCounts::default(),
            date_created: receipt.date_created(),
            date_updated: receipt.date_updated(),
        }
    }

    fn from_stored(key: &[u8], stored: &v1::StoredMessageDelivery) -> Result<Self, StoreError> {
        let chat_service = if stored.chat_service_sid.is_empty() {
            None
        } else {
            Some(ChatServiceSid::parse(&stored.chat_service_sid).map_err(|e| corrupt(key, e))?)
        };
        Ok(MessageRecord {
            message: MessageSid::parse(&stored.message_sid).map_err(|e| corrupt(key, e))?,
            chat_service,
            index: stored.message_index,
            expected_receipts: stored.expected_receipts,
            counts: stored.counts.as_ref().map(Into::into).unwrap_or_default(),
            date_created: stored
                .date_created
                .as_ref()
                .map_or(Timestamp::EPOCH, timestamp_from_wire),
            date_updated: stored
                .date_updated
                .as_ref()
                .map_or(Timestamp::EPOCH, timestamp_from_wire),
        })
    }

    fn to_stored(&self) -> v1::StoredMessageDelivery {
        v1::StoredMessageDelivery {
            message_sid: self.message.to_string(),
            chat_service_sid: self
                .chat_service
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            message_index: self.index,
            expected_receipts: self.expected_receipts,
            counts: Some((&self.counts).into()),
            date_created: Some(timestamp_to_wire(self.date_created)),
            date_updated: Some(timestamp_to_wire(self.date_updated)),
        }
    }

    fn view(self, account: &AccountSid, conversation: &ConversationSid) -> MessageView {
        MessageView {
            account: account.clone(),
            chat_service: self.chat_service,
            conversation: conversation.clone(),
            message: self.message,
            index: self.index,
            expected_receipts: self.expected_receipts,
            counts: self.counts,
            summary: DeliverySummary::new(self.expected_receipts, &self.counts),
            date_created: self.date_created,
            date_updated: self.date_updated,
        }
    }
}

/// A conversation's counters as stored.
#[derive(Debug, Clone, Default)]
struct RollupRecord {
    messages: u64,
    counts: StatusCounts,
    messages_with_failures: u64,
    last_updated: Timestamp,
}

impl RollupRecord {
    fn from_stored(stored: &v1::StoredConversationRollup) -> Self {
        RollupRecord {
            messages: stored.messages,
            counts: stored.counts.as_ref().map(Into::into).unwrap_or_default(),
            messages_with_failures: stored.messages_with_failures,
            last_updated: stored
                .last_updated
                .as_ref()
                .map_or(Timestamp::EPOCH, timestamp_from_wire),
        }
    }

    fn to_stored(&self) -> v1::StoredConversationRollup {
        v1::StoredConversationRollup {
            messages: self.messages,
            counts: Some((&self.counts).into()),
            messages_with_failures: self.messages_with_failures,
            last_updated: Some(timestamp_to_wire(self.last_updated)),
        }
    }

    fn view(self, account: &AccountSid, conversation: &ConversationSid) -> Rollup {
        Rollup {
            account: account.clone(),
            conversation: conversation.clone(),
            messages: self.messages,
            receipts: self.counts.receipts(),
            counts: self.counts,
            messages_with_failures: self.messages_with_failures,
            last_updated: self.last_updated,
        }
    }
}

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
struct Overlay<'a> {
    store: &'a SledQueryStore,
    receipts: HashMap<Vec<u8>, Slot<Receipt>>,
    messages: HashMap<(AccountSid, ConversationSid, MessageSid), Slot<MessageRecord>>,
    rollups: HashMap<(AccountSid, ConversationSid), Slot<RollupRecord>>,
    /// Timeline entries are never rewritten, so they go straight into the write.
    write: sled::Batch,
    stats: ApplyStats,
}

impl<'a> Overlay<'a> {
    fn new(store: &'a SledQueryStore) -> Self {
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
    fn apply(&mut self, receipt: &Receipt) -> Result<bool, StoreError> {
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
    fn into_write(self) -> sled::Batch {
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

fn timeline_to_stored(entry: &TimelineEntry) -> v1::TimelineEntry {
    v1::TimelineEntry {
        status: status_to_wire(entry.status).into(),
        raw_status: entry.raw_status.clone(),
        error_code: entry.error_code.unwrap_or(0),
        source: entry
            .source
            .map_or(v1::StatusSource::Unspecified, source_to_wire)
            .into(),
        provider_timestamp: entry.provider_time.map(timestamp_to_wire),
        version: entry.version,
    }
}

fn timeline_from_stored(
    key: &[u8],
    stored: &v1::TimelineEntry,
) -> Result<TimelineEntry, StoreError> {
    let status = status_from_wire("status", stored.status)
        .map_err(|e| corrupt(key, e))?
        .ok_or_else(|| corrupt(key, "timeline entry has no status"))?;
    // Entries of versions without a report have neither a source nor a provider time.
    let source = if stored.source == i32::from(v1::StatusSource::Unspecified) {
        None
    } else {
        Some(source_from_wire("source", stored.source).map_err(|e| corrupt(key, e))?)
    };
    Ok(TimelineEntry {
        status,
        raw_status: stored.raw_status.clone(),
        error_code: (stored.error_code != 0).then_some(stored.error_code),
        source,
        provider_time: stored.provider_timestamp.as_ref().map(timestamp_from_wire),
        version: stored.version,
    })
}

impl From<&TimelineEntry> for v1::TimelineEntry {
    fn from(entry: &TimelineEntry) -> Self {
        timeline_to_stored(entry)
    }
}

impl From<&MessageView> for v1::MessageDelivery {
    fn from(view: &MessageView) -> Self {
        v1::MessageDelivery {
            account_sid: view.account.to_string(),
            chat_service_sid: view
                .chat_service
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            conversation_sid: view.conversation.to_string(),
            message_sid: view.message.to_string(),
            message_index: view.index,
            delivery: Some((&view.summary).into()),
            date_created: Some(timestamp_to_wire(view.date_created)),
            date_updated: Some(timestamp_to_wire(view.date_updated)),
        }
    }
}

impl From<&Rollup> for v1::ConversationRollup {
    fn from(rollup: &Rollup) -> Self {
        v1::ConversationRollup {
            account_sid: rollup.account.to_string(),
            conversation_sid: rollup.conversation.to_string(),
            messages: rollup.messages,
            receipts: rollup.receipts,
            counts: Some((&rollup.counts).into()),
            messages_with_failures: rollup.messages_with_failures,
            last_updated: Some(timestamp_to_wire(rollup.last_updated)),
        }
    }
}

fn decode<T: Message + Default>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    T::decode(bytes).map_err(|e| corrupt(key, e))
}

fn corrupt(key: &[u8], reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

/// The key scheme of the module docs. Every tenant key starts with `{kind}/{account}/`.
mod keys {
    use receipts_domain::{AccountSid, ConversationSid, MessageSid, ReceiptSid};

    fn join(kind: &str, parts: &[&str]) -> Vec<u8> {
        let mut key = kind.as_bytes().to_vec();
        for part in parts {
            key.push(b'/');
            key.extend_from_slice(part.as_bytes());
        }
        key
    }

    /// Every key under `prefix` sorts before the returned key.
    pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
        let mut end = prefix.to_vec();
        // Our prefixes are ASCII and end in `/`, so the last byte can always grow.
        while let Some(last) = end.pop() {
            if let Some(next) = last.checked_add(1) {
                end.push(next);
                break;
            }
        }
        end
    }

    pub(super) fn receipts_of(
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
    ) -> Vec<u8> {
        let mut key = join(
            "r",
            &[account.as_str(), conversation.as_str(), message.as_str()],
        );
        key.push(b'/');
        key
    }

    pub(super) fn receipt(
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
        receipt: &ReceiptSid,
    ) -> Vec<u8> {
        let mut key = receipts_of(account, conversation, message);
        key.extend_from_slice(receipt.as_str().as_bytes());
        key
    }

    pub(super) fn timeline_of(
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
        receipt: &ReceiptSid,
    ) -> Vec<u8> {
        let mut key = join(
            "t",
            &[
                account.as_str(),
                conversation.as_str(),
                message.as_str(),
                receipt.as_str(),
            ],
        );
        key.push(b'/');
        key
    }

    pub(super) fn timeline_entry(
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
        receipt: &ReceiptSid,
        version: u64,
    ) -> Vec<u8> {
        let mut key = timeline_of(account, conversation, message, receipt);
        key.extend_from_slice(&version.to_be_bytes());
        key
    }

    pub(super) fn messages_of(account: &AccountSid, conversation: &ConversationSid) -> Vec<u8> {
        let mut key = join("m", &[account.as_str(), conversation.as_str()]);
        key.push(b'/');
        key
    }

    pub(super) fn message(
        account: &AccountSid,
        conversation: &ConversationSid,
        index: u64,
        message: &MessageSid,
    ) -> Vec<u8> {
        let mut key = messages_of(account, conversation);
        key.extend_from_slice(&index.to_be_bytes());
        key.push(b'/');
        key.extend_from_slice(message.as_str().as_bytes());
        key
    }

    pub(super) fn message_name(
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
    ) -> Vec<u8> {
        join(
            "n",
            &[account.as_str(), conversation.as_str(), message.as_str()],
        )
    }

    pub(super) fn rollup(account: &AccountSid, conversation: &ConversationSid) -> Vec<u8> {
        join("c", &[account.as_str(), conversation.as_str()])
    }
}
