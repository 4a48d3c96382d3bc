//! The per-message delivery summary: exact counts of receipts by current status, and the
//! `none`/`some`/`all` rendering of the cumulative buckets against `total`.
//!
//! Counters move by exactly the old and the new status of each change, so a summary is never
//! recounted; the property tests check that this equals a recount from scratch.

use std::fmt;

use crate::status::DeliveryStatus;

/// How many receipts of one message are currently in each status. Chat participants have no
/// receipts and so never appear here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusCounts {
    pub queued: u64,
    pub sent: u64,
    pub delivered: u64,
    pub undelivered: u64,
    pub failed: u64,
    pub read: u64,
}

impl StatusCounts {
    fn slot(&mut self, status: DeliveryStatus) -> &mut u64 {
        match status {
            DeliveryStatus::Queued => &mut self.queued,
            DeliveryStatus::Sent => &mut self.sent,
            DeliveryStatus::Delivered => &mut self.delivered,
            DeliveryStatus::Undelivered => &mut self.undelivered,
            DeliveryStatus::Failed => &mut self.failed,
            DeliveryStatus::Read => &mut self.read,
        }
    }

    pub fn get(&self, status: DeliveryStatus) -> u64 {
        let mut copy = *self;
        *copy.slot(status)
    }

    /// Moves one receipt from `previous` (`None`: a new receipt) to `current`.
    pub fn record(&mut self, previous: Option<DeliveryStatus>, current: DeliveryStatus) {
        if let Some(previous) = previous {
            let slot = self.slot(previous);
            *slot = slot.saturating_sub(1);
        }
        *self.slot(current) += 1;
    }

    /// Every receipt counted, whatever its status.
    pub fn receipts(&self) -> u64 {
        self.queued + self.sent + self.delivered + self.undelivered + self.failed + self.read
    }

    /// Recounts from a list of current statuses.
    pub fn recount(statuses: impl IntoIterator<Item = DeliveryStatus>) -> Self {
        let mut counts = Self::default();
        for status in statuses {
            counts.record(None, status);
        }
        counts
    }
}

/// `none` / `some` / `all` of the expected receipts, as the Conversations API renders a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Amount {
    None,
    Some,
    All,
}

impl Amount {
    /// `None` for 0, `All` once the count reaches `total`, `Some` in between.
    pub fn of(count: u64, total: u64) -> Self {
        if count == 0 {
            Amount::None
        } else if count >= total {
            Amount::All
        } else {
            Amount::Some
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Amount::None => "none",
            Amount::Some => "some",
            Amount::All => "all",
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message's `delivery` object. Buckets are cumulative: a read receipt was also sent and
/// delivered, so `sent` counts {sent, delivered, read} and `delivered` counts {delivered, read}.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySummary {
    /// The expected number of non-chat receipts: the larger of what the registrations announced
    /// and how many receipts exist.
    pub total: u64,
    pub sent: u64,
    pub delivered: u64,
    pub read: u64,
    pub failed: u64,
    pub undelivered: u64,
}

impl DeliverySummary {
    pub fn new(expected_receipts: u64, counts: &StatusCounts) -> Self {
        DeliverySummary {
            total: expected_receipts.max(counts.receipts()),
            sent: counts.sent + counts.delivered + counts.read,
            delivered: counts.delivered + counts.read,
            read: counts.read,
            failed: counts.failed,
            undelivered: counts.undelivered,
        }
    }

    pub fn sent_amount(&self) -> Amount {
        Amount::of(self.sent, self.total)
    }

    pub fn delivered_amount(&self) -> Amount {
        Amount::of(self.delivered, self.total)
    }

    pub fn read_amount(&self) -> Amount {
        Amount::of(self.read, self.total)
    }

    pub fn failed_amount(&self) -> Amount {
        Amount::of(self.failed, self.total)
    }

    pub fn undelivered_amount(&self) -> Amount {
        Amount::of(self.undelivered, self.total)
    }
}
