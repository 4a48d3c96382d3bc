//! Failures: retried through the retry topic until delivered, dead-lettered when hopeless,
//! replayed on demand; 410 disables the endpoint in the configuration topic.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Message;
use receipts_dispatcher::{ReplayFilter, ReplayProgress, replay_dlq};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1::{self, DeliveryStatus};
use receipts_runtime::clock::SystemClock;

use crate::support::*;

/// The receiver is down (connection refused) while ten updates are dispatched, and comes up on
/// the same port later: every delivery gets through, each with one idempotency token across its
/// attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_then_up_gets_everything() {
    let harness = Harness::new().await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    harness.configure(&account_webhook(&url)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = harness.config(dir.path());
    config.retry.delays_ms = vec![0, 200, 400, 800, 800, 800, 800, 800, 800, 800, 800, 800];
    let running = harness.spawn(config);
    for n in 0..10 {
        harness
            .publish(&update(
                receipt(n, 2, DeliveryStatus::Delivered),
                DeliveryStatus::Sent,
            ))
            .await;
    }
    // Every delivery failed at least once before the receiver comes up.
    running
        .metric_reaches(
            "receipts_dispatcher_attempts_total{outcome=\"retry\"}",
            10.0,
            Duration::from_secs(60),
        )
        .await;
    let sink = Sink::start_on(port, |_, _| Answer::Status(200)).await;
    let tokens = sink.wait_for_delivered(10, |_| true).await;
    assert_eq!(tokens.len(), 10);
    running
        .metric_reaches(
            "receipts_dispatcher_attempts_total{outcome=\"delivered\"}",
            10.0,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        running.metric("receipts_dispatcher_dead_lettered_total"),
        Some(0.0)
    );
    running
        .metric_equals(
            "receipts_dispatcher_retry_backlog",
            0.0,
            Duration::from_secs(10),
        )
        .await;
    running.stop().await;
}

/// 429 with `Retry-After: 1`: the next attempt waits at least that second (the schedule alone
/// would retry after ~100 ms), with the same idempotency token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_waits_for_retry_after() {
    let harness = Harness::new().await;
    let sink = Sink::start(|_, n| {
        if n == 0 {
            Answer::RetryAfter(429, 1)
        } else {
            Answer::Status(200)
        }
    })
    .await;
    harness.configure(&account_webhook(&sink.url())).await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.spawn(harness.config(dir.path()));
    harness
        .publish(&update(
            receipt(1, 2, DeliveryStatus::Read),
            DeliveryStatus::Delivered,
        ))
        .await;
    let received = sink.wait_for(2).await;
    assert_eq!(received[0].token(), received[1].token());
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_millis(1_000),
        "retried after {waited:?}"
    );
    running.stop().await;
}

/// 410 Gone: the webhook's configuration is written back with `disabled_at` and a reason, the
/// delivery is dead-lettered, and later updates are not sent to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_in_the_configuration() {
    let harness = Harness::new().await;
    let sink = Sink::start(|_, _| Answer::Status(410)).await;
    let key = harness.configure(&account_webhook(&sink.url())).await;
    let configs = harness.reader(&harness.topics.webhook_configs);
    let dlq = harness.reader(&harness.topics.webhook_dlq);
    let dir = tempfile::tempdir().unwrap();
    let running = harness.spawn(harness.config(dir.path()));
    harness
        .publish(&update(
            receipt(1, 2, DeliveryStatus::Delivered),
            DeliveryStatus::Sent,
        ))
        .await;
    let mut disabled = None;
    read_until(&configs, |m| {
        let config: v1::WebhookConfig =
            codec::decode(m.payload().unwrap(), Encoding::Protobuf).unwrap();
        assert_eq!(m.key(), Some(key.as_bytes()));
        if config.disabled_at.is_some() {
            disabled = Some(config);
        }
        disabled.is_some()
    })
    .await;
    let disabled = disabled.unwrap();
    assert!(
        disabled.disabled_reason.contains("410"),
        "{}",
        disabled.disabled_reason
    );
    assert_eq!(disabled.post_webhook_url, sink.url());
    let entries = dead_letters(&dlq, 1).await;
    assert!(entries[0]["last_error"].as_str().unwrap().contains("410"));
    running
        .metric_reaches(
            "receipts_dispatcher_endpoints_disabled_total",
            1.0,
            Duration::from_secs(10),
        )
        .await;

    // A later update fires, but not to the disabled endpoint.
    harness
        .publish(&update(
            receipt(1, 3, DeliveryStatus::Read),
            DeliveryStatus::Delivered,
        ))
        .await;
    running
        .metric_reaches(
            "receipts_dispatcher_updates_total{outcome=\"fired\"}",
            2.0,
            Duration::from_secs(30),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(), 1);
    running.stop().await;
}

/// 400 goes to the DLQ at once; after the receiver is fixed, `replay_dlq` sends the entries
/// back (filtered by account), they are delivered with their original tokens, and a second
/// replay sends nothing again. A 5xx that outlasts the schedule is dead-lettered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_exhausted_deliveries_are_dead_lettered_then_replayed() {
    let harness = Harness::new().await;
    let rejecting = Sink::start(|_, _| Answer::Status(400)).await;
    let failing = Sink::start(|_, _| Answer::Status(503)).await;
    // The rejecting endpoint's URL carries a token: dead-letter records show it redacted.
    let rejecting_url = format!("{}?key=dlq-secret", rejecting.url());
    let rejecting_shown = format!("{}?***", rejecting.url());
    harness.configure(&account_webhook(&rejecting_url)).await;
    harness
        .configure(&service_webhook(&failing.url(), "POST"))
        .await;
    let dlq = harness.reader(&harness.topics.webhook_dlq);
    let dir = tempfile::tempdir().unwrap();
    let mut config = harness.config(dir.path());
    config.retry.delays_ms = vec![0, 50, 50];
    config.dlq_poll_secs = 1;
    let running = harness.spawn(config);
    for n in 0..2 {
        harness
            .publish(&update(
                receipt(n, 2, DeliveryStatus::Delivered),
                DeliveryStatus::Sent,
            ))
            .await;
    }
    let entries = dead_letters(&dlq, 4).await;
    for entry in &entries {
        assert!(!entry.to_string().contains("dlq-secret"), "{entry}");
    }
    let mut errors: HashMap<String, Vec<String>> = HashMap::new();
    for entry in &entries {
        errors
            .entry(entry["url"].as_str().unwrap().to_owned())
            .or_default()
            .push(entry["last_error"].as_str().unwrap().to_owned());
    }
    assert_eq!(errors[&rejecting_shown], ["HTTP 400", "HTTP 400"]);
    assert_eq!(rejecting.count(), 2, "a 400 is never retried");
    for error in &errors[&failing.url()] {
        assert_eq!(error, "gave up after 3 attempts: HTTP 503");
    }
    assert_eq!(failing.count(), 6);
    running
        .metric_reaches(
            "receipts_dispatcher_dead_lettered_total",
            4.0,
            Duration::from_secs(10),
        )
        .await;
    running
        .metric_equals(
            "receipts_dispatcher_dlq_records",
            4.0,
            Duration::from_secs(10),
        )
        .await;
    let first_tokens: Vec<String> = rejecting.received().iter().map(Received::token).collect();

    // Nothing matches another account.
    let other = ReplayFilter {
        account: Some(sid("AC", 99)),
        ..Default::default()
    };
    let report = replay_dlq(
        &harness.kafka,
        &harness.topics,
        &other,
        &SystemClock,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((report.entries, report.matched, report.replayed), (4, 0, 0));

    rejecting.answer_with(|_, _| Answer::Status(200));
    // The filter takes the full URL (or the redacted one the records show).
    let only_rejected = ReplayFilter {
        account: Some(ACCOUNT.into()),
        endpoint: Some(rejecting_url.clone()),
        since_ms: Some(0),
        until_ms: Some(i64::MAX),
    };
    let mut progress = Vec::new();
    let report = replay_dlq(
        &harness.kafka,
        &harness.topics,
        &only_rejected,
        &SystemClock,
        |step| progress.push(step),
    )
    .await
    .unwrap();
    assert_eq!(
        (report.matched, report.replayed, report.already_replayed),
        (2, 2, 0)
    );
    assert_eq!(
        progress,
        [
            ReplayProgress::Matched(2),
            ReplayProgress::Entry,
            ReplayProgress::Entry,
            ReplayProgress::Finished(report),
        ]
    );
    let replayed = rejecting.wait_for(4).await;
    let mut again: Vec<String> = replayed[2..].iter().map(Received::token).collect();
    let mut first = first_tokens.clone();
    again.sort();
    first.sort();
    assert_eq!(again, first, "a replay keeps the idempotency tokens");

    let report = replay_dlq(
        &harness.kafka,
        &harness.topics,
        &only_rejected,
        &SystemClock,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        (report.matched, report.replayed, report.already_replayed),
        (2, 0, 2)
    );
    running
        .metric_reaches(
            "receipts_dispatcher_attempts_total{outcome=\"delivered\"}",
            2.0,
            Duration::from_secs(10),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rejecting.count(), 4);
    running.stop().await;
}

/// `receipts-dispatcher replay-dlq` replays with the filters of its command line; run twice,
/// it replays nothing the second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_command_replays_once() {
    let harness = Harness::new().await;
    let sink = Sink::start(|_, _| Answer::Status(422)).await;
    harness.configure(&account_webhook(&sink.url())).await;
    let dlq = harness.reader(&harness.topics.webhook_dlq);
    let dir = tempfile::tempdir().unwrap();
    let config = harness.config(&dir.path().join("data"));
    let config_file = dir.path().join("dispatcher.toml");
    write_config_file(&harness, &config, &config_file);
    let running = harness.spawn(config);
    harness
        .publish(&update(
            receipt(1, 2, DeliveryStatus::Failed),
            DeliveryStatus::Sent,
        ))
        .await;
    dead_letters(&dlq, 1).await;
    sink.answer_with(|_, _| Answer::Status(200));

    let replay = || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_receipts-dispatcher"))
            .arg("--config")
            .arg(&config_file)
            .args([
                "replay-dlq",
                "--account",
                ACCOUNT,
                "--since",
                "2020-01-01T00:00:00Z",
            ])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stderr).unwrap()
    };
    let first = tokio::task::block_in_place(replay);
    assert!(first.contains("replayed: 1,"), "{first}");
    let received = sink.wait_for(2).await;
    assert_eq!(received[0].token(), received[1].token());
    let second = tokio::task::block_in_place(replay);
    assert!(
        second.contains("replayed: 0, already_replayed: 1"),
        "{second}"
    );
    running.stop().await;
}

/// A 410 answers the configuration the attempt used. When the webhook was written again while
/// that attempt was out (a new URL), the newer configuration wins: nothing is disabled, and the
/// delivery goes to the new URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_for_a_replaced_configuration_disables_nothing() {
    let harness = Harness::new().await;
    let old = Sink::start(|_, _| Answer::HangThen(410)).await;
    let new = Sink::start(|_, _| Answer::Status(200)).await;
    let key = harness.configure(&account_webhook(&old.url())).await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.spawn(harness.config(dir.path()));
    harness
        .publish(&update(
            receipt(1, 2, DeliveryStatus::Delivered),
            DeliveryStatus::Sent,
        ))
        .await;
    old.wait_for(1).await;
    // The webhook moves while the attempt hangs; the dispatcher follows the topic live.
    assert_eq!(harness.configure(&account_webhook(&new.url())).await, key);
    tokio::time::sleep(Duration::from_secs(2)).await;
    old.release();

    // The 410 disabled nothing (the counter moves before a disabled configuration is written)
    // and the delivery went on to the new URL.
    let delivered = new.wait_for(1).await;
    assert_eq!(delivered[0].param("DeliveryReceiptSid"), sid("DY", 1));
    assert_eq!(
        running.metric("receipts_dispatcher_endpoints_disabled_total"),
        Some(0.0)
    );
    running.stop().await;
}
