//! Twilio Messaging status callbacks through the real broker.

use receipts_domain::{DeliveryStatus, StatusSource};
use receipts_ingest::twilio::{form_pairs, twilio_signature};

use crate::support::{
    ACCOUNT, AUTH_TOKEN, Harness, OTHER_TOKEN, PUBLIC_BASE_URL, assert_nothing_written, read_events,
};

const PATH: &str = "/v1/twilio/status";
const SM: &str = "SM0123456789abcdef0123456789abcdef";
const FORM: &str = "application/x-www-form-urlencoded";

/// Signs `body` as Twilio does for a POST to `path` behind the public base URL.
fn signed(token: &str, path: &str, body: &str) -> String {
    twilio_signature(
        token,
        &format!("{PUBLIC_BASE_URL}{path}"),
        &form_pairs(body.as_bytes()),
    )
}

/// A signed callback is stored as a Twilio status report keyed by MessageSid, with its raw
/// status and error code, before the 200; the same callback again has the same event id.
#[tokio::test]
async fn signed_callbacks_become_status_reports() {
    let harness = Harness::start().await;
    let reader = harness.reader();
    let body = format!(
        "AccountSid={ACCOUNT}&ApiVersion=2010-04-01&MessageSid={SM}&MessageStatus=undelivered&ErrorCode=30003&To=%2B15558675310"
    );
    // The query string is part of the signed URL.
    let path = format!("{PATH}?source=sms");
    let signature = signed(AUTH_TOKEN, &path, &body);
    let headers = [("content-type", FORM), ("x-twilio-signature", &signature)];

    let first = harness.post(&path, &headers, body.as_bytes()).await;
    assert_eq!(first.status, 200, "{:?}", first.json());
    let again = harness.post(&path, &headers, body.as_bytes()).await;
    assert_eq!(again.status, 200);
    assert_eq!(first.event_ids(), again.event_ids());

    let produced = read_events(&reader, 2).await;
    for record in &produced {
        assert_eq!(record.key, format!("{ACCOUNT}/{SM}"));
        assert_eq!(record.content_type, "application/x-protobuf");
        assert_eq!(record.event.event_id, first.event_ids()[0]);
        let report = record.report();
        assert_eq!(report.channel_message_id.as_str(), SM);
        assert_eq!(report.status, DeliveryStatus::Undelivered);
        assert_eq!(report.raw_status, "undelivered");
        assert_eq!(report.error_code, Some(30003));
        assert_eq!(report.source, StatusSource::TwilioMessaging);
    }

    // The carrier's done date is the provider time.
    let body = format!(
        "AccountSid={ACCOUNT}&MessageSid={SM}&MessageStatus=delivered&RawDlrDoneDate=2403011234"
    );
    let signature = signed(AUTH_TOKEN, PATH, &body);
    let response = harness
        .post(PATH, &[("x-twilio-signature", &signature)], body.as_bytes())
        .await;
    assert_eq!(response.status, 200);
    let produced = read_events(&reader, 1).await;
    assert_eq!(
        produced[0].report().provider_time.unix_millis(),
        1_709_296_440_000
    );

    let metrics = harness.metrics.render();
    assert!(
        metrics.contains("receipts_ingest_reports_accepted_total{format=\"twilio\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("receipts_ingest_produce_seconds_count 3"),
        "{metrics}"
    );
    harness.stop().await;
}

/// Wrong signatures and unknown accounts get 403, bad fields 400 naming the field; none of them
/// writes anything.
#[tokio::test]
async fn bad_signatures_and_bad_fields_write_nothing() {
    let harness = Harness::start().await;
    let reader = harness.reader();
    let body = format!("AccountSid={ACCOUNT}&MessageSid={SM}&MessageStatus=delivered");

    // Signed with another account's token, for another URL, tampered with, or not at all.
    let wrong_token = signed(OTHER_TOKEN, PATH, &body);
    let wrong_url = twilio_signature(
        AUTH_TOKEN,
        &format!("http://127.0.0.1:8080{PATH}"),
        &form_pairs(body.as_bytes()),
    );
    for signature in [wrong_token.as_str(), wrong_url.as_str(), "", "garbage"] {
        let response = harness
            .post(PATH, &[("x-twilio-signature", signature)], body.as_bytes())
            .await;
        assert_eq!(response.status, 403, "{signature}");
        assert_eq!(response.error_field(), "X-Twilio-Signature");
    }
    let tampered = body.replace("delivered", "read");
    let response = harness
        .post(
            PATH,
            &[("x-twilio-signature", &signed(AUTH_TOKEN, PATH, &body))],
            tampered.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 403);

    let unknown = body.replace(ACCOUNT, "AC99999999999999999999999999999999");
    let response = harness
        .post(
            PATH,
            &[("x-twilio-signature", &signed(AUTH_TOKEN, PATH, &unknown))],
            unknown.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.error_field(), "AccountSid");

    for (body, field) in [
        (
            format!("AccountSid={ACCOUNT}&MessageStatus=sent"),
            "MessageSid",
        ),
        (
            format!("AccountSid={ACCOUNT}&MessageSid={SM}&MessageStatus=bogus"),
            "MessageStatus",
        ),
        (
            format!("AccountSid={ACCOUNT}&MessageSid={SM}&MessageStatus=failed&ErrorCode=x"),
            "ErrorCode",
        ),
    ] {
        let response = harness
            .post(
                PATH,
                &[("x-twilio-signature", &signed(AUTH_TOKEN, PATH, &body))],
                body.as_bytes(),
            )
            .await;
        assert_eq!(response.status, 400, "{body}");
        assert_eq!(response.error_field(), field);
        assert!(
            !response.json()["error"]["reason"]
                .as_str()
                .unwrap()
                .is_empty()
        );
    }

    assert_nothing_written(&harness, &reader).await;
    let metrics = harness.metrics.render();
    assert!(
        metrics.contains(
            "receipts_ingest_requests_rejected_total{format=\"twilio\",reason=\"bad_signature\"} 5"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "receipts_ingest_requests_rejected_total{format=\"twilio\",reason=\"unknown_status\"} 1"
        ),
        "{metrics}"
    );
    harness.stop().await;
}
