//! DESIGN §3 as properties: a receipt is a function of the *set* of its reports, whatever their
//! order, duplicates, replays or the registration's place among them; and counters moved change by
//! change equal a recount.

use proptest::collection::SizeRange;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use receipts_domain::{
    AccountSid, DeliveryStatus, DeliverySummary, ReceiptState, RegisterOutcome, Registration,
    ReportOutcome, StatusCounts, StatusReport, StatusSource, map_provider_status,
};

use crate::{ACCOUNT, Message, at, channel_message, registration, rule_key};

const ID: &str = "SM00000000000000000000000000000001";

/// Every provider word the tables know; a report's raw status is drawn from those that map to
/// its status, so `raw_status` and `source` agree with `status`.
const WORDS: [(StatusSource, &str); 30] = [
    (StatusSource::TwilioMessaging, "queued"),
    (StatusSource::TwilioMessaging, "accepted"),
    (StatusSource::TwilioMessaging, "scheduled"),
    (StatusSource::TwilioMessaging, "sending"),
    (StatusSource::TwilioMessaging, "sent"),
    (StatusSource::TwilioMessaging, "delivered"),
    (StatusSource::TwilioMessaging, "partially_delivered"),
    (StatusSource::TwilioMessaging, "undelivered"),
    (StatusSource::TwilioMessaging, "failed"),
    (StatusSource::TwilioMessaging, "canceled"),
    (StatusSource::TwilioMessaging, "read"),
    (StatusSource::WhatsappCloud, "sent"),
    (StatusSource::WhatsappCloud, "delivered"),
    (StatusSource::WhatsappCloud, "read"),
    (StatusSource::WhatsappCloud, "played"),
    (StatusSource::WhatsappCloud, "failed"),
    (StatusSource::Smpp, "ENROUTE"),
    (StatusSource::Smpp, "DELIVRD"),
    (StatusSource::Smpp, "ACCEPTD"),
    (StatusSource::Smpp, "EXPIRED"),
    (StatusSource::Smpp, "UNDELIV"),
    (StatusSource::Smpp, "UNKNOWN"),
    (StatusSource::Smpp, "DELETED"),
    (StatusSource::Smpp, "REJECTD"),
    (StatusSource::Canonical, "queued"),
    (StatusSource::Canonical, "sent"),
    (StatusSource::Canonical, "delivered"),
    (StatusSource::Canonical, "undelivered"),
    (StatusSource::Canonical, "failed"),
    (StatusSource::Canonical, "read"),
];

const ERROR_CODES: [Option<u32>; 6] = [
    None,
    Some(30003),
    Some(30005),
    Some(30006),
    Some(30007),
    Some(63016),
];

/// A provider word for `status`, and who says it.
fn word(status: DeliveryStatus, pick: Index) -> (StatusSource, &'static str) {
    let words: Vec<_> = WORDS
        .iter()
        .filter(|(source, raw)| map_provider_status(*source, raw) == Ok(status))
        .collect();
    *words[pick.index(words.len())]
}

/// A report for channel message `ID`, at one of four provider times so that ties are common.
fn any_report() -> impl Strategy<Value = StatusReport> {
    (
        select(DeliveryStatus::ALL.to_vec()),
        0i64..4,
        select(ERROR_CODES.to_vec()),
        any::<Index>(),
    )
        .prop_map(|(status, tick, error_code, pick)| {
            let (source, raw) = word(status, pick);
            StatusReport {
                account: AccountSid::parse(ACCOUNT).unwrap(),
                channel_message_id: channel_message(ID),
                status,
                raw_status: raw.to_owned(),
                error_code,
                provider_time: at(tick * 1000),
                source,
            }
        })
}

/// Reports in which near-ties are common: each is fresh, or a copy of an earlier one with
/// another error code or another provider word for the same status. The rule leaves the choice
/// between those open, but the merge must still make it the same way in every order.
pub(crate) fn any_reports(len: impl Into<SizeRange>) -> impl Strategy<Value = Vec<StatusReport>> {
    let drawn = (any_report(), any::<Index>(), any::<Index>(), 0u8..4);
    prop::collection::vec(drawn, len).prop_map(|drawn| {
        let mut reports: Vec<StatusReport> = Vec::new();
        for (fresh, earlier, pick, kind) in drawn {
            let report = match (reports.is_empty(), kind) {
                (false, 0) => StatusReport {
                    error_code: fresh.error_code,
                    ..reports[earlier.index(reports.len())].clone()
                },
                (false, 1) => {
                    let base = reports[earlier.index(reports.len())].clone();
                    let (source, raw) = word(base.status, pick);
                    StatusReport {
                        source,
                        raw_status: raw.to_owned(),
                        ..base
                    }
                }
                _ => fresh,
            };
            reports.push(report);
        }
        reports
    })
}

/// An arrival order of `reports` reports (`Some(i)`) and the registration (`None`): each once,
/// plus up to five duplicates of either, shuffled.
pub(crate) fn arrival_order(reports: usize) -> impl Strategy<Value = Vec<Option<usize>>> {
    prop::collection::vec(0..=reports, 0..6).prop_flat_map(move |duplicates| {
        let events: Vec<Option<usize>> = (0..reports)
            .map(Some)
            .chain([None])
            .chain(duplicates.into_iter().map(|i| (i < reports).then_some(i)))
            .collect();
        Just(events).prop_shuffle()
    })
}

type History = (Vec<StatusReport>, Vec<Option<usize>>, Vec<Option<usize>>);

fn any_history() -> impl Strategy<Value = History> {
    any_reports(1..12).prop_flat_map(|reports| {
        let n = reports.len();
        (Just(reports), arrival_order(n), arrival_order(n))
    })
}

/// Applies the events to `state`; returns how many were changes, checking that each change bumps
/// the version by exactly one.
fn apply(
    state: &mut ReceiptState,
    registration: &Registration,
    reports: &[StatusReport],
    order: &[Option<usize>],
) -> Result<u64, TestCaseError> {
    let mut changes = 0;
    for event in order {
        let before = state.version;
        let change = match event {
            None => match state.register(registration.clone()).unwrap() {
                RegisterOutcome::Changed(change) => Some(change),
                RegisterOutcome::Unchanged => None,
            },
            Some(i) => match state.apply_report(reports[*i].clone()) {
                ReportOutcome::Changed(change) => Some(change),
                ReportOutcome::Parked => {
                    prop_assert!(state.registration.is_none(), "parked after registration");
                    None
                }
                ReportOutcome::Unchanged => None,
            },
        };
        match change {
            Some(change) => {
                changes += 1;
                prop_assert_eq!(state.version, before + 1);
                prop_assert_eq!(change.receipt.version, state.version);
                prop_assert_eq!(Some(change.receipt), state.receipt());
            }
            None => prop_assert_eq!(state.version, before),
        }
    }
    Ok(changes)
}

proptest! {
    #[test]
    fn a_receipt_depends_only_on_the_set_of_its_reports(
        (reports, first, second) in any_history(),
    ) {
        let registration = registration(ID, 1);
        let mut a = ReceiptState::default();
        let mut b = ReceiptState::default();
        let changes_a = apply(&mut a, &registration, &reports, &first)?;
        let changes_b = apply(&mut b, &registration, &reports, &second)?;
        prop_assert_eq!(changes_a, a.version, "every change, and only a change, bumps the version");
        prop_assert_eq!(changes_b, b.version);

        let (ra, rb) = (a.receipt().unwrap(), b.receipt().unwrap());
        prop_assert_eq!(&ra.registration, &rb.registration);
        prop_assert_eq!(&ra.report, &rb.report);

        // The oracle: the report with the greatest key under the rule. Equal keys leave the
        // choice open, so the receipt must hold one of them.
        let best = reports.iter().map(rule_key).max().unwrap();
        let current = ra.report.as_ref().unwrap();
        prop_assert_eq!(rule_key(current), best);
        prop_assert!(reports.contains(current));
        prop_assert_eq!(ra.status(), current.status);
        prop_assert_eq!(ra.error_code(), current.error_code);

        // Replaying everything again changes nothing.
        let before = a.clone();
        let replayed = apply(&mut a, &registration, &reports, &second)?;
        prop_assert_eq!(replayed, 0);
        prop_assert_eq!(a, before);
    }

    #[test]
    fn counters_moved_change_by_change_equal_a_recount(
        (extra_expected, histories, order) in any_message(),
    ) {
        let expected = u32::try_from(histories.len()).unwrap() + extra_expected;
        let mut message = Message::default();
        for (receipt, event) in order {
            let id = receipt_id(receipt);
            match event {
                None => {
                    message.register(registration(&id, expected)).unwrap();
                }
                Some(i) => {
                    message.report(histories[receipt][i].clone());
                }
            }
            let recounted = StatusCounts::recount(message.receipts().map(|r| r.status()));
            prop_assert_eq!(message.counts(), recounted);
            let summary = message.summary();
            prop_assert!(summary.read <= summary.delivered, "{:?}", summary);
            prop_assert!(summary.delivered <= summary.sent, "{:?}", summary);
            prop_assert!(summary.sent + summary.failed + summary.undelivered <= summary.total, "{:?}", summary);
        }

        let statuses: Vec<DeliveryStatus> = message.receipts().map(|r| r.status()).collect();
        prop_assert_eq!(statuses.len(), histories.len());
        let recounted = StatusCounts::recount(statuses.iter().copied());
        prop_assert_eq!(message.counts(), recounted);
        prop_assert_eq!(message.summary(), DeliverySummary::new(u64::from(expected), &recounted));
        prop_assert_eq!(message.summary().total, u64::from(expected));

        // Each receipt's status is the oracle's: queued without reports, else the greatest report's.
        for (receipt, reports) in histories.iter().enumerate() {
            let status = message.receipt(&receipt_id(receipt)).status();
            let oracle = reports
                .iter()
                .max_by_key(|r| rule_key(r))
                .map_or(DeliveryStatus::Queued, |r| r.status);
            prop_assert_eq!(status, oracle, "receipt {}", receipt);
        }
    }
}

fn receipt_id(receipt: usize) -> String {
    format!("SM{receipt:032x}")
}

type MessageHistory = (u32, Vec<Vec<StatusReport>>, Vec<(usize, Option<usize>)>);

/// 1..8 receipts of one message with 0..6 reports each, and one arrival order interleaving every
/// receipt's registration and reports, with duplicates.
fn any_message() -> impl Strategy<Value = MessageHistory> {
    let receipts = prop::collection::vec(any_reports(0..6), 1..=8);
    (0u32..3, receipts).prop_flat_map(|(extra_expected, reports)| {
        let histories: Vec<Vec<StatusReport>> = reports
            .into_iter()
            .enumerate()
            .map(|(receipt, reports)| {
                reports
                    .into_iter()
                    .map(|r| StatusReport {
                        channel_message_id: channel_message(&receipt_id(receipt)),
                        ..r
                    })
                    .collect()
            })
            .collect();
        let events: Vec<(usize, Option<usize>)> = histories
            .iter()
            .enumerate()
            .flat_map(|(receipt, reports)| {
                (0..reports.len())
                    .map(Some)
                    .chain([None])
                    .map(move |event| (receipt, event))
            })
            .collect();
        let duplicates = prop::collection::vec(select(events.clone()), 0..6);
        (
            Just(extra_expected),
            Just(histories),
            Just(events),
            duplicates,
        )
            .prop_flat_map(|(extra_expected, histories, events, duplicates)| {
                let order: Vec<_> = events.into_iter().chain(duplicates).collect();
                (
                    Just(extra_expected),
                    Just(histories),
                    Just(order).prop_shuffle(),
                )
            })
    })
}
