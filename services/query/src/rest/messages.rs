//! `GET …/Conversations/{CH}/Messages[/{IM}]`: a conversation's messages with their `delivery`.

use axum::Json;
use axum::extract::RawQuery;
use receipts_domain::{ChatServiceSid, ConversationSid, MessageSid};
use receipts_store::{MessageView, SortOrder};
use serde::Serialize;

use super::errors::ApiError;
use super::paging::{ListLocation, ListPage, list_query};
use super::{Caller, PathSids, State, iso8601};
use crate::page_token::messages_scope;

const PAGE_MAX: usize = 100;

/// A message as Twilio shows it, in its key order. Content is the messaging platform's and is
/// always `null` here; see the module docs of [`super`].
#[derive(Debug, Serialize)]
pub struct MessageJson {
    sid: String,
    account_sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_service_sid: Option<String>,
    conversation_sid: String,
    body: Option<String>,
    media: Option<Vec<serde_json::Value>>,
    author: Option<String>,
    participant_sid: Option<String>,
    attributes: Option<String>,
    date_created: String,
    date_updated: String,
    index: u64,
    delivery: DeliveryJson,
    content_sid: Option<String>,
    url: String,
    links: MessageLinks,
}

/// The `delivery` object: cumulative buckets as `none`/`some`/`all` of `total`.
#[derive(Debug, Serialize)]
pub struct DeliveryJson {
    total: u64,
    sent: &'static str,
    delivered: &'static str,
    read: &'static str,
    failed: &'static str,
    undelivered: &'static str,
}

#[derive(Debug, Serialize)]
pub struct MessageLinks {
    delivery_receipts: String,
    channel_metadata: String,
}

/// The path of a conversation, in the family (default or service) the caller used.
pub(super) fn conversation_path(
    service: Option<&ChatServiceSid>,
    conversation: &ConversationSid,
) -> String {
    match service {
        Some(service) => format!("/v1/Services/{service}/Conversations/{conversation}"),
        None => format!("/v1/Conversations/{conversation}"),
    }
}

fn render(
    state: &super::RestState,
    service: Option<&ChatServiceSid>,
    view: &MessageView,
) -> MessageJson {
    let url = state.url(&format!(
        "{}/Messages/{}",
        conversation_path(service, &view.conversation),
        view.message
    ));
    let summary = &view.summary;
    MessageJson {
        sid: view.message.to_string(),
        account_sid: view.account.to_string(),
        chat_service_sid: service.map(ToString::to_string),
        conversation_sid: view.conversation.to_string(),
        body: None,
        media: None,
        author: None,
        participant_sid: None,
        attributes: None,
        date_created: iso8601(view.date_created),
        date_updated: iso8601(view.date_updated),
        index: view.index,
        delivery: DeliveryJson {
            total: summary.total,
            sent: summary.sent_amount().as_str(),
            delivered: summary.delivered_amount().as_str(),
            read: summary.read_amount().as_str(),
            failed: summary.failed_amount().as_str(),
            undelivered: summary.undelivered_amount().as_str(),
        },
        content_sid: None,
        links: MessageLinks {
            delivery_receipts: format!("{url}/Receipts"),
            channel_metadata: format!("{url}/ChannelMetadata"),
        },
        url,
    }
}

/// Whether a message read through the service family belongs to that service.
pub(super) fn in_service(service: Option<&ChatServiceSid>, message: &MessageView) -> bool {
    service.is_none_or(|service| message.chat_service.as_ref() == Some(service))
}

pub async fn fetch(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
) -> Result<Json<MessageJson>, ApiError> {
    let service = sids.optional("service", "ChatServiceSid", ChatServiceSid::parse)?;
    let conversation = sids.parse("conversation", "ConversationSid", ConversationSid::parse)?;
    let message = sids.parse("message", "Sid", MessageSid::parse)?;
    let (a, c, m) = (account.clone(), conversation.clone(), message.clone());
    let view = state.lookup(move |store| store.message(&a, &c, &m)).await?;
    match view {
        Some(view) if in_service(service.as_ref(), &view) => {
            Ok(Json(render(&state, service.as_ref(), &view)))
        }
        _ => Err(ApiError::not_found(format!(
            "message {message} of conversation {conversation}"
        ))),
    }
}

pub async fn list(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
    RawQuery(raw): RawQuery,
) -> Result<Json<ListPage<MessageJson>>, ApiError> {
    let service = sids.optional("service", "ChatServiceSid", ChatServiceSid::parse)?;
    let conversation = sids.parse("conversation", "ConversationSid", ConversationSid::parse)?;
    let query = list_query(raw.as_deref(), PAGE_MAX, true)?;
    let order = match query.order {
        Some("desc") => SortOrder::Descending,
        _ => SortOrder::Ascending,
    };
    let scope = messages_scope(&account, &conversation, order);
    let after = match &query.token {
        None => None,
        Some(token) => Some(
            state
                .tokens
                .open(&scope, token)
                .ok()
                .and_then(|cursor| cursor.parse::<u64>().ok())
                .ok_or_else(ApiError::invalid_page_token)?,
        ),
    };
    let (size, walk) = (query.page_size, query.token.is_none().then_some(query.page));
    let (a, c) = (account.clone(), conversation.clone());
    let (first, page) = state
        .read(move |store| {
            let first = store.messages_page(&a, &c, SortOrder::Ascending, 1, None)?;
            let mut page = store.messages_page(&a, &c, order, size, after)?;
            // A `Page` without a token: walk to it.
            for _ in 0..walk.unwrap_or(0) {
                match page.next {
                    Some(next) => page = store.messages_page(&a, &c, order, size, Some(next))?,
                    None => {
                        page.items.clear();
                        break;
                    }
                }
            }
            Ok((first.items.into_iter().next(), page))
        })
        .await?;
    // A conversation exists here once one of its messages has a receipt.
    if !first.is_some_and(|first| in_service(service.as_ref(), &first)) {
        return Err(ApiError::not_found(format!("conversation {conversation}")));
    }
    let next = page
        .next
        .map(|index| state.tokens.issue(&scope, &index.to_string()));
    let location = ListLocation {
        url: state.url(&format!(
            "{}/Messages",
            conversation_path(service.as_ref(), &conversation)
        )),
        filters: query
            .order
            .map(|order| ("Order", order.to_owned()))
            .into_iter()
            .collect(),
    };
    Ok(Json(ListPage {
        meta: location.meta("messages", &query, next.as_deref()),
        items: page
            .items
            .iter()
            .map(|view| render(&state, service.as_ref(), view))
            .collect(),
    }))
}
