//! Builders for input events and a harness that runs projectors in-process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use receipts_bus::topics::ensure_topics;
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, DeliveryEvent, DeliveryEventKind, DeliveryStatus,
    ReceiptChange, ReceiptKey, ReceiptSid, StatusReport, StatusSource, Timestamp,
};
use receipts_projector::{BatchConfig, ProjectorConfig};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_store::ProjectorStore;
use receipts_testkit::{events, kafka, model};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) const ACCOUNT: &str = "AC00000000000000000000000000000001";

pub(crate) struct Harness {
    pub(crate) kafka: KafkaSettings,
    pub(crate) topics: TopicNames,
    pub(crate) group: String,
    pub(crate) producer: FutureProducer,
}

impl Harness {
    pub(crate) async fn new(partitions: i32) -> Self {
        let kafka = receipts_testkit::kafka();
        let topics = receipts_testkit::unique_topics();
        ensure_topics(&kafka, &topics.specs(partitions))
            .await
            .unwrap();
        let producer = kafka.producer("projector-test").unwrap();
        Harness {
            group: receipts_testkit::unique("projector"),
            kafka,
            topics,
            producer,
        }
    }

    pub(crate) fn config(&self, data_dir: &Path) -> ProjectorConfig {
        let mut kafka = self.kafka.clone();
        // Quick group moves in tests: a stopped member is noticed within seconds.
        kafka
            .properties
            .insert("session.timeout.ms".into(), "6000".into());
        kafka
            .properties
            .insert("heartbeat.interval.ms".into(), "500".into());
        ProjectorConfig {
            kafka,
            topics: self.topics.clone(),
            group_id: self.group.clone(),
            data_dir: data_dir.to_owned(),
            batch: BatchConfig {
                max_records: 1_000,
                max_wait_ms: 20,
            },
            metrics_listen: String::new(),
            ..ProjectorConfig::default()
        }
    }

    /// Runs a projector in this process until the returned token is cancelled.
    pub(crate) fn spawn(&self, data_dir: &Path) -> (CancellationToken, JoinHandle<()>) {
        let shutdown = CancellationToken::new();
        let config = self.config(data_dir);
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            let metrics = receipts_runtime::metrics::Metrics::new();
            receipts_projector::run(config, &metrics, token)
                .await
                .expect("projector runs");
        });
        (shutdown, handle)
    }

    pub(crate) async fn produce(&self, events: &[DeliveryEvent], encoding: Encoding) {
        let records: Vec<(String, Vec<u8>)> = events
            .iter()
            .map(|event| {
                let payload = codec::encode(&v1::Envelope::from(event), encoding);
                (event.receipt_key().to_string(), payload)
            })
            .collect();
        kafka::produce(
            &self.producer,
            &self.topics.delivery_events,
            records
                .iter()
                .map(|(k, p)| (k.as_str(), Some(p.as_slice()))),
            Some(encoding),
        )
        .await;
    }

    pub(crate) async fn produce_raw(&self, key: &str, payload: &[u8]) {
        kafka::produce(
            &self.producer,
            &self.topics.delivery_events,
            [(key, Some(payload))],
            None,
        )
        .await;
    }

    pub(crate) fn reader(&self, topic: &str) -> StreamConsumer {
        kafka::reader(&self.kafka, "projector-test-reader", topic)
    }
}

/// Reads `count` receipt updates, failing if they do not arrive within a minute.
pub(crate) async fn read_updates(
    reader: &StreamConsumer,
    count: usize,
) -> Vec<(String, ReceiptChange)> {
    kafka::read(reader, count)
        .await
        .into_iter()
        .map(|message| {
            let wire: v1::ReceiptUpdated =
                codec::decode(message.payload().unwrap(), Encoding::Protobuf).unwrap();
            let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
            (key, ReceiptChange::try_from(&wire).unwrap())
        })
        .collect()
}

pub(crate) use receipts_testkit::kafka::assert_no_more;
pub(crate) use receipts_testkit::{events::of_account, sid};

/// The key of `ACCOUNT`'s receipt of a channel message.
pub(crate) fn key(channel_message_id: &str) -> ReceiptKey {
    ReceiptKey::new(
        AccountSid::parse(ACCOUNT).unwrap(),
        ChannelMessageId::parse(channel_message_id).unwrap(),
    )
}

/// A WhatsApp registration of `ACCOUNT`'s.
pub(crate) fn registration(
    channel_message_id: &str,
    conversation: u64,
    message: u64,
    participant: u64,
    expected: u32,
) -> DeliveryEvent {
    events::registered(events::registration(
        ACCOUNT,
        Channel::Whatsapp,
        channel_message_id,
        conversation,
        message,
        participant,
        expected,
    ))
}

/// A WhatsApp Cloud report of `ACCOUNT`'s; failures carry error code 63016.
pub(crate) fn report(
    channel_message_id: &str,
    status: DeliveryStatus,
    at_millis: i64,
) -> DeliveryEvent {
    let error_code =
        matches!(status, DeliveryStatus::Failed | DeliveryStatus::Undelivered).then_some(63016);
    events::reported(events::report(
        ACCOUNT,
        channel_message_id,
        status,
        at_millis,
        error_code,
        StatusSource::WhatsappCloud,
    ))
}

/// A seeded random workload of `messages` channel messages over `conversations` conversations,
/// in the order it is produced. Each message gets a registration (2 % never do, so their reports
/// stay parked; 3 % are registered again with one more expected receipt) and 2–6 status reports
/// with random statuses, error codes and provider times; each message's events come in random
/// order (reports before the registration included), ~5 % of events are sent twice, and the
/// messages are interleaved at random.
pub(crate) fn workload(seed: u64, messages: u64, conversations: u64) -> Vec<DeliveryEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut per_message: Vec<Vec<DeliveryEvent>> = Vec::with_capacity(messages as usize);
    for m in 0..messages {
        let id = format!("wamid.{seed:x}.{m}");
        let mut events = Vec::new();
        if rng.random_bool(0.98) {
            let mut event = registration(
                &id,
                rng.random_range(0..conversations),
                m,
                m,
                rng.random_range(1..=3),
            );
            if let DeliveryEventKind::Registered(r) = &mut event.kind {
                r.channel = *Channel::ALL.choose(&mut rng).unwrap();
                r.registered_at = Timestamp::from_unix_millis(rng.random_range(500..=1_500));
                if rng.random_bool(0.03) {
                    let mut again = r.clone();
                    again.expected_receipts += 1;
                    events.push(DeliveryEvent {
                        event_id: format!("rereg-{id}"),
                        kind: DeliveryEventKind::Registered(again),
                    });
                }
            }
            events.push(event);
        }
        for n in 0..rng.random_range(2..=6) {
            let status = *DeliveryStatus::ALL.choose(&mut rng).unwrap();
            let mut event = report(&id, status, rng.random_range(1_000..=20_000));
            event.event_id = format!("rep-{id}-{n}");
            if let DeliveryEventKind::Reported(r) = &mut event.kind {
                r.source = *StatusSource::ALL.choose(&mut rng).unwrap();
                if r.error_code.is_some() {
                    r.error_code = Some(*[30003, 30005, 63016].choose(&mut rng).unwrap());
                }
            }
            events.push(event);
        }
        let resent: Vec<DeliveryEvent> = events
            .iter()
            .filter(|_| rng.random_bool(0.05))
            .cloned()
            .collect();
        events.extend(resent);
        events.shuffle(&mut rng);
        per_message.push(events);
    }
    // A uniformly random interleaving that keeps each message's (already random) order.
    let mut slots: Vec<usize> = per_message
        .iter()
        .enumerate()
        .flat_map(|(m, events)| std::iter::repeat_n(m, events.len()))
        .collect();
    slots.shuffle(&mut rng);
    slots
        .into_iter()
        .map(|m| per_message[m].pop().unwrap())
        .collect()
}

/// What the projector must end up with: the reference model of the events as produced, with the
/// checks of what a projector published and stored against it.
pub(crate) struct Model(model::Model);

impl std::ops::Deref for Model {
    type Target = model::Model;

    fn deref(&self) -> &model::Model {
        &self.0
    }
}

impl Model {
    pub(crate) fn of(events: &[DeliveryEvent]) -> Self {
        Model(model::Model::of(events))
    }

    /// Every change was published, keyed by conversation, equal to the model's change of that
    /// version; nothing else was; and a change published twice was published byte-identical.
    pub(crate) fn assert_published(&self, updates: &[PublishedUpdate]) {
        let mut first: HashMap<(&ReceiptSid, u64), &PublishedUpdate> = HashMap::new();
        for update in updates {
            let receipt = &update.change.receipt;
            let version = receipt.version;
            assert_eq!(
                update.key,
                receipt.registration.conversation.as_str(),
                "{} version {version} is keyed by its conversation",
                receipt.sid
            );
            let expected = self.change(&receipt.sid, version).unwrap_or_else(|| {
                panic!(
                    "{} version {version} was published, but the model never made it",
                    receipt.sid
                )
            });
            assert_eq!(
                &update.change, expected,
                "{} version {version} differs from the model",
                receipt.sid
            );
            if let Some(earlier) = first.insert((&receipt.sid, version), update) {
                assert_eq!(
                    earlier.payload, update.payload,
                    "{} version {version} was published twice with different bytes",
                    receipt.sid
                );
            }
        }
        let missing: Vec<String> = self
            .receipts()
            .flat_map(|(sid, changes)| (1..=changes.len() as u64).map(move |v| (sid, v)))
            .filter(|key| !first.contains_key(key))
            .map(|(sid, v)| format!("{sid} v{v}"))
            .collect();
        assert!(
            missing.is_empty(),
            "{} of {} changes were never published, e.g. {:?}",
            missing.len(),
            self.change_count(),
            &missing[..missing.len().min(5)]
        );
    }

    /// `store` holds the model's state (registration, best report and version) for every channel
    /// message, and exactly the never-registered ones are parked, with their best report.
    pub(crate) fn assert_stored(&self, store: &dyn ProjectorStore) {
        let mut differ = Vec::new();
        for (id, expected) in self.states() {
            let stored = store.state(id).unwrap();
            if stored.as_ref() != Some(expected) {
                differ.push(format!("{id}: stored {stored:?}, model {expected:?}"));
            }
        }
        assert!(
            differ.is_empty(),
            "{} of {} channel messages differ from the model, e.g. {}",
            differ.len(),
            self.states().len(),
            differ[..differ.len().min(3)].join("; ")
        );
        let parked: BTreeMap<ReceiptKey, Option<StatusReport>> = store
            .parked()
            .unwrap()
            .into_iter()
            .map(|entry| (entry.key, entry.report))
            .collect();
        let expected: BTreeMap<ReceiptKey, Option<StatusReport>> = self
            .states()
            .iter()
            .filter_map(|(id, state)| {
                let report = state.parked_report()?;
                Some((id.clone(), Some(report.clone())))
            })
            .collect();
        assert!(!expected.is_empty(), "the workload parks some reports");
        let differ: Vec<&ReceiptKey> = parked
            .keys()
            .chain(expected.keys())
            .filter(|id| parked.get(*id) != expected.get(*id))
            .collect();
        assert!(
            differ.is_empty(),
            "{} reports are parked, the model parks {}; they differ for {} channel messages, e.g. {:?}",
            parked.len(),
            expected.len(),
            differ.len(),
            &differ[..differ.len().min(5)]
        );
    }
}

/// One record read from `receipt-updates`: its key, its bytes and what they decode to.
#[derive(Debug)]
pub(crate) struct PublishedUpdate {
    pub(crate) key: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) change: ReceiptChange,
}

/// How much of `receipt-updates` an [`UpdateLog`] has read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) records: usize,
    /// Distinct (receipt, version) pairs.
    pub(crate) distinct: usize,
}

/// Reads `receipt-updates` from the beginning in the background and keeps every record.
pub(crate) struct UpdateLog {
    updates: Arc<Mutex<Vec<PublishedUpdate>>>,
    progress: watch::Receiver<Progress>,
    task: JoinHandle<()>,
}

impl UpdateLog {
    pub(crate) fn follow(reader: StreamConsumer) -> Self {
        let updates = Arc::new(Mutex::new(Vec::new()));
        let (report, progress) = watch::channel(Progress::default());
        let kept = updates.clone();
        let task = tokio::spawn(async move {
            let mut distinct = HashSet::new();
            loop {
                let message = match reader.recv().await {
                    Ok(message) => message,
                    Err(error) => {
                        eprintln!("reading receipt-updates: {error}");
                        continue;
                    }
                };
                let payload = message.payload().unwrap_or_default().to_vec();
                let wire: v1::ReceiptUpdated = codec::decode(&payload, Encoding::Protobuf)
                    .expect("receipt updates are protobuf");
                let change = ReceiptChange::try_from(&wire).expect("receipt updates are valid");
                distinct.insert((change.receipt.sid.clone(), change.receipt.version));
                let key = String::from_utf8(message.key().unwrap_or_default().to_vec())
                    .expect("keys are conversation sids");
                let mut kept = kept.lock().unwrap();
                kept.push(PublishedUpdate {
                    key,
                    payload,
                    change,
                });
                report.send_replace(Progress {
                    records: kept.len(),
                    distinct: distinct.len(),
                });
            }
        });
        UpdateLog {
            updates,
            progress,
            task,
        }
    }

    pub(crate) fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Waits until more than `records` records were read; `Err` with the progress made if none
    /// arrives `within`.
    pub(crate) async fn more_than(&self, records: usize, within: Duration) -> Result<(), Progress> {
        let mut progress = self.progress.clone();
        tokio::time::timeout(within, progress.wait_for(|p| p.records > records))
            .await
            .map(|_| ())
            .map_err(|_| self.progress())
    }

    /// Waits until at least `distinct` (receipt, version) pairs were read and then nothing more
    /// arrives for `quiet`; `Err` with the progress made if that does not happen `within`.
    pub(crate) async fn settle(
        &self,
        distinct: usize,
        quiet: Duration,
        within: Duration,
    ) -> Result<Progress, Progress> {
        let mut progress = self.progress.clone();
        let settled = async {
            loop {
                progress
                    .wait_for(|p| p.distinct >= distinct)
                    .await
                    .expect("the reader runs");
                if tokio::time::timeout(quiet, progress.changed())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        };
        match tokio::time::timeout(within, settled).await {
            Ok(()) => Ok(self.progress()),
            Err(_) => Err(self.progress()),
        }
    }

    /// Stops reading and returns every record read, in the order read.
    pub(crate) fn stop(self) -> Vec<PublishedUpdate> {
        self.task.abort();
        std::mem::take(&mut *self.updates.lock().unwrap())
    }
}
