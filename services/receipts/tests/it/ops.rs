//! The operator commands against a running `receipts dev` (embedded broker): a webhook receiver
//! that fails one receipt's first attempt and refuses another's, a report that never gets its
//! registration; then `receipts webhooks`, `dlq`, `lag` and `parked` tell what happened, in
//! tables and in JSON.
//!
//! One file: it is one scene, set up once (the receiver, the receipts it fails and refuses, the
//! report left parked) and then read through every operator command, plus the parser test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use receipts::dev::{DEMO_ACCOUNT, DevArgs};
use receipts::ops::dlq::{DlqCommand, ListFilter};
use receipts::ops::lag::LagArgs;
use receipts::ops::parked::ParkedArgs;
use receipts::ops::webhooks::WebhooksCommand;
use receipts::ops::{OpsConfig, dlq, lag, parked, webhooks};
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_dispatcher::ReplayFilter;
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryEvent, DeliveryEventKind,
    DeliveryStatus, MessageSid, ParticipantSid, ReceiptKey, Registration, StatusReport,
    StatusSource, Timestamp,
};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn sid(prefix: &str, n: u64) -> String {
    format!("{prefix}{n:032x}")
}

fn registration(id: &str, message: u64) -> DeliveryEvent {
    DeliveryEvent {
        event_id: format!("reg-{id}"),
        kind: DeliveryEventKind::Registered(Registration {
            account: AccountSid::parse(DEMO_ACCOUNT).unwrap(),
            chat_service: None,
            conversation: ConversationSid::parse(&sid("CH", 1)).unwrap(),
            message: MessageSid::parse(&sid("IM", message)).unwrap(),
            message_index: message,
            participant: ParticipantSid::parse(&sid("MB", message)).unwrap(),
            channel: Channel::Sms,
            channel_message_id: ChannelMessageId::parse(id).unwrap(),
            expected_receipts: 1,
            registered_at: Timestamp::from_unix_millis(1_767_600_000_000),
        }),
    }
}

fn delivered(id: &str) -> DeliveryEvent {
    DeliveryEvent {
        event_id: format!("rep-{id}"),
        kind: DeliveryEventKind::Reported(StatusReport {
            account: AccountSid::parse(DEMO_ACCOUNT).unwrap(),
            channel_message_id: ChannelMessageId::parse(id).unwrap(),
            status: DeliveryStatus::Delivered,
            raw_status: "delivered".into(),
            error_code: None,
            provider_time: Timestamp::from_unix_millis(1_767_600_001_000),
            source: StatusSource::TwilioMessaging,
        }),
    }
}

fn receipt_sid(id: &str) -> String {
    ReceiptKey::new(
        AccountSid::parse(DEMO_ACCOUNT).unwrap(),
        ChannelMessageId::parse(id).unwrap(),
    )
    .receipt_sid()
    .to_string()
}

async fn produce(kafka: &KafkaSettings, topic: &str, key: &str, payload: &[u8]) {
    let producer = kafka.producer("ops-test").unwrap();
    let record = rdkafka::producer::FutureRecord::to(topic)
        .key(key)
        .payload(payload)
        .headers(receipts_bus::record::content_type_headers(
            Encoding::Protobuf,
        ));
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Answers by receipt: `flaky` gets a 503 then 200s, `refused` a 400 (which dead-letters the
/// delivery at once) then 200s, any other 200.
async fn receiver(flaky: String, refused: String) -> String {
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let seen = seen.clone();
            let (flaky, refused) = (flaky.clone(), refused.clone());
            async move {
                let receipt = form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "DeliveryReceiptSid")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let n = {
                    let mut seen = seen.lock().unwrap();
                    let n = seen.entry(receipt.clone()).or_default();
                    *n += 1;
                    *n
                };
                if receipt == refused && n == 1 {
                    (StatusCode::BAD_REQUEST, [("retry-after", "0")])
                } else if receipt == flaky && n == 1 {
                    (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")])
                } else {
                    (StatusCode::OK, [("retry-after", "0")])
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Version 2 of the receipt is delivered, and its successful attempt recorded (the record is
/// written in the background, so it may land after the settlement).
fn delivered_and_recorded(out: &str) -> bool {
    let found: Value = serde_json::from_str(out).unwrap();
    let settled = found["deliveries"].as_array().is_some_and(|d| {
        d.iter()
            .any(|d| d["state"] == "delivered" && d["version"] == 2)
    });
    let recorded = found["attempts"].as_array().is_some_and(|a| {
        a.iter()
            .any(|a| a["outcome"] == "delivered" && a["version"] == 2)
    });
    settled && recorded
}

/// Retries `check` on the command's output until it passes, for up to a minute.
async fn eventually<F, Fut>(what: &str, mut run: F, check: impl Fn(&str) -> bool) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = run().await.unwrap();
        if check(&out) {
            return out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}, last output:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_webhooks_dead_letters_lag_and_parked_reports() {
    let data_dir = tempfile::tempdir().unwrap();
    let args = DevArgs::on_free_ports(data_dir.path().to_owned());
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let dev = tokio::spawn(receipts::dev::run(args, shutdown.clone(), move |a| {
        let _ = ready_tx.send(a.clone());
    }));
    let addresses = tokio::time::timeout(Duration::from_secs(60), ready_rx)
        .await
        .unwrap()
        .unwrap();
    let config = OpsConfig {
        kafka: KafkaSettings::new(addresses.kafka.clone()),
        topics: TopicNames::default(),
    };
    let (flaky_id, refused_id) = (sid("SM", 0xf1), sid("SM", 0xf2));
    let (flaky, refused) = (receipt_sid(&flaky_id), receipt_sid(&refused_id));
    let url = receiver(flaky.clone(), refused.clone()).await;

    // An account webhook with a Standard Webhooks secret, as the REST API would write it.
    let mut hook = v1::WebhookConfig {
        account_sid: DEMO_ACCOUNT.into(),
        method: "POST".into(),
        filters: vec!["onDeliveryUpdated".into()],
        post_webhook_url: url.clone(),
        target: "webhook".into(),
        signing_secrets: vec![SECRET.into()],
        ..Default::default()
    };
    hook.set_scope(v1::WebhookScope::Account);
    let key = receipts_proto::webhooks::webhook_key(&hook);
    produce(
        &config.kafka,
        &config.topics.webhook_configs,
        &key,
        &codec::encode(&hook, Encoding::Protobuf),
    )
    .await;
    let listed = eventually(
        "the webhook is listed",
        || webhooks::run(&config, WebhooksCommand::List { account: None }, false),
        |out| out.contains(&key),
    )
    .await;
    assert!(
        listed.contains(&url) && listed.contains("1 webhook(s)"),
        "{listed}"
    );
    assert!(
        !listed.contains(SECRET),
        "a secret is never shown: {listed}"
    );
    let shown = webhooks::run(
        &config,
        WebhooksCommand::Show {
            webhook: key.clone(),
        },
        true,
    )
    .await
    .unwrap();
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["signing_secrets"], 1);
    assert_eq!(shown["filters"], serde_json::json!(["onDeliveryUpdated"]));
    // The dispatcher follows the topic live; give it the moment to read the write.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Two registered receipts that get delivered, and a report whose registration never comes.
    let parked_id = sid("SM", 0xf3);
    for event in [
        registration(&flaky_id, 1),
        delivered(&flaky_id),
        registration(&refused_id, 2),
        delivered(&refused_id),
        delivered(&parked_id),
    ] {
        produce(
            &config.kafka,
            &config.topics.delivery_events,
            &event.receipt_key().to_string(),
            &codec::encode(&v1::Envelope::from(&event), Encoding::Protobuf),
        )
        .await;
    }

    // The flaky receipt: version 1 (created) and 2 (delivered) each fire; the first attempt of
    // the first one is answered 503, the retry 200.
    let out = eventually(
        "the flaky receipt's deliveries settle",
        || {
            webhooks::run(
                &config,
                WebhooksCommand::Deliveries {
                    receipt_sid: flaky.clone(),
                },
                true,
            )
        },
        delivered_and_recorded,
    )
    .await;
    let found: Value = serde_json::from_str(&out).unwrap();
    let attempts = found["attempts"].as_array().unwrap();
    // The first attempt failed (503, or a timeout on a machine too busy to see the answer in
    // time), the last one was answered 200.
    let first = attempts.first().expect("attempts were recorded");
    assert_eq!(
        (first["attempt"].as_u64(), first["outcome"].as_str()),
        (Some(0), Some("retry")),
        "{out}"
    );
    assert!(!first["answer"].as_str().unwrap().is_empty(), "{out}");
    let last = attempts.last().unwrap();
    assert_eq!(
        (last["outcome"].as_str(), last["answer"].as_str()),
        (Some("delivered"), Some("HTTP 200")),
        "{out}"
    );
    assert!(last["attempt"].as_u64().unwrap() >= 1, "{out}");
    for attempt in attempts {
        assert_eq!(attempt["receipt_sid"], flaky.as_str());
        assert_eq!(attempt["webhook_key"], key.as_str());
        assert!(
            attempt["latency_ms"].as_u64().unwrap() < 30_000,
            "{attempt}"
        );
        assert!(
            attempt["at_ms"].as_i64().unwrap() > 1_700_000_000_000,
            "{attempt}"
        );
    }
    let table = webhooks::run(
        &config,
        WebhooksCommand::Deliveries {
            receipt_sid: flaky.clone(),
        },
        false,
    )
    .await
    .unwrap();
    assert!(
        table.contains("HTTP 200") && table.contains(" ms"),
        "{table}"
    );

    // The refused receipt is dead-lettered at its first answer.
    let listed = eventually(
        "the refused receipt is dead-lettered",
        || {
            dlq::run(
                &config,
                DlqCommand::List {
                    filter: ListFilter::default(),
                },
                true,
            )
        },
        |out| out.contains(&refused),
    )
    .await;
    let letters: Value = serde_json::from_str(&listed).unwrap();
    let letter = letters
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["receipt_sid"] == refused.as_str())
        .unwrap()
        .clone();
    assert_eq!(letter["replayed"], false);
    assert_eq!(letter["error"], "HTTP 400");
    let filtered = dlq::run(
        &config,
        DlqCommand::List {
            filter: ListFilter {
                receipt: Some(flaky.clone()),
                ..Default::default()
            },
        },
        false,
    )
    .await
    .unwrap();
    assert!(
        filtered.contains("0 dead-lettered deliveries"),
        "{filtered}"
    );
    let origin = letter["origin"].as_str().unwrap().to_owned();
    let shown = dlq::run(
        &config,
        DlqCommand::Show {
            origin: origin.clone(),
        },
        false,
    )
    .await
    .unwrap();
    assert!(
        shown.contains(&refused) && shown.contains("HTTP 400"),
        "{shown}"
    );

    let only_refused = ReplayFilter {
        account: Some(DEMO_ACCOUNT.into()),
        ..Default::default()
    };
    let replayed = dlq::run(
        &config,
        DlqCommand::Replay {
            filter: only_refused.clone(),
        },
        true,
    )
    .await
    .unwrap();
    let replayed: Value = serde_json::from_str(&replayed).unwrap();
    assert_eq!(replayed["matched"], 1, "{replayed}");
    assert_eq!(replayed["replayed"], 1, "{replayed}");
    // Replayed, the delivery goes out again and is answered 200 this time.
    eventually(
        "the replayed delivery is delivered",
        || {
            webhooks::run(
                &config,
                WebhooksCommand::Deliveries {
                    receipt_sid: refused.clone(),
                },
                true,
            )
        },
        delivered_and_recorded,
    )
    .await;
    let again = dlq::run(
        &config,
        DlqCommand::Replay {
            filter: only_refused,
        },
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        again, "1 of 1 dead-lettered deliveries matched: 0 replayed, 1 replayed before\n",
        "a second replay skips it"
    );
    let pending = dlq::run(
        &config,
        DlqCommand::List {
            filter: ListFilter {
                pending: true,
                receipt: Some(refused.clone()),
                ..Default::default()
            },
        },
        false,
    )
    .await
    .unwrap();
    assert!(!pending.contains(&origin), "{pending}");

    // The projector and dispatcher commit what they processed.
    let lags = eventually(
        "the projector catches up",
        || lag::run(&config, lag_args(), true),
        |out| {
            let rows: Value = serde_json::from_str(out).unwrap();
            let projector: Vec<&Value> = rows
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["service"] == "projector")
                .collect();
            projector.len() == 2
                && projector.iter().all(|r| r["lag"] == 0)
                && projector
                    .iter()
                    .map(|r| r["end"].as_i64().unwrap())
                    .sum::<i64>()
                    == 5
        },
    )
    .await;
    let rows: Value = serde_json::from_str(&lags).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["group"] == "receipts-dispatcher"
                && r["topic"] == config.topics.receipt_updates.as_str()),
        "{lags}"
    );
    let table = lag::run(&config, lag_args(), false).await.unwrap();
    assert!(
        table.contains("receipts-projector") && table.contains("LAG"),
        "{table}"
    );

    let parked_out = eventually(
        "the unregistered report is parked",
        || parked::run(&config, ParkedArgs::default(), true),
        |out| out.contains(&parked_id),
    )
    .await;
    let found: Value = serde_json::from_str(&parked_out).unwrap();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "only the unregistered one: {parked_out}");
    assert_eq!(found[0]["status"], "delivered");
    assert_eq!(found[0]["account_sid"], DEMO_ACCOUNT);
    let fresh = parked::run(
        &config,
        ParkedArgs {
            older_than_secs: Some(3600),
            ..Default::default()
        },
        false,
    )
    .await
    .unwrap();
    assert!(
        fresh.contains("0 parked report(s)"),
        "none is an hour old: {fresh}"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), dev)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

fn lag_args() -> LagArgs {
    LagArgs {
        projector_group: "receipts-projector".into(),
        dispatcher_group: "receipts-dispatcher".into(),
    }
}

/// The command line reaches these commands with their options, `--json` anywhere after the
/// command's name.
#[test]
fn the_command_line_parses_every_operator_command() {
    use clap::{CommandFactory, Parser};
    use receipts::cli::{Cli, Command};

    Cli::command().debug_assert();
    let parse = |line: &str| {
        Cli::try_parse_from(line.split_whitespace())
            .unwrap()
            .command
    };
    let receipt = sid("DY", 9);
    match parse(&format!(
        "receipts dlq list --receipt {receipt} --pending --json"
    )) {
        Command::Dlq {
            ops,
            command: DlqCommand::List { filter },
        } => {
            assert!(ops.json);
            assert_eq!(filter.receipt.as_deref(), Some(receipt.as_str()));
            assert!(filter.pending);
        }
        other => panic!("{other:?}"),
    }
    match parse("receipts dlq --json replay --account AC1 --since 2026-11-27T18:00:00Z") {
        Command::Dlq {
            ops,
            command: DlqCommand::Replay { filter },
        } => {
            assert!(ops.json);
            assert_eq!(filter.account.as_deref(), Some("AC1"));
            assert_eq!(filter.since_ms, Some(1_795_802_400_000));
        }
        other => panic!("{other:?}"),
    }
    match parse("receipts lag --kafka 10.0.0.1:9092 --dispatcher-group d2") {
        Command::Lag { ops, args } => {
            assert_eq!(ops.kafka.as_deref(), Some("10.0.0.1:9092"));
            assert_eq!(args.dispatcher_group, "d2");
            assert_eq!(args.projector_group, "receipts-projector");
        }
        other => panic!("{other:?}"),
    }
    match parse("receipts parked --older-than-secs 86400 --json") {
        Command::Parked { ops, args } => {
            assert!(ops.json);
            assert_eq!(args.older_than_secs, Some(86_400));
        }
        other => panic!("{other:?}"),
    }
    match parse(&format!("receipts webhooks deliveries {receipt} --json")) {
        Command::Webhooks {
            ops,
            command: WebhooksCommand::Deliveries { receipt_sid },
        } => {
            assert!(ops.json);
            assert_eq!(receipt_sid, receipt);
        }
        other => panic!("{other:?}"),
    }
}
