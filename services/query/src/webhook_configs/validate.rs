//! The Twilio parameters of a webhook configuration: what each scope accepts, the size caps of
//! every field, and how an update is applied to the stored record.

use receipts_proto::convert::timestamp_to_wire;
use receipts_proto::v1;

use super::{ConfigCallError, Scope, WebhookUpdate, invalid, now};

/// Validates `update` for `scope` and applies it. Writing a configuration again re-enables it.
pub(super) fn apply(
    config: &mut v1::WebhookConfig,
    scope: &Scope,
    update: &WebhookUpdate,
) -> Result<(), ConfigCallError> {
    let conversation = matches!(scope, Scope::Conversation(..));
    let (method_field, url_field, filters_field) = if conversation {
        (
            "Configuration.Method",
            "Configuration.Url",
            "Configuration.Filters",
        )
    } else {
        ("Method", "PostWebhookUrl", "Filters")
    };
    if let Some(method) = &update.method {
        config.method = match method.to_ascii_uppercase().as_str() {
            "GET" => "GET".into(),
            "POST" => "POST".into(),
            _ => {
                return Err(invalid(
                    method_field,
                    format!("must be GET or POST, got {}", quoted(method)),
                ));
            }
        };
    }
    if let Some(filters) = &update.filters {
        config.filters = event_names(filters_field, filters)?;
    }
    if let Some(url) = &update.post_webhook_url {
        config.post_webhook_url = absolute_url(url_field, url)?;
    }
    match scope {
        Scope::Account => {
            if let Some(url) = &update.pre_webhook_url {
                config.pre_webhook_url = absolute_url("PreWebhookUrl", url)?;
            }
            if let Some(target) = &update.target {
                config.target = match target.to_ascii_lowercase().as_str() {
                    "webhook" => "webhook".into(),
                    "flex" => "flex".into(),
                    _ => {
                        return Err(invalid(
                            "Target",
                            format!("must be webhook or flex, got {}", quoted(target)),
                        ));
                    }
                };
            }
        }
        Scope::Service(_) => {
            if let Some(url) = &update.pre_webhook_url {
                config.pre_webhook_url = absolute_url("PreWebhookUrl", url)?;
            }
            if update.target.is_some() {
                return Err(invalid(
                    "Target",
                    "is not a field of a service's configuration",
                ));
            }
        }
        Scope::Conversation(..) => {
            if update.pre_webhook_url.is_some() {
                return Err(invalid(
                    "PreWebhookUrl",
                    "conversation-scoped webhooks are post-event only",
                ));
            }
            if !matches!(config.target.as_str(), "webhook" | "trigger" | "studio") {
                return Err(invalid(
                    "Target",
                    format!(
                        "must be webhook, trigger or studio, got {}",
                        quoted(&config.target)
                    ),
                ));
            }
            if let Some(triggers) = &update.triggers {
                bounded_list("Configuration.Triggers", triggers)?;
                config.triggers = triggers.clone();
            }
            if let Some(flow) = &update.flow_sid {
                let valid = flow.len() == 34
                    && flow.starts_with("FW")
                    && flow[2..].bytes().all(|b| b.is_ascii_hexdigit());
                if !valid && !flow.is_empty() {
                    return Err(invalid(
                        "Configuration.FlowSid",
                        "must be FW and 32 hex digits",
                    ));
                }
                config.flow_sid = flow.clone();
            }
            let complete = match config.target.as_str() {
                "studio" => !config.flow_sid.is_empty(),
                _ => !config.post_webhook_url.is_empty(),
            };
            if !complete {
                return Err(if config.target == "studio" {
                    invalid("Configuration.FlowSid", "is required for target studio")
                } else {
                    invalid("Configuration.Url", "is required for this target")
                });
            }
        }
    }
    let now = timestamp_to_wire(now());
    config.date_created.get_or_insert(now);
    config.date_updated = Some(now);
    config.disabled_at = None;
    config.disabled_reason.clear();
    Ok(())
}

/// The longest webhook URL accepted, in bytes (browsers and proxies commonly stop near 2 KiB).
pub const MAX_URL_BYTES: usize = 2048;
/// The most entries of a list field (`Filters`, `Configuration.Triggers`); Conversations has
/// about twenty event names.
pub const MAX_LIST_ENTRIES: usize = 64;
/// The longest event name or trigger, in bytes.
pub const MAX_ENTRY_BYTES: usize = 256;

/// `value` as an error message may quote it: at most 64 characters.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((end, _)) => format!("{:?}…", &value[..end]),
        None => format!("{value:?}"),
    }
}

/// A list field within [`MAX_LIST_ENTRIES`] entries of at most [`MAX_ENTRY_BYTES`] each.
fn bounded_list(field: &'static str, entries: &[String]) -> Result<(), ConfigCallError> {
    if entries.len() > MAX_LIST_ENTRIES {
        return Err(invalid(
            field,
            format!(
                "has {} entries, more than the {MAX_LIST_ENTRIES} allowed",
                entries.len()
            ),
        ));
    }
    if let Some(long) = entries.iter().find(|e| e.len() > MAX_ENTRY_BYTES) {
        return Err(invalid(
            field,
            format!(
                "entry {} is {} bytes, more than the {MAX_ENTRY_BYTES} allowed",
                quoted(long),
                long.len()
            ),
        ));
    }
    Ok(())
}

/// Event names as given, each a plain identifier. Unknown names are kept: Twilio's own examples
/// use names outside its documented list (contract §10.6), and only `onDeliveryUpdated` fires here.
fn event_names(field: &'static str, names: &[String]) -> Result<Vec<String>, ConfigCallError> {
    bounded_list(field, names)?;
    let mut kept: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(invalid(
                field,
                format!("{} is not an event name", quoted(name)),
            ));
        }
        if !kept.iter().any(|k| k == name) {
            kept.push(name.to_owned());
        }
    }
    Ok(kept)
}

/// An absolute http(s) URL, or empty to clear the field.
fn absolute_url(field: &'static str, url: &str) -> Result<String, ConfigCallError> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(String::new());
    }
    if url.len() > MAX_URL_BYTES {
        return Err(invalid(
            field,
            format!(
                "is {} bytes, more than the {MAX_URL_BYTES} allowed",
                url.len()
            ),
        ));
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
        _ => Err(invalid(
            field,
            format!("{} is not an absolute http(s) URL", quoted(url)),
        )),
    }
}
