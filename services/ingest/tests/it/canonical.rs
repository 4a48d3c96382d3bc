//! The canonical JSON batch through the real broker.

use receipts_domain::{DeliveryEventKind, DeliveryStatus, StatusSource};
use receipts_ingest::MAX_EVENT_BYTES;

use crate::support::{
    ACCOUNT, AUTH_TOKEN, Harness, OTHER_ACCOUNT, OTHER_TOKEN, assert_nothing_written, basic,
    fresh_config, read_events,
};

const PATH: &str = "/v1/events";
const SM: &str = "SM00000000000000000000000000000001";

fn registration(account: &str, event_id: &str) -> String {
    format!(
        r#"{{"eventId": "{event_id}", "occurredAt": "2024-03-01T12:00:00Z", "receiptRegistered": {{
            "accountSid": "{account}", "conversationSid": "CH00000000000000000000000000000001",
            "messageSid": "IM00000000000000000000000000000001", "messageIndex": "3",
            "participantSid": "MB00000000000000000000000000000001", "channel": "CHANNEL_SMS",
            "channelMessageId": "{SM}", "expectedReceipts": 2}}}}"#
    )
}

fn report(raw_status: &str) -> String {
    format!(
        r#"{{"eventId": "rep-{raw_status}", "statusReported": {{
            "channelMessageId": "{SM}", "rawStatus": "{raw_status}",
            "providerTimestamp": "2024-03-01T12:00:05Z", "source": "STATUS_SOURCE_TWILIO_MESSAGING"}}}}"#
    )
}

#[tokio::test]
async fn registrations_and_reports_are_stored_in_order() {
    let harness = Harness::start().await;
    let reader = harness.reader();
    let body = format!(
        r#"{{"events": [{}, {}]}}"#,
        registration(ACCOUNT, "reg-1"),
        report("delivered")
    );
    let response = harness
        .post(
            PATH,
            &[
                ("authorization", &basic(ACCOUNT, AUTH_TOKEN)),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    assert_eq!(response.event_ids(), ["reg-1", "rep-delivered"]);
    // Same key, so the same partition and the posted order.
    let produced = read_events(&reader, 2).await;
    assert!(produced.iter().all(|p| p.key == format!("{ACCOUNT}/{SM}")));
    let DeliveryEventKind::Registered(registration) = &produced[0].event.kind else {
        panic!("a registration first: {:?}", produced[0].event);
    };
    assert_eq!(registration.account.as_str(), ACCOUNT);
    assert_eq!(registration.expected_receipts, 2);
    let report = produced[1].report();
    assert_eq!(report.status, DeliveryStatus::Delivered);
    assert_eq!(report.source, StatusSource::TwilioMessaging);
    harness.stop().await;
}

/// No or wrong credentials are 401, another account's registration 403, any invalid event 400;
/// in each case nothing of the batch is written.
#[tokio::test]
async fn a_batch_is_refused_whole() {
    let harness = Harness::start().await;
    let reader = harness.reader();
    let valid = format!(r#"{{"events": [{}]}}"#, report("delivered"));
    for auth in [
        None,
        Some(basic(ACCOUNT, OTHER_TOKEN)),
        Some(basic("AC99999999999999999999999999999999", AUTH_TOKEN)),
        Some("Basic !!!".to_owned()),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let response = harness.post(PATH, &headers, valid.as_bytes()).await;
        assert_eq!(response.status, 401, "{auth:?}");
        assert!(
            response
                .header("www-authenticate")
                .unwrap()
                .starts_with("Basic")
        );
    }

    let foreign = format!(
        r#"{{"events": [{}, {}]}}"#,
        report("delivered"),
        registration(OTHER_ACCOUNT, "reg-2")
    );
    let response = harness
        .post(
            PATH,
            &[("authorization", &basic(ACCOUNT, AUTH_TOKEN))],
            foreign.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 403);
    assert_eq!(
        response.error_field(),
        "events[1].receipt_registered.account_sid"
    );
    // The other account may post it.
    let response = harness
        .post(
            PATH,
            &[("authorization", &basic(OTHER_ACCOUNT, OTHER_TOKEN))],
            foreign.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 200);
    read_events(&reader, 2).await;

    let invalid = format!(
        r#"{{"events": [{}, {}]}}"#,
        report("delivered"),
        report("gone")
    );
    let response = harness
        .post(
            PATH,
            &[("authorization", &basic(ACCOUNT, AUTH_TOKEN))],
            invalid.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(
        response.error_field(),
        "events[1].status_reported.raw_status"
    );
    assert_nothing_written(&harness, &reader).await;
    harness.stop().await;
}

/// A status report whose raw status is `len` bytes long (with an explicit status, so any text
/// is allowed).
fn long_report(event_id: &str, len: usize) -> String {
    format!(
        r#"{{"eventId": "{event_id}", "statusReported": {{
            "channelMessageId": "{SM}", "rawStatus": "{}", "status": "DELIVERY_STATUS_DELIVERED",
            "providerTimestamp": "2024-03-01T12:00:05Z"}}}}"#,
        "d".repeat(len)
    )
}

/// An event too large to be a record is refused with the request before anything is produced.
#[tokio::test]
async fn an_oversized_event_refuses_the_batch() {
    let mut config = fresh_config().await;
    config.body_limit_bytes = 4 * MAX_EVENT_BYTES;
    let harness = Harness::start_with(config).await;
    let reader = harness.reader();
    let body = format!(
        r#"{{"events": [{}, {}]}}"#,
        report("delivered"),
        long_report("rep-long", MAX_EVENT_BYTES + 1)
    );
    let response = harness
        .post(
            PATH,
            &[("authorization", &basic(ACCOUNT, AUTH_TOKEN))],
            body.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.error_field(), "body");
    assert_nothing_written(&harness, &reader).await;
    harness.stop().await;
}

/// When Kafka takes the first events of a request and refuses a later one, the answer is 503,
/// not 2xx; the retry writes identical copies (same key, id and payload) of what was taken, which
/// the projector ignores.
#[tokio::test]
async fn a_half_acknowledged_batch_is_503_and_its_retry_writes_identical_copies() {
    let mut config = fresh_config().await;
    // librdkafka refuses records over 2000 bytes, while the gateway lets events of up to
    // MAX_EVENT_BYTES through: the second event fails after the first was produced.
    config
        .kafka
        .properties
        .insert("message.max.bytes".into(), "2000".into());
    let harness = Harness::start_with(config).await;
    let reader = harness.reader();
    let body = format!(
        r#"{{"events": [{}, {}]}}"#,
        report("delivered"),
        long_report("rep-long", 4000)
    );
    let mut copies = Vec::new();
    for _attempt in 0..2 {
        let response = harness
            .post(
                PATH,
                &[("authorization", &basic(ACCOUNT, AUTH_TOKEN))],
                body.as_bytes(),
            )
            .await;
        assert_eq!(response.status, 503, "{:?}", response.json());
        assert_eq!(response.header("retry-after"), Some("7"));
        copies.extend(read_events(&reader, 1).await);
    }
    assert_eq!(copies[0].key, copies[1].key);
    assert_eq!(copies[0].event, copies[1].event);
    assert_eq!(copies[0].event.event_id, "rep-delivered");
    assert_nothing_written(&harness, &reader).await;
    harness.stop().await;
}
