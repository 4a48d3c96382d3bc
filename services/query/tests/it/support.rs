//! A harness that feeds receipt updates and runs the query service in-process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use receipts_bus::record::content_type_headers;
use receipts_bus::topics::ensure_topics;
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ChatServiceSid, ConversationSid, DeliveryStatus,
    MessageSid, ParticipantSid, ReceiptChange, ReceiptState, RegisterOutcome, Registration,
    ReportOutcome, StatusReport, StatusSource, Timestamp,
};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_proto::v1::delivery_query_client::DeliveryQueryClient;
use receipts_query::QueryConfig;
use receipts_query::auth::Credentials;
use receipts_runtime::config::Secret;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel as GrpcChannel;

pub(crate) const ACCOUNT: &str = "AC00000000000000000000000000000001";
pub(crate) const TOKEN: &str = "token-one";
pub(crate) const OTHER_ACCOUNT: &str = "AC00000000000000000000000000000002";
pub(crate) const OTHER_TOKEN: &str = "token-two";

pub(crate) fn sid(prefix: &str, n: u64) -> String {
    format!("{prefix}{n:032x}")
}

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
        let mut acks = Vec::new();
        for change in changes {
            let payload = codec::encode(&v1::ReceiptUpdated::from(change), Encoding::Protobuf);
            let key = change.receipt.registration.conversation.to_string();
            let record = FutureRecord::to(&self.topics.receipt_updates)
                .key(&key)
                .payload(&payload)
                .headers(content_type_headers(Encoding::Protobuf));
            acks.push(
                self.producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .unwrap(),
            );
        }
        for ack in acks {
            ack.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    }
}

impl Harness {
    /// Writes each state to the projector changelog, as the projector does.
    pub(crate) async fn write_changelog(&self, states: &BTreeMap<String, ReceiptState>) {
        for (cmid, state) in states {
            let payload = prost::Message::encode_to_vec(&v1::StoredReceiptState::from(state));
            let record = FutureRecord::to(&self.topics.projector_changelog)
                .key(cmid)
                .payload(&payload);
            self.producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
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

/// Retries `probe` until it returns `Some`, failing after a minute.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some((account, token)) = credentials {
        request += &format!("Authorization: {}\r\n", basic_authorization(account, token));
    }
    let body = if method == "GET" || method == "DELETE" {
        String::new()
    } else {
        let mut encoded = form_urlencoded::Serializer::new(String::new());
        for (name, value) in form {
            encoded.append_pair(name, value);
        }
        request += "Content-Type: application/x-www-form-urlencoded\r\n";
        encoded.finish()
    };
    request += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
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
        let registration = Registration {
            account: AccountSid::parse(account).unwrap(),
            chat_service: self.chat_service.clone(),
            conversation: ConversationSid::parse(&sid("CH", conversation)).unwrap(),
            message: MessageSid::parse(&sid("IM", message)).unwrap(),
            message_index: message,
            participant: ParticipantSid::parse(&sid("MB", participant)).unwrap(),
            channel: Channel::Sms,
            channel_message_id: ChannelMessageId::parse(cmid).unwrap(),
            expected_receipts: expected,
            registered_at: Timestamp::from_unix_millis(1_000),
        };
        if let RegisterOutcome::Changed(change) = self
            .states
            .entry(cmid.to_owned())
            .or_default()
            .register(registration)
            .unwrap()
        {
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
        let account = state.registration.as_ref().map_or_else(
            || AccountSid::parse(ACCOUNT).unwrap(),
            |r| r.account.clone(),
        );
        let report = StatusReport {
            account,
            channel_message_id: ChannelMessageId::parse(cmid).unwrap(),
            status,
            raw_status: status.as_str().to_owned(),
            error_code,
            provider_time: Timestamp::from_unix_millis(at),
            source: StatusSource::TwilioMessaging,
        };
        if let ReportOutcome::Changed(change) = state.apply_report(report) {
            self.changes.push(change);
        }
    }
}
