//! The canonical JSON batch through the real broker.

use std::time::Duration;

use receipts_domain::{DeliveryEventKind, DeliveryStatus, StatusSource};

use crate::support::{
    ACCOUNT, AUTH_TOKEN, Harness, OTHER_ACCOUNT, OTHER_TOKEN, assert_no_more, basic, read_events,
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
    assert!(produced.iter().all(|p| p.key == SM));
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
    assert_no_more(&reader, Duration::from_secs(3)).await;
    harness.stop().await;
}
