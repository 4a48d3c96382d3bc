//! The webhook configuration, kept in memory from the compacted `webhook-configs` topic.
//!
//! The follower reads every partition from the beginning; it reports ready once it has reached
//! the high watermarks it saw at start, so no receipt update is matched against a partial
//! configuration, and then keeps following changes. A record without payload (tombstone)
//! deletes its key's configuration.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use receipts_bus::KafkaSettings;
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_webhook::payload::EVENT_TYPE;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::DispatcherError;

/// Every configured webhook by its record key.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    configs: BTreeMap<String, v1::WebhookConfig>,
}

/// The directory shared by the follower (writer) and the dispatcher (readers).
pub type SharedDirectory = Arc<RwLock<Directory>>;

impl Directory {
    pub fn apply(&mut self, key: String, config: Option<v1::WebhookConfig>) {
        match config {
            Some(config) => {
                self.configs.insert(key, config);
            }
            None => {
                self.configs.remove(&key);
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&v1::WebhookConfig> {
        self.configs.get(key)
    }

    pub fn len(&self) -> usize {
        self.configs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    /// The webhooks an update of `receipt` goes to: post-webhooks of its account, of its chat
    /// service and of its conversation whose filters contain `onDeliveryUpdated`, that have a
    /// URL and are not disabled. Conversation scopes are not capped here (the writer enforces
    /// five per conversation).
    pub fn targets(&self, receipt: &v1::Receipt) -> Vec<(&str, &v1::WebhookConfig)> {
        self.configs
            .iter()
            .filter(|(_, c)| subscribed(c) && in_scope(c, receipt))
            .map(|(k, c)| (k.as_str(), c))
            .collect()
    }
}

fn subscribed(config: &v1::WebhookConfig) -> bool {
    config.disabled_at.is_none()
        && !config.post_webhook_url.is_empty()
        && config.filters.iter().any(|f| f == EVENT_TYPE)
        && matches!(config.target.as_str(), "" | "webhook")
}

fn in_scope(config: &v1::WebhookConfig, receipt: &v1::Receipt) -> bool {
    if config.account_sid != receipt.account_sid {
        return false;
    }
    match config.scope() {
        v1::WebhookScope::Account | v1::WebhookScope::Unspecified => true,
        v1::WebhookScope::Service => {
            !config.chat_service_sid.is_empty()
                && config.chat_service_sid == receipt.chat_service_sid
        }
        v1::WebhookScope::Conversation => config.conversation_sid == receipt.conversation_sid,
    }
}

/// Decodes one `webhook-configs` record: `None` for a tombstone.
pub fn decode_record<M: Message>(
    message: &M,
) -> Result<(String, Option<v1::WebhookConfig>), String> {
    let key = message
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .ok_or("record has no key")?;
    let Some(payload) = message.payload() else {
        return Ok((key, None));
    };
    let encoding = Encoding::from_content_type(receipts_bus::record::content_type(message))
        .map_err(|e| e.to_string())?;
    let config: v1::WebhookConfig = codec::decode(payload, encoding).map_err(|e| e.to_string())?;
    Ok((key, Some(config)))
}

/// Reads `topic` into `directory` until `shutdown`; `ready` turns true once the topic's end (as
/// of the start) was reached.
pub async fn follow(
    kafka: &KafkaSettings,
    topic: &str,
    directory: SharedDirectory,
    shutdown: CancellationToken,
) -> Result<(watch::Receiver<bool>, tokio::task::JoinHandle<()>), DispatcherError> {
    let client_id = format!("receipts-dispatcher-configs-{}", std::process::id());
    let consumer: Arc<StreamConsumer> = Arc::new(
        kafka
            .consumer_config(&client_id, &client_id)
            .set("auto.offset.reset", "earliest")
            .create()?,
    );
    let (highs, assignment) = {
        let (consumer, topic) = (consumer.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || -> Result<_, rdkafka::error::KafkaError> {
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(30))?;
            let mut highs = HashMap::new();
            let mut assignment = TopicPartitionList::new();
            for partition in metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic)
                .flat_map(|t| t.partitions())
            {
                let (low, high) =
                    consumer.fetch_watermarks(&topic, partition.id(), Duration::from_secs(30))?;
                if high > low {
                    highs.insert(partition.id(), high);
                }
                assignment.add_partition_offset(&topic, partition.id(), Offset::Beginning)?;
            }
            Ok((highs, assignment))
        })
        .await??
    };
    consumer.assign(&assignment)?;
    let (ready_tx, ready) = watch::channel(highs.is_empty());
    let topic = topic.to_owned();
    let task = tokio::spawn(async move {
        let mut remaining = highs;
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                message = consumer.recv() => message,
            };
            let message = match message {
                Ok(m) => m,
                Err(error) => {
                    warn!(%error, topic, "reading webhook configs failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            match decode_record(&message) {
                Ok((key, config)) => directory
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .apply(key, config),
                Err(reason) => {
                    warn!(offset = message.offset(), %reason, "undecodable webhook config skipped")
                }
            }
            if !remaining.is_empty() {
                let partition = message.partition();
                if remaining
                    .get(&partition)
                    .is_some_and(|high| message.offset() + 1 >= *high)
                {
                    remaining.remove(&partition);
                }
                if remaining.is_empty() {
                    let count = directory.read().map(|d| d.len()).unwrap_or_default();
                    info!(webhooks = count, "webhook configuration read to its end");
                    ready_tx.send_replace(true);
                }
            }
        }
    });
    Ok((ready, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(scope: v1::WebhookScope, key_part: &str) -> v1::WebhookConfig {
        let mut c = v1::WebhookConfig {
            account_sid: "AC1".into(),
            chat_service_sid: if scope == v1::WebhookScope::Service {
                key_part.into()
            } else {
                String::new()
            },
            conversation_sid: if scope == v1::WebhookScope::Conversation {
                key_part.into()
            } else {
                String::new()
            },
            post_webhook_url: format!("https://example.com/{key_part}"),
            filters: vec!["onMessageAdded".into(), EVENT_TYPE.into()],
            ..Default::default()
        };
        c.set_scope(scope);
        c
    }

    #[test]
    fn targets_match_account_service_and_conversation() {
        let mut directory = Directory::default();
        directory.apply(
            "account/AC1".into(),
            Some(config(v1::WebhookScope::Account, "")),
        );
        directory.apply(
            "service/AC1/IS1".into(),
            Some(config(v1::WebhookScope::Service, "IS1")),
        );
        directory.apply(
            "service/AC1/IS2".into(),
            Some(config(v1::WebhookScope::Service, "IS2")),
        );
        directory.apply(
            "conversation/AC1/CH1/WH1".into(),
            Some(config(v1::WebhookScope::Conversation, "CH1")),
        );
        let mut unfiltered = config(v1::WebhookScope::Conversation, "CH1");
        unfiltered.filters = vec!["onMessageAdded".into()];
        directory.apply("conversation/AC1/CH1/WH2".into(), Some(unfiltered));
        let mut disabled = config(v1::WebhookScope::Conversation, "CH1");
        disabled.disabled_at = Some(pbjson_types::Timestamp::default());
        directory.apply("conversation/AC1/CH1/WH3".into(), Some(disabled));
        let mut other_account = config(v1::WebhookScope::Account, "");
        other_account.account_sid = "AC2".into();
        directory.apply("account/AC2".into(), Some(other_account));

        let receipt = v1::Receipt {
            account_sid: "AC1".into(),
            chat_service_sid: "IS1".into(),
            conversation_sid: "CH1".into(),
            ..Default::default()
        };
        let keys: Vec<&str> = directory
            .targets(&receipt)
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(
            keys,
            ["account/AC1", "conversation/AC1/CH1/WH1", "service/AC1/IS1"]
        );

        let default_service = v1::Receipt {
            account_sid: "AC1".into(),
            conversation_sid: "CH9".into(),
            ..Default::default()
        };
        let keys: Vec<&str> = directory
            .targets(&default_service)
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(keys, ["account/AC1"]);

        directory.apply("account/AC1".into(), None);
        assert_eq!(directory.targets(&default_service).len(), 0);
    }
}
