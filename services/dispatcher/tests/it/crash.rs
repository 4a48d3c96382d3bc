//! The dispatcher binary SIGKILLed while deliveries wait for their retries, then restarted on
//! the same data dir: every delivery still gets through.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use receipts_proto::v1::DeliveryStatus;

use crate::support::*;

/// A dispatcher process, SIGKILLed when dropped (a failing test leaves nothing behind).
struct Process(Child);

impl Process {
    fn kill(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start(config_file: &Path) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_receipts-dispatcher"))
            .arg("--config")
            .arg(config_file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the dispatcher binary starts"),
    )
}

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
    let toml = format!(
        r#"group_id = "{group}"
data_dir = "{data}"
attempt_timeout_ms = 2000
create_topics_partitions = 0
metrics_listen = ""
endpoint_concurrency = 2

[kafka]
bootstrap_servers = "{servers}"

[kafka.properties]
# The killed member leaves the group within seconds.
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[topics]
delivery_events = "{delivery_events}"
receipt_updates = "{receipt_updates}"
webhook_configs = "{webhook_configs}"
webhook_retries = "{webhook_retries}"
webhook_dlq = "{webhook_dlq}"
delivery_events_dlq = "{delivery_events_dlq}"

[accounts]
{account} = "{token}"

[retry]
delays_ms = {delays:?}
jitter = 0.2

[ssrf]
allow = ["127.0.0.0/8"]

[breaker]
failure_threshold = 1000
"#,
        group = config.group_id,
        data = config.data_dir.display(),
        servers = harness.kafka.bootstrap_servers,
        delivery_events = harness.topics.delivery_events,
        receipt_updates = harness.topics.receipt_updates,
        webhook_configs = harness.topics.webhook_configs,
        webhook_retries = harness.topics.webhook_retries,
        webhook_dlq = harness.topics.webhook_dlq,
        delivery_events_dlq = harness.topics.delivery_events_dlq,
        account = ACCOUNT,
        token = TOKEN,
        delays = config.retry.delays_ms,
    );
    std::fs::write(&config_file, toml).unwrap();

    let mut first = start(&config_file);
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
    let mut second = start(&config_file);
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
