//! The projector's stored state with its history, and the timeline as stored and as served.

use prost::Message;
use receipts_domain::{DeliveryStatus, ReceiptState, ReceiptTimeline, StatusReport, Timestamp};
use receipts_proto::aggregates::timeline_from_stored;
use receipts_proto::v1;

use crate::{registration, report};

const ID: &str = "wamid.abc";

fn report_at(status: DeliveryStatus, millis: i64) -> StatusReport {
    StatusReport {
        provider_time: Timestamp::from_unix_millis(millis),
        ..report(ID, status)
    }
}

/// Registered, then `read` and a late `sent`, which only the history holds.
fn state() -> ReceiptState {
    let mut state = ReceiptState::default();
    state.register(registration(ID)).unwrap();
    state.apply_report(report_at(DeliveryStatus::Read, 1_764_000_009_000));
    state.apply_report(report_at(DeliveryStatus::Sent, 1_764_000_001_000));
    assert_eq!(state.history.len(), 2);
    state
}

#[test]
fn a_state_keeps_its_history_through_the_changelog() {
    let state = state();
    let bytes = v1::StoredReceiptState::from(&state).encode_to_vec();
    let decoded = v1::StoredReceiptState::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded.history.len(), 2);
    assert_eq!(ReceiptState::try_from(&decoded).unwrap(), state);
}

#[test]
fn a_state_written_without_a_history_reads_as_the_history_of_its_current_report() {
    let mut old = v1::StoredReceiptState::from(&state());
    old.history.clear();
    let state = ReceiptState::try_from(&old).unwrap();
    let best = state.best.clone().unwrap();
    assert_eq!(best.status, DeliveryStatus::Read);
    assert_eq!(state.history.iter().collect::<Vec<_>>(), vec![&best]);

    let unregistered = v1::StoredReceiptState::default();
    let state = ReceiptState::try_from(&unregistered).unwrap();
    assert!(state.history.is_empty() && state.best.is_none());
}

#[test]
fn a_timeline_is_stored_and_served_in_phase_and_time_order_with_version_zero() {
    let timeline = ReceiptTimeline::of(&state()).unwrap();
    let stored = v1::StoredReceiptTimeline::from(&timeline);
    let sid = timeline.sid().clone();
    assert_eq!(timeline_from_stored(sid, &stored).unwrap(), timeline);

    let served = v1::ReceiptTimeline::from(&timeline);
    assert_eq!(served.receipt_sid, timeline.sid().to_string());
    let entries: Vec<_> = served
        .entries
        .iter()
        .map(|e| {
            (
                e.status(),
                e.source(),
                e.raw_status.as_str(),
                e.provider_timestamp.as_ref().map(|t| t.seconds),
                e.version,
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            (
                v1::DeliveryStatus::Queued,
                v1::StatusSource::Unspecified,
                "",
                Some(1_764_000_000),
                0
            ),
            (
                v1::DeliveryStatus::Sent,
                v1::StatusSource::WhatsappCloud,
                "sent",
                Some(1_764_000_001),
                0
            ),
            (
                v1::DeliveryStatus::Read,
                v1::StatusSource::WhatsappCloud,
                "read",
                Some(1_764_000_009),
                0
            ),
        ]
    );
}
