//! State moves with its partition (DESIGN §4a): a dispatcher on an empty disk takes over from
//! one that stopped, re-sends nothing already delivered, and finishes the retries left pending.

use std::collections::HashMap;
use std::time::Duration;

use receipts_proto::v1::DeliveryStatus;

use crate::support::*;

/// Instance A delivers twenty updates, while ten more are refused (503) and wait for retries
/// due seconds later; A stops. Instance B, with an empty data dir, joins the group: it sends
/// none of the twenty again, and delivers each of the ten exactly once more, with the same
/// idempotency token as A's failed attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_resends_nothing_delivered_and_finishes_pending_retries() {
    let harness = Harness::new().await;
    // Receipts 100.. are refused until the sink is told otherwise.
    let sink = Sink::start(|request, _| {
        if request.param("DeliveryReceiptSid") >= sid("DY", 100) {
            Answer::Status(503)
        } else {
            Answer::Status(200)
        }
    })
    .await;
    harness.configure(&account_webhook(&sink.url())).await;

    let first_dir = tempfile::tempdir().unwrap();
    let mut config = harness.config(first_dir.path());
    // A first retry at once, the next ones seconds later: still pending when A stops.
    config.retry.delays_ms = vec![0, 3_000, 3_000, 3_000, 3_000];
    config.retry.jitter = 0.0;
    let first = harness.spawn(config.clone());
    for n in (0..20).chain(100..110) {
        harness
            .publish(&update(
                receipt(n, 2, DeliveryStatus::Delivered),
                DeliveryStatus::Sent,
            ))
            .await;
    }
    let delivered = sink
        .wait_for_delivered(20, |r| r.param("DeliveryReceiptSid") < sid("DY", 100))
        .await;
    assert_eq!(delivered.len(), 20);
    // Every refused delivery failed at least once, and its retry is on the retry topic.
    first
        .metric_reaches(
            "receipts_dispatcher_attempts_total{outcome=\"retry\"}",
            10.0,
            Duration::from_secs(60),
        )
        .await;
    first.stop().await;
    let before = sink.count();
    let tokens_before: HashMap<String, String> = sink
        .received()
        .iter()
        .map(|r| (r.param("DeliveryReceiptSid"), r.token()))
        .collect();

    sink.answer_with(|_, _| Answer::Status(200));
    let fresh_dir = tempfile::tempdir().unwrap();
    let mut fresh = config;
    fresh.data_dir = fresh_dir.path().to_owned();
    let second = harness.spawn(fresh);
    sink.wait_for_delivered(30, |_| true).await;
    // Anything sent again by mistake would arrive by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    second.stop().await;

    let after: Vec<Received> = sink.received()[before..].to_vec();
    let mut per_receipt: HashMap<String, usize> = HashMap::new();
    for request in &after {
        *per_receipt
            .entry(request.param("DeliveryReceiptSid"))
            .or_default() += 1;
        assert_eq!(
            tokens_before.get(&request.param("DeliveryReceiptSid")),
            Some(&request.token()),
            "a retry carries the token of its first attempt"
        );
    }
    let resent: Vec<_> = per_receipt
        .keys()
        .filter(|sid_| **sid_ < sid("DY", 100))
        .collect();
    assert!(
        resent.is_empty(),
        "delivered before, sent again: {resent:?}"
    );
    assert_eq!(
        per_receipt.len(),
        10,
        "every pending retry was delivered by the new instance: {per_receipt:?}"
    );
    assert!(
        per_receipt.values().all(|n| *n == 1),
        "each pending retry was delivered once: {per_receipt:?}"
    );
}
