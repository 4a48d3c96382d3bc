//! `receipts sink`: a local endpoint that receives `onDeliveryUpdated` webhooks, checks their
//! `X-Twilio-Signature` with the account's auth token, and prints one line per webhook, so the
//! loop from provider report to webhook can be watched closing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::any;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::demo::DEMO_TOKEN;

/// The path webhooks are received on.
pub const PATH: &str = "/webhooks";

#[derive(Debug, Clone, clap::Args)]
pub struct SinkArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8099")]
    pub listen: String,
    /// The auth token the signatures are checked with.
    #[arg(long, env = "RECEIPTS_AUTH_TOKEN", default_value = DEMO_TOKEN, hide_default_value = true)]
    pub token: String,
    /// The URL the dispatcher posts to, as it signs it (default: http://LISTEN/webhooks).
    #[arg(long)]
    pub url: Option<String>,
}

/// What the sink saw so far.
#[derive(Debug, Default)]
pub struct SinkCounts {
    pub received: AtomicU64,
    pub invalid_signatures: AtomicU64,
}

struct Sink {
    url: String,
    token: String,
    counts: Arc<SinkCounts>,
    lines: mpsc::UnboundedSender<String>,
}

async fn receive(
    State(sink): State<Arc<Sink>>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    // POST signs the URL and the form parameters; GET carries them in the signed URL itself.
    let (url, params) = if method == Method::GET {
        let query = query.unwrap_or_default();
        (
            format!("{}?{query}", sink.url),
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect::<Vec<_>>(),
        )
    } else {
        (
            sink.url.clone(),
            form_urlencoded::parse(&body)
                .into_owned()
                .collect::<Vec<_>>(),
        )
    };
    let signed_params: Vec<(String, String)> = if method == Method::GET {
        Vec::new()
    } else {
        params.clone()
    };
    let expected = receipts_webhook::twilio::signature(&sink.token, &url, &signed_params);
    let given = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let valid = !given.is_empty() && given == expected;
    sink.counts.received.fetch_add(1, Ordering::Relaxed);
    if !valid {
        sink.counts
            .invalid_signatures
            .fetch_add(1, Ordering::Relaxed);
    }
    let fields: BTreeMap<String, String> = params.into_iter().collect();
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("-");
    let _ = sink.lines.send(format!(
        "{} {:<11} message={} receipt={} error={} signature={}",
        field("DateUpdated"),
        field("Status"),
        field("MessageSid"),
        field("DeliveryReceiptSid"),
        field("ErrorCode"),
        if valid { "ok" } else { "INVALID" },
    ));
    if valid {
        StatusCode::OK
    } else {
        StatusCode::FORBIDDEN
    }
}

/// Serves the sink on `listener` until `shutdown`; every webhook becomes a line on `lines`.
pub async fn serve(
    listener: TcpListener,
    url: String,
    token: String,
    counts: Arc<SinkCounts>,
    lines: mpsc::UnboundedSender<String>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let sink = Arc::new(Sink {
        url,
        token,
        counts,
        lines,
    });
    let router = Router::new().route(PATH, any(receive)).with_state(sink);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
