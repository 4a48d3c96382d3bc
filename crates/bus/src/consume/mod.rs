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
//! - **Pipelining**: a handler may leave a batch's last steps (awaiting acknowledgements,
//!   storing) [`Settling`] while the next batch is handed over. Batches are committed in order,
//!   at most one settles while the next is processed, a revocation waits until nothing settles,
//!   and when one fails every batch handed over after it is dropped with it and both are handed
//!   over again.
//! - **Readiness**: the consumer's [`Component`] is restoring, ready, unreachable (no broker for
//!   longer than [`ConsumerOptions::stale_after`]), stalled (a batch in hand for as long) or
//!   stopped.
//!
//! Layout: this module holds the types a handler sees; `engine` is the loop, `rebalance` what
//! happens inside librdkafka's rebalance callback, `settle` the batches left settling, `trouble`
//! the counting of transient errors.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;

use crate::BusError;
use crate::record::Record;

mod engine;
mod rebalance;
mod settle;
mod trouble;

pub use engine::Consumer;
pub use settle::Settling;

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

    /// [`Handler::process`] up to where only waiting remains: a handler that returns
    /// [`Settling::pending`] has handed its batch's output over and is handed the next batch
    /// while the rest runs. The next batch may be applied on top of this one's unstored effects;
    /// it must not be stored before this one is. A failure of the rest is handled like a
    /// transient failure of this batch, and drops the next batch too
    /// ([`Handler::unsettled_dropped`]).
    fn pipeline(
        &mut self,
        records: Arc<[Record]>,
    ) -> impl Future<Output = Result<Settling<Self::Error>, Self::Error>> + Send {
        async move { self.process(records).await.map(Settling::settled) }
    }

    /// Every batch handed over and not stored was dropped; the next one handed over starts with
    /// the first of them. Forget what was held for them (effects applied but not stored).
    fn unsettled_dropped(&mut self) {}

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
