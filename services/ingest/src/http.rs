//! The HTTP endpoints: authenticate, parse and validate the whole request, produce its events,
//! answer once Kafka has acknowledged them.
//!
//! | endpoint | authentication |
//! |---|---|
//! | `POST /v1/twilio/status` | `X-Twilio-Signature` with the `AccountSid`'s auth token (403) |
//! | `GET /v1/whatsapp/webhook` | `hub.verify_token` (403) |
//! | `POST /v1/whatsapp/webhook` | `X-Hub-Signature-256` with the app secret (403) |
//! | `POST /v1/smpp/{connection}/receipts` | `Authorization: Bearer <connection token>` (401; unknown connection 403) |
//! | `POST /v1/events` | HTTP Basic `AccountSid:AuthToken` (401); registrations of other accounts 403 |
//!
//! Every error is `{"error": {"field": …, "reason": …}}`: 400 for a bad field, 401/403 as above,
//! 408 for a body that did not arrive within `http.body_read_timeout_ms`, 413 for a body over
//! the limit, 503 with `Retry-After` when Kafka did not acknowledge or too many requests are in
//! flight (`http.max_requests_in_flight`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use receipts_domain::{AccountSid, DeliveryEvent};
use receipts_runtime::auth;
use receipts_runtime::clock::SharedClock;
use receipts_runtime::config::Secret;
use serde_json::json;
use tracing::{debug, warn};

use crate::canonical::{BatchError, parse_event_batch};
use crate::metrics::IngestMetrics;
use crate::publish::{MAX_EVENT_BYTES, PublishError, Publisher, Record};
use crate::report::FieldError;
pub use crate::report::Format;
use crate::smpp::parse_smpp_receipt;
use crate::twilio::{form_pairs, form_value, parse_twilio_pairs, verify_twilio_signature};
use crate::whatsapp::{parse_whatsapp, verify_hub_signature};

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The client's mistake in a field: 400.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// Missing or wrong credentials: 401 with a `WWW-Authenticate` challenge.
    #[error("{reason}")]
    Unauthenticated {
        challenge: &'static str,
        reason: &'static str,
    },
    /// A signature that does not match, an unknown account or connection, or data of another
    /// account: 403.
    #[error("{reason}")]
    Forbidden {
        field: Option<String>,
        reason: String,
        label: &'static str,
    },
    #[error("body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The body did not arrive within the body read timeout: 408.
    #[error("the body did not arrive in time")]
    BodyTimedOut,
    /// Kafka did not acknowledge every event: 503 with `Retry-After`.
    #[error(transparent)]
    Unavailable(#[from] PublishError),
}

impl Rejection {
    fn forbidden(field: &str, reason: impl Into<String>, label: &'static str) -> Self {
        Rejection::Forbidden {
            field: Some(field.to_owned()),
            reason: reason.into(),
            label,
        }
    }

    /// The metric label of the rejection.
    fn reason_label(&self) -> &'static str {
        match self {
            Rejection::Invalid(e) => e.problem.as_str(),
            Rejection::Unauthenticated { .. } => "unauthenticated",
            Rejection::Forbidden { label, .. } => label,
            Rejection::TooLarge { .. } => "too_large",
            Rejection::BodyTimedOut => "body_timeout",
            Rejection::Unavailable(_) => "kafka_unavailable",
        }
    }
}

/// What the handlers share.
pub(crate) struct Gateway {
    pub(crate) public_base_url: String,
    pub(crate) accounts: BTreeMap<String, Secret>,
    pub(crate) whatsapp_verify_token: Secret,
    pub(crate) whatsapp_app_secret: Secret,
    /// Business phone number id → the account that owns it.
    pub(crate) whatsapp_numbers: BTreeMap<String, AccountSid>,
    /// SMSC connection name → the account it sends for, and its bridge's token.
    pub(crate) smpp_connections: BTreeMap<String, (AccountSid, Secret)>,
    pub(crate) body_limit: usize,
    pub(crate) retry_after_secs: u64,
    pub(crate) publisher: Publisher,
    pub(crate) metrics: IngestMetrics,
    /// The time given to Twilio status callbacks, which carry none of their own.
    pub(crate) clock: SharedClock,
}

type Shared = State<Arc<Gateway>>;

pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    let limit = gateway.body_limit;
    Router::new()
        .route("/v1/twilio/status", post(twilio_status))
        .route(
            "/v1/whatsapp/webhook",
            get(whatsapp_verify).post(whatsapp_statuses),
        )
        .route("/v1/smpp/{connection}/receipts", post(smpp_receipt))
        .route("/v1/events", post(canonical_events))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(gateway)
}

/// The answer to a request shed because too many are in flight (the server adds
/// `Retry-After`).
pub(crate) fn overloaded() -> Response {
    let body = axum::Json(json!({"error": {
        "field": null,
        "reason": "too many requests in flight; retry later",
    }}));
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

/// The answer to a request whose body did not arrive in time.
pub(crate) fn body_timed_out() -> Response {
    let body = axum::Json(json!({"error": {
        "field": "body",
        "reason": "the body did not arrive in time",
    }}));
    (StatusCode::REQUEST_TIMEOUT, body).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Gateway {
    fn body(&self, body: Result<Bytes, BytesRejection>) -> Result<Bytes, Rejection> {
        body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Rejection::TooLarge {
                    limit: self.body_limit,
                }
            } else if receipts_runtime::http::is_body_timeout(&rejection) {
                Rejection::BodyTimedOut
            } else {
                FieldError::malformed("body", rejection.body_text()).into()
            }
        })
    }

    /// The URL the provider called, as it signed it.
    fn public_url(&self, uri: &Uri) -> String {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        format!("{}{path}", self.public_base_url)
    }

    /// Produces the events and answers with their ids once all are acknowledged.
    async fn accept(
        &self,
        format: Format,
        events: Vec<DeliveryEvent>,
    ) -> Result<Response, Rejection> {
        self.accept_skipping(format, events, Vec::new()).await
    }

    /// [`Gateway::accept`] for a request some of whose reports were skipped: they are counted,
    /// logged and named in the answer's `skipped`.
    async fn accept_skipping(
        &self,
        format: Format,
        events: Vec<DeliveryEvent>,
        skipped: Vec<FieldError>,
    ) -> Result<Response, Rejection> {
        // Everything that can refuse a request happens before the first event is produced.
        let records: Vec<Record> = events.iter().map(Record::encode).collect();
        if let Some((i, record)) = records
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() > MAX_EVENT_BYTES)
        {
            return Err(FieldError::invalid(
                "body",
                format!(
                    "event {i} encodes to {} bytes, more than the {MAX_EVENT_BYTES} bytes of one event",
                    record.len()
                ),
            )
            .into());
        }
        if !records.is_empty() {
            self.publisher.publish(&records).await?;
        }
        self.metrics.accepted(format, events.len());
        debug!(
            format = format.as_str(),
            events = events.len(),
            "status reports accepted"
        );
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        if skipped.is_empty() {
            return Ok(
                axum::Json(json!({"accepted": events.len(), "event_ids": ids})).into_response(),
            );
        }
        for report in &skipped {
            self.metrics.skipped(format, report.problem.as_str());
            warn!(format = format.as_str(), field = %report.field, reason = %report.reason, "status report skipped");
        }
        let skipped: Vec<_> = skipped
            .iter()
            .map(|e| json!({"field": e.field, "reason": e.reason}))
            .collect();
        Ok(axum::Json(json!({
            "accepted": events.len(),
            "event_ids": ids,
            "skipped": skipped,
        }))
        .into_response())
    }

    /// The answer to a request that failed, counted and logged.
    fn reject(&self, format: Format, rejection: Rejection) -> Response {
        self.metrics.rejected(format, rejection.reason_label());
        let (status, field) = match &rejection {
            Rejection::Invalid(e) => (StatusCode::BAD_REQUEST, Some(e.field.clone())),
            Rejection::Unauthenticated { .. } => (StatusCode::UNAUTHORIZED, None),
            Rejection::Forbidden { field, .. } => (StatusCode::FORBIDDEN, field.clone()),
            Rejection::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, Some("body".to_owned())),
            Rejection::BodyTimedOut => (StatusCode::REQUEST_TIMEOUT, Some("body".to_owned())),
            Rejection::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
        };
        let reason = match &rejection {
            Rejection::Invalid(e) => e.reason.clone(),
            Rejection::Unavailable(_) => {
                "kafka did not acknowledge the events; retry later".to_owned()
            }
            other => other.to_string(),
        };
        if let Rejection::Unavailable(e) = &rejection {
            warn!(
                format = format.as_str(),
                acknowledged = e.acknowledged,
                total = e.total,
                reason = %receipts_bus::consume::error_chain(&e.source),
                "status report not stored"
            );
        } else {
            warn!(format = format.as_str(), status = status.as_u16(), reason = %rejection, "status report rejected");
        }
        let body = axum::Json(json!({"error": {"field": field, "reason": reason}}));
        let mut response = (status, body).into_response();
        match &rejection {
            Rejection::Unavailable(_) => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(self.retry_after_secs),
                );
            }
            Rejection::Unauthenticated { challenge, .. } => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            _ => {}
        }
        response
    }

    fn respond(&self, format: Format, result: Result<Response, Rejection>) -> Response {
        result.unwrap_or_else(|rejection| self.reject(format, rejection))
    }
}

/// Twilio Messaging status callback. The signature is checked before any field, so nothing about
/// the form is revealed to a caller who cannot sign it.
async fn twilio_status(
    State(gateway): Shared,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = gateway.body(body)?;
        let pairs = form_pairs(&body);
        let account = form_value(&pairs, "AccountSid").unwrap_or_default();
        let token = gateway.accounts.get(account).ok_or_else(|| {
            Rejection::forbidden("AccountSid", "unknown account", "unknown_account")
        })?;
        let signature = header(&headers, "x-twilio-signature").unwrap_or_default();
        let url = gateway.public_url(&uri);
        if !verify_twilio_signature(token.expose(), &url, &pairs, signature) {
            return Err(Rejection::forbidden(
                "X-Twilio-Signature",
                format!("does not match the request to {url}"),
                "bad_signature",
            ));
        }
        let callback = parse_twilio_pairs(&pairs, gateway.clock.now())?;
        gateway.accept(Format::Twilio, vec![callback.event]).await
    }
    .await;
    gateway.respond(Format::Twilio, result)
}

/// The WhatsApp webhook verification handshake: echo `hub.challenge` when Meta presents the
/// configured verify token.
async fn whatsapp_verify(State(gateway): Shared, RawQuery(query): RawQuery) -> Response {
    let pairs = form_pairs(query.unwrap_or_default().as_bytes());
    let result = (|| {
        let mode = form_value(&pairs, "hub.mode").unwrap_or_default();
        let token = form_value(&pairs, "hub.verify_token").unwrap_or_default();
        if mode != "subscribe" {
            return Err(Rejection::forbidden(
                "hub.mode",
                "must be `subscribe`",
                "bad_verify_token",
            ));
        }
        if !auth::same_secret(token, &gateway.whatsapp_verify_token) {
            return Err(Rejection::forbidden(
                "hub.verify_token",
                "does not match",
                "bad_verify_token",
            ));
        }
        let challenge = form_value(&pairs, "hub.challenge")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| FieldError::missing("hub.challenge"))?;
        Ok(([(header::CONTENT_TYPE, "text/plain")], challenge.to_owned()).into_response())
    })();
    gateway.respond(Format::Whatsapp, result)
}

async fn whatsapp_statuses(
    State(gateway): Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = gateway.body(body)?;
        let secret = &gateway.whatsapp_app_secret;
        let signature = header(&headers, "x-hub-signature-256").unwrap_or_default();
        if secret.is_empty() || !verify_hub_signature(secret.expose(), &body, signature) {
            return Err(Rejection::forbidden(
                "X-Hub-Signature-256",
                "does not match the body",
                "bad_signature",
            ));
        }
        let parsed = parse_whatsapp(&body, |number| {
            gateway.whatsapp_numbers.get(number).cloned()
        })?;
        gateway
            .accept_skipping(Format::Whatsapp, parsed.events, parsed.skipped)
            .await
    }
    .await;
    gateway.respond(Format::Whatsapp, result)
}

const BEARER_CHALLENGE: &str = "Bearer realm=\"receipts\"";
const BASIC_CHALLENGE: &str = "Basic realm=\"receipts\"";

async fn smpp_receipt(
    State(gateway): Shared,
    Path(connection): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let (account, token) = gateway.smpp_connections.get(&connection).ok_or_else(|| {
            Rejection::forbidden(
                "connection",
                "unknown SMPP connection",
                "unknown_connection",
            )
        })?;
        let given = header(&headers, "authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !auth::same_secret(given.trim(), token) {
            return Err(Rejection::Unauthenticated {
                challenge: BEARER_CHALLENGE,
                reason: "the connection's bearer token is missing or wrong",
            });
        }
        let body = gateway.body(body)?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| FieldError::malformed("body", "is not UTF-8 text"))?;
        let event = parse_smpp_receipt(account, &connection, text)?;
        gateway.accept(Format::Smpp, vec![event]).await
    }
    .await;
    gateway.respond(Format::Smpp, result)
}

/// The account named by HTTP Basic credentials, if its auth token matches.
fn basic_account(gateway: &Gateway, headers: &HeaderMap) -> Option<AccountSid> {
    let (user, password) = auth::basic_credentials(headers)?;
    let token = gateway.accounts.get(&user)?;
    if !auth::same_secret(&password, token) {
        return None;
    }
    AccountSid::parse(&user).ok()
}

async fn canonical_events(
    State(gateway): Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let account = basic_account(&gateway, &headers).ok_or(Rejection::Unauthenticated {
            challenge: BASIC_CHALLENGE,
            reason: "HTTP Basic AccountSid:AuthToken is missing or wrong",
        })?;
        let body = gateway.body(body)?;
        let events = parse_event_batch(&body, &account).map_err(|e| match e {
            BatchError::Invalid(e) => Rejection::Invalid(e),
            BatchError::ForeignAccount { field } => Rejection::Forbidden {
                field: Some(field),
                reason: "names an account other than the caller's".to_owned(),
                label: "foreign_account",
            },
        })?;
        gateway.accept(Format::Canonical, events).await
    }
    .await;
    gateway.respond(Format::Canonical, result)
}
