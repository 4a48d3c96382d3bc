//! Helpers shared by the integration tests of every crate: the broker to talk to and names that
//! never collide, the domain's input events and the reference model they fold into, Kafka reads
//! and writes, HTTP on both ends, and golden files.
//!
//! Integration tests run against a real Kafka broker named by `KAFKA_BOOTSTRAP_SERVERS`
//! (`scripts/test.sh` starts one when none is given). Without it they fail with a message that
//! says how to get one; they never skip.
//!
//! Layout: [`events`] builds registrations and reports; [`model`] folds them into the receipts
//! the services must end up with; [`kafka`] produces records and reads them back; [`http`] is a
//! bare HTTP/1.1 client; [`webhooks`] a recording webhook receiver and signature checks;
//! [`slow_clients`] drives slow and abusive HTTP connections; [`golden`] compares output with
//! committed files. Services are spawned by each crate's own `tests/it/support.rs`: a service
//! crate's tests depend on this crate, so this crate depends on no service.

use std::time::Duration;

use receipts_bus::{KafkaSettings, TopicNames};

pub mod events;
pub mod golden;
pub mod http;
pub mod kafka;
pub mod model;
pub mod slow_clients;
pub mod webhooks;

pub use events::sid;
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

/// Deletes every record of `topic` written so far, as retention would, and checks that each
/// partition's log start reached its end.
///
/// # Panics
/// When the broker refuses: a test that needs a trimmed topic must not go on without one.
pub async fn trim(kafka: &KafkaSettings, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::{Offset, TopicPartitionList};

    let ends = {
        let (kafka, topic) = (kafka.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || receipts_bus::changelog::partition_ends(&kafka, &topic))
            .await
            .unwrap()
            .unwrap()
    };
    let mut trimmed = TopicPartitionList::new();
    for (partition, high) in &ends {
        trimmed
            .add_partition_offset(topic, *partition, Offset::Offset(*high))
            .unwrap();
    }
    let admin: AdminClient<DefaultClientContext> =
        kafka.client_config("receipts-test-trim").create().unwrap();
    admin
        .delete_records(&trimmed, &AdminOptions::new())
        .await
        .unwrap();
    let (kafka, name) = (kafka.clone(), topic.to_owned());
    let marks =
        tokio::task::spawn_blocking(move || receipts_bus::changelog::watermarks(&kafka, &name))
            .await
            .unwrap()
            .unwrap();
    for (partition, (low, high)) in marks {
        assert_eq!(low, high, "{topic}/{partition} was trimmed");
    }
}

/// Retries `probe` every 100 ms until it returns `Some`.
///
/// # Panics
/// When it has not after `within`, naming `what` it waited for.
pub async fn eventually_within<T, Fut>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Fut,
) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`eventually_within`] a minute.
pub async fn eventually<T, Fut>(what: &str, probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, Duration::from_secs(60), probe).await
}
