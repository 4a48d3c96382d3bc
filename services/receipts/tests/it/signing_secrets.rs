//! Signing secrets end to end on `receipts dev`: a secret made over REST, rotated and listed with
//! `receipts webhooks secrets`, revoked over REST, and a receiver using the `standardwebhooks`
//! Python library (installed by `scripts/test.sh`, named by `RECEIPTS_TEST_PYTHON`) that
//! verifies each delivery against the secrets it was given: before the rotation with the first
//! secret, during it with both, after the grace period with the new one only, and none once it is
//! revoked. The `webhook-configs` topic never holds a secret.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use receipts::dev::{DEMO_ACCOUNT, DEMO_TOKEN, DevArgs};
use receipts::ops::secrets::{SecretsArgs, SecretsCommand};
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryEvent, DeliveryEventKind,
    DeliveryStatus, MessageSid, ParticipantSid, ReceiptKey, Registration, StatusReport,
    StatusSource, Timestamp,
};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn python() -> PathBuf {
    match std::env::var_os("RECEIPTS_TEST_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => panic!(
            "RECEIPTS_TEST_PYTHON is not set: run the tests with scripts/test.sh (it installs the \
             pinned standardwebhooks library into target/pyenv and exports RECEIPTS_TEST_PYTHON), \
             or point it at a python3 that has `standardwebhooks` installed"
        ),
    }
}

/// The Python receiver, its JSON lines, and the file of secrets it verifies with.
struct Receiver {
    child: Child,
    lines: mpsc::UnboundedReceiver<Value>,
    url: String,
    secrets_file: PathBuf,
    secrets: serde_json::Map<String, Value>,
}

impl Receiver {
    async fn start(dir: &Path) -> Receiver {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/standard_webhooks_receiver.py"
        );
        let secrets_file = dir.join("secrets.json");
        std::fs::write(&secrets_file, "{}").unwrap();
        let mut child = Command::new(python())
            .arg(script)
            .arg(&secrets_file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the python interpreter in RECEIPTS_TEST_PYTHON runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, mut lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(serde_json::from_str::<Value>(&line).unwrap());
            }
        });
        let first = tokio::time::timeout(Duration::from_secs(30), lines.recv())
            .await
            .expect("the receiver starts (is standardwebhooks installed?)")
            .expect("the receiver prints its port");
        let url = format!("http://127.0.0.1:{}/hook", first["listening"]);
        Receiver {
            child,
            lines,
            url,
            secrets_file,
            secrets: serde_json::Map::new(),
        }
    }

    fn knows(&mut self, name: &str, secret: &str) {
        self.secrets.insert(name.into(), json!(secret));
        std::fs::write(
            &self.secrets_file,
            Value::Object(self.secrets.clone()).to_string(),
        )
        .unwrap();
    }

    /// The verdict on the next delivery of `receipt` (others, of earlier phases, are skipped).
    async fn verdict(&mut self, receipt: &str) -> (Vec<String>, Vec<String>) {
        let names = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect()
        };
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no delivery of {receipt} reached the receiver"))
                .expect("the receiver runs");
            if line["receipt"] == receipt {
                return (names(&line["verified"]), names(&line["rejected"]));
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sid(prefix: &str, n: u64) -> String {
    format!("{prefix}{n:032x}")
}

fn events(n: u64) -> [DeliveryEvent; 2] {
    let id = ChannelMessageId::parse(&sid("SM", n)).unwrap();
    [
        DeliveryEvent {
            event_id: format!("reg-{n}"),
            kind: DeliveryEventKind::Registered(Registration {
                account: AccountSid::parse(DEMO_ACCOUNT).unwrap(),
                chat_service: None,
                conversation: ConversationSid::parse(&sid("CH", 1)).unwrap(),
                message: MessageSid::parse(&sid("IM", n)).unwrap(),
                message_index: n,
                participant: ParticipantSid::parse(&sid("MB", n)).unwrap(),
                channel: Channel::Sms,
                channel_message_id: id.clone(),
                expected_receipts: 1,
                registered_at: Timestamp::from_unix_millis(1_767_600_000_000),
            }),
        },
        DeliveryEvent {
            event_id: format!("rep-{n}"),
            kind: DeliveryEventKind::Reported(StatusReport {
                account: AccountSid::parse(DEMO_ACCOUNT).unwrap(),
                channel_message_id: id,
                status: DeliveryStatus::Delivered,
                raw_status: "delivered".into(),
                error_code: None,
                provider_time: Timestamp::from_unix_millis(1_767_600_001_000),
                source: StatusSource::TwilioMessaging,
            }),
        },
    ]
}

/// Registers and delivers message `n`; answers its receipt sid.
async fn deliver(kafka: &KafkaSettings, topics: &TopicNames, n: u64) -> String {
    let producer = kafka.producer("secrets-test").unwrap();
    let [registered, reported] = events(n);
    for event in [&registered, &reported] {
        let key = event.receipt_key().to_string();
        let payload = codec::encode(&v1::Envelope::from(event), Encoding::Protobuf);
        let record = rdkafka::producer::FutureRecord::to(&topics.delivery_events)
            .key(&key)
            .payload(&payload)
            .headers(receipts_bus::record::content_type_headers(
                Encoding::Protobuf,
            ));
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    ReceiptKey::new(
        AccountSid::parse(DEMO_ACCOUNT).unwrap(),
        ChannelMessageId::parse(&sid("SM", n)).unwrap(),
    )
    .receipt_sid()
    .to_string()
}

/// A REST call as the demo account; answers the status and the JSON body (if any).
async fn rest(method: reqwest::Method, url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let answer = reqwest::Client::new()
        .request(method, url)
        .basic_auth(DEMO_ACCOUNT, Some(DEMO_TOKEN))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Every payload of the topic, up to its end now.
fn raw_records(kafka: &KafkaSettings, topic: &str) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = kafka
        .client_config("secrets-test-reader")
        .set("group.id", "secrets-test-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut payloads = Vec::new();
    let mut quiet = 0;
    while quiet < 10 {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                quiet = 0;
                payloads.extend(message.payload().map(<[u8]>::to_vec));
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => quiet += 1,
        }
    }
    payloads
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_receivers_verify_across_rotation_and_reject_after_revocation() {
    let data_dir = tempfile::tempdir().unwrap();
    let args = DevArgs::on_free_ports(data_dir.path().join("dev"));
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let dev = tokio::spawn(receipts::dev::run(args, shutdown.clone(), move |a| {
        let _ = ready_tx.send(a.clone());
    }));
    let addresses = tokio::time::timeout(Duration::from_secs(60), ready_rx)
        .await
        .unwrap()
        .unwrap();
    let kafka = KafkaSettings::new(addresses.kafka.clone());
    let topics = TopicNames::default();
    let base = format!("http://{}", addresses.rest);
    let secrets_url = format!("{base}/v1/Webhooks/SigningSecrets");
    let mut receiver = Receiver::start(data_dir.path()).await;
    let cli = |command: SecretsCommand| SecretsArgs {
        grpc: addresses.grpc.to_string(),
        account: DEMO_ACCOUNT.into(),
        token: DEMO_TOKEN.into(),
        service: None,
        conversation: None,
        webhook: None,
        command,
    };

    // The account webhook, then its first secret: shown in the answer to create only.
    let (status, _) = rest(
        reqwest::Method::POST,
        &format!("{base}/v1/Configuration/Webhooks"),
        &[
            ("PostWebhookUrl", receiver.url.as_str()),
            ("Method", "POST"),
            ("Filters", "onDeliveryUpdated"),
            ("Target", "webhook"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let (status, created) = rest(reqwest::Method::POST, &secrets_url, &[]).await;
    assert_eq!(status, 201, "{created}");
    let first = created["secret"].as_str().unwrap().to_owned();
    let first_id = created["sid"].as_str().unwrap().to_owned();
    assert!(first.starts_with("whsec_"), "{created}");
    assert_eq!(created["date_expires"], Value::Null);
    receiver.knows("first", &first);
    let (status, listed) = rest(reqwest::Method::GET, &secrets_url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(listed["signing_secrets"][0]["sid"], first_id.as_str());
    assert!(!listed.to_string().contains(&first[6..]), "{listed}");
    // The dispatcher follows the topic live; give it the moment to read the writes.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let before = deliver(&kafka, &topics, 1).await;
    assert_eq!(receiver.verdict(&before).await.0, ["first"]);

    // Rotation: the new secret signs at once, the old one for a 4 s grace period.
    let rotated = receipts::ops::secrets::run(
        &cli(SecretsCommand::Rotate {
            id: first_id.clone(),
            grace_secs: Some(4),
        }),
        true,
    )
    .await
    .unwrap();
    let rotated: Value = serde_json::from_str(&rotated).unwrap();
    let second = rotated["created"]["secret"].as_str().unwrap().to_owned();
    let second_id = rotated["created"]["id"].as_str().unwrap().to_owned();
    assert_eq!(rotated["rotated"]["id"], first_id.as_str());
    assert!(rotated["rotated"]["expires"].is_string(), "{rotated}");
    receiver.knows("second", &second);
    let listed = receipts::ops::secrets::run(&cli(SecretsCommand::List), true)
        .await
        .unwrap();
    assert!(
        listed.contains(&first_id) && listed.contains(&second_id),
        "{listed}"
    );
    assert!(
        !listed.contains(&first[6..]) && !listed.contains(&second[6..]),
        "{listed}"
    );
    let table = receipts::ops::secrets::run(&cli(SecretsCommand::List), false)
        .await
        .unwrap();
    assert!(table.contains("2 signing secret(s)"), "{table}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let during = deliver(&kafka, &topics, 2).await;
    assert_eq!(receiver.verdict(&during).await.0, ["first", "second"]);

    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = deliver(&kafka, &topics, 3).await;
    assert_eq!(
        receiver.verdict(&after).await,
        (vec!["second".to_owned()], vec!["first".to_owned()])
    );
    let listed = receipts::ops::secrets::run(&cli(SecretsCommand::List), true)
        .await
        .unwrap();
    assert!(
        !listed.contains(&first_id) && listed.contains(&second_id),
        "{listed}"
    );

    // Revoked: nothing signs, and the receiver turns the delivery away.
    let (status, _) = rest(
        reqwest::Method::DELETE,
        &format!("{secrets_url}/{second_id}"),
        &[],
    )
    .await;
    assert_eq!(status, 204);
    let (status, gone) = rest(
        reqwest::Method::DELETE,
        &format!("{secrets_url}/{second_id}"),
        &[],
    )
    .await;
    assert_eq!(status, 404, "{gone}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revoked = deliver(&kafka, &topics, 4).await;
    let (verified, rejected) = receiver.verdict(&revoked).await;
    assert!(verified.is_empty(), "{verified:?}");
    assert_eq!(rejected, ["first", "second"]);

    // Whoever reads the topic learns ids and times, never a secret.
    let records = raw_records(&kafka, &topics.webhook_configs);
    assert!(!records.is_empty());
    for secret in [&first, &second] {
        let key = base64::engine::general_purpose::STANDARD
            .decode(&secret[6..])
            .unwrap();
        for record in &records {
            assert!(!contains(record, secret.as_bytes()));
            assert!(!contains(record, &secret.as_bytes()[6..]));
            assert!(!contains(record, &key));
        }
    }
    assert!(records.iter().any(|r| contains(r, second_id.as_bytes())));

    shutdown.cancel();
    dev.await.unwrap().unwrap();
}

#[test]
fn the_command_line_parses_the_secrets_commands() {
    use clap::Parser;
    use receipts::cli::{Cli, Command};
    use receipts::ops::webhooks::WebhooksCommand;

    let id = sid("WS", 7);
    let line = format!(
        "receipts webhooks secrets --grpc 10.0.0.1:50051 --account AC1 rotate {id} --grace-secs 60 --json"
    );
    match Cli::try_parse_from(line.split_whitespace())
        .unwrap()
        .command
    {
        Command::Webhooks {
            ops,
            command: WebhooksCommand::Secrets(args),
        } => {
            assert!(ops.json);
            assert_eq!(args.grpc, "10.0.0.1:50051");
            assert_eq!(args.account, "AC1");
            match args.command {
                SecretsCommand::Rotate {
                    id: rotated,
                    grace_secs,
                } => {
                    assert_eq!(rotated, id);
                    assert_eq!(grace_secs, Some(60));
                }
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    for line in [
        "receipts webhooks secrets create",
        "receipts webhooks secrets list --json",
        "receipts webhooks secrets revoke WS1",
        "receipts webhooks secrets --service IS1 list",
        "receipts webhooks secrets --conversation CH1 --webhook WH1 create",
    ] {
        Cli::try_parse_from(line.split_whitespace()).unwrap();
    }
    assert!(
        Cli::try_parse_from("receipts webhooks secrets --conversation CH1 list".split(' '))
            .is_err()
    );
}
