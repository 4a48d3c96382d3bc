//! What is sent, to whom, and when nothing is.

use std::time::Duration;

use receipts_proto::v1::DeliveryStatus;

use crate::support::*;

/// Configuration written before the dispatcher starts (and an update already waiting) is read
/// to its end first; the update then reaches the account, service (GET) and conversation
/// webhooks, each with the Twilio payload, a valid X-Twilio-Signature and, where secrets are
/// configured, Standard Webhooks signatures for both secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_reaches_every_matching_webhook_signed() {
    let harness = Harness::new().await;
    let sink = Sink::start(|_, _| Answer::Status(200)).await;
    let mut account = account_webhook(&format!("{}?scope=account", sink.url()));
    account.signing_secrets = vec![SECRET_A.into(), SECRET_B.into()];
    harness.configure(&account).await;
    harness
        .configure(&service_webhook(
            &format!("{}?scope=service", sink.url()),
            "GET",
        ))
        .await;
    let conversation = sid("CH", 2);
    harness
        .configure(&conversation_webhook(
            &conversation,
            1,
            &format!("{}?scope=conversation", sink.url()),
        ))
        .await;
    // Another conversation's webhook, and one not filtered on onDeliveryUpdated.
    harness
        .configure(&conversation_webhook(
            &sid("CH", 3),
            2,
            &format!("{}?scope=other", sink.url()),
        ))
        .await;
    let mut unfiltered = service_webhook(&format!("{}?scope=unfiltered", sink.url()), "POST");
    unfiltered.chat_service_sid = sid("IS", 9);
    harness.configure(&unfiltered).await;

    let receipt = receipt(1, 2, DeliveryStatus::Delivered);
    assert_eq!(receipt.conversation_sid, conversation);
    harness
        .publish(&update(receipt.clone(), DeliveryStatus::Sent))
        .await;

    let dir = tempfile::tempdir().unwrap();
    let running = harness.spawn(harness.config(dir.path()));
    let received = sink.wait_for(3).await;
    let scope = |r: &Received| {
        r.url
            .split("scope=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned()
    };
    let mut scopes: Vec<String> = received.iter().map(scope).collect();
    scopes.sort();
    assert_eq!(scopes, ["account", "conversation", "service"]);

    for request in &received {
        assert!(twilio_signature_is_valid(request, TOKEN), "{request:?}");
        assert!(!twilio_signature_is_valid(request, "another-token"));
        let expected = [
            ("EventType", "onDeliveryUpdated".to_owned()),
            ("AccountSid", ACCOUNT.to_owned()),
            ("ChatServiceSid", SERVICE.to_owned()),
            ("ConversationSid", receipt.conversation_sid.clone()),
            ("MessageSid", receipt.message_sid.clone()),
            ("DeliveryReceiptSid", receipt.sid.clone()),
            ("ChannelMessageSid", receipt.channel_message_sid.clone()),
            ("ParticipantSid", receipt.participant_sid.clone()),
            ("Status", "delivered".to_owned()),
            ("ErrorCode", "0".to_owned()),
            ("DateCreated", "2020-03-23T18:45:17Z".to_owned()),
            ("DateUpdated", "2020-03-23T18:45:22Z".to_owned()),
            ("Source", "API".to_owned()),
        ];
        for (name, value) in expected {
            assert_eq!(request.param(name), value, "{name} in {request:?}");
        }
        assert_eq!(request.token().len(), 32);
        match scope(request).as_str() {
            "service" => {
                assert_eq!(request.method, "GET");
                assert!(request.body.is_empty());
            }
            "account" => {
                assert_eq!(request.method, "POST");
                assert_eq!(
                    request.header("content-type"),
                    "application/x-www-form-urlencoded"
                );
                assert_eq!(request.header("webhook-id"), request.token());
                assert!(standard_signatures_are_valid(
                    request,
                    &[SECRET_A, SECRET_B]
                ));
                assert!(!standard_signatures_are_valid(request, &["whsec_b3RoZXI="]));
            }
            _ => {
                assert_eq!(request.method, "POST");
                assert!(!request.headers.contains_key("webhook-signature"));
            }
        }
    }
    // One token per webhook.
    let mut tokens: Vec<String> = received.iter().map(Received::token).collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 3);
    running.stop().await;
}

/// A webhook fires when status or error code changes: the same status with a later timestamp
/// fires nothing, a re-published (same version) or older snapshot fires nothing, and `queued`
/// (null in Twilio's API) fires nothing. A webhook configured while running is followed live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_status_or_error_changes_fire() {
    let harness = Harness::new().await;
    let sink = Sink::start(|_, _| Answer::Status(204)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = harness.config(dir.path());
    // One at a time, so the requests arrive in the order the updates were read.
    config.endpoint_concurrency = 1;
    let running = harness.spawn(config);
    // Configured after the start: followed live.
    harness.configure(&account_webhook(&sink.url())).await;
    // Give the follower a marker to know the config is applied: a first update that must arrive.
    let mut delivered = false;
    for attempt in 0..100 {
        harness
            .publish(&update(
                receipt(100 + attempt, 2, DeliveryStatus::Sent),
                DeliveryStatus::Queued,
            ))
            .await;
        if tokio::time::timeout(Duration::from_millis(500), sink.wait_for(1))
            .await
            .is_ok()
        {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "the live configuration was never applied");
    let before = sink.count();

    let sent = receipt(7, 1, DeliveryStatus::Queued);
    harness
        .publish(&update(sent, DeliveryStatus::Unspecified))
        .await; // queued: nothing
    harness
        .publish(&update(
            receipt(7, 2, DeliveryStatus::Sent),
            DeliveryStatus::Queued,
        ))
        .await; // fires
    harness
        .publish(&update(
            receipt(7, 2, DeliveryStatus::Sent),
            DeliveryStatus::Queued,
        ))
        .await; // same version again: nothing
    harness
        .publish(&update(
            receipt(7, 3, DeliveryStatus::Sent),
            DeliveryStatus::Sent,
        ))
        .await; // same status, later: nothing
    harness
        .publish(&update(
            receipt(7, 4, DeliveryStatus::Failed),
            DeliveryStatus::Sent,
        ))
        .await; // fires
    let mut failed_again = receipt(7, 5, DeliveryStatus::Failed);
    failed_again.error_code = 30003;
    harness
        .publish(&update(failed_again, DeliveryStatus::Failed))
        .await; // error code changed: fires
    harness
        .publish(&update(
            receipt(7, 3, DeliveryStatus::Read),
            DeliveryStatus::Sent,
        ))
        .await; // older version: nothing
    // A marker after them all, on the same conversation (same partition, in order).
    harness
        .publish(&update(
            receipt(7 + 3 * 1000, 2, DeliveryStatus::Read),
            DeliveryStatus::Sent,
        ))
        .await;

    sink.wait_for(before + 4).await;
    // Anything fired by mistake would arrive with or right after the marker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = sink.received();
    let seven: Vec<(String, String, String)> = received[before..]
        .iter()
        .filter(|r| r.param("DeliveryReceiptSid") == sid("DY", 7))
        .map(|r| {
            (
                r.param("Status"),
                r.param("ErrorCode"),
                r.header("x-receipts-receipt-version").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seven,
        [
            ("sent".into(), "0".into(), "2".into()),
            ("failed".into(), "63016".into(), "4".into()),
            ("failed".into(), "30003".into(), "5".into()),
        ]
    );
    // The repeat and the older version are counted, never sent: as duplicates when read after
    // a newer version was delivered, or as stale when their turn comes while it was in flight.
    running
        .metrics_reach(
            &[
                "receipts_dispatcher_updates_total{outcome=\"duplicate\"}",
                "receipts_dispatcher_dropped_total{outcome=\"stale\"}",
            ],
            2.0,
            Duration::from_secs(10),
        )
        .await;
    running.stop().await;
}

/// Without an allow-list a loopback receiver is refused: nothing reaches it, and the delivery
/// is dead-lettered at once with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_unless_allow_listed() {
    let harness = Harness::new().await;
    let sink = Sink::start(|_, _| Answer::Status(200)).await;
    harness.configure(&account_webhook(&sink.url())).await;
    let localhost = format!("http://localhost:{}/hook", sink.address.port());
    harness
        .configure(&service_webhook(&localhost, "POST"))
        .await;
    let dlq = harness.reader(&harness.topics.webhook_dlq);
    let dir = tempfile::tempdir().unwrap();
    let mut config = harness.config(dir.path());
    config.ssrf.allow.clear();
    let running = harness.spawn(config);
    harness
        .publish(&update(
            receipt(1, 2, DeliveryStatus::Delivered),
            DeliveryStatus::Sent,
        ))
        .await;
    let entries = dead_letters(&dlq, 2).await;
    for entry in &entries {
        let error = entry["last_error"].as_str().unwrap();
        assert!(error.contains("not allow-listed"), "{error}");
        assert_eq!(entry["attempt"], 0);
    }
    assert_eq!(sink.count(), 0);
    running.stop().await;
}
