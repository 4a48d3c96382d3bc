//! The delivery-receipt rules, with no I/O: what a receipt is, how provider reports are mapped to
//! canonical statuses, how reports merge into a receipt's current state, and how receipts roll up
//! into a message's delivery summary.
//!
//! Layout:
//! - [`ids`]: validated sids (`AC…`, `CH…`, `DY…`, …) and channel message ids, and the deterministic
//!   derivation of receipt sids and Twilio-shaped channel message sids;
//! - [`status`]: canonical statuses, their phases, and the provider status tables;
//! - [`receipt`]: registrations, status reports and the order-independent merge;
//! - [`history`]: the earliest report of every status a receipt went through;
//! - [`summary`]: per-message counters and their `none`/`some`/`all` rendering;
//! - [`delivery`], [`rollup`], [`timeline`]: the query read model's aggregates (a message's
//!   delivery counters, a conversation's rollup, a receipt's timeline), each a pure function of
//!   the receipt changes or states applied to it, whatever their order, duplicates or replays;
//! - [`clock`]: the [`Clock`] everything that needs "now" is given;
//! - [`subscription`]: webhook subscriptions, their validation and which receipts they match.
//!
//! The central invariant (DESIGN §3): a receipt's current state is a pure function of the *set* of
//! reports seen for it, whatever their order, duplicates or replays. The merge keeps the greatest
//! report under a total order, which makes it commutative, associative and idempotent.

pub mod clock;
pub mod delivery;
mod event;
pub mod history;
pub mod ids;
pub mod receipt;
pub mod rollup;
pub mod status;
pub mod subscription;
pub mod summary;
mod time;
pub mod timeline;

pub use clock::Clock;
pub use delivery::{MessageDelivery, Verdict};
pub use event::{DeliveryEvent, DeliveryEventKind};
pub use history::History;
pub use ids::{
    AccountSid, ChannelMessageId, ChannelMessageSid, ChatServiceSid, ConversationSid, IdError,
    MessageSid, ParticipantSid, ReceiptKey, ReceiptSid, WebhookSid,
};
pub use receipt::{
    Channel, ChannelError, MergedReport, Receipt, ReceiptChange, ReceiptState, RegisterOutcome,
    Registration, RegistrationConflict, ReportOutcome, StatusReport,
};
pub use rollup::ConversationRollup;
pub use status::{DeliveryStatus, Phase, StatusSource, UnknownStatus, map_provider_status};
pub use subscription::{
    InvalidSetting, ScopeKind, Setting, SubscriptionScope, SubscriptionSettings,
    SubscriptionUpdate, WebhookSubscription,
};
pub use summary::{Amount, DeliverySummary, StatusCounts};
pub use time::Timestamp;
pub use timeline::{ReceiptTimeline, TimelineEntry};
