//! Keys of the compacted `webhook-configs` topic: one record per configured scope, so
//! compaction keeps exactly the latest configuration of each; and the configuration's domain
//! form, the [`WebhookSubscription`] that decides which receipts it matches.

use receipts_domain::{
    AccountSid, ChatServiceSid, ConversationSid, IdError, SubscriptionScope, SubscriptionSettings,
    WebhookSubscription,
};

use crate::v1;

/// The record key of a webhook configuration; see `proto/receipts/v1/webhooks.proto`.
pub fn webhook_key(config: &v1::WebhookConfig) -> String {
    match config.scope() {
        v1::WebhookScope::Service => {
            format!("service/{}/{}", config.account_sid, config.chat_service_sid)
        }
        v1::WebhookScope::Conversation => format!(
            "conversation/{}/{}/{}",
            config.account_sid, config.conversation_sid, config.webhook_sid
        ),
        v1::WebhookScope::Account | v1::WebhookScope::Unspecified => {
            format!("account/{}", config.account_sid)
        }
    }
}

/// Why a `webhook-configs` record is no subscription: a sid of its scope is missing or
/// malformed. Such a record matches no receipt.
#[derive(Debug, thiserror::Error)]
#[error("`{field}` is invalid")]
pub struct InvalidSubscription {
    field: &'static str,
    #[source]
    reason: IdError,
}

fn sid<T>(
    field: &'static str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, IdError>,
) -> Result<T, InvalidSubscription> {
    parse(value).map_err(|reason| InvalidSubscription { field, reason })
}

/// The settings of a configuration, as its record has them.
pub fn settings(config: &v1::WebhookConfig) -> SubscriptionSettings {
    SubscriptionSettings {
        method: config.method.clone(),
        filters: config.filters.clone(),
        pre_webhook_url: config.pre_webhook_url.clone(),
        post_webhook_url: config.post_webhook_url.clone(),
        target: config.target.clone(),
        triggers: config.triggers.clone(),
        flow_sid: config.flow_sid.clone(),
    }
}

/// Writes `settings` into the record, leaving its other fields as they are.
pub fn set_settings(config: &mut v1::WebhookConfig, settings: SubscriptionSettings) {
    config.method = settings.method;
    config.filters = settings.filters;
    config.pre_webhook_url = settings.pre_webhook_url;
    config.post_webhook_url = settings.post_webhook_url;
    config.target = settings.target;
    config.triggers = settings.triggers;
    config.flow_sid = settings.flow_sid;
}

/// The subscription a configuration record stands for. An unspecified scope is the account's.
pub fn subscription(
    config: &v1::WebhookConfig,
) -> Result<WebhookSubscription, InvalidSubscription> {
    let scope = match config.scope() {
        v1::WebhookScope::Account | v1::WebhookScope::Unspecified => SubscriptionScope::Account,
        v1::WebhookScope::Service => SubscriptionScope::ChatService(sid(
            "chat_service_sid",
            &config.chat_service_sid,
            ChatServiceSid::parse,
        )?),
        v1::WebhookScope::Conversation => SubscriptionScope::Conversation(sid(
            "conversation_sid",
            &config.conversation_sid,
            ConversationSid::parse,
        )?),
    };
    Ok(WebhookSubscription {
        account: sid("account_sid", &config.account_sid, AccountSid::parse)?,
        scope,
        settings: settings(config),
        disabled: config.disabled_at.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_becomes_its_subscription() {
        let account = AccountSid::derive(&["a"]);
        let service = ChatServiceSid::derive(&["s"]);
        let mut config = v1::WebhookConfig {
            account_sid: account.to_string(),
            chat_service_sid: service.to_string(),
            method: "POST".into(),
            filters: vec!["onDeliveryUpdated".into()],
            post_webhook_url: "https://example.com/in".into(),
            target: "webhook".into(),
            ..Default::default()
        };
        config.set_scope(v1::WebhookScope::Service);
        let subscription = subscription(&config).unwrap();
        assert_eq!(subscription.account, account);
        assert_eq!(subscription.scope, SubscriptionScope::ChatService(service));
        assert_eq!(subscription.settings, settings(&config));
        assert!(!subscription.disabled);

        let mut round = v1::WebhookConfig::default();
        set_settings(&mut round, subscription.settings);
        assert_eq!(settings(&round), settings(&config));

        config.disabled_at = Some(pbjson_types::Timestamp::default());
        assert!(super::subscription(&config).unwrap().disabled);
        config.chat_service_sid.clear();
        assert!(super::subscription(&config).is_err());
        config.set_scope(v1::WebhookScope::Unspecified);
        assert_eq!(
            super::subscription(&config).unwrap().scope,
            SubscriptionScope::Account
        );
    }

    #[test]
    fn each_scope_has_its_own_key() {
        let mut config = v1::WebhookConfig {
            account_sid: "AC1".into(),
            chat_service_sid: "IS1".into(),
            conversation_sid: "CH1".into(),
            webhook_sid: "WH1".into(),
            ..Default::default()
        };
        config.set_scope(v1::WebhookScope::Account);
        assert_eq!(webhook_key(&config), "account/AC1");
        config.set_scope(v1::WebhookScope::Service);
        assert_eq!(webhook_key(&config), "service/AC1/IS1");
        config.set_scope(v1::WebhookScope::Conversation);
        assert_eq!(webhook_key(&config), "conversation/AC1/CH1/WH1");
    }
}
