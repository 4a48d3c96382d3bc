//! The dispatcher binary SIGKILLed while deliveries wait for their retries, then restarted on
//! the same data dir: every delivery still gets through.

use std::time::Duration;

use receipts_proto::v1::DeliveryStatus;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_retry_and_restarted_loses_nothing() {
    let harness = Harness::new().await;
    let sink = Sink::start(|_, _| Answer::Status(503)).await;
    harness.configure(&account_webhook(&sink.url())).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = harness.config(&dir.path().join("data"));
    // Long enough waits that the kill lands while retries are pending.
    config.retry.delays_ms = vec![
        0, 500, 1_000, 1_000, 1_000, 1_000, 1_000, 1_000, 1_000, 1_000,
    ];
    let config_file = dir.path().join("dispatcher.toml");
    write_config_file(&harness, &config, &config_file);

    let mut first = start_process(&config_file);
    let deliveries = 8u64;
    for n in 0..deliveries {
        harness
            .publish(&update(
                receipt(n, 2, DeliveryStatus::Delivered),
                DeliveryStatus::Sent,
            ))
            .await;
    }
    // Every delivery was attempted and failed, and some were retried: retries are pending.
    let attempts = (deliveries + 4) as usize;
    sink.wait_for(attempts).await;
    first.kill();
    let before = sink.count();

    sink.answer_with(|_, _| Answer::Status(200));
    let switched = std::time::Instant::now();
    let mut second = start_process(&config_file);
    let delivered = tokio::time::timeout(
        Duration::from_secs(90),
        sink.wait_for_delivered(deliveries as usize, |r| r.at >= switched),
    )
    .await;
    second.kill();
    let delivered = delivered.expect("every delivery gets through after the restart");
    assert_eq!(delivered.len(), deliveries as usize);
    // The first run's tokens are the ones delivered: the same deliveries, not new ones.
    let mut first_tokens: Vec<String> = sink.received()[..before]
        .iter()
        .map(Received::token)
        .collect();
    first_tokens.sort();
    first_tokens.dedup();
    assert_eq!(
        first_tokens, delivered,
        "attempted before the kill vs delivered after"
    );
}
