//! Two projector instances in one group: when one stops, the other takes its partitions over
//! from its own stored offsets, and nothing is lost or applied twice.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::Producer;
use receipts_proto::codec::Encoding;
use receipts_store::{ProjectorStore, SledProjectorStore};

use crate::support::{Harness, Model, UpdateLog, workload};

/// Two instances with their own sled dirs share four partitions and apply the first half of
/// the events; then one is stopped while the second half is produced. The survivor's database
/// ends with the model's state for every channel message (including those it only learned from
/// partitions it took over), and `receipt-updates` holds every version 1..=n of every receipt,
/// equal to the model's change, with duplicates byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_hands_its_partitions_over_without_loss() {
    let harness = Arc::new(Harness::new(4).await);
    let events = workload(7, 5_000, 500);
    let (first, second) = events.split_at(events.len() / 2);
    let model = Model::of(&events);
    let updates = UpdateLog::follow(harness.reader(&harness.topics.receipt_updates));

    let (leaving_dir, surviving_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (stop_leaving, leaving) = harness.spawn(leaving_dir.path());
    let (stop_surviving, surviving) = harness.spawn(surviving_dir.path());
    wait_until_both_have_partitions(&harness).await;

    harness.produce(first, Encoding::Protobuf).await;
    let first_changes = Model::of(first).change_count();
    if let Err(progress) = updates
        .settle(
            first_changes,
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
        .await
    {
        panic!("the first half's {first_changes} changes were not published ({progress:?})");
    }

    // The second half arrives in paced chunks, before, during and after one instance leaves.
    let producing = {
        let harness = harness.clone();
        let second = second.to_vec();
        tokio::spawn(async move {
            for chunk in second.chunks(1_000) {
                harness.produce(chunk, Encoding::Protobuf).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_leaving.cancel();
    tokio::time::timeout(Duration::from_secs(30), leaving)
        .await
        .expect("a stopped instance finishes its batch and leaves within 30 s")
        .unwrap();
    let left = SledProjectorStore::open(leaving_dir.path()).unwrap();
    let applied = (0..4)
        .filter(|&p| {
            let next = left.next_offset(&harness.topics.delivery_events, p);
            next.unwrap().is_some_and(|next| next > 0)
        })
        .count();
    assert!(
        applied > 0,
        "the instance that left had applied records of its own"
    );
    producing.await.expect("all events are produced");

    if let Err(progress) = updates
        .settle(
            model.change_count(),
            Duration::from_secs(3),
            Duration::from_secs(90),
        )
        .await
    {
        panic!(
            "the survivor did not publish the model's {} changes ({progress:?})",
            model.change_count()
        );
    }
    stop_surviving.cancel();
    surviving.await.unwrap();

    let store = SledProjectorStore::open(surviving_dir.path()).unwrap();
    model.assert_stored(&store);
    model.assert_published(&updates.stop());
}

/// Waits until the group is stable with two members that each have partitions.
async fn wait_until_both_have_partitions(harness: &Harness) {
    let client = harness.producer.client();
    let mut last = String::new();
    for _ in 0..120 {
        let groups = tokio::task::block_in_place(|| {
            client.fetch_group_list(Some(&harness.group), Duration::from_secs(5))
        });
        if let Ok(groups) = groups
            && let Some(group) = groups.groups().first()
        {
            let partitions: Vec<usize> = group
                .members()
                .iter()
                .map(|m| m.assignment().map_or(0, assigned_partitions))
                .collect();
            if group.state() == "Stable"
                && partitions.len() == 2
                && partitions.iter().all(|&p| p > 0)
            {
                return;
            }
            last = format!(
                "state {}, partitions per member {partitions:?}",
                group.state()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the two instances did not share the partitions within 30 s (last seen: {last})");
}

/// The number of partitions in a consumer-protocol assignment (0 if it cannot be read).
fn assigned_partitions(assignment: &[u8]) -> usize {
    read_assignment(&mut &assignment[..]).unwrap_or(0)
}

/// Version (i16), topics (i32) × [name (i16 length + bytes), partitions (i32) × i32], user data.
fn read_assignment(bytes: &mut &[u8]) -> Option<usize> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = bytes.split_at_checked(n)?;
        *bytes = tail;
        Some(head)
    }
    fn int(bytes: &mut &[u8], width: usize) -> Option<usize> {
        let raw = take(bytes, width)?;
        let value = match width {
            2 => i64::from(i16::from_be_bytes(raw.try_into().ok()?)),
            _ => i64::from(i32::from_be_bytes(raw.try_into().ok()?)),
        };
        usize::try_from(value).ok()
    }
    take(bytes, 2)?;
    let mut partitions = 0;
    for _ in 0..int(bytes, 4)? {
        let name = int(bytes, 2)?;
        take(bytes, name)?;
        let count = int(bytes, 4)?;
        take(bytes, 4 * count)?;
        partitions += count;
    }
    Some(partitions)
}
