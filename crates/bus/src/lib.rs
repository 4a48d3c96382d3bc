//! The Kafka adapter: how receipts talks to the broker, and nothing about what it does with
//! the records.
//!
//! Layout: [`settings`] turns configuration into librdkafka client settings (idempotent
//! producers, manually committed consumers); [`topics`] names the topics and creates them;
//! [`record`] is the consumed record and its decoding, with decode failures sorted into poison
//! reasons; [`consume`] is the one consume engine every consumer runs on (assignment, batches,
//! the error policy, restore, fencing, commits, readiness); [`changelog`] restores partition
//! state from compacted changelog topics; [`publish`] produces batches and awaits their
//! acknowledgements; [`errors`] sorts consumer errors and spaces out retries; [`trace`] carries
//! W3C trace context in record headers and makes the spans of consumed records; [`embedded`] is
//! the in-process broker of `receipts dev` and `receipts bench`.
//!
//! Services use these types only: no rdkafka type appears in their code.

pub mod changelog;
pub mod consume;
pub mod embedded;
pub mod errors;
pub mod publish;
pub mod record;
pub mod settings;
pub mod topics;
pub mod trace;

pub use consume::{Commit, Consumer, ConsumerOptions, Handler, Partition, Transient};
pub use publish::{Enqueued, Landed, Outgoing, PartialPublish, PublishError, Publisher};
pub use record::Record;
pub use settings::KafkaSettings;
pub use topics::{TopicNames, TopicSpec};
pub use trace::TraceCarrier;

/// A Kafka client call failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka client error")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {message}")]
    CreateTopic { topic: String, message: String },
    #[error(
        "changelog {changelog} has {changelog_partitions} partitions but its input {input} has {input_partitions}: they must be equal"
    )]
    NotCoPartitioned {
        input: String,
        input_partitions: usize,
        changelog: String,
        changelog_partitions: usize,
    },
    #[error("reading the stored offset of {partition}")]
    Stored {
        partition: String,
        #[source]
        source: consume::BoxError,
    },
}

impl BusError {
    /// Whether trying again later can succeed (the broker was away).
    pub fn is_transient(&self) -> bool {
        match self {
            BusError::Kafka(e) => !errors::is_fatal(e),
            BusError::CreateTopic { .. } => true,
            BusError::NotCoPartitioned { .. } | BusError::Stored { .. } => false,
        }
    }
}
