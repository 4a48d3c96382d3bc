//! The read model's aggregates: a message's delivery counters, a conversation's rollup and a
//! receipt's timeline end the same whatever order the changes or states reach them in, with
//! duplicates and replays; and the timeline of the example, by table.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::{Index, select};
use receipts_domain::{
    ConversationRollup, DeliveryStatus, MessageDelivery, MessageSid, Receipt, ReceiptChange,
    ReceiptSid, ReceiptState, ReceiptTimeline, RegisterOutcome, Registration, ReportOutcome,
    StatusCounts, StatusReport, StatusSource, Timestamp, Verdict,
};

use crate::properties::{any_reports, arrival_order};
use crate::{at, registration, report};

const ID: &str = "SM00000000000000000000000000000001";

/// Stage 1 for one receipt: runs `order` (report indexes, `None` for the registration) and
/// returns every state it would write to its changelog and every change it would publish.
fn project(
    registration: &Registration,
    reports: &[StatusReport],
    order: &[Option<usize>],
) -> (Vec<ReceiptState>, Vec<ReceiptChange>) {
    let mut state = ReceiptState::default();
    let (mut changelog, mut changes) = (Vec::new(), Vec::new());
    for event in order {
        match event {
            None => {
                if let RegisterOutcome::Changed(change) =
                    state.register(registration.clone()).unwrap()
                {
                    changes.push(change);
                    changelog.push(state.clone());
                }
            }
            Some(i) => {
                let merged = state.merge_report(reports[*i].clone());
                if merged.changed_state() {
                    changelog.push(state.clone());
                }
                if let ReportOutcome::Changed(change) = merged.outcome {
                    changes.push(change);
                }
            }
        }
    }
    (changelog, changes)
}

/// `items` in the order `picks` draws them (each pick takes one of the remaining ones), the
/// rest in their order, then the copies `again` picks.
fn reordered<T: Clone>(items: &[T], picks: &[Index], again: &[Index]) -> Vec<T> {
    let mut pool: Vec<T> = items.to_vec();
    let mut out = Vec::with_capacity(items.len() + again.len());
    for pick in picks {
        if pool.is_empty() {
            break;
        }
        out.push(pool.remove(pick.index(pool.len())));
    }
    out.extend(pool);
    for copy in again {
        if !items.is_empty() {
            out.push(items[copy.index(items.len())].clone());
        }
    }
    out
}

/// (status, time) of every entry.
fn steps(timeline: &ReceiptTimeline) -> Vec<(DeliveryStatus, Timestamp)> {
    timeline
        .entries()
        .iter()
        .map(|e| (e.status, e.at))
        .collect()
}

fn timeline_of(states: &[ReceiptState]) -> Option<ReceiptTimeline> {
    states.iter().fold(None, |timeline, state| match timeline {
        None => ReceiptTimeline::of(state),
        Some(timeline) => Some(timeline.apply(state)),
    })
}

#[test]
fn reports_in_one_batch_out_of_order_give_every_status_at_its_provider_time() {
    // The example: registered, then `delivered` (t=3 s), `sent` (t=1 s) and `read`
    // (t=5 s) in one batch; and the same reports in provider order.
    let reports = [
        report(ID, DeliveryStatus::Delivered, 3000),
        report(ID, DeliveryStatus::Sent, 1000),
        report(ID, DeliveryStatus::Read, 5000),
    ];
    let expected = vec![
        (DeliveryStatus::Queued, at(0)),
        (DeliveryStatus::Sent, at(1000)),
        (DeliveryStatus::Delivered, at(3000)),
        (DeliveryStatus::Read, at(5000)),
    ];
    for order in [
        [None, Some(0), Some(1), Some(2)],
        [None, Some(1), Some(0), Some(2)],
    ] {
        let (changelog, changes) = project(&registration(ID, 1), &reports, &order);
        let timeline = timeline_of(&changelog).expect("registered");
        assert_eq!(steps(&timeline), expected, "{order:?}");
        let raw: Vec<_> = timeline
            .entries()
            .into_iter()
            .map(|e| e.raw_status)
            .collect();
        assert_eq!(raw, ["", "sent", "delivered", "read"]);
        // The current status changes (and is published) only when it moves forward.
        let published: Vec<_> = changes.iter().map(|c| c.receipt.status()).collect();
        let forward = order == [None, Some(1), Some(0), Some(2)];
        assert_eq!(published.len(), if forward { 4 } else { 3 }, "{order:?}");
    }
}

#[test]
fn a_late_report_adds_to_the_timeline_but_not_to_the_version() {
    let mut state = ReceiptState::default();
    state.register(registration(ID, 1)).unwrap();
    state.apply_report(report(ID, DeliveryStatus::Read, 5000));
    let version = state.version;
    let merged = state.merge_report(report(ID, DeliveryStatus::Sent, 1000));
    assert_eq!(merged.outcome, ReportOutcome::Unchanged);
    assert!(merged.history_grew);
    assert_eq!(state.version, version);
    assert_eq!(
        steps(&ReceiptTimeline::of(&state).unwrap()),
        [
            (DeliveryStatus::Queued, at(0)),
            (DeliveryStatus::Sent, at(1000)),
            (DeliveryStatus::Read, at(5000)),
        ]
    );
}

#[test]
fn a_parked_history_reaches_the_timeline_with_the_registration() {
    let mut state = ReceiptState::default();
    assert_eq!(
        state.apply_report(report(ID, DeliveryStatus::Delivered, 3000)),
        ReportOutcome::Parked
    );
    let merged = state.merge_report(report(ID, DeliveryStatus::Sent, 1000));
    assert!(merged.changed_state(), "a parked history is stored too");
    assert_eq!(ReceiptTimeline::of(&state), None, "no receipt yet");
    state.register(registration(ID, 1)).unwrap();
    assert_eq!(
        steps(&ReceiptTimeline::of(&state).unwrap()),
        [
            (DeliveryStatus::Queued, at(0)),
            (DeliveryStatus::Sent, at(1000)),
            (DeliveryStatus::Delivered, at(3000)),
        ]
    );
}

/// The read model of one conversation, played by the aggregates: the receipts held, a
/// delivery per message and the rollup. Every snapshot goes through the aggregates, even a
/// duplicate, which must change nothing.
#[derive(Debug, Default, PartialEq, Eq)]
struct ReadModel {
    held: BTreeMap<ReceiptSid, Receipt>,
    messages: BTreeMap<MessageSid, MessageDelivery>,
    rollup: Option<ConversationRollup>,
}

impl ReadModel {
    fn apply(&mut self, snapshot: &Receipt) {
        let verdict = Verdict::of(self.held.get(&snapshot.sid), snapshot);
        if verdict.is_newer() {
            self.held.insert(snapshot.sid.clone(), snapshot.clone());
        }
        let registration = &snapshot.registration;
        let before = self.messages.get(&registration.message).cloned();
        let after = before
            .clone()
            .unwrap_or_else(|| MessageDelivery::of(snapshot))
            .apply(snapshot, verdict);
        self.messages
            .insert(registration.message.clone(), after.clone());
        let rollup = self
            .rollup
            .take()
            .unwrap_or_else(|| {
                ConversationRollup::empty(
                    registration.account.clone(),
                    registration.conversation.clone(),
                )
            })
            .apply(snapshot, verdict, before.as_ref(), &after);
        self.rollup = Some(rollup);
    }
}

/// Two messages, receipts 0 and 1 in the first, 2 in the second.
fn registration_of(receipt: usize) -> Registration {
    let id = format!("SM0000000000000000000000000000000{receipt}");
    let base = registration(&id, 2);
    if receipt < 2 {
        return base;
    }
    Registration {
        message: MessageSid::derive(&["second"]),
        message_index: 1,
        expected_receipts: 1,
        ..base
    }
}

#[derive(Debug, Clone)]
enum Step {
    Register { receipt: usize, tick: i64 },
    Report(usize, DeliveryStatus, i64, Option<u32>),
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0usize..3, 0i64..3).prop_map(|(receipt, tick)| Step::Register { receipt, tick }),
        3 => (
            0usize..3,
            select(DeliveryStatus::ALL.to_vec()),
            0i64..4,
            select(vec![None, Some(30003)]),
        )
            .prop_map(|(r, status, tick, code)| Step::Report(r, status, tick, code)),
    ]
}

/// Every change stage 1 publishes for `steps`, in order, and the final receipts.
fn changes_of(steps: &[Step]) -> (Vec<ReceiptChange>, Vec<Receipt>) {
    let mut states: BTreeMap<usize, ReceiptState> = BTreeMap::new();
    let mut changes = Vec::new();
    for step in steps {
        match step {
            Step::Register { receipt, tick } => {
                let registration = Registration {
                    registered_at: at(tick * 1000),
                    ..registration_of(*receipt)
                };
                let state = states.entry(*receipt).or_default();
                if let RegisterOutcome::Changed(change) = state.register(registration).unwrap() {
                    changes.push(change);
                }
            }
            Step::Report(receipt, status, tick, code) => {
                let registration = registration_of(*receipt);
                let report = StatusReport {
                    error_code: *code,
                    source: StatusSource::Canonical,
                    ..report(
                        registration.channel_message_id.as_str(),
                        *status,
                        tick * 1000,
                    )
                };
                let state = states.entry(*receipt).or_default();
                if let ReportOutcome::Changed(change) = state.apply_report(report) {
                    changes.push(change);
                }
            }
        }
    }
    let receipts = states.values().filter_map(ReceiptState::receipt).collect();
    (changes, receipts)
}

proptest! {
    #[test]
    fn deliveries_and_rollups_depend_only_on_the_set_of_changes(
        steps in prop::collection::vec(any_step(), 1..30),
        picks in prop::collection::vec(any::<Index>(), 0..40),
        again in prop::collection::vec(any::<Index>(), 0..10),
    ) {
        let (changes, receipts) = changes_of(&steps);
        let snapshots: Vec<Receipt> = changes.iter().map(|c| c.receipt.clone()).collect();
        let mut in_order = ReadModel::default();
        for snapshot in &snapshots {
            in_order.apply(snapshot);
        }
        let mut shuffled = ReadModel::default();
        for snapshot in reordered(&snapshots, &picks, &again) {
            shuffled.apply(&snapshot);
        }
        // Replayed from the start, as after a crash before anything was stored.
        for snapshot in &snapshots {
            shuffled.apply(snapshot);
        }
        prop_assert_eq!(&shuffled, &in_order);

        // And both equal a recount over the final receipts.
        let final_receipts: BTreeMap<_, _> =
            receipts.iter().map(|r| (r.sid.clone(), r.clone())).collect();
        prop_assert_eq!(&in_order.held, &final_receipts);
        for (sid, message) in &in_order.messages {
            let of_message: Vec<&Receipt> =
                receipts.iter().filter(|r| &r.registration.message == sid).collect();
            prop_assert_eq!(
                message.counts,
                StatusCounts::recount(of_message.iter().map(|r| r.status()))
            );
            let latest = snapshots
                .iter()
                .filter(|r| &r.registration.message == sid)
                .map(Receipt::date_updated)
                .max();
            prop_assert_eq!(Some(message.date_updated), latest);
        }
        if let Some(rollup) = &in_order.rollup {
            prop_assert_eq!(rollup.counts, StatusCounts::recount(receipts.iter().map(Receipt::status)));
            prop_assert_eq!(rollup.messages, in_order.messages.len() as u64);
            let failing = in_order.messages.values().filter(|m| m.has_failures()).count();
            prop_assert_eq!(rollup.messages_with_failures, failing as u64);
        }
    }

    #[test]
    fn a_timeline_depends_only_on_the_set_of_reports(
        (reports, first, second) in any_reports(1..10).prop_flat_map(|reports| {
            let n = reports.len();
            (Just(reports), arrival_order(n), arrival_order(n))
        }),
        picks in prop::collection::vec(any::<Index>(), 0..30),
        again in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let registration = registration(ID, 1);
        let (changelog_a, _) = project(&registration, &reports, &first);
        let (changelog_b, _) = project(&registration, &reports, &second);
        let a = timeline_of(&changelog_a).expect("registered");
        let b = timeline_of(&reordered(&changelog_b, &picks, &again)).expect("registered");
        prop_assert_eq!(a.entries(), b.entries());

        // The oracle: `queued` at the registration, then each status reported at the earliest
        // time it was reported, ordered by phase and time.
        let mut earliest: BTreeMap<DeliveryStatus, Timestamp> = BTreeMap::new();
        for report in &reports {
            let t = earliest.entry(report.status).or_insert(report.provider_time);
            *t = (*t).min(report.provider_time);
        }
        let mut expected: Vec<_> = earliest.into_iter().collect();
        expected.sort_by_key(|(status, t)| (status.phase(), *t));
        let entries: Vec<_> = steps(&a);
        prop_assert_eq!(entries[0], (DeliveryStatus::Queued, at(0)));
        // Within one phase and time the order of statuses is the domain's fixed precedence;
        // the oracle only fixes (phase, time).
        let key = |(s, t): &(DeliveryStatus, Timestamp)| (s.phase(), *t);
        prop_assert_eq!(
            entries[1..].iter().map(key).collect::<Vec<_>>(),
            expected.iter().map(key).collect::<Vec<_>>()
        );
        let mut statuses: Vec<_> = entries[1..].iter().map(|(s, _)| *s).collect();
        statuses.sort();
        let mut reported: Vec<_> = expected.iter().map(|(s, _)| *s).collect();
        reported.sort();
        prop_assert_eq!(statuses, reported);
    }
}
