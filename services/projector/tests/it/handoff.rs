//! State moves with its partition (DESIGN §4a): a fresh instance, with an empty disk, takes the
//! partitions over after retention removed the input records that built their state, and goes
//! on exactly as one never-stopped instance would.

use std::sync::Arc;
use std::time::Duration;

use receipts_proto::codec::Encoding;
use receipts_store::SledProjectorStore;

use crate::support::{Harness, Model, UpdateLog, workload};

/// Instance A applies the first half of a workload and stops; every `delivery-events` record is
/// then deleted. Instance B starts on an empty disk in the same group and gets the second half:
/// it restores the partitions from the changelog, so every receipt keeps its registration and
/// `receipt-updates` holds exactly the versions 1..=n the model gives, none lower, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_continues_after_retention_removed_the_input() {
    let harness = Arc::new(Harness::new(2).await);
    let events = workload(11, 2_000, 200);
    let (first, second) = events.split_at(events.len() / 2);
    let updates = UpdateLog::follow(harness.reader(&harness.topics.receipt_updates));

    let first_dir = tempfile::tempdir().unwrap();
    let (stop_first, running) = harness.spawn(first_dir.path());
    harness.produce(first, Encoding::Protobuf).await;
    let first_changes = Model::of(first).change_count();
    if let Err(progress) = updates
        .settle(
            first_changes,
            Duration::from_secs(2),
            Duration::from_secs(90),
        )
        .await
    {
        panic!("the first half's {first_changes} changes were not published ({progress:?})");
    }
    stop_first.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the first instance stops")
        .unwrap();

    receipts_testkit::trim(&harness.kafka, &harness.topics.delivery_events).await;

    let fresh_dir = tempfile::tempdir().unwrap();
    let (stop_fresh, running) = harness.spawn(fresh_dir.path());
    harness.produce(second, Encoding::Protobuf).await;
    let model = Model::of(&events);
    let total = model.change_count();
    if let Err(progress) = updates
        .settle(total, Duration::from_secs(3), Duration::from_secs(120))
        .await
    {
        panic!("only part of the {total} changes were published ({progress:?})");
    }
    stop_fresh.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the fresh instance stops")
        .unwrap();

    model.assert_published(&updates.stop());
    let store = SledProjectorStore::open(fresh_dir.path()).unwrap();
    model.assert_stored(&store);
}
