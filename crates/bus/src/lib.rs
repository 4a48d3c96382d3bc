//! The Kafka adapter: how receipts talks to the broker, and nothing about what it does with
//! the records.
//!
//! Layout: [`settings`] turns configuration into librdkafka client settings (idempotent
//! producers, manually committed consumers); [`topics`] names the topics and creates them;
//! [`record`] encodes and decodes record payloads and sorts decode failures into poison reasons.

pub mod assignment;
pub mod errors;
pub mod record;
pub mod settings;
pub mod topics;

pub use settings::KafkaSettings;
pub use topics::{TopicNames, TopicSpec};

/// A Kafka client call failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka client error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {message}")]
    CreateTopic { topic: String, message: String },
}
