//! A conversation's rollup: its messages, its receipts by current status, and how many of its
//! messages have a failure.
//!
//! It moves with the same snapshots as the messages' [`MessageDelivery`], by the same version
//! verdicts, so it equals a recount over the conversation's messages whatever order the
//! snapshots came in.

use crate::delivery::{MessageDelivery, Verdict};
use crate::ids::{AccountSid, ConversationSid};
use crate::receipt::Receipt;
use crate::summary::StatusCounts;
use crate::time::Timestamp;

/// Counters over one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRollup {
    pub account: AccountSid,
    pub conversation: ConversationSid,
    pub messages: u64,
    /// Equal to `counts.receipts()`.
    pub receipts: u64,
    /// All its receipts by current status.
    pub counts: StatusCounts,
    /// Messages with at least one failed or undelivered receipt.
    pub messages_with_failures: u64,
    /// The latest update time of any receipt version seen.
    pub last_updated: Timestamp,
}

impl ConversationRollup {
    /// A conversation with no messages yet.
    pub fn empty(account: AccountSid, conversation: ConversationSid) -> Self {
        ConversationRollup {
            account,
            conversation,
            messages: 0,
            receipts: 0,
            counts: StatusCounts::default(),
            messages_with_failures: 0,
            last_updated: Timestamp::EPOCH,
        }
    }

    /// The rollup after a snapshot of one of its receipts, judged `verdict`, took the receipt's
    /// message from `before` (`None`: the message is new) to `after`.
    pub fn apply(
        mut self,
        snapshot: &Receipt,
        verdict: Verdict,
        before: Option<&MessageDelivery>,
        after: &MessageDelivery,
    ) -> Self {
        if before.is_none() {
            self.messages += 1;
        }
        if let Verdict::Newer { previous } = verdict {
            self.counts.record(previous, snapshot.status());
        }
        self.receipts = self.counts.receipts();
        // A message counts as failing while any of its receipts is failed or undelivered; only
        // its 0 ↔ >0 transitions move the conversation's count.
        match (
            before.is_some_and(MessageDelivery::has_failures),
            after.has_failures(),
        ) {
            (false, true) => self.messages_with_failures += 1,
            (true, false) => {
                self.messages_with_failures = self.messages_with_failures.saturating_sub(1);
            }
            _ => {}
        }
        self.last_updated = self.last_updated.max(snapshot.date_updated());
        self
    }
}
