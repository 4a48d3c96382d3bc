//! Signing secrets over REST, an extension beside the Twilio paths (Twilio signs with the auth
//! token only): `/v1/Webhooks/SigningSecrets` lists (GET) and creates (POST) the Standard
//! Webhooks secrets of the caller's account configuration, `…/{WS…}/Rotation` (POST,
//! `GracePeriodSeconds`) replaces one, and `DELETE …/{WS…}` revokes one. The `secret` field is in
//! the answers to create and rotate only.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::http::StatusCode;
use receipts_domain::AccountSid;
use receipts_proto::convert::timestamp_from_wire;
use receipts_proto::v1;
use serde::Serialize;

use super::errors::ApiError;
use super::{Caller, PathSids, RestState, State, iso8601};
use crate::webhook_configs::{CreatedSecret, DEFAULT_ROTATION_GRACE};

pub const PATH: &str = "/v1/Webhooks/SigningSecrets";

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
    s: &v1::SigningSecret,
) -> SigningSecretJson {
    let time =
        |t: &Option<pbjson_types::Timestamp>| t.as_ref().map(|t| iso8601(timestamp_from_wire(t)));
    SigningSecretJson {
        sid: s.id.clone(),
        account_sid: account.to_string(),
        date_created: time(&s.created),
        date_expires: time(&s.expires),
        url: state.url(&format!("{PATH}/{}", s.id)),
    }
}

fn created_json(
    state: &RestState,
    account: &AccountSid,
    created: CreatedSecret,
) -> CreatedSecretJson {
    CreatedSecretJson {
        signing_secret: secret_json(state, account, &created.listed),
        secret: created.secret,
        rotated: created.rotated.map(|r| secret_json(state, account, &r)),
    }
}

pub async fn list(
    state: State,
    Caller(account): Caller,
) -> Result<Json<SigningSecretListJson>, ApiError> {
    let secrets = state.webhooks.list_signing_secrets(&account).await?;
    Ok(Json(SigningSecretListJson {
        signing_secrets: secrets
            .iter()
            .map(|s| secret_json(&state, &account, s))
            .collect(),
        url: state.url(PATH),
    }))
}

pub async fn create(
    state: State,
    Caller(account): Caller,
) -> Result<(StatusCode, Json<CreatedSecretJson>), ApiError> {
    let created = state.webhooks.create_signing_secret(&account).await?;
    Ok((
        StatusCode::CREATED,
        Json(created_json(&state, &account, created)),
    ))
}

pub async fn rotate(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedSecretJson>), ApiError> {
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
        .rotate_signing_secret(&account, id, grace)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(created_json(&state, &account, created)),
    ))
}

pub async fn revoke(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
) -> Result<StatusCode, ApiError> {
    state
        .webhooks
        .revoke_signing_secret(&account, sids.raw("secret"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
