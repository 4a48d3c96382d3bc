//! SMPP 3.4 delivery receipts (Appendix B), as an SMSC bridge posts the `short_message` text of a
//! `deliver_sm`:
//!
//! ```text
//! id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:...
//! ```
//!
//! Field names are matched case-insensitively and may come in any order; `text:` ends the
//! receipt. `id`, `stat` and `done date` are required; `err` is optional. The channel message id
//! is the SMSC's id scoped by the connection it came over, the provider time the done date
//! (UTC, seconds allowed), and the error code `err` when it is not zero.

use receipts_domain::{AccountSid, ChannelMessageId, DeliveryEvent, ReceiptKey, StatusSource};

use crate::report::{FieldError, parse_yymmddhhmm, status_event};

/// Field names in the order they are tried at a position: a longer name before its prefix.
const KEYS: [&str; 8] = [
    "submit date",
    "done date",
    "dlvrd",
    "stat",
    "text",
    "sub",
    "err",
    "id",
];

/// Parses one receipt received over the SMSC `connection`, which sends for `account`.
pub fn parse_smpp_receipt(
    account: &AccountSid,
    connection: &str,
    text: &str,
) -> Result<DeliveryEvent, FieldError> {
    let fields = split_fields(text.trim());
    if fields.is_empty() {
        return Err(FieldError::malformed(
            "body",
            "is not an SMPP delivery receipt (`id:… stat:… done date:…`)",
        ));
    }
    let get = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let required = |key: &'static str| {
        get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| FieldError::missing(key))
    };
    let id = required("id")?;
    if id.contains(char::is_whitespace) {
        return Err(FieldError::invalid("id", "must not contain spaces"));
    }
    let channel_message_id = ChannelMessageId::smpp(connection, id)
        .map_err(|e| FieldError::invalid("id", e.to_string()))?;
    let stat = required("stat")?;
    let done = parse_yymmddhhmm(required("done date")?)
        .map_err(|reason| FieldError::invalid("done date", reason))?;
    let error_code = match get("err") {
        None | Some("") => None,
        Some(err) if err.bytes().all(|b| b.is_ascii_digit()) => match err.parse::<u32>() {
            Ok(0) => None,
            Ok(code) => Some(code),
            Err(_) => {
                return Err(FieldError::invalid(
                    "err",
                    format!("{err:?} is out of range"),
                ));
            }
        },
        Some(err) => {
            return Err(FieldError::invalid(
                "err",
                format!("must be decimal digits, got {err:?}"),
            ));
        }
    };
    status_event(
        StatusSource::Smpp,
        ReceiptKey::new(account.clone(), channel_message_id),
        ("stat", stat),
        done,
        true,
        error_code,
    )
}

/// The `name:value` fields of a receipt, names lowercased, values trimmed; everything after
/// `text:` is the text.
fn split_fields(text: &str) -> Vec<(&'static str, &str)> {
    // ASCII lowercasing keeps byte offsets, so positions found in `lower` index `text`.
    let lower = text.to_ascii_lowercase();
    let mut starts: Vec<(&'static str, usize, usize)> = Vec::new();
    let mut at_boundary = true;
    for (i, c) in lower.char_indices() {
        if at_boundary
            && let Some(key) = KEYS
                .iter()
                .find(|key| lower[i..].starts_with(*key) && lower[i + key.len()..].starts_with(':'))
        {
            let value_start = i + key.len() + 1;
            starts.push((key, i, value_start));
            if *key == "text" {
                break;
            }
        }
        at_boundary = c.is_whitespace();
    }
    let mut fields = Vec::with_capacity(starts.len());
    for (n, &(key, _, value_start)) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(text.len(), |&(_, next, _)| next);
        // A key found inside an earlier value (after `text:`, say) starts before it ends.
        let value = text.get(value_start..end.max(value_start)).unwrap_or("");
        fields.push((key, value.trim()));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use receipts_domain::{DeliveryEventKind, DeliveryStatus, StatusReport};

    fn account() -> AccountSid {
        AccountSid::parse("AC00000000000000000000000000000001").unwrap()
    }

    fn report(text: &str) -> (String, StatusReport) {
        let event = parse_smpp_receipt(&account(), "smsc-eu", text).unwrap();
        match event.kind {
            DeliveryEventKind::Reported(r) => (event.event_id, r),
            DeliveryEventKind::Registered(_) => panic!("a report"),
        }
    }

    const DELIVERED: &str = "id:0123456789 sub:001 dlvrd:001 submit date:2403011230 done date:2403011234 stat:DELIVRD err:000 text:Hello world";

    #[test]
    fn an_appendix_b_receipt_becomes_a_report() {
        let (id, r) = report(DELIVERED);
        assert_eq!(r.channel_message_id.as_str(), "smpp:smsc-eu:0123456789");
        assert_eq!(r.status, DeliveryStatus::Delivered);
        assert_eq!(r.raw_status, "DELIVRD");
        assert_eq!(r.error_code, None);
        assert_eq!(r.provider_time.unix_millis(), 1_709_296_440_000);
        assert_eq!(r.source, StatusSource::Smpp);
        assert_eq!(r.account, account());
        assert_eq!(report(DELIVERED).0, id);
        // The same SMSC id over another connection is another message.
        let other = parse_smpp_receipt(&account(), "smsc-us", DELIVERED).unwrap();
        assert_ne!(other.event_id, id);
    }

    #[test]
    fn variants_seen_in_the_wild_are_read() {
        let (_, r) = report(
            "id:ab12CD Sub:1 Dlvrd:0 Submit date:2403011230 Done date:240301123456 Stat:UNDELIV Err:005 Text:stat:DELIVRD id:x",
        );
        assert_eq!(r.channel_message_id.as_str(), "smpp:smsc-eu:ab12CD");
        assert_eq!(r.status, DeliveryStatus::Undelivered);
        assert_eq!(r.error_code, Some(5));
        assert_eq!(r.provider_time.unix_millis(), 1_709_296_496_000);
        // Minimal: only what is needed, in another order, no err.
        let (_, r) = report("stat:EXPIRED done date:2403020000 id:77");
        assert_eq!(r.status, DeliveryStatus::Undelivered);
        assert_eq!(r.error_code, None);
    }

    #[test]
    fn mistakes_name_the_field() {
        let cases = [
            ("", "body"),
            ("hello", "body"),
            ("sub:001 done date:2403011234 stat:DELIVRD", "id"),
            ("id: done date:2403011234 stat:DELIVRD", "id"),
            ("id:1 done date:2403011234", "stat"),
            ("id:1 stat:DELIVRD", "done date"),
            ("id:1 done date:24030112 stat:DELIVRD", "done date"),
            ("id:1 done date:2413011234 stat:DELIVRD", "done date"),
            ("id:1 done date:2403011234 stat:DELIVERED", "stat"),
            ("id:1 done date:2403011234 stat:DELIVRD err:0x1", "err"),
            ("id:1 2 done date:2403011234 stat:DELIVRD", "id"),
        ];
        for (text, field) in cases {
            let err = parse_smpp_receipt(&account(), "c", text).unwrap_err();
            assert_eq!(err.field, field, "{text}: {err}");
        }
    }
}
