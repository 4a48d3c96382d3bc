//! Producing a request's events to `delivery-events` and waiting for Kafka to acknowledge them.
//!
//! The producer is idempotent with `acks=all` (see `receipts_bus::settings`), so an acknowledged
//! event is stored once, in order per channel message. `message.timeout.ms` bounds how long
//! librdkafka tries; a request is answered 2xx only when every one of its events is
//! acknowledged, and 503 otherwise.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use receipts_bus::record::content_type_headers;
use receipts_domain::DeliveryEvent;
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use tracing::warn;

/// Kafka did not acknowledge every event of a request.
#[derive(Debug, thiserror::Error)]
#[error("kafka acknowledged {acknowledged} of {total} events: {cause}")]
pub struct PublishError {
    pub acknowledged: usize,
    pub total: usize,
    #[source]
    pub cause: PublishFailure,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("no acknowledgement within the produce timeout")]
    TimedOut,
    #[error("the producer went away before acknowledging")]
    Canceled,
}

/// The largest encoded event accepted. Real events are a few hundred bytes; the bound keeps
/// every record far below the broker's and librdkafka's `message.max.bytes`, so a request is
/// refused as a whole before producing rather than failing half-way, again on every retry.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// One event ready to produce: its key and its protobuf envelope.
#[derive(Debug)]
pub(crate) struct Record {
    key: String,
    payload: Vec<u8>,
}

impl Record {
    pub(crate) fn encode(event: &DeliveryEvent) -> Self {
        Record {
            key: event.channel_message_id().as_str().to_owned(),
            payload: codec::encode(&v1::Envelope::from(event), Encoding::Protobuf),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.key.len() + self.payload.len()
    }
}

/// Extra time given to librdkafka beyond `message.timeout.ms` before the request gives up
/// waiting itself.
const ACK_GRACE: Duration = Duration::from_secs(1);

pub(crate) struct Publisher {
    /// Replaced when librdkafka reports a fatal error, after which a producer refuses all work.
    producer: Mutex<FutureProducer>,
    config: ClientConfig,
    topic: String,
    timeout: Duration,
    latency: Histogram,
}

impl Publisher {
    pub(crate) fn new(
        config: ClientConfig,
        topic: String,
        timeout: Duration,
        latency: Histogram,
    ) -> Result<Self, KafkaError> {
        Ok(Publisher {
            producer: Mutex::new(config.create()?),
            config,
            topic,
            timeout,
            latency,
        })
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Produces every event, keyed by its channel message id, and waits until all are
    /// acknowledged or one has failed for good.
    pub(crate) async fn publish(&self, records: &[Record]) -> Result<(), PublishError> {
        let started = Instant::now();
        let producer = self.producer();
        let headers = content_type_headers(Encoding::Protobuf);
        let mut pending = Vec::with_capacity(records.len());
        let mut first_failure: Option<PublishFailure> = None;
        for record in records {
            let record = FutureRecord::to(&self.topic)
                .key(&record.key)
                .payload(&record.payload)
                .headers(headers.clone());
            match producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((error, _)) => {
                    first_failure.get_or_insert(error.into());
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.timeout + ACK_GRACE;
        let mut acknowledged = 0;
        for delivery in pending {
            match tokio::time::timeout_at(deadline, delivery).await {
                Ok(Ok(Ok(_))) => acknowledged += 1,
                Ok(Ok(Err((error, _)))) => {
                    first_failure.get_or_insert(error.into());
                }
                Ok(Err(_canceled)) => {
                    first_failure.get_or_insert(PublishFailure::Canceled);
                }
                Err(_elapsed) => {
                    first_failure.get_or_insert(PublishFailure::TimedOut);
                    break;
                }
            }
        }
        self.latency.observe(started.elapsed().as_secs_f64());
        match first_failure {
            None => Ok(()),
            Some(cause) => {
                self.replace_if_fatal(&producer).await;
                Err(PublishError {
                    acknowledged,
                    total: records.len(),
                    cause,
                })
            }
        }
    }

    /// A producer with a fatal error (possible with idempotence) never recovers: start afresh.
    async fn replace_if_fatal(&self, failed: &FutureProducer) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        warn!(?code, %reason, "kafka producer failed fatally, creating a new one");
        let config = self.config.clone();
        match tokio::task::spawn_blocking(move || config.create::<FutureProducer>()).await {
            Ok(Ok(fresh)) => {
                *self.producer.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
            }
            Ok(Err(error)) => warn!(%error, "cannot create a new kafka producer"),
            Err(error) => warn!(%error, "creating a new kafka producer panicked"),
        }
    }

    /// Waits (bounded) for what is still queued, at shutdown.
    pub(crate) async fn flush(&self) {
        let producer = self.producer();
        let timeout = self.timeout;
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        if let Ok(Err(error)) = flushed {
            warn!(%error, "kafka producer did not flush before shutdown");
        }
    }
}
