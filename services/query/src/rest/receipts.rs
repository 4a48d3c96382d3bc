//! `GET …/Messages/{IM}/Receipts[/{DY}]`: a message's delivery receipts, latest status only.

use axum::Json;
use axum::extract::RawQuery;
use receipts_domain::{
    Channel, ChatServiceSid, ConversationSid, DeliveryStatus, MessageSid, Receipt, ReceiptSid,
};
use serde::Serialize;

use super::errors::ApiError;
use super::messages::conversation_path;
use super::paging::{ListLocation, ListPage, list_query};
use super::{Caller, PathSids, RestState, State, iso8601};
use crate::page_token::receipts_scope;

const PAGE_MAX: usize = 50;

/// A receipt as Twilio shows it, in its key order.
#[derive(Debug, Serialize)]
pub struct ReceiptJson {
    sid: String,
    account_sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_service_sid: Option<String>,
    conversation_sid: String,
    message_sid: String,
    /// Twilio-shaped (2 letters, 32 hex): the channel's id, or a sid derived from it.
    channel_message_sid: String,
    /// `null` while queued.
    status: Option<&'static str>,
    /// `0` when there is no error.
    error_code: u32,
    participant_sid: String,
    date_created: String,
    date_updated: String,
    url: String,
}

fn render(state: &RestState, service: Option<&ChatServiceSid>, receipt: &Receipt) -> ReceiptJson {
    let registration = &receipt.registration;
    let status = match receipt.status() {
        DeliveryStatus::Queued => None,
        status => Some(status.as_str()),
    };
    ReceiptJson {
        sid: receipt.sid.to_string(),
        account_sid: registration.account.to_string(),
        chat_service_sid: service.map(ToString::to_string),
        conversation_sid: registration.conversation.to_string(),
        message_sid: registration.message.to_string(),
        channel_message_sid: registration
            .channel_message_id
            .channel_message_sid(registration.channel == Channel::Whatsapp)
            .to_string(),
        status,
        error_code: receipt.error_code().unwrap_or(0),
        participant_sid: registration.participant.to_string(),
        date_created: iso8601(receipt.date_created()),
        date_updated: iso8601(receipt.date_updated()),
        url: state.url(&format!(
            "{}/Messages/{}/Receipts/{}",
            conversation_path(service, &registration.conversation),
            registration.message,
            receipt.sid
        )),
    }
}

fn in_service(service: Option<&ChatServiceSid>, receipt: &Receipt) -> bool {
    service.is_none_or(|service| receipt.registration.chat_service.as_ref() == Some(service))
}

pub async fn fetch(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
) -> Result<Json<ReceiptJson>, ApiError> {
    let service = sids.optional("service", "ChatServiceSid", ChatServiceSid::parse)?;
    let conversation = sids.parse("conversation", "ConversationSid", ConversationSid::parse)?;
    let message = sids.parse("message", "MessageSid", MessageSid::parse)?;
    let receipt = sids.parse("receipt", "Sid", ReceiptSid::parse)?;
    let sid = receipt.clone();
    let found = state
        .lookup(move |store| store.receipt(&account, &conversation, &message, &sid))
        .await?;
    match found {
        Some(found) if in_service(service.as_ref(), &found) => {
            Ok(Json(render(&state, service.as_ref(), &found)))
        }
        _ => Err(ApiError::not_found(format!("receipt {receipt}"))),
    }
}

pub async fn list(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
    RawQuery(raw): RawQuery,
) -> Result<Json<ListPage<ReceiptJson>>, ApiError> {
    let service = sids.optional("service", "ChatServiceSid", ChatServiceSid::parse)?;
    let conversation = sids.parse("conversation", "ConversationSid", ConversationSid::parse)?;
    let message = sids.parse("message", "MessageSid", MessageSid::parse)?;
    let query = list_query(raw.as_deref(), PAGE_MAX, false)?;
    let scope = receipts_scope(&account, &conversation, &message);
    let after = match &query.token {
        None => None,
        Some(token) => Some(
            state
                .tokens
                .open(&scope, token)
                .ok()
                .and_then(|cursor| ReceiptSid::parse(&cursor).ok())
                .ok_or_else(ApiError::invalid_page_token)?,
        ),
    };
    let (size, walk) = (query.page_size, query.token.is_none().then_some(query.page));
    let (a, c, m) = (account.clone(), conversation.clone(), message.clone());
    let (view, page) = state
        .read(move |store| {
            let view = store.message(&a, &c, &m)?;
            let mut page = store.receipts_page(&a, &c, &m, size, after.as_ref())?;
            // A `Page` without a token: walk to it.
            for _ in 0..walk.unwrap_or(0) {
                match page.next.take() {
                    Some(next) => page = store.receipts_page(&a, &c, &m, size, Some(&next))?,
                    None => {
                        page.items.clear();
                        break;
                    }
                }
            }
            Ok((view, page))
        })
        .await?;
    if !view.is_some_and(|view| super::messages::in_service(service.as_ref(), &view)) {
        return Err(ApiError::not_found(format!(
            "message {message} of conversation {conversation}"
        )));
    }
    let next = page
        .next
        .map(|sid| state.tokens.issue(&scope, sid.as_str()));
    let location = ListLocation {
        url: state.url(&format!(
            "{}/Messages/{message}/Receipts",
            conversation_path(service.as_ref(), &conversation)
        )),
        filters: Vec::new(),
    };
    Ok(Json(ListPage {
        meta: location.meta("delivery_receipts", &query, next.as_deref()),
        items: page
            .items
            .iter()
            .map(|receipt| render(&state, service.as_ref(), receipt))
            .collect(),
    }))
}
