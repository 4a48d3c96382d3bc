//! Helpers shared by the integration tests: the broker to talk to and names that never collide.
//!
//! Integration tests run against a real Kafka broker named by `KAFKA_BOOTSTRAP_SERVERS`
//! (`scripts/test.sh` starts one when none is given). Without it they fail with a message that
//! says how to get one; they never skip.
//!
//! [`slow_clients`] drives slow and abusive HTTP connections against a server under test.

use receipts_bus::{KafkaSettings, TopicNames};

pub mod slow_clients;

/// The broker the integration tests use.
///
/// # Panics
/// When `KAFKA_BOOTSTRAP_SERVERS` is not set: a test that needs a broker must not pass without one.
pub fn kafka() -> KafkaSettings {
    match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        Ok(servers) if !servers.trim().is_empty() => KafkaSettings::new(servers),
        _ => panic!(
            "integration tests need a Kafka broker: run `scripts/test.sh` (it starts one), \
             or set KAFKA_BOOTSTRAP_SERVERS=host:port"
        ),
    }
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A full set of topic names under a unique prefix.
pub fn unique_topics() -> TopicNames {
    TopicNames::with_prefix(&unique("test"))
}
