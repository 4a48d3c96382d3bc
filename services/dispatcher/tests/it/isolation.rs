//! One endpoint cannot hold back another, and an older version never follows a newer one.

use std::time::Duration;

use receipts_proto::v1::DeliveryStatus;

use crate::support::*;

/// One conversation webhook hangs (never answers while the test runs), another answers at once.
/// The healthy one receives every update while the hanging one still holds its first requests,
/// and the hanging one never has more than the in-flight cap open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_hold_back_another() {
    let harness = Harness::new().await;
    let hanging = Sink::start(|_, _| Answer::Hang).await;
    let healthy = Sink::start(|_, _| Answer::Status(200)).await;
    let conversation = sid("CH", 1);
    harness
        .configure(&conversation_webhook(&conversation, 1, &hanging.url()))
        .await;
    harness
        .configure(&conversation_webhook(&conversation, 2, &healthy.url()))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = harness.config(dir.path());
    // Longer than the test: the hanging endpoint stays hung.
    config.attempt_timeout_ms = 120_000;
    let running = harness.spawn(config);
    let updates = 30u64;
    for n in 0..updates {
        let receipt = receipt(n * 3, 2, DeliveryStatus::Delivered);
        assert_eq!(receipt.conversation_sid, conversation);
        harness
            .publish(&update(receipt, DeliveryStatus::Sent))
            .await;
    }
    // The hanging endpoint holds its first requests open...
    hanging.wait_for(1).await;
    // ...while the healthy one gets everything.
    let delivered = healthy.wait_for_delivered(updates as usize, |_| true).await;
    assert_eq!(delivered.len(), updates as usize);
    let held = hanging.count();
    assert!(
        (1..=2).contains(&held),
        "the hanging endpoint has {held} requests open, the cap is 2"
    );
    assert_eq!(
        running.metric("receipts_dispatcher_attempts_total{outcome=\"retry\"}"),
        None
    );
    // Let it go: the rest of its deliveries follow.
    hanging.release();
    hanging.wait_for_delivered(updates as usize, |_| true).await;
    running.stop().await;
}

/// Order: version 1 of a receipt fails and waits for its retry; version 2, arriving meanwhile,
/// waits behind it instead of overtaking, and follows once version 1 got through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_version_waits_for_the_older_ones_retry() {
    let harness = Harness::new().await;
    let sink = Sink::start(|request, n| {
        if request.param("Status") == "sent" && n == 0 {
            Answer::Status(503)
        } else {
            Answer::Status(200)
        }
    })
    .await;
    harness.configure(&account_webhook(&sink.url())).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = harness.config(dir.path());
    config.retry.delays_ms = vec![0, 1_500, 1_500];
    config.retry.jitter = 0.0;
    let running = harness.spawn(config);
    harness
        .publish(&update(
            receipt(1, 1, DeliveryStatus::Sent),
            DeliveryStatus::Queued,
        ))
        .await;
    sink.wait_for(1).await;
    harness
        .publish(&update(
            receipt(1, 2, DeliveryStatus::Delivered),
            DeliveryStatus::Sent,
        ))
        .await;
    let received = sink.wait_for(3).await;
    let statuses: Vec<String> = received.iter().map(|r| r.param("Status")).collect();
    assert_eq!(statuses, ["sent", "sent", "delivered"]);
    // Version 2 went out only after version 1's retry was answered, 1.5 s after its failure.
    assert!(received[2].at >= received[1].at);
    assert!(received[1].at - received[0].at >= Duration::from_millis(1_400));
    assert_eq!(
        running.metric("receipts_dispatcher_dropped_total{outcome=\"stale\"}"),
        None
    );
    running.stop().await;
}

/// After `failure_threshold` transient failures in a row the endpoint's circuit opens: its
/// next attempt waits for the open period although the schedule says 50 ms, and is a single
/// probe; a success closes the circuit again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_after_repeated_failures_and_a_probe_closes_it() {
    let harness = Harness::new().await;
    let sink = Sink::start(|_, n| {
        if n < 3 {
            Answer::Status(503)
        } else {
            Answer::Status(200)
        }
    })
    .await;
    harness.configure(&account_webhook(&sink.url())).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = harness.config(dir.path());
    config.retry.delays_ms = vec![0, 50, 50, 50, 50];
    config.retry.jitter = 0.0;
    config.breaker.failure_threshold = 3;
    config.breaker.open_ms = 1_500;
    config.endpoint_concurrency = 1;
    let running = harness.spawn(config);
    harness
        .publish(&update(
            receipt(1, 2, DeliveryStatus::Delivered),
            DeliveryStatus::Sent,
        ))
        .await;
    // Open after the third failure, until the probe 1.5 s later answers.
    sink.wait_for(3).await;
    let open_now = "receipts_dispatcher_breakers_open{scope=\"account\"}";
    running
        .metric_equals(open_now, 1.0, Duration::from_secs(1))
        .await;
    let received = sink.wait_for(4).await;
    let key = "receipts_dispatcher_breaker_opened_total{scope=\"account\"}";
    assert_eq!(running.metric(key), Some(1.0));
    let open = received[3].at - received[2].at;
    assert!(
        open >= Duration::from_millis(1_500),
        "probed after {open:?}"
    );
    assert!(received[2].at - received[0].at < Duration::from_millis(1_500));
    running
        .metric_reaches(
            "receipts_dispatcher_attempts_total{outcome=\"delivered\"}",
            1.0,
            Duration::from_secs(10),
        )
        .await;
    running
        .metric_equals(open_now, 0.0, Duration::from_secs(5))
        .await;

    // Closed again: the next update goes out at once.
    harness
        .publish(&update(
            receipt(1, 3, DeliveryStatus::Read),
            DeliveryStatus::Delivered,
        ))
        .await;
    sink.wait_for(5).await;
    assert_eq!(running.metric(key), Some(1.0));
    running.stop().await;
}
