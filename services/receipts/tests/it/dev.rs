use std::sync::atomic::Ordering;
use std::time::Duration;

use receipts::dev::{
    DEMO_ACCOUNT, DEMO_SMPP_CONNECTION, DEMO_SMPP_TOKEN, DEMO_TOKEN, DEMO_WHATSAPP_PHONE_NUMBER_ID,
    DEMO_WHATSAPP_SECRET, DevArgs,
};
use receipts::get::Connection;
use receipts::simulate::SimulateArgs;
use receipts_proto::v1;
use tokio_util::sync::CancellationToken;

fn dev_args(data_dir: &std::path::Path) -> DevArgs {
    DevArgs {
        partitions: 4,
        webhook_sink: true,
        ..DevArgs::on_free_ports(data_dir.to_owned())
    }
}

/// The webhooks the dispatcher owes: one per receipt change on `receipt-updates` that altered
/// the status or error code and left a status Twilio names (not queued), each version counted
/// once — an account of the changes independent of the dispatcher.
async fn webhooks_owed(kafka: &str) -> u64 {
    use prost::Message as _;
    use rdkafka::Message as _;

    let kafka = receipts_bus::KafkaSettings::new(kafka);
    let topic = receipts_bus::TopicNames::default().receipt_updates;
    let records: i64 = receipts_bus::changelog::watermarks(&kafka, &topic)
        .unwrap()
        .values()
        .map(|(low, high)| high - low)
        .sum();
    let reader = receipts_testkit::kafka::reader(&kafka, "dev-test-owed", &topic);
    let mut owed = std::collections::BTreeSet::new();
    for record in receipts_testkit::kafka::read(&reader, records as usize).await {
        let update = v1::ReceiptUpdated::decode(record.payload().unwrap()).unwrap();
        let receipt = update.receipt.unwrap();
        let news = update.previous_status != receipt.status
            || update.previous_error_code != receipt.error_code;
        if news && receipt.status() != v1::DeliveryStatus::Queued {
            owed.insert((receipt.sid, receipt.version));
        }
    }
    owed.len() as u64
}

/// A counter's value in OpenMetrics text, 0 when absent.
fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .map(|v| v.trim().parse::<f64>().unwrap_or(0.0) as u64)
        })
        .unwrap_or(0)
}

/// Everything in one process on the embedded broker: simulated provider traffic (out of order,
/// duplicated, all three provider formats) ends in the summaries the simulator expects, every
/// change the read model saw reaches the webhook sink exactly once, correctly signed; a second
/// run on the same data dir starts cleanly; the shutdown token (Ctrl-C) stops it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_plus_simulate_converges_and_calls_every_webhook() {
    let data_dir = tempfile::tempdir().unwrap();
    for run in 0..2 {
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let dev = tokio::spawn(receipts::dev::run(
            dev_args(data_dir.path()),
            shutdown.clone(),
            move |addresses| {
                let _ = ready_tx.send(addresses.clone());
            },
        ));
        let addresses = tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .expect("receipts dev starts within a minute")
            .expect("receipts dev reports its addresses");
        let (_, sink) = addresses.sink.clone().expect("the webhook sink runs");

        let connection = Connection {
            grpc: addresses.grpc.to_string(),
            account: DEMO_ACCOUNT.into(),
            token: DEMO_TOKEN.into(),
            json: false,
        };
        let args = SimulateArgs {
            conversations: 4,
            messages: 6,
            rate: 1_000,
            ingest: format!("http://{}", addresses.ingest),
            connection: connection.clone(),
            seed: Some(42 + run),
            whatsapp_secret: DEMO_WHATSAPP_SECRET.into(),
            whatsapp_phone_number_id: DEMO_WHATSAPP_PHONE_NUMBER_ID.into(),
            smpp_connection: DEMO_SMPP_CONNECTION.into(),
            smpp_token: DEMO_SMPP_TOKEN.into(),
            settle_secs: 60,
            quiet: true,
        };
        let mut out = Vec::new();
        let report = receipts::simulate::run(args, &mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(report.messages, 24, "{out}");
        assert!(report.mismatches.is_empty(), "run {run}: {out}");
        assert!(out.contains("24/24 message summaries match"), "{out}");

        let owed = webhooks_owed(&addresses.kafka).await;
        assert!(
            owed >= 24,
            "every message owes at least one webhook, got {owed}"
        );
        // The dispatcher fires one delivery per such change; a delivery overtaken by a newer
        // version of the same receipt is dropped as stale (documented), every other one is sent.
        let metrics_url = format!("http://{}/metrics", addresses.metrics);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let (fired, stale) = loop {
            let text = reqwest::get(&metrics_url)
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let fired = counter(
                &text,
                "receipts_dispatcher_updates_total{outcome=\"fired\"}",
            );
            let stale = counter(
                &text,
                "receipts_dispatcher_dropped_total{outcome=\"stale\"}",
            );
            let received = sink.received.load(Ordering::Relaxed);
            if (fired == owed && received + stale == fired)
                || tokio::time::Instant::now() >= deadline
            {
                break (fired, stale);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Give a duplicate the chance to show before counting.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            fired, owed,
            "run {run}: the dispatcher fires once per change the read model saw"
        );
        assert_eq!(
            sink.received.load(Ordering::Relaxed),
            fired - stale,
            "run {run}: webhooks received"
        );
        assert_eq!(
            sink.invalid_signatures.load(Ordering::Relaxed),
            0,
            "every signature checks out"
        );

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), dev)
            .await
            .expect("receipts dev stops within a minute")
            .unwrap()
            .unwrap();
    }
}
