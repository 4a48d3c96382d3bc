//! A harness that produces webhook configs and receipt updates and runs dispatchers in-process,
//! in-process or as a binary; the webhook receivers are the testkit's [`Sink`].

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use receipts_bus::topics::ensure_topics;
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_dispatcher::{BreakerConfig, DispatcherConfig};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_proto::webhooks::webhook_key;
use receipts_runtime::config::Secret;
use receipts_runtime::metrics::Metrics;
use receipts_testkit::kafka;
use receipts_webhook::{AddressPolicy, RetrySchedule};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) const ACCOUNT: &str = "AC00000000000000000000000000000001";
pub(crate) const TOKEN: &str = "auth-token-one";
pub(crate) const SERVICE: &str = "IS00000000000000000000000000000001";
pub(crate) const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const SECRET_B: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=";

pub(crate) use receipts_testkit::kafka::read_until;
pub(crate) use receipts_testkit::sid;

pub(crate) struct Harness {
    pub(crate) kafka: KafkaSettings,
    pub(crate) topics: TopicNames,
    pub(crate) group: String,
    producer: FutureProducer,
}

pub(crate) struct Running {
    pub(crate) metrics: Metrics,
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl Running {
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap();
    }

    /// The value of a metric sample line that starts with `prefix`.
    pub(crate) fn metric(&self, prefix: &str) -> Option<f64> {
        self.metrics
            .render()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Waits until a metric reaches `value`.
    pub(crate) async fn metric_reaches(&self, prefix: &str, value: f64, within: Duration) {
        self.metrics_reach(&[prefix], value, within).await;
    }

    /// Waits until the sum of several metrics reaches `value`.
    pub(crate) async fn metrics_reach(&self, prefixes: &[&str], value: f64, within: Duration) {
        let sum = || -> f64 {
            prefixes
                .iter()
                .map(|prefix| self.metric(prefix).unwrap_or_default())
                .sum()
        };
        let deadline = Instant::now() + within;
        while sum() < value {
            assert!(
                Instant::now() < deadline,
                "{} stayed at {}, expected {value}",
                prefixes.join(" + "),
                sum()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Running {
    /// Waits until a metric equals `value`.
    pub(crate) async fn metric_equals(&self, prefix: &str, value: f64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.metric(prefix) != Some(value) {
            assert!(
                Instant::now() < deadline,
                "{prefix} is {:?}, expected {value}",
                self.metric(prefix)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Harness {
    pub(crate) async fn new() -> Self {
        let kafka = receipts_testkit::kafka();
        let topics = receipts_testkit::unique_topics();
        ensure_topics(&kafka, &topics.specs(2)).await.unwrap();
        let producer = kafka.producer("dispatcher-test").unwrap();
        Harness {
            group: receipts_testkit::unique("dispatcher"),
            kafka,
            topics,
            producer,
        }
    }

    /// A short schedule: 6 attempts within about 3 s.
    pub(crate) fn config(&self, data_dir: &Path) -> DispatcherConfig {
        let mut kafka = self.kafka.clone();
        kafka
            .properties
            .insert("session.timeout.ms".into(), "6000".into());
        kafka
            .properties
            .insert("heartbeat.interval.ms".into(), "500".into());
        DispatcherConfig {
            kafka,
            topics: self.topics.clone(),
            group_id: self.group.clone(),
            data_dir: data_dir.to_owned(),
            accounts: [(ACCOUNT.to_owned(), Secret::new(TOKEN))].into(),
            retry: RetrySchedule {
                delays_ms: vec![0, 100, 200, 400, 800, 1_600],
                jitter: 0.2,
                retry_after_max_ms: 5_000,
                max_delay_ms: 10_000,
            },
            attempt_timeout_ms: 2_000,
            ssrf: AddressPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]),
            endpoint_concurrency: 2,
            breaker: BreakerConfig {
                failure_threshold: 1_000,
                open_ms: 1_000,
            },
            create_topics_partitions: 0,
            metrics_listen: String::new(),
            ..DispatcherConfig::default()
        }
    }

    pub(crate) fn spawn(&self, config: DispatcherConfig) -> Running {
        let shutdown = CancellationToken::new();
        let metrics = Metrics::new();
        let (token, registry) = (shutdown.clone(), metrics.clone());
        let handle = tokio::spawn(async move {
            receipts_dispatcher::run(config, &registry, token)
                .await
                .expect("dispatcher runs");
        });
        Running {
            metrics,
            shutdown,
            handle,
        }
    }

    async fn send(&self, topic: &str, key: &str, payload: Option<&[u8]>) {
        kafka::produce(
            &self.producer,
            topic,
            [(key, payload)],
            Some(Encoding::Protobuf),
        )
        .await;
    }

    /// Writes a webhook configuration; returns its key.
    pub(crate) async fn configure(&self, config: &v1::WebhookConfig) -> String {
        let key = webhook_key(config);
        let payload = codec::encode(config, Encoding::Protobuf);
        self.send(&self.topics.webhook_configs, &key, Some(&payload))
            .await;
        key
    }

    pub(crate) async fn publish(&self, update: &v1::ReceiptUpdated) {
        let receipt = update.receipt.as_ref().unwrap();
        let payload = codec::encode(update, Encoding::Protobuf);
        self.send(
            &self.topics.receipt_updates,
            &receipt.conversation_sid,
            Some(&payload),
        )
        .await;
    }

    /// Reads `topic` from the beginning.
    pub(crate) fn reader(&self, topic: &str) -> StreamConsumer {
        kafka::reader(&self.kafka, "dispatcher-test-reader", topic)
    }
}

/// Every DLQ entry (not replay markers) read until `count` arrived.
pub(crate) async fn dead_letters(reader: &StreamConsumer, count: usize) -> Vec<serde_json::Value> {
    let mut entries = Vec::new();
    read_until(reader, |m| {
        if let Some(payload) = m.payload() {
            entries.push(serde_json::from_slice(payload).unwrap());
        }
        entries.len() >= count
    })
    .await;
    entries
}

pub(crate) fn receipt(n: u64, version: u64, status: v1::DeliveryStatus) -> v1::Receipt {
    v1::Receipt {
        sid: sid("DY", n),
        account_sid: ACCOUNT.into(),
        chat_service_sid: SERVICE.into(),
        conversation_sid: sid("CH", n % 3 + 1),
        message_sid: sid("IM", n),
        message_index: n,
        participant_sid: sid("MB", n),
        channel: v1::Channel::Whatsapp.into(),
        channel_message_id: format!("wamid.{n}"),
        // As the projector derives it: the dispatcher builds the webhook from the domain
        // receipt, which derives it again.
        channel_message_sid: receipts_domain::ChannelMessageId::parse(&format!("wamid.{n}"))
            .unwrap()
            .channel_message_sid(true)
            .to_string(),
        expected_receipts: 1,
        status: status.into(),
        raw_status: String::new(),
        error_code: if status == v1::DeliveryStatus::Failed {
            63016
        } else {
            0
        },
        source: v1::StatusSource::WhatsappCloud.into(),
        // `date_updated` is the report's time, as for any receipt the projector publishes.
        provider_timestamp: Some(pbjson_types::Timestamp {
            seconds: 1_584_989_120 + version as i64,
            nanos: 0,
        }),
        date_created: Some(pbjson_types::Timestamp {
            seconds: 1_584_989_117,
            nanos: 0,
        }),
        date_updated: Some(pbjson_types::Timestamp {
            seconds: 1_584_989_120 + version as i64,
            nanos: 0,
        }),
        version,
    }
}

pub(crate) fn update(receipt: v1::Receipt, previous: v1::DeliveryStatus) -> v1::ReceiptUpdated {
    v1::ReceiptUpdated {
        receipt: Some(receipt),
        previous_status: previous.into(),
        previous_error_code: 0,
    }
}

pub(crate) fn account_webhook(url: &str) -> v1::WebhookConfig {
    let mut config = v1::WebhookConfig {
        account_sid: ACCOUNT.into(),
        method: "POST".into(),
        filters: vec!["onMessageAdded".into(), "onDeliveryUpdated".into()],
        post_webhook_url: url.into(),
        target: "webhook".into(),
        ..Default::default()
    };
    config.set_scope(v1::WebhookScope::Account);
    config
}

pub(crate) fn service_webhook(url: &str, method: &str) -> v1::WebhookConfig {
    let mut config = account_webhook(url);
    config.set_scope(v1::WebhookScope::Service);
    config.chat_service_sid = SERVICE.into();
    config.method = method.into();
    config.target = String::new();
    config
}

pub(crate) fn conversation_webhook(conversation: &str, n: u64, url: &str) -> v1::WebhookConfig {
    let mut config = account_webhook(url);
    config.set_scope(v1::WebhookScope::Conversation);
    config.conversation_sid = conversation.into();
    config.webhook_sid = sid("WH", n);
    config.method = "post".into();
    config
}

pub(crate) use receipts_testkit::webhooks::{
    Answer, Received, Sink, standard_signatures_are_valid, twilio_signature_is_valid,
};

/// Writes `config` (the parts the tests change) as the TOML file the binary reads.
pub(crate) fn write_config_file(harness: &Harness, config: &DispatcherConfig, path: &Path) {
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
projector_changelog = "{projector_changelog}"
dispatcher_changelog = "{dispatcher_changelog}"

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
        projector_changelog = harness.topics.projector_changelog,
        dispatcher_changelog = harness.topics.dispatcher_changelog,
        account = ACCOUNT,
        token = TOKEN,
        delays = config.retry.delays_ms,
    );
    std::fs::write(path, toml).unwrap();
}

/// A dispatcher process, SIGKILLed when dropped (a failing test leaves nothing behind).
pub(crate) struct Process(Child);

impl Process {
    pub(crate) fn kill(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn start_process(config_file: &Path) -> Process {
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
