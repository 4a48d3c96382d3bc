//! DESIGN §2 and §4 as a property: the read model is a function of the *set* of receipt changes
//! and changelog states, however often a crashed producer re-delivers them and however they are
//! cut into batches; the counters it moves change by change equal a recount over the receipts it
//! stores; and every timeline shows the earliest report of each status reported, in order.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::{Index, select};
use receipts_domain::{
    DeliveryStatus, DeliverySummary, ReceiptChange, StatusCounts, StatusReport, Timestamp,
};
use receipts_store::{ApplyStats, QueryStore, StorageEngine};

use crate::{
    Projector, ReadModel, TOPIC, account, at, offset, open, open_on, provider_report, read_model,
    registration,
};

const ERROR_CODES: [Option<u32>; 3] = [None, Some(30003), Some(63016)];

/// One input of stage 1, for one of the receipts of the layout.
#[derive(Debug, Clone)]
enum Step {
    /// A (re-)registration, possibly announcing more recipients or an earlier creation time.
    Register {
        receipt: Index,
        expected_receipts: u32,
        tick: i64,
    },
    Report {
        receipt: Index,
        status: DeliveryStatus,
        tick: i64,
        error_code: Option<u32>,
    },
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (any::<Index>(), 1u32..5, 0i64..3).prop_map(|(receipt, expected_receipts, tick)| {
            Step::Register { receipt, expected_receipts, tick }
        }),
        3 => (
            any::<Index>(),
            select(DeliveryStatus::ALL.to_vec()),
            0i64..4,
            select(ERROR_CODES.to_vec()),
        )
            .prop_map(|(receipt, status, tick, error_code)| Step::Report {
                receipt,
                status,
                tick,
                error_code,
            }),
    ]
}

/// One to three messages with one to three receipts each: (message index, channel message id).
fn any_layout() -> impl Strategy<Value = Vec<(u64, String)>> {
    prop::collection::vec(1usize..=3, 1..=3).prop_map(|receipts_per_message| {
        receipts_per_message
            .into_iter()
            .enumerate()
            .flat_map(|(m, receipts)| {
                // Indexes with gaps, as when other messages of the conversation went to chat only.
                let index = m as u64 * 10 + 1;
                (0..receipts).map(move |r| (index, format!("cm-{m}-{r}")))
            })
            .collect()
    })
}

/// Stage 1 run over `steps`: every change it publishes, and its final states.
fn project(layout: &[(u64, String)], steps: &[Step]) -> Projector {
    let mut projector = Projector::default();
    for step in steps {
        match step {
            Step::Register {
                receipt,
                expected_receipts,
                tick,
            } => {
                let (index, id) = &layout[receipt.index(layout.len())];
                projector.register(receipts_domain::Registration {
                    registered_at: at(tick * 1000),
                    ..registration(*index, id, *expected_receipts)
                });
            }
            Step::Report {
                receipt,
                status,
                tick,
                error_code,
            } => {
                let (_, id) = &layout[receipt.index(layout.len())];
                projector.report(provider_report(
                    id,
                    receipts_domain::StatusSource::Canonical,
                    status.as_str(),
                    *error_code,
                    tick * 1000,
                ));
            }
        }
    }
    projector
}

/// What `receipt-updates` carries when the producer crashes at the given points: it has sent
/// everything up to the crash, and after restarting re-sends from an earlier point (what it had
/// not stored yet). On top, single old records turn up again late.
fn redelivered<T: Clone>(
    changes: &[T],
    crashes: &[(Index, Index)],
    late_copies: &[(Index, Index)],
) -> Vec<T> {
    let mut crash_points: Vec<(usize, Index)> = crashes
        .iter()
        .map(|(at, back)| (at.index(changes.len() + 1), *back))
        .collect();
    crash_points.sort_by_key(|(at, _)| *at);
    let mut stream = Vec::new();
    let mut next = 0;
    for (at, back) in crash_points {
        stream.extend_from_slice(&changes[next..at]);
        next = back.index(at + 1);
    }
    stream.extend_from_slice(&changes[next..]);
    for (position, copy) in late_copies {
        if stream.is_empty() {
            break;
        }
        let position = position.index(stream.len()) + 1;
        let copy = stream[copy.index(position)].clone();
        stream.insert(position, copy);
    }
    stream
}

/// `stream` cut into batches of the given sizes, cycling through them.
fn batches<'a, T>(stream: &'a [T], sizes: &'a [usize]) -> impl Iterator<Item = &'a [T]> {
    let mut rest = stream;
    sizes.iter().cycle().map_while(move |size| {
        if rest.is_empty() {
            return None;
        }
        let (batch, tail) = rest.split_at((*size).min(rest.len()));
        rest = tail;
        Some(batch)
    })
}

/// The read model recomputed from scratch: every stored receipt is the projector's final one,
/// every counter a recount.
fn check_recount(
    model: &ReadModel,
    projector: &Projector,
    changes: &[ReceiptChange],
) -> Result<(), TestCaseError> {
    let mut by_message: BTreeMap<u64, Vec<_>> = BTreeMap::new();
    for receipt in projector.receipts() {
        by_message
            .entry(receipt.registration.message_index)
            .or_default()
            .push(receipt);
    }
    let indexes: Vec<u64> = model.messages.iter().map(|view| view.index).collect();
    prop_assert_eq!(&indexes, &by_message.keys().copied().collect::<Vec<_>>());

    let latest = |of: &dyn Fn(&ReceiptChange) -> bool| {
        changes
            .iter()
            .filter(|c| of(c))
            .map(|c| c.receipt.date_updated())
            .max()
    };
    let mut failing = 0;
    for ((view, stored), (index, mut expected)) in
        model.messages.iter().zip(&model.receipts).zip(by_message)
    {
        expected.sort_by(|a, b| a.sid.cmp(&b.sid));
        let receipts: Vec<_> = stored.iter().map(|(receipt, _)| receipt.clone()).collect();
        prop_assert_eq!(&receipts, &expected, "message {}", index);

        let counts = StatusCounts::recount(expected.iter().map(|r| r.status()));
        let expected_receipts = expected
            .iter()
            .map(|r| u64::from(r.registration.expected_receipts))
            .max()
            .unwrap_or(0);
        prop_assert_eq!(view.counts, counts, "message {}", index);
        prop_assert_eq!(view.expected_receipts, expected_receipts);
        prop_assert_eq!(
            view.summary,
            DeliverySummary::new(expected_receipts, &counts)
        );
        prop_assert_eq!(
            Some(view.date_created),
            expected.iter().map(|r| r.date_created()).min()
        );
        prop_assert_eq!(
            Some(view.date_updated),
            latest(&|c| c.receipt.registration.message_index == index)
        );
        if counts.failed + counts.undelivered > 0 {
            failing += 1;
        }
    }

    let all = StatusCounts::recount(projector.receipts().map(|r| r.status()));
    match &model.rollup {
        None => prop_assert!(changes.is_empty()),
        Some(rollup) => {
            prop_assert_eq!(rollup.messages, model.messages.len() as u64);
            prop_assert_eq!(rollup.counts, all);
            prop_assert_eq!(rollup.receipts, all.receipts());
            prop_assert_eq!(rollup.messages_with_failures, failing);
            prop_assert_eq!(Some(rollup.last_updated), latest(&|_| true));
        }
    }
    Ok(())
}

/// What the timeline of channel message `id` must show, from the steps alone: `queued` at the
/// earliest registration, then per status reported the report of smallest rank, by rank.
fn expected_timeline(
    layout: &[(u64, String)],
    steps: &[Step],
    id: &str,
) -> Vec<(DeliveryStatus, Option<u32>, Timestamp)> {
    let mut registered_at = None::<Timestamp>;
    let mut earliest: BTreeMap<DeliveryStatus, StatusReport> = BTreeMap::new();
    for step in steps {
        match step {
            Step::Register { receipt, tick, .. } if layout[receipt.index(layout.len())].1 == id => {
                let t = at(tick * 1000);
                registered_at = Some(registered_at.map_or(t, |r| r.min(t)));
            }
            Step::Report {
                receipt,
                status,
                tick,
                error_code,
            } if layout[receipt.index(layout.len())].1 == id => {
                let report = provider_report(
                    id,
                    receipts_domain::StatusSource::Canonical,
                    status.as_str(),
                    *error_code,
                    tick * 1000,
                );
                let kept = earliest.entry(*status).or_insert_with(|| report.clone());
                if report.rank() < kept.rank() {
                    *kept = report;
                }
            }
            _ => {}
        }
    }
    let mut reports: Vec<StatusReport> = earliest.into_values().collect();
    reports.sort_by(|a, b| a.rank().cmp(&b.rank()));
    let registered = (
        DeliveryStatus::Queued,
        None,
        registered_at.expect("a stored receipt was registered"),
    );
    std::iter::once(registered)
        .chain(
            reports
                .into_iter()
                .map(|r| (r.status, r.error_code, r.provider_time)),
        )
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn redelivered_and_rebatched_changes_give_the_exactly_once_read_model(
        layout in any_layout(),
        steps in prop::collection::vec(any_step(), 1..40),
        crashes in prop::collection::vec(any::<(Index, Index)>(), 0..4),
        late_copies in prop::collection::vec(any::<(Index, Index)>(), 0..4),
        sizes in prop::collection::vec(1usize..6, 1..5),
        picks in prop::collection::vec(any::<Index>(), 0..20),
        on_fjall in any::<bool>(),
    ) {
        let projector = project(&layout, &steps);
        let changes = &projector.changes;
        let stream = redelivered(changes, &crashes, &late_copies);
        // Timelines are a union: the changelog's states may come in any order, not only the
        // projector's, and again.
        let mut states: Vec<_> = projector.changelog.iter().rev().cloned().collect();
        states.extend(redelivered(&projector.changelog, &crashes, &late_copies));
        let picked: Vec<_> = picks.iter().map(|i| states[i.index(states.len())].clone()).collect();
        states.extend(picked);

        // The rebatched read model on either engine; the exactly-once one on sled.
        let (_dir, store) = open_on(if on_fjall { StorageEngine::Fjall } else { StorageEngine::Sled });
        let mut total = ApplyStats::default();
        let mut consumed = 0;
        for batch in batches(&stream, &sizes) {
            consumed += batch.len();
            let stats = store.apply(batch, &[offset(consumed as i64)]).unwrap();
            total.applied += stats.applied;
            total.duplicates += stats.duplicates;
            total.stale += stats.stale;
        }
        prop_assert_eq!(total.applied, changes.len() as u64);
        prop_assert_eq!(total.duplicates + total.stale, (stream.len() - changes.len()) as u64);
        let stored_offset = store.next_offset(TOPIC, 0).unwrap();
        prop_assert_eq!(stored_offset, (!stream.is_empty()).then_some(stream.len() as i64));
        for batch in batches(&states, &sizes) {
            store.apply_timelines(batch, &[]).unwrap();
        }

        let (_dir, once) = open();
        for change in changes {
            once.apply(std::slice::from_ref(change), &[]).unwrap();
        }
        once.apply_timelines(&projector.changelog, &[]).unwrap();
        let model = read_model(store.as_ref(), &account());
        prop_assert_eq!(&model, &read_model(&once, &account()));
        check_recount(&model, &projector, changes)?;
        for (receipt, timeline) in model.receipts.iter().flatten() {
            let id = receipt.registration.channel_message_id.as_str();
            let entries: Vec<_> = timeline
                .as_ref()
                .expect("every stored receipt has a timeline")
                .iter()
                .map(|e| (e.status, e.error_code, e.at))
                .collect();
            prop_assert_eq!(entries, expected_timeline(&layout, &steps, id), "{}", id);
        }
    }
}
