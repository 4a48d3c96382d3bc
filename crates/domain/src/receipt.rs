//! Registrations, status reports, and the merge that turns them into a receipt.
//!
//! State per channel message: the registration (once the messaging platform announced it), the
//! greatest status report seen so far under [`StatusReport::rank`], and the [`History`] of the
//! earliest report of every status. Keeping only the greatest report is enough for the current
//! status, because it is defined as the maximum of the set; the history is the per-status
//! minimum. Both are order-independent, duplicate-proof and replay-proof.

use std::fmt;
use std::str::FromStr;

use crate::history::History;
use crate::ids::{
    AccountSid, ChannelMessageId, ChatServiceSid, ConversationSid, MessageSid, ParticipantSid,
    ReceiptSid,
};
use crate::status::{DeliveryStatus, Phase, StatusSource};
use crate::time::Timestamp;

/// A non-chat channel a conversation message is delivered over. Chat participants have no
/// receipts, so there is no chat channel here: a registration for one cannot be expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Sms,
    Whatsapp,
    Messenger,
    Rcs,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Sms,
        Channel::Whatsapp,
        Channel::Messenger,
        Channel::Rcs,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::Messenger => "messenger",
            Channel::Rcs => "rcs",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A channel name this service does not deliver receipts for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("chat participants have no delivery receipts")]
    Chat,
    #[error("unknown channel {0:?}")]
    Unknown(String),
}

impl FromStr for Channel {
    type Err = ChannelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sms" | "mms" => Ok(Channel::Sms),
            "whatsapp" => Ok(Channel::Whatsapp),
            "messenger" => Ok(Channel::Messenger),
            "rcs" => Ok(Channel::Rcs),
            "chat" => Err(ChannelError::Chat),
            _ => Err(ChannelError::Unknown(s.to_owned())),
        }
    }
}

/// The messaging platform handed a conversation message to a non-chat channel for one
/// participant: from now on there is a receipt to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub account: AccountSid,
    pub chat_service: Option<ChatServiceSid>,
    pub conversation: ConversationSid,
    pub message: MessageSid,
    pub message_index: u64,
    pub participant: ParticipantSid,
    pub channel: Channel,
    pub channel_message_id: ChannelMessageId,
    /// How many non-chat recipients the message has in all, so a summary is right before every
    /// registration has arrived.
    pub expected_receipts: u32,
    pub registered_at: Timestamp,
}

impl Registration {
    /// Everything that identifies the receipt; two registrations that differ here are a conflict.
    fn identity(&self) -> impl PartialEq + '_ {
        (
            &self.account,
            &self.chat_service,
            &self.conversation,
            &self.message,
            self.message_index,
            &self.participant,
            self.channel,
            &self.channel_message_id,
        )
    }

    pub fn receipt_sid(&self) -> ReceiptSid {
        ReceiptSid::for_channel_message(&self.account, &self.channel_message_id)
    }
}

/// A second registration of the same channel message that names another message, participant,
/// conversation or account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("channel message {channel_message_id} is already registered for another receipt")]
pub struct RegistrationConflict {
    pub channel_message_id: ChannelMessageId,
}

/// One status a carrier or WhatsApp reported for a channel message of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The account the report was authenticated for: it only ever touches that account's
    /// receipt of the channel message.
    pub account: AccountSid,
    pub channel_message_id: ChannelMessageId,
    pub status: DeliveryStatus,
    /// The provider's own word for it, kept for display and audits.
    pub raw_status: String,
    /// The provider's error code (Twilio's 3xxxx / 63xxx), for failed and undelivered reports.
    pub error_code: Option<u32>,
    pub provider_time: Timestamp,
    pub source: StatusSource,
}

/// The sort key of a report. The current status is the report with the greatest key; every field
/// takes part so the order is total and the winner never depends on arrival order.
pub type ReportRank<'a> = (Phase, Timestamp, u8, Option<u32>, StatusSource, &'a str);

impl StatusReport {
    /// (phase, provider timestamp, fixed precedence), then the remaining fields as tie-breakers.
    pub fn rank(&self) -> ReportRank<'_> {
        (
            self.status.phase(),
            self.provider_time,
            self.status.precedence(),
            self.error_code,
            self.source,
            &self.raw_status,
        )
    }
}

/// A receipt as published and queried: the registration, its current report, and the number of
/// changes it has gone through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub sid: ReceiptSid,
    pub registration: Registration,
    pub report: Option<StatusReport>,
    /// Grows by one with every change of this receipt; consumers ignore snapshots whose version
    /// is not newer than the one they hold.
    pub version: u64,
}

impl Receipt {
    /// `Queued` until a carrier or WhatsApp reported something.
    pub fn status(&self) -> DeliveryStatus {
        self.report
            .as_ref()
            .map_or(DeliveryStatus::Queued, |r| r.status)
    }

    pub fn error_code(&self) -> Option<u32> {
        self.report.as_ref().and_then(|r| r.error_code)
    }

    pub fn date_created(&self) -> Timestamp {
        self.registration.registered_at
    }

    /// When the current status was reported; the creation time while there is none.
    pub fn date_updated(&self) -> Timestamp {
        self.report
            .as_ref()
            .map_or(self.registration.registered_at, |r| {
                r.provider_time.max(self.registration.registered_at)
            })
    }
}

/// One change of a receipt: what to publish on `receipt-updates`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptChange {
    pub receipt: Receipt,
    /// The status before this change; `None` when the change created the receipt.
    pub previous_status: Option<DeliveryStatus>,
    /// The error code before this change.
    pub previous_error_code: Option<u32>,
}

impl ReceiptChange {
    /// Whether a webhook subscriber is told about this change: its status or error code moved
    /// (a later provider time alone, or more expected receipts, is no news).
    pub fn is_news(&self) -> bool {
        self.previous_status != Some(self.receipt.status())
            || self.previous_error_code != self.receipt.error_code()
    }
}

/// What a status report did to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// It became the current report of a registered receipt.
    Changed(ReceiptChange),
    /// It is the greatest report so far, but no registration has arrived: it waits.
    Parked,
    /// A duplicate, or not greater than the current report: the current report stays, nothing is
    /// emitted. The history may still have grown (see [`MergedReport::history_grew`]).
    Unchanged,
}

/// What a status report did to the current report, and whether it added to the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedReport {
    pub outcome: ReportOutcome,
    /// The report is the first, or the earliest, of its status: the state changed even when the
    /// outcome is [`ReportOutcome::Unchanged`], and must be stored, though nothing is emitted.
    pub history_grew: bool,
}

impl MergedReport {
    /// Whether the state changed at all, and so must be stored and changelogged.
    pub fn changed_state(&self) -> bool {
        self.history_grew || !matches!(self.outcome, ReportOutcome::Unchanged)
    }
}

/// What a registration did to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// The receipt was created, or its registration grew (more expected receipts, an earlier
    /// creation time). A parked report is applied in the same change.
    Changed(ReceiptChange),
    /// A duplicate registration.
    Unchanged,
}

/// All the projector keeps for one channel message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiptState {
    pub registration: Option<Registration>,
    pub best: Option<StatusReport>,
    /// The version of the current receipt: it moves with `registration` and `best` only, never
    /// with the history alone.
    pub version: u64,
    /// The earliest report of every status seen, parked ones included.
    pub history: History,
}

impl ReceiptState {
    /// The receipt, once registered.
    pub fn receipt(&self) -> Option<Receipt> {
        self.registration.as_ref().map(|registration| Receipt {
            sid: registration.receipt_sid(),
            registration: registration.clone(),
            report: self.best.clone(),
            version: self.version,
        })
    }

    /// A report with no registration yet.
    pub fn parked_report(&self) -> Option<&StatusReport> {
        match self.registration {
            None => self.best.as_ref(),
            Some(_) => None,
        }
    }

    fn current_status(&self) -> Option<DeliveryStatus> {
        self.registration.as_ref().map(|_| {
            self.best
                .as_ref()
                .map_or(DeliveryStatus::Queued, |r| r.status)
        })
    }

    fn change(
        &mut self,
        previous_status: Option<DeliveryStatus>,
        previous_error_code: Option<u32>,
    ) -> ReceiptChange {
        self.version += 1;
        ReceiptChange {
            receipt: self
                .receipt()
                .expect("a change is only made to a registered receipt"),
            previous_status,
            previous_error_code,
        }
    }

    fn current_error_code(&self) -> Option<u32> {
        self.registration.as_ref()?;
        self.best.as_ref().and_then(|r| r.error_code)
    }

    /// Merges `report` into the current report; the history takes it in as well (see
    /// [`ReceiptState::merge_report`] to learn whether it did).
    pub fn apply_report(&mut self, report: StatusReport) -> ReportOutcome {
        self.merge_report(report).outcome
    }

    /// Merges `report` into the history and the current report. A report that only adds to the
    /// history (a `sent` arriving after `delivered`) changes the state but not its version, and
    /// emits nothing.
    pub fn merge_report(&mut self, report: StatusReport) -> MergedReport {
        let history_grew = self.history.record(&report);
        MergedReport {
            outcome: self.merge_current(report),
            history_grew,
        }
    }

    fn merge_current(&mut self, report: StatusReport) -> ReportOutcome {
        if self
            .best
            .as_ref()
            .is_some_and(|best| report.rank() <= best.rank())
        {
            return ReportOutcome::Unchanged;
        }
        let (previous_status, previous_error_code) =
            (self.current_status(), self.current_error_code());
        self.best = Some(report);
        if self.registration.is_none() {
            return ReportOutcome::Parked;
        }
        ReportOutcome::Changed(self.change(previous_status, previous_error_code))
    }

    pub fn register(
        &mut self,
        registration: Registration,
    ) -> Result<RegisterOutcome, RegistrationConflict> {
        let (previous_status, previous_error_code) =
            (self.current_status(), self.current_error_code());
        match &mut self.registration {
            None => self.registration = Some(registration),
            Some(current) => {
                if current.identity() != registration.identity() {
                    return Err(RegistrationConflict {
                        channel_message_id: registration.channel_message_id,
                    });
                }
                let expected = current
                    .expected_receipts
                    .max(registration.expected_receipts);
                let registered_at = current.registered_at.min(registration.registered_at);
                if expected == current.expected_receipts && registered_at == current.registered_at {
                    return Ok(RegisterOutcome::Unchanged);
                }
                current.expected_receipts = expected;
                current.registered_at = registered_at;
            }
        }
        Ok(RegisterOutcome::Changed(
            self.change(previous_status, previous_error_code),
        ))
    }
}
