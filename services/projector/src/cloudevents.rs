//! CloudEvents 1.0 attributes of every `receipt-updates` record, in the Kafka protocol binding's
//! binary mode: one `ce_`-prefixed header per attribute beside the unchanged protobuf (or JSON)
//! payload, so a generic consumer can route and filter on them without decoding anything. The
//! binding maps the record's existing `content-type` header to `datacontenttype`.
//!
//! Every attribute is a function of the published change alone, so the re-emission of a change
//! after a crash (same receipt sid, same version) carries the same `ce_id` and `ce_time`, and a
//! consumer that deduplicates by (`ce_source`, `ce_id`) drops it like a version check would.

use receipts_domain::{ReceiptChange, Timestamp};

/// The CloudEvents version these headers follow.
pub const SPEC_VERSION: &str = "1.0";

/// `ce_type` of a receipt update: the full name of its protobuf message.
pub const RECEIPT_UPDATED_TYPE: &str = "receipts.v1.ReceiptUpdated";

/// The `ce_` headers of the record publishing `change`:
/// - `ce_id`: `{receipt sid}/{version}`, unique per change of a receipt;
/// - `ce_source`: `/receipts/v1/accounts/{account sid}`, so events can be routed per tenant;
/// - `ce_subject`: the receipt sid;
/// - `ce_time`: when the receipt's current status was reported (its creation while there is none),
///   RFC 3339 in UTC with milliseconds.
pub fn receipt_updated_headers(change: &ReceiptChange) -> Vec<(&'static str, String)> {
    let receipt = &change.receipt;
    vec![
        ("ce_specversion", SPEC_VERSION.to_owned()),
        ("ce_id", format!("{}/{}", receipt.sid, receipt.version)),
        (
            "ce_source",
            format!("/receipts/v1/accounts/{}", receipt.registration.account),
        ),
        ("ce_type", RECEIPT_UPDATED_TYPE.to_owned()),
        ("ce_subject", receipt.sid.to_string()),
        ("ce_time", rfc3339_millis(receipt.date_updated())),
    ]
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339_millis(at: Timestamp) -> String {
    at.to_utc()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(
            rfc3339_millis(Timestamp::from_unix_millis(0)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_millis(Timestamp::from_unix_millis(1_767_225_599_007)),
            "2025-12-31T23:59:59.007Z"
        );
        assert_eq!(
            rfc3339_millis(Timestamp::from_unix_millis(-1)),
            "1969-12-31T23:59:59.999Z"
        );
    }
}
