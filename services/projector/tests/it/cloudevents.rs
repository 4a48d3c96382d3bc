//! Every `receipt-updates` record carries the CloudEvents binary-mode headers, so a generic
//! consumer can route on them without decoding the payload.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::Headers;
use receipts_domain::{DeliveryStatus, ReceiptChange};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;

use crate::support::{ACCOUNT, Harness, assert_no_more, key, registration, report};

/// The headers of one record as text (the binding requires UTF-8 values), and its change.
async fn next_record(
    reader: &rdkafka::consumer::StreamConsumer,
) -> (BTreeMap<String, String>, ReceiptChange) {
    let message = tokio::time::timeout(Duration::from_secs(60), reader.recv())
        .await
        .expect("a receipt update within a minute")
        .unwrap();
    let mut headers = BTreeMap::new();
    for header in message.headers().expect("the record has headers").iter() {
        let value = String::from_utf8(header.value.unwrap().to_vec())
            .unwrap_or_else(|e| panic!("header {} is not UTF-8: {e}", header.key));
        let previous = headers.insert(header.key.to_owned(), value);
        assert!(previous.is_none(), "header {} appears twice", header.key);
    }
    let wire: v1::ReceiptUpdated =
        codec::decode(message.payload().unwrap(), Encoding::Protobuf).unwrap();
    (headers, ReceiptChange::try_from(&wire).unwrap())
}

#[tokio::test]
async fn receipt_updates_carry_cloudevents_headers() {
    let harness = Harness::new(1).await;
    let dir = tempfile::tempdir().unwrap();
    let (shutdown, running) = harness.spawn(dir.path());
    let reader = harness.reader(&harness.topics.receipt_updates);

    // Registered at 1.000 s; sent reported at 1.500 s; read at 3.250 s: three changes.
    harness
        .produce(
            &[
                registration("wamid.ce", 7, 1, 1, 1),
                report("wamid.ce", DeliveryStatus::Sent, 1_500),
                report("wamid.ce", DeliveryStatus::Read, 3_250),
            ],
            Encoding::Protobuf,
        )
        .await;

    let receipt_sid = key("wamid.ce").receipt_sid().to_string();
    let expected_times = [
        "1970-01-01T00:00:01.000Z",
        "1970-01-01T00:00:01.500Z",
        "1970-01-01T00:00:03.250Z",
    ];
    for (version, time) in (1u64..).zip(expected_times) {
        let (headers, change) = next_record(&reader).await;
        assert_eq!(change.receipt.version, version);
        let expected: BTreeMap<String, String> = [
            ("content-type", "application/x-protobuf".to_owned()),
            ("ce_specversion", "1.0".to_owned()),
            ("ce_id", format!("{receipt_sid}/{version}")),
            ("ce_source", format!("/receipts/v1/accounts/{ACCOUNT}")),
            ("ce_type", "receipts.v1.ReceiptUpdated".to_owned()),
            ("ce_subject", receipt_sid.clone()),
            ("ce_time", time.to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        // Only these: W3C trace context may join them once tracing propagates it.
        let ours: BTreeMap<String, String> = headers
            .into_iter()
            .filter(|(name, _)| name != "traceparent" && name != "tracestate")
            .collect();
        assert_eq!(ours, expected, "headers of version {version}");
    }
    assert_no_more(&reader, Duration::from_secs(2)).await;

    shutdown.cancel();
    running.await.unwrap();
}
