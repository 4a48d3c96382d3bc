//! Oversized bodies, and Kafka out of reach.

use std::time::{Duration, Instant};

use receipts_bus::KafkaSettings;

use crate::support::{
    BODY_LIMIT, Harness, SMPP_CONNECTION, SMPP_TOKEN, assert_nothing_written, config,
};

const RECEIPT: &str = "id:42 sub:001 dlvrd:001 submit date:2403011230 done date:2403011234 stat:DELIVRD err:000 text:x";

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let harness = Harness::start().await;
    let reader = harness.reader();
    let bearer = format!("Bearer {SMPP_TOKEN}");
    let mut text = RECEIPT.to_owned();
    text.push_str(&"x".repeat(BODY_LIMIT));
    let response = harness
        .post(
            &format!("/v1/smpp/{SMPP_CONNECTION}/receipts"),
            &[("authorization", &bearer)],
            text.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 413);
    assert_eq!(response.error_field(), "body");
    assert_nothing_written(&harness, &reader).await;
    harness.stop().await;
}

/// With no broker to acknowledge, a valid report is answered 503 with `Retry-After` once the
/// produce timeout has passed, and counted as such.
#[tokio::test]
async fn kafka_out_of_reach_is_503_with_retry_after() {
    let mut config = config(
        KafkaSettings::new("127.0.0.1:1"),
        receipts_testkit::unique_topics(),
    );
    config.produce_timeout_ms = 1_500;
    config.create_topics_partitions = 0;
    let harness = Harness::start_with(config).await;
    let bearer = format!("Bearer {SMPP_TOKEN}");
    let started = Instant::now();
    let response = harness
        .post(
            &format!("/v1/smpp/{SMPP_CONNECTION}/receipts"),
            &[("authorization", &bearer)],
            RECEIPT.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 503, "{:?}", response.json());
    assert_eq!(response.header("retry-after"), Some("7"));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(response.json()["error"]["reason"].is_string());
    let metrics = harness.metrics.render();
    assert!(
        metrics.contains(
            "receipts_ingest_requests_rejected_total{format=\"smpp\",reason=\"kafka_unavailable\"} 1"
        ),
        "{metrics}"
    );
    harness.stop().await;
}
