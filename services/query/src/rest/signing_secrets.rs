//! Signing secrets over REST, an extension beside the Twilio paths (Twilio signs with the auth
//! token only): `/v1/Webhooks/SigningSecrets` lists (GET) and creates (POST) the Standard
//! Webhooks secrets of the caller's account configuration, `…/{WS…}/Rotation` (POST,
//! `GracePeriodSeconds`) replaces one, and `DELETE …/{WS…}` revokes one. The same collection
//! exists under a chat service's configuration and under a conversation webhook (see
//! [`COLLECTIONS`]). The `secret` field is in the answers to create and rotate only.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::http::StatusCode;
use receipts_domain::{AccountSid, ChatServiceSid, ConversationSid, WebhookSid};
use receipts_proto::convert::timestamp_from_wire;
use receipts_proto::v1;
use serde::Serialize;

use super::errors::ApiError;
use super::{Caller, PathSids, RestState, State, iso8601};
use crate::webhook_configs::{CreatedSecret, DEFAULT_ROTATION_GRACE, Scope};

/// The route of each configuration's collection of secrets.
pub const COLLECTIONS: [&str; 3] = [
    "/v1/Webhooks/SigningSecrets",
    "/v1/Services/{service}/Configuration/Webhooks/SigningSecrets",
    "/v1/Conversations/{conversation}/Webhooks/{webhook}/SigningSecrets",
];

/// The configuration a path is about, and the path of its collection of secrets.
fn scope_of(sids: &PathSids) -> Result<(Scope, String), ApiError> {
    if let Some(conversation) =
        sids.optional("conversation", "ConversationSid", ConversationSid::parse)?
    {
        let webhook = sids.parse("webhook", "WebhookSid", WebhookSid::parse)?;
        let path = format!("/v1/Conversations/{conversation}/Webhooks/{webhook}/SigningSecrets");
        return Ok((Scope::Conversation(conversation, webhook), path));
    }
    if let Some(service) = sids.optional("service", "ChatServiceSid", ChatServiceSid::parse)? {
        let path = format!("/v1/Services/{service}/Configuration/Webhooks/SigningSecrets");
        return Ok((Scope::Service(service), path));
    }
    Ok((Scope::Account, COLLECTIONS[0].to_owned()))
}

/// A signing secret as REST shows it.
#[derive(Debug, Serialize)]
pub struct SigningSecretJson {
    sid: String,
    account_sid: String,
    date_created: Option<String>,
    /// `null`: signs until rotated or revoked.
    date_expires: Option<String>,
    url: String,
}

/// The answer to create and rotate: the new secret, with the secret itself this once.
#[derive(Serialize)]
pub struct CreatedSecretJson {
    #[serde(flatten)]
    signing_secret: SigningSecretJson,
    secret: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotated: Option<SigningSecretJson>,
}

impl std::fmt::Debug for CreatedSecretJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedSecretJson")
            .field("signing_secret", &self.signing_secret)
            .field("rotated", &self.rotated)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize)]
pub struct SigningSecretListJson {
    signing_secrets: Vec<SigningSecretJson>,
    url: String,
}

fn secret_json(
    state: &RestState,
    account: &AccountSid,
    collection: &str,
    s: &v1::SigningSecret,
) -> SigningSecretJson {
    let time =
        |t: &Option<pbjson_types::Timestamp>| t.as_ref().map(|t| iso8601(timestamp_from_wire(t)));
    SigningSecretJson {
        sid: s.id.clone(),
        account_sid: account.to_string(),
        date_created: time(&s.created),
        date_expires: time(&s.expires),
        url: state.url(&format!("{collection}/{}", s.id)),
    }
}

fn created_json(
    state: &RestState,
    account: &AccountSid,
    collection: &str,
    created: CreatedSecret,
) -> CreatedSecretJson {
    CreatedSecretJson {
        signing_secret: secret_json(state, account, collection, &created.listed),
        secret: created.secret,
        rotated: created
            .rotated
            .map(|r| secret_json(state, account, collection, &r)),
    }
}

pub async fn list(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
) -> Result<Json<SigningSecretListJson>, ApiError> {
    let (scope, collection) = scope_of(&sids)?;
    let secrets = state
        .webhooks
        .list_signing_secrets(&account, &scope)
        .await?;
    Ok(Json(SigningSecretListJson {
        signing_secrets: secrets
            .iter()
            .map(|s| secret_json(&state, &account, &collection, s))
            .collect(),
        url: state.url(&collection),
    }))
}

pub async fn create(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
) -> Result<(StatusCode, Json<CreatedSecretJson>), ApiError> {
    let (scope, collection) = scope_of(&sids)?;
    let created = state
        .webhooks
        .create_signing_secret(&account, &scope)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(created_json(&state, &account, &collection, created)),
    ))
}

pub async fn rotate(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedSecretJson>), ApiError> {
    let (scope, collection) = scope_of(&sids)?;
    let id = sids.raw("secret");
    let mut grace = DEFAULT_ROTATION_GRACE;
    for (name, value) in form_urlencoded::parse(&body) {
        if name == "GracePeriodSeconds" {
            let seconds: u64 = value.trim().parse().map_err(|_| {
                ApiError::invalid("GracePeriodSeconds", "must be a whole number of seconds")
            })?;
            grace = Duration::from_secs(seconds);
        }
    }
    let created = state
        .webhooks
        .rotate_signing_secret(&account, &scope, id, grace)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(created_json(&state, &account, &collection, created)),
    ))
}

pub async fn revoke(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
) -> Result<StatusCode, ApiError> {
    let (scope, _) = scope_of(&sids)?;
    state
        .webhooks
        .revoke_signing_secret(&account, &scope, sids.raw("secret"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
