//! Stage 2 of receipts (DESIGN §2): consumes `receipt-updates` into a read model in sled and
//! serves it over the tonic gRPC API `receipts.v1.DeliveryQuery`, with gRPC health and
//! reflection, and over a Twilio-compatible REST facade on a port of its own. Both also read and
//! write webhook configuration, kept on the compacted `webhook-configs` topic.
//!
//! Every instance holds the whole read model (a read replica): it reads every partition of
//! `receipt-updates` itself, starting each at the offset stored with its state, so a restart
//! resumes exactly where the stored state ends. A snapshot is applied only when its version is
//! newer than the stored one, so the projector's re-deliveries change nothing. Timelines follow
//! the projector changelog the same way, each partition from the position stored with them.
//!
//! Layout: [`consume`] is the read-model loop; [`timelines`] the timeline follower; [`reads`]
//! every read of the read model, shared by [`grpc`], the gRPC service, and [`rest`], the Twilio
//! facade; [`webhook_configs`] webhook configuration for both; [`auth`] the Basic credentials;
//! [`page_token`] the signed page tokens.

pub mod auth;
pub mod consume;
pub mod grpc;
pub mod page_token;
pub mod reads;
pub mod rest;
pub mod timelines;
pub mod webhook_configs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use receipts_bus::{KafkaSettings, TopicNames};
use receipts_domain::AccountSid;
use receipts_proto::v1::delivery_query_server::DeliveryQueryServer;
use receipts_runtime::config::{ConfigError, Secret, TelemetryConfig, Validate};
use receipts_runtime::http::HttpLimits;
use receipts_runtime::metrics::Metrics;
use receipts_store::{QueryStore, StoreError};
use receipts_webhook::sealed::SecretsKey;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::auth::Accounts;
use crate::grpc::QueryService;
use crate::page_token::PageTokens;
use crate::reads::Reads;
use crate::webhook_configs::WebhookConfigs;

/// Everything the query service needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryConfig {
    pub kafka: KafkaSettings,
    pub topics: TopicNames,
    /// The sled database of this instance.
    pub data_dir: PathBuf,
    /// How the database is opened (`storage.cache_mb`: the engine's cache;
    /// `storage.write_buffer_mb`: fjall's memtables; `storage.engine`: `sled`, the default, or
    /// `fjall`).
    pub storage: receipts_store::StorageConfig,
    /// Where gRPC is served.
    pub grpc_listen: String,
    /// Where the Twilio-compatible REST facade is served; empty disables it.
    pub rest_listen: String,
    /// The absolute base of the URLs in REST responses (`url`, `links`, paging `meta`), as
    /// clients reach the facade, e.g. `https://receipts.example.com`. Empty: `http://` and the
    /// address the REST listener is bound to.
    pub public_base_url: String,
    /// Account sid → auth token. Calls authenticate with HTTP Basic `AccountSid:AuthToken`.
    pub accounts: BTreeMap<String, Secret>,
    /// Signs page tokens. Instances behind one load balancer need the same key; when empty, a
    /// random key is drawn at start and tokens do not survive a restart.
    pub page_token_key: Secret,
    /// Seals the webhook signing secrets made through the API before they are written to the
    /// `webhook-configs` topic: the base64 of 32 random bytes (`openssl rand -base64 32`), the same
    /// in every query instance and the dispatcher. Empty: signing secrets cannot be created.
    pub webhook_secrets_key: Secret,
    /// Updates a watching client may fall behind before its stream is ended.
    pub watch_buffer: usize,
    /// Limits of the REST facade's HTTP server (`http.header_read_timeout_ms`,
    /// `http.body_read_timeout_ms`, `http.max_connections`, `http.max_requests_in_flight`,
    /// `http.retry_after_secs`; see `receipts_runtime::http`).
    pub http: HttpLimits,
    /// Limits of the gRPC server.
    pub grpc: GrpcLimits,
    /// Records per read-model batch.
    pub batch_max_records: usize,
    /// Address of the metrics endpoint; empty disables it.
    pub metrics_listen: String,
    pub telemetry: TelemetryConfig,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            kafka: KafkaSettings::default(),
            topics: TopicNames::default(),
            data_dir: PathBuf::from("data/query"),
            storage: receipts_store::StorageConfig::default(),
            grpc_listen: "127.0.0.1:50051".into(),
            rest_listen: "127.0.0.1:8081".into(),
            public_base_url: String::new(),
            accounts: BTreeMap::new(),
            page_token_key: Secret::default(),
            webhook_secrets_key: Secret::default(),
            watch_buffer: 1024,
            http: HttpLimits::default(),
            grpc: GrpcLimits::default(),
            batch_max_records: 5_000,
            metrics_listen: "127.0.0.1:9466".into(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// What one gRPC client can take of the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcLimits {
    /// HTTP/2 streams (calls) one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Largest request message accepted, and largest response sent, in bytes (beyond it:
    /// `OUT_OF_RANGE`).
    pub max_message_bytes: usize,
    /// Largest HTTP/2 header list (metadata) of a call, in bytes.
    pub max_header_list_bytes: u32,
    /// `WatchUpdates` streams one account may have open at once, over all its connections;
    /// one more is refused with `RESOURCE_EXHAUSTED`.
    pub max_watch_streams_per_account: usize,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        GrpcLimits {
            max_concurrent_streams: 128,
            max_message_bytes: 1024 * 1024,
            max_header_list_bytes: 16 * 1024,
            max_watch_streams_per_account: 32,
        }
    }
}

impl Validate for GrpcLimits {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent_streams == 0 {
            return Err(ConfigError::invalid(
                "max_concurrent_streams",
                "must be at least 1",
            ));
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::invalid(
                "max_message_bytes",
                "must be at least 1024",
            ));
        }
        if self.max_header_list_bytes < 1024 {
            return Err(ConfigError::invalid(
                "max_header_list_bytes",
                "must be at least 1024",
            ));
        }
        if self.max_watch_streams_per_account == 0 {
            return Err(ConfigError::invalid(
                "max_watch_streams_per_account",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl QueryConfig {
    fn accounts(&self) -> Result<Accounts, ConfigError> {
        let mut parsed = Vec::with_capacity(self.accounts.len());
        for (sid, token) in &self.accounts {
            let sid = AccountSid::parse(sid)
                .map_err(|e| ConfigError::invalid(format!("accounts.{sid}"), e.to_string()))?;
            if token.is_empty() {
                return Err(ConfigError::invalid(
                    format!("accounts.{sid}"),
                    "auth token must not be empty",
                ));
            }
            parsed.push((sid, token));
        }
        Ok(Accounts::new(parsed))
    }

    /// The key sealing signing secrets, if one is configured.
    pub fn secrets_key(&self) -> Result<Option<SecretsKey>, ConfigError> {
        if self.webhook_secrets_key.is_empty() {
            return Ok(None);
        }
        SecretsKey::from_base64(self.webhook_secrets_key.expose())
            .map(Some)
            .map_err(|e| ConfigError::invalid("webhook_secrets_key", e.to_string()))
    }
}

impl Validate for QueryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "kafka.bootstrap_servers",
                "must not be empty",
            ));
        }
        if self.batch_max_records == 0 {
            return Err(ConfigError::invalid(
                "batch_max_records",
                "must be at least 1",
            ));
        }
        if self.watch_buffer == 0 {
            return Err(ConfigError::invalid("watch_buffer", "must be at least 1"));
        }
        self.accounts()?;
        self.secrets_key()?;
        self.http.validate().map_err(|e| e.within("http"))?;
        self.grpc.validate().map_err(|e| e.within("grpc"))?;
        let base = self.public_base_url.trim_end_matches('/');
        let absolute = base.starts_with("http://") || base.starts_with("https://");
        if !base.is_empty() && !absolute {
            return Err(ConfigError::invalid(
                "public_base_url",
                "must be an absolute http:// or https:// URL",
            ));
        }
        self.storage
            .check()
            .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
        self.telemetry.validate().map_err(|e| e.within("telemetry"))
    }
}

/// Why the query service stopped.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("configuration")]
    Config(#[from] ConfigError),
    #[error("kafka setup")]
    Bus(#[from] receipts_bus::BusError),
    #[error("store")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Consume(#[from] Box<receipts_bus::consume::ConsumeError<consume::ReadModelError>>),
    #[error("timelines")]
    Timelines(#[source] consume::ReadModelError),
    #[error(transparent)]
    TimelineConsume(Box<receipts_bus::consume::ConsumeError<consume::ReadModelError>>),
    #[error(transparent)]
    ConfigReader(Box<receipts_bus::consume::ConsumeError<webhook_configs::ConfigReadError>>),
    #[error("gRPC server")]
    Serve(#[from] tonic::transport::Error),
    #[error("REST server")]
    Rest(#[from] std::io::Error),
    #[error("reflection")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("a blocking task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs the read model, the webhook configuration reader, the gRPC server on `grpc_listener`
/// and, when given, the REST facade on `rest_listener`, until `shutdown` is cancelled.
pub async fn run(
    config: QueryConfig,
    grpc_listener: TcpListener,
    rest_listener: Option<TcpListener>,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> Result<(), QueryError> {
    let accounts = config.accounts()?;
    if config.accounts.is_empty() {
        warn!("no accounts are configured: every call will be refused");
    }
    let tokens = if config.page_token_key.is_empty() {
        let key: [u8; 32] = rand::random();
        PageTokens::new(&key)
    } else {
        PageTokens::new(config.page_token_key.expose().as_bytes())
    };
    let (data_dir, storage) = (config.data_dir.clone(), config.storage);
    let store: Arc<dyn QueryStore> =
        tokio::task::spawn_blocking(move || receipts_store::open_query_store(&data_dir, &storage))
            .await??;
    let (updates, _) = broadcast::channel(config.watch_buffer);

    let reader = consume::ReadModel::new(&config, store.clone(), updates.clone(), metrics)?;
    let timelines = timelines::TimelineFollower::new(&config, store.clone(), metrics);
    let (webhooks, config_reader) = WebhookConfigs::new(
        &config,
        metrics.readiness().component("webhook-configs"),
        receipts_runtime::clock::system(),
    )?;
    let webhooks = Arc::new(webhooks);
    let reads = Reads::new(store.clone(), tokens);
    let rest = match rest_listener {
        Some(listener) => {
            let base_url = match config.public_base_url.trim_end_matches('/') {
                "" => format!("http://{}", listener.local_addr()?),
                base => base.to_owned(),
            };
            info!(rest = ?listener.local_addr().ok(), %base_url, "serving the Twilio-compatible REST facade");
            let state = Arc::new(rest::RestState {
                reads: reads.clone(),
                webhooks: webhooks.clone(),
                accounts: accounts.clone(),
                base_url,
            });
            Some(rest::serve(
                listener,
                rest::router(state),
                config.http.clone(),
                receipts_runtime::http::ServerMetrics::register(metrics, "rest_http"),
                shutdown.clone(),
            ))
        }
        None => None,
    };
    let service = QueryService::new(
        reads,
        webhooks,
        updates,
        config.watch_buffer,
        config.grpc.max_watch_streams_per_account,
        shutdown.clone(),
    );
    // gRPC health follows readiness: NOT_SERVING while the read model, the timelines or the
    // configuration reader restores, cannot reach the broker, or stopped.
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut ready = metrics.readiness().subscribe();
    let follow_readiness = tokio::spawn(async move {
        loop {
            let serving = *ready.borrow_and_update();
            if serving {
                health
                    .set_serving::<DeliveryQueryServer<QueryService>>()
                    .await;
                health
                    .set_service_status("", tonic_health::ServingStatus::Serving)
                    .await;
            } else {
                health
                    .set_not_serving::<DeliveryQueryServer<QueryService>>()
                    .await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
            }
            if ready.changed().await.is_err() {
                return;
            }
        }
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(receipts_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let address = grpc_listener.local_addr().ok();
    let limits = &config.grpc;
    let query = DeliveryQueryServer::new(service)
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes);
    let server = tonic::transport::Server::builder()
        .trace_fn(receipts_runtime::telemetry::grpc::server_span)
        .layer(receipts_runtime::telemetry::grpc::GrpcStatusLayer)
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        .http2_max_header_list_size(Some(limits.max_header_list_bytes))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(InterceptedService::new(query, grpc::authenticate(accounts)))
        .serve_with_incoming_shutdown(
            // Small answers must not wait for Nagle's algorithm (a 40 ms tail otherwise).
            TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            shutdown.clone().cancelled_owned(),
        );
    info!(grpc = ?address, data_dir = %config.data_dir.display(), "query service started");

    // The read model stops first (finishing and storing its batch); the server answers until the
    // shutdown, then drains its calls.
    let rest = async {
        match rest {
            Some(rest) => rest.await,
            None => Ok(()),
        }
    };
    // A consumer that stops for good stops the service: it must not go on answering from a
    // read model nobody updates.
    let stop_on_failure = |result: Result<(), QueryError>| {
        if result.is_err() {
            shutdown.cancel();
        }
        result
    };
    let (read_result, timelines_result, config_result, serve_result, rest_result) = tokio::join!(
        async { stop_on_failure(reader.run(shutdown.clone()).await) },
        async { stop_on_failure(timelines.run(shutdown.clone()).await) },
        async { stop_on_failure(config_reader.run(shutdown.clone()).await) },
        server,
        rest
    );
    follow_readiness.abort();
    let flushed = tokio::task::spawn_blocking(move || store.flush()).await?;
    info!("query service stopped");
    read_result?;
    timelines_result?;
    config_result?;
    serve_result?;
    rest_result?;
    flushed?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    const ACCOUNT: &str = "AC00000000000000000000000000000001";
    const SECRET: &str = "known-secret-value";

    #[test]
    fn secrets_do_not_print() {
        let mut config = QueryConfig::default();
        config
            .accounts
            .insert(ACCOUNT.to_owned(), Secret::new(SECRET));
        config.page_token_key = Secret::new(SECRET);
        config.webhook_secrets_key = Secret::new(SECRET);
        let accounts = config.accounts().unwrap();
        let tokens = PageTokens::new(SECRET.as_bytes());
        let credentials = auth::Credentials::new(ACCOUNT, SECRET).unwrap();
        let basic = auth::basic_authorization(ACCOUNT, SECRET);
        let encoded = basic.trim_start_matches("Basic ");
        let digest = format!("{:?}", <[u8; 32]>::from(Sha256::digest(SECRET.as_bytes())));
        for printed in [
            format!("{config:?}"),
            format!("{accounts:?}"),
            format!("{tokens:?}"),
            format!("{credentials:?}"),
        ] {
            assert!(!printed.contains(SECRET), "{printed}");
            assert!(!printed.contains(encoded), "{printed}");
            assert!(!printed.contains(&digest[1..20]), "{printed}");
        }
        assert!(format!("{accounts:?}").contains(ACCOUNT));
    }

    #[test]
    fn limits_are_validated_and_name_their_key() {
        assert!(QueryConfig::default().validate().is_ok());
        let mut config = QueryConfig::default();
        config.http.max_connections = 0;
        assert_eq!(
            config.validate().unwrap_err().key(),
            Some("http.max_connections")
        );
        let mut config = QueryConfig::default();
        config.grpc.max_watch_streams_per_account = 0;
        assert_eq!(
            config.validate().unwrap_err().key(),
            Some("grpc.max_watch_streams_per_account")
        );
    }
}
