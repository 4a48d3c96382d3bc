//! The reference model: events folded, in log order, through a fresh `ReceiptState` per receipt,
//! as a projector that never stopped folds them. Tests compare what the services published,
//! stored and served with what the model says they must.
//!
//! A receipt's events share a key, hence a partition, and the idempotent producer keeps their
//! order, so log order per receipt is production order and the model's versions are exact.

use std::collections::HashMap;

use receipts_domain::{
    DeliveryEvent, DeliveryEventKind, DeliveryStatus, DeliverySummary, ReceiptChange, ReceiptKey,
    ReceiptSid, ReceiptState, RegisterOutcome, ReportOutcome, StatusCounts,
};

/// Folds one event into `state`: the change it made, if any.
///
/// # Panics
/// When a registration conflicts with the one the state holds: test inputs never conflict.
pub fn fold(state: &mut ReceiptState, event: DeliveryEventKind) -> Option<ReceiptChange> {
    match event {
        DeliveryEventKind::Registered(r) => match state.register(r) {
            Ok(RegisterOutcome::Changed(change)) => Some(change),
            Ok(RegisterOutcome::Unchanged) => None,
            Err(conflict) => panic!("the test input conflicts with itself: {conflict}"),
        },
        DeliveryEventKind::Reported(r) => match state.apply_report(r) {
            ReportOutcome::Changed(change) => Some(change),
            ReportOutcome::Parked | ReportOutcome::Unchanged => None,
        },
    }
}

/// Whether `change` is one a webhook subscriber is told about: it leaves a status Twilio names
/// (not queued) and altered the status or the error code of the change before it.
pub fn fires(change: &ReceiptChange, previous: Option<&ReceiptChange>) -> bool {
    let receipt = &change.receipt;
    let named = receipt.status() != DeliveryStatus::Queued;
    let changed = previous.is_none_or(|p| {
        p.receipt.status() != receipt.status() || p.receipt.error_code() != receipt.error_code()
    });
    named && changed
}

/// What a never-stopped system makes of the events folded so far.
#[derive(Debug, Default)]
pub struct Model {
    states: HashMap<ReceiptKey, ReceiptState>,
    /// Per receipt, its changes by version (version 1 first).
    changes: HashMap<ReceiptSid, Vec<ReceiptChange>>,
}

impl Model {
    /// The model of `events`, in this order.
    pub fn of(events: &[DeliveryEvent]) -> Self {
        let mut model = Model::default();
        for event in events {
            model.apply(event);
        }
        model
    }

    /// Folds the next event.
    pub fn apply(&mut self, event: &DeliveryEvent) {
        let state = self.states.entry(event.receipt_key()).or_default();
        if let Some(change) = fold(state, event.kind.clone()) {
            self.changes
                .entry(change.receipt.sid.clone())
                .or_default()
                .push(change);
        }
    }

    /// Every receipt's state, registered or not.
    pub fn states(&self) -> &HashMap<ReceiptKey, ReceiptState> {
        &self.states
    }

    /// How many distinct (receipt, version) updates must be published.
    pub fn change_count(&self) -> usize {
        self.changes.values().map(Vec::len).sum()
    }

    /// The current version of every receipt: what the system must have caught up to.
    pub fn versions(&self) -> HashMap<ReceiptSid, u64> {
        self.changes
            .iter()
            .map(|(sid, changes)| (sid.clone(), changes.len() as u64))
            .collect()
    }

    /// The changes of `sid`, version 1 first.
    pub fn changes(&self, sid: &ReceiptSid) -> &[ReceiptChange] {
        self.changes.get(sid).map_or(&[], Vec::as_slice)
    }

    /// The change that made version `version` of `sid`.
    pub fn change(&self, sid: &ReceiptSid, version: u64) -> Option<&ReceiptChange> {
        let index = usize::try_from(version).ok()?.checked_sub(1)?;
        self.changes.get(sid)?.get(index)
    }

    /// Every receipt with its changes.
    pub fn receipts(&self) -> impl Iterator<Item = (&ReceiptSid, &[ReceiptChange])> {
        self.changes.iter().map(|(sid, c)| (sid, c.as_slice()))
    }

    /// The versions of `sid` up to `upto` that fire a webhook.
    pub fn firing(&self, sid: &ReceiptSid, upto: u64) -> Vec<u64> {
        let changes = self.changes(sid);
        let upto = usize::try_from(upto)
            .unwrap_or(usize::MAX)
            .min(changes.len());
        (0..upto)
            .filter(|&i| fires(&changes[i], i.checked_sub(1).map(|p| &changes[p])))
            .map(|i| i as u64 + 1)
            .collect()
    }

    /// How many webhook-firing changes the events so far make.
    pub fn firing_count(&self) -> usize {
        self.changes
            .keys()
            .map(|sid| self.firing(sid, u64::MAX).len())
            .sum()
    }

    /// Every message, by (conversation, message), with its expected summary.
    pub fn summaries(&self) -> HashMap<(String, String), DeliverySummary> {
        let mut messages: HashMap<(String, String), (u64, Vec<DeliveryStatus>)> = HashMap::new();
        for changes in self.changes.values() {
            let receipt = &changes.last().expect("a receipt has a change").receipt;
            let key = (
                receipt.registration.conversation.as_str().to_owned(),
                receipt.registration.message.as_str().to_owned(),
            );
            let entry = messages.entry(key).or_default();
            entry.0 = entry
                .0
                .max(u64::from(receipt.registration.expected_receipts));
            entry.1.push(receipt.status());
        }
        messages
            .into_iter()
            .map(|(key, (expected, statuses))| {
                (
                    key,
                    DeliverySummary::new(expected, &StatusCounts::recount(statuses)),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use receipts_domain::{Channel, StatusSource};

    use super::*;
    use crate::events::{registered, registration, report, reported};

    const ACCOUNT: &str = "AC00000000000000000000000000000001";

    fn delivered(at: i64) -> DeliveryEvent {
        reported(report(
            ACCOUNT,
            "SM1",
            DeliveryStatus::Delivered,
            at,
            None,
            StatusSource::TwilioMessaging,
        ))
    }

    #[test]
    fn versions_count_changes_and_only_named_statuses_fire() {
        let register = registered(registration(ACCOUNT, Channel::Sms, "SM1", 1, 1, 1, 2));
        let model = Model::of(&[register, delivered(2_000), delivered(2_000)]);
        let (sid, changes) = model.receipts().next().unwrap();
        // Queued on registration, then delivered; the duplicate changes nothing.
        assert_eq!(changes.len(), 2);
        assert_eq!(model.change_count(), 2);
        assert_eq!(model.versions()[sid], 2);
        assert_eq!(
            model.change(sid, 2).unwrap().receipt.status(),
            DeliveryStatus::Delivered
        );
        assert!(model.change(sid, 3).is_none());
        assert_eq!(model.firing(sid, u64::MAX), vec![2]);
        assert_eq!(model.firing(sid, 1), Vec::<u64>::new());
        let summaries = model.summaries();
        let summary = &summaries[&(sid_of("CH", 1), sid_of("IM", 1))];
        assert_eq!((summary.total, summary.delivered), (2, 1));
    }

    fn sid_of(prefix: &str, n: u64) -> String {
        crate::events::sid(prefix, n)
    }
}
