//! A conversation message's delivery counters as the query read model keeps them, and the version
//! gate every receipt snapshot passes on its way in.
//!
//! The read model holds the latest version of every receipt it was sent. A snapshot newer than
//! that moves its message's counters by exactly the held status and its own (DESIGN §3), never by
//! a recount; an older one (stale) or the same one (a re-delivery) moves no counter. The
//! message's bounds (expected receipts, creation and update times) are folded over every
//! snapshot seen, so they too end the same whatever order the snapshots came in: the aggregate is
//! a function of the set of snapshots.

use crate::ids::{AccountSid, ChatServiceSid, ConversationSid, MessageSid};
use crate::receipt::Receipt;
use crate::status::DeliveryStatus;
use crate::summary::{DeliverySummary, StatusCounts};
use crate::time::Timestamp;

/// A receipt snapshot judged against the version of its receipt a read model holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than the held version, or the first of its receipt: the receipt moves from
    /// `previous` (`None`: it was not held) to the snapshot's status.
    Newer { previous: Option<DeliveryStatus> },
    /// The held version itself, delivered again.
    Duplicate,
    /// Older than the held version.
    Stale,
}

impl Verdict {
    /// The verdict on `snapshot` given the `held` version of its receipt.
    ///
    /// The move starts at the held status, not at the snapshot's `previous_status`: the two
    /// differ only when a version never reached the read model, and then only the held one keeps
    /// the counters equal to a recount.
    pub fn of(held: Option<&Receipt>, snapshot: &Receipt) -> Self {
        match held {
            Some(held) if held.version == snapshot.version => Verdict::Duplicate,
            Some(held) if held.version > snapshot.version => Verdict::Stale,
            held => Verdict::Newer {
                previous: held.map(Receipt::status),
            },
        }
    }

    /// Whether the snapshot replaces the held receipt.
    pub fn is_newer(self) -> bool {
        matches!(self, Verdict::Newer { .. })
    }
}

/// One conversation message with its delivery counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageDelivery {
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
    /// The latest update time of any receipt version seen.
    pub date_updated: Timestamp,
}

impl MessageDelivery {
    /// The message `receipt` belongs to, before any receipt is counted.
    pub fn of(receipt: &Receipt) -> Self {
        let registration = &receipt.registration;
        MessageDelivery {
            account: registration.account.clone(),
            chat_service: registration.chat_service.clone(),
            conversation: registration.conversation.clone(),
            message: registration.message.clone(),
            index: registration.message_index,
            expected_receipts: 0,
            counts: StatusCounts::default(),
            summary: DeliverySummary::new(0, &StatusCounts::default()),
            date_created: receipt.date_created(),
            date_updated: receipt.date_updated(),
        }
    }

    /// The message after one of its receipts' snapshots, judged `verdict`.
    pub fn apply(mut self, snapshot: &Receipt, verdict: Verdict) -> Self {
        if let Verdict::Newer { previous } = verdict {
            self.counts.record(previous, snapshot.status());
        }
        self.expected_receipts = self
            .expected_receipts
            .max(u64::from(snapshot.registration.expected_receipts));
        self.date_created = self.date_created.min(snapshot.date_created());
        self.date_updated = self.date_updated.max(snapshot.date_updated());
        self.summary = DeliverySummary::new(self.expected_receipts, &self.counts);
        self
    }

    /// Whether at least one of its receipts failed or was undelivered.
    pub fn has_failures(&self) -> bool {
        self.counts.failed + self.counts.undelivered > 0
    }
}
