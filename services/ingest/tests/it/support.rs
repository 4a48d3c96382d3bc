//! A gateway running in-process on port 0 against the test broker, driven with the testkit's bare
//! HTTP/1.1 client, and a reader of what it produced.

use std::net::SocketAddr;

use rdkafka::consumer::StreamConsumer;
use receipts_bus::Record;
use receipts_bus::record::decode_delivery_event;
use receipts_bus::topics::ensure_topics;
use receipts_bus::{KafkaSettings, TopicNames, TopicSpec};
use receipts_domain::{AccountSid, DeliveryEvent, DeliveryEventKind, StatusReport};
use receipts_ingest::{IngestConfig, SmppConnection, WhatsappConfig};
use receipts_runtime::config::Secret;
use receipts_runtime::metrics::Metrics;
use receipts_testkit::{http, kafka};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) const ACCOUNT: &str = "AC00000000000000000000000000000001";
pub(crate) const AUTH_TOKEN: &str = "account-one-auth-token";
pub(crate) const OTHER_ACCOUNT: &str = "AC00000000000000000000000000000002";
pub(crate) const OTHER_TOKEN: &str = "account-two-auth-token";
pub(crate) const PUBLIC_BASE_URL: &str = "https://hooks.example.com/receipts";
pub(crate) const VERIFY_TOKEN: &str = "meta-verify-token";
pub(crate) const APP_SECRET: &str = "meta-app-secret";
pub(crate) const SMPP_CONNECTION: &str = "smsc-eu";
pub(crate) const SMPP_TOKEN: &str = "smsc-eu-token";
/// The business phone number `ACCOUNT` sends WhatsApp messages from, and one of `OTHER_ACCOUNT`.
pub(crate) const WHATSAPP_NUMBER: &str = "106540352242922";
pub(crate) const OTHER_WHATSAPP_NUMBER: &str = "106540352242923";
/// `OTHER_ACCOUNT`'s SMSC connection.
pub(crate) const OTHER_SMPP_CONNECTION: &str = "smsc-other";
pub(crate) const OTHER_SMPP_TOKEN: &str = "smsc-other-token";

pub(crate) fn account() -> AccountSid {
    AccountSid::parse(ACCOUNT).unwrap()
}

/// The account owning a WhatsApp business number, as the test configuration maps them.
pub(crate) fn whatsapp_account(number: &str) -> Option<AccountSid> {
    match number {
        WHATSAPP_NUMBER => Some(account()),
        OTHER_WHATSAPP_NUMBER => Some(AccountSid::parse(OTHER_ACCOUNT).unwrap()),
        _ => None,
    }
}
pub(crate) const BODY_LIMIT: usize = 16 * 1024;

pub(crate) struct Harness {
    pub(crate) kafka: KafkaSettings,
    pub(crate) topics: TopicNames,
    pub(crate) addr: SocketAddr,
    pub(crate) metrics: Metrics,
    shutdown: CancellationToken,
    running: Option<JoinHandle<()>>,
}

pub(crate) fn config(kafka: KafkaSettings, topics: TopicNames) -> IngestConfig {
    IngestConfig {
        kafka,
        topics,
        public_base_url: PUBLIC_BASE_URL.into(),
        accounts: [
            (ACCOUNT.to_owned(), Secret::new(AUTH_TOKEN)),
            (OTHER_ACCOUNT.to_owned(), Secret::new(OTHER_TOKEN)),
        ]
        .into(),
        whatsapp: WhatsappConfig {
            verify_token: Secret::new(VERIFY_TOKEN),
            app_secret: Secret::new(APP_SECRET),
            phone_numbers: [
                (WHATSAPP_NUMBER.to_owned(), ACCOUNT.to_owned()),
                (OTHER_WHATSAPP_NUMBER.to_owned(), OTHER_ACCOUNT.to_owned()),
            ]
            .into(),
        },
        smpp_connections: [
            (SMPP_CONNECTION, ACCOUNT, SMPP_TOKEN),
            (OTHER_SMPP_CONNECTION, OTHER_ACCOUNT, OTHER_SMPP_TOKEN),
        ]
        .into_iter()
        .map(|(name, account, token)| {
            let connection = SmppConnection {
                account: account.to_owned(),
                token: Secret::new(token),
            };
            (name.to_owned(), connection)
        })
        .collect(),
        body_limit_bytes: BODY_LIMIT,
        produce_timeout_ms: 15_000,
        retry_after_secs: 7,
        metrics_listen: String::new(),
        ..IngestConfig::default()
    }
}

/// The test configuration on fresh topics of the test broker. `delivery-events` has one
/// partition, so the order of its records is the order they were written in.
pub(crate) async fn fresh_config() -> IngestConfig {
    let kafka = receipts_testkit::kafka();
    let topics = receipts_testkit::unique_topics();
    ensure_topics(&kafka, &[TopicSpec::new(&topics.delivery_events, 1)])
        .await
        .unwrap();
    config(kafka, topics)
}

impl Harness {
    /// A gateway on fresh topics of the test broker.
    pub(crate) async fn start() -> Self {
        Self::start_with(fresh_config().await).await
    }

    pub(crate) async fn start_with(config: IngestConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let (kafka, topics) = (config.kafka.clone(), config.topics.clone());
        let running = tokio::spawn({
            let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
            async move {
                receipts_ingest::run(config, listener, &metrics, shutdown)
                    .await
                    .expect("gateway runs");
            }
        });
        Harness {
            kafka,
            topics,
            addr,
            metrics,
            shutdown,
            running: Some(running),
        }
    }

    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.await.unwrap();
        }
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        request(self.addr, "POST", path, headers, body).await
    }

    pub(crate) async fn get(&self, path: &str) -> HttpResponse {
        request(self.addr, "GET", path, &[], b"").await
    }

    /// A consumer of `delivery-events` from the beginning.
    pub(crate) fn reader(&self) -> StreamConsumer {
        kafka::reader(
            &self.kafka,
            "ingest-test-reader",
            &self.topics.delivery_events,
        )
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One record of `delivery-events`, decoded.
#[derive(Debug)]
pub(crate) struct Produced {
    pub(crate) key: String,
    pub(crate) content_type: String,
    pub(crate) event: DeliveryEvent,
}

impl Produced {
    pub(crate) fn report(&self) -> &StatusReport {
        match &self.event.kind {
            DeliveryEventKind::Reported(report) => report,
            DeliveryEventKind::Registered(r) => panic!("expected a report, got {r:?}"),
        }
    }
}

/// Reads `count` records, failing if they do not arrive within a minute.
pub(crate) async fn read_events(reader: &StreamConsumer, count: usize) -> Vec<Produced> {
    kafka::read(reader, count)
        .await
        .into_iter()
        .map(|message| {
            let record = Record::from(message);
            Produced {
                key: String::from_utf8(record.key().unwrap().to_vec()).unwrap(),
                content_type: String::from_utf8_lossy(record.content_type().unwrap_or_default())
                    .into_owned(),
                event: decode_delivery_event(&record).unwrap(),
            }
        })
        .collect()
}

/// Nothing was written since the last record read: a report posted now is the next record.
/// (With one partition, anything written before it would be read first.)
pub(crate) async fn assert_nothing_written(harness: &Harness, reader: &StreamConsumer) {
    let id = receipts_testkit::unique("sentinel");
    let receipt = format!("id:{id} done date:2403011234 stat:DELIVRD err:000");
    let response = harness
        .post(
            &format!("/v1/smpp/{SMPP_CONNECTION}/receipts"),
            &[("authorization", &format!("Bearer {SMPP_TOKEN}"))],
            receipt.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    let next = read_events(reader, 1).await;
    assert_eq!(
        next[0].key,
        format!("{ACCOUNT}/smpp:{SMPP_CONNECTION}:{id}"),
        "a record was written before the sentinel: {:?}",
        next[0].event
    );
}

/// An answer of the gateway: the testkit's, with the fields of the gateway's JSON answers.
#[derive(Debug)]
pub(crate) struct HttpResponse(http::HttpResponse);

impl std::ops::Deref for HttpResponse {
    type Target = http::HttpResponse;

    fn deref(&self) -> &http::HttpResponse {
        &self.0
    }
}

impl HttpResponse {
    /// The `error.field` of an error answer.
    pub(crate) fn error_field(&self) -> String {
        self.json()["error"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub(crate) fn event_ids(&self) -> Vec<String> {
        self.json()["event_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_owned())
            .collect()
    }
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    HttpResponse(http::request(addr, method, path, headers, body).await)
}

pub(crate) use receipts_testkit::http::basic;
