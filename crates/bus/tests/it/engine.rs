//! The consume engine against a real broker: rebalance fencing, commits that hand a partition
//! over exactly where its state ends, changelog restore, and readiness that tells the truth.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use receipts_bus::changelog::restore_partition;
use receipts_bus::consume::nothing_stored;
use receipts_bus::topics::ensure_topics;
use receipts_bus::{
    Commit, Consumer, ConsumerOptions, Handler, KafkaSettings, Outgoing, Publisher, Record,
    TopicSpec, Transient,
};
use receipts_runtime::health::Readiness;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Transient for Never {
    fn is_transient(&self) -> bool {
        false
    }
}

/// (instance, partition, offset) of every record processed.
type Seen = Arc<Mutex<Vec<(&'static str, i32, i64)>>>;

/// Notes every record it processes, by instance.
struct Recorder {
    instance: &'static str,
    seen: Seen,
}

impl Handler for Recorder {
    type Error = Never;

    async fn process(&mut self, records: Arc<[Record]>) -> Result<Commit, Never> {
        let mut seen = self.seen.lock().unwrap();
        for record in records.iter() {
            seen.push((self.instance, record.partition(), record.offset()));
        }
        Ok(Commit::Batch)
    }
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

async fn produce(publisher: &Publisher, topic: &str, from: usize, count: usize) {
    let records: Vec<Outgoing> = (from..from + count)
        .map(|n| Outgoing::new(topic, format!("key-{n}"), n.to_string().into_bytes()))
        .collect();
    publisher.send_all(&records).await.unwrap();
}

/// A second member joins while the first is in the middle of collecting a long batch. The first
/// drops what it collected for partitions it lost, commits what it stored, and the second starts
/// there: across both, every record is processed exactly once — a record processed by both would
/// be one the old owner stored after the new owner had started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_during_a_batch_hands_every_record_over_exactly_once() {
    let kafka = quick_group(&receipts_testkit::kafka());
    let topic = receipts_testkit::unique("engine-fencing");
    ensure_topics(&kafka, &[TopicSpec::new(&topic, 4)])
        .await
        .unwrap();
    let group = receipts_testkit::unique("engine-group");
    let publisher = Publisher::new(&kafka, "engine-test").unwrap();
    let seen: Seen = Arc::default();
    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();

    let start = |instance: &'static str| {
        // Batches close after 3 s: a rebalance almost surely happens while one is collected.
        let options = ConsumerOptions::group(instance, instance, &group, &[&topic])
            .batch(1_000_000, Duration::from_secs(3));
        let consumer = Consumer::new(
            &kafka,
            options,
            Arc::new(nothing_stored),
            readiness.component(instance),
        )
        .unwrap();
        let mut recorder = Recorder {
            instance,
            seen: seen.clone(),
        };
        let shutdown = shutdown.clone();
        tokio::spawn(async move { consumer.run(&mut recorder, &shutdown).await })
    };

    let first = start("first");
    let mut produced = 0;
    for _ in 0..10 {
        produce(&publisher, &topic, produced, 200).await;
        produced += 200;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let second = start("second");
    for _ in 0..30 {
        produce(&publisher, &topic, produced, 200).await;
        produced += 200;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Both caught up: nothing more arrives.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < produced {
        assert!(
            Instant::now() < deadline,
            "only {} of {produced} records processed",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    shutdown.cancel();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();

    let seen = seen.lock().unwrap();
    let mut by_record: HashMap<(i32, i64), Vec<&str>> = HashMap::new();
    for (instance, partition, offset) in seen.iter() {
        by_record
            .entry((*partition, *offset))
            .or_default()
            .push(instance);
    }
    let twice: Vec<_> = by_record.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
    assert_eq!(by_record.len(), produced, "every record was processed");
    let instances: std::collections::HashSet<&str> =
        seen.iter().map(|(instance, _, _)| *instance).collect();
    assert_eq!(instances.len(), 2, "both instances processed records");
}

/// A consumer that cannot reach any broker says so: not ready, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_makes_the_consumer_not_ready() {
    let mut kafka = KafkaSettings::new("127.0.0.1:1");
    kafka
        .properties
        .insert("reconnect.backoff.max.ms".into(), "500".into());
    let readiness = Readiness::default();
    let options = ConsumerOptions::group("lonely", "lonely", "lonely-group", &["nowhere"])
        .stale_after(Duration::from_secs(1));
    let consumer = Consumer::new(
        &kafka,
        options,
        Arc::new(nothing_stored),
        readiness.component("lonely"),
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let running = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut recorder = Recorder {
                instance: "lonely",
                seen: Arc::default(),
            };
            consumer.run(&mut recorder, &shutdown).await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = readiness.report();
        if report
            .reasons
            .iter()
            .any(|r| r.contains("cannot reach the Kafka broker"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "still {report:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!readiness.is_ready());
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(
        readiness.report().reasons,
        vec!["lonely: stopped: shut down".to_owned()]
    );
}

/// A compacted changelog read from a position yields the latest value of every key changed
/// since, and reading from nothing yields every key's latest value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_reads_a_changelog_partition_from_a_position_to_its_end() {
    let kafka = receipts_testkit::kafka();
    let topic = receipts_testkit::unique("engine-changelog");
    ensure_topics(&kafka, &[TopicSpec::new(&topic, 2).compacted()])
        .await
        .unwrap();
    let publisher = Publisher::new(&kafka, "engine-test").unwrap();
    let write = |key: &str, value: &str| {
        Outgoing::new(&topic, key, value.as_bytes().to_vec()).to_partition(1)
    };
    let landed = publisher
        .send_all(&[write("a", "1"), write("b", "1"), write("a", "2")])
        .await
        .unwrap();
    let position = landed[2].offset + 1;
    publisher
        .send_all(&[write("c", "1"), write("b", "2")])
        .await
        .unwrap();

    let read = |from: Option<i64>| {
        let (kafka, topic) = (kafka.clone(), topic.clone());
        move || {
            let mut latest: BTreeMap<String, String> = BTreeMap::new();
            let restored = restore_partition(&kafka, &topic, 1, from, |records, _| {
                for record in records {
                    latest.insert(
                        String::from_utf8(record.key().unwrap().to_vec()).unwrap(),
                        String::from_utf8(record.payload().unwrap().to_vec()).unwrap(),
                    );
                }
                Ok::<_, Never>(())
            })
            .unwrap();
            (latest, restored.next_offset)
        }
    };
    let (everything, end) = tokio::task::spawn_blocking(read(None)).await.unwrap();
    assert_eq!(
        everything,
        BTreeMap::from([
            ("a".into(), "2".into()),
            ("b".into(), "2".into()),
            ("c".into(), "1".into())
        ])
    );
    assert_eq!(end, 5);
    let (since, end) = tokio::task::spawn_blocking(read(Some(position)))
        .await
        .unwrap();
    assert_eq!(
        since,
        BTreeMap::from([("b".into(), "2".into()), ("c".into(), "1".into())])
    );
    assert_eq!(end, 5);
    let (nothing, end) = tokio::task::spawn_blocking(read(Some(5))).await.unwrap();
    assert!(nothing.is_empty());
    assert_eq!(end, 5);
}
