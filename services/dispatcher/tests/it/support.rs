//! A harness that produces webhook configs and receipt updates, runs dispatchers in-process, and
//! local HTTP sinks that record what they receive and answer as told.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use receipts_bus::record::content_type_headers;
use receipts_bus::topics::ensure_topics;
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_dispatcher::{BreakerConfig, DispatcherConfig};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_proto::webhooks::webhook_key;
use receipts_runtime::config::Secret;
use receipts_runtime::metrics::Metrics;
use receipts_webhook::{AddressPolicy, RetrySchedule};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) const ACCOUNT: &str = "AC00000000000000000000000000000001";
pub(crate) const TOKEN: &str = "auth-token-one";
pub(crate) const SERVICE: &str = "IS00000000000000000000000000000001";
pub(crate) const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const SECRET_B: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=";

pub(crate) fn sid(prefix: &str, n: u64) -> String {
    format!("{prefix}{n:032x}")
}

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
        let deadline = Instant::now() + within;
        while self.metric(prefix).unwrap_or_default() < value {
            assert!(
                Instant::now() < deadline,
                "{prefix} stayed at {:?}, expected {value}",
                self.metric(prefix)
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
        let mut record = FutureRecord::to(topic)
            .key(key)
            .headers(content_type_headers(Encoding::Protobuf));
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
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
        let consumer = self
            .kafka
            .consumer(
                "dispatcher-test-reader",
                &receipts_testkit::unique("reader"),
            )
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        consumer
    }
}

/// Reads records from `reader` until `done` says so, failing after a minute.
pub(crate) async fn read_until(
    reader: &StreamConsumer,
    mut done: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let message = tokio::time::timeout_at(deadline, reader.recv())
            .await
            .expect("the expected record arrives within a minute")
            .unwrap();
        if done(&message) {
            return;
        }
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

/// One request a sink received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) method: String,
    /// Scheme, host, path and query, as a verifier rebuilds the URL that was signed.
    pub(crate) url: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
    pub(crate) at: Instant,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing"))
            .to_str()
            .unwrap()
    }

    /// The webhook parameters: the form body, or the query string of a GET.
    pub(crate) fn params(&self) -> Vec<(String, String)> {
        let source = if self.method == "GET" {
            self.url.split_once('?').map_or("", |(_, q)| q).to_owned()
        } else {
            self.body.clone()
        };
        form_urlencoded::parse(source.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    pub(crate) fn param(&self, name: &str) -> String {
        self.params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("parameter {name} is missing"))
    }

    pub(crate) fn token(&self) -> String {
        self.header("i-twilio-idempotency-token").to_owned()
    }
}

/// What a sink answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Status(u16),
    RetryAfter(u16, u64),
    /// Never answers until the sink is released, then 200.
    Hang,
    /// Never answers until the sink is released, then this status.
    HangThen(u16),
    /// This status after a pause.
    After(Duration, u16),
}

type Policy = Arc<dyn Fn(&Received, usize) -> Answer + Send + Sync>;

/// A local webhook receiver.
pub(crate) struct Sink {
    pub(crate) address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    count: watch::Receiver<usize>,
    policy: Arc<Mutex<Policy>>,
    released: watch::Sender<bool>,
    /// The most requests received and not answered yet there ever were at once.
    max_in_flight: Arc<AtomicUsize>,
}

impl Sink {
    pub(crate) async fn start(
        policy: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Sink::serve(listener, policy)
    }

    /// A sink on `port`, which must be free.
    pub(crate) async fn start_on(
        port: u16,
        policy: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        Sink::serve(listener, policy)
    }

    fn serve(
        listener: tokio::net::TcpListener,
        policy: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let address = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let (count_tx, count) = watch::channel(0);
        let policy: Arc<Mutex<Policy>> = Arc::new(Mutex::new(Arc::new(policy)));
        let (released, released_rx) = watch::channel(false);
        let (kept, rules) = (received.clone(), policy.clone());
        let count_tx = Arc::new(count_tx);
        let in_flight: Arc<AtomicUsize> = Arc::default();
        let max_in_flight: Arc<AtomicUsize> = Arc::default();
        let (busy, most) = (in_flight.clone(), max_in_flight.clone());
        let app = Router::new().fallback(any(
            move |method: HttpMethod, uri: Uri, headers: HeaderMap, body: String| {
                let (kept, rules, count_tx) = (kept.clone(), rules.clone(), count_tx.clone());
                let (busy, most) = (busy.clone(), most.clone());
                let mut released = released_rx.clone();
                async move {
                    let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let host = headers
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let request = Received {
                        method: method.to_string(),
                        url: format!("http://{host}{uri}"),
                        headers,
                        body,
                        at: Instant::now(),
                    };
                    let answer = {
                        let mut kept = kept.lock().unwrap();
                        let policy = rules.lock().unwrap().clone();
                        let answer = policy(&request, kept.len());
                        kept.push(request);
                        count_tx.send_replace(kept.len());
                        answer
                    };
                    let response = respond(answer, &mut released).await;
                    busy.fetch_sub(1, Ordering::SeqCst);
                    response
                }
            },
        ));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Sink {
            address,
            received,
            count,
            policy,
            released,
            max_in_flight,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.address.port())
    }

    pub(crate) fn answer_with(
        &self,
        policy: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static,
    ) {
        *self.policy.lock().unwrap() = Arc::new(policy);
    }

    /// Lets every hanging request answer 200.
    pub(crate) fn release(&self) {
        self.released.send_replace(true);
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The most requests the sink held unanswered at once.
    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until `n` requests arrived (a minute at most) and returns them all.
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Received> {
        let mut count = self.count.clone();
        tokio::time::timeout(Duration::from_secs(60), count.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} requests arrived", self.count()))
            .unwrap();
        self.received()
    }

    /// Waits until the requests answered 2xx carry `n` distinct idempotency tokens.
    pub(crate) async fn wait_for_delivered(
        &self,
        n: usize,
        delivered: impl Fn(&Received) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut tokens: Vec<String> = self
                .received()
                .iter()
                .filter(|r| delivered(r))
                .map(Received::token)
                .collect();
            tokens.sort();
            tokens.dedup();
            if tokens.len() >= n {
                return tokens;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} deliveries got through",
                tokens.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn respond(answer: Answer, released: &mut watch::Receiver<bool>) -> Response {
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Answer::RetryAfter(code, secs) => (
            StatusCode::from_u16(code).unwrap(),
            [("retry-after", secs.to_string())],
        )
            .into_response(),
        Answer::Hang => {
            let _ = released.wait_for(|r| *r).await;
            StatusCode::OK.into_response()
        }
        Answer::After(pause, code) => {
            tokio::time::sleep(pause).await;
            StatusCode::from_u16(code).unwrap().into_response()
        }
        Answer::HangThen(code) => {
            let _ = released.wait_for(|r| *r).await;
            StatusCode::from_u16(code).unwrap().into_response()
        }
    }
}

/// An independent `X-Twilio-Signature` check, written from contract §6a: the URL, then every
/// parameter as name + value in sorted order, HMAC-SHA1 with the auth token, base64.
pub(crate) fn twilio_signature_is_valid(request: &Received, auth_token: &str) -> bool {
    let mut signed = request.url.clone();
    if request.method != "GET" {
        let mut params = request.params();
        params.sort();
        params.dedup();
        for (name, value) in params {
            signed.push_str(&name);
            signed.push_str(&value);
        }
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    expected == request.header("x-twilio-signature")
}

/// An independent Standard Webhooks check: each secret's HMAC-SHA256 of `id.timestamp.body`
/// appears among the `v1,` signatures.
pub(crate) fn standard_signatures_are_valid(request: &Received, secrets: &[&str]) -> bool {
    let id = request.header("webhook-id");
    let timestamp = request.header("webhook-timestamp");
    let offered: Vec<&str> = request.header("webhook-signature").split(' ').collect();
    secrets.iter().all(|secret| {
        let key = STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{timestamp}.{}", request.body).as_bytes());
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        offered.contains(&expected.as_str())
    })
}

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
