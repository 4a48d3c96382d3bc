//! WhatsApp Cloud API webhooks: the `GET` verification handshake and the `POST` of
//! `entry[].changes[].value.statuses[]`, signed with `X-Hub-Signature-256`.
//!
//! Every status in a POST becomes one event; changes without statuses (incoming messages, account
//! updates) contribute none. The provider time is the status's `timestamp` (unix seconds), and
//! the error code the first `errors[].code` (Meta's codes, e.g. 131026, kept as given).
//!
//! A status that cannot be read (an unknown `status` value, a missing id or time) is skipped
//! and named in the answer, and the others are kept: Meta resends a POST answered non-2xx for
//! days, always with the same body, so a 400 for one odd status would lose every valid status
//! beside it until Meta gave up. A body that is not a webhook at all (not JSON, no `entry`) is
//! still a 400.

use hmac::{Hmac, Mac};
use receipts_domain::{ChannelMessageId, DeliveryEvent, StatusSource};
use serde_json::Value;
use sha2::Sha256;

use crate::report::{FieldError, parse_unix_seconds, status_event};

/// What a webhook POST yields: one event per readable status, and why each other was skipped.
#[derive(Debug, Default)]
pub struct WhatsappStatuses {
    pub events: Vec<DeliveryEvent>,
    pub skipped: Vec<FieldError>,
}

/// Parses a webhook body into one event per status, skipping the statuses in error (see the
/// module docs); a body whose structure is wrong names its first field in error.
pub fn parse_whatsapp(body: &[u8]) -> Result<WhatsappStatuses, FieldError> {
    let document: Value = serde_json::from_slice(body)
        .map_err(|e| FieldError::malformed("body", format!("is not JSON: {e}")))?;
    let mut parsed = WhatsappStatuses::default();
    let entries = array(&document, "entry", "entry")?;
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("entry[{i}]");
        let changes = array(entry, "changes", &format!("{path}.changes"))?;
        for (j, change) in changes.iter().enumerate() {
            let path = format!("{path}.changes[{j}]");
            let Some(value) = change.get("value") else {
                return Err(FieldError::missing(format!("{path}.value")));
            };
            let statuses = match value.get("statuses") {
                None | Some(Value::Null) => continue,
                Some(_) => array(value, "statuses", &format!("{path}.value.statuses"))?,
            };
            for (k, status) in statuses.iter().enumerate() {
                let path = format!("{path}.value.statuses[{k}]");
                match parse_status(status, &path) {
                    Ok(event) => parsed.events.push(event),
                    Err(error) => parsed.skipped.push(error),
                }
            }
        }
    }
    Ok(parsed)
}

fn array<'a>(parent: &'a Value, key: &str, path: &str) -> Result<&'a Vec<Value>, FieldError> {
    match parent.get(key) {
        None | Some(Value::Null) => Err(FieldError::missing(path)),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(FieldError::invalid(path, "must be an array")),
    }
}

fn string<'a>(status: &'a Value, key: &str, path: &str) -> Result<&'a str, FieldError> {
    let field = format!("{path}.{key}");
    match status.get(key) {
        None | Some(Value::Null) => Err(FieldError::missing(field)),
        Some(Value::String(s)) if s.is_empty() => Err(FieldError::missing(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(FieldError::invalid(field, "must be a string")),
    }
}

fn parse_status(status: &Value, path: &str) -> Result<DeliveryEvent, FieldError> {
    let id = string(status, "id", path)?;
    let channel_message_id = ChannelMessageId::parse(id)
        .map_err(|e| FieldError::invalid(format!("{path}.id"), e.to_string()))?;
    let raw_status = string(status, "status", path)?;
    let timestamp_field = format!("{path}.timestamp");
    let provider_time = match status.get("timestamp") {
        None | Some(Value::Null) => return Err(FieldError::missing(timestamp_field)),
        // Documented as a string; a number is taken too.
        Some(Value::String(s)) => parse_unix_seconds(s),
        Some(Value::Number(n)) => parse_unix_seconds(&n.to_string()),
        Some(_) => Err("must be unix seconds".to_owned()),
    }
    .map_err(|reason| FieldError::invalid(&timestamp_field, reason))?;
    let error_code = match status.get("errors") {
        None | Some(Value::Null) => None,
        Some(Value::Array(errors)) => match errors.first() {
            None => None,
            Some(first) => {
                let field = format!("{path}.errors[0].code");
                match first.get("code") {
                    None | Some(Value::Null) => None,
                    Some(code) => match code.as_u64().map(u32::try_from) {
                        Some(Ok(0)) => None,
                        Some(Ok(code)) => Some(code),
                        _ => {
                            return Err(FieldError::invalid(
                                field,
                                "must be a non-negative 32-bit integer",
                            ));
                        }
                    },
                }
            }
        },
        Some(_) => {
            return Err(FieldError::invalid(
                format!("{path}.errors"),
                "must be an array",
            ));
        }
    };
    status_event(
        StatusSource::WhatsappCloud,
        channel_message_id,
        (&format!("{path}.status"), raw_status),
        provider_time,
        true,
        error_code,
    )
}

/// Whether `header` (`X-Hub-Signature-256: sha256=<hex>`) is the HMAC-SHA256 of `body` keyed
/// with the app secret, compared in constant time.
pub fn verify_hub_signature(app_secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_digest) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// The `X-Hub-Signature-256` value Meta sends for `body`.
pub fn hub_signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use receipts_domain::{DeliveryEventKind, DeliveryStatus, StatusReport};

    fn reports(body: &str) -> Vec<(String, StatusReport)> {
        let parsed = parse_whatsapp(body.as_bytes()).unwrap();
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        parsed
            .events
            .into_iter()
            .map(|e| match e.kind {
                DeliveryEventKind::Reported(r) => (e.event_id, r),
                DeliveryEventKind::Registered(_) => panic!("a report"),
            })
            .collect()
    }

    const TWO_STATUSES: &str = r#"{
      "object": "whatsapp_business_account",
      "entry": [{"id": "102290129340398", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp", "statuses": [
          {"id": "wamid.A", "status": "delivered", "timestamp": "1603059201", "recipient_id": "15551234567"},
          {"id": "wamid.B", "status": "failed", "timestamp": 1603059202, "recipient_id": "15551234568",
           "errors": [{"code": 131026, "title": "Message undeliverable"}]}
        ]}},
        {"field": "messages", "value": {"messages": [{"id": "wamid.in", "type": "text"}]}}
      ]}]
    }"#;

    #[test]
    fn every_status_becomes_a_report() {
        let reports = reports(TWO_STATUSES);
        assert_eq!(reports.len(), 2);
        let (_, a) = &reports[0];
        assert_eq!(a.channel_message_id.as_str(), "wamid.A");
        assert_eq!(a.status, DeliveryStatus::Delivered);
        assert_eq!(a.provider_time.unix_millis(), 1_603_059_201_000);
        assert_eq!(a.error_code, None);
        assert_eq!(a.source, StatusSource::WhatsappCloud);
        let (_, b) = &reports[1];
        assert_eq!(b.status, DeliveryStatus::Failed);
        assert_eq!(b.error_code, Some(131_026));
        assert_ne!(reports[0].0, reports[1].0);
        // The same body again gives the same ids.
        let again = self::reports(TWO_STATUSES);
        assert_eq!(again[0].0, reports[0].0);
    }

    #[test]
    fn mistakes_name_the_field() {
        let cases = [
            ("not json", "body"),
            ("{}", "entry"),
            (r#"{"entry": {}}"#, "entry"),
            (r#"{"entry": [{}]}"#, "entry[0].changes"),
            (
                r#"{"entry": [{"changes": [{}]}]}"#,
                "entry[0].changes[0].value",
            ),
            (
                r#"{"entry": [{"changes": [{"value": {"statuses": [{"status": "read", "timestamp": "1"}]}}]}]}"#,
                "entry[0].changes[0].value.statuses[0].id",
            ),
            (
                r#"{"entry": [{"changes": [{"value": {"statuses": [{"id": "w", "status": "seen", "timestamp": "1"}]}}]}]}"#,
                "entry[0].changes[0].value.statuses[0].status",
            ),
            (
                r#"{"entry": [{"changes": [{"value": {"statuses": [{"id": "w", "status": "read", "timestamp": "yesterday"}]}}]}]}"#,
                "entry[0].changes[0].value.statuses[0].timestamp",
            ),
            (
                r#"{"entry": [{"changes": [{"value": {"statuses": [{"id": "w", "status": "read"}]}}]}]}"#,
                "entry[0].changes[0].value.statuses[0].timestamp",
            ),
            (
                r#"{"entry": [{"changes": [{"value": {"statuses": [{"id": "w", "status": "failed", "timestamp": "1", "errors": [{"code": -4}]}]}}]}]}"#,
                "entry[0].changes[0].value.statuses[0].errors[0].code",
            ),
        ];
        for (body, field) in cases {
            let err = match parse_whatsapp(body.as_bytes()) {
                Err(err) => err,
                Ok(parsed) => parsed.skipped.into_iter().next().expect("an error"),
            };
            assert_eq!(err.field, field, "{body}: {err}");
        }
    }

    #[test]
    fn an_unreadable_status_is_skipped_and_the_others_kept() {
        let body = r#"{"entry": [{"changes": [{"value": {"statuses": [
            {"id": "wamid.A", "status": "delivered", "timestamp": "1603059201"},
            {"id": "wamid.B", "status": "warped", "timestamp": "1603059202"},
            {"id": "wamid.C", "status": "read", "timestamp": "1603059203"}
        ]}}]}]}"#;
        let parsed = parse_whatsapp(body.as_bytes()).unwrap();
        let ids: Vec<&str> = parsed
            .events
            .iter()
            .map(|e| match &e.kind {
                DeliveryEventKind::Reported(r) => r.channel_message_id.as_str(),
                DeliveryEventKind::Registered(_) => panic!("a report"),
            })
            .collect();
        assert_eq!(ids, ["wamid.A", "wamid.C"]);
        assert_eq!(parsed.skipped.len(), 1);
        assert_eq!(
            parsed.skipped[0].field,
            "entry[0].changes[0].value.statuses[1].status"
        );
    }

    #[test]
    fn signatures_are_checked_against_the_raw_body() {
        let body = TWO_STATUSES.as_bytes();
        let header = hub_signature("s3cret", body);
        assert!(verify_hub_signature("s3cret", body, &header));
        assert!(!verify_hub_signature("other", body, &header));
        assert!(!verify_hub_signature("s3cret", b"{}", &header));
        assert!(!verify_hub_signature("s3cret", body, "sha1=abc"));
        assert!(!verify_hub_signature("s3cret", body, "sha256=zz"));
    }
}
