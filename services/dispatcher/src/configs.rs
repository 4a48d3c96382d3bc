//! The webhook configuration, kept in memory from the compacted `webhook-configs` topic.
//!
//! The follower reads every partition from the beginning; it reports ready once it has reached
//! the high watermarks it saw at start, so no receipt update is matched against a partial
//! configuration, and then keeps following changes. A record without payload (tombstone)
//! deletes its key's configuration.
//!
//! Each record is kept as read (attempts take its URL, method and secrets, and a 410 Gone
//! writes it back) beside its domain [`WebhookSubscription`], which decides the receipts it
//! matches. A record whose sids are malformed matches none.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use receipts_bus::consume::{ConsumeError, nothing_stored};
use receipts_bus::record::PoisonRecord;
use receipts_bus::{
    BusError, Commit, Consumer, ConsumerOptions, Handler, KafkaSettings, Partition, Record,
    Transient,
};
use receipts_domain::{Receipt, WebhookSubscription};
use receipts_proto::v1;
use receipts_proto::webhooks::subscription;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::DispatcherError;

/// Every configured webhook by its record key.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    configs: BTreeMap<String, Configured>,
}

#[derive(Debug, Clone)]
struct Configured {
    config: v1::WebhookConfig,
    subscription: Option<WebhookSubscription>,
}

/// The directory shared by the follower (writer) and the dispatcher (readers).
pub type SharedDirectory = Arc<RwLock<Directory>>;

impl Directory {
    pub fn apply(&mut self, key: String, config: Option<v1::WebhookConfig>) {
        match config {
            Some(config) => {
                let subscription = match subscription(&config) {
                    Ok(subscription) => Some(subscription),
                    Err(error) => {
                        warn!(webhook = %key, error = %receipts_bus::consume::error_chain(&error), "webhook configuration matches no receipt");
                        None
                    }
                };
                self.configs.insert(
                    key,
                    Configured {
                        config,
                        subscription,
                    },
                );
            }
            None => {
                self.configs.remove(&key);
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&v1::WebhookConfig> {
        self.configs.get(key).map(|c| &c.config)
    }

    pub fn len(&self) -> usize {
        self.configs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    /// The webhooks a change of `receipt` goes to: those whose subscription matches it
    /// ([`WebhookSubscription::matches`]), in key order.
    pub fn targets(&self, receipt: &Receipt) -> Vec<(&str, &v1::WebhookConfig)> {
        self.configs
            .iter()
            .filter(|(_, c)| c.subscription.as_ref().is_some_and(|s| s.matches(receipt)))
            .map(|(k, c)| (k.as_str(), &c.config))
            .collect()
    }
}

/// Decodes one `webhook-configs` record: `None` for a tombstone.
pub fn decode_record(record: &Record) -> Result<(String, Option<v1::WebhookConfig>), PoisonRecord> {
    let key = record
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .ok_or(PoisonRecord::MissingKey)?;
    if record.payload().is_none() {
        return Ok((key, None));
    }
    let config: v1::WebhookConfig = receipts_bus::record::decode(record)?;
    Ok((key, Some(config)))
}

/// Why the configuration follower cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("reading the ends of the webhook-configs partitions")]
    Ends(#[from] BusError),
    #[error("a blocking task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl Transient for FollowError {
    fn is_transient(&self) -> bool {
        match self {
            FollowError::Ends(e) => e.is_transient(),
            FollowError::Join(_) => false,
        }
    }
}

struct Follower {
    kafka: KafkaSettings,
    topic: String,
    directory: SharedDirectory,
    remaining: BTreeMap<i32, i64>,
    ready: watch::Sender<bool>,
}

impl Handler for Follower {
    type Error = FollowError;

    async fn assigned(&mut self, _partitions: &[Partition]) -> Result<(), FollowError> {
        let (kafka, topic) = (self.kafka.clone(), self.topic.clone());
        let ends = tokio::task::spawn_blocking(move || {
            receipts_bus::changelog::partition_ends(&kafka, &topic)
        })
        .await??;
        self.remaining = ends.into_iter().filter(|(_, high)| *high > 0).collect();
        self.check_ready();
        Ok(())
    }

    async fn process(&mut self, records: Arc<[Record]>) -> Result<Commit, FollowError> {
        for record in records.iter() {
            match decode_record(record) {
                Ok((key, config)) => self
                    .directory
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .apply(key, config),
                Err(error) => {
                    warn!(origin = %record.origin(), error = %receipts_bus::consume::error_chain(&error), "undecodable webhook config skipped")
                }
            }
            if self
                .remaining
                .get(&record.partition())
                .is_some_and(|high| record.offset() + 1 >= *high)
            {
                self.remaining.remove(&record.partition());
            }
        }
        self.check_ready();
        Ok(Commit::Batch)
    }
}

impl Follower {
    fn check_ready(&self) {
        if self.remaining.is_empty() && !*self.ready.borrow() {
            let count = self.directory.read().map(|d| d.len()).unwrap_or_default();
            info!(webhooks = count, "webhook configuration read to its end");
            self.ready.send_replace(true);
        }
    }
}

/// Reads `topic` into `directory` until `shutdown`; `ready` turns true once the topic's end (as
/// of the start) was reached. The task ends with the follower's error if it cannot go on.
#[allow(clippy::type_complexity)]
pub fn follow(
    kafka: &KafkaSettings,
    topic: &str,
    directory: SharedDirectory,
    component: receipts_runtime::health::Component,
    shutdown: CancellationToken,
) -> Result<
    (
        watch::Receiver<bool>,
        tokio::task::JoinHandle<Result<(), ConsumeError<FollowError>>>,
    ),
    DispatcherError,
> {
    let client_id = receipts_bus::settings::client_id("receipts-dispatcher-configs");
    let options = ConsumerOptions::all_partitions("webhook-configs", &client_id, &[topic]);
    let consumer = Consumer::new(kafka, options, Arc::new(nothing_stored), component)?;
    let (ready_tx, ready) = watch::channel(false);
    let mut follower = Follower {
        kafka: kafka.clone(),
        topic: topic.to_owned(),
        directory,
        remaining: BTreeMap::new(),
        ready: ready_tx,
    };
    let task = tokio::spawn(async move { consumer.run(&mut follower, &shutdown).await });
    Ok((ready, task))
}

#[cfg(test)]
mod tests {
    use receipts_domain::{AccountSid, ChatServiceSid, ConversationSid};

    use super::*;

    fn sid(kind: &str, name: &str) -> String {
        match kind {
            "AC" => AccountSid::derive(&[name]).to_string(),
            "IS" => ChatServiceSid::derive(&[name]).to_string(),
            _ => ConversationSid::derive(&[name]).to_string(),
        }
    }

    fn config(scope: v1::WebhookScope, name: &str) -> v1::WebhookConfig {
        let mut c = v1::WebhookConfig {
            account_sid: sid("AC", "1"),
            chat_service_sid: if scope == v1::WebhookScope::Service {
                sid("IS", name)
            } else {
                String::new()
            },
            conversation_sid: if scope == v1::WebhookScope::Conversation {
                sid("CH", name)
            } else {
                String::new()
            },
            post_webhook_url: format!("https://example.com/{name}"),
            filters: vec!["onMessageAdded".into(), "onDeliveryUpdated".into()],
            ..Default::default()
        };
        c.set_scope(scope);
        c
    }

    /// A receipt of account 1 in conversation `conversation`, of chat service `service`.
    fn receipt(service: Option<&str>, conversation: &str) -> Receipt {
        let mut receipt = crate::job::tests::receipt("DY1", 1);
        receipt.registration.account = AccountSid::derive(&["1"]);
        receipt.registration.chat_service = service.map(|s| ChatServiceSid::derive(&[s]));
        receipt.registration.conversation = ConversationSid::derive(&[conversation]);
        receipt
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
            Some(config(v1::WebhookScope::Service, "1")),
        );
        directory.apply(
            "service/AC1/IS2".into(),
            Some(config(v1::WebhookScope::Service, "2")),
        );
        directory.apply(
            "conversation/AC1/CH1/WH1".into(),
            Some(config(v1::WebhookScope::Conversation, "1")),
        );
        let mut unfiltered = config(v1::WebhookScope::Conversation, "1");
        unfiltered.filters = vec!["onMessageAdded".into()];
        directory.apply("conversation/AC1/CH1/WH2".into(), Some(unfiltered));
        let mut disabled = config(v1::WebhookScope::Conversation, "1");
        disabled.disabled_at = Some(pbjson_types::Timestamp::default());
        directory.apply("conversation/AC1/CH1/WH3".into(), Some(disabled));
        let mut other_account = config(v1::WebhookScope::Account, "");
        other_account.account_sid = sid("AC", "2");
        directory.apply("account/AC2".into(), Some(other_account));
        let mut malformed = config(v1::WebhookScope::Account, "");
        malformed.account_sid = "AC1".into();
        directory.apply("account/AC1-malformed".into(), Some(malformed));
        assert!(directory.get("account/AC1-malformed").is_some());

        let keys: Vec<&str> = directory
            .targets(&receipt(Some("1"), "1"))
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(
            keys,
            ["account/AC1", "conversation/AC1/CH1/WH1", "service/AC1/IS1"]
        );

        let default_service = receipt(None, "9");
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
