//! Accounts are tenants, end to end: account B, with valid credentials of its own, registers
//! account A's channel message ids and reports on them over every route (canonical batches,
//! Twilio callbacks signed with B's token, WhatsApp statuses from B's number). A's receipts,
//! summaries and webhooks stay exactly what A's own reports make them; B gets receipts of its
//! own for the same ids, and only B's webhook hears about them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use receipts::get::Connection;
use receipts::sink::{self, SinkCounts};
use receipts_domain::{AccountSid, ChannelMessageId, ReceiptKey, ReceiptSid};
use receipts_ingest::{SmppConnection, WhatsappConfig};
use receipts_proto::v1;
use receipts_runtime::config::Secret;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::{Services, bind, fresh_topics};

const A: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const A_TOKEN: &str = "token-of-a";
const B: &str = "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const B_TOKEN: &str = "token-of-b";
const APP_SECRET: &str = "the-meta-app-secret";
const A_NUMBER: &str = "100000000000001";
const B_NUMBER: &str = "100000000000002";

const SMS: &str = "SM0123456789abcdef0123456789abcdef";
const WAMID: &str = "wamid.HBgLMTU1NTAwMDAwMDEVAgARGBI";
const SMPP: &str = "smpp:smsc-a:1001";
/// 9999-12-31T23:59:59Z, the latest provider time ingest accepts: a pin if it could reach A.
const FAR_FUTURE: &str = "9999-12-31T23:59:59Z";

/// A conversation message of one account, with one recipient per channel message id.
struct Message {
    account: &'static str,
    token: &'static str,
    conversation: String,
    message: String,
}

impl Message {
    fn of(account: &'static str, token: &'static str, n: u8) -> Self {
        Message {
            account,
            token,
            conversation: format!("CH{:032x}", u128::from(n)),
            message: format!("IM{:032x}", u128::from(n)),
        }
    }

    fn receipt(&self, id: &str) -> ReceiptSid {
        ReceiptKey::new(
            AccountSid::parse(self.account).unwrap(),
            ChannelMessageId::parse(id).unwrap(),
        )
        .receipt_sid()
    }

    /// The canonical batch registering the message's three recipients.
    fn registrations(&self) -> String {
        let events: Vec<String> = [("SMS", SMS), ("WHATSAPP", WAMID), ("SMS", SMPP)]
            .iter()
            .enumerate()
            .map(|(n, (channel, id))| {
                format!(
                    r#"{{"eventId": "reg-{}-{n}", "occurredAt": "2026-01-01T00:00:00Z",
                    "receiptRegistered": {{"accountSid": "{}", "conversationSid": "{}",
                    "messageSid": "{}", "participantSid": "MB{n:032x}", "channel": "CHANNEL_{channel}",
                    "channelMessageId": "{id}", "expectedReceipts": 3}}}}"#,
                    self.account, self.account, self.conversation, self.message
                )
            })
            .collect();
        format!(r#"{{"events": [{}]}}"#, events.join(","))
    }
}

/// A canonical status report, with `account` naming its account or leaving it out.
fn canonical_report(account: Option<&str>, id: &str, raw: &str, source: &str, at: &str) -> String {
    let account = account.map_or_else(String::new, |a| format!(r#""accountSid": "{a}","#));
    format!(
        r#"{{"events": [{{"eventId": "rep-{id}-{raw}-{at}", "statusReported": {{{account}
        "channelMessageId": "{id}", "rawStatus": "{raw}", "providerTimestamp": "{at}",
        "source": "STATUS_SOURCE_{source}"}}}}]}}"#
    )
}

fn whatsapp_status(number: &str, id: &str, status: &str) -> String {
    format!(
        r#"{{"object": "whatsapp_business_account", "entry": [{{"id": "1", "changes": [{{"field": "messages",
        "value": {{"messaging_product": "whatsapp", "metadata": {{"phone_number_id": "{number}"}},
        "statuses": [{{"id": "{id}", "status": "{status}", "timestamp": "1767225700"}}]}}}}]}}]}}"#
    )
}

struct Stack {
    ingest: String,
    grpc: SocketAddr,
    http: reqwest::Client,
    /// Per account, the webhook lines its sink received.
    webhooks: BTreeMap<&'static str, mpsc::UnboundedReceiver<String>>,
    shutdown: CancellationToken,
    services: tokio::task::JoinHandle<()>,
}

impl Stack {
    /// Ingest, projector, query and dispatcher on fresh topics, each account's webhook pointed at
    /// a sink that checks signatures with that account's token.
    async fn start(data_dir: &std::path::Path) -> Stack {
        let (kafka, topics) = fresh_topics().await;
        let shutdown = CancellationToken::new();
        let mut webhooks = BTreeMap::new();
        for (account, token) in [(A, A_TOKEN), (B, B_TOKEN)] {
            let (listener, address) = bind().await;
            let url = format!("http://{address}{}", sink::PATH);
            receipts::dev::configure_webhook(&kafka, &topics, account, &url)
                .await
                .unwrap();
            let (lines, received) = mpsc::unbounded_channel();
            tokio::spawn(sink::serve(
                listener,
                url,
                token.to_owned(),
                Arc::new(SinkCounts::default()),
                lines,
                shutdown.clone(),
            ));
            webhooks.insert(account, received);
        }

        let (ingest_listener, ingest) = bind().await;
        let (grpc_listener, grpc) = bind().await;
        let mut services = Services::new(&kafka, &topics, data_dir, &[(A, A_TOKEN), (B, B_TOKEN)]);
        services.ingest.public_base_url = format!("http://{ingest}");
        services.ingest.whatsapp = WhatsappConfig {
            app_secret: Secret::new(APP_SECRET),
            phone_numbers: [(A_NUMBER, A), (B_NUMBER, B)]
                .into_iter()
                .map(|(n, a)| (n.to_owned(), a.to_owned()))
                .collect(),
            ..Default::default()
        };
        services.ingest.smpp_connections = [(
            "smsc-a".to_owned(),
            SmppConnection {
                account: A.to_owned(),
                token: Secret::new("smsc-a-token"),
            },
        )]
        .into();
        let services = services.spawn(ingest_listener, grpc_listener, None, shutdown.clone());
        Stack {
            ingest: format!("http://{ingest}"),
            grpc,
            http: reqwest::Client::new(),
            webhooks,
            shutdown,
            services,
        }
    }

    async fn canonical(&self, account: &str, token: &str, body: String) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/events", self.ingest))
            .basic_auth(account, Some(token))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// A status callback signed with `token`, as Twilio signs it for the account in the form.
    async fn twilio(&self, token: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let url = format!("{}/v1/twilio/status", self.ingest);
        let pairs: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let signature = receipts_ingest::twilio::twilio_signature(token, &url, &pairs);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        self.http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn whatsapp(&self, body: String) -> reqwest::Response {
        let signature = receipts_ingest::whatsapp::hub_signature(APP_SECRET, body.as_bytes());
        self.http
            .post(format!("{}/v1/whatsapp/webhook", self.ingest))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn smpp(&self, text: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/smpp/smsc-a/receipts", self.ingest))
            .bearer_auth("smsc-a-token")
            .body(text.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// The message's receipts (sid → status and error code) and summary, once the query
    /// service answers with `want` receipts in a final state.
    async fn settled(
        &self,
        message: &Message,
        want: &BTreeMap<ReceiptSid, v1::DeliveryStatus>,
    ) -> (
        BTreeMap<String, (v1::DeliveryStatus, u32)>,
        v1::DeliverySummary,
    ) {
        let connection = Connection {
            grpc: self.grpc.to_string(),
            account: message.account.into(),
            token: message.token.into(),
            json: false,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut seen = BTreeMap::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "{}'s receipts never settled: {seen:?}, want {want:?}",
                message.account
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Ok(mut client) = receipts::get::connect(&connection).await else {
                continue;
            };
            let Ok(listed) = client
                .list_receipts(v1::ListReceiptsRequest {
                    conversation_sid: message.conversation.clone(),
                    message_sid: message.message.clone(),
                    page_size: 50,
                    page_token: String::new(),
                })
                .await
            else {
                continue;
            };
            seen = listed
                .into_inner()
                .receipts
                .into_iter()
                .map(|r| (r.sid.clone(), (r.status(), r.error_code)))
                .collect();
            let reached = want
                .iter()
                .all(|(sid, status)| seen.get(sid.as_str()).map(|s| s.0) == Some(*status));
            if !reached {
                continue;
            }
            let delivery = client
                .get_message_delivery(v1::GetMessageDeliveryRequest {
                    conversation_sid: message.conversation.clone(),
                    message_sid: message.message.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            return (seen, delivery.delivery.unwrap());
        }
    }

    /// The webhook lines `account`'s sink received until each receipt in `want` was announced
    /// with its status, and for a few seconds after.
    async fn webhooks(
        &mut self,
        account: &str,
        want: &BTreeMap<ReceiptSid, v1::DeliveryStatus>,
    ) -> Vec<String> {
        let received = self.webhooks.get_mut(account).unwrap();
        let mut lines: Vec<String> = Vec::new();
        let mut missing: BTreeSet<String> = want
            .iter()
            .map(|(sid, status)| format!("{} receipt={sid}", twilio_word(*status)))
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while !missing.is_empty() {
            let line = tokio::time::timeout_at(deadline, received.recv())
                .await
                .unwrap_or_else(|_| panic!("{account} never heard of {missing:?}; got {lines:?}"))
                .unwrap();
            missing.retain(|m| {
                let (status, receipt) = m.split_once(' ').unwrap();
                !(line.split_whitespace().nth(1) == Some(status) && line.contains(receipt))
            });
            lines.push(line);
        }
        // Anything owed beyond the final states arrives well within this.
        let quiet = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(Some(line)) = tokio::time::timeout_at(quiet, received.recv()).await {
            lines.push(line);
        }
        lines
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.services.await.unwrap();
    }
}

fn twilio_word(status: v1::DeliveryStatus) -> &'static str {
    match status {
        v1::DeliveryStatus::Delivered => "delivered",
        v1::DeliveryStatus::Read => "read",
        v1::DeliveryStatus::Failed => "failed",
        v1::DeliveryStatus::Undelivered => "undelivered",
        v1::DeliveryStatus::Sent => "sent",
        other => panic!("no webhook for {other:?}"),
    }
}

#[tokio::test]
async fn another_accounts_reports_and_registrations_never_touch_a_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = Stack::start(dir.path()).await;
    let a = Message::of(A, A_TOKEN, 1);
    let b = Message::of(B, B_TOKEN, 2);

    // Both accounts register the same three channel message ids.
    for message in [&a, &b] {
        let response = stack
            .canonical(message.account, message.token, message.registrations())
            .await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    // B, authenticated as B, goes after A's ids on every route.
    let naming_a = stack
        .canonical(
            B,
            B_TOKEN,
            canonical_report(Some(A), SMS, "failed", "TWILIO_MESSAGING", FAR_FUTURE),
        )
        .await;
    assert_eq!(naming_a.status(), 403);
    let answer: serde_json::Value = serde_json::from_str(&naming_a.text().await.unwrap()).unwrap();
    assert_eq!(
        answer["error"]["field"],
        "events[0].status_reported.account_sid"
    );
    for (id, raw, source, twilio) in [
        (SMS, "undelivered", "TWILIO_MESSAGING", "undelivered"),
        (WAMID, "failed", "WHATSAPP_CLOUD", "failed"),
        (SMPP, "UNDELIV", "SMPP", "undelivered"),
    ] {
        let response = stack
            .canonical(
                B,
                B_TOKEN,
                canonical_report(None, id, raw, source, FAR_FUTURE),
            )
            .await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let response = stack
            .twilio(
                B_TOKEN,
                &[
                    ("AccountSid", B),
                    ("MessageSid", id),
                    ("MessageStatus", twilio),
                    ("ErrorCode", "30005"),
                    ("RawDlrDoneDate", "9912312359"),
                ],
            )
            .await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let response = stack
        .whatsapp(whatsapp_status(B_NUMBER, WAMID, "failed"))
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    // A's own reports.
    let response = stack
        .twilio(
            A_TOKEN,
            &[
                ("AccountSid", A),
                ("MessageSid", SMS),
                ("MessageStatus", "delivered"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let response = stack
        .whatsapp(whatsapp_status(A_NUMBER, WAMID, "read"))
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let response = stack
        .smpp("id:1001 sub:001 dlvrd:001 submit date:2601010000 done date:2601010001 stat:DELIVRD err:000")
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    use v1::DeliveryStatus::{Delivered, Failed, Read, Undelivered};
    let want_a: BTreeMap<ReceiptSid, v1::DeliveryStatus> = [
        (a.receipt(SMS), Delivered),
        (a.receipt(WAMID), Read),
        (a.receipt(SMPP), Delivered),
    ]
    .into();
    let want_b: BTreeMap<ReceiptSid, v1::DeliveryStatus> = [
        (b.receipt(SMS), Undelivered),
        (b.receipt(WAMID), Failed),
        (b.receipt(SMPP), Undelivered),
    ]
    .into();

    let (receipts_a, summary_a) = stack.settled(&a, &want_a).await;
    assert!(
        receipts_a.values().all(|(_, error)| *error == 0),
        "A's receipts carry no error code of B's: {receipts_a:?}"
    );
    assert_eq!(receipts_a.len(), 3);
    assert_eq!(summary_a.total, 3);
    assert_eq!(
        (summary_a.failed_count, summary_a.undelivered_count),
        (0, 0)
    );
    assert_eq!(summary_a.read_count, 1);
    let (receipts_b, summary_b) = stack.settled(&b, &want_b).await;
    assert_eq!(receipts_b.len(), 3);
    assert_eq!(summary_b.total, 3);
    assert_eq!(
        (summary_b.failed_count, summary_b.undelivered_count),
        (1, 2)
    );

    // Each account's webhook hears of its own receipts only, correctly signed with its token.
    for (account, message, want) in [(A, &a, &want_a), (B, &b, &want_b)] {
        let lines = stack.webhooks(account, want).await;
        for line in &lines {
            assert!(line.ends_with("signature=ok"), "{account}: {line}");
            assert!(
                line.contains(&format!("message={}", message.message))
                    && want.keys().any(|sid| line.contains(sid.as_str())),
                "{account} heard of another account's receipt: {line}"
            );
        }
        if account == A {
            assert!(
                lines
                    .iter()
                    .all(|l| !l.contains(" failed ") && !l.contains(" undelivered ")),
                "A heard of B's bad news: {lines:?}"
            );
        }
    }
    stack.stop().await;
}
