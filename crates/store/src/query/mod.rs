//! The query service's read model (DESIGN §2, stage 2): the receipts of `receipt-updates`, per
//! message its delivery counters, per conversation a rollup, and per receipt its timeline, which
//! follows the projector changelog's states.
//!
//! Keys, all in one tree so a Kafka batch is one atomic write (storage format 2, see `format`).
//! Every key of a tenant's data starts with its kind and then its account sid, so a read made for
//! one account can only ever reach that account's data. Sids are in the compact, self-delimiting
//! form of `compact` (17 bytes for a lowercase sid), written one after the other:
//! - `0x01 {account}{conversation}{message}{receipt}` → `StoredReceipt`, the latest applied
//!   version without the sids of its key; receipt sids order a message's receipts for paging;
//! - `0x02 {account}{conversation}{message}{receipt}` → `StoredTimeline`, the union of the
//!   receipt's states in the projector changelog;
//! - `0x03 {account}{conversation}{message index}{message}` → `StoredMessage`; the index
//!   is big-endian, so sled's byte order is message order in both directions;
//! - `0x04 {account}{conversation}{message}` → the message's index (big-endian), to find its
//!   record by sid;
//! - `0x05 {account}{conversation}` → `StoredConversationRollup`;
//! - `o/{topic}/{partition}` → next offset, of `receipt-updates` and of the projector changelog.
//!
//! Format 1 (releases up to 0.1) kept the same records under text keys, `r/`, `h/`, `m/`, `n/`
//! and `c/` followed by `/`-separated sids, with receipts and timelines in their wire forms, and
//! `t/…/{version}` entries nobody reads; such a tree is moved to format 2 when it is opened.
//!
//! The rules are the domain's ([`receipts_domain::delivery`], [`receipts_domain::rollup`],
//! [`receipts_domain::timeline`]): a receipt snapshot replaces the stored receipt only if its
//! version is newer, counters move by exactly the stored status and the new one (DESIGN §3), and a
//! timeline is a union of states that needs no version. This module only loads what a batch
//! touches and saves what it changed, in one atomic write with the offsets.
//!
//! Layout: the trait and the reads here; `overlay` applies a batch, `records` holds the stored
//! forms of receipts, messages, rollups and timelines, `keys` the key scheme, and `format1` what
//! a record of format 1 becomes.

use std::ops::Bound;
use std::path::Path;

use prost::Message;
use receipts_domain::{
    AccountSid, ConversationSid, MessageSid, Receipt, ReceiptChange, ReceiptSid, ReceiptState,
    ReceiptTimeline,
};
pub use receipts_domain::{
    ConversationRollup as Rollup, MessageDelivery as MessageView, TimelineEntry,
};
use receipts_proto::v1;

use crate::StoreError;
use crate::engine::{Engine, Entry, Fjall, Sled};
use crate::format;
use crate::offsets::{self, PartitionOffset};

mod format1;
mod keys;
mod overlay;
mod records;

use overlay::Overlay;

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

/// What applying one batch of projector changelog states to the timelines did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TimelineStats {
    /// States that added to their receipt's timeline (or began it).
    pub extended: u64,
    /// States whose every report the timeline already held.
    pub unchanged: u64,
    /// States without a registration: no receipt, so no timeline yet.
    pub unregistered: u64,
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

    /// Adds each registered state's history to its receipt's timeline, and stores `offsets`
    /// (the projector changelog's) in the same atomic write. A union: any order, duplicates and
    /// replays of the same states leave the same timelines.
    fn apply_timelines(
        &self,
        states: &[ReceiptState],
        offsets: &[PartitionOffset],
    ) -> Result<TimelineStats, StoreError>;

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

    /// A receipt's timeline: `queued` at its registration, then the earliest report of every
    /// status in (phase, provider time) order; `None` until a state of the receipt arrived from
    /// the projector changelog.
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

/// [`QueryStore`] on an [`Engine`]: sled ([`SledQueryStore`], the default) or fjall
/// ([`FjallQueryStore`]).
#[derive(Debug, Clone)]
pub struct ReadModelStore<E> {
    engine: E,
}

/// The read model on sled.
pub type SledQueryStore = ReadModelStore<Sled>;

/// The read model on fjall.
pub type FjallQueryStore = ReadModelStore<Fjall>;

impl ReadModelStore<Sled> {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, &crate::StorageConfig::default())
    }

    pub fn open_with(dir: &Path, storage: &crate::StorageConfig) -> Result<Self, StoreError> {
        let db = crate::open_db_with(dir, storage)?;
        Self::from_db(db)
    }

    /// The store in `db`, moved to the current storage format first if an earlier release
    /// wrote it.
    pub fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        let engine = Sled::open_tree(db, "query")?;
        format::ensure(&engine, "query", format1::moved)?;
        Ok(ReadModelStore { engine })
    }
}

impl ReadModelStore<Fjall> {
    /// The read model in the fjall database in `dir`.
    pub fn open_with(dir: &Path, storage: &crate::StorageConfig) -> Result<Self, StoreError> {
        Ok(ReadModelStore {
            engine: Fjall::open(dir, "query", storage)?,
        })
    }

    /// Writes what is in memory to tables and waits for the background compactions, so that
    /// the size on disk is the one the store settles at.
    pub fn settle(&self) -> Result<(), StoreError> {
        self.engine.settle()
    }
}

impl<E: Engine> ReadModelStore<E> {
    /// Bytes the engine uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.engine.size_on_disk()
    }

    /// Bytes of every key and value stored, before the engine's own layout.
    pub fn stored_bytes(&self) -> Result<u64, StoreError> {
        crate::engine::stored_bytes(&self.engine)
    }

    fn get<T: Message + Default>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.engine
            .get(key)?
            .map(|bytes| decode(key, bytes.as_ref()))
            .transpose()
    }

    fn load_receipt(&self, key: &[u8]) -> Result<Option<Receipt>, StoreError> {
        self.engine
            .get(key)?
            .map(|value| records::receipt_from(key, value.as_ref()))
            .transpose()
    }

    fn load_message(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
    ) -> Result<Option<MessageView>, StoreError> {
        let name_key = keys::message_name(account, conversation, message);
        let Some(index) = self.engine.get(&name_key)? else {
            return Ok(None);
        };
        let index: [u8; 8] = index
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::corrupt(&name_key, "message index is not 8 bytes"))?;
        let key = keys::message(account, conversation, u64::from_be_bytes(index), message);
        let value = self
            .engine
            .get(&key)?
            .ok_or_else(|| StoreError::corrupt(&name_key, "names a message that is not stored"))?;
        records::message_from(&key, value.as_ref(), account, conversation).map(Some)
    }

    fn load_rollup(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
    ) -> Result<Option<Rollup>, StoreError> {
        Ok(self
            .get::<v1::StoredConversationRollup>(&keys::rollup(account, conversation))?
            .map(|stored| records::rollup_from_stored(account, conversation, &stored)))
    }

    fn load_timeline(
        &self,
        key: &[u8],
        account: &AccountSid,
        sid: &ReceiptSid,
    ) -> Result<Option<ReceiptTimeline>, StoreError> {
        self.get::<records::StoredTimeline>(key)?
            .map(|stored| {
                stored
                    .timeline(account, sid.clone())
                    .map_err(|e| StoreError::corrupt(key, e))
            })
            .transpose()
    }
}

impl<E: Engine> QueryStore for ReadModelStore<E> {
    fn apply(
        &self,
        batch: &[ReceiptChange],
        offsets: &[PartitionOffset],
    ) -> Result<ApplyStats, StoreError> {
        let mut overlay = Overlay::new(self);
        let mut stats = ApplyStats::default();
        for (position, change) in batch.iter().enumerate() {
            if overlay.apply(&change.receipt, &mut stats)? {
                stats.applied_positions.push(position);
            }
        }
        let mut write = overlay.into_write();
        for offset in offsets {
            offsets::put(&mut write, offset);
        }
        self.engine.write(write)?;
        Ok(stats)
    }

    fn apply_timelines(
        &self,
        states: &[ReceiptState],
        offsets: &[PartitionOffset],
    ) -> Result<TimelineStats, StoreError> {
        let mut overlay = Overlay::new(self);
        let mut stats = TimelineStats::default();
        for state in states {
            overlay.apply_timeline(state, &mut stats)?;
        }
        let mut write = overlay.into_write();
        for offset in offsets {
            offsets::put(&mut write, offset);
        }
        self.engine.write(write)?;
        Ok(stats)
    }

    fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        offsets::read_from(&self.engine, topic, partition)
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
            Some(sid) => Bound::Excluded(keys::receipt(account, conversation, message, sid)),
            None => Bound::Included(prefix.clone()),
        };
        let entries = self
            .engine
            .range(start, Bound::Excluded(keys::prefix_end(&prefix)), false);
        Page::collect(page_size, entries, records::receipt_from, |receipt| {
            receipt.sid.clone()
        })
    }

    fn message(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
    ) -> Result<Option<MessageView>, StoreError> {
        self.load_message(account, conversation, message)
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
        let to_view =
            |key: &[u8], value: &[u8]| records::message_from(key, value, account, conversation);
        let cursor = |view: &MessageView| view.index;
        match (order, after) {
            (SortOrder::Ascending, None) => Page::collect(
                page_size,
                self.engine
                    .range(Bound::Included(prefix.clone()), end, false),
                to_view,
                cursor,
            ),
            (SortOrder::Ascending, Some(after)) => match after.checked_add(1) {
                Some(next) => Page::collect(
                    page_size,
                    self.engine
                        .range(Bound::Included(at_index(next)), end, false),
                    to_view,
                    cursor,
                ),
                None => Ok(Page::empty()),
            },
            (SortOrder::Descending, after) => {
                let upper = after.map_or(end, |after| Bound::Excluded(at_index(after)));
                Page::collect(
                    page_size,
                    self.engine
                        .range(Bound::Included(prefix.clone()), upper, true),
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
        self.load_rollup(account, conversation)
    }

    fn timeline(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        message: &MessageSid,
        receipt: &ReceiptSid,
    ) -> Result<Option<Vec<TimelineEntry>>, StoreError> {
        let key = keys::timeline(account, conversation, message, receipt);
        Ok(self
            .load_timeline(&key, account, receipt)?
            .map(|timeline| timeline.entries()))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.engine.flush()
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
        entries: impl Iterator<Item = Entry<impl AsRef<[u8]>>>,
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
            items.push(item(key.as_ref(), value.as_ref())?);
        }
        let next = if more { items.last().map(cursor) } else { None };
        Ok(Page { items, next })
    }
}

pub(super) fn decode<T: Message + Default>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    T::decode(bytes).map_err(|e| StoreError::corrupt(key, e))
}
