//! The Twilio-compatible REST facade (DESIGN §2): Conversations' paths and JSON for a message's
//! `delivery`, its delivery receipts, and webhook configuration, so code written for Twilio works
//! against receipts by changing its base URL.
//!
//! Layout: [`messages`] and [`receipts`] are the read model's resources, each handler decoding
//! its path and query, calling one read of [`crate::reads`] and rendering Twilio's JSON (a failed
//! read is answered by the table in [`crate::reads::ReadError::answer`]); [`receipts`] also serves
//! the `…/Receipts/{DY}/Timeline` extension; [`webhooks`] reads and writes
//! webhook configuration through [`crate::webhook_configs`], the same code path as gRPC;
//! [`signing_secrets`] is the `/v1/Webhooks/SigningSecrets` extension;
//! [`paging`] is Twilio's list envelope and paging URLs; [`errors`] its error body.
//!
//! Every call authenticates with HTTP Basic `AccountSid:AuthToken` (401, Twilio error 20003
//! otherwise) and reads only the caller's account: another account's sids are 404 (20404).
//! Malformed sids and paging parameters are 400 (20001; an invalid `PageToken` is 21481).
//!
//! What this service does not hold is `null`: a message's `body`, `media`, `author`,
//! `attributes`, `participant_sid` and `content_sid` belong to the messaging platform, which
//! only tells receipts who the message went to. A receipt's `error_code` is `0` when there is no
//! error (the schema's integer with `default: 0`, not nullable), and its `status` is `null` while
//! it is queued (Twilio: "`sent` … or null").

pub mod errors;
pub mod messages;
pub mod paging;
pub mod receipts;
pub mod signing_secrets;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path};
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::{delete, get, post};
use receipts_domain::{AccountSid, IdError, Timestamp};
use receipts_runtime::http::{ErrorAnswers, HttpLimits, ServerMetrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Accounts;
use crate::reads::{Reads, Sids};
use crate::webhook_configs::WebhookConfigs;
use errors::ApiError;

/// What every handler shares.
pub struct RestState {
    pub reads: Reads,
    pub webhooks: Arc<WebhookConfigs>,
    pub accounts: Accounts,
    /// The absolute base of every URL in a response, without a trailing `/`.
    pub base_url: String,
}

impl std::fmt::Debug for RestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestState")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl RestState {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

type State = axum::extract::State<Arc<RestState>>;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub AccountSid);

impl FromRequestParts<Arc<RestState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<RestState>,
    ) -> Result<Self, Self::Rejection> {
        parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| state.accounts.authenticate(value))
            .map(Caller)
            .ok_or_else(ApiError::unauthenticated)
    }
}

/// The sids in a request's path, by route parameter name.
#[derive(Debug)]
pub struct PathSids(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for PathSids {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid("path", e.body_text()))?;
        Ok(PathSids(params))
    }
}

impl PathSids {
    /// The sid in parameter `name`, parsed; a malformed one is 400 naming Twilio's parameter.
    fn parse<T>(
        &self,
        name: &str,
        parameter: &str,
        parse: impl FnOnce(&str) -> Result<T, IdError>,
    ) -> Result<T, ApiError> {
        let value = self.0.get(name).map(String::as_str).unwrap_or_default();
        parse(value).map_err(|e| ApiError::invalid(parameter, e))
    }

    /// The parameter `name` as given.
    fn raw(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or_default()
    }

    /// The chat service of the `Services/{IS}` family, as given: a sid once a read that
    /// parsed it succeeded. `None` in the default family.
    fn family(&self) -> Option<&str> {
        self.0.get("service").map(String::as_str)
    }

    /// The sids a read of the read model looks at, as given.
    fn reads(&self) -> Sids<'_> {
        Sids {
            service: self.family(),
            conversation: self.raw("conversation"),
            message: self.raw("message"),
            receipt: self.raw("receipt"),
        }
    }

    fn optional<T>(
        &self,
        name: &str,
        parameter: &str,
        parse: impl FnOnce(&str) -> Result<T, IdError>,
    ) -> Result<Option<T>, ApiError> {
        if self.0.contains_key(name) {
            self.parse(name, parameter, parse).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// `2016-03-24T20:37:57Z`: UTC, whole seconds, as every Twilio REST body.
pub fn iso8601(time: Timestamp) -> String {
    time.iso8601_seconds()
}

/// The largest request body: webhook configuration forms are a few hundred bytes, and every
/// field is capped well below this (see [`crate::webhook_configs`]).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every route of the facade.
pub fn router(state: Arc<RestState>) -> Router {
    let message_routes = |prefix: &str| {
        Router::new()
            .route(&format!("{prefix}/Messages"), get(messages::list))
            .route(
                &format!("{prefix}/Messages/{{message}}"),
                get(messages::fetch),
            )
            .route(
                &format!("{prefix}/Messages/{{message}}/Receipts"),
                get(receipts::list),
            )
            .route(
                &format!("{prefix}/Messages/{{message}}/Receipts/{{receipt}}"),
                get(receipts::fetch),
            )
            .route(
                &format!("{prefix}/Messages/{{message}}/Receipts/{{receipt}}/Timeline"),
                get(receipts::timeline),
            )
            .route(
                &format!("{prefix}/Webhooks"),
                get(webhooks::list_conversation).post(webhooks::create_conversation),
            )
            .route(
                &format!("{prefix}/Webhooks/{{webhook}}"),
                get(webhooks::fetch_conversation)
                    .post(webhooks::update_conversation)
                    .delete(webhooks::delete_conversation),
            )
    };
    let secret_routes = |collection: &str| {
        Router::new()
            .route(
                collection,
                get(signing_secrets::list).post(signing_secrets::create),
            )
            .route(
                &format!("{collection}/{{secret}}"),
                delete(signing_secrets::revoke),
            )
            .route(
                &format!("{collection}/{{secret}}/Rotation"),
                post(signing_secrets::rotate),
            )
    };
    let mut router = Router::new();
    for collection in signing_secrets::COLLECTIONS {
        router = router.merge(secret_routes(collection));
    }
    router
        .merge(message_routes("/v1/Conversations/{conversation}"))
        .merge(message_routes(
            "/v1/Services/{service}/Conversations/{conversation}",
        ))
        .route(
            "/v1/Configuration/Webhooks",
            get(webhooks::fetch_account).post(webhooks::update_account),
        )
        .route(
            "/v1/Conversations/Webhooks",
            get(webhooks::fetch_account).post(webhooks::update_account),
        )
        .route(
            "/v1/Services/{service}/Configuration/Webhooks",
            get(webhooks::fetch_service).post(webhooks::update_service),
        )
        .fallback(|| async { ApiError::not_found("path") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

/// Serves `router` on `listener` under `limits` (header and body read timeouts, connection cap,
/// load shedding with Twilio's 503 body and `Retry-After`) until `shutdown`, then lets calls in
/// flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: ServerMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    receipts_runtime::http::serve(
        listener,
        router,
        &limits,
        ErrorAnswers {
            overloaded: errors::overloaded,
            body_timed_out: errors::body_timed_out,
        },
        metrics,
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_whole_utc_seconds() {
        assert_eq!(
            iso8601(Timestamp::from_unix_millis(0)),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            iso8601(Timestamp::from_unix_millis(1_458_851_877_999)),
            "2016-03-24T20:37:57Z"
        );
        assert_eq!(
            iso8601(Timestamp::from_unix_millis(951_782_400_000)),
            "2000-02-29T00:00:00Z"
        );
    }
}
