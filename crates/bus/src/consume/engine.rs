//! The loop: receive, batch, fence, hand over, commit; restore on assignment; readiness. One
//! cohesive thing (every step shares the epoch, the generations and the trouble counter), so it
//! stays in one file; handing a batch over and settling it are in `settle`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use receipts_runtime::health::{Component, ComponentState};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::rebalance::{EngineContext, Event, Shared};
use super::settle::InFlight;
use super::trouble::Trouble;
use super::{
    Commit, ConsumeError, ConsumerOptions, Handler, Partition, StoredOffsets, Transient,
    error_chain,
};
use crate::errors::{Backoff, is_fatal};
use crate::record::Record;
use crate::{BusError, KafkaSettings};

/// How long the loop waits for a record before it checks on the broker and readiness.
pub(super) const IDLE_TICK: Duration = Duration::from_secs(1);

/// A consumer on the engine: build it with [`Consumer::new`], then [`Consumer::run`] a handler.
pub struct Consumer {
    pub(super) options: ConsumerOptions,
    consumer: Arc<StreamConsumer<EngineContext>>,
    /// Asks the broker whether it is back while the consumer is idle; a client of its own, so
    /// that its metadata requests never touch the consumer's view of its subscription.
    probe: Arc<BaseConsumer>,
    pub(super) shared: Arc<Shared>,
    pub(super) component: Component,
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
        let (mut trouble, mut in_flight) = (Trouble::new(), None);
        let result = self
            .consume_batches(handler, shutdown, &mut trouble, &mut in_flight)
            .await;
        // However the loop ended, the batch still settling ends before the consumer does.
        let settled = match in_flight {
            Some(in_flight) => self.settle(in_flight, &mut trouble).await.map(drop),
            None => Ok(()),
        };
        result.and(settled)
    }

    async fn consume_batches<H: Handler>(
        &self,
        handler: &mut H,
        shutdown: &CancellationToken,
        trouble: &mut Trouble,
        in_flight: &mut Option<InFlight<H::Error>>,
    ) -> Result<(), ConsumeError<H::Error>> {
        if self.options.group_id.is_none() && !self.assign_all(shutdown).await? {
            return Ok(());
        }
        let mut carried: Option<Record> = None;
        let mut epoch = u64::MAX;
        let mut generations: HashMap<Partition, u64> = HashMap::new();
        // Starting until the first assignment (possibly of no partition at all) was handled.
        let mut assigned_once = false;
        loop {
            let current = self.shared.epoch.load(Ordering::SeqCst);
            if current != epoch {
                // The batch settling ended before a revocation was let through; what of it
                // failed and is still this consumer's is handed over again after the events.
                let failed = match in_flight.take() {
                    Some(in_flight) => self.settle(in_flight, trouble).await?,
                    None => None,
                };
                let failed = failed.map(|records| {
                    handler.unsettled_dropped();
                    self.still_owned(records.to_vec(), &generations)
                });
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
                if let Some(records) = failed.filter(|r| !r.is_empty())
                    && !self
                        .retry(handler, records.into(), trouble, shutdown)
                        .await?
                {
                    return Ok(());
                }
            }

            // The first record of a batch: wait for it, checking on the broker while idle.
            let first = match carried.take() {
                Some(record) => record,
                None => {
                    let received = tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        // A batch that settles while nothing arrives is committed right away.
                        () = InFlight::finished(in_flight.as_ref()) => {
                            if self.shared.epoch.load(Ordering::SeqCst) != epoch {
                                // Settled at the top, with the rebalance.
                                continue;
                            }
                            if let Some(settled) = in_flight.take()
                                && let Some(failed) = self.settle(settled, trouble).await?
                            {
                                handler.unsettled_dropped();
                                if !self.retry(handler, failed, trouble, shutdown).await? {
                                    return Ok(());
                                }
                            }
                            continue;
                        }
                        received = tokio::time::timeout(IDLE_TICK, self.consumer.recv()) => received,
                    };
                    match received {
                        Err(_) => {
                            self.idle(trouble, assigned_once).await;
                            handler.idle();
                            continue;
                        }
                        Ok(Err(e)) if is_fatal(&e) => return Err(self.kafka_error(e)),
                        Ok(Err(e)) => {
                            trouble.record(&self.options.name, &e);
                            self.check_stale(trouble);
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
                // The batch settling ended before the revocation was let through; if it failed,
                // what of it is still this consumer's goes first.
                if let Some(settled) = in_flight.take()
                    && let Some(failed) = self.settle(settled, trouble).await?
                {
                    handler.unsettled_dropped();
                    records = failed.iter().cloned().chain(records).collect();
                }
                records = self.still_owned(records, &generations);
                if records.is_empty() {
                    continue;
                }
            }
            if !self
                .hand_over(handler, records.into(), in_flight, trouble, shutdown)
                .await?
            {
                return Ok(());
            }
        }
    }

    /// `records` without those of partitions revoked (or assigned anew) since `generations`.
    fn still_owned(
        &self,
        mut records: Vec<Record>,
        generations: &HashMap<Partition, u64>,
    ) -> Vec<Record> {
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
        records
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

    /// Records the durable offsets and commits them to the group (asynchronously: a revoke
    /// commits synchronously, and a lost commit only replays idempotent records).
    pub(super) fn commit(&self, records: &[Record], commit: Commit) {
        let list = self.shared.mark_durable(records, &commit);
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

    pub(super) fn check_stale(&self, trouble: &Trouble) {
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
}
