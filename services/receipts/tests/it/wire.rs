//! The public contracts pinned byte for byte: one message to two recipients goes through ingest,
//! projector, query and dispatcher with fixed sids, channel message ids, registration and
//! provider times, and what the system sends out is compared with golden files under
//! `tests/contracts/` (see [`receipts_testkit::golden`]):
//! - gRPC: the protobuf encoding of the GetMessageDelivery, ListReceipts and
//!   GetConversationRollup responses (as prost encodes the decoded message, which is how the
//!   server encoded it: the same generated types on both ends);
//! - REST: the exact body bytes of a Message (its delivery subset), a Receipt, a Receipts page
//!   and a Twilio error;
//! - Kafka: key, headers and payload bytes of a `ReceiptUpdated` record on receipt-updates;
//! - webhook: request line, headers and body bytes of one `onDeliveryUpdated` delivery.
//!
//! Normalised before comparison, and only these: a 127.0.0.1 port becomes `PORT`;
//! `X-Twilio-Signature` becomes `<signature>` (it signs the URL, whose port varies); trace
//! context headers (`traceparent`, `tracestate`) are left out of the Kafka and webhook
//! renderings, since they name the run's spans. The REST facade runs with a fixed public base
//! URL, so its links need no normalising. The receipt timeline is not pinned.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Bytes;
use rdkafka::Message as _;
use rdkafka::message::Headers as _;
use receipts::get::Connection;
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_domain::{AccountSid, ChannelMessageId, ReceiptKey};
use receipts_proto::v1;
use receipts_runtime::config::Secret;
use receipts_testkit::golden::{self, hex_lines};
use receipts_testkit::webhooks::{Answer, Received, Sink};
use receipts_testkit::{eventually_within, kafka};
use tokio_util::sync::CancellationToken;

use crate::support::{Services, bind, fresh_topics};

const ACCOUNT: &str = "AC0000000000000000000000000000c0de";
const TOKEN: &str = "contract-auth-token";
const CONVERSATION: &str = "CH0000000000000000000000000000c001";
const MESSAGE: &str = "IM0000000000000000000000000000c001";
const SMS: &str = "SM0000000000000000000000000000c0a1";
const WAMID: &str = "wamid.HBgLMTU1NTAwMDAwMDIVAgARGBI";
/// The REST facade's links start with this, whatever port it listens on.
const PUBLIC_BASE_URL: &str = "https://conversations.example.com";
const WEBHOOK_PATH: &str = "/hooks/delivery";

/// Registers the message's two recipients, as the messaging platform does when it sends.
const REGISTRATIONS: &str = r#"{"events": [
  {"eventId": "contract-reg-1", "occurredAt": "2026-03-01T09:00:00Z", "receiptRegistered": {
    "accountSid": "AC0000000000000000000000000000c0de", "conversationSid": "CH0000000000000000000000000000c001",
    "messageSid": "IM0000000000000000000000000000c001", "messageIndex": "7",
    "participantSid": "MB0000000000000000000000000000c001", "channel": "CHANNEL_SMS",
    "channelMessageId": "SM0000000000000000000000000000c0a1", "expectedReceipts": 2}},
  {"eventId": "contract-reg-2", "occurredAt": "2026-03-01T09:00:00Z", "receiptRegistered": {
    "accountSid": "AC0000000000000000000000000000c0de", "conversationSid": "CH0000000000000000000000000000c001",
    "messageSid": "IM0000000000000000000000000000c001", "messageIndex": "7",
    "participantSid": "MB0000000000000000000000000000c002", "channel": "CHANNEL_WHATSAPP",
    "channelMessageId": "wamid.HBgLMTU1NTAwMDAwMDIVAgARGBI", "expectedReceipts": 2}}
]}"#;

/// The SMS is delivered, the WhatsApp message fails with an error code.
const REPORTS: &str = r#"{"events": [
  {"eventId": "contract-rep-1", "statusReported": {
    "channelMessageId": "SM0000000000000000000000000000c0a1", "rawStatus": "delivered",
    "providerTimestamp": "2026-03-01T09:00:05.250Z", "source": "STATUS_SOURCE_TWILIO_MESSAGING"}},
  {"eventId": "contract-rep-2", "statusReported": {
    "channelMessageId": "wamid.HBgLMTU1NTAwMDAwMDIVAgARGBI", "rawStatus": "failed",
    "errorCode": 30008, "providerTimestamp": "2026-03-01T09:00:07Z",
    "source": "STATUS_SOURCE_WHATSAPP_CLOUD"}}
]}"#;

/// Ingest, projector, query (gRPC and REST) and dispatcher on fresh topics, the account's webhook
/// pointed at a receiver that keeps every request.
struct Stack {
    kafka: KafkaSettings,
    topics: TopicNames,
    ingest: String,
    grpc: SocketAddr,
    rest: SocketAddr,
    receiver: Sink,
    shutdown: CancellationToken,
    services: tokio::task::JoinHandle<()>,
}

impl Stack {
    async fn start(data_dir: &std::path::Path) -> Stack {
        let (kafka, topics) = fresh_topics().await;
        let receiver = Sink::start(|_, _| Answer::Status(200)).await;
        let url = format!("http://{}{WEBHOOK_PATH}", receiver.address);
        receipts::dev::configure_webhook(&kafka, &topics, ACCOUNT, &url)
            .await
            .unwrap();

        let (ingest_listener, ingest) = bind().await;
        let (grpc_listener, grpc) = bind().await;
        let (rest_listener, rest) = bind().await;
        let mut services = Services::new(&kafka, &topics, data_dir, &[(ACCOUNT, TOKEN)]);
        services.ingest.public_base_url = format!("http://{ingest}");
        services.query.public_base_url = PUBLIC_BASE_URL.into();
        services.query.page_token_key = Secret::new("contract page token key");
        let shutdown = CancellationToken::new();
        let services = services.spawn(
            ingest_listener,
            grpc_listener,
            Some(rest_listener),
            shutdown.clone(),
        );
        Stack {
            kafka,
            topics,
            ingest: format!("http://{ingest}"),
            grpc,
            rest,
            receiver,
            shutdown,
            services,
        }
    }

    async fn post_events(&self, body: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/events", self.ingest))
            .basic_auth(ACCOUNT, Some(TOKEN))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    async fn client(&self) -> receipts::get::Client {
        receipts::get::connect(&Connection {
            grpc: self.grpc.to_string(),
            account: ACCOUNT.into(),
            token: TOKEN.into(),
            json: false,
        })
        .await
        .unwrap()
    }

    /// The REST answer to `GET path`: status and exact body bytes.
    async fn rest(&self, path: &str) -> (u16, Bytes) {
        let response = reqwest::Client::new()
            .get(format!("http://{}{path}", self.rest))
            .basic_auth(ACCOUNT, Some(TOKEN))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.bytes().await.unwrap())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.services.await.unwrap();
    }
}

fn receipt_sid(channel_message_id: &str) -> String {
    ReceiptKey::new(
        AccountSid::parse(ACCOUNT).unwrap(),
        ChannelMessageId::parse(channel_message_id).unwrap(),
    )
    .receipt_sid()
    .to_string()
}

/// How long the services get to settle: they run beside other tests on a busy machine.
const SETTLE: Duration = Duration::from_secs(90);

fn contracts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contracts")
}

fn assert_pinned(name: &str, actual: &str, context: &str) {
    golden::assert_pinned(&contracts(), name, actual, context);
}

/// Every 127.0.0.1 port replaced by `PORT`.
fn without_ports(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("127.0.0.1:") {
        let (before, after) = rest.split_at(at + "127.0.0.1:".len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(if digits > 0 { "PORT" } else { "" });
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

fn pin_message(name: &str, message: &(impl prost::Message + std::fmt::Debug)) {
    assert_pinned(
        name,
        &hex_lines(&message.encode_to_vec()),
        &format!("sent, decoded: {message:#?}"),
    );
}

fn pin_body(name: &str, (status, body): &(u16, Bytes), want: u16) {
    let text = std::str::from_utf8(body).expect("a UTF-8 body");
    assert_eq!(*status, want, "{name}: {text}");
    assert_pinned(name, text, "");
}

/// The record's key, headers in order (trace context left out) and payload.
fn render_record(record: &rdkafka::message::BorrowedMessage<'_>) -> String {
    let mut out = format!(
        "key: {}\n",
        String::from_utf8_lossy(record.key().unwrap_or_default())
    );
    if let Some(headers) = record.headers() {
        for header in headers.iter() {
            if matches!(header.key, "traceparent" | "tracestate") {
                continue;
            }
            let value = String::from_utf8_lossy(header.value.unwrap_or_default());
            out += &format!("header: {}: {value}\n", header.key);
        }
    }
    out += "payload:\n";
    out += &hex_lines(record.payload().unwrap_or_default());
    out
}

/// The request line, headers sorted by name (trace context left out, the signature and the
/// receiver's port normalised) and the body.
fn render_webhook(request: &Received) -> String {
    let target = request.url.splitn(4, '/').nth(3).unwrap_or_default();
    let mut out = format!("{} /{target}\n", request.method);
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "traceparent" | "tracestate"))
        .map(|(name, value)| {
            let value = if name == "x-twilio-signature" {
                "<signature>".to_owned()
            } else {
                without_ports(value.to_str().unwrap())
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    headers.sort();
    for (name, value) in headers {
        out += &format!("{name}: {value}\n");
    }
    out += "\n";
    out += &without_ports(&request.body);
    out += "\n";
    out
}

#[test]
fn ports_are_normalised_and_nothing_else() {
    assert_eq!(
        without_ports("http://127.0.0.1:41234/hooks 127.0.0.1: x:80"),
        "http://127.0.0.1:PORT/hooks 127.0.0.1: x:80"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_contracts_are_byte_for_byte_the_pinned_ones() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path()).await;
    let (sms, wamid) = (receipt_sid(SMS), receipt_sid(WAMID));

    // The reports follow the registrations, so each receipt changes in one known order.
    stack.post_events(REGISTRATIONS).await;
    let mut client = stack.client().await;
    let list = v1::ListReceiptsRequest {
        conversation_sid: CONVERSATION.into(),
        message_sid: MESSAGE.into(),
        page_size: 50,
        page_token: String::new(),
    };
    eventually_within("both receipts registered", SETTLE, || {
        let (mut client, list) = (client.clone(), list.clone());
        async move {
            let receipts = client.list_receipts(list).await.ok()?.into_inner().receipts;
            (receipts.len() == 2).then_some(())
        }
    })
    .await;
    stack.post_events(REPORTS).await;
    let receipts = eventually_within("both receipts in their final state", SETTLE, || {
        let (mut client, list) = (client.clone(), list.clone());
        async move {
            let listed = client.list_receipts(list).await.ok()?.into_inner();
            let settled = listed.receipts.iter().all(|r| r.version == 2);
            (listed.receipts.len() == 2 && settled).then_some(listed)
        }
    })
    .await;

    // gRPC.
    pin_message("grpc/list_receipts.hex", &receipts);
    let delivery = client
        .get_message_delivery(v1::GetMessageDeliveryRequest {
            conversation_sid: CONVERSATION.into(),
            message_sid: MESSAGE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    pin_message("grpc/get_message_delivery.hex", &delivery);
    let rollup = client
        .get_conversation_rollup(v1::GetConversationRollupRequest {
            conversation_sid: CONVERSATION.into(),
        })
        .await
        .unwrap()
        .into_inner();
    pin_message("grpc/get_conversation_rollup.hex", &rollup);

    // REST.
    let message = format!("/v1/Conversations/{CONVERSATION}/Messages/{MESSAGE}");
    pin_body("rest/message.json", &stack.rest(&message).await, 200);
    pin_body(
        "rest/receipts_page.json",
        &stack.rest(&format!("{message}/Receipts")).await,
        200,
    );
    pin_body(
        "rest/receipt.json",
        &stack.rest(&format!("{message}/Receipts/{wamid}")).await,
        200,
    );
    pin_body(
        "rest/error_not_found.json",
        &stack
            .rest(&format!("{message}/Receipts/DY{:032x}", 0xdead_u32))
            .await,
        404,
    );

    // Kafka: the SMS receipt's second version, its delivery.
    let reader = kafka::reader(
        &stack.kafka,
        "contract-reader",
        &stack.topics.receipt_updates,
    );
    let wanted_id = format!("{sms}/2");
    let rendered = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let record = reader.recv().await.unwrap();
            let is_wanted = record.headers().is_some_and(|headers| {
                headers
                    .iter()
                    .any(|h| h.key == "ce_id" && h.value == Some(wanted_id.as_bytes()))
            });
            if is_wanted {
                break render_record(&record);
            }
        }
    })
    .await
    .expect("the delivered SMS receipt on receipt-updates");
    assert_pinned("kafka/receipt_updated.txt", &rendered, "");

    // The webhook announcing that delivery.
    let webhook = eventually_within("the delivered SMS webhook", SETTLE, || {
        let received = stack.receiver.received();
        let sms = sms.clone();
        async move {
            received.into_iter().find(|r| {
                let params = r.params();
                let has =
                    |name: &str, value: &str| params.iter().any(|(k, v)| k == name && v == value);
                has("DeliveryReceiptSid", &sms) && has("Status", "delivered")
            })
        }
    })
    .await;
    assert_pinned(
        "webhook/on_delivery_updated.txt",
        &render_webhook(&webhook),
        "",
    );

    drop(client);
    stack.stop().await;
}
