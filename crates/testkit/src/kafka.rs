//! Writing records to the test broker and reading them back: a consumer that reads a topic from
//! its beginning in a group of its own, records produced pipelined and acknowledged together,
//! and reads that fail a test after a minute rather than hang it.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use receipts_bus::KafkaSettings;
use receipts_bus::record::content_type_headers;
use receipts_proto::codec::Encoding;

/// How long a read waits for the record it expects.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A consumer of `topic` from its beginning, in a group of its own.
pub fn reader(kafka: &KafkaSettings, client_id: &str, topic: &str) -> StreamConsumer {
    let consumer = kafka.consumer(client_id, &crate::unique("reader")).unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// Writes `records` (key, payload; `None` is a tombstone) to `topic`, all sent before any
/// acknowledgement is awaited, with the `content-type` header of `encoding` when one is given.
/// Returns once the broker acknowledged every one.
pub async fn produce<'a>(
    producer: &FutureProducer,
    topic: &str,
    records: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    encoding: Option<Encoding>,
) {
    let mut acks = Vec::new();
    for (key, payload) in records {
        let mut record = FutureRecord::<str, [u8]>::to(topic).key(key);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        if let Some(encoding) = encoding {
            record = record.headers(content_type_headers(encoding));
        }
        acks.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for ack in acks {
        ack.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// Reads `count` records.
///
/// # Panics
/// When they do not all arrive within [`READ_TIMEOUT`] of each other.
pub async fn read(reader: &StreamConsumer, count: usize) -> Vec<OwnedMessage> {
    let mut records = Vec::with_capacity(count);
    while records.len() < count {
        let message = tokio::time::timeout(READ_TIMEOUT, reader.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} records arrived", records.len()))
            .unwrap();
        records.push(message.detach());
    }
    records
}

/// Reads records until `done` says so.
///
/// # Panics
/// When that does not happen within [`READ_TIMEOUT`].
pub async fn read_until(
    reader: &StreamConsumer,
    mut done: impl FnMut(&BorrowedMessage<'_>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    loop {
        let message = tokio::time::timeout_at(deadline, reader.recv())
            .await
            .expect("the expected record arrives within a minute")
            .unwrap();
        if done(&message) {
            return;
        }
    }
}

/// Fails if a record arrives within `quiet`.
pub async fn assert_no_more(reader: &StreamConsumer, quiet: Duration) {
    if let Ok(message) = tokio::time::timeout(quiet, reader.recv()).await {
        let message = message.unwrap();
        panic!(
            "unexpected record at offset {}",
            rdkafka::Message::offset(&message)
        );
    }
}
