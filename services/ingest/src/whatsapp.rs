//! WhatsApp Cloud API webhooks: the `GET` verification handshake and the `POST` of
//! `entry[].changes[].value.statuses[]`, signed with `X-Hub-Signature-256`.
//!
//! Every status in a POST becomes one event; changes without statuses (incoming messages, account
//! updates) contribute none. The provider time is the status's `timestamp` (unix seconds), and
//! the error code the first `errors[].code` (Meta's codes, e.g. 131026, kept as given).
//!
//! Every status belongs to the account that owns the business phone number it was sent from
//! (`value.metadata.phone_number_id`, mapped to an account by configuration): it only ever
//! touches that account's receipt of the `wamid`.
//!
//! A status that cannot be read (an unknown `status` value, a missing id or time) or whose phone
//! number belongs to no account is skipped and named in the answer, and the others are kept:
//! Meta resends a POST answered non-2xx for days, always with the same body, so a 400 for one
//! odd status would lose every valid status beside it until Meta gave up, and refusing a number
//! no account owns would only repeat that number's statuses for a week without a receipt to
//! apply them to. Skipped statuses are counted by reason, so a number missing from the
//! configuration shows. A body that is not a webhook at all (not JSON, no `entry`) is still a
//! 400.

use hmac::{Hmac, Mac};
use receipts_domain::{AccountSid, ChannelMessageId, DeliveryEvent, ReceiptKey, StatusSource};
use serde_json::Value;
use sha2::Sha256;

use crate::report::{FieldError, Problem, parse_unix_seconds, status_event};

/// What a webhook POST yields: one event per readable status, and why each other was skipped.
#[derive(Debug, Default)]
pub struct WhatsappStatuses {
    pub events: Vec<DeliveryEvent>,
    pub skipped: Vec<FieldError>,
}

/// Parses a webhook body into one event per status, skipping the statuses in error (see the
/// module docs); a body whose structure is wrong names its first field in error. `account_of`
/// names the account owning a business phone number id.
pub fn parse_whatsapp(
    body: &[u8],
    account_of: impl Fn(&str) -> Option<AccountSid>,
) -> Result<WhatsappStatuses, FieldError> {
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
            let account = match business_number(value, &path) {
                Ok(number) => account_of(number).ok_or_else(|| FieldError {
                    field: format!("{path}.value.metadata.phone_number_id"),
                    reason: format!("{number:?} belongs to no account"),
                    problem: Problem::UnknownPhoneNumber,
                }),
                Err(error) => Err(error),
            };
            for (k, status) in statuses.iter().enumerate() {
                let path = format!("{path}.value.statuses[{k}]");
                let event = match &account {
                    Ok(account) => parse_status(account, status, &path),
                    Err(error) => Err(error.clone()),
                };
                match event {
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

/// The business phone number id a change's statuses were sent from.
fn business_number<'a>(value: &'a Value, path: &str) -> Result<&'a str, FieldError> {
    let metadata = value
        .get("metadata")
        .filter(|m| !m.is_null())
        .ok_or_else(|| FieldError::missing(format!("{path}.value.metadata.phone_number_id")))?;
    string(
        metadata,
        "phone_number_id",
        &format!("{path}.value.metadata"),
    )
}

fn parse_status(
    account: &AccountSid,
    status: &Value,
    path: &str,
) -> Result<DeliveryEvent, FieldError> {
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
        ReceiptKey::new(account.clone(), channel_message_id),
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

    const NUMBER: &str = "106540352242922";
    const ACCOUNT: &str = "AC00000000000000000000000000000001";

    /// Parses with one business number, `NUMBER`, owned by `ACCOUNT`; bodies whose changes name no
    /// number are given that one.
    fn parse(body: &str) -> Result<WhatsappStatuses, FieldError> {
        let body = body.replace(
            r#""value": {"statuses""#,
            &format!(r#""value": {{"metadata": {{"phone_number_id": "{NUMBER}"}}, "statuses""#),
        );
        parse_whatsapp(body.as_bytes(), |number| {
            (number == NUMBER).then(|| AccountSid::parse(ACCOUNT).unwrap())
        })
    }

    fn reports(body: &str) -> Vec<(String, StatusReport)> {
        let parsed = parse(body).unwrap();
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
        {"field": "messages", "value": {"messaging_product": "whatsapp",
          "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"},
          "statuses": [
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
        assert_eq!(a.account.as_str(), ACCOUNT);
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
            let err = match parse(body) {
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
        let parsed = parse(body).unwrap();
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
    fn statuses_of_a_number_no_account_owns_are_skipped() {
        let body = r#"{"entry": [{"changes": [
            {"value": {"metadata": {"phone_number_id": "999"}, "statuses": [
                {"id": "wamid.A", "status": "delivered", "timestamp": "1603059201"}]}},
            {"value": {"statuses": [
                {"id": "wamid.B", "status": "delivered", "timestamp": "1603059201"}]}},
            {"value": {"metadata": {}, "statuses": [
                {"id": "wamid.C", "status": "delivered", "timestamp": "1603059201"}]}}
        ]}]}"#;
        let parsed = parse(body).unwrap();
        assert_eq!(
            parsed.events.len(),
            1,
            "only the configured number's status"
        );
        let skipped: Vec<(&str, Problem)> = parsed
            .skipped
            .iter()
            .map(|e| (e.field.as_str(), e.problem))
            .collect();
        assert_eq!(
            skipped,
            [
                (
                    "entry[0].changes[0].value.metadata.phone_number_id",
                    Problem::UnknownPhoneNumber
                ),
                (
                    "entry[0].changes[2].value.metadata.phone_number_id",
                    Problem::Missing
                ),
            ]
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
