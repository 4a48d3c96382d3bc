//! Webhook configuration (DESIGN §2): the account's, a chat service's, and up to five per
//! conversation. REST and gRPC both go through [`WebhookConfigs`], so they validate and answer
//! alike.
//!
//! The compacted `webhook-configs` topic is the only store: a write produces the scope's whole
//! record (a tombstone to delete), and this instance reads the topic itself into memory. A write
//! is answered only once the reader has passed the write's own offset, so the answer — and every
//! read after it on this instance — shows the write (read-your-writes). Reads wait until the
//! reader has caught up with the topic as it was at start, so a restarted instance never answers
//! from a half-read topic.
//!
//! Here: the calls and the writer. `validate` applies an update to a record by the domain's
//! subscription rules and names a broken one by its Twilio parameter; `reader` the consumer
//! that fills the in-memory view. Times written come from the service's clock.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use receipts_bus::consume::nothing_stored;
use receipts_bus::{Consumer, ConsumerOptions, Outgoing, Publisher};
use receipts_domain::{AccountSid, ChatServiceSid, ConversationSid, Timestamp, WebhookSid};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_proto::webhooks::webhook_key;
use receipts_runtime::clock::SharedClock;
use tokio::sync::{Mutex, watch};
use tracing::{error, warn};

use crate::reads::Answer;
use crate::{QueryConfig, QueryError};

mod reader;
mod signing_secrets;
mod validate;

use reader::ConfigHandler;
pub use reader::{ConfigReadError, ConfigReader};
pub use receipts_domain::subscription::{MAX_ENTRY_BYTES, MAX_LIST_ENTRIES, MAX_URL_BYTES};
pub use signing_secrets::{
    CreatedSecret, DEFAULT_ROTATION_GRACE, MAX_ROTATION_GRACE, MAX_SIGNING_SECRETS,
};
use validate::apply;

/// Twilio's limit on conversation-scoped webhooks.
pub const MAX_CONVERSATION_WEBHOOKS: usize = 5;

/// How long a call waits for this instance to read a write back (or to load the topic).
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(15);

/// Which configuration a call is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Account,
    Service(ChatServiceSid),
    Conversation(ConversationSid, WebhookSid),
}

/// The fields a write may set; `None` leaves a field as it is (Twilio's partial update).
pub use receipts_domain::SubscriptionUpdate as WebhookUpdate;

/// Why a configuration call failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigCallError {
    #[error("{field}: {message}")]
    Invalid {
        /// The Twilio parameter name, e.g. `Configuration.Url`.
        field: &'static str,
        message: String,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("a conversation can have at most {MAX_CONVERSATION_WEBHOOKS} webhooks")]
    TooMany,
    #[error("no webhook_secrets_key is configured, so signing secrets cannot be stored")]
    NoSecretsKey,
    #[error("the configuration has {MAX_SIGNING_SECRETS} signing secrets, the most it may")]
    TooManySecrets,
    #[error("webhook configuration is unavailable: {0}")]
    Unavailable(String),
}

impl ConfigCallError {
    /// How a failed call is answered over gRPC and over REST, in one table like the reads'
    /// ([`crate::reads::ReadError::answer`]). An unavailable topic is logged here, once.
    pub fn answer(&self) -> Answer {
        let refused = |grpc_code, http_status, twilio_code| Answer {
            grpc_code,
            grpc_message: self.to_string(),
            http_status,
            twilio_code,
            twilio_message: self.to_string(),
        };
        match self {
            ConfigCallError::Invalid { field, message } => {
                Answer::invalid(self.to_string(), field, message)
            }
            ConfigCallError::NotFound(what) => Answer::not_found(what.clone()),
            ConfigCallError::TooMany | ConfigCallError::TooManySecrets => refused(
                tonic::Code::FailedPrecondition,
                StatusCode::BAD_REQUEST,
                20001,
            ),
            // The deployment, not the call, has to change: 409 as for a resource in the wrong
            // state, with the reason.
            ConfigCallError::NoSecretsKey => {
                refused(tonic::Code::FailedPrecondition, StatusCode::CONFLICT, 20409)
            }
            ConfigCallError::Unavailable(_) => {
                error!(cause = %self, "a webhook configuration call could not be served");
                Answer {
                    grpc_code: tonic::Code::Unavailable,
                    grpc_message: self.to_string(),
                    http_status: StatusCode::SERVICE_UNAVAILABLE,
                    twilio_code: 20503,
                    twilio_message: "Service Unavailable: try again".into(),
                }
            }
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigCallError {
    ConfigCallError::Invalid {
        field,
        message: message.into(),
    }
}

/// How far the reader has read: the next offset of each partition, and whether it has reached
/// what the topic held when it started.
#[derive(Debug, Clone, Default)]
struct Progress {
    next: BTreeMap<i32, i64>,
    loaded: bool,
}

#[derive(Debug, Default)]
struct View {
    configs: RwLock<BTreeMap<String, v1::WebhookConfig>>,
    progress: watch::Sender<Progress>,
}

impl View {
    async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&Progress) -> bool,
    ) -> Result<(), ConfigCallError> {
        let mut progress = self.progress.subscribe();
        match tokio::time::timeout(READ_BACK_TIMEOUT, progress.wait_for(|p| done(p))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ConfigCallError::Unavailable("the reader stopped".into())),
            Err(_) => Err(ConfigCallError::Unavailable(format!(
                "timed out waiting for {what}"
            ))),
        }
    }

    fn get(&self, key: &str) -> Option<v1::WebhookConfig> {
        self.configs
            .read()
            .expect("no writer panics holding the lock")
            .get(key)
            .cloned()
    }
}

/// The webhook configuration of every account: reads from memory, writes through Kafka.
pub struct WebhookConfigs {
    view: Arc<View>,
    publisher: Publisher,
    topic: String,
    /// Serialises this instance's read-modify-write cycles, so two concurrent updates of one
    /// scope cannot lose each other's fields and the per-conversation limit holds here.
    writes: Mutex<()>,
    /// Seals signing secrets; without it they cannot be created.
    secrets_key: Option<receipts_webhook::sealed::SecretsKey>,
    /// Dates written records and decides which signing secrets are current.
    clock: SharedClock,
}

impl std::fmt::Debug for WebhookConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfigs")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl WebhookConfigs {
    pub fn new(
        config: &QueryConfig,
        component: receipts_runtime::health::Component,
        clock: SharedClock,
    ) -> Result<(Self, ConfigReader), QueryError> {
        let client_id = receipts_bus::settings::client_id("receipts-query-webhooks");
        let publisher = Publisher::new(&config.kafka, &client_id)?;
        let topic = config.topics.webhook_configs.clone();
        let options = ConsumerOptions::all_partitions("webhook-configs", &client_id, &[&topic]);
        let consumer = Consumer::new(&config.kafka, options, Arc::new(nothing_stored), component)?;
        let view = Arc::new(View::default());
        Ok((
            WebhookConfigs {
                view: view.clone(),
                publisher,
                topic: topic.clone(),
                writes: Mutex::new(()),
                secrets_key: config.secrets_key()?,
                clock,
            },
            ConfigReader {
                consumer,
                handler: ConfigHandler {
                    kafka: config.kafka.clone(),
                    topic,
                    view,
                    targets: BTreeMap::new(),
                },
            },
        ))
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn loaded(&self) -> Result<(), ConfigCallError> {
        self.view
            .wait_until("the webhook-configs topic to load", |p| p.loaded)
            .await
    }

    /// The stored configuration of `scope`, if any.
    pub async fn get(
        &self,
        account: &AccountSid,
        scope: &Scope,
    ) -> Result<Option<v1::WebhookConfig>, ConfigCallError> {
        self.loaded().await?;
        Ok(self.view.get(&webhook_key(&record_of(account, scope))))
    }

    /// A conversation's webhooks, oldest first.
    pub async fn list_conversation(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
    ) -> Result<Vec<v1::WebhookConfig>, ConfigCallError> {
        self.loaded().await?;
        Ok(self.conversation_webhooks(account, conversation))
    }

    fn conversation_webhooks(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
    ) -> Vec<v1::WebhookConfig> {
        let prefix = format!("conversation/{account}/{conversation}/");
        let configs = self
            .view
            .configs
            .read()
            .expect("no writer panics holding the lock");
        let mut found: Vec<v1::WebhookConfig> = configs
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, config)| config.clone())
            .collect();
        found.sort_by_key(|c| {
            (
                c.date_created.as_ref().map(|t| (t.seconds, t.nanos)),
                c.webhook_sid.clone(),
            )
        });
        found
    }

    /// Applies `update` to the account's or a service's configuration (created on first write)
    /// or to an existing conversation webhook, and answers with the configuration as read back.
    pub async fn update(
        &self,
        account: &AccountSid,
        scope: &Scope,
        update: &WebhookUpdate,
    ) -> Result<v1::WebhookConfig, ConfigCallError> {
        self.loaded().await?;
        let _write = self.writes.lock().await;
        let blank = record_of(account, scope);
        let current = self.view.get(&webhook_key(&blank));
        let mut config = match (scope, current) {
            (_, Some(current)) => current,
            (Scope::Conversation(_, sid), None) => {
                return Err(ConfigCallError::NotFound(format!("webhook {sid}")));
            }
            (_, None) => blank,
        };
        if update.target.is_some() && matches!(scope, Scope::Conversation(..)) {
            return Err(invalid(
                "Target",
                "cannot be changed; delete and create instead",
            ));
        }
        apply(&mut config, scope, update, self.now())?;
        self.write(config).await
    }

    /// Adds a webhook to a conversation, at most [`MAX_CONVERSATION_WEBHOOKS`] of them.
    pub async fn create_conversation(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        update: &WebhookUpdate,
    ) -> Result<v1::WebhookConfig, ConfigCallError> {
        self.loaded().await?;
        let target = match update.target.as_deref() {
            None | Some("") => return Err(invalid("Target", "is required")),
            Some(target) => target.to_ascii_lowercase(),
        };
        let _write = self.writes.lock().await;
        // The sid is derived from what is created, so a create retried after an answer that
        // got lost (a 503 after the write became durable) finds its own webhook instead of
        // making a second one.
        let placeholder = WebhookSid::parse(&format!("WH{:032x}", 0))
            .expect("WH and 32 hex digits is a webhook sid");
        let scope = Scope::Conversation(conversation.clone(), placeholder);
        let mut config = record_of(account, &scope);
        config.target = target;
        apply(&mut config, &scope, update, self.now())?;
        config.webhook_sid = content_sid(&config);
        if let Some(existing) = self.view.get(&webhook_key(&config)) {
            if same_content(&existing, &config) {
                return Ok(existing);
            }
            // The sid is taken by a webhook updated since: this is a new one after all.
            config.webhook_sid = format!("WH{:032x}", rand::random::<u128>());
        }
        if self.conversation_webhooks(account, conversation).len() >= MAX_CONVERSATION_WEBHOOKS {
            return Err(ConfigCallError::TooMany);
        }
        self.write(config).await
    }

    /// Removes a conversation webhook (a tombstone on the topic).
    pub async fn delete_conversation(
        &self,
        account: &AccountSid,
        conversation: &ConversationSid,
        webhook: &WebhookSid,
    ) -> Result<(), ConfigCallError> {
        self.loaded().await?;
        let _write = self.writes.lock().await;
        let key = webhook_key(&record_of(
            account,
            &Scope::Conversation(conversation.clone(), webhook.clone()),
        ));
        if self.view.get(&key).is_none() {
            return Err(ConfigCallError::NotFound(format!("webhook {webhook}")));
        }
        self.produce(&key, None).await?;
        Ok(())
    }

    async fn write(&self, config: v1::WebhookConfig) -> Result<v1::WebhookConfig, ConfigCallError> {
        let key = webhook_key(&config);
        let payload = codec::encode(&config, Encoding::Protobuf);
        self.produce(&key, Some(&payload)).await?;
        // Someone else may have written the scope since; the newest record is the answer.
        Ok(self.view.get(&key).unwrap_or(config))
    }

    /// Produces one record and waits until the reader has read it back.
    async fn produce(&self, key: &str, payload: Option<&[u8]>) -> Result<(), ConfigCallError> {
        let mut record = Outgoing {
            topic: self.topic.clone(),
            key: key.as_bytes().to_vec(),
            payload: payload.map(<[u8]>::to_vec),
            ..Default::default()
        };
        if payload.is_some() {
            record = record.content_type(Encoding::Protobuf);
        }
        let sent = tokio::time::timeout(
            READ_BACK_TIMEOUT,
            self.publisher.send_all(std::slice::from_ref(&record)),
        )
        .await;
        let landed = match sent {
            Ok(Ok(landed)) => landed[0],
            Ok(Err(error)) => {
                warn!(error = %receipts_bus::consume::error_chain(&error), "webhook configuration write failed");
                return Err(ConfigCallError::Unavailable(
                    "the webhook-configs topic cannot be written".into(),
                ));
            }
            Err(_) => {
                return Err(ConfigCallError::Unavailable(
                    "the webhook-configs write was not acknowledged in time".into(),
                ));
            }
        };
        self.view
            .wait_until("the write to be read back", |p| {
                p.next
                    .get(&landed.partition)
                    .is_some_and(|next| *next > landed.offset)
            })
            .await
    }
}

/// A conversation webhook's sid derived from its account, conversation and configuration.
fn content_sid(config: &v1::WebhookConfig) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let fields = [
        config.account_sid.as_str(),
        config.conversation_sid.as_str(),
        config.target.as_str(),
        config.method.as_str(),
        config.post_webhook_url.as_str(),
        config.flow_sid.as_str(),
    ];
    let lists = [&config.filters, &config.triggers];
    for field in fields
        .into_iter()
        .chain(lists.into_iter().flatten().map(String::as_str))
    {
        // Length-prefixing keeps ("ab", "c") and ("a", "bc") apart.
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    for list in lists {
        hasher.update((list.len() as u64).to_be_bytes());
    }
    let digest = hasher.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("WH{hex}")
}

/// Whether two configurations say the same, whenever each was written.
fn same_content(a: &v1::WebhookConfig, b: &v1::WebhookConfig) -> bool {
    let undated = |c: &v1::WebhookConfig| v1::WebhookConfig {
        date_created: None,
        date_updated: None,
        ..c.clone()
    };
    undated(a) == undated(b)
}

/// The record a scope is stored under, with only its identity set.
fn record_of(account: &AccountSid, scope: &Scope) -> v1::WebhookConfig {
    let mut config = v1::WebhookConfig {
        account_sid: account.to_string(),
        ..Default::default()
    };
    match scope {
        Scope::Account => config.set_scope(v1::WebhookScope::Account),
        Scope::Service(service) => {
            config.set_scope(v1::WebhookScope::Service);
            config.chat_service_sid = service.to_string();
        }
        Scope::Conversation(conversation, webhook) => {
            config.set_scope(v1::WebhookScope::Conversation);
            config.conversation_sid = conversation.to_string();
            config.webhook_sid = webhook.to_string();
        }
    }
    config
}
