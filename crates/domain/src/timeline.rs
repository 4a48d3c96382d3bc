//! A receipt's timeline: `queued` at its registration time, then every distinct status the
//! providers reported for it with its provider time, in (phase, provider time) order.
//!
//! It is built from the projector's receipt states (their [`History`]), not from the order in
//! which reports arrived: a `sent` reported after `delivered` still shows, at its own time. The
//! union of histories is a per-status minimum and the registration time a minimum, so applying
//! states in any order, with duplicates and replays, gives the same timeline; there is no
//! version to gate on.

use crate::history::History;
use crate::ids::ReceiptSid;
use crate::receipt::ReceiptState;
use crate::status::{DeliveryStatus, StatusSource};
use crate::time::Timestamp;

/// One step of a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub status: DeliveryStatus,
    /// The provider's word; empty for the registration.
    pub raw_status: String,
    pub error_code: Option<u32>,
    /// Who reported it; `None` for the registration.
    pub source: Option<StatusSource>,
    /// The provider's time of the report, or the registration time.
    pub at: Timestamp,
}

/// The timeline of one registered receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptTimeline {
    sid: ReceiptSid,
    registered_at: Timestamp,
    history: History,
}

impl ReceiptTimeline {
    /// A timeline from its parts, as storage keeps them.
    pub fn new(sid: ReceiptSid, registered_at: Timestamp, history: History) -> Self {
        ReceiptTimeline {
            sid,
            registered_at,
            history,
        }
    }

    /// The timeline `state` shows; `None` while it has no registration (no receipt yet).
    pub fn of(state: &ReceiptState) -> Option<Self> {
        let registration = state.registration.as_ref()?;
        Some(ReceiptTimeline::new(
            registration.receipt_sid(),
            registration.registered_at,
            state.history.clone(),
        ))
    }

    /// The timeline with what `state` shows added. A state without registration, or of another
    /// receipt, adds nothing.
    pub fn apply(mut self, state: &ReceiptState) -> Self {
        let Some(registration) = &state.registration else {
            return self;
        };
        if registration.receipt_sid() != self.sid {
            return self;
        }
        self.registered_at = self.registered_at.min(registration.registered_at);
        self.history.merge(&state.history);
        self
    }

    pub fn sid(&self) -> &ReceiptSid {
        &self.sid
    }

    /// The earliest registration time seen.
    pub fn registered_at(&self) -> Timestamp {
        self.registered_at
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// The registration's `queued`, then the earliest report of every status in rank order
    /// (phase, provider time, then the fixed precedence of statuses).
    pub fn entries(&self) -> Vec<TimelineEntry> {
        let registered = TimelineEntry {
            status: DeliveryStatus::Queued,
            raw_status: String::new(),
            error_code: None,
            source: None,
            at: self.registered_at,
        };
        let reported = self.history.in_order().into_iter().map(|r| TimelineEntry {
            status: r.status,
            raw_status: r.raw_status.clone(),
            error_code: r.error_code,
            source: Some(r.source),
            at: r.provider_time,
        });
        std::iter::once(registered).chain(reported).collect()
    }
}
