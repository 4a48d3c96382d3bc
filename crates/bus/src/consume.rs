//! The consume engine every receipts consumer runs on (DESIGN §5).
//!
//! A [`Consumer`] reads its topics either in a consumer group (the projector, the dispatcher) or
//! by assigning itself every partition (a read replica, a configuration reader), groups records
//! into batches by size and time, and hands each batch to a [`Handler`]. Around that it keeps one
//! policy for everything that can go wrong:
//!
//! - **Transient errors** (the broker is away, a topic does not exist yet, a publish that timed
//!   out) are waited out for as long as they last. Consumer error events are counted, not slept
//!   on: librdkafka queues one per failed reconnect, and sleeping per event would keep a consumer
//!   draining stale errors long after the broker is back. Each backoff step logs once, with the
//!   count. A batch whose handler failed transiently is handed over again after a capped,
//!   jittered backoff.
//! - **Fatal errors** (an offset that fell off the log, authorisation, a broken client) stop the
//!   consumer with the error; the service exits non-zero.
//! - **Assignment**: in a group, a partition starts at the group's committed offset — the point
//!   up to which its state is durable in Kafka — and the handler restores the partition's state
//!   ([`Handler::assigned`]) before any of its records is processed. Without a group, each
//!   partition starts at the offset the handler stored with its state, or at the beginning.
//! - **Fencing**: records collected for a partition that is revoked before its batch is handed
//!   over are dropped, and a batch never spans a rebalance, so nothing is stored or published
//!   for a partition after its new owner has started.
//! - **Commits**: after a batch, the offsets the handler says are durable are committed to the
//!   group; a revoked partition's are committed synchronously before it is given up.
//! - **Readiness**: the consumer's [`Component`] is restoring, ready, unreachable (no broker for
//!   longer than [`ConsumerOptions::stale_after`]) or stopped.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use receipts_runtime::health::{Component, ComponentState};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::errors::{Backoff, is_fatal};
use crate::record::Record;
use crate::{BusError, KafkaSettings};

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
}

impl Partition {
    pub fn new(topic: &str, partition: i32) -> Self {
        Partition {
            topic: topic.to_owned(),
            partition,
        }
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Boxed errors of the stored-offset lookup, which runs inside librdkafka's rebalance callback.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a partition's stored state ends: the next offset to read, if the handler stored one.
pub trait StoredOffsets: Send + Sync + 'static {
    fn next_offset(&self, partition: &Partition) -> Result<Option<i64>, BoxError>;
}

impl<F> StoredOffsets for F
where
    F: Fn(&Partition) -> Result<Option<i64>, BoxError> + Send + Sync + 'static,
{
    fn next_offset(&self, partition: &Partition) -> Result<Option<i64>, BoxError> {
        self(partition)
    }
}

/// No stored offsets: every partition starts at the group's offset or the beginning.
pub fn nothing_stored(_: &Partition) -> Result<Option<i64>, BoxError> {
    Ok(None)
}

/// Which offsets a processed batch made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Every record of the batch.
    Batch,
    /// Only up to these next offsets (a partition not named keeps its committed offset).
    Offsets(Vec<(Partition, i64)>),
}

/// Whether an error of a handler can be waited out.
pub trait Transient {
    fn is_transient(&self) -> bool;
}

/// What a consumer does with its records.
pub trait Handler: Send {
    type Error: std::error::Error + Transient + Send + Sync + 'static;

    /// Called before any record of `partitions`, newly assigned, is processed: bring their
    /// state up to date (restore it from a changelog). Nothing of theirs is processed until it
    /// returns.
    fn assigned(
        &mut self,
        partitions: &[Partition],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = partitions;
        std::future::ready(Ok(()))
    }

    /// `partitions` were taken away: forget work that is theirs (their new owner does it).
    fn revoked(&mut self, partitions: &[Partition]) {
        let _ = partitions;
    }

    /// Processes a batch of records in log order (per partition). A transient error hands the
    /// same batch over again later; nothing of a failed batch may have been stored.
    fn process(
        &mut self,
        records: Arc<[Record]>,
    ) -> impl Future<Output = Result<Commit, Self::Error>> + Send;

    /// Called when nothing arrived for a while, e.g. to report that the consumer is caught up.
    fn idle(&mut self) {}
}

/// How a consumer reads.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Names the consumer in logs, readiness and metrics (`projector`, `read-model`, …).
    pub name: String,
    pub client_id: String,
    pub topics: Vec<String>,
    /// `Some`: read in this consumer group. `None`: assign every partition of the topics.
    pub group_id: Option<String>,
    /// A batch closes at this many records…
    pub max_records: usize,
    /// …or this long after its first record (zero: whatever is already buffered).
    pub max_wait: Duration,
    /// Not ready once the broker has not answered, or a batch has failed transiently, for this
    /// long.
    pub stale_after: Duration,
}

impl ConsumerOptions {
    pub fn group(name: &str, client_id: &str, group_id: &str, topics: &[&str]) -> Self {
        ConsumerOptions {
            name: name.to_owned(),
            client_id: client_id.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            group_id: Some(group_id.to_owned()),
            max_records: 1_000,
            max_wait: Duration::ZERO,
            stale_after: Duration::from_secs(30),
        }
    }

    pub fn all_partitions(name: &str, client_id: &str, topics: &[&str]) -> Self {
        ConsumerOptions {
            group_id: None,
            ..Self::group(name, client_id, "", topics)
        }
    }

    pub fn batch(mut self, max_records: usize, max_wait: Duration) -> Self {
        self.max_records = max_records.max(1);
        self.max_wait = max_wait;
        self
    }

    pub fn stale_after(mut self, stale_after: Duration) -> Self {
        self.stale_after = stale_after;
        self
    }
}

/// Why a consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError<E: std::error::Error + 'static> {
    #[error("consumer {consumer} cannot go on")]
    Kafka {
        consumer: String,
        #[source]
        source: KafkaError,
    },
    #[error("consumer {consumer} setup failed")]
    Setup {
        consumer: String,
        #[source]
        source: BusError,
    },
    #[error("consumer {consumer} failed")]
    Handler {
        consumer: String,
        #[source]
        source: E,
    },
}

#[derive(Debug)]
enum Event {
    Assigned(Vec<Partition>),
    Revoked(Vec<Partition>),
}

#[derive(Debug, Default)]
struct Assignments {
    /// Every assigned partition with the generation of its current assignment.
    generation: HashMap<Partition, u64>,
    next_generation: u64,
    events: Vec<Event>,
    /// The next offsets whose effects are durable, to commit.
    durable: HashMap<Partition, i64>,
}

#[derive(Debug, Default)]
struct Shared {
    assignments: Mutex<Assignments>,
    /// Grows by one with every rebalance, so the loop notices one without taking the lock.
    epoch: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Assignments> {
        self.assignments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts assigned partitions at the group's committed offsets (falling back to the stored
/// ones, then the beginning), commits durable offsets of revoked partitions, and tells the loop.
struct EngineContext {
    name: String,
    shared: Arc<Shared>,
    stored: Arc<dyn StoredOffsets>,
    component: Component,
}

impl ClientContext for EngineContext {
    /// librdkafka's periodic statistics carry each partition's lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, stats) in &statistics.topics {
            for (&partition, p) in &stats.partitions {
                // -1 is the internal "unassigned" partition, and lag is -1 where unknown.
                if partition >= 0 && p.consumer_lag >= 0 {
                    self.component.set_lag(topic, partition, p.consumer_lag);
                }
            }
        }
    }
}

impl EngineContext {
    fn start_offset(
        &self,
        partition: &Partition,
        committed: Option<&TopicPartitionList>,
    ) -> Result<Offset, BoxError> {
        let committed = committed
            .and_then(|list| list.find_partition(&partition.topic, partition.partition))
            .map(|element| element.offset());
        if let Some(Offset::Offset(next)) = committed {
            return Ok(Offset::Offset(next));
        }
        Ok(match self.stored.next_offset(partition)? {
            Some(next) => Offset::Offset(next),
            None => Offset::Beginning,
        })
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let committed = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(30))
            .map_err(|e| {
                // Without the group's offsets, stored ones (or the beginning) are still a
                // safe start: the handler's state is restored and replay is idempotent.
                warn!(consumer = %self.name, error = %e, "cannot read the group's committed offsets");
            })
            .ok();
        let mut assignment = TopicPartitionList::new();
        let mut assigned = Vec::new();
        for element in tpl.elements() {
            let partition = Partition::new(element.topic(), element.partition());
            match self.start_offset(&partition, committed.as_ref()) {
                Ok(offset) => {
                    info!(consumer = %self.name, %partition, ?offset, "partition assigned");
                    if let Err(e) = assignment.add_partition_offset(
                        element.topic(),
                        element.partition(),
                        offset,
                    ) {
                        error!(consumer = %self.name, %partition, error = %e, "cannot assign partition");
                        continue;
                    }
                    assigned.push(partition);
                }
                Err(e) => {
                    error!(consumer = %self.name, %partition, error = %e, "cannot read stored offset; partition left unassigned");
                }
            }
        }
        let assigned_now = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(&assignment),
            _ => consumer.assign(&assignment),
        };
        if let Err(e) = assigned_now {
            error!(consumer = %self.name, error = %e, "assignment failed");
            return;
        }
        let mut state = self.shared.lock();
        for partition in &assigned {
            state.next_generation += 1;
            let generation = state.next_generation;
            state.generation.insert(partition.clone(), generation);
        }
        state.events.push(Event::Assigned(assigned));
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Gives up the partitions in `tpl` (every partition, under the eager protocol).
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let revoked: Vec<Partition> = {
            let mut state = self.shared.lock();
            let revoked: Vec<Partition> = if cooperative {
                tpl.elements()
                    .iter()
                    .map(|e| Partition::new(e.topic(), e.partition()))
                    .filter(|p| state.generation.remove(p).is_some())
                    .collect()
            } else {
                state.generation.drain().map(|(p, _)| p).collect()
            };
            let mut commit = TopicPartitionList::new();
            for partition in &revoked {
                if let Some(next) = state.durable.remove(partition) {
                    let _ = commit.add_partition_offset(
                        &partition.topic,
                        partition.partition,
                        Offset::Offset(next),
                    );
                }
            }
            // The next owner starts where this one's state is durable.
            if commit.count() > 0
                && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
            {
                warn!(consumer = %self.name, error = %e, "committing revoked partitions failed");
            }
            state.events.push(Event::Revoked(revoked.clone()));
            revoked
        };
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        info!(consumer = %self.name, partitions = revoked.len(), lost = consumer.assignment_lost(), "partitions revoked");
        let unassigned = if cooperative {
            consumer.incremental_unassign(tpl)
        } else {
            consumer.unassign()
        };
        if let Err(e) = unassigned {
            error!(consumer = %self.name, error = %e, "unassignment failed");
        }
    }
}

impl ConsumerContext for EngineContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        event: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match event {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                let code: rdkafka::error::RDKafkaErrorCode = other.into();
                error!(consumer = %self.name, error = %code, "rebalance failed");
                self.revoke(consumer, tpl);
            }
        }
    }
}

/// Counts transient errors and logs them once per backoff step; says for how long the broker
/// has been away.
#[derive(Debug)]
struct Trouble {
    since: Option<Instant>,
    unlogged: u64,
    next_log: Instant,
    backoff: Backoff,
}

impl Trouble {
    fn new() -> Self {
        Trouble {
            since: None,
            unlogged: 0,
            next_log: Instant::now(),
            backoff: Backoff::default(),
        }
    }

    fn record(&mut self, consumer: &str, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        self.since.get_or_insert(now);
        self.unlogged += 1;
        if now >= self.next_log {
            warn!(consumer, %error, errors = self.unlogged, "kafka trouble, waiting it out");
            self.unlogged = 0;
            self.next_log = now + self.backoff.next_delay();
        }
    }

    fn over(&mut self, consumer: &str) {
        if let Some(since) = self.since.take() {
            info!(
                consumer,
                after_secs = since.elapsed().as_secs(),
                "kafka reachable again"
            );
            self.unlogged = 0;
            self.backoff.reset();
            self.next_log = Instant::now();
        }
    }

    fn lasted(&self) -> Option<Duration> {
        self.since.map(|s| s.elapsed())
    }
}

/// How long the loop waits for a record before it checks on the broker and readiness.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// A consumer on the engine: build it with [`Consumer::new`], then [`Consumer::run`] a handler.
pub struct Consumer {
    options: ConsumerOptions,
    consumer: Arc<StreamConsumer<EngineContext>>,
    /// Asks the broker whether it is back while the consumer is idle; a client of its own, so
    /// that its metadata requests never touch the consumer's view of its subscription.
    probe: Arc<BaseConsumer>,
    shared: Arc<Shared>,
    component: Component,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.options.name)
            .field("topics", &self.options.topics)
            .field("group_id", &self.options.group_id)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Creates the client (and, in a group, subscribes). `stored` gives the offsets stored with
    /// the handler's state; `component` reports readiness.
    pub fn new(
        settings: &KafkaSettings,
        options: ConsumerOptions,
        stored: Arc<dyn StoredOffsets>,
        component: Component,
    ) -> Result<Self, BusError> {
        let group_id = options
            .group_id
            .clone()
            .unwrap_or_else(|| options.client_id.clone());
        let mut config = settings.consumer_config(&options.client_id, &group_id);
        // An offset that fell off the log is lost data: fail loudly, never reset silently.
        // Partitions without an offset are assigned at an explicit one.
        config.set("auto.offset.reset", "error");
        config.set("statistics.interval.ms", "5000");
        let shared = Arc::new(Shared::default());
        let context = EngineContext {
            name: options.name.clone(),
            shared: shared.clone(),
            stored,
            component: component.clone(),
        };
        let consumer: StreamConsumer<EngineContext> = config.create_with_context(context)?;
        if options.group_id.is_some() {
            let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics)?;
        }
        let probe: BaseConsumer = settings
            .client_config(&format!("{}-probe", options.client_id))
            .create()?;
        Ok(Consumer {
            options,
            consumer: Arc::new(consumer),
            probe: Arc::new(probe),
            shared,
            component,
        })
    }

    pub fn name(&self) -> &str {
        &self.options.name
    }

    fn kafka_error<E: std::error::Error + 'static>(&self, source: KafkaError) -> ConsumeError<E> {
        ConsumeError::Kafka {
            consumer: self.options.name.clone(),
            source,
        }
    }

    /// Runs `handler` until `shutdown` is cancelled or an error stops it; the batch in hand is
    /// finished first. The consumer's component says `stopped` afterwards.
    pub async fn run<H: Handler>(
        &self,
        handler: &mut H,
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumeError<H::Error>> {
        let result = self.consume(handler, shutdown).await;
        let reason = match &result {
            Ok(()) => "shut down".to_owned(),
            Err(e) => error_chain(e),
        };
        if result.is_err() {
            error!(consumer = %self.options.name, error = %reason, "consumer stopped");
        }
        self.component.set(ComponentState::Stopped { reason });
        result
    }

    async fn consume<H: Handler>(
        &self,
        handler: &mut H,
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumeError<H::Error>> {
        if self.options.group_id.is_none() && !self.assign_all(shutdown).await? {
            return Ok(());
        }
        let mut trouble = Trouble::new();
        let mut carried: Option<Record> = None;
        let mut epoch = u64::MAX;
        let mut generations: HashMap<Partition, u64> = HashMap::new();
        // Starting until the first assignment (possibly of no partition at all) was handled.
        let mut assigned_once = false;
        loop {
            let current = self.shared.epoch.load(Ordering::SeqCst);
            if current != epoch {
                epoch = current;
                assigned_once |= self.handle_events(handler, &mut generations).await?;
                if assigned_once {
                    self.component.set(ComponentState::Ready);
                }
                if carried
                    .as_ref()
                    .is_some_and(|r| !self.is_current(r, &generations))
                {
                    carried = None;
                }
            }

            // The first record of a batch: wait for it, checking on the broker while idle.
            let first = match carried.take() {
                Some(record) => record,
                None => {
                    let received = tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        received = tokio::time::timeout(IDLE_TICK, self.consumer.recv()) => received,
                    };
                    match received {
                        Err(_) => {
                            self.idle(&mut trouble, assigned_once).await;
                            handler.idle();
                            continue;
                        }
                        Ok(Err(e)) if is_fatal(&e) => return Err(self.kafka_error(e)),
                        Ok(Err(e)) => {
                            trouble.record(&self.options.name, &e);
                            self.check_stale(&trouble);
                            continue;
                        }
                        Ok(Ok(message)) => {
                            trouble.over(&self.options.name);
                            let record = Record::new(message.detach());
                            if self.shared.epoch.load(Ordering::SeqCst) != epoch {
                                // A rebalance happened inside this receive: handle it first.
                                carried = Some(record);
                                continue;
                            }
                            record
                        }
                    }
                }
            };
            if assigned_once {
                self.component.set(ComponentState::Ready);
            }

            let mut records = vec![first];
            let deadline = tokio::time::Instant::now() + self.options.max_wait;
            while records.len() < self.options.max_records {
                let received = if self.options.max_wait.is_zero() {
                    tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await
                } else {
                    tokio::time::timeout_at(deadline, self.consumer.recv()).await
                };
                match received {
                    Err(_) => break,
                    Ok(Err(e)) if is_fatal(&e) => return Err(self.kafka_error(e)),
                    Ok(Err(e)) => {
                        trouble.record(&self.options.name, &e);
                        break;
                    }
                    Ok(Ok(message)) => {
                        let record = Record::new(message.detach());
                        if self.shared.epoch.load(Ordering::SeqCst) != epoch {
                            // A batch never spans a rebalance.
                            carried = Some(record);
                            break;
                        }
                        records.push(record);
                    }
                }
            }
            // Records of partitions revoked while the batch was collected belong to their new
            // owner now: store and publish nothing of them.
            if self.shared.epoch.load(Ordering::SeqCst) != epoch {
                let current = self.shared.lock().generation.clone();
                let before = records.len();
                records.retain(|r| {
                    let partition = Partition::new(r.topic(), r.partition());
                    generations
                        .get(&partition)
                        .is_some_and(|generation| current.get(&partition) == Some(generation))
                });
                if records.len() < before {
                    info!(consumer = %self.options.name, dropped = before - records.len(), "records of revoked partitions dropped from the batch");
                }
                if records.is_empty() {
                    continue;
                }
            }
            let records: Arc<[Record]> = records.into();
            let Some(commit) = self
                .process(handler, &records, &mut trouble, shutdown)
                .await?
            else {
                return Ok(());
            };
            self.commit(&records, commit);
        }
    }

    fn is_current(&self, record: &Record, generations: &HashMap<Partition, u64>) -> bool {
        generations.contains_key(&Partition::new(record.topic(), record.partition()))
    }

    /// Tells the handler about revoked and assigned partitions, restoring the assigned ones
    /// before the loop goes on. True if an assignment was among them.
    async fn handle_events<H: Handler>(
        &self,
        handler: &mut H,
        generations: &mut HashMap<Partition, u64>,
    ) -> Result<bool, ConsumeError<H::Error>> {
        let mut assigned = false;
        let events = {
            let mut state = self.shared.lock();
            *generations = state.generation.clone();
            std::mem::take(&mut state.events)
        };
        for event in events {
            match event {
                Event::Revoked(partitions) => handler.revoked(&partitions),
                Event::Assigned(partitions) => {
                    assigned = true;
                    if partitions.is_empty() {
                        continue;
                    }
                    self.component.set(ComponentState::Restoring {
                        partitions: partitions.len(),
                    });
                    let started = Instant::now();
                    let mut backoff = Backoff::default();
                    loop {
                        match handler.assigned(&partitions).await {
                            Ok(()) => break,
                            Err(e) if e.is_transient() => {
                                let delay = backoff.next_delay();
                                warn!(consumer = %self.options.name, error = %error_chain(&e), retry_in_ms = delay.as_millis() as u64, "restoring partitions failed, trying again");
                                tokio::time::sleep(delay).await;
                            }
                            Err(source) => {
                                return Err(ConsumeError::Handler {
                                    consumer: self.options.name.clone(),
                                    source,
                                });
                            }
                        }
                    }
                    info!(consumer = %self.options.name, partitions = partitions.len(), millis = started.elapsed().as_millis() as u64, "partitions ready");
                }
            }
        }
        Ok(assigned)
    }

    /// Hands `records` to the handler until it succeeds or fails for good. `None`: shut down
    /// while waiting to try again (nothing of the batch was stored).
    async fn process<H: Handler>(
        &self,
        handler: &mut H,
        records: &Arc<[Record]>,
        trouble: &mut Trouble,
        shutdown: &CancellationToken,
    ) -> Result<Option<Commit>, ConsumeError<H::Error>> {
        let mut backoff = Backoff::default();
        let started = Instant::now();
        loop {
            // A batch that does not finish (acknowledgements that never come while the broker
            // is away) makes the consumer stale as surely as a receive error does.
            let processed = {
                let processing = handler.process(records.clone());
                tokio::pin!(processing);
                let mut stalled = false;
                loop {
                    tokio::select! {
                        result = &mut processing => break result,
                        _ = tokio::time::sleep(IDLE_TICK) => {
                            let lasted = started.elapsed();
                            if lasted > self.options.stale_after {
                                stalled = true;
                                self.component.set(ComponentState::Stalled {
                                    seconds: lasted.as_secs(),
                                });
                            }
                        }
                    }
                }
                .inspect(|_| {
                    if stalled {
                        info!(consumer = %self.options.name, after_secs = started.elapsed().as_secs(), "stalled batch finished");
                    }
                })
            };
            match processed {
                Ok(commit) => {
                    trouble.over(&self.options.name);
                    self.component.set(ComponentState::Ready);
                    return Ok(Some(commit));
                }
                Err(e) if e.is_transient() => {
                    trouble.record(&self.options.name, &error_chain(&e));
                    self.check_stale(trouble);
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(source) => {
                    return Err(ConsumeError::Handler {
                        consumer: self.options.name.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// Records the durable offsets and commits them to the group (asynchronously: a revoke
    /// commits synchronously, and a lost commit only replays idempotent records).
    fn commit(&self, records: &[Record], commit: Commit) {
        let offsets: Vec<(Partition, i64)> = match commit {
            Commit::Batch => {
                let mut next: BTreeMap<Partition, i64> = BTreeMap::new();
                for record in records {
                    let entry = next
                        .entry(Partition::new(record.topic(), record.partition()))
                        .or_insert(0);
                    *entry = (*entry).max(record.offset() + 1);
                }
                next.into_iter().collect()
            }
            Commit::Offsets(offsets) => offsets,
        };
        if offsets.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        {
            let mut state = self.shared.lock();
            for (partition, next) in offsets {
                if !state.generation.contains_key(&partition) {
                    continue;
                }
                let _ = list.add_partition_offset(
                    &partition.topic,
                    partition.partition,
                    Offset::Offset(next),
                );
                state.durable.insert(partition, next);
            }
        }
        if self.options.group_id.is_some()
            && list.count() > 0
            && let Err(e) = self.consumer.commit(&list, CommitMode::Async)
        {
            warn!(consumer = %self.options.name, error = %e, "committing offsets failed");
        }
    }

    /// Nothing arrived for a tick: while the broker is in doubt, ask it directly, so that an
    /// idle consumer learns it is back without waiting for a record.
    async fn idle(&self, trouble: &mut Trouble, assigned_once: bool) {
        if trouble.since.is_none() {
            return;
        }
        let probe = self.probe.clone();
        let reachable = tokio::task::spawn_blocking(move || {
            probe.fetch_metadata(None, Duration::from_secs(2)).is_ok()
        })
        .await
        .unwrap_or(false);
        if reachable {
            trouble.over(&self.options.name);
            self.component.set(if assigned_once {
                ComponentState::Ready
            } else {
                ComponentState::Starting
            });
        } else {
            self.check_stale(trouble);
        }
    }

    fn check_stale(&self, trouble: &Trouble) {
        if let Some(lasted) = trouble.lasted()
            && lasted > self.options.stale_after
        {
            self.component.set(ComponentState::Unreachable {
                seconds: lasted.as_secs(),
            });
        }
    }

    /// Without a group: assigns every partition of the topics at its stored offset (the
    /// beginning when none), waiting while a topic does not exist yet. False if shut down
    /// while waiting.
    async fn assign_all<E: std::error::Error + 'static>(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<bool, ConsumeError<E>> {
        let mut backoff = Backoff::default();
        let mut partitions = Vec::new();
        for topic in &self.options.topics {
            let count = loop {
                let (consumer, name) = (self.consumer.clone(), topic.clone());
                let metadata = tokio::task::spawn_blocking(move || {
                    consumer
                        .fetch_metadata(Some(&name), Duration::from_secs(10))
                        .map(|m| {
                            m.topics()
                                .iter()
                                .filter(|t| t.name() == name)
                                .map(|t| t.partitions().len())
                                .sum::<usize>()
                        })
                })
                .await
                .unwrap_or(Ok(0));
                match metadata {
                    Ok(count) if count > 0 => break count,
                    Err(e) if is_fatal(&e) => return Err(self.kafka_error(e)),
                    _ => {}
                }
                let delay = backoff.next_delay();
                warn!(consumer = %self.options.name, topic, retry_in_ms = delay.as_millis() as u64, "waiting for the topic");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(delay) => {}
                }
            };
            for partition in 0..count as i32 {
                partitions.push(Partition::new(topic, partition));
            }
        }
        let mut assignment = TopicPartitionList::new();
        for partition in &partitions {
            let offset = match self.consumer.context().stored.next_offset(partition) {
                Ok(Some(next)) => Offset::Offset(next),
                Ok(None) => Offset::Beginning,
                Err(source) => {
                    return Err(ConsumeError::Setup {
                        consumer: self.options.name.clone(),
                        source: BusError::Stored {
                            partition: partition.to_string(),
                            source,
                        },
                    });
                }
            };
            assignment
                .add_partition_offset(&partition.topic, partition.partition, offset)
                .map_err(|e| self.kafka_error(e))?;
        }
        self.consumer
            .assign(&assignment)
            .map_err(|e| self.kafka_error(e))?;
        info!(consumer = %self.options.name, partitions = partitions.len(), "reading every partition");
        let mut state = self.shared.lock();
        for partition in &partitions {
            state.next_generation += 1;
            let generation = state.next_generation;
            state.generation.insert(partition.clone(), generation);
        }
        state.events.push(Event::Assigned(partitions));
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    /// The partitions assigned right now.
    pub fn assigned(&self) -> Vec<Partition> {
        let mut partitions: Vec<Partition> =
            self.shared.lock().generation.keys().cloned().collect();
        partitions.sort();
        partitions
    }

    /// The high watermark of each partition assigned right now (a blocking broker call).
    pub fn high_watermarks(&self, timeout: Duration) -> Result<Vec<(Partition, i64)>, BusError> {
        let mut highs = Vec::new();
        for partition in self.assigned() {
            let (_, high) =
                self.consumer
                    .fetch_watermarks(&partition.topic, partition.partition, timeout)?;
            highs.push((partition, high));
        }
        Ok(highs)
    }
}

/// An error with its causes on one line, each once.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
