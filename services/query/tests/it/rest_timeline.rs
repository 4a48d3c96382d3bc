//! `GET …/Messages/{IM}/Receipts/{DY}/Timeline`, the REST extension Twilio does not have: the
//! same history as gRPC's `GetReceiptTimeline`, in the facade's JSON, with the Receipts
//! resource's auth and errors.

use receipts_domain::{ReceiptSid, Timestamp};
use receipts_proto::v1;
use serde_json::{Value, json};

use crate::contract::{assert_keys, assert_twilio_error};
use crate::rest::{Seeded, service, start_seeded};
use crate::support::{ACCOUNT, OTHER_ACCOUNT, OTHER_TOKEN, TOKEN, client, http, sid};

const TIMELINE_KEYS: [&str; 6] = [
    "account_sid",
    "conversation_sid",
    "message_sid",
    "receipt_sid",
    "entries",
    "url",
];
const ENTRY_KEYS: [&str; 5] = ["status", "raw_status", "error_code", "source", "date"];

/// The sid of the receipt of `message` sent to participant `participant`, read through `family`.
async fn receipt_of(seeded: &Seeded, family: &str, message: &str, participant: u64) -> String {
    let listed = seeded
        .get(&format!("{family}/Messages/{message}/Receipts"))
        .await
        .json();
    listed["delivery_receipts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|receipt| receipt["participant_sid"] == sid("MB", participant))
        .and_then(|receipt| receipt["sid"].as_str())
        .unwrap()
        .to_owned()
}

fn not_found(receipt: &str) -> String {
    json!({
        "code": 20404,
        "message": format!("The requested resource receipt {receipt} was not found"),
        "more_info": "https://www.twilio.com/docs/errors/20404",
        "status": 404,
    })
    .to_string()
}

/// gRPC's entry as the REST extension shows it.
fn shown(entry: &v1::TimelineEntry) -> Value {
    let status = v1::DeliveryStatus::try_from(entry.status).unwrap();
    let status = match status {
        v1::DeliveryStatus::Queued => Value::Null,
        status => {
            let name = status.as_str_name();
            json!(name.trim_start_matches("DELIVERY_STATUS_").to_lowercase())
        }
    };
    let reported = !entry.raw_status.is_empty();
    json!({
        "status": status,
        "raw_status": if reported { json!(entry.raw_status) } else { Value::Null },
        "error_code": entry.error_code,
        "source": if reported { json!("twilio") } else { Value::Null },
        "date": entry.provider_timestamp.as_ref().map(|t| {
            Timestamp::from_unix_millis(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
                .iso8601_seconds()
        }),
    })
}

#[tokio::test]
async fn a_receipts_timeline_is_served_over_rest_as_over_grpc() {
    let seeded = start_seeded().await;
    let (ch1, im10) = (sid("CH", 1), sid("IM", 10));
    let family = format!("/v1/Conversations/{ch1}");
    let dy = receipt_of(&seeded, &family, &im10, 1).await;
    let path = format!("{family}/Messages/{im10}/Receipts/{dy}/Timeline");

    let response = seeded.get(&path).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_keys(&body, &TIMELINE_KEYS);
    assert_eq!(
        (
            &body["account_sid"],
            &body["conversation_sid"],
            &body["message_sid"],
            &body["receipt_sid"],
            &body["url"],
        ),
        (
            &json!(ACCOUNT),
            &json!(ch1),
            &json!(im10),
            &json!(dy),
            &json!(seeded.url(&path)),
        )
    );
    let entries = body["entries"].as_array().unwrap();
    for entry in entries {
        assert_keys(entry, &ENTRY_KEYS);
    }
    // Sent at 2 s, read at 4 s: the latest status is last.
    assert_eq!(
        entries.last().unwrap(),
        &json!({
            "status": "read",
            "raw_status": "read",
            "error_code": 0,
            "source": "twilio",
            "date": "1970-01-01T00:00:04Z",
        })
    );

    let mut grpc = client(seeded.running.address, ACCOUNT, TOKEN).await;
    let timeline = grpc
        .get_receipt_timeline(v1::GetReceiptTimelineRequest {
            conversation_sid: ch1.clone(),
            message_sid: im10.clone(),
            receipt_sid: dy.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let expected: Vec<Value> = timeline.entries.iter().map(shown).collect();
    assert_eq!(entries, &expected);

    // The failed receipt's error code is shown as a receipt's.
    let im11 = sid("IM", 11);
    let failed = receipt_of(&seeded, &family, &im11, 1).await;
    let body = seeded
        .get(&format!(
            "{family}/Messages/{im11}/Receipts/{failed}/Timeline"
        ))
        .await
        .json();
    let last = body["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["status"], &last["error_code"]),
        (&json!("failed"), &json!(30003))
    );
    seeded.running.stop().await;
}

#[tokio::test]
async fn a_timeline_has_the_receipts_resources_auth_and_errors() {
    let seeded = start_seeded().await;
    let (ch1, im10, ch2, im20) = (sid("CH", 1), sid("IM", 10), sid("CH", 2), sid("IM", 20));
    let family = format!("/v1/Conversations/{ch1}");
    let dy = receipt_of(&seeded, &family, &im10, 1).await;
    let path = format!("{family}/Messages/{im10}/Receipts/{dy}/Timeline");

    // Unknown: the Twilio body, byte for byte.
    let unknown = sid("DY", 99);
    let response = seeded
        .get(&format!(
            "{family}/Messages/{im10}/Receipts/{unknown}/Timeline"
        ))
        .await;
    assert_eq!((response.status, response.body), (404, not_found(&unknown)));
    // Under another message of the conversation, the receipt is not found either.
    let response = seeded
        .get(&format!(
            "{family}/Messages/{}/Receipts/{dy}/Timeline",
            sid("IM", 12)
        ))
        .await;
    assert_eq!((response.status, response.body), (404, not_found(&dy)));

    // Another account does not see it; no or wrong credentials are 401.
    let other = http(
        "GET",
        &seeded.url(&path),
        Some((OTHER_ACCOUNT, OTHER_TOKEN)),
        &[],
    )
    .await;
    assert_eq!((other.status, other.body), (404, not_found(&dy)));
    let anonymous = http("GET", &seeded.url(&path), None, &[]).await;
    assert_twilio_error(&anonymous.body, 401, 20003);
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic"))
    );

    // A malformed receipt sid names the parameter the receipt's sid is under.
    let response = seeded
        .get(&format!("{family}/Messages/{im10}/Receipts/DY123/Timeline"))
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(
        response.json()["message"],
        format!(
            "Invalid parameter ReceiptSid: {}",
            ReceiptSid::parse("DY123").unwrap_err()
        )
    );
    assert_twilio_error(&response.body, 400, 20001);

    // The service family shows its chat service, and hides the receipt from another service.
    let services = format!("/v1/Services/{}/Conversations/{ch2}", service());
    let dy20 = receipt_of(&seeded, &services, &im20, 1).await;
    let path = format!("{services}/Messages/{im20}/Receipts/{dy20}/Timeline");
    let body = seeded.get(&path).await.json();
    let mut keys = TIMELINE_KEYS.to_vec();
    keys.insert(1, "chat_service_sid");
    assert_keys(&body, &keys);
    assert_eq!(body["chat_service_sid"], service());
    assert_eq!(body["url"], seeded.url(&path));
    let elsewhere = seeded
        .get(&format!(
            "/v1/Services/{}/Conversations/{ch2}/Messages/{im20}/Receipts/{dy20}/Timeline",
            sid("IS", 2)
        ))
        .await;
    assert_eq!((elsewhere.status, elsewhere.body), (404, not_found(&dy20)));
    // Nor is a default-family receipt found through a service.
    let response = seeded
        .get(&format!(
            "/v1/Services/{}/Conversations/{ch1}/Messages/{im10}/Receipts/{dy}/Timeline",
            service()
        ))
        .await;
    assert_eq!((response.status, response.body), (404, not_found(&dy)));
    seeded.running.stop().await;
}
