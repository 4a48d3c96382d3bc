//! Tests of [`super`]: which receipts a subscription matches, and every settings rule with the
//! message it answers.

use super::*;
use crate::{
    Channel, ChannelMessageId, MessageSid, ParticipantSid, ReceiptSid, Registration, Timestamp,
};

fn account(name: &str) -> AccountSid {
    AccountSid::derive(&[name])
}

fn receipt(account_name: &str, service: Option<&str>, conversation: &str) -> Receipt {
    Receipt {
        sid: ReceiptSid::derive(&["receipt"]),
        registration: Registration {
            account: account(account_name),
            chat_service: service.map(|s| ChatServiceSid::derive(&[s])),
            conversation: ConversationSid::derive(&[conversation]),
            message: MessageSid::derive(&["message"]),
            message_index: 0,
            participant: ParticipantSid::derive(&["participant"]),
            channel: Channel::Sms,
            channel_message_id: ChannelMessageId::parse("SM00000000000000000000000000000001")
                .unwrap(),
            expected_receipts: 1,
            registered_at: Timestamp::EPOCH,
        },
        report: None,
        version: 1,
    }
}

fn subscription(scope: SubscriptionScope) -> WebhookSubscription {
    WebhookSubscription {
        account: account("a"),
        scope,
        settings: SubscriptionSettings {
            method: "POST".into(),
            filters: vec!["onMessageAdded".into(), DELIVERY_UPDATED.into()],
            post_webhook_url: "https://example.com/hook".into(),
            target: "webhook".into(),
            ..Default::default()
        },
        disabled: false,
    }
}

#[test]
fn subscriptions_match_their_account_and_scope() {
    let in_service = receipt("a", Some("s1"), "c1");
    let default_service = receipt("a", None, "c2");
    let whole_account = subscription(SubscriptionScope::Account);
    assert!(whole_account.matches(&in_service));
    assert!(whole_account.matches(&default_service));
    assert!(!whole_account.matches(&receipt("b", Some("s1"), "c1")));

    let service = subscription(SubscriptionScope::ChatService(ChatServiceSid::derive(&[
        "s1",
    ])));
    assert!(service.matches(&in_service));
    assert!(!service.matches(&default_service));
    assert!(!service.matches(&receipt("a", Some("s2"), "c1")));

    let conversation = subscription(SubscriptionScope::Conversation(ConversationSid::derive(&[
        "c1",
    ])));
    assert!(conversation.matches(&in_service));
    assert!(!conversation.matches(&default_service));
}

#[test]
fn only_enabled_webhooks_with_a_url_and_the_filter_match() {
    let receipt = receipt("a", None, "c1");
    let with = |change: fn(&mut WebhookSubscription)| {
        let mut s = subscription(SubscriptionScope::Account);
        change(&mut s);
        s.matches(&receipt)
    };
    assert!(with(|_| {}));
    assert!(with(|s| s.settings.target.clear()));
    assert!(!with(|s| s.disabled = true));
    assert!(!with(|s| s.settings.post_webhook_url.clear()));
    assert!(!with(|s| s.settings.filters = vec!["onMessageAdded".into()]));
    assert!(!with(|s| s.settings.target = "flex".into()));
    assert!(!with(|s| s.settings.target = "studio".into()));
}

fn applied(
    kind: ScopeKind,
    start: SubscriptionSettings,
    update: SubscriptionUpdate,
) -> Result<SubscriptionSettings, InvalidSetting> {
    let mut settings = start;
    settings.apply(kind, &update).map(|()| settings)
}

#[test]
fn writes_normalise_method_filters_and_urls() {
    let settings = applied(
        ScopeKind::Account,
        SubscriptionSettings::default(),
        SubscriptionUpdate {
            method: Some("get".into()),
            filters: Some(vec![
                " onDeliveryUpdated ".into(),
                String::new(),
                "onDeliveryUpdated".into(),
                "onMessageAdded".into(),
            ]),
            post_webhook_url: Some(" https://example.com/in ".into()),
            pre_webhook_url: Some(String::new()),
            target: Some("FLEX".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(settings.method, "GET");
    assert_eq!(settings.filters, ["onDeliveryUpdated", "onMessageAdded"]);
    assert_eq!(settings.post_webhook_url, "https://example.com/in");
    assert_eq!(settings.target, "flex");
}

#[test]
fn every_rule_answers_with_its_setting_and_message() {
    let long = "x".repeat(300);
    let conversation = SubscriptionSettings {
        target: "webhook".into(),
        post_webhook_url: "https://example.com/in".into(),
        ..Default::default()
    };
    let cases: Vec<(
        ScopeKind,
        SubscriptionSettings,
        SubscriptionUpdate,
        Setting,
        String,
    )> = vec![
        (
            ScopeKind::Account,
            SubscriptionSettings::default(),
            SubscriptionUpdate {
                method: Some("PUT".into()),
                ..Default::default()
            },
            Setting::Method,
            "must be GET or POST, got \"PUT\"".into(),
        ),
        (
            ScopeKind::Account,
            SubscriptionSettings::default(),
            SubscriptionUpdate {
                target: Some("studio".into()),
                ..Default::default()
            },
            Setting::Target,
            "must be webhook or flex, got \"studio\"".into(),
        ),
        (
            ScopeKind::ChatService,
            SubscriptionSettings::default(),
            SubscriptionUpdate {
                target: Some("webhook".into()),
                ..Default::default()
            },
            Setting::Target,
            "is not a field of a service's configuration".into(),
        ),
        (
            ScopeKind::Conversation,
            conversation.clone(),
            SubscriptionUpdate {
                pre_webhook_url: Some("https://example.com/pre".into()),
                ..Default::default()
            },
            Setting::PreWebhookUrl,
            "conversation-scoped webhooks are post-event only".into(),
        ),
        (
            ScopeKind::Conversation,
            SubscriptionSettings {
                target: "flex".into(),
                ..conversation.clone()
            },
            SubscriptionUpdate::default(),
            Setting::Target,
            "must be webhook, trigger or studio, got \"flex\"".into(),
        ),
        (
            ScopeKind::Conversation,
            conversation.clone(),
            SubscriptionUpdate {
                flow_sid: Some("FW123".into()),
                ..Default::default()
            },
            Setting::FlowSid,
            "must be FW and 32 hex digits".into(),
        ),
        (
            ScopeKind::Conversation,
            SubscriptionSettings {
                target: "studio".into(),
                ..conversation.clone()
            },
            SubscriptionUpdate::default(),
            Setting::FlowSid,
            "is required for target studio".into(),
        ),
        (
            ScopeKind::Conversation,
            conversation.clone(),
            SubscriptionUpdate {
                post_webhook_url: Some(String::new()),
                ..Default::default()
            },
            Setting::PostWebhookUrl,
            "is required for this target".into(),
        ),
        (
            ScopeKind::Conversation,
            conversation.clone(),
            SubscriptionUpdate {
                triggers: Some(vec!["t".into(); MAX_LIST_ENTRIES + 1]),
                ..Default::default()
            },
            Setting::Triggers,
            "has 65 entries, more than the 64 allowed".into(),
        ),
        (
            ScopeKind::Account,
            SubscriptionSettings::default(),
            SubscriptionUpdate {
                filters: Some(vec![long.clone()]),
                ..Default::default()
            },
            Setting::Filters,
            format!(
                "entry \"{}\"… is 300 bytes, more than the 256 allowed",
                "x".repeat(64)
            ),
        ),
        (
            ScopeKind::Account,
            SubscriptionSettings::default(),
            SubscriptionUpdate {
                filters: Some(vec!["on-delivery".into()]),
                ..Default::default()
            },
            Setting::Filters,
            "\"on-delivery\" is not an event name".into(),
        ),
        (
            ScopeKind::ChatService,
            SubscriptionSettings::default(),
            SubscriptionUpdate {
                pre_webhook_url: Some(format!("https://example.com/{}", "a".repeat(2048))),
                ..Default::default()
            },
            Setting::PreWebhookUrl,
            "is 2068 bytes, more than the 2048 allowed".into(),
        ),
        (
            ScopeKind::Account,
            SubscriptionSettings::default(),
            SubscriptionUpdate {
                post_webhook_url: Some("ftp://example.com".into()),
                ..Default::default()
            },
            Setting::PostWebhookUrl,
            "\"ftp://example.com\" is not an absolute http(s) URL".into(),
        ),
    ];
    for (kind, start, update, setting, message) in cases {
        let error = applied(kind, start, update.clone()).expect_err(&message);
        assert_eq!((error.setting(), error.to_string()), (setting, message));
    }
}

#[test]
fn a_conversation_webhook_may_point_at_a_studio_flow() {
    let settings = applied(
        ScopeKind::Conversation,
        SubscriptionSettings {
            target: "studio".into(),
            ..Default::default()
        },
        SubscriptionUpdate {
            flow_sid: Some(format!("FW{}", "a".repeat(32))),
            triggers: Some(vec!["onMessageAdded".into()]),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(settings.flow_sid.len(), 34);
    assert_eq!(settings.triggers, ["onMessageAdded"]);
}
