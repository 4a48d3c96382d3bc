//! How an update is applied to a stored record. The rules are the domain's
//! ([`SubscriptionSettings::apply`](receipts_domain::SubscriptionSettings::apply): what each scope
//! accepts, the size caps of every field); here they are given the record's settings, a broken
//! rule is named by the Twilio parameter of the scope's REST resource, and the record's dates
//! are stamped.

use receipts_domain::{InvalidSetting, ScopeKind, Setting, Timestamp};
use receipts_proto::convert::timestamp_to_wire;
use receipts_proto::v1;
use receipts_proto::webhooks::{set_settings, settings};

use super::{ConfigCallError, Scope, WebhookUpdate, invalid};

/// Validates `update` for `scope` and applies it, as written at `now`. Writing a configuration
/// again re-enables it.
pub(super) fn apply(
    config: &mut v1::WebhookConfig,
    scope: &Scope,
    update: &WebhookUpdate,
    now: Timestamp,
) -> Result<(), ConfigCallError> {
    let kind = match scope {
        Scope::Account => ScopeKind::Account,
        Scope::Service(_) => ScopeKind::ChatService,
        Scope::Conversation(..) => ScopeKind::Conversation,
    };
    let mut written = settings(config);
    written
        .apply(kind, update)
        .map_err(|error| refused(kind, &error))?;
    set_settings(config, written);
    let now = timestamp_to_wire(now);
    config.date_created.get_or_insert(now);
    config.date_updated = Some(now);
    config.disabled_at = None;
    config.disabled_reason.clear();
    Ok(())
}

/// The answer to a broken rule: the parameter as the scope's resource names it, and the rule's
/// message.
fn refused(kind: ScopeKind, error: &InvalidSetting) -> ConfigCallError {
    invalid(parameter(kind, error.setting()), error.to_string())
}

/// The Twilio parameter of `setting`: conversation webhooks nest theirs under `Configuration.`.
fn parameter(kind: ScopeKind, setting: Setting) -> &'static str {
    let conversation = kind == ScopeKind::Conversation;
    match setting {
        Setting::Method if conversation => "Configuration.Method",
        Setting::Method => "Method",
        Setting::Filters if conversation => "Configuration.Filters",
        Setting::Filters => "Filters",
        Setting::PostWebhookUrl if conversation => "Configuration.Url",
        Setting::PostWebhookUrl => "PostWebhookUrl",
        Setting::PreWebhookUrl => "PreWebhookUrl",
        Setting::Target => "Target",
        Setting::Triggers => "Configuration.Triggers",
        Setting::FlowSid => "Configuration.FlowSid",
    }
}

#[cfg(test)]
mod tests {
    use receipts_domain::{ConversationSid, WebhookSid};

    use super::*;

    fn refused_with(scope: &Scope, update: WebhookUpdate) -> (&'static str, String) {
        let mut config = v1::WebhookConfig {
            target: "webhook".into(),
            post_webhook_url: "https://example.com/in".into(),
            ..Default::default()
        };
        match apply(&mut config, scope, &update, Timestamp::EPOCH) {
            Err(ConfigCallError::Invalid { field, message }) => (field, message),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn refusals_name_the_parameter_of_the_scope() {
        let conversation =
            Scope::Conversation(ConversationSid::derive(&["c"]), WebhookSid::derive(&["w"]));
        let method = || WebhookUpdate {
            method: Some("PUT".into()),
            ..Default::default()
        };
        assert_eq!(
            refused_with(&Scope::Account, method()),
            ("Method", "must be GET or POST, got \"PUT\"".into())
        );
        assert_eq!(
            refused_with(&conversation, method()).0,
            "Configuration.Method"
        );
        let url = || WebhookUpdate {
            post_webhook_url: Some("example.com".into()),
            ..Default::default()
        };
        assert_eq!(refused_with(&Scope::Account, url()).0, "PostWebhookUrl");
        assert_eq!(refused_with(&conversation, url()).0, "Configuration.Url");
        let filters = WebhookUpdate {
            filters: Some(vec!["on delivery".into()]),
            ..Default::default()
        };
        assert_eq!(
            refused_with(&conversation, filters),
            (
                "Configuration.Filters",
                "\"on delivery\" is not an event name".into()
            )
        );
    }

    #[test]
    fn a_write_stamps_its_dates_and_enables_the_record() {
        let mut config = v1::WebhookConfig {
            disabled_at: Some(timestamp_to_wire(Timestamp::from_unix_millis(5))),
            disabled_reason: "410 Gone".into(),
            ..Default::default()
        };
        let update = WebhookUpdate {
            method: Some("get".into()),
            post_webhook_url: Some("https://example.com/in".into()),
            ..Default::default()
        };
        let at = Timestamp::from_unix_millis(1_764_000_000_000);
        apply(&mut config, &Scope::Account, &update, at).unwrap();
        assert_eq!(config.method, "GET");
        assert_eq!(config.post_webhook_url, "https://example.com/in");
        assert_eq!(config.date_created, Some(timestamp_to_wire(at)));
        assert_eq!(config.date_updated, Some(timestamp_to_wire(at)));
        assert!(config.disabled_at.is_none() && config.disabled_reason.is_empty());
    }
}
