//! Webhook subscriptions: who is told about which receipt changes, and the rules a
//! subscription's settings must follow.
//!
//! A subscription belongs to an account and is scoped to the whole account, one chat service
//! or one conversation. [`WebhookSubscription::matches`] decides whether a receipt change goes
//! to it: an enabled post-webhook with a URL, whose filters name `onDeliveryUpdated`, in the
//! receipt's own account and scope.
//!
//! [`SubscriptionSettings::apply`] holds the Twilio rules for writing the settings: which scope
//! takes which field, GET or POST, event names, absolute http(s) URLs, targets, Studio flow sids
//! and the size caps of every field. A rule broken is a typed [`InvalidSetting`] naming the
//! [`Setting`]; the REST and gRPC layers map it to the parameter names of their own surface.

use std::fmt;

use crate::ids::{AccountSid, ChatServiceSid, ConversationSid};
use crate::receipt::Receipt;

/// The event a delivery-receipt subscriber asks for in its filters.
pub const DELIVERY_UPDATED: &str = "onDeliveryUpdated";

/// The longest webhook URL accepted, in bytes (browsers and proxies commonly stop near 2 KiB).
pub const MAX_URL_BYTES: usize = 2048;
/// The most entries of a list field (`Filters`, `Configuration.Triggers`); Conversations has
/// about twenty event names.
pub const MAX_LIST_ENTRIES: usize = 64;
/// The longest event name or trigger, in bytes.
pub const MAX_ENTRY_BYTES: usize = 256;

/// What a subscription covers within its account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubscriptionScope {
    /// Every conversation of the account.
    Account,
    /// The conversations of one chat service.
    ChatService(ChatServiceSid),
    /// One conversation.
    Conversation(ConversationSid),
}

impl SubscriptionScope {
    pub fn kind(&self) -> ScopeKind {
        match self {
            SubscriptionScope::Account => ScopeKind::Account,
            SubscriptionScope::ChatService(_) => ScopeKind::ChatService,
            SubscriptionScope::Conversation(_) => ScopeKind::Conversation,
        }
    }
}

/// A scope without its sid: what decides which settings a write may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    Account,
    ChatService,
    Conversation,
}

/// The settings of a webhook configuration, as written (empty strings for unset ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionSettings {
    /// `GET` or `POST`; empty means POST.
    pub method: String,
    pub filters: Vec<String>,
    pub pre_webhook_url: String,
    /// The URL receipt changes are sent to (a conversation's `Configuration.Url`).
    pub post_webhook_url: String,
    /// `webhook` (or empty) delivers to the URL; `flex`, `trigger` and `studio` do not.
    pub target: String,
    pub triggers: Vec<String>,
    pub flow_sid: String,
}

/// One webhook configuration as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSubscription {
    pub account: AccountSid,
    pub scope: SubscriptionScope,
    pub settings: SubscriptionSettings,
    /// Disabled (after its endpoint answered 410 Gone) until written again.
    pub disabled: bool,
}

impl WebhookSubscription {
    /// Whether a change of `receipt` is sent to this subscription. Conversation scopes are not
    /// capped here (writes are: five per conversation).
    pub fn matches(&self, receipt: &Receipt) -> bool {
        let settings = &self.settings;
        let subscribed = !self.disabled
            && !settings.post_webhook_url.is_empty()
            && settings.filters.iter().any(|f| f == DELIVERY_UPDATED)
            && matches!(settings.target.as_str(), "" | "webhook");
        let registration = &receipt.registration;
        subscribed
            && self.account == registration.account
            && match &self.scope {
                SubscriptionScope::Account => true,
                SubscriptionScope::ChatService(service) => {
                    registration.chat_service.as_ref() == Some(service)
                }
                SubscriptionScope::Conversation(conversation) => {
                    *conversation == registration.conversation
                }
            }
    }
}

/// The fields a write may set; `None` leaves a field as it is (Twilio's partial update).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionUpdate {
    pub method: Option<String>,
    pub filters: Option<Vec<String>>,
    pub pre_webhook_url: Option<String>,
    /// Conversation scope: `configuration.url`.
    pub post_webhook_url: Option<String>,
    pub target: Option<String>,
    pub triggers: Option<Vec<String>>,
    pub flow_sid: Option<String>,
}

/// A setting of a subscription, as a broken rule names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    Method,
    Filters,
    PreWebhookUrl,
    PostWebhookUrl,
    Target,
    Triggers,
    FlowSid,
}

/// `value` as an error message may quote it: at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted(String);

impl Quoted {
    fn of(value: &str) -> Self {
        Quoted(value.to_owned())
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(64) {
            Some((end, _)) => write!(f, "{:?}…", &self.0[..end]),
            None => write!(f, "{:?}", self.0),
        }
    }
}

/// Why a write's settings were refused; the message says what is wrong with the setting
/// [`InvalidSetting::setting`] names, in the words of Twilio's error bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSetting {
    #[error("must be GET or POST, got {0}")]
    Method(Quoted),
    #[error("must be webhook or flex, got {0}")]
    AccountTarget(Quoted),
    #[error("is not a field of a service's configuration")]
    ServiceTarget,
    #[error("conversation-scoped webhooks are post-event only")]
    ConversationPreWebhook,
    #[error("must be webhook, trigger or studio, got {0}")]
    ConversationTarget(Quoted),
    #[error("must be FW and 32 hex digits")]
    FlowSid,
    #[error("is required for target studio")]
    FlowSidRequired,
    #[error("is required for this target")]
    UrlRequired,
    #[error("has {entries} entries, more than the {MAX_LIST_ENTRIES} allowed")]
    TooManyEntries { setting: Setting, entries: usize },
    #[error("entry {entry} is {bytes} bytes, more than the {MAX_ENTRY_BYTES} allowed")]
    EntryTooLong {
        setting: Setting,
        entry: Quoted,
        bytes: usize,
    },
    #[error("{0} is not an event name")]
    EventName(Quoted),
    #[error("is {bytes} bytes, more than the {MAX_URL_BYTES} allowed")]
    UrlTooLong { setting: Setting, bytes: usize },
    #[error("{url} is not an absolute http(s) URL")]
    NotAbsoluteUrl { setting: Setting, url: Quoted },
}

impl InvalidSetting {
    /// The setting the rule is about.
    pub fn setting(&self) -> Setting {
        match self {
            InvalidSetting::Method(_) => Setting::Method,
            InvalidSetting::AccountTarget(_)
            | InvalidSetting::ServiceTarget
            | InvalidSetting::ConversationTarget(_) => Setting::Target,
            InvalidSetting::ConversationPreWebhook => Setting::PreWebhookUrl,
            InvalidSetting::FlowSid | InvalidSetting::FlowSidRequired => Setting::FlowSid,
            InvalidSetting::UrlRequired => Setting::PostWebhookUrl,
            InvalidSetting::EventName(_) => Setting::Filters,
            InvalidSetting::TooManyEntries { setting, .. }
            | InvalidSetting::EntryTooLong { setting, .. }
            | InvalidSetting::UrlTooLong { setting, .. }
            | InvalidSetting::NotAbsoluteUrl { setting, .. } => *setting,
        }
    }
}

impl SubscriptionSettings {
    /// Validates `update` for a subscription of scope `kind` and applies it. On error the
    /// settings may be partly changed; callers apply to a copy.
    pub fn apply(
        &mut self,
        kind: ScopeKind,
        update: &SubscriptionUpdate,
    ) -> Result<(), InvalidSetting> {
        if let Some(method) = &update.method {
            self.method = match method.to_ascii_uppercase().as_str() {
                "GET" => "GET".into(),
                "POST" => "POST".into(),
                _ => return Err(InvalidSetting::Method(Quoted::of(method))),
            };
        }
        if let Some(filters) = &update.filters {
            self.filters = event_names(filters)?;
        }
        if let Some(url) = &update.post_webhook_url {
            self.post_webhook_url = absolute_url(Setting::PostWebhookUrl, url)?;
        }
        match kind {
            ScopeKind::Account => {
                if let Some(url) = &update.pre_webhook_url {
                    self.pre_webhook_url = absolute_url(Setting::PreWebhookUrl, url)?;
                }
                if let Some(target) = &update.target {
                    self.target = match target.to_ascii_lowercase().as_str() {
                        "webhook" => "webhook".into(),
                        "flex" => "flex".into(),
                        _ => return Err(InvalidSetting::AccountTarget(Quoted::of(target))),
                    };
                }
            }
            ScopeKind::ChatService => {
                if let Some(url) = &update.pre_webhook_url {
                    self.pre_webhook_url = absolute_url(Setting::PreWebhookUrl, url)?;
                }
                if update.target.is_some() {
                    return Err(InvalidSetting::ServiceTarget);
                }
            }
            ScopeKind::Conversation => self.apply_conversation(update)?,
        }
        Ok(())
    }

    fn apply_conversation(&mut self, update: &SubscriptionUpdate) -> Result<(), InvalidSetting> {
        if update.pre_webhook_url.is_some() {
            return Err(InvalidSetting::ConversationPreWebhook);
        }
        if !matches!(self.target.as_str(), "webhook" | "trigger" | "studio") {
            return Err(InvalidSetting::ConversationTarget(Quoted::of(&self.target)));
        }
        if let Some(triggers) = &update.triggers {
            bounded_list(Setting::Triggers, triggers)?;
            self.triggers = triggers.clone();
        }
        if let Some(flow) = &update.flow_sid {
            let valid = flow.len() == 34
                && flow.starts_with("FW")
                && flow[2..].bytes().all(|b| b.is_ascii_hexdigit());
            if !valid && !flow.is_empty() {
                return Err(InvalidSetting::FlowSid);
            }
            self.flow_sid = flow.clone();
        }
        let studio = self.target == "studio";
        let complete = if studio {
            !self.flow_sid.is_empty()
        } else {
            !self.post_webhook_url.is_empty()
        };
        match (complete, studio) {
            (true, _) => Ok(()),
            (false, true) => Err(InvalidSetting::FlowSidRequired),
            (false, false) => Err(InvalidSetting::UrlRequired),
        }
    }
}

/// A list setting within [`MAX_LIST_ENTRIES`] entries of at most [`MAX_ENTRY_BYTES`] each.
fn bounded_list(setting: Setting, entries: &[String]) -> Result<(), InvalidSetting> {
    if entries.len() > MAX_LIST_ENTRIES {
        return Err(InvalidSetting::TooManyEntries {
            setting,
            entries: entries.len(),
        });
    }
    if let Some(long) = entries.iter().find(|e| e.len() > MAX_ENTRY_BYTES) {
        return Err(InvalidSetting::EntryTooLong {
            setting,
            entry: Quoted::of(long),
            bytes: long.len(),
        });
    }
    Ok(())
}

/// Event names as given, each a plain identifier, blanks and repeats left out. Unknown names
/// are kept: Twilio's own examples use names outside its documented list (contract §10.6), and
/// only `onDeliveryUpdated` fires here.
fn event_names(names: &[String]) -> Result<Vec<String>, InvalidSetting> {
    bounded_list(Setting::Filters, names)?;
    let mut kept: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(InvalidSetting::EventName(Quoted::of(name)));
        }
        if !kept.iter().any(|k| k == name) {
            kept.push(name.to_owned());
        }
    }
    Ok(kept)
}

/// An absolute http(s) URL, or empty to clear the setting.
fn absolute_url(setting: Setting, url: &str) -> Result<String, InvalidSetting> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(String::new());
    }
    if url.len() > MAX_URL_BYTES {
        return Err(InvalidSetting::UrlTooLong {
            setting,
            bytes: url.len(),
        });
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace) =>
        {
            Ok(url.to_owned())
        }
        _ => Err(InvalidSetting::NotAbsoluteUrl {
            setting,
            url: Quoted::of(url),
        }),
    }
}

#[cfg(test)]
#[path = "subscription_tests.rs"]
mod tests;
