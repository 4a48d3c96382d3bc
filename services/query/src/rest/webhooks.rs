//! Webhook configuration over REST: the account's (`/v1/Configuration/Webhooks`, also at the
//! older `/v1/Conversations/Webhooks`), a chat service's, and a conversation's scoped webhooks.
//! Writes are Twilio's form bodies (repeated `Filters`, `Configuration.Url`, …) and go through
//! [`WebhookConfigs`](crate::webhook_configs::WebhookConfigs), which answers once the write has
//! been read back from the topic.

use axum::Json;
use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::http::{StatusCode, Uri};
use receipts_domain::{AccountSid, ChatServiceSid, ConversationSid, WebhookSid};
use receipts_proto::convert::timestamp_from_wire;
use receipts_proto::v1;
use serde::Serialize;

use super::errors::ApiError;
use super::messages::conversation_path;
use super::paging::{ListLocation, ListPage, list_query};
use super::{Caller, PathSids, RestState, State, iso8601};
use crate::webhook_configs::{MAX_CONVERSATION_WEBHOOKS, Scope, WebhookUpdate};

/// The account's configuration, in Twilio's key order.
#[derive(Debug, Serialize)]
pub struct AccountWebhookJson {
    account_sid: String,
    pre_webhook_url: Option<String>,
    post_webhook_url: Option<String>,
    method: String,
    filters: Option<Vec<String>>,
    target: String,
    url: String,
}

/// A chat service's configuration, in Twilio's key order.
#[derive(Debug, Serialize)]
pub struct ServiceWebhookJson {
    account_sid: String,
    chat_service_sid: String,
    pre_webhook_url: Option<String>,
    post_webhook_url: Option<String>,
    filters: Option<Vec<String>>,
    method: String,
    url: String,
}

/// A conversation-scoped webhook, in Twilio's key order.
#[derive(Debug, Serialize)]
pub struct ScopedWebhookJson {
    account_sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_service_sid: Option<String>,
    conversation_sid: String,
    sid: String,
    target: String,
    configuration: ScopedConfiguration,
    date_created: Option<String>,
    date_updated: Option<String>,
    url: String,
}

/// `configuration`, "defined based on target": url, lowercase method and filters for `webhook`
/// and `trigger` (whose keywords Twilio lists under `filters`), the flow for `studio`.
#[derive(Debug, Serialize)]
pub struct ScopedConfiguration {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filters: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow_sid: Option<String>,
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn filters(config: Option<&v1::WebhookConfig>) -> Option<Vec<String>> {
    config.and_then(|c| (!c.filters.is_empty()).then(|| c.filters.clone()))
}

/// POST is the method when none was configured: it is the one webhooks are sent with.
fn method(config: Option<&v1::WebhookConfig>) -> String {
    config
        .and_then(|c| non_empty(&c.method))
        .unwrap_or_else(|| "POST".into())
}

fn account_json(
    state: &RestState,
    account: &AccountSid,
    path: &str,
    config: Option<&v1::WebhookConfig>,
) -> AccountWebhookJson {
    AccountWebhookJson {
        account_sid: account.to_string(),
        pre_webhook_url: config.and_then(|c| non_empty(&c.pre_webhook_url)),
        post_webhook_url: config.and_then(|c| non_empty(&c.post_webhook_url)),
        method: method(config),
        filters: filters(config),
        target: config
            .and_then(|c| non_empty(&c.target))
            .unwrap_or_else(|| "webhook".into()),
        url: state.url(path),
    }
}

fn service_json(
    state: &RestState,
    account: &AccountSid,
    service: &ChatServiceSid,
    config: Option<&v1::WebhookConfig>,
) -> ServiceWebhookJson {
    ServiceWebhookJson {
        account_sid: account.to_string(),
        chat_service_sid: service.to_string(),
        pre_webhook_url: config.and_then(|c| non_empty(&c.pre_webhook_url)),
        post_webhook_url: config.and_then(|c| non_empty(&c.post_webhook_url)),
        filters: filters(config),
        method: method(config),
        url: state.url(&format!("/v1/Services/{service}/Configuration/Webhooks")),
    }
}

fn scoped_json(
    state: &RestState,
    service: Option<&ChatServiceSid>,
    config: &v1::WebhookConfig,
) -> ScopedWebhookJson {
    let configuration = if config.target == "studio" {
        ScopedConfiguration {
            url: None,
            method: None,
            filters: None,
            flow_sid: non_empty(&config.flow_sid),
        }
    } else {
        let listed = if config.target == "trigger" && !config.triggers.is_empty() {
            &config.triggers
        } else {
            &config.filters
        };
        ScopedConfiguration {
            url: non_empty(&config.post_webhook_url),
            method: Some(method(Some(config)).to_ascii_lowercase()),
            filters: Some(listed.clone()),
            flow_sid: None,
        }
    };
    ScopedWebhookJson {
        account_sid: config.account_sid.clone(),
        chat_service_sid: service.map(ToString::to_string),
        conversation_sid: config.conversation_sid.clone(),
        sid: config.webhook_sid.clone(),
        target: config.target.clone(),
        configuration,
        date_created: config
            .date_created
            .as_ref()
            .map(|t| iso8601(timestamp_from_wire(t))),
        date_updated: config
            .date_updated
            .as_ref()
            .map(|t| iso8601(timestamp_from_wire(t))),
        url: state.url(&format!(
            "{}/Webhooks/{}",
            conversation_path(service, &conversation_of(config)),
            config.webhook_sid
        )),
    }
}

fn conversation_of(config: &v1::WebhookConfig) -> ConversationSid {
    ConversationSid::parse(&config.conversation_sid)
        .expect("conversation webhooks are only stored under a valid conversation sid")
}

/// A form body's parameters, repeated ones in order.
fn form(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn single(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn repeated(form: &[(String, String)], name: &str) -> Option<Vec<String>> {
    let values: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect();
    (!values.is_empty()).then_some(values)
}

fn scope_update(form: &[(String, String)], with_target: bool) -> WebhookUpdate {
    WebhookUpdate {
        method: single(form, "Method"),
        filters: repeated(form, "Filters"),
        pre_webhook_url: single(form, "PreWebhookUrl"),
        post_webhook_url: single(form, "PostWebhookUrl"),
        target: with_target.then(|| single(form, "Target")).flatten(),
        ..WebhookUpdate::default()
    }
}

fn conversation_update(form: &[(String, String)]) -> WebhookUpdate {
    WebhookUpdate {
        method: single(form, "Configuration.Method"),
        filters: repeated(form, "Configuration.Filters"),
        post_webhook_url: single(form, "Configuration.Url"),
        target: single(form, "Target"),
        triggers: repeated(form, "Configuration.Triggers"),
        flow_sid: single(form, "Configuration.FlowSid"),
        ..WebhookUpdate::default()
    }
}

pub async fn fetch_account(
    state: State,
    Caller(account): Caller,
    uri: Uri,
) -> Result<Json<AccountWebhookJson>, ApiError> {
    let config = state.webhooks.get(&account, &Scope::Account).await?;
    Ok(Json(account_json(
        &state,
        &account,
        uri.path(),
        config.as_ref(),
    )))
}

pub async fn update_account(
    state: State,
    Caller(account): Caller,
    uri: Uri,
    body: Bytes,
) -> Result<Json<AccountWebhookJson>, ApiError> {
    let update = scope_update(&form(&body), true);
    let config = state
        .webhooks
        .update(&account, &Scope::Account, &update)
        .await?;
    Ok(Json(account_json(
        &state,
        &account,
        uri.path(),
        Some(&config),
    )))
}

pub async fn fetch_service(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
) -> Result<Json<ServiceWebhookJson>, ApiError> {
    let service = sids.parse("service", "ChatServiceSid", ChatServiceSid::parse)?;
    let config = state
        .webhooks
        .get(&account, &Scope::Service(service.clone()))
        .await?;
    Ok(Json(service_json(
        &state,
        &account,
        &service,
        config.as_ref(),
    )))
}

pub async fn update_service(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
    body: Bytes,
) -> Result<Json<ServiceWebhookJson>, ApiError> {
    let service = sids.parse("service", "ChatServiceSid", ChatServiceSid::parse)?;
    let update = scope_update(&form(&body), false);
    let config = state
        .webhooks
        .update(&account, &Scope::Service(service.clone()), &update)
        .await?;
    Ok(Json(service_json(
        &state,
        &account,
        &service,
        Some(&config),
    )))
}

fn conversation_sids(
    sids: &PathSids,
) -> Result<(Option<ChatServiceSid>, ConversationSid), ApiError> {
    Ok((
        sids.optional("service", "ChatServiceSid", ChatServiceSid::parse)?,
        sids.parse("conversation", "ConversationSid", ConversationSid::parse)?,
    ))
}

pub async fn list_conversation(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
    RawQuery(raw): RawQuery,
) -> Result<Json<ListPage<ScopedWebhookJson>>, ApiError> {
    let (service, conversation) = conversation_sids(&sids)?;
    let query = list_query(raw.as_deref(), MAX_CONVERSATION_WEBHOOKS, false)?;
    // At most five: one page holds them all, and a token is never issued.
    if query.token.is_some() {
        return Err(ApiError::invalid_page_token());
    }
    let all = state
        .webhooks
        .list_conversation(&account, &conversation)
        .await?;
    let start = (query.page as usize).saturating_mul(query.page_size);
    let more = all.len() > start.saturating_add(query.page_size);
    let location = ListLocation {
        url: state.url(&format!(
            "{}/Webhooks",
            conversation_path(service.as_ref(), &conversation)
        )),
        filters: Vec::new(),
    };
    let mut meta = location.meta("webhooks", &query, None);
    if more {
        // Pages of so short a list are addressed by `Page` alone.
        meta.next_page_url = Some(format!(
            "{}?PageSize={}&Page={}",
            location.url,
            query.page_size,
            query.page + 1
        ));
    }
    Ok(Json(ListPage {
        meta,
        items: all
            .iter()
            .skip(start)
            .take(query.page_size)
            .map(|config| scoped_json(&state, service.as_ref(), config))
            .collect(),
    }))
}

pub async fn create_conversation(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
    body: Bytes,
) -> Result<(StatusCode, Json<ScopedWebhookJson>), ApiError> {
    let (service, conversation) = conversation_sids(&sids)?;
    let config = state
        .webhooks
        .create_conversation(&account, &conversation, &conversation_update(&form(&body)))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(scoped_json(&state, service.as_ref(), &config)),
    ))
}

fn webhook_sids(
    sids: &PathSids,
) -> Result<(Option<ChatServiceSid>, ConversationSid, WebhookSid), ApiError> {
    let (service, conversation) = conversation_sids(sids)?;
    let webhook = sids.parse("webhook", "Sid", WebhookSid::parse)?;
    Ok((service, conversation, webhook))
}

pub async fn fetch_conversation(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
) -> Result<Json<ScopedWebhookJson>, ApiError> {
    let (service, conversation, webhook) = webhook_sids(&sids)?;
    let scope = Scope::Conversation(conversation, webhook.clone());
    match state.webhooks.get(&account, &scope).await? {
        Some(config) => Ok(Json(scoped_json(&state, service.as_ref(), &config))),
        None => Err(ApiError::not_found(format!("webhook {webhook}"))),
    }
}

pub async fn update_conversation(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
    body: Bytes,
) -> Result<Json<ScopedWebhookJson>, ApiError> {
    let (service, conversation, webhook) = webhook_sids(&sids)?;
    let scope = Scope::Conversation(conversation, webhook);
    let config = state
        .webhooks
        .update(&account, &scope, &conversation_update(&form(&body)))
        .await?;
    Ok(Json(scoped_json(&state, service.as_ref(), &config)))
}

pub async fn delete_conversation(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
) -> Result<StatusCode, ApiError> {
    let (_, conversation, webhook) = webhook_sids(&sids)?;
    state
        .webhooks
        .delete_conversation(&account, &conversation, &webhook)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
