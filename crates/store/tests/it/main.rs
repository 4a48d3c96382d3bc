//! Integration tests of the stores, driven only through the crate's public API.
//!
//! - `query`: the query read model on worked examples: the docs' five-recipient message,
//!   duplicates and stale versions, several versions of one receipt in a batch, offsets across a
//!   reopen, paging in both orders, and tenant isolation;
//! - `query_properties`: random receipt histories, re-delivered and split into random batches,
//!   give the read model of applying each change exactly once, and its counters equal a recount.
//!
//! The helpers below build registrations and reports with fixed sids, and [`Projector`] plays
//! stage 1: it runs the domain's merge per channel message and collects the receipt changes it
//! would publish and the states it would changelog, so versions, previous statuses and histories
//! are real.

mod query;
mod query_properties;

use std::collections::BTreeMap;

use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryStatus, MessageSid,
    ParticipantSid, Receipt, ReceiptChange, ReceiptSid, ReceiptState, RegisterOutcome,
    Registration, ReportOutcome, StatusReport, StatusSource, Timestamp, map_provider_status,
};
use receipts_store::{
    FjallQueryStore, MessageView, PartitionOffset, QueryStore, Rollup, SledQueryStore, SortOrder,
    StorageConfig, StorageEngine, TimelineEntry,
};

pub(crate) const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub(crate) const OTHER_ACCOUNT: &str = "AC11111111111111111111111111111111";
pub(crate) const CONVERSATION: &str = "CH0123456789abcdef0123456789abcdef";
pub(crate) const TOPIC: &str = "receipts.receipt-updates.v1";

pub(crate) fn account() -> AccountSid {
    AccountSid::parse(ACCOUNT).unwrap()
}

pub(crate) fn conversation() -> ConversationSid {
    ConversationSid::parse(CONVERSATION).unwrap()
}

/// The sid of the test conversation's message with index `index`.
pub(crate) fn message_sid(index: u64) -> MessageSid {
    MessageSid::derive(&[&index.to_string()])
}

/// Milliseconds after a fixed instant (2024-11-19T07:06:40Z), so times read as small numbers.
pub(crate) fn at(millis: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_732_000_000_000 + millis)
}

pub(crate) fn channel_message(id: &str) -> ChannelMessageId {
    ChannelMessageId::parse(id).expect("test channel message ids are valid")
}

/// The registration of channel message `id` for message `index` of the test conversation of
/// `account`, created at `at(0)`.
pub(crate) fn registration_of(
    account: &str,
    index: u64,
    id: &str,
    channel: Channel,
    expected_receipts: u32,
) -> Registration {
    Registration {
        account: AccountSid::parse(account).unwrap(),
        chat_service: None,
        conversation: conversation(),
        message: message_sid(index),
        message_index: index,
        participant: ParticipantSid::derive(&[id]),
        channel,
        channel_message_id: channel_message(id),
        expected_receipts,
        registered_at: at(0),
    }
}

pub(crate) fn registration(index: u64, id: &str, expected_receipts: u32) -> Registration {
    registration_of(ACCOUNT, index, id, Channel::Sms, expected_receipts)
}

/// A report in a provider's own words, mapped the way ingest maps it.
pub(crate) fn provider_report(
    id: &str,
    source: StatusSource,
    raw: &str,
    error_code: Option<u32>,
    millis: i64,
) -> StatusReport {
    StatusReport {
        account: AccountSid::parse(ACCOUNT).unwrap(),
        channel_message_id: channel_message(id),
        status: map_provider_status(source, raw).expect("test provider statuses are known"),
        raw_status: raw.to_owned(),
        error_code,
        provider_time: at(millis),
        source,
    }
}

/// A report in canonical words.
pub(crate) fn report(id: &str, status: DeliveryStatus, millis: i64) -> StatusReport {
    provider_report(id, StatusSource::Canonical, status.as_str(), None, millis)
}

/// Stage 1 for the tests: a state per channel message, every change it would publish and every
/// changed state it would write to its changelog, in order.
#[derive(Debug, Default)]
pub(crate) struct Projector {
    states: BTreeMap<ChannelMessageId, ReceiptState>,
    pub(crate) changes: Vec<ReceiptChange>,
    pub(crate) changelog: Vec<ReceiptState>,
}

impl Projector {
    pub(crate) fn register(&mut self, registration: Registration) {
        let state = self
            .states
            .entry(registration.channel_message_id.clone())
            .or_default();
        if let RegisterOutcome::Changed(change) = state
            .register(registration)
            .expect("test registrations do not conflict")
        {
            self.changes.push(change);
            self.changelog.push(state.clone());
        }
    }

    pub(crate) fn report(&mut self, report: StatusReport) {
        let state = self
            .states
            .entry(report.channel_message_id.clone())
            .or_default();
        let merged = state.merge_report(report);
        if merged.changed_state() {
            self.changelog.push(state.clone());
        }
        if let ReportOutcome::Changed(change) = merged.outcome {
            self.changes.push(change);
        }
    }

    /// Every registered receipt as it finally is.
    pub(crate) fn receipts(&self) -> impl Iterator<Item = Receipt> + '_ {
        self.states.values().filter_map(ReceiptState::receipt)
    }

    pub(crate) fn receipt(&self, id: &str) -> Receipt {
        self.states[&channel_message(id)]
            .receipt()
            .expect("the receipt is registered")
    }
}

/// A fresh store in its own directory.
pub(crate) fn open() -> (tempfile::TempDir, SledQueryStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledQueryStore::open(dir.path()).unwrap();
    (dir, store)
}

/// A fresh read model on `engine` in its own directory.
pub(crate) fn open_on(engine: StorageEngine) -> (tempfile::TempDir, Box<dyn QueryStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Box<dyn QueryStore> = match engine {
        StorageEngine::Sled => Box::new(SledQueryStore::open(dir.path()).unwrap()),
        StorageEngine::Fjall => {
            Box::new(FjallQueryStore::open_with(dir.path(), &StorageConfig::default()).unwrap())
        }
    };
    (dir, store)
}

/// The store in `dir`, opened again (opening waits while a dropped instance lets go of the lock).
pub(crate) fn reopen(dir: &std::path::Path) -> SledQueryStore {
    SledQueryStore::open(dir).expect("the store reopens")
}

pub(crate) fn offset(next_offset: i64) -> PartitionOffset {
    PartitionOffset {
        topic: TOPIC.into(),
        partition: 0,
        next_offset,
    }
}

/// Everything the read model answers about one conversation of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadModel {
    pub(crate) rollup: Option<Rollup>,
    pub(crate) messages: Vec<MessageView>,
    /// Per message, its receipts with their timelines (`None` until a state of the receipt was
    /// applied to the timelines).
    pub(crate) receipts: Vec<Vec<(Receipt, Option<Vec<TimelineEntry>>)>>,
}

/// Reads the whole conversation through the paged API.
pub(crate) fn read_model(store: &dyn QueryStore, account: &AccountSid) -> ReadModel {
    let conversation = conversation();
    let messages = all_messages(store, account, SortOrder::Ascending, 100);
    let receipts = messages
        .iter()
        .map(|view| {
            all_receipts(store, account, &view.message, 100)
                .into_iter()
                .map(|receipt| {
                    let timeline = store
                        .timeline(account, &conversation, &view.message, &receipt.sid)
                        .unwrap();
                    (receipt, timeline)
                })
                .collect()
        })
        .collect();
    ReadModel {
        rollup: store.rollup(account, &conversation).unwrap(),
        messages,
        receipts,
    }
}

/// Every message of the test conversation, walked page by page.
pub(crate) fn all_messages(
    store: &dyn QueryStore,
    account: &AccountSid,
    order: SortOrder,
    page_size: usize,
) -> Vec<MessageView> {
    let mut views = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .messages_page(account, &conversation(), order, page_size, after)
            .unwrap();
        assert!(page.items.len() <= page_size);
        views.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return views,
        }
    }
}

/// Every receipt of a message, walked page by page.
pub(crate) fn all_receipts(
    store: &dyn QueryStore,
    account: &AccountSid,
    message: &MessageSid,
    page_size: usize,
) -> Vec<Receipt> {
    let mut receipts = Vec::new();
    let mut after: Option<ReceiptSid> = None;
    loop {
        let page = store
            .receipts_page(account, &conversation(), message, page_size, after.as_ref())
            .unwrap();
        assert!(page.items.len() <= page_size);
        receipts.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return receipts,
        }
    }
}
