//! `GET …/Messages/{IM}/Receipts[/{DY}]`: a message's delivery receipts, latest status only; and
//! `GET …/Receipts/{DY}/Timeline`, an extension Twilio does not have: every status a receipt went
//! through, oldest first.

use axum::Json;
use axum::extract::RawQuery;
use receipts_domain::{Channel, DeliveryStatus, Receipt};
use receipts_store::TimelineEntry;
use serde::Serialize;

use super::errors::ApiError;
use super::messages::conversation_path;
use super::paging::{ListLocation, ListPage, ListQuery, list_query};
use super::{Caller, PathSids, RestState, State, iso8601};
use crate::reads::{RECEIPTS_PAGE_MAX, ReceiptTimeline};

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

/// A receipt's timeline, in the facade's style.
#[derive(Debug, Serialize)]
pub struct TimelineJson {
    account_sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_service_sid: Option<String>,
    conversation_sid: String,
    message_sid: String,
    receipt_sid: String,
    entries: Vec<TimelineEntryJson>,
    url: String,
}

/// One status of a timeline; `null` stands for what was not reported yet.
#[derive(Debug, Serialize)]
pub struct TimelineEntryJson {
    /// `null` while queued, as a receipt's.
    status: Option<&'static str>,
    /// The provider's word for the status.
    raw_status: Option<String>,
    /// `0` when there is no error, as a receipt's.
    error_code: u32,
    /// Who reported it: `twilio`, `whatsapp`, `smpp` or `canonical`.
    source: Option<&'static str>,
    /// When the provider says it happened; the registration time for the first, queued entry.
    date: String,
}

/// A receipt's status as the facade shows it: `null` while queued (Twilio's enum has no
/// `queued`).
fn shown_status(status: DeliveryStatus) -> Option<&'static str> {
    match status {
        DeliveryStatus::Queued => None,
        status => Some(status.as_str()),
    }
}

fn receipt_path(service: Option<&str>, receipt: &Receipt) -> String {
    let registration = &receipt.registration;
    format!(
        "{}/Messages/{}/Receipts/{}",
        conversation_path(service, registration.conversation.as_str()),
        registration.message,
        receipt.sid
    )
}

fn render(state: &RestState, service: Option<&str>, receipt: &Receipt) -> ReceiptJson {
    let registration = &receipt.registration;
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
        status: shown_status(receipt.status()),
        error_code: receipt.error_code().unwrap_or(0),
        participant_sid: registration.participant.to_string(),
        date_created: iso8601(receipt.date_created()),
        date_updated: iso8601(receipt.date_updated()),
        url: state.url(&receipt_path(service, receipt)),
    }
}

fn render_entry(entry: &TimelineEntry) -> TimelineEntryJson {
    TimelineEntryJson {
        status: shown_status(entry.status),
        raw_status: Some(entry.raw_status.clone()).filter(|raw| !raw.is_empty()),
        error_code: entry.error_code.unwrap_or(0),
        source: entry.source.map(|source| source.as_str()),
        date: iso8601(entry.at),
    }
}

fn render_timeline(
    state: &RestState,
    service: Option<&str>,
    timeline: &ReceiptTimeline,
) -> TimelineJson {
    TimelineJson {
        account_sid: timeline.account.to_string(),
        chat_service_sid: service.map(ToString::to_string),
        conversation_sid: timeline.conversation.to_string(),
        message_sid: timeline.message.to_string(),
        receipt_sid: timeline.receipt.to_string(),
        entries: timeline.entries.iter().map(render_entry).collect(),
        url: state.url(&format!(
            "{}/Messages/{}/Receipts/{}/Timeline",
            conversation_path(service, timeline.conversation.as_str()),
            timeline.message,
            timeline.receipt
        )),
    }
}

pub async fn fetch(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
) -> Result<Json<ReceiptJson>, ApiError> {
    let found = state.reads.receipt(&account, sids.reads())?;
    Ok(Json(render(&state, sids.family(), &found)))
}

pub async fn timeline(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
) -> Result<Json<TimelineJson>, ApiError> {
    let timeline = state.reads.receipt_timeline(&account, sids.reads()).await?;
    Ok(Json(render_timeline(&state, sids.family(), &timeline)))
}

pub async fn list(
    state: State,
    Caller(account): Caller,
    sids: PathSids,
    RawQuery(raw): RawQuery,
) -> Result<Json<ListPage<ReceiptJson>>, ApiError> {
    // A malformed query is reported by the read, once the path's sids are known to be good.
    let query = list_query(raw.as_deref(), RECEIPTS_PAGE_MAX, false);
    let page = query
        .as_ref()
        .map(ListQuery::page_request)
        .map_err(Clone::clone);
    let listed = state.reads.receipts(&account, sids.reads(), page).await?;
    let query = query?;
    let location = ListLocation {
        url: state.url(&format!(
            "{}/Messages/{}/Receipts",
            conversation_path(sids.family(), sids.raw("conversation")),
            sids.raw("message")
        )),
        filters: Vec::new(),
    };
    Ok(Json(ListPage {
        meta: location.meta("delivery_receipts", &query, listed.next_token.as_deref()),
        items: listed
            .items
            .iter()
            .map(|receipt| render(&state, sids.family(), receipt))
            .collect(),
    }))
}
