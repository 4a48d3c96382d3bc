//! The webhook endpoint both webhook stages deliver to: an axum server on the loopback interface
//! that answers 200 at once, counts what it received, keeps the first body (the bare POST loop
//! replays it) and, for the end-to-end stage, when each receipt's `delivered` webhook arrived.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use receipts_bus::KafkaSettings;
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_runtime::demo::DEMO_ACCOUNT;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::produce_all;

/// What the sink saw.
#[derive(Default)]
pub(super) struct Sink {
    pub(super) received: AtomicU64,
    /// The first body received, replayed by the bare POST loop.
    pub(super) sample: Mutex<Option<Bytes>>,
    /// `DeliveryReceiptSid` → when its `delivered` webhook arrived (end-to-end only).
    pub(super) delivered: Mutex<Option<HashMap<String, Instant>>>,
}

async fn receive(State(sink): State<Arc<Sink>>, body: Bytes) -> &'static str {
    let at = Instant::now();
    sink.received.fetch_add(1, Ordering::Relaxed);
    if let Some(delivered) = sink.delivered.lock().expect("sink lock").as_mut() {
        let mut receipt = None;
        let mut status = None;
        for (key, value) in form_urlencoded::parse(&body) {
            match key.as_ref() {
                "DeliveryReceiptSid" => receipt = Some(value.into_owned()),
                "Status" => status = Some(value),
                _ => {}
            }
        }
        if let (Some(receipt), Some("delivered")) = (receipt, status.as_deref()) {
            delivered.entry(receipt).or_insert(at);
        }
    }
    let mut sample = sink.sample.lock().expect("sink lock");
    if sample.is_none() {
        *sample = Some(body);
    }
    "ok"
}

pub(super) async fn start_sink(
    sink: Arc<Sink>,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let router = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(sink);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(address)
}

/// An account-wide post-webhook for `onDeliveryUpdated` to `url`, written to `webhook-configs`.
pub(super) async fn configure_webhook(
    kafka: &KafkaSettings,
    topic: &str,
    url: &str,
) -> anyhow::Result<()> {
    let mut config = v1::WebhookConfig {
        account_sid: DEMO_ACCOUNT.into(),
        method: "POST".into(),
        filters: vec!["onDeliveryUpdated".into()],
        post_webhook_url: url.into(),
        target: "webhook".into(),
        ..Default::default()
    };
    config.set_scope(v1::WebhookScope::Account);
    let key = receipts_proto::webhooks::webhook_key(&config);
    produce_all(
        kafka,
        topic,
        vec![(key.into_bytes(), codec::encode(&config, Encoding::Protobuf))],
    )
    .await?;
    Ok(())
}
