//! Client settings. Producers are idempotent with `acks=all`, so an acknowledged record is
//! stored exactly once; consumers never auto-commit, because services store their own offsets
//! with their state (DESIGN §4) and commit to the group only for lag monitoring.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};

use crate::BusError;

/// Where the broker is and any extra librdkafka properties (`security.protocol`, …).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// Passed to librdkafka as they are; they override the defaults set here.
    pub properties: BTreeMap<String, String>,
}

/// Messages per partition a consumer fetches ahead (`queued.min.messages`).
pub const PREFETCH_MESSAGES: &str = "2000";
/// KiB a consumer holds fetched ahead in all (`queued.max.messages.kbytes`).
pub const PREFETCH_KBYTES: &str = "16384";

/// Property values may be credentials (`sasl.password`, `ssl.key.password`): only names print.
impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Names<'a>(&'a BTreeMap<String, String>);
        impl std::fmt::Debug for Names<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_set().entries(self.0.keys()).finish()
            }
        }
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &Names(&self.properties))
            .finish()
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            bootstrap_servers: "127.0.0.1:9092".into(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaSettings {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaSettings {
            bootstrap_servers: bootstrap_servers.into(),
            ..Default::default()
        }
    }

    /// The common settings every client gets.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", client_id)
            .set("log_level", "4");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// The settings of an idempotent, `acks=all` producer.
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut config = self.client_config(client_id);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    pub fn producer(&self, client_id: &str) -> Result<FutureProducer, BusError> {
        Ok(self.producer_config(client_id).create()?)
    }

    /// The settings of a group consumer that never commits on its own and reads from the
    /// beginning of a partition it has no position for.
    pub fn consumer_config(&self, client_id: &str, group_id: &str) -> ClientConfig {
        let mut config = self.client_config(client_id);
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            // What is fetched ahead of the batch at hand. librdkafka's defaults (100 000 messages
            // per partition, 64 MiB per consumer) are memory a service holds beside its store
            // for every consumer it runs; a few batches ahead keep the consumer busy, provided
            // the fetcher comes back as soon as there is room (it waits 1 s by default).
            .set("queued.min.messages", PREFETCH_MESSAGES)
            .set("queued.max.messages.kbytes", PREFETCH_KBYTES)
            .set("fetch.queue.backoff.ms", "5");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    pub fn consumer(&self, client_id: &str, group_id: &str) -> Result<StreamConsumer, BusError> {
        Ok(self.consumer_config(client_id, group_id).create()?)
    }
}

/// A client id that tells instances apart in broker logs and group listings: `prefix`, the
/// host name (a container's id under Docker, where every process is pid 1) and the process id.
pub fn client_id(prefix: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "host".to_owned());
    format!("{prefix}-{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_property_names_but_never_their_values() {
        let mut settings = KafkaSettings::new("broker:9092");
        settings
            .properties
            .insert("sasl.password".into(), "hunter2".into());
        let debug = format!("{settings:?}");
        assert!(
            debug.contains("sasl.password") && debug.contains("broker:9092"),
            "{debug}"
        );
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn extra_properties_override_the_defaults() {
        let mut settings = KafkaSettings::new("broker:9092");
        settings.properties.insert("linger.ms".into(), "50".into());
        assert_eq!(settings.producer_config("p").get("linger.ms"), Some("50"));
        assert_eq!(settings.producer_config("p").get("acks"), Some("all"));
    }
}
