//! Twilio Programmable Messaging status callbacks: an `application/x-www-form-urlencoded` POST
//! with `MessageSid`, `MessageStatus`, `ErrorCode`, `AccountSid`, … and an `X-Twilio-Signature`.
//!
//! Provider time: the callback has no reliable timestamp. When the carrier's delivery receipt
//! date is passed through (`RawDlrDoneDate`, `YYMMDDhhmm`, read as UTC) it is the provider time;
//! otherwise the time the callback was received stands in, and the event id is derived without
//! it, so a resent callback still gets the same id. Its stand-in time is later, though, so the
//! projector may take the copy for a newer report of the same status: the receipt's status,
//! error code and the message's summary stay as they are, only its `date_updated` moves. A
//! `RawDlrDoneDate` that cannot be read is treated as absent: Twilio does not retry a 4xx, and
//! rejecting the report for an optional hint would lose the status itself.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use receipts_domain::{
    AccountSid, ChannelMessageId, DeliveryEvent, ReceiptKey, StatusSource, Timestamp,
};

use crate::report::{FieldError, parse_yymmddhhmm, status_event};

/// One accepted status callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioCallback {
    /// The account whose auth token signed the callback: the report is that account's.
    pub account: AccountSid,
    pub event: DeliveryEvent,
}

/// The name/value pairs of a form body, in order, repeated names kept. Bytes that are not UTF-8
/// are replaced, which is what the signature check then sees too.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// The first value of `name`, if any.
pub fn form_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Parses a status callback form. `received_at` is the provider time when the form carries no
/// usable `RawDlrDoneDate`.
pub fn parse_twilio_form(
    body: &[u8],
    received_at: Timestamp,
) -> Result<TwilioCallback, FieldError> {
    parse_twilio_pairs(&form_pairs(body), received_at)
}

/// [`parse_twilio_form`] on pairs already decoded (for the signature check).
pub fn parse_twilio_pairs(
    pairs: &[(String, String)],
    received_at: Timestamp,
) -> Result<TwilioCallback, FieldError> {
    let required = |name: &'static str| {
        form_value(pairs, name)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| FieldError::missing(name))
    };
    let account = AccountSid::parse(required("AccountSid")?)
        .map_err(|e| FieldError::invalid("AccountSid", e.to_string()))?;
    let message_sid = required("MessageSid")?;
    let channel_message_id = ChannelMessageId::parse(message_sid)
        .map_err(|e| FieldError::invalid("MessageSid", e.to_string()))?;
    let raw_status = required("MessageStatus")?;
    let error_code = match form_value(pairs, "ErrorCode").map(str::trim) {
        None | Some("") => None,
        Some(code) => match code.parse::<u32>() {
            Ok(0) => None,
            Ok(code) => Some(code),
            Err(_) => {
                return Err(FieldError::invalid(
                    "ErrorCode",
                    format!("must be a non-negative integer, got {code:?}"),
                ));
            }
        },
    };
    let done = form_value(pairs, "RawDlrDoneDate").and_then(|d| parse_yymmddhhmm(d.trim()).ok());
    let event = status_event(
        StatusSource::TwilioMessaging,
        ReceiptKey::new(account.clone(), channel_message_id),
        ("MessageStatus", raw_status),
        done.unwrap_or(received_at),
        done.is_some(),
        error_code,
    )?;
    Ok(TwilioCallback { account, event })
}

/// `X-Twilio-Signature` of a form POST to `url`: the same signature the dispatcher puts on
/// webhooks (contract §6a).
pub use receipts_webhook::twilio::signature as twilio_signature;

/// Whether `signature` is the signature of the form for `url`, compared in constant time. Like
/// Twilio's own validators, the URL is also tried with its default port added or removed, since
/// Twilio is not consistent about it.
pub fn verify_twilio_signature(
    auth_token: &str,
    url: &str,
    pairs: &[(String, String)],
    signature: &str,
) -> bool {
    let Ok(given) = BASE64.decode(signature.trim()) else {
        return false;
    };
    url_port_variants(url).iter().any(|candidate| {
        let expected = BASE64
            .decode(twilio_signature(auth_token, candidate, pairs))
            .unwrap_or_default();
        receipts_runtime::auth::same_bytes(&expected, &given)
    })
}

/// `url` as given, plus the same URL with the scheme's default port added (when it has none)
/// or removed (when it has the default one).
fn url_port_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return variants,
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    // Credentials are never part of the signed URL.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port_sep = host_port
        .rfind(':')
        .filter(|&i| !host_port[i..].contains(']'));
    match port_sep {
        Some(i) if &host_port[i + 1..] == default_port => {
            variants.push(format!("{scheme}://{}{tail}", &host_port[..i]));
        }
        Some(_) => {}
        None => variants.push(format!("{scheme}://{host_port}:{default_port}{tail}")),
    }
    variants
}

#[cfg(test)]
mod tests {
    use super::*;
    use receipts_domain::{DeliveryEventKind, DeliveryStatus};

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    // Test vectors of the Twilio docs and helper libraries (reference contract §6a).
    #[test]
    fn signature_matches_the_documented_vectors() {
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]);
        let url = "https://example.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            twilio_signature("12345", url, &params),
            "L/OH5YylLD5NRKLltdqwSvS0BnU="
        );
        assert!(verify_twilio_signature(
            "12345",
            url,
            &params,
            "L/OH5YylLD5NRKLltdqwSvS0BnU="
        ));
        assert!(!verify_twilio_signature(
            "54321",
            url,
            &params,
            "L/OH5YylLD5NRKLltdqwSvS0BnU="
        ));
        assert!(!verify_twilio_signature(
            "12345",
            url,
            &params,
            "not base64!"
        ));

        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            twilio_signature("12345", url, &params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        // Signed with the port, checked against the configured URL without it, and back.
        assert!(verify_twilio_signature(
            "12345",
            url,
            &params,
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert!(verify_twilio_signature(
            "12345",
            with_port,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn repeated_values_are_sorted_and_deduplicated() {
        let params = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            twilio_signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    #[test]
    fn url_variants_add_or_drop_the_default_port_only() {
        assert_eq!(
            url_port_variants("https://h.example/p?q=1"),
            ["https://h.example/p?q=1", "https://h.example:443/p?q=1"]
        );
        assert_eq!(
            url_port_variants("http://h.example:80/p"),
            ["http://h.example:80/p", "http://h.example/p"]
        );
        assert_eq!(
            url_port_variants("https://h.example:8443/p"),
            ["https://h.example:8443/p"]
        );
    }

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const SM: &str = "SM0123456789abcdef0123456789abcdef";

    #[test]
    fn a_callback_becomes_a_twilio_status_report() {
        let body = format!(
            "AccountSid={AC}&MessageSid={SM}&MessageStatus=undelivered&ErrorCode=30003&To=%2B15558675310"
        );
        let received = Timestamp::from_unix_millis(1_700_000_000_000);
        let callback = parse_twilio_form(body.as_bytes(), received).unwrap();
        assert_eq!(callback.account.as_str(), AC);
        let DeliveryEventKind::Reported(report) = &callback.event.kind else {
            panic!("a report");
        };
        assert_eq!(report.channel_message_id.as_str(), SM);
        assert_eq!(report.status, DeliveryStatus::Undelivered);
        assert_eq!(report.raw_status, "undelivered");
        assert_eq!(report.error_code, Some(30003));
        assert_eq!(report.provider_time, received);
        assert_eq!(report.source, StatusSource::TwilioMessaging);

        // A resend, received later, is the same event.
        let later = Timestamp::from_unix_millis(1_700_000_060_000);
        let again = parse_twilio_form(body.as_bytes(), later).unwrap();
        assert_eq!(again.event.event_id, callback.event.event_id);
    }

    #[test]
    fn the_carrier_done_date_is_the_provider_time() {
        let body = format!(
            "AccountSid={AC}&MessageSid={SM}&MessageStatus=delivered&RawDlrDoneDate=2403011234"
        );
        let callback = parse_twilio_form(body.as_bytes(), Timestamp::EPOCH).unwrap();
        let DeliveryEventKind::Reported(report) = &callback.event.kind else {
            panic!("a report");
        };
        assert_eq!(report.provider_time.unix_millis(), 1_709_296_440_000);
        assert_eq!(report.error_code, None);
        // An unreadable done date is ignored rather than losing the report.
        let body = format!(
            "AccountSid={AC}&MessageSid={SM}&MessageStatus=delivered&RawDlrDoneDate=garbage"
        );
        let callback = parse_twilio_form(body.as_bytes(), Timestamp::EPOCH).unwrap();
        let DeliveryEventKind::Reported(report) = &callback.event.kind else {
            panic!("a report");
        };
        assert_eq!(report.provider_time, Timestamp::EPOCH);
    }

    #[test]
    fn mistakes_name_the_field() {
        let cases = [
            (format!("AccountSid={AC}&MessageStatus=sent"), "MessageSid"),
            (format!("AccountSid={AC}&MessageSid={SM}"), "MessageStatus"),
            (format!("MessageSid={SM}&MessageStatus=sent"), "AccountSid"),
            (
                format!("AccountSid=nope&MessageSid={SM}&MessageStatus=sent"),
                "AccountSid",
            ),
            (
                format!("AccountSid={AC}&MessageSid={SM}&MessageStatus=received"),
                "MessageStatus",
            ),
            (
                format!("AccountSid={AC}&MessageSid={SM}&MessageStatus=failed&ErrorCode=x1"),
                "ErrorCode",
            ),
            (
                format!("AccountSid={AC}&MessageSid=a%0Ab&MessageStatus=sent"),
                "MessageSid",
            ),
        ];
        for (body, field) in cases {
            let err = parse_twilio_form(body.as_bytes(), Timestamp::EPOCH).unwrap_err();
            assert_eq!(err.field, field, "{body}: {err}");
        }
    }
}
