//! A harness that feeds receipt updates and runs the query service in-process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use rdkafka::producer::FutureProducer;
use receipts_bus::topics::ensure_topics;
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_domain::{
    Channel, ChatServiceSid, DeliveryEventKind, DeliveryStatus, ReceiptChange, ReceiptState,
    StatusSource,
};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_proto::v1::delivery_query_client::DeliveryQueryClient;
use receipts_query::QueryConfig;
use receipts_query::auth::Credentials;
use receipts_runtime::config::Secret;
use receipts_testkit::{events, kafka, model};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel as GrpcChannel;

pub(crate) const ACCOUNT: &str = "AC00000000000000000000000000000001";
pub(crate) const TOKEN: &str = "token-one";
pub(crate) const OTHER_ACCOUNT: &str = "AC00000000000000000000000000000002";
pub(crate) const OTHER_TOKEN: &str = "token-two";

pub(crate) struct Harness {
    pub(crate) kafka: KafkaSettings,
    pub(crate) topics: TopicNames,
    producer: FutureProducer,
}

pub(crate) struct Running {
    pub(crate) address: SocketAddr,
    /// The Twilio-compatible REST facade.
    pub(crate) rest_address: SocketAddr,
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl Running {
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap();
    }
}

pub(crate) type Client = DeliveryQueryClient<InterceptedService<GrpcChannel, Credentials>>;

impl Harness {
    pub(crate) async fn new() -> Self {
        let kafka = receipts_testkit::kafka();
        let topics = receipts_testkit::unique_topics();
        ensure_topics(&kafka, &topics.specs(2)).await.unwrap();
        let producer = kafka.producer("query-test").unwrap();
        Harness {
            kafka,
            topics,
            producer,
        }
    }

    pub(crate) async fn start(&self, data_dir: &Path) -> Running {
        self.start_with(data_dir, |_| {}).await
    }

    /// Starts an instance with the test configuration changed by `adjust`.
    pub(crate) async fn start_with(
        &self,
        data_dir: &Path,
        adjust: impl FnOnce(&mut QueryConfig),
    ) -> Running {
        let mut config = QueryConfig {
            kafka: self.kafka.clone(),
            topics: self.topics.clone(),
            data_dir: data_dir.to_owned(),
            accounts: BTreeMap::from([
                (ACCOUNT.to_owned(), Secret::new(TOKEN)),
                (OTHER_ACCOUNT.to_owned(), Secret::new(OTHER_TOKEN)),
            ]),
            page_token_key: Secret::new("test key"),
            watch_buffer: 16,
            metrics_listen: String::new(),
            ..QueryConfig::default()
        };
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let rest_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rest_address = rest_listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            let metrics = receipts_runtime::metrics::Metrics::new();
            receipts_query::run(config, listener, Some(rest_listener), &metrics, token)
                .await
                .expect("query service runs");
        });
        Running {
            address,
            rest_address,
            shutdown,
            handle,
        }
    }

    pub(crate) async fn publish(&self, changes: &[ReceiptChange]) {
        let records: Vec<(String, Vec<u8>)> = changes
            .iter()
            .map(|change| {
                let payload = codec::encode(&v1::ReceiptUpdated::from(change), Encoding::Protobuf);
                (
                    change.receipt.registration.conversation.to_string(),
                    payload,
                )
            })
            .collect();
        kafka::produce(
            &self.producer,
            &self.topics.receipt_updates,
            records
                .iter()
                .map(|(k, p)| (k.as_str(), Some(p.as_slice()))),
            Some(Encoding::Protobuf),
        )
        .await;
    }

    /// Writes each state to the projector changelog, as the projector does.
    pub(crate) async fn write_changelog(&self, states: &BTreeMap<String, ReceiptState>) {
        let records: Vec<(&String, Vec<u8>)> = states
            .iter()
            .map(|(cmid, state)| {
                let payload = prost::Message::encode_to_vec(&v1::StoredReceiptState::from(state));
                (cmid, payload)
            })
            .collect();
        kafka::produce(
            &self.producer,
            &self.topics.projector_changelog,
            records
                .iter()
                .map(|(k, p)| (k.as_str(), Some(p.as_slice()))),
            None,
        )
        .await;
    }

    /// Deletes every record of `receipt-updates` written so far, as retention would.
    pub(crate) async fn trim_updates(&self) {
        receipts_testkit::trim(&self.kafka, &self.topics.receipt_updates).await;
    }
}

pub(crate) async fn client(address: SocketAddr, account: &str, token: &str) -> Client {
    let channel = GrpcChannel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    DeliveryQueryClient::with_interceptor(channel, Credentials::new(account, token).unwrap())
}

pub(crate) use receipts_testkit::{eventually, sid};

/// One HTTP/1.1 answer, read to its end.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl HttpResponse {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client (one request per connection), enough to drive the REST facade
/// exactly as a client would: absolute URLs as the API gave them, Basic auth, form bodies.
pub(crate) async fn http(
    method: &str,
    url: &str,
    credentials: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> HttpResponse {
    use receipts_query::auth::basic_authorization;
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let authorization = credentials.map(|(account, token)| basic_authorization(account, token));
    let mut headers = Vec::new();
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization.as_str()));
    }
    let body = if method == "GET" || method == "DELETE" {
        String::new()
    } else {
        let mut encoded = form_urlencoded::Serializer::new(String::new());
        for (name, value) in form {
            encoded.append_pair(name, value);
        }
        headers.push(("content-type", "application/x-www-form-urlencoded"));
        encoded.finish()
    };
    let address = host.parse().expect("a 127.0.0.1:port URL");
    let answer =
        receipts_testkit::http::request(address, method, path, &headers, body.as_bytes()).await;
    HttpResponse {
        status: answer.status,
        headers: answer.headers,
        body: String::from_utf8(answer.body).expect("a UTF-8 answer"),
    }
}

/// Produces real receipt changes by running the projector's merge.
#[derive(Default)]
pub(crate) struct Projection {
    pub(crate) states: BTreeMap<String, ReceiptState>,
    pub(crate) changes: Vec<ReceiptChange>,
    /// The chat service of the registrations that follow.
    pub(crate) chat_service: Option<ChatServiceSid>,
}

impl Projection {
    pub(crate) fn register(
        &mut self,
        account: &str,
        cmid: &str,
        conversation: u64,
        message: u64,
        participant: u64,
        expected: u32,
    ) {
        let mut registration = events::registration(
            account,
            Channel::Sms,
            cmid,
            conversation,
            message,
            participant,
            expected,
        );
        registration.chat_service = self.chat_service.clone();
        let state = self.states.entry(cmid.to_owned()).or_default();
        if let Some(change) = model::fold(state, DeliveryEventKind::Registered(registration)) {
            self.changes.push(change);
        }
    }

    pub(crate) fn report(
        &mut self,
        cmid: &str,
        status: DeliveryStatus,
        at: i64,
        error_code: Option<u32>,
    ) {
        let state = self.states.entry(cmid.to_owned()).or_default();
        // The projection keys its states by channel message id alone: a report is for the
        // account that registered it.
        let account = state
            .registration
            .as_ref()
            .map_or(ACCOUNT, |r| r.account.as_str());
        let report = events::report(
            account,
            cmid,
            status,
            at,
            error_code,
            StatusSource::TwilioMessaging,
        );
        if let Some(change) = model::fold(state, DeliveryEventKind::Reported(report)) {
            self.changes.push(change);
        }
    }
}
