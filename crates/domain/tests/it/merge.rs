//! How reports and registrations merge into one receipt: every ordered pair of statuses, and what
//! each event reports back (`Changed`, `Parked`, `Unchanged`, a conflict).

use std::cmp::Ordering;

use DeliveryStatus::{Delivered, Failed, Queued, Read, Sent, Undelivered};
use receipts_domain::{
    Channel, DeliveryStatus, ReceiptChange, ReceiptSid, ReceiptState, RegisterOutcome,
    Registration, ReportOutcome, StatusReport,
};

use crate::{at, channel_message, registration, report, rule_key, unversioned};

const ID: &str = "SM00000000000000000000000000000001";

/// The report a provider sends for `status` at `millis`: bad news carries an error code.
fn report_at(status: DeliveryStatus, millis: i64) -> StatusReport {
    let error_code = match status {
        Failed => Some(30003),
        Undelivered => Some(30005),
        _ => None,
    };
    StatusReport {
        error_code,
        ..report(ID, status, millis)
    }
}

/// The greater of two reports under [`rule_key`].
fn oracle_winner<'r>(a: &'r StatusReport, b: &'r StatusReport) -> &'r StatusReport {
    match rule_key(a).cmp(&rule_key(b)) {
        Ordering::Greater => a,
        Ordering::Less => b,
        Ordering::Equal => {
            assert_eq!(a, b, "the rule must decide between different reports");
            a
        }
    }
}

enum Event<'r> {
    Register,
    Report(&'r StatusReport),
}

fn replay(events: &[Event<'_>]) -> ReceiptState {
    let mut state = ReceiptState::default();
    for event in events {
        match event {
            Event::Register => {
                state.register(registration(ID, 1)).unwrap();
            }
            Event::Report(report) => {
                state.apply_report((*report).clone());
            }
        }
    }
    state
}

const TIME_RELATIONS: [(&str, i64, i64); 3] = [
    ("first earlier", 1000, 2000),
    ("same time", 1000, 1000),
    ("first later", 2000, 1000),
];

#[test]
fn every_ordered_pair_of_statuses_converges_on_the_rules_winner() {
    for a in DeliveryStatus::ALL {
        for b in DeliveryStatus::ALL {
            for (relation, ta, tb) in TIME_RELATIONS {
                let (ra, rb) = (report_at(a, ta), report_at(b, tb));
                let case = format!("{a}@{ta} and {b}@{tb} ({relation})");
                let winner = oracle_winner(&ra, &rb);
                let loser = if winner == &ra { &rb } else { &ra };

                let histories = [
                    replay(&[Event::Register, Event::Report(&ra), Event::Report(&rb)]),
                    replay(&[Event::Register, Event::Report(&rb), Event::Report(&ra)]),
                    replay(&[Event::Report(&ra), Event::Report(&rb), Event::Register]),
                    replay(&[Event::Report(&rb), Event::Report(&ra), Event::Register]),
                    replay(&[Event::Report(&ra), Event::Register, Event::Report(&rb)]),
                ];
                for state in &histories {
                    let receipt = state.receipt().expect("registered");
                    assert_eq!(receipt.report.as_ref(), Some(winner), "{case}");
                    assert_eq!(receipt.status(), winner.status, "{case}");
                    assert_eq!(receipt.error_code(), winner.error_code, "{case}");
                    assert_eq!(
                        unversioned(state.receipt()),
                        unversioned(histories[0].receipt()),
                        "{case}"
                    );
                }

                // Winner first: the loser changes nothing. Loser first: the winner is a change
                // from the loser's status.
                let mut state = replay(&[Event::Register, Event::Report(winner)]);
                assert_eq!(
                    state.apply_report(loser.clone()),
                    ReportOutcome::Unchanged,
                    "{case}"
                );
                assert_eq!(state.version, 2, "{case}");
                if loser != winner {
                    let mut state = replay(&[Event::Register, Event::Report(loser)]);
                    match state.apply_report(winner.clone()) {
                        ReportOutcome::Changed(change) => {
                            assert_eq!(change.previous_status, Some(loser.status), "{case}");
                            assert_eq!(change.receipt.status(), winner.status, "{case}");
                            assert_eq!(change.receipt.version, 3, "{case}");
                        }
                        other => panic!("{case}: expected a change, got {other:?}"),
                    }
                }
            }
        }
    }
}

#[test]
fn named_cases_of_the_rule() {
    // (first report, second report, the status that stands), times in milliseconds.
    let table = [
        // A read is never downgraded by a late delivered.
        ((Read, 3000), (Delivered, 4000), Read),
        ((Delivered, 4000), (Read, 3000), Read),
        // A late sent never undoes a final outcome.
        ((Failed, 2000), (Sent, 5000), Failed),
        ((Undelivered, 2000), (Sent, 5000), Undelivered),
        ((Delivered, 2000), (Sent, 5000), Delivered),
        ((Sent, 2000), (Queued, 5000), Sent),
        ((Queued, 9000), (Read, 1000), Read),
        // Among final outcomes the later one wins, in either direction.
        ((Delivered, 2000), (Failed, 3000), Failed),
        ((Failed, 2000), (Delivered, 3000), Delivered),
        ((Undelivered, 3000), (Delivered, 2000), Undelivered),
        // Same phase and same time: failed > undelivered > delivered.
        ((Delivered, 2000), (Undelivered, 2000), Undelivered),
        ((Failed, 2000), (Undelivered, 2000), Failed),
        ((Delivered, 2000), (Failed, 2000), Failed),
        // The same status reported twice: the later report stands.
        ((Sent, 2000), (Sent, 1000), Sent),
    ];
    for ((first, t1), (second, t2), expected) in table {
        let mut state = ReceiptState::default();
        state.register(registration(ID, 1)).unwrap();
        state.apply_report(report_at(first, t1));
        state.apply_report(report_at(second, t2));
        let receipt = state.receipt().unwrap();
        assert_eq!(
            receipt.status(),
            expected,
            "{first}@{t1} then {second}@{t2}"
        );
    }

    let mut state = ReceiptState::default();
    state.register(registration(ID, 1)).unwrap();
    state.apply_report(report_at(Sent, 2000));
    state.apply_report(report_at(Sent, 1000));
    assert_eq!(state.receipt().unwrap().date_updated(), at(2000));
}

fn changed(outcome: ReportOutcome) -> ReceiptChange {
    match outcome {
        ReportOutcome::Changed(change) => change,
        other => panic!("expected a change, got {other:?}"),
    }
}

fn registered(outcome: RegisterOutcome) -> ReceiptChange {
    match outcome {
        RegisterOutcome::Changed(change) => change,
        other => panic!("expected a change, got {other:?}"),
    }
}

#[test]
fn a_duplicate_report_is_unchanged_and_does_not_bump_the_version() {
    let mut state = ReceiptState::default();
    state.register(registration(ID, 1)).unwrap();
    changed(state.apply_report(report_at(Delivered, 2000)));
    let before = state.clone();
    assert_eq!(
        state.apply_report(report_at(Delivered, 2000)),
        ReportOutcome::Unchanged
    );
    assert_eq!(state, before);
    assert_eq!(state.version, 2);
}

#[test]
fn a_stale_report_leaves_the_receipt_and_only_adds_to_the_history() {
    let mut state = ReceiptState::default();
    state.register(registration(ID, 1)).unwrap();
    state.apply_report(report_at(Delivered, 2000));
    let before = state.clone();
    for stale in [
        report_at(Sent, 9000),
        report_at(Queued, 9000),
        report_at(Delivered, 1000),
        report_at(Failed, 1000),
    ] {
        let merged = state.merge_report(stale);
        assert_eq!(merged.outcome, ReportOutcome::Unchanged);
        assert!(merged.history_grew && merged.changed_state());
    }
    assert_eq!(
        state.receipt(),
        before.receipt(),
        "same report, same version"
    );
    assert_eq!(state.best, before.best);
    assert_eq!(
        state.history.get(Delivered),
        Some(&report_at(Delivered, 1000)),
        "the history keeps the earliest report of each status"
    );
    assert_eq!(state.history.len(), 4);
    let again = state.clone();
    let merged = state.merge_report(report_at(Sent, 9500));
    assert!(!merged.history_grew && !merged.changed_state());
    assert_eq!(state, again);
}

#[test]
fn a_report_before_its_registration_is_parked_then_applied_by_the_registration() {
    let mut state = ReceiptState::default();
    assert_eq!(
        state.apply_report(report_at(Delivered, 2000)),
        ReportOutcome::Parked
    );
    // A lesser report does not replace the parked one; a greater one does.
    assert_eq!(
        state.apply_report(report_at(Sent, 1000)),
        ReportOutcome::Unchanged
    );
    assert_eq!(
        state.apply_report(report_at(Failed, 3000)),
        ReportOutcome::Parked
    );
    assert_eq!(state.receipt(), None, "no receipt without a registration");
    assert_eq!(state.parked_report(), Some(&report_at(Failed, 3000)));
    assert_eq!(state.version, 0);

    let change = registered(state.register(registration(ID, 1)).unwrap());
    assert_eq!(
        change.previous_status, None,
        "the change created the receipt"
    );
    assert_eq!(change.receipt.status(), Failed);
    assert_eq!(change.receipt.error_code(), Some(30003));
    assert_eq!(change.receipt.version, 1);
    assert_eq!(state.parked_report(), None);
    assert_eq!(state.receipt(), Some(change.receipt));
}

#[test]
fn a_registration_without_reports_creates_a_queued_receipt() {
    let mut state = ReceiptState::default();
    let change = registered(state.register(registration(ID, 3)).unwrap());
    assert_eq!(change.previous_status, None);
    assert_eq!(change.receipt.status(), Queued);
    assert_eq!(change.receipt.report, None);
    assert_eq!(change.receipt.version, 1);
    assert_eq!(change.receipt.date_created(), at(0));
    assert_eq!(change.receipt.date_updated(), at(0));
    assert_eq!(
        change.receipt.sid,
        ReceiptSid::for_channel_message(&registration(ID, 3).account, &channel_message(ID))
    );
}

#[test]
fn the_version_grows_by_exactly_one_per_change() {
    let mut state = ReceiptState::default();
    let first = registered(state.register(registration(ID, 1)).unwrap());
    assert_eq!((first.receipt.version, first.previous_status), (1, None));
    let mut previous = Some(Queued);
    for (step, (status, millis)) in [(Sent, 1000), (Sent, 1500), (Delivered, 2000), (Read, 3000)]
        .into_iter()
        .enumerate()
    {
        let change = changed(state.apply_report(report_at(status, millis)));
        assert_eq!(change.receipt.version, step as u64 + 2);
        assert_eq!(change.receipt.version, state.version);
        assert_eq!(change.previous_status, previous);
        previous = Some(status);
    }
    // Nothing after read changes the receipt.
    assert_eq!(
        state.apply_report(report_at(Delivered, 9000)),
        ReportOutcome::Unchanged
    );
    assert_eq!(state.version, 5);
}

#[test]
fn a_duplicate_registration_is_unchanged() {
    let mut state = ReceiptState::default();
    state.register(registration(ID, 2)).unwrap();
    state.apply_report(report_at(Sent, 1000));
    let before = state.clone();
    assert_eq!(
        state.register(registration(ID, 2)),
        Ok(RegisterOutcome::Unchanged)
    );
    // A smaller expected count or a later creation time adds nothing either.
    assert_eq!(
        state.register(registration(ID, 1)),
        Ok(RegisterOutcome::Unchanged)
    );
    assert_eq!(
        state.register(Registration {
            registered_at: at(500),
            ..registration(ID, 2)
        }),
        Ok(RegisterOutcome::Unchanged)
    );
    assert_eq!(state, before);
}

#[test]
fn another_receipt_for_the_same_channel_message_is_a_conflict() {
    let mut state = ReceiptState::default();
    state.register(registration(ID, 2)).unwrap();
    let before = state.clone();
    let other_participant = Registration {
        participant: registration("someone else", 2).participant,
        ..registration(ID, 2)
    };
    let other_message = Registration {
        message_index: 7,
        ..registration(ID, 2)
    };
    let other_channel = Registration {
        channel: Channel::Whatsapp,
        ..registration(ID, 2)
    };
    for conflicting in [other_participant, other_message, other_channel] {
        let err = state.register(conflicting).unwrap_err();
        assert_eq!(err.channel_message_id, channel_message(ID));
        assert!(err.to_string().contains(ID), "{err}");
    }
    assert_eq!(state, before, "a conflict leaves the receipt as it was");
}

#[test]
fn a_registration_that_grows_is_a_change_without_a_status_change() {
    let mut state = ReceiptState::default();
    state.register(registration(ID, 2)).unwrap();
    state.apply_report(report_at(Delivered, 1000));

    let change = registered(state.register(registration(ID, 5)).unwrap());
    assert_eq!(change.receipt.registration.expected_receipts, 5);
    assert_eq!(change.previous_status, Some(Delivered));
    assert_eq!(change.receipt.status(), Delivered);
    assert_eq!(change.receipt.version, 3);

    // An earlier creation time is kept too: the receipt existed since the first sighting.
    let earlier = Registration {
        registered_at: at(-500),
        ..registration(ID, 3)
    };
    let change = registered(state.register(earlier).unwrap());
    assert_eq!(change.receipt.registration.expected_receipts, 5);
    assert_eq!(change.receipt.date_created(), at(-500));
    assert_eq!(change.receipt.version, 4);
}

#[test]
fn date_updated_is_never_before_date_created() {
    let mut state = ReceiptState::default();
    // The provider's clock puts the report before the registration.
    state.apply_report(report_at(Sent, -2000));
    let receipt = registered(state.register(registration(ID, 1)).unwrap()).receipt;
    assert_eq!(receipt.date_created(), at(0));
    assert_eq!(receipt.date_updated(), at(0));
    let receipt = changed(state.apply_report(report_at(Delivered, 4000))).receipt;
    assert_eq!(receipt.date_updated(), at(4000));
}
