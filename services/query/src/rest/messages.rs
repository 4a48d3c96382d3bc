//! `GET …/Conversations/{CH}/Messages[/{IM}]`: a conversation's messages with their `delivery`.

use axum::Json;
use axum::extract::RawQuery;
use receipts_store::{MessageView, SortOrder};
use serde::Serialize;

use super::errors::ApiError;
use super::paging::{ListLocation, ListPage, list_query};
use super::{Caller, PathSids, State, iso8601};
use crate::reads::MESSAGES_PAGE_MAX;

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
pub(super) fn conversation_path<S: std::fmt::Display + ?Sized>(
    service: Option<&S>,
    conversation: &(impl std::fmt::Display + ?Sized),
) -> String {
    match service {
        Some(service) => format!("/v1/Services/{service}/Conversations/{conversation}"),
        None => format!("/v1/Conversations/{conversation}"),
    }
}

fn render(state: &super::RestState, service: Option<&str>, view: &MessageView) -> MessageJson {
    let url = state.url(&format!(
        "{}/Messages/{}",
        conversation_path(service, view.conversation.as_str()),
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

pub async fn fetch(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
) -> Result<Json<MessageJson>, ApiError> {
    let view = state.reads.message_delivery(&account, sids.reads())?;
    Ok(Json(render(&state, sids.family(), &view)))
}

pub async fn list(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
    RawQuery(raw): RawQuery,
) -> Result<Json<ListPage<MessageJson>>, ApiError> {
    // A malformed query is reported by the read, once the path's sids are known to be good.
    let query = list_query(raw.as_deref(), MESSAGES_PAGE_MAX, true);
    let page = query.clone().map(|query| {
        let order = match query.order {
            Some("desc") => SortOrder::Descending,
            _ => SortOrder::Ascending,
        };
        (order, query.page_request())
    });
    let listed = state.reads.messages(&account, sids.reads(), page).await?;
    let query = query?;
    let location = ListLocation {
        url: state.url(&format!(
            "{}/Messages",
            conversation_path(sids.family(), sids.raw("conversation"))
        )),
        filters: query
            .order
            .map(|order| ("Order", order.to_owned()))
            .into_iter()
            .collect(),
    };
    Ok(Json(ListPage {
        meta: location.meta("messages", &query, listed.next_token.as_deref()),
        items: listed
            .items
            .iter()
            .map(|view| render(&state, sids.family(), view))
            .collect(),
    }))
}
