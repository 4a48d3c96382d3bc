//! The `receipts.v1.DeliveryQuery` gRPC service over the read model.
//!
//! Every call is authenticated by the interceptor, which puts the caller's [`AccountSid`] into the
//! request extensions; every read is keyed by that account, so another account's sids are simply
//! not found. Bad input is `InvalidArgument` naming the field, unknown sids `NotFound` naming the
//! sid; only a failing store is `Internal`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use receipts_domain::{
    AccountSid, ChatServiceSid, ConversationSid, IdError, MessageSid, ReceiptChange, ReceiptSid,
    WebhookSid,
};
use receipts_proto::v1;
use receipts_proto::v1::delivery_query_server::DeliveryQuery;
use receipts_store::{QueryStore, SortOrder, StoreError};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::error;

use crate::auth::Accounts;
use crate::page_token::{PageTokens, messages_scope, receipts_scope};
use crate::webhook_configs::{
    ConfigCallError, DEFAULT_ROTATION_GRACE, Scope, WebhookConfigs, WebhookUpdate,
};

const RECEIPTS_PAGE_MAX: u32 = 50;
const MESSAGES_PAGE_MAX: u32 = 100;
const DEFAULT_PAGE: u32 = 50;

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
    store: Arc<dyn QueryStore>,
    tokens: PageTokens,
    webhooks: Arc<WebhookConfigs>,
    updates: broadcast::Sender<Arc<ReceiptChange>>,
    watch_buffer: usize,
    /// Open `WatchUpdates` streams per account, and the most one account may hold.
    watchers: Arc<Mutex<HashMap<AccountSid, usize>>>,
    max_watchers: usize,
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
        store: Arc<dyn QueryStore>,
        tokens: PageTokens,
        webhooks: Arc<WebhookConfigs>,
        updates: broadcast::Sender<Arc<ReceiptChange>>,
        watch_buffer: usize,
        max_watchers: usize,
        shutdown: CancellationToken,
    ) -> Self {
        QueryService {
            store,
            tokens,
            webhooks,
            updates,
            watch_buffer,
            watchers: Arc::default(),
            max_watchers,
            shutdown,
        }
    }

    /// A slot for one more watch stream of `account`, or `RESOURCE_EXHAUSTED` when it holds
    /// all it may.
    fn watch_slot(&self, account: &AccountSid) -> Result<WatchSlot, Status> {
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        let open = watchers.entry(account.clone()).or_default();
        if *open >= self.max_watchers {
            return Err(Status::resource_exhausted(format!(
                "the account has {open} WatchUpdates streams open, the most it may; close one first"
            )));
        }
        *open += 1;
        Ok(WatchSlot {
            watchers: self.watchers.clone(),
            account: account.clone(),
        })
    }

    /// Runs a point read (a key or two) on the calling task: sled answers it from its page
    /// cache in microseconds, less than the hop to the blocking pool and back costs. Scans go
    /// through [`Self::read`].
    async fn lookup<T>(
        &self,
        read: impl FnOnce(&dyn QueryStore) -> Result<T, StoreError>,
    ) -> Result<T, Status> {
        read(&*self.store).map_err(|e| internal(&e))
    }

    /// Runs a read on the blocking pool: sled scans must not stall the executor.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn QueryStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || read(&*store))
            .await
            .map_err(|e| internal(&e))?
            .map_err(|e| internal(&e))
    }
}

/// One open watch stream, counted against its account until it ends.
struct WatchSlot {
    watchers: Arc<Mutex<HashMap<AccountSid, usize>>>,
    account: AccountSid,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = watchers.get_mut(&self.account) {
            *open -= 1;
            if *open == 0 {
                watchers.remove(&self.account);
            }
        }
    }
}

fn internal(error: &dyn std::fmt::Display) -> Status {
    error!(%error, "query failed");
    Status::internal("the read model could not be read")
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

fn page_size(requested: u32, max: u32) -> Result<usize, Status> {
    match requested {
        0 => Ok(DEFAULT_PAGE.min(max) as usize),
        n if n <= max => Ok(n as usize),
        n => Err(Status::invalid_argument(format!(
            "page_size must be between 1 and {max}, got {n}"
        ))),
    }
}

fn not_found(what: impl std::fmt::Display) -> Status {
    Status::not_found(format!("{what} not found"))
}

fn config_status(error: ConfigCallError) -> Status {
    match error {
        ConfigCallError::Invalid { .. } => Status::invalid_argument(error.to_string()),
        ConfigCallError::NotFound(_) => Status::not_found(error.to_string()),
        ConfigCallError::TooMany
        | ConfigCallError::TooManySecrets
        | ConfigCallError::NoSecretsKey => Status::failed_precondition(error.to_string()),
        ConfigCallError::Unavailable(_) => Status::unavailable(error.to_string()),
    }
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

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::ReceiptUpdated, Status>> + Send>>;

#[tonic::async_trait]
impl DeliveryQuery for QueryService {
    async fn get_message_delivery(
        &self,
        request: Request<v1::GetMessageDeliveryRequest>,
    ) -> Result<Response<v1::MessageDelivery>, Status> {
        let account = caller(&request)?;
        let r = request.into_inner();
        let conversation = parse(
            "conversation_sid",
            &r.conversation_sid,
            ConversationSid::parse,
        )?;
        let message = parse("message_sid", &r.message_sid, MessageSid::parse)?;
        let (c, m) = (conversation.clone(), message.clone());
        let view = self
            .lookup(move |store| store.message(&account, &c, &m))
            .await?;
        let view = view.ok_or_else(|| {
            not_found(format!("message {message} in conversation {conversation}"))
        })?;
        Ok(Response::new((&view).into()))
    }

    async fn list_receipts(
        &self,
        request: Request<v1::ListReceiptsRequest>,
    ) -> Result<Response<v1::ListReceiptsResponse>, Status> {
        let account = caller(&request)?;
        let r = request.into_inner();
        let conversation = parse(
            "conversation_sid",
            &r.conversation_sid,
            ConversationSid::parse,
        )?;
        let message = parse("message_sid", &r.message_sid, MessageSid::parse)?;
        let size = page_size(r.page_size, RECEIPTS_PAGE_MAX)?;
        let scope = receipts_scope(&account, &conversation, &message);
        let after = if r.page_token.is_empty() {
            None
        } else {
            let cursor = self
                .tokens
                .open(&scope, &r.page_token)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            Some(
                ReceiptSid::parse(&cursor)
                    .map_err(|_| Status::invalid_argument("page_token is not valid"))?,
            )
        };
        let (c, m) = (conversation.clone(), message.clone());
        let (exists, page) = self
            .read(move |store| {
                let exists = store.message(&account, &c, &m)?.is_some();
                let page = store.receipts_page(&account, &c, &m, size, after.as_ref())?;
                Ok((exists, page))
            })
            .await?;
        if !exists {
            return Err(not_found(format!(
                "message {message} in conversation {conversation}"
            )));
        }
        Ok(Response::new(v1::ListReceiptsResponse {
            receipts: page.items.iter().map(Into::into).collect(),
            next_page_token: page
                .next
                .map(|sid| self.tokens.issue(&scope, sid.as_str()))
                .unwrap_or_default(),
        }))
    }

    async fn get_receipt(
        &self,
        request: Request<v1::GetReceiptRequest>,
    ) -> Result<Response<v1::Receipt>, Status> {
        let account = caller(&request)?;
        let r = request.into_inner();
        let conversation = parse(
            "conversation_sid",
            &r.conversation_sid,
            ConversationSid::parse,
        )?;
        let message = parse("message_sid", &r.message_sid, MessageSid::parse)?;
        let receipt = parse("receipt_sid", &r.receipt_sid, ReceiptSid::parse)?;
        let sid = receipt.clone();
        let found = self
            .lookup(move |store| store.receipt(&account, &conversation, &message, &sid))
            .await?;
        let found = found.ok_or_else(|| not_found(format!("receipt {receipt}")))?;
        Ok(Response::new((&found).into()))
    }

    async fn list_conversation_messages(
        &self,
        request: Request<v1::ListConversationMessagesRequest>,
    ) -> Result<Response<v1::ListConversationMessagesResponse>, Status> {
        let account = caller(&request)?;
        let r = request.into_inner();
        let conversation = parse(
            "conversation_sid",
            &r.conversation_sid,
            ConversationSid::parse,
        )?;
        let size = page_size(r.page_size, MESSAGES_PAGE_MAX)?;
        let order = match v1::Order::try_from(r.order) {
            Ok(v1::Order::Unspecified | v1::Order::Asc) => SortOrder::Ascending,
            Ok(v1::Order::Desc) => SortOrder::Descending,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "order: unknown value {}",
                    r.order
                )));
            }
        };
        let scope = messages_scope(&account, &conversation, order);
        let after = if r.page_token.is_empty() {
            None
        } else {
            let cursor = self
                .tokens
                .open(&scope, &r.page_token)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            Some(
                cursor
                    .parse::<u64>()
                    .map_err(|_| Status::invalid_argument("page_token is not valid"))?,
            )
        };
        let c = conversation.clone();
        let (exists, page) = self
            .read(move |store| {
                let exists = store.rollup(&account, &c)?.is_some();
                Ok((
                    exists,
                    store.messages_page(&account, &c, order, size, after)?,
                ))
            })
            .await?;
        if !exists {
            return Err(not_found(format!("conversation {conversation}")));
        }
        Ok(Response::new(v1::ListConversationMessagesResponse {
            messages: page.items.iter().map(Into::into).collect(),
            next_page_token: page
                .next
                .map(|index| self.tokens.issue(&scope, &index.to_string()))
                .unwrap_or_default(),
        }))
    }

    async fn get_conversation_rollup(
        &self,
        request: Request<v1::GetConversationRollupRequest>,
    ) -> Result<Response<v1::ConversationRollup>, Status> {
        let account = caller(&request)?;
        let r = request.into_inner();
        let conversation = parse(
            "conversation_sid",
            &r.conversation_sid,
            ConversationSid::parse,
        )?;
        let c = conversation.clone();
        let rollup = self.lookup(move |store| store.rollup(&account, &c)).await?;
        let rollup = rollup.ok_or_else(|| not_found(format!("conversation {conversation}")))?;
        Ok(Response::new((&rollup).into()))
    }

    async fn get_receipt_timeline(
        &self,
        request: Request<v1::GetReceiptTimelineRequest>,
    ) -> Result<Response<v1::ReceiptTimeline>, Status> {
        let account = caller(&request)?;
        let r = request.into_inner();
        let conversation = parse(
            "conversation_sid",
            &r.conversation_sid,
            ConversationSid::parse,
        )?;
        let message = parse("message_sid", &r.message_sid, MessageSid::parse)?;
        let receipt = parse("receipt_sid", &r.receipt_sid, ReceiptSid::parse)?;
        let sid = receipt.clone();
        let entries = self
            .read(move |store| store.timeline(&account, &conversation, &message, &sid))
            .await?;
        let entries = entries.ok_or_else(|| not_found(format!("receipt {receipt}")))?;
        Ok(Response::new(v1::ReceiptTimeline {
            receipt_sid: receipt.to_string(),
            entries: entries.iter().map(Into::into).collect(),
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
            None => Err(not_found("webhook configuration")),
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
        let r = request.into_inner();
        let conversation = if r.conversation_sid.is_empty() {
            None
        } else {
            Some(parse(
                "conversation_sid",
                &r.conversation_sid,
                ConversationSid::parse,
            )?)
        };
        let slot = self.watch_slot(&account)?;
        let mut updates = self.updates.subscribe();
        let (sender, receiver) = mpsc::channel(self.watch_buffer.max(1));
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                let received = tokio::select! {
                    received = updates.recv() => received,
                    // The client went away: the slot is freed now, not at the next update.
                    () = sender.closed() => return,
                    _ = shutdown.cancelled() => {
                        let _ = sender.send(Err(Status::unavailable("the server is shutting down"))).await;
                        return;
                    }
                };
                let change = match received {
                    Ok(change) => change,
                    Err(broadcast::error::RecvError::Closed) => return,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Buffering for a slow client without bound would let one client take the
                        // server's memory: it is told, and can reconnect and re-read the state.
                        let status = Status::resource_exhausted(format!(
                            "the client fell {missed} updates behind; reconnect and re-read the state"
                        ));
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                };
                let registration = &change.receipt.registration;
                if registration.account != account
                    || conversation
                        .as_ref()
                        .is_some_and(|c| *c != registration.conversation)
                {
                    continue;
                }
                if sender
                    .send(Ok(v1::ReceiptUpdated::from(&*change)))
                    .await
                    .is_err()
                {
                    return; // the client went away
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}
