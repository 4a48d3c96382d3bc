//! What every provider parser shares: the error that names the offending field, the
//! deterministic event id, and the provider time formats.

use receipts_domain::{
    DeliveryEvent, DeliveryEventKind, ReceiptKey, StatusReport, StatusSource, Timestamp,
    map_provider_status,
};
use sha2::{Digest, Sha256};

/// The provider formats reports come in, as metric labels and log fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Twilio,
    Whatsapp,
    Smpp,
    Canonical,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Twilio => "twilio",
            Format::Whatsapp => "whatsapp",
            Format::Smpp => "smpp",
            Format::Canonical => "canonical",
        }
    }
}

/// What is wrong with a field, coarse enough to label a metric with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    /// The body is not a form, JSON document or receipt text at all.
    Malformed,
    Missing,
    Invalid,
    UnknownStatus,
    /// A WhatsApp business phone number no account owns.
    UnknownPhoneNumber,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Malformed => "malformed",
            Problem::Missing => "missing_field",
            Problem::Invalid => "invalid_field",
            Problem::UnknownStatus => "unknown_status",
            Problem::UnknownPhoneNumber => "unknown_phone_number",
        }
    }
}

/// A client's mistake in one field of a report: answered with 400 and this field and reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {reason}")]
pub struct FieldError {
    /// The field as the provider names it (`MessageSid`, `entry[0].changes[0].value.statuses[1].timestamp`,
    /// `done date`).
    pub field: String,
    pub reason: String,
    pub problem: Problem,
}

impl FieldError {
    pub fn missing(field: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: "is missing".to_owned(),
            problem: Problem::Missing,
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
            problem: Problem::Invalid,
        }
    }

    pub fn malformed(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
            problem: Problem::Malformed,
        }
    }

    pub fn unknown_status(field: impl Into<String>, raw: &str) -> Self {
        FieldError {
            field: field.into(),
            reason: format!("has an unknown status {raw:?}"),
            problem: Problem::UnknownStatus,
        }
    }
}

/// The event id of a provider report: 32 hex digits of SHA-256 over the source, the account and
/// the provider's message id, the raw status, the provider timestamp and the error code.
///
/// A provider that resends the same report therefore yields the same id. `provider_time` is
/// `None` when the provider gave no time and the receipt time stands in for it: that time differs
/// between resends, so it must not take part.
pub fn event_id(
    source: StatusSource,
    key: &ReceiptKey,
    raw_status: &str,
    provider_time: Option<Timestamp>,
    error_code: Option<u32>,
) -> String {
    let time = provider_time.map_or_else(String::new, |t| t.unix_millis().to_string());
    let code = error_code.map_or_else(String::new, |c| c.to_string());
    let mut hasher = Sha256::new();
    hasher.update(b"receipts-ingest/v1");
    for part in [
        source.as_str(),
        key.account.as_str(),
        key.channel_message_id.as_str(),
        raw_status,
        &time,
        &code,
    ] {
        // Length-prefixing keeps ("ab", "c") and ("a", "bc") apart.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// A provider report as a validated event with its derived id. `time_given` says whether
/// `provider_time` came from the provider (and so takes part in the event id).
pub(crate) fn status_event(
    source: StatusSource,
    key: ReceiptKey,
    (status_field, raw_status): (&str, &str),
    provider_time: Timestamp,
    time_given: bool,
    error_code: Option<u32>,
) -> Result<DeliveryEvent, FieldError> {
    let status = map_provider_status(source, raw_status)
        .map_err(|_| FieldError::unknown_status(status_field, raw_status))?;
    let event_id = event_id(
        source,
        &key,
        raw_status,
        time_given.then_some(provider_time),
        error_code,
    );
    Ok(DeliveryEvent {
        event_id,
        kind: DeliveryEventKind::Reported(StatusReport {
            account: key.account,
            channel_message_id: key.channel_message_id,
            status,
            raw_status: raw_status.to_owned(),
            error_code,
            provider_time,
            source,
        }),
    })
}

/// Latest accepted time, 9999-12-31T23:59:59Z: anything later is a mistake, and bounding it
/// keeps the millisecond arithmetic far from overflow.
const MAX_UNIX_SECONDS: u64 = 253_402_300_799;

/// Unix seconds written in decimal, as WhatsApp sends them.
pub(crate) fn parse_unix_seconds(text: &str) -> Result<Timestamp, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "must be unix seconds in decimal digits, got {text:?}"
        ));
    }
    match text.parse::<u64>() {
        Ok(secs) if secs <= MAX_UNIX_SECONDS => Ok(Timestamp::from_unix_millis(secs as i64 * 1000)),
        _ => Err(format!("{text:?} is out of range")),
    }
}

/// `YYMMDDhhmm` or `YYMMDDhhmmss` (SMPP 3.4 Appendix B, and Twilio's `RawDlrDoneDate`), read
/// as UTC. Two-digit years are 2000–2099.
pub(crate) fn parse_yymmddhhmm(text: &str) -> Result<Timestamp, String> {
    let shape = || format!("must be YYMMDDhhmm or YYMMDDhhmmss, got {text:?}");
    if !(text.len() == 10 || text.len() == 12) || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(shape());
    }
    let n = |i: usize| -> u32 { text[i..i + 2].parse().expect("two ascii digits") };
    let second = if text.len() == 12 { n(10) } else { 0 };
    let time = chrono::NaiveDate::from_ymd_opt(2000 + n(0) as i32, n(2), n(4))
        .and_then(|date| date.and_hms_opt(n(6), n(8), second))
        .ok_or_else(|| format!("{text:?} is not a valid date and time"))?;
    Ok(Timestamp::from_unix_millis(
        time.and_utc().timestamp_millis(),
    ))
}

#[cfg(test)]
mod tests {
    use receipts_domain::{AccountSid, ChannelMessageId};

    use super::*;

    #[test]
    fn smpp_dates_are_utc() {
        // 2024-03-01 12:34 UTC
        assert_eq!(
            parse_yymmddhhmm("2403011234").unwrap().unix_millis(),
            1_709_296_440_000
        );
        assert_eq!(
            parse_yymmddhhmm("240301123456").unwrap().unix_millis(),
            1_709_296_496_000
        );
        assert_eq!(
            parse_yymmddhhmm("0001010000").unwrap().unix_millis(),
            946_684_800_000
        );
        assert!(parse_yymmddhhmm("2402291200").is_ok());
        for bad in [
            "",
            "240301123",
            "24030112345",
            "2302291200",
            "2413011200",
            "2400011200",
            "2403012400",
            "2403011260",
            "24-3011234",
        ] {
            assert!(parse_yymmddhhmm(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unix_seconds_are_bounded_digits() {
        assert_eq!(
            parse_unix_seconds("1603059201").unwrap().unix_millis(),
            1_603_059_201_000
        );
        for bad in [
            "",
            "-1",
            "1.5",
            " 1",
            "99999999999999999999",
            "253402300800",
        ] {
            assert!(parse_unix_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_ids_depend_on_every_part() {
        let key = |account: &str, id: &str| {
            ReceiptKey::new(
                AccountSid::parse(account).unwrap(),
                ChannelMessageId::parse(id).unwrap(),
            )
        };
        let a = "AC00000000000000000000000000000001";
        let id = key(a, "wamid.x");
        let t = Some(Timestamp::from_unix_millis(1_000));
        let base = event_id(StatusSource::WhatsappCloud, &id, "read", t, None);
        assert_eq!(base.len(), 32);
        assert_eq!(
            base,
            event_id(StatusSource::WhatsappCloud, &id, "read", t, None)
        );
        let other = key(a, "wamid.y");
        let other_account = key("AC00000000000000000000000000000002", "wamid.x");
        for different in [
            event_id(StatusSource::Smpp, &id, "read", t, None),
            event_id(StatusSource::WhatsappCloud, &other, "read", t, None),
            event_id(StatusSource::WhatsappCloud, &other_account, "read", t, None),
            event_id(StatusSource::WhatsappCloud, &id, "sent", t, None),
            event_id(StatusSource::WhatsappCloud, &id, "read", None, None),
            event_id(StatusSource::WhatsappCloud, &id, "read", t, Some(1)),
        ] {
            assert_ne!(base, different);
        }
    }
}
