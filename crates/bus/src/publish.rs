//! Producing a batch of records and waiting until Kafka acknowledged every one.
//!
//! Every record of a batch is enqueued, in order, before any acknowledgement is awaited, so a
//! batch travels together instead of one record per round trip. A full local queue is waited
//! out. The acknowledgements say where each record landed, which a changelog writer keeps.
//! [`Publisher::enqueue`] stops after the handing over, so that a caller can prepare its next
//! batch while this one travels ([`Enqueued::landed`] awaits the acknowledgements).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::record::{ERROR_HEADER, ORIGIN_HEADER, Record};
use crate::{BusError, KafkaSettings};

/// One record to produce.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub topic: String,
    /// `None`: the partitioner picks it from the key.
    pub partition: Option<i32>,
    pub key: Vec<u8>,
    /// `None` is a tombstone.
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Outgoing {
    pub fn new(topic: &str, key: impl Into<Vec<u8>>, payload: Vec<u8>) -> Self {
        Outgoing {
            topic: topic.to_owned(),
            key: key.into(),
            payload: Some(payload),
            ..Default::default()
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Announces the payload's encoding in the `content-type` header.
    pub fn content_type(self, encoding: receipts_proto::codec::Encoding) -> Self {
        self.header(
            receipts_proto::codec::CONTENT_TYPE_HEADER,
            encoding.content_type(),
        )
    }

    pub fn to_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// `record` for a dead-letter topic: its key, payload and headers, plus why it was put
    /// aside and where it came from.
    pub fn dead_letter(topic: &str, record: &Record, reason: &str) -> Self {
        let mut outgoing = Outgoing {
            topic: topic.to_owned(),
            partition: None,
            key: record.key().unwrap_or_default().to_vec(),
            payload: Some(record.payload().unwrap_or_default().to_vec()),
            headers: vec![
                (ERROR_HEADER.to_owned(), reason.as_bytes().to_vec()),
                (ORIGIN_HEADER.to_owned(), record.origin().into_bytes()),
            ],
        };
        for (name, value) in record.headers() {
            if let Some(value) = value {
                outgoing.headers.push((name.to_owned(), value.to_vec()));
            }
        }
        outgoing
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    pub partition: i32,
    pub offset: i64,
}

/// Producing failed; nothing of the batch may be taken as written.
#[derive(Debug, thiserror::Error)]
#[error("producing to {topic} failed")]
pub struct PublishError {
    pub topic: String,
    #[source]
    pub source: KafkaError,
}

impl PublishError {
    /// Whether trying the batch again later can succeed (the broker is away, a timeout), as
    /// opposed to a record the broker will never take.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self.source,
            KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidRecord
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::Fatal
            )
        )
    }
}

/// Some records of a batch were not acknowledged in time or at all.
#[derive(Debug, thiserror::Error)]
#[error("kafka acknowledged {acknowledged} of {total} records")]
pub struct PartialPublish {
    pub acknowledged: usize,
    pub total: usize,
    #[source]
    pub source: PublishError,
}

/// An idempotent, `acks=all` producer that publishes batches. A producer that librdkafka
/// declares fatally failed (possible with idempotence) never recovers, so it is replaced by a
/// new one with the same settings.
#[derive(Clone)]
pub struct Publisher {
    producer: Arc<Mutex<FutureProducer>>,
    config: rdkafka::ClientConfig,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(settings: &KafkaSettings, client_id: &str) -> Result<Self, BusError> {
        Self::with_properties(settings, client_id, &[])
    }

    /// A publisher with extra librdkafka properties, e.g. `message.timeout.ms`.
    pub fn with_properties(
        settings: &KafkaSettings,
        client_id: &str,
        properties: &[(&str, String)],
    ) -> Result<Self, BusError> {
        let mut config = settings.producer_config(client_id);
        for (key, value) in properties {
            config.set(*key, value);
        }
        Ok(Publisher {
            producer: Arc::new(Mutex::new(config.create()?)),
            config,
        })
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Produces `records` in order and returns once every one is acknowledged, with where each
    /// landed (in the same order).
    pub async fn send_all(&self, records: &[Outgoing]) -> Result<Vec<Landed>, PublishError> {
        self.send_within(records, None)
            .await
            .map_err(|partial| partial.source)
    }

    /// [`Publisher::send_all`], waiting at most `timeout` for the acknowledgements; on failure
    /// says how many records were acknowledged.
    pub async fn send_within(
        &self,
        records: &[Outgoing],
        timeout: Option<Duration>,
    ) -> Result<Vec<Landed>, PartialPublish> {
        let producer = self.producer();
        let result = send(&producer, records, timeout).await;
        if result.is_err() {
            self.replace_if_fatal(&producer);
        }
        result
    }

    fn replace_if_fatal(&self, failed: &FutureProducer) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        tracing::warn!(?code, %reason, "kafka producer failed fatally, creating a new one");
        match self.config.create::<FutureProducer>() {
            Ok(fresh) => *self.producer.lock().unwrap_or_else(PoisonError::into_inner) = fresh,
            Err(error) => tracing::warn!(%error, "cannot create a new kafka producer"),
        }
    }

    /// The number of records of `topic`'s `partition` (high minus low watermark).
    pub fn partition_size(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<i64, BusError> {
        let (low, high) = self
            .producer()
            .client()
            .fetch_watermarks(topic, partition, timeout)?;
        Ok(high - low)
    }

    /// Waits until everything produced so far is acknowledged (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        Ok(self.producer().flush(timeout)?)
    }
}

/// Records handed to the producer, in order, whose acknowledgements are still to come. A record
/// handed over later to the same partition lands after these.
pub struct Enqueued {
    acks: Vec<(String, DeliveryFuture)>,
    producer: FutureProducer,
    publisher: Publisher,
}

impl std::fmt::Debug for Enqueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enqueued")
            .field("records", &self.acks.len())
            .finish_non_exhaustive()
    }
}

impl Enqueued {
    /// Waits until every record is acknowledged; says where each landed (in order).
    pub async fn landed(self) -> Result<Vec<Landed>, PublishError> {
        let total = self.acks.len();
        let result = acknowledged(self.acks, total, None).await;
        if result.is_err() {
            self.publisher.replace_if_fatal(&self.producer);
        }
        result.map_err(|partial| partial.source)
    }
}

impl Publisher {
    /// Hands `records` to the producer in order and returns without awaiting their
    /// acknowledgements, so that the caller can go on while they travel.
    pub async fn enqueue(&self, records: &[Outgoing]) -> Result<Enqueued, PublishError> {
        let producer = self.producer();
        match enqueue(&producer, records).await {
            Ok(acks) => Ok(Enqueued {
                acks,
                producer,
                publisher: self.clone(),
            }),
            Err(partial) => {
                self.replace_if_fatal(&producer);
                Err(partial.source)
            }
        }
    }
}

fn failed(acknowledged: usize, total: usize, topic: &str, source: KafkaError) -> PartialPublish {
    PartialPublish {
        acknowledged,
        total,
        source: PublishError {
            topic: topic.to_owned(),
            source,
        },
    }
}

async fn send(
    producer: &FutureProducer,
    records: &[Outgoing],
    timeout: Option<Duration>,
) -> Result<Vec<Landed>, PartialPublish> {
    let acks = enqueue(producer, records).await?;
    acknowledged(acks, records.len(), timeout).await
}

async fn enqueue(
    producer: &FutureProducer,
    records: &[Outgoing],
) -> Result<Vec<(String, DeliveryFuture)>, PartialPublish> {
    let total = records.len();
    let mut acks = Vec::with_capacity(records.len());
    for outgoing in records {
        let mut headers = OwnedHeaders::new_with_capacity(outgoing.headers.len());
        for (key, value) in &outgoing.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record = FutureRecord::to(&outgoing.topic)
            .key(&outgoing.key)
            .headers(headers);
        if let Some(payload) = &outgoing.payload {
            record = record.payload(payload);
        }
        if let Some(partition) = outgoing.partition {
            record = record.partition(partition);
        }
        let ack = loop {
            match producer.send_result(record) {
                Ok(ack) => break ack,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((source, _)) => return Err(failed(0, total, &outgoing.topic, source)),
            }
        };
        acks.push((outgoing.topic.clone(), ack));
    }
    Ok(acks)
}

async fn acknowledged(
    acks: Vec<(String, DeliveryFuture)>,
    total: usize,
    timeout: Option<Duration>,
) -> Result<Vec<Landed>, PartialPublish> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut landed = Vec::with_capacity(acks.len());
    for (topic, ack) in acks {
        let acknowledged = landed.len();
        let delivered = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, ack).await {
                Ok(delivered) => delivered,
                Err(_) => {
                    return Err(failed(
                        acknowledged,
                        total,
                        &topic,
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                    ));
                }
            },
            None => ack.await,
        };
        match delivered {
            Ok(Ok(delivery)) => landed.push(Landed {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((source, _))) => return Err(failed(acknowledged, total, &topic, source)),
            Err(_) => return Err(failed(acknowledged, total, &topic, KafkaError::Canceled)),
        }
    }
    Ok(landed)
}
