//! The ingest gateway (DESIGN §2 "Ingest"): provider status reports arrive over HTTP and leave as
//! canonical `delivery-events` on Kafka, keyed by channel message id, each a `StatusReported` (or,
//! from the canonical batch, a `ReceiptRegistered`) that keeps the provider's raw status and time.
//!
//! Layout: one pure parser per format, each a function from the request body to validated events
//! ([`twilio::parse_twilio_form`], [`whatsapp::parse_whatsapp`], [`smpp::parse_smpp_receipt`],
//! [`canonical::parse_event_batch`]); [`report`] holds what they share (the field error, the
//! deterministic event id, provider time formats); [`http`] authenticates, parses and answers;
//! `publish` produces and waits for Kafka's acknowledgements; [`config`] is the configuration.
//!
//! The server is `receipts_runtime::http`: header and body read timeouts, a cap on open
//! connections and on requests in flight (503 with `Retry-After` beyond either), configured
//! under `http`.
//!
//! # Nothing acknowledged that is not stored, nothing half-written
//!
//! A request is answered 2xx only after Kafka acknowledged every one of its events (idempotent
//! producer, `acks=all`, bounded by `produce_timeout_ms`). Every event of a request is parsed and
//! validated before the first is produced, so a request with one bad report writes nothing and
//! gets a 400. Once producing has begun, some events of a multi-event request may be acknowledged
//! and another not (Kafka went away half-way): the answer is then 503 with `Retry-After`, never
//! 2xx. That is safe because the acknowledged part is not a *different* state, only an earlier
//! one: the provider's retry sends the same body, which yields identical events with identical
//! event ids (derived from the provider's id, raw status, provider time and error code), and the
//! projector's merge keeps the greatest report of a set, so a copy of an event it has seen
//! changes nothing and emits nothing. Multi-event requests come from WhatsApp, whose statuses
//! carry their own time, and from the canonical batch, whose events carry their own ids and
//! times, so their retries are exact copies. A Twilio callback holds one event; when it has no
//! `RawDlrDoneDate` its retry keeps the event id but not the stand-in time (see [`twilio`]).
//!
//! # Provider times
//!
//! WhatsApp statuses carry `timestamp` (unix seconds) and SMPP receipts a `done date`; both are
//! the provider time. Twilio callbacks carry no reliable time: the carrier's `RawDlrDoneDate` is
//! used when present, the receipt time otherwise (see [`twilio`]).

pub mod canonical;
pub mod config;
pub mod http;
mod metrics;
mod publish;
pub mod report;
pub mod smpp;
pub mod twilio;
pub mod whatsapp;

use std::sync::Arc;
use std::time::Duration;

use receipts_bus::TopicSpec;
use receipts_domain::AccountSid;
use receipts_runtime::metrics::Metrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use crate::config::{IngestConfig, SmppConnection, WhatsappConfig};
pub use crate::publish::{MAX_EVENT_BYTES, PublishError};

use crate::http::Gateway;
use crate::metrics::IngestMetrics;
use crate::publish::Publisher;

/// Why the gateway stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("kafka setup")]
    Bus(#[from] receipts_bus::BusError),
    #[error("serving HTTP")]
    Serve(#[from] std::io::Error),
    #[error("a blocking task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Serves ingest on the system clock; see [`run_with_clock`].
pub async fn run(
    config: IngestConfig,
    listener: TcpListener,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    run_with_clock(
        config,
        listener,
        metrics,
        receipts_runtime::clock::system(),
        shutdown,
    )
    .await
}

/// Serves the gateway on `listener` until `shutdown` is cancelled; requests in flight finish
/// (and wait for their acknowledgements) before it returns. Twilio status callbacks, which
/// carry no time of their own, are stamped by `clock`.
pub async fn run_with_clock(
    config: IngestConfig,
    listener: TcpListener,
    metrics: &Metrics,
    clock: receipts_runtime::clock::SharedClock,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    if config.create_topics_partitions > 0 {
        let spec = TopicSpec::new(
            &config.topics.delivery_events,
            config.create_topics_partitions,
        );
        receipts_bus::topics::ensure_topics(&config.kafka, &[spec]).await?;
    }
    let server_metrics = receipts_runtime::http::ServerMetrics::register(metrics, "ingest_http");
    let metrics = IngestMetrics::register(metrics);
    let topic = config.topics.delivery_events.clone();
    let timeout = Duration::from_millis(config.produce_timeout_ms);
    let latency = metrics.produce_seconds.clone();
    let kafka = config.kafka.clone();
    let publisher =
        tokio::task::spawn_blocking(move || Publisher::new(&kafka, topic, timeout, latency))
            .await??;
    let gateway = Arc::new(Gateway {
        public_base_url: config.public_base_url.clone(),
        accounts: config.accounts.clone(),
        whatsapp_verify_token: config.whatsapp.verify_token.clone(),
        whatsapp_app_secret: config.whatsapp.app_secret.clone(),
        // Validated with the configuration.
        whatsapp_numbers: config
            .whatsapp
            .phone_numbers
            .iter()
            .filter_map(|(number, account)| {
                Some((number.clone(), AccountSid::parse(account).ok()?))
            })
            .collect(),
        smpp_connections: config
            .smpp_connections
            .iter()
            .filter_map(|(name, c)| {
                Some((
                    name.clone(),
                    (AccountSid::parse(&c.account).ok()?, c.token.clone()),
                ))
            })
            .collect(),
        body_limit: config.body_limit_bytes,
        retry_after_secs: config.retry_after_secs,
        publisher,
        clock,
        metrics,
    });
    info!(
        listen = %listener.local_addr()?,
        topic = %config.topics.delivery_events,
        public_base_url = %config.public_base_url,
        "ingest gateway started"
    );
    let served = receipts_runtime::http::serve(
        listener,
        http::router(gateway.clone()),
        &config.http,
        receipts_runtime::http::ErrorAnswers {
            overloaded: http::overloaded,
            body_timed_out: http::body_timed_out,
        },
        server_metrics,
        shutdown,
    )
    .await;
    gateway.publisher.flush().await;
    info!("ingest gateway stopped");
    Ok(served?)
}
