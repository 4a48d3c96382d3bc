//! The canonical JSON batch: `{"events": [<Envelope>, …]}`, each event in the proto3 JSON mapping
//! of `receipts.v1.Envelope` (registrations and status reports), as the messaging platform and the
//! simulator post them. Event ids are the caller's; it must keep them stable across retries.

use receipts_domain::{AccountSid, DeliveryEvent, DeliveryEventKind};
use receipts_proto::{ConversionError, v1};
use serde_json::Value;

use crate::report::{FieldError, Problem};

/// Why a batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// A registration or a report names an account other than the caller's.
    #[error("`{field}` belongs to another account")]
    ForeignAccount { field: String },
}

/// Parses and validates every event of a batch posted by `account`; nothing is accepted unless
/// everything is.
pub fn parse_event_batch(
    body: &[u8],
    account: &AccountSid,
) -> Result<Vec<DeliveryEvent>, BatchError> {
    let document: Value = serde_json::from_slice(body)
        .map_err(|e| FieldError::malformed("body", format!("is not JSON: {e}")))?;
    let items = match document.get("events") {
        None | Some(Value::Null) => return Err(FieldError::missing("events").into()),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(FieldError::invalid("events", "must hold at least one event").into());
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(FieldError::invalid("events", "must be an array").into()),
    };
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("events[{i}]");
        let mut wire: v1::Envelope = serde_json::from_value(item.clone())
            .map_err(|e| FieldError::invalid(&path, e.to_string()))?;
        // A report is the caller's unless it says so itself; naming another account is refused
        // like a foreign registration, before anything is validated further.
        if let Some(v1::envelope::Event::StatusReported(report)) = &mut wire.event {
            if report.account_sid.is_empty() {
                report.account_sid = account.to_string();
            } else if report.account_sid != account.as_str() {
                return Err(BatchError::ForeignAccount {
                    field: format!("{path}.status_reported.account_sid"),
                });
            }
        }
        let event =
            DeliveryEvent::try_from(&wire).map_err(|e| conversion_error(&path, &wire, e))?;
        if let DeliveryEventKind::Registered(registration) = &event.kind
            && registration.account != *account
        {
            return Err(BatchError::ForeignAccount {
                field: format!("{path}.receipt_registered.account_sid"),
            });
        }
        events.push(event);
    }
    Ok(events)
}

/// Names the field of a conversion error as a JSON path into the batch.
fn conversion_error(path: &str, wire: &v1::Envelope, error: ConversionError) -> FieldError {
    let inner = match wire.event {
        Some(v1::envelope::Event::ReceiptRegistered(_)) => "receipt_registered",
        Some(v1::envelope::Event::StatusReported(_)) => "status_reported",
        None => "",
    };
    let (field, problem) = match &error {
        ConversionError::Missing(field) => (*field, Problem::Missing),
        ConversionError::InvalidId { field, .. } | ConversionError::UnknownEnum { field, .. } => {
            (*field, Problem::Invalid)
        }
        ConversionError::UnknownStatus(_) => ("raw_status", Problem::UnknownStatus),
    };
    // Envelope-level fields sit beside the event, the others inside it.
    let full = match field {
        "event_id" | "occurred_at" | "event" => format!("{path}.{field}"),
        _ if inner.is_empty() => format!("{path}.{field}"),
        _ => format!("{path}.{inner}.{field}"),
    };
    FieldError {
        field: full,
        reason: error.to_string(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "AC00000000000000000000000000000001";

    fn registration(account: &str) -> String {
        format!(
            r#"{{"eventId": "reg-1", "occurredAt": "2024-03-01T12:00:00Z", "receiptRegistered": {{
                "accountSid": "{account}", "conversationSid": "CH00000000000000000000000000000001",
                "messageSid": "IM00000000000000000000000000000001", "messageIndex": "3",
                "participantSid": "MB00000000000000000000000000000001", "channel": "CHANNEL_SMS",
                "channelMessageId": "SM00000000000000000000000000000001", "expectedReceipts": 2}}}}"#
        )
    }

    const REPORT: &str = r#"{"eventId": "rep-1", "statusReported": {
        "channelMessageId": "SM00000000000000000000000000000001", "rawStatus": "delivered",
        "providerTimestamp": "2024-03-01T12:00:05Z", "source": "STATUS_SOURCE_TWILIO_MESSAGING"}}"#;

    #[test]
    fn registrations_and_reports_are_validated() {
        let account = AccountSid::parse(AC).unwrap();
        let body = format!(r#"{{"events": [{}, {REPORT}]}}"#, registration(AC));
        let events = parse_event_batch(body.as_bytes(), &account).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_id, "reg-1");
        assert_eq!(events[1].event_id, "rep-1");
        // The report left its account out: it is the caller's.
        match &events[1].kind {
            DeliveryEventKind::Reported(report) => assert_eq!(report.account, account),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reports_naming_another_account_are_refused() {
        let account = AccountSid::parse(AC).unwrap();
        let own = REPORT.replace(
            r#""rawStatus""#,
            &format!(r#""accountSid": "{AC}", "rawStatus""#),
        );
        let foreign = REPORT.replace(
            r#""rawStatus""#,
            r#""accountSid": "AC00000000000000000000000000000002", "rawStatus""#,
        );
        let body = format!(r#"{{"events": [{own}, {foreign}]}}"#);
        let err = parse_event_batch(body.as_bytes(), &account).unwrap_err();
        assert!(
            matches!(&err, BatchError::ForeignAccount { field } if field == "events[1].status_reported.account_sid"),
            "{err}"
        );
        let body = format!(r#"{{"events": [{own}]}}"#);
        assert_eq!(
            parse_event_batch(body.as_bytes(), &account).unwrap().len(),
            1
        );
    }

    #[test]
    fn registrations_of_other_accounts_are_refused() {
        let account = AccountSid::parse(AC).unwrap();
        let body = format!(
            r#"{{"events": [{REPORT}, {}]}}"#,
            registration("AC00000000000000000000000000000002")
        );
        let err = parse_event_batch(body.as_bytes(), &account).unwrap_err();
        assert!(
            matches!(&err, BatchError::ForeignAccount { field } if field == "events[1].receipt_registered.account_sid"),
            "{err}"
        );
    }

    #[test]
    fn mistakes_name_the_field() {
        let account = AccountSid::parse(AC).unwrap();
        let cases = [
            ("[]".to_owned(), "events"),
            ("{}".to_owned(), "events"),
            (r#"{"events": []}"#.to_owned(), "events"),
            ("nope".to_owned(), "body"),
            (r#"{"events": [{"eventId": 5}]}"#.to_owned(), "events[0]"),
            (
                r#"{"events": [{"eventId": "x"}]}"#.to_owned(),
                "events[0].event",
            ),
            (
                format!(
                    r#"{{"events": [{REPORT}, {}]}}"#,
                    REPORT.replace("rep-1", "")
                ),
                "events[1].event_id",
            ),
            (
                format!(r#"{{"events": [{}]}}"#, REPORT.replace("delivered", "gone")),
                "events[0].status_reported.raw_status",
            ),
            (
                format!(
                    r#"{{"events": [{}]}}"#,
                    registration(AC).replace("MB00000000000000000000000000000001", "MB1")
                ),
                "events[0].receipt_registered.participant_sid",
            ),
        ];
        for (body, field) in cases {
            match parse_event_batch(body.as_bytes(), &account) {
                Err(BatchError::Invalid(err)) => assert_eq!(err.field, field, "{body}: {err}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
