//! The `delivery` summary: `none` / `some` / `all` against `total`, cumulative buckets, and the
//! counters it is computed from.

use proptest::prelude::*;
use receipts_domain::{Amount, DeliveryStatus, DeliverySummary, StatusCounts};

use crate::rendered;

#[test]
fn amount_is_none_some_or_all_of_the_total() {
    let table = [
        (0, 0, Amount::None),
        (0, 1, Amount::None),
        (0, 5, Amount::None),
        (1, 1, Amount::All),
        (1, 2, Amount::Some),
        (1, 5, Amount::Some),
        (4, 5, Amount::Some),
        (5, 5, Amount::All),
        // Never produced by a summary, whose total covers every receipt, but still `all`.
        (6, 5, Amount::All),
        (1, 0, Amount::All),
    ];
    for (count, total, expected) in table {
        assert_eq!(Amount::of(count, total), expected, "{count} of {total}");
    }
    assert_eq!(
        [Amount::None, Amount::Some, Amount::All].map(|a| a.to_string()),
        ["none", "some", "all"]
    );
}

#[test]
fn buckets_are_cumulative_and_failures_are_separate() {
    let counts = StatusCounts {
        queued: 1,
        sent: 2,
        delivered: 3,
        undelivered: 4,
        failed: 5,
        read: 6,
    };
    let summary = DeliverySummary::new(0, &counts);
    assert_eq!(
        summary,
        DeliverySummary {
            total: 21,
            sent: 11,
            delivered: 9,
            read: 6,
            failed: 5,
            undelivered: 4,
        }
    );
}

#[test]
fn total_is_the_larger_of_expected_and_counted_receipts() {
    let counts = StatusCounts::recount([DeliveryStatus::Delivered, DeliveryStatus::Delivered]);
    assert_eq!(
        rendered(&DeliverySummary::new(5, &counts)),
        (5, ["some", "some", "none", "none", "none"])
    );
    // More receipts than announced (a late registration announced more): every one counts.
    assert_eq!(
        rendered(&DeliverySummary::new(1, &counts)),
        (2, ["all", "all", "none", "none", "none"])
    );
    assert_eq!(DeliverySummary::new(0, &counts).total, 2);
}

#[test]
fn record_moves_one_receipt_from_its_old_status_to_its_new_one() {
    let mut counts = StatusCounts::default();
    counts.record(None, DeliveryStatus::Queued);
    counts.record(None, DeliveryStatus::Queued);
    counts.record(Some(DeliveryStatus::Queued), DeliveryStatus::Sent);
    counts.record(Some(DeliveryStatus::Sent), DeliveryStatus::Sent);
    counts.record(Some(DeliveryStatus::Sent), DeliveryStatus::Failed);
    assert_eq!(counts.receipts(), 2);
    assert_eq!(counts.get(DeliveryStatus::Queued), 1);
    assert_eq!(counts.get(DeliveryStatus::Sent), 0);
    assert_eq!(counts.get(DeliveryStatus::Failed), 1);
    assert_eq!(
        counts,
        StatusCounts::recount([DeliveryStatus::Queued, DeliveryStatus::Failed])
    );
}

proptest! {
    #[test]
    fn amount_is_all_exactly_when_every_expected_receipt_counts(count in 0u64..20, extra in 0u64..20) {
        let total = count + extra;
        let expected = if count == 0 {
            Amount::None
        } else if extra == 0 {
            Amount::All
        } else {
            Amount::Some
        };
        prop_assert_eq!(Amount::of(count, total), expected);
    }

    #[test]
    fn summaries_never_count_past_their_total(
        statuses in prop::collection::vec(proptest::sample::select(DeliveryStatus::ALL.to_vec()), 0..20),
        expected in 0u64..25,
    ) {
        let counts = StatusCounts::recount(statuses.iter().copied());
        let summary = DeliverySummary::new(expected, &counts);
        prop_assert_eq!(summary.total, expected.max(statuses.len() as u64));
        prop_assert!(summary.read <= summary.delivered);
        prop_assert!(summary.delivered <= summary.sent);
        prop_assert!(summary.sent + summary.failed + summary.undelivered <= summary.total);
        let count = |wanted: &[DeliveryStatus]| {
            statuses.iter().filter(|s| wanted.contains(s)).count() as u64
        };
        use DeliveryStatus::*;
        prop_assert_eq!(summary.sent, count(&[Sent, Delivered, Read]));
        prop_assert_eq!(summary.delivered, count(&[Delivered, Read]));
        prop_assert_eq!(summary.read, count(&[Read]));
        prop_assert_eq!(summary.failed, count(&[Failed]));
        prop_assert_eq!(summary.undelivered, count(&[Undelivered]));
    }
}
