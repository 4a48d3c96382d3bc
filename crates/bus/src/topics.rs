//! Topic names and topic creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

use crate::{BusError, KafkaSettings};

/// The topics receipts reads and writes. Every name is configurable, so several instances (or
/// tests) can share one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicNames {
    /// Input: registrations and status reports, keyed by channel message id.
    pub delivery_events: String,
    /// Stage 1 output: receipt snapshots, keyed by conversation sid.
    pub receipt_updates: String,
    /// Compacted webhook configuration.
    pub webhook_configs: String,
    pub webhook_retries: String,
    pub webhook_dlq: String,
    /// Input records the projector could not use, with the reason in headers.
    pub delivery_events_dlq: String,
    /// Compacted: the projector's state per channel message, partition by partition of
    /// `delivery_events` (DESIGN §4a); also the table a query replica bootstraps from.
    pub projector_changelog: String,
    /// Compacted: what the dispatcher settled per delivery, partition by partition of
    /// `receipt_updates` and the retry topic.
    pub dispatcher_changelog: String,
    /// Every webhook attempt with its answer and latency, keyed by receipt sid, kept for the
    /// topic's retention: what `receipts webhooks deliveries` shows.
    pub webhook_attempts: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        TopicNames::with_prefix("receipts")
    }
}

impl TopicNames {
    /// The default names under another prefix: `{prefix}.delivery-events.v1`, …
    pub fn with_prefix(prefix: &str) -> Self {
        TopicNames {
            delivery_events: format!("{prefix}.delivery-events.v1"),
            receipt_updates: format!("{prefix}.receipt-updates.v1"),
            webhook_configs: format!("{prefix}.webhook-configs.v1"),
            webhook_retries: format!("{prefix}.webhook-retries.v1"),
            webhook_dlq: format!("{prefix}.webhook-dlq.v1"),
            delivery_events_dlq: format!("{prefix}.delivery-events-dlq.v1"),
            projector_changelog: format!("{prefix}.projector-changelog.v1"),
            dispatcher_changelog: format!("{prefix}.dispatcher-changelog.v1"),
            webhook_attempts: format!("{prefix}.webhook-attempts.v1"),
        }
    }

    /// Every topic with the shape it should be created with.
    pub fn specs(&self, partitions: i32) -> Vec<TopicSpec> {
        vec![
            TopicSpec::new(&self.delivery_events, partitions),
            TopicSpec::new(&self.receipt_updates, partitions),
            TopicSpec::new(&self.webhook_configs, 1).compacted(),
            TopicSpec::new(&self.webhook_retries, partitions),
            TopicSpec::new(&self.webhook_dlq, 1),
            TopicSpec::new(&self.delivery_events_dlq, 1),
            TopicSpec::new(&self.projector_changelog, partitions).compacted(),
            TopicSpec::new(&self.dispatcher_changelog, partitions).compacted(),
            TopicSpec::new(&self.webhook_attempts, partitions),
        ]
    }
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compacted: bool,
}

impl TopicSpec {
    pub fn new(name: &str, partitions: i32) -> Self {
        TopicSpec {
            name: name.to_owned(),
            partitions,
            compacted: false,
        }
    }

    pub fn compacted(mut self) -> Self {
        self.compacted = true;
        self
    }
}

/// Checks that `changelog` has as many partitions as `input` (creating it compacted, with that
/// many, when it does not exist yet): state restored from changelog partition `p` must be the
/// state of input partition `p`.
pub async fn ensure_changelog(
    settings: &KafkaSettings,
    input: &str,
    changelog: &str,
) -> Result<(), BusError> {
    let (s, i, c) = (settings.clone(), input.to_owned(), changelog.to_owned());
    let counts = tokio::task::spawn_blocking(move || {
        Ok::<_, BusError>((
            crate::changelog::partition_count(&s, &i)?,
            crate::changelog::partition_count(&s, &c)?,
        ))
    })
    .await
    .map_err(|e| BusError::CreateTopic {
        topic: changelog.to_owned(),
        message: e.to_string(),
    })??;
    match counts {
        (Some(input_count), None) => {
            ensure_topics(
                settings,
                &[TopicSpec::new(changelog, input_count as i32).compacted()],
            )
            .await
        }
        (Some(input_count), Some(changelog_count)) if input_count != changelog_count => {
            Err(BusError::NotCoPartitioned {
                input: input.to_owned(),
                input_partitions: input_count,
                changelog: changelog.to_owned(),
                changelog_partitions: changelog_count,
            })
        }
        _ => Ok(()),
    }
}

/// Creates the topics that do not exist yet; existing topics are left as they are.
pub async fn ensure_topics(settings: &KafkaSettings, specs: &[TopicSpec]) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> =
        settings.client_config("receipts-admin").create()?;
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            let topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(1));
            if spec.compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(BusError::CreateTopic {
                    topic,
                    message: code.to_string(),
                });
            }
        }
    }
    Ok(())
}
