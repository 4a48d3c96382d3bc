//! Keys of the compacted `webhook-configs` topic: one record per configured scope, so
//! compaction keeps exactly the latest configuration of each.

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

#[cfg(test)]
mod tests {
    use super::*;

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
