//! The engine with a handler that leaves its batches settling: the next batch is handed over
//! while one settles, offsets are committed in batch order, a failed batch is handed over again
//! together with the batch after it, and a revocation waits for the batch settling.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use receipts_bus::consume::{Settling, nothing_stored};
use receipts_bus::topics::ensure_topics;
use receipts_bus::{
    Commit, Consumer, ConsumerOptions, Handler, KafkaSettings, Outgoing, Publisher, Record,
    TopicSpec, Transient,
};
use receipts_runtime::health::Readiness;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
#[error("the batch was not stored")]
struct NotStored;

impl Transient for NotStored {
    fn is_transient(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    HandedOver(u64, Vec<i64>),
    Stored(u64, Vec<i64>),
    Dropped,
}

/// Hands batches over at once and stores each (notes `Stored`) once the test released its
/// number and the batch before it was stored; a batch whose number is in `fail` fails once.
struct Staged {
    steps: Arc<Mutex<Vec<Step>>>,
    released: watch::Receiver<BTreeSet<u64>>,
    fail: Arc<Mutex<BTreeSet<u64>>>,
    /// Stored after the batch before, as the projector does.
    chained: bool,
    before: Option<oneshot::Receiver<bool>>,
    next: u64,
}

impl Handler for Staged {
    type Error = NotStored;

    async fn process(&mut self, records: Arc<[Record]>) -> Result<Commit, NotStored> {
        self.pipeline(records).await?.wait().await
    }

    async fn pipeline(&mut self, records: Arc<[Record]>) -> Result<Settling<NotStored>, NotStored> {
        let (number, offsets) = (self.next, records.iter().map(Record::offset).collect());
        self.next += 1;
        self.steps
            .lock()
            .unwrap()
            .push(Step::HandedOver(number, Vec::clone(&offsets)));
        let (stored_tx, stored_rx) = oneshot::channel();
        let before = self.before.replace(stored_rx).filter(|_| self.chained);
        let (steps, fail, mut released) =
            (self.steps.clone(), self.fail.clone(), self.released.clone());
        Ok(Settling::pending(async move {
            let stored = async {
                released
                    .wait_for(|released| released.contains(&number))
                    .await
                    .map_err(|_| NotStored)?;
                if let Some(before) = before
                    && before.await != Ok(true)
                {
                    return Err(NotStored);
                }
                if fail.lock().unwrap().remove(&number) {
                    return Err(NotStored);
                }
                steps.lock().unwrap().push(Step::Stored(number, offsets));
                Ok(Commit::Batch)
            }
            .await;
            let _ = stored_tx.send(stored.is_ok());
            stored
        }))
    }

    fn unsettled_dropped(&mut self) {
        self.steps.lock().unwrap().push(Step::Dropped);
        self.before = None;
    }
}

struct Setup {
    kafka: KafkaSettings,
    topic: String,
    group: String,
    publisher: Publisher,
    steps: Arc<Mutex<Vec<Step>>>,
    release: watch::Sender<BTreeSet<u64>>,
    fail: Arc<Mutex<BTreeSet<u64>>>,
    shutdown: CancellationToken,
}

impl Setup {
    async fn new(name: &str) -> Self {
        let kafka = receipts_testkit::kafka();
        let topic = receipts_testkit::unique(name);
        ensure_topics(&kafka, &[TopicSpec::new(&topic, 1)])
            .await
            .unwrap();
        Setup {
            publisher: Publisher::new(&kafka, "pipeline-test").unwrap(),
            group: receipts_testkit::unique("pipeline-group"),
            kafka,
            topic,
            steps: Arc::default(),
            release: watch::Sender::new(BTreeSet::new()),
            fail: Arc::default(),
            shutdown: CancellationToken::new(),
        }
    }

    fn start(&self, chained: bool) -> tokio::task::JoinHandle<()> {
        let options = ConsumerOptions::group("staged", "staged", &self.group, &[&self.topic])
            .batch(1_000, Duration::ZERO);
        let consumer = Consumer::new(
            &self.kafka,
            options,
            Arc::new(nothing_stored),
            Readiness::default().component("staged"),
        )
        .unwrap();
        let mut handler = Staged {
            steps: self.steps.clone(),
            released: self.release.subscribe(),
            fail: self.fail.clone(),
            chained,
            before: None,
            next: 0,
        };
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move { consumer.run(&mut handler, &shutdown).await.unwrap() })
    }

    async fn produce(&self, value: &str) {
        let record = Outgoing::new(&self.topic, value, value.as_bytes().to_vec());
        self.publisher.send_all(&[record]).await.unwrap();
    }

    fn release(&self, number: u64) {
        self.release.send_modify(|released| {
            released.insert(number);
        });
    }

    async fn until(&self, what: &str, done: impl Fn(&[Step]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(&self.steps.lock().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "{what}: {:?}",
                self.steps.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The group's committed next offset of the partition (`None`: nothing committed).
    fn committed(&self) -> Option<i64> {
        let reader: BaseConsumer = self
            .kafka
            .consumer_config("pipeline-committed", &self.group)
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, 0);
        let committed = reader
            .committed_offsets(list, Duration::from_secs(10))
            .unwrap();
        match committed.find_partition(&self.topic, 0).unwrap().offset() {
            Offset::Offset(next) => Some(next),
            _ => None,
        }
    }

    async fn committed_reaches(&self, next: i64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.committed() != Some(next) {
            assert!(
                Instant::now() < deadline,
                "committed {:?}",
                self.committed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn handed_over(steps: &[Step], number: u64) -> bool {
    steps
        .iter()
        .any(|s| matches!(s, Step::HandedOver(n, _) if *n == number))
}

/// Batch 1 is handed over while batch 0 has not settled; it settling first commits nothing,
/// since offsets are committed in batch order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_handed_over_while_one_settles_and_commits_stay_in_order() {
    let setup = Setup::new("pipeline-overlap").await;
    let running = setup.start(false);
    setup.produce("a").await;
    setup.until("batch 0", |s| handed_over(s, 0)).await;
    setup.produce("b").await;
    setup
        .until("batch 1 while 0 settles", |s| handed_over(s, 1))
        .await;

    setup.release(1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        setup.committed(),
        None,
        "nothing is committed before batch 0"
    );
    assert!(
        !setup
            .steps
            .lock()
            .unwrap()
            .contains(&Step::Stored(1, vec![1]))
    );

    setup.release(0);
    setup.committed_reaches(2).await;
    assert_eq!(
        *setup.steps.lock().unwrap(),
        vec![
            Step::HandedOver(0, vec![0]),
            Step::HandedOver(1, vec![1]),
            Step::Stored(0, vec![0]),
            Step::Stored(1, vec![1]),
        ]
    );
    setup.shutdown.cancel();
    running.await.unwrap();
}

/// Batch 0 fails after batch 1 was handed over on top of it: batch 1 stores nothing, the
/// handler is told, and both are handed over again, together, before anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_is_handed_over_again_with_the_batch_after_it() {
    let setup = Setup::new("pipeline-failure").await;
    setup.fail.lock().unwrap().insert(0);
    let running = setup.start(true);
    setup.produce("a").await;
    setup.until("batch 0", |s| handed_over(s, 0)).await;
    setup.produce("b").await;
    setup
        .until("batch 1 while 0 settles", |s| handed_over(s, 1))
        .await;
    setup.release(0);
    setup.release(1);
    setup.until("batch 2", |s| handed_over(s, 2)).await;
    setup.release(2);
    setup.committed_reaches(2).await;
    assert_eq!(
        *setup.steps.lock().unwrap(),
        vec![
            Step::HandedOver(0, vec![0]),
            Step::HandedOver(1, vec![1]),
            Step::Dropped,
            Step::HandedOver(2, vec![0, 1]),
            Step::Stored(2, vec![0, 1]),
        ]
    );
    setup.shutdown.cancel();
    running.await.unwrap();
}

/// A second member joins while a batch settles: the first member's revocation waits until
/// it is stored and hands the partition over right after it, so no record is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_waits_for_the_batch_settling() {
    let mut setup = Setup::new("pipeline-revoke").await;
    setup.kafka = quick_group(&setup.kafka);
    let first = setup.start(true);
    setup.produce("a").await;
    setup.until("batch 0", |s| handed_over(s, 0)).await;
    // The second member's handler shares the steps; its batches are numbered from 0 too, so
    // it is released wholesale.
    let second = setup.start(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !setup
            .steps
            .lock()
            .unwrap()
            .iter()
            .any(|s| matches!(s, Step::Stored(..))),
        "nothing stored before the release"
    );
    setup
        .release
        .send_modify(|released| released.extend(0..100));
    setup.committed_reaches(1).await;
    setup.produce("b").await;
    setup.committed_reaches(2).await;
    setup.shutdown.cancel();
    first.await.unwrap();
    second.await.unwrap();
    let mut stored: HashMap<i64, usize> = HashMap::new();
    for step in setup.steps.lock().unwrap().iter() {
        if let Step::Stored(_, offsets) = step {
            for offset in offsets {
                *stored.entry(*offset).or_default() += 1;
            }
        }
    }
    assert_eq!(stored, HashMap::from([(0, 1), (1, 1)]), "{:?}", setup.steps);
}

fn quick_group(kafka: &KafkaSettings) -> KafkaSettings {
    let mut kafka = kafka.clone();
    kafka
        .properties
        .insert("session.timeout.ms".into(), "6000".into());
    kafka
        .properties
        .insert("heartbeat.interval.ms".into(), "500".into());
    kafka
}
