//! Producing a request's events to `delivery-events` and waiting for Kafka to acknowledge them.
//!
//! The producer is idempotent with `acks=all` (see `receipts_bus::settings`), so an acknowledged
//! event is stored once, in order per receipt. `message.timeout.ms` bounds how long
//! librdkafka tries; a request is answered 2xx only when every one of its events is
//! acknowledged, and 503 otherwise.

use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use receipts_bus::{KafkaSettings, Outgoing, PartialPublish};
use receipts_domain::DeliveryEvent;
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use tracing::{Instrument, warn};

/// Kafka did not acknowledge every event of a request.
pub type PublishError = PartialPublish;

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
            key: event.receipt_key().to_string(),
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
    publisher: receipts_bus::Publisher,
    topic: String,
    timeout: Duration,
    latency: Histogram,
}

impl Publisher {
    pub(crate) fn new(
        kafka: &KafkaSettings,
        topic: String,
        timeout: Duration,
        latency: Histogram,
    ) -> Result<Self, receipts_bus::BusError> {
        // The bound of a request's wait for acknowledgements; after it the answer is 503.
        let publisher = receipts_bus::Publisher::with_properties(
            kafka,
            &receipts_bus::settings::client_id("receipts-ingest"),
            &[("message.timeout.ms", timeout.as_millis().to_string())],
        )?;
        Ok(Publisher {
            publisher,
            topic,
            timeout,
            latency,
        })
    }

    /// Produces every event, keyed by its receipt (account and channel message id), and waits until all are
    /// acknowledged or one has failed for good.
    pub(crate) async fn publish(&self, records: &[Record]) -> Result<(), PublishError> {
        let started = Instant::now();
        // The events carry this span's context: the projector continues the request's trace.
        let span = receipts_bus::trace::send_span(&self.topic, records.len());
        let outgoing: Vec<Outgoing> = records
            .iter()
            .map(|record| {
                Outgoing::new(&self.topic, record.key.as_str(), record.payload.clone())
                    .content_type(Encoding::Protobuf)
                    .traced(&span)
            })
            .collect();
        let result = self
            .publisher
            .send_within(&outgoing, Some(self.timeout + ACK_GRACE))
            .instrument(span)
            .await;
        self.latency.observe(started.elapsed().as_secs_f64());
        result.map(|_| ())
    }

    /// Waits (bounded) for what is still queued, at shutdown.
    pub(crate) async fn flush(&self) {
        let (publisher, timeout) = (self.publisher.clone(), self.timeout);
        let flushed = tokio::task::spawn_blocking(move || publisher.flush(timeout)).await;
        if let Ok(Err(error)) = flushed {
            warn!(%error, "kafka producer did not flush before shutdown");
        }
    }
}
