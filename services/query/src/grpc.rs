//! The `receipts.v1.DeliveryQuery` gRPC service over the read model.
//!
//! Every call is authenticated by the interceptor, which puts the caller's [`AccountSid`] into the
//! request extensions; every read is keyed by that account, so another account's sids are simply
//! not found. The reads are [`crate::reads`]: each RPC here decodes its request, calls one read
//! and encodes the answer, and a failed read is answered as the table in
//! [`crate::reads::ReadError::answer`] says (bad input `InvalidArgument` naming the field,
//! unknown sids `NotFound` naming the sid, a failing store `Internal`). The webhook configuration
//! calls go to [`crate::webhook_configs`]; the `watch` module holds the `WatchUpdates` streams.

mod watch;

use std::sync::Arc;
use std::time::Duration;

use receipts_domain::{
    AccountSid, ChatServiceSid, ConversationSid, IdError, ReceiptChange, WebhookSid,
};
use receipts_proto::v1;
use receipts_proto::v1::delivery_query_server::DeliveryQuery;
use receipts_store::SortOrder;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::auth::Accounts;
use crate::reads::{MESSAGES_PAGE_MAX, PageRequest, RECEIPTS_PAGE_MAX, ReadError, Reads, Sids};
use crate::webhook_configs::{
    ConfigCallError, DEFAULT_ROTATION_GRACE, Scope, WebhookConfigs, WebhookUpdate,
};
use watch::{WatchStream, Watchers};

/// Authenticates every call; see the module docs.
pub fn authenticate(
    accounts: Accounts,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let header = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing authorization: use Basic AccountSid:AuthToken")
        })?;
        let account = header
            .to_str()
            .ok()
            .and_then(|value| accounts.authenticate(value))
            .ok_or_else(|| Status::unauthenticated("invalid credentials"))?;
        request.extensions_mut().insert(account);
        Ok(request)
    }
}

/// The service state shared by all calls.
#[derive(Clone)]
pub struct QueryService {
    reads: Reads,
    webhooks: Arc<WebhookConfigs>,
    updates: broadcast::Sender<Arc<ReceiptChange>>,
    watch_buffer: usize,
    watchers: Watchers,
    /// Ends open watch streams, so a graceful shutdown is not held up by them.
    shutdown: CancellationToken,
}

impl std::fmt::Debug for QueryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryService").finish_non_exhaustive()
    }
}

impl QueryService {
    pub fn new(
        reads: Reads,
        webhooks: Arc<WebhookConfigs>,
        updates: broadcast::Sender<Arc<ReceiptChange>>,
        watch_buffer: usize,
        max_watchers: usize,
        shutdown: CancellationToken,
    ) -> Self {
        QueryService {
            reads,
            webhooks,
            updates,
            watch_buffer,
            watchers: Watchers::new(max_watchers),
            shutdown,
        }
    }
}

fn caller<T>(request: &Request<T>) -> Result<AccountSid, Status> {
    request
        .extensions()
        .get::<AccountSid>()
        .cloned()
        .ok_or_else(|| {
            Status::unauthenticated("missing authorization: use Basic AccountSid:AuthToken")
        })
}

/// A sid of a webhook configuration call; the reads parse theirs in [`crate::reads`].
fn parse<T>(
    field: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, IdError>,
) -> Result<T, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    parse(value).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// gRPC's `order`: unspecified is ascending.
fn sort_order(order: i32) -> Result<SortOrder, ReadError> {
    match v1::Order::try_from(order) {
        Ok(v1::Order::Unspecified | v1::Order::Asc) => Ok(SortOrder::Ascending),
        Ok(v1::Order::Desc) => Ok(SortOrder::Descending),
        Err(_) => Err(ReadError::UnknownOrder(order)),
    }
}

fn config_status(error: ConfigCallError) -> Status {
    let answer = error.answer();
    Status::new(answer.grpc_code, answer.grpc_message)
}

/// A configuration as the API shows it: signing secrets stay on the topic.
fn shown(mut config: v1::WebhookConfig) -> Response<v1::WebhookConfig> {
    config.signing_secrets.clear();
    config.sealed_secrets.clear();
    Response::new(config)
}

fn config_scope(chat_service_sid: &str) -> Result<Scope, Status> {
    if chat_service_sid.is_empty() {
        Ok(Scope::Account)
    } else {
        Ok(Scope::Service(parse(
            "chat_service_sid",
            chat_service_sid,
            ChatServiceSid::parse,
        )?))
    }
}

/// The configuration a signing-secret call is about.
fn secret_scope(scope: Option<&v1::SigningSecretScope>) -> Result<Scope, Status> {
    let Some(scope) = scope else {
        return Ok(Scope::Account);
    };
    if scope.conversation_sid.is_empty() && scope.webhook_sid.is_empty() {
        return config_scope(&scope.chat_service_sid);
    }
    Ok(Scope::Conversation(
        parse(
            "scope.conversation_sid",
            &scope.conversation_sid,
            ConversationSid::parse,
        )?,
        parse("scope.webhook_sid", &scope.webhook_sid, WebhookSid::parse)?,
    ))
}

#[tonic::async_trait]
impl DeliveryQuery for QueryService {
    async fn get_message_delivery(
        &self,
        request: Request<v1::GetMessageDeliveryRequest>,
    ) -> Result<Response<v1::MessageDelivery>, Status> {
        let account = caller(&request)?;
        let r = request.get_ref();
        let sids = Sids {
            conversation: &r.conversation_sid,
            message: &r.message_sid,
            ..Sids::default()
        };
        let view = self.reads.message_delivery(&account, sids)?;
        Ok(Response::new((&view).into()))
    }

    async fn list_receipts(
        &self,
        request: Request<v1::ListReceiptsRequest>,
    ) -> Result<Response<v1::ListReceiptsResponse>, Status> {
        let account = caller(&request)?;
        let r = request.into_inner();
        let sids = Sids {
            conversation: &r.conversation_sid,
            message: &r.message_sid,
            ..Sids::default()
        };
        let page = PageRequest::grpc(r.page_size, r.page_token.clone(), RECEIPTS_PAGE_MAX);
        let listed = self.reads.receipts(&account, sids, page).await?;
        Ok(Response::new(v1::ListReceiptsResponse {
            receipts: listed.items.iter().map(Into::into).collect(),
            next_page_token: listed.next_token.unwrap_or_default(),
        }))
    }

    async fn get_receipt(
        &self,
        request: Request<v1::GetReceiptRequest>,
    ) -> Result<Response<v1::Receipt>, Status> {
        let account = caller(&request)?;
        let r = request.get_ref();
        let sids = Sids {
            conversation: &r.conversation_sid,
            message: &r.message_sid,
            receipt: &r.receipt_sid,
            ..Sids::default()
        };
        let found = self.reads.receipt(&account, sids)?;
        Ok(Response::new((&found).into()))
    }

    async fn list_conversation_messages(
        &self,
        request: Request<v1::ListConversationMessagesRequest>,
    ) -> Result<Response<v1::ListConversationMessagesResponse>, Status> {
        let account = caller(&request)?;
        let r = request.into_inner();
        let sids = Sids {
            conversation: &r.conversation_sid,
            ..Sids::default()
        };
        let page = PageRequest::grpc(r.page_size, r.page_token.clone(), MESSAGES_PAGE_MAX)
            .and_then(|page| Ok((sort_order(r.order)?, page)));
        let listed = self.reads.messages(&account, sids, page).await?;
        Ok(Response::new(v1::ListConversationMessagesResponse {
            messages: listed.items.iter().map(Into::into).collect(),
            next_page_token: listed.next_token.unwrap_or_default(),
        }))
    }

    async fn get_conversation_rollup(
        &self,
        request: Request<v1::GetConversationRollupRequest>,
    ) -> Result<Response<v1::ConversationRollup>, Status> {
        let account = caller(&request)?;
        let sids = Sids {
            conversation: &request.get_ref().conversation_sid,
            ..Sids::default()
        };
        let rollup = self.reads.conversation_rollup(&account, sids)?;
        Ok(Response::new((&rollup).into()))
    }

    async fn get_receipt_timeline(
        &self,
        request: Request<v1::GetReceiptTimelineRequest>,
    ) -> Result<Response<v1::ReceiptTimeline>, Status> {
        let account = caller(&request)?;
        let r = request.get_ref();
        let sids = Sids {
            conversation: &r.conversation_sid,
            message: &r.message_sid,
            receipt: &r.receipt_sid,
            ..Sids::default()
        };
        let timeline = self.reads.receipt_timeline(&account, sids).await?;
        Ok(Response::new(v1::ReceiptTimeline {
            receipt_sid: timeline.receipt.to_string(),
            entries: timeline.entries.iter().map(Into::into).collect(),
        }))
    }

    async fn get_webhook_config(
        &self,
        request: Request<v1::GetWebhookConfigRequest>,
    ) -> Result<Response<v1::WebhookConfig>, Status> {
        let account = caller(&request)?;
        let scope = config_scope(&request.get_ref().chat_service_sid)?;
        match self
            .webhooks
            .get(&account, &scope)
            .await
            .map_err(config_status)?
        {
            Some(config) => Ok(shown(config)),
            None => Err(Status::not_found("webhook configuration not found")),
        }
    }

    async fn update_webhook_config(
        &self,
        request: Request<v1::UpdateWebhookConfigRequest>,
    ) -> Result<Response<v1::WebhookConfig>, Status> {
        let account = caller(&request)?;
        let r = request.into_inner();
        let scope = config_scope(&r.chat_service_sid)?;
        let update = WebhookUpdate {
            method: r.method,
            filters: r.filters.map(|f| f.names),
            pre_webhook_url: r.pre_webhook_url,
            post_webhook_url: r.post_webhook_url,
            target: r.target,
            ..WebhookUpdate::default()
        };
        let config = self
            .webhooks
            .update(&account, &scope, &update)
            .await
            .map_err(config_status)?;
        Ok(shown(config))
    }

    async fn list_conversation_webhooks(
        &self,
        request: Request<v1::ListConversationWebhooksRequest>,
    ) -> Result<Response<v1::ListConversationWebhooksResponse>, Status> {
        let account = caller(&request)?;
        let conversation = parse(
            "conversation_sid",
            &request.get_ref().conversation_sid,
            ConversationSid::parse,
        )?;
        let webhooks = self
            .webhooks
            .list_conversation(&account, &conversation)
            .await
            .map_err(config_status)?;
        Ok(Response::new(v1::ListConversationWebhooksResponse {
            webhooks: webhooks
                .into_iter()
                .map(|config| shown(config).into_inner())
                .collect(),
        }))
    }

    async fn create_conversation_webhook(
        &self,
        request: Request<v1::CreateConversationWebhookRequest>,
    ) -> Result<Response<v1::WebhookConfig>, Status> {
        let account = caller(&request)?;
        let r = request.into_inner();
        let conversation = parse(
            "conversation_sid",
            &r.conversation_sid,
            ConversationSid::parse,
        )?;
        let non_empty = |value: String| (!value.is_empty()).then_some(value);
        let update = WebhookUpdate {
            method: non_empty(r.method),
            filters: Some(r.filters),
            post_webhook_url: non_empty(r.url),
            target: Some(r.target),
            triggers: Some(r.triggers),
            flow_sid: non_empty(r.flow_sid),
            ..WebhookUpdate::default()
        };
        let config = self
            .webhooks
            .create_conversation(&account, &conversation, &update)
            .await
            .map_err(config_status)?;
        Ok(shown(config))
    }

    async fn delete_conversation_webhook(
        &self,
        request: Request<v1::DeleteConversationWebhookRequest>,
    ) -> Result<Response<v1::DeleteConversationWebhookResponse>, Status> {
        let account = caller(&request)?;
        let r = request.into_inner();
        let conversation = parse(
            "conversation_sid",
            &r.conversation_sid,
            ConversationSid::parse,
        )?;
        let webhook = parse("webhook_sid", &r.webhook_sid, WebhookSid::parse)?;
        self.webhooks
            .delete_conversation(&account, &conversation, &webhook)
            .await
            .map_err(config_status)?;
        Ok(Response::new(v1::DeleteConversationWebhookResponse {}))
    }

    async fn create_signing_secret(
        &self,
        request: Request<v1::CreateSigningSecretRequest>,
    ) -> Result<Response<v1::CreatedSigningSecret>, Status> {
        let account = caller(&request)?;
        let scope = secret_scope(request.get_ref().scope.as_ref())?;
        let created = self
            .webhooks
            .create_signing_secret(&account, &scope)
            .await
            .map_err(config_status)?;
        Ok(Response::new(created.into()))
    }

    async fn list_signing_secrets(
        &self,
        request: Request<v1::ListSigningSecretsRequest>,
    ) -> Result<Response<v1::ListSigningSecretsResponse>, Status> {
        let account = caller(&request)?;
        let scope = secret_scope(request.get_ref().scope.as_ref())?;
        let signing_secrets = self
            .webhooks
            .list_signing_secrets(&account, &scope)
            .await
            .map_err(config_status)?;
        Ok(Response::new(v1::ListSigningSecretsResponse {
            signing_secrets,
        }))
    }

    async fn rotate_signing_secret(
        &self,
        request: Request<v1::RotateSigningSecretRequest>,
    ) -> Result<Response<v1::CreatedSigningSecret>, Status> {
        let account = caller(&request)?;
        let r = request.into_inner();
        let scope = secret_scope(r.scope.as_ref())?;
        let grace = r
            .grace_period_seconds
            .map_or(DEFAULT_ROTATION_GRACE, Duration::from_secs);
        let created = self
            .webhooks
            .rotate_signing_secret(&account, &scope, &r.id, grace)
            .await
            .map_err(config_status)?;
        Ok(Response::new(created.into()))
    }

    async fn revoke_signing_secret(
        &self,
        request: Request<v1::RevokeSigningSecretRequest>,
    ) -> Result<Response<v1::RevokeSigningSecretResponse>, Status> {
        let account = caller(&request)?;
        let r = request.into_inner();
        let scope = secret_scope(r.scope.as_ref())?;
        self.webhooks
            .revoke_signing_secret(&account, &scope, &r.id)
            .await
            .map_err(config_status)?;
        Ok(Response::new(v1::RevokeSigningSecretResponse {}))
    }

    type WatchUpdatesStream = WatchStream;

    async fn watch_updates(
        &self,
        request: Request<v1::WatchUpdatesRequest>,
    ) -> Result<Response<Self::WatchUpdatesStream>, Status> {
        let account = caller(&request)?;
        let sids = Sids {
            conversation: &request.get_ref().conversation_sid,
            ..Sids::default()
        };
        let scope = self.reads.watch_scope(&account, sids)?;
        let slot = self.watchers.slot(&account)?;
        Ok(Response::new(watch::stream(
            self.updates.subscribe(),
            scope,
            slot,
            self.watch_buffer,
            self.shutdown.clone(),
        )))
    }
}
