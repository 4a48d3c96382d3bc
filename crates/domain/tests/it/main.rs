//! Integration tests of the delivery-receipt rules, driven only through the crate's public API.
//!
//! - `examples`: the worked examples of the Conversations docs and the contract (§8), replayed as
//!   registrations and reports;
//! - `merge`: every ordered pair of statuses, and what each registration or report does to a receipt;
//! - `properties`: random report sets in random orders, with duplicates and replays, converge to the
//!   state an independent oracle predicts, and incremental counters equal a recount;
//! - `summary`: the `none` / `some` / `all` rendering and the cumulative buckets;
//! - `ids`: receipt sids as the REST facade shows them;
//! - `aggregates`: the read model's message deliveries, rollups and timelines depend only on the
//!   set of changes and states applied, and the timeline of reports that arrive out of order.
//!
//! The helpers below build registrations and reports with fixed sids, and [`Message`] plays the
//! projector for one conversation message: it keeps a state per channel message and moves the
//! counters by each change's previous and current status, as DESIGN §3 prescribes.

mod aggregates;
mod examples;
mod ids;
mod merge;
mod properties;
mod summary;

use std::collections::BTreeMap;

use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryStatus, DeliverySummary,
    MessageSid, ParticipantSid, Receipt, ReceiptChange, ReceiptState, RegisterOutcome,
    Registration, RegistrationConflict, ReportOutcome, StatusCounts, StatusReport, StatusSource,
    Timestamp, map_provider_status,
};

pub(crate) const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub(crate) const CONVERSATION: &str = "CH0123456789abcdef0123456789abcdef";
pub(crate) const MESSAGE: &str = "IM0123456789abcdef0123456789abcdef";

/// Milliseconds after a fixed instant (2024-11-19T07:06:40Z), so times read as small numbers.
pub(crate) fn at(millis: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_732_000_000_000 + millis)
}

pub(crate) fn channel_message(id: &str) -> ChannelMessageId {
    ChannelMessageId::parse(id).expect("test channel message ids are valid")
}

/// The SMS registration of channel message `id` of the test message, for a participant named
/// after the id, created at `at(0)`.
pub(crate) fn registration(id: &str, expected_receipts: u32) -> Registration {
    Registration {
        account: AccountSid::parse(ACCOUNT).unwrap(),
        chat_service: None,
        conversation: ConversationSid::parse(CONVERSATION).unwrap(),
        message: MessageSid::parse(MESSAGE).unwrap(),
        message_index: 0,
        participant: ParticipantSid::derive(&[id]),
        channel: Channel::Sms,
        channel_message_id: channel_message(id),
        expected_receipts,
        registered_at: at(0),
    }
}

/// A report in canonical words, with no error code.
pub(crate) fn report(id: &str, status: DeliveryStatus, millis: i64) -> StatusReport {
    StatusReport {
        account: AccountSid::parse(ACCOUNT).unwrap(),
        channel_message_id: channel_message(id),
        status,
        raw_status: status.as_str().to_owned(),
        error_code: None,
        provider_time: at(millis),
        source: StatusSource::Canonical,
    }
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

/// A receipt with its version cleared, for comparing states reached by different histories.
pub(crate) fn unversioned(receipt: Option<Receipt>) -> Option<Receipt> {
    receipt.map(|receipt| Receipt {
        version: 0,
        ..receipt
    })
}

/// One conversation message as the projector sees it: a state per channel message, and counters
/// moved by exactly the previous and current status of every change.
#[derive(Debug, Default)]
pub(crate) struct Message {
    states: BTreeMap<ChannelMessageId, ReceiptState>,
    counts: StatusCounts,
    expected_receipts: u64,
}

impl Message {
    pub(crate) fn register(
        &mut self,
        registration: Registration,
    ) -> Result<RegisterOutcome, RegistrationConflict> {
        let state = self
            .states
            .entry(registration.channel_message_id.clone())
            .or_default();
        let outcome = state.register(registration)?;
        if let RegisterOutcome::Changed(change) = &outcome {
            self.record(change);
        }
        Ok(outcome)
    }

    pub(crate) fn report(&mut self, report: StatusReport) -> ReportOutcome {
        let state = self
            .states
            .entry(report.channel_message_id.clone())
            .or_default();
        let outcome = state.apply_report(report);
        if let ReportOutcome::Changed(change) = &outcome {
            self.record(change);
        }
        outcome
    }

    fn record(&mut self, change: &ReceiptChange) {
        self.counts
            .record(change.previous_status, change.receipt.status());
        self.expected_receipts = self
            .expected_receipts
            .max(u64::from(change.receipt.registration.expected_receipts));
    }

    pub(crate) fn receipt(&self, id: &str) -> Receipt {
        self.states[&channel_message(id)]
            .receipt()
            .expect("the receipt is registered")
    }

    /// Every registered receipt.
    pub(crate) fn receipts(&self) -> impl Iterator<Item = Receipt> + '_ {
        self.states.values().filter_map(ReceiptState::receipt)
    }

    pub(crate) fn counts(&self) -> StatusCounts {
        self.counts
    }

    pub(crate) fn summary(&self) -> DeliverySummary {
        DeliverySummary::new(self.expected_receipts, &self.counts)
    }
}

/// `total` and the five buckets as the REST API renders them, in the API's order: sent,
/// delivered, read, failed, undelivered.
pub(crate) fn rendered(summary: &DeliverySummary) -> (u64, [&'static str; 5]) {
    (
        summary.total,
        [
            summary.sent_amount().as_str(),
            summary.delivered_amount().as_str(),
            summary.read_amount().as_str(),
            summary.failed_amount().as_str(),
            summary.undelivered_amount().as_str(),
        ],
    )
}

/// The winning order of DESIGN §3, restated here independently of the crate: the greater phase
/// wins whatever the time (pending < sent < final < read); within a phase the later provider
/// timestamp wins; at the same time failed > undelivered > delivered. Reports with equal keys
/// have the same status, and the rule leaves the choice between them open.
pub(crate) fn rule_key(report: &StatusReport) -> (u8, Timestamp, u8) {
    use DeliveryStatus::{Delivered, Failed, Queued, Read, Sent, Undelivered};
    let phase = match report.status {
        Queued => 0,
        Sent => 1,
        Delivered | Undelivered | Failed => 2,
        Read => 3,
    };
    let bad_news = match report.status {
        Failed => 2,
        Undelivered => 1,
        Queued | Sent | Delivered | Read => 0,
    };
    (phase, report.provider_time, bad_news)
}
