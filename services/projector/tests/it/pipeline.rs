//! Two batches in flight: while batch N's store is held back, batch N+1 is applied on top of
//! N's unstored state and its updates are published, and N+1 is stored only after N.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use receipts_domain::{DeliveryStatus, ReceiptKey, ReceiptState, Timestamp};
use receipts_proto::codec::Encoding;
use receipts_store::{
    ParkedEntry, PartitionOffset, ProjectorBatch, ProjectorStore, SledProjectorStore, StoreError,
};
use tokio_util::sync::CancellationToken;

use crate::support::{Harness, key, read_updates, registration, report};

/// A sled store whose batch writes wait while it is shut, noting the input offset each write
/// reaches in the order the writes began.
struct GatedStore {
    inner: SledProjectorStore,
    input: String,
    open: Mutex<bool>,
    opened: Condvar,
    writes: Mutex<Vec<i64>>,
}

impl GatedStore {
    fn open(dir: &Path, input: &str) -> Self {
        GatedStore {
            inner: SledProjectorStore::open(dir).unwrap(),
            input: input.to_owned(),
            open: Mutex::new(false),
            opened: Condvar::new(),
            writes: Mutex::default(),
        }
    }

    fn let_through(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn writes(&self) -> Vec<i64> {
        self.writes.lock().unwrap().clone()
    }

    async fn until_writes(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.writes().len() < count {
            assert!(Instant::now() < deadline, "writes {:?}", self.writes());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl ProjectorStore for GatedStore {
    fn state(&self, id: &ReceiptKey) -> Result<Option<ReceiptState>, StoreError> {
        self.inner.state(id)
    }

    fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        self.inner.next_offset(topic, partition)
    }

    fn commit(&self, batch: &ProjectorBatch) -> Result<(), StoreError> {
        let reaches = batch
            .offsets
            .iter()
            .find(|o| o.topic == self.input)
            .map_or(-1, |o| o.next_offset);
        self.writes.lock().unwrap().push(reaches);
        let open = self.open.lock().unwrap();
        drop(self.opened.wait_while(open, |open| !*open).unwrap());
        self.inner.commit(batch)
    }

    fn restore(
        &self,
        states: &[(ReceiptKey, ReceiptState, Timestamp)],
        position: &PartitionOffset,
    ) -> Result<(), StoreError> {
        self.inner.restore(states, position)
    }

    fn parked(&self) -> Result<Vec<ParkedEntry>, StoreError> {
        self.inner.parked()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
}

/// Lets the held writes through when the test ends, also when it fails.
struct OpenOnDrop(Arc<GatedStore>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.let_through();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_builds_on_an_unstored_one_and_is_stored_after_it() {
    let harness = Harness::new(1).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(GatedStore::open(
        dir.path(),
        &harness.topics.delivery_events,
    ));
    let _open_at_end = OpenOnDrop(store.clone());
    let shutdown = CancellationToken::new();
    let running = {
        let (config, store, shutdown) =
            (harness.config(dir.path()), store.clone(), shutdown.clone());
        tokio::spawn(async move {
            let metrics = receipts_runtime::metrics::Metrics::new();
            receipts_projector::run_with_store(
                config,
                store,
                receipts_runtime::clock::system(),
                &metrics,
                shutdown,
            )
            .await
            .expect("projector runs");
        })
    };
    let reader = harness.reader(&harness.topics.receipt_updates);

    harness
        .produce(&[registration("wamid.p", 7, 1, 2, 1)], Encoding::Protobuf)
        .await;
    let first = read_updates(&reader, 1).await;
    assert_eq!(first[0].1.receipt.version, 1);
    store.until_writes(1).await;

    // Batch 0 is held before its write; batch 1 is applied on top of its state all the same.
    harness
        .produce(
            &[report("wamid.p", DeliveryStatus::Delivered, 2_000)],
            Encoding::Protobuf,
        )
        .await;
    let second = read_updates(&reader, 1).await;
    let change = &second[0].1;
    assert_eq!(
        (
            change.previous_status,
            change.receipt.status(),
            change.receipt.version
        ),
        (Some(DeliveryStatus::Queued), DeliveryStatus::Delivered, 2)
    );
    assert!(
        store.inner.state(&key("wamid.p")).unwrap().is_none(),
        "batch 0 is not stored yet"
    );
    assert_eq!(store.writes(), vec![1], "batch 1 waits for batch 0");

    store.let_through();
    store.until_writes(2).await;
    assert_eq!(store.writes(), vec![1, 2], "stored in order");
    shutdown.cancel();
    running.await.unwrap();
    let stored = store.inner.state(&key("wamid.p")).unwrap().unwrap();
    let receipt = stored.receipt().unwrap();
    assert_eq!(
        (receipt.status(), receipt.version),
        (DeliveryStatus::Delivered, 2)
    );
    assert_eq!(
        store
            .inner
            .next_offset(&harness.topics.delivery_events, 0)
            .unwrap(),
        Some(2)
    );
}
