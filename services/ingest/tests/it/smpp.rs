//! SMPP delivery receipts through the real broker.

use receipts_domain::{DeliveryStatus, StatusSource};

use crate::support::{
    ACCOUNT, Harness, SMPP_CONNECTION, SMPP_TOKEN, assert_nothing_written, read_events,
};

const RECEIPT: &str = "id:0123456789 sub:001 dlvrd:000 submit date:2403011230 done date:2403011234 stat:UNDELIV err:005 text:Hello";

fn path(connection: &str) -> String {
    format!("/v1/smpp/{connection}/receipts")
}

#[tokio::test]
async fn receipts_are_scoped_by_connection_and_timed_by_done_date() {
    let harness = Harness::start().await;
    let reader = harness.reader();
    let bearer = format!("Bearer {SMPP_TOKEN}");
    let response = harness
        .post(
            &path(SMPP_CONNECTION),
            &[("authorization", &bearer), ("content-type", "text/plain")],
            RECEIPT.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    let produced = read_events(&reader, 1).await;
    assert_eq!(
        produced[0].key,
        format!("{ACCOUNT}/smpp:smsc-eu:0123456789")
    );
    let report = produced[0].report();
    assert_eq!(report.status, DeliveryStatus::Undelivered);
    assert_eq!(report.raw_status, "UNDELIV");
    assert_eq!(report.error_code, Some(5));
    assert_eq!(report.provider_time.unix_millis(), 1_709_296_440_000);
    assert_eq!(report.source, StatusSource::Smpp);
    assert_eq!(produced[0].event.event_id, response.event_ids()[0]);
    harness.stop().await;
}

#[tokio::test]
async fn wrong_tokens_connections_and_fields_write_nothing() {
    let harness = Harness::start().await;
    let reader = harness.reader();
    let bearer = format!("Bearer {SMPP_TOKEN}");
    let response = harness
        .post(
            &path(SMPP_CONNECTION),
            &[("authorization", "Bearer wrong")],
            RECEIPT.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 401);
    assert!(
        response
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );
    let response = harness
        .post(&path(SMPP_CONNECTION), &[], RECEIPT.as_bytes())
        .await;
    assert_eq!(response.status, 401);
    let response = harness
        .post(
            &path("smsc-us"),
            &[("authorization", &bearer)],
            RECEIPT.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.error_field(), "connection");

    for (text, field) in [
        (RECEIPT.replace("2403011234", "2402301234"), "done date"),
        (RECEIPT.replace("UNDELIV", "BOUNCED"), "stat"),
        (RECEIPT.replace("id:0123456789 ", ""), "id"),
        ("hello".to_owned(), "body"),
    ] {
        let response = harness
            .post(
                &path(SMPP_CONNECTION),
                &[("authorization", &bearer)],
                text.as_bytes(),
            )
            .await;
        assert_eq!(response.status, 400, "{text}");
        assert_eq!(response.error_field(), field, "{text}");
    }
    let response = harness
        .post(
            &path(SMPP_CONNECTION),
            &[("authorization", &bearer)],
            b"id:\xff\xfe stat:DELIVRD",
        )
        .await;
    assert_eq!(response.status, 400);
    assert_nothing_written(&harness, &reader).await;
    harness.stop().await;
}
