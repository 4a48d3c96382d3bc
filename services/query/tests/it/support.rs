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
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryStatus, MessageSid,
    ParticipantSid, ReceiptChange, ReceiptState, RegisterOutcome, Registration, ReportOutcome,
    StatusReport, StatusSource, Timestamp,
};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_proto::v1::delivery_query_client::DeliveryQueryClient;
use receipts_query::QueryConfig;
use receipts_query::auth::basic_authorization;
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
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl Running {
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap();
    }
}

/// Adds `authorization: Basic …` to every call.
#[derive(Clone)]
pub(crate) struct Credentials(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
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
        let config = QueryConfig {
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            let metrics = receipts_runtime::metrics::Metrics::new();
            receipts_query::run(config, listener, &metrics, token)
                .await
                .expect("query service runs");
        });
        Running {
            address,
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

pub(crate) async fn client(address: SocketAddr, account: &str, token: &str) -> Client {
    let channel = GrpcChannel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let value = basic_authorization(account, token).parse().unwrap();
    DeliveryQueryClient::with_interceptor(channel, Credentials(value))
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

/// Produces real receipt changes by running the projector's merge.
#[derive(Default)]
pub(crate) struct Projection {
    states: BTreeMap<String, ReceiptState>,
    pub(crate) changes: Vec<ReceiptChange>,
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
            chat_service: None,
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
        let report = StatusReport {
            channel_message_id: ChannelMessageId::parse(cmid).unwrap(),
            status,
            raw_status: status.as_str().to_owned(),
            error_code,
            provider_time: Timestamp::from_unix_millis(at),
            source: StatusSource::TwilioMessaging,
        };
        if let ReportOutcome::Changed(change) = self
            .states
            .entry(cmid.to_owned())
            .or_default()
            .apply_report(report)
        {
            self.changes.push(change);
        }
    }
}
