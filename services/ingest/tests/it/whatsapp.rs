//! WhatsApp Cloud API webhooks through the real broker.

use receipts_domain::{DeliveryStatus, StatusSource};
use receipts_ingest::whatsapp::hub_signature;

use crate::support::{
    ACCOUNT, APP_SECRET, Harness, VERIFY_TOKEN, WHATSAPP_NUMBER, assert_nothing_written,
    read_events,
};

const PATH: &str = "/v1/whatsapp/webhook";

fn statuses(items: &[(&str, &str, &str)]) -> String {
    let statuses: Vec<String> = items
        .iter()
        .map(|(id, status, timestamp)| {
            let errors = if *status == "failed" {
                r#", "errors": [{"code": 131049, "title": "not delivered"}]"#
            } else {
                ""
            };
            format!(
                r#"{{"id": "{id}", "status": "{status}", "timestamp": "{timestamp}", "recipient_id": "15551234567"{errors}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"object": "whatsapp_business_account", "entry": [{{"id": "1", "changes": [{{"field": "messages",
            "value": {{"messaging_product": "whatsapp",
                "metadata": {{"display_phone_number": "15550001111", "phone_number_id": "{WHATSAPP_NUMBER}"}},
                "statuses": [{}]}}}}]}}]}}"#,
        statuses.join(",")
    )
}

#[tokio::test]
async fn the_verification_handshake_echoes_the_challenge() {
    let harness = Harness::start().await;
    let ok = harness
        .get(&format!(
            "{PATH}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        ))
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, b"1158201444");
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=meta-verify-token&hub.challenge=1",
        "hub.challenge=1",
    ] {
        let response = harness.get(&format!("{PATH}?{query}")).await;
        assert_eq!(response.status, 403, "{query}");
    }
    harness.stop().await;
}

/// One signed POST with several statuses becomes one event per status, keyed by the number's
/// account and the wamid, with the provider timestamp and error code.
#[tokio::test]
async fn every_status_of_a_signed_post_is_stored() {
    let harness = Harness::start().await;
    let reader = harness.reader();
    let body = statuses(&[
        ("wamid.A", "delivered", "1750263773"),
        ("wamid.B", "failed", "1750263774"),
        ("wamid.A", "read", "1750263800"),
    ]);
    let signature = hub_signature(APP_SECRET, body.as_bytes());
    let response = harness
        .post(
            PATH,
            &[
                ("content-type", "application/json"),
                ("x-hub-signature-256", &signature),
            ],
            body.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    assert_eq!(response.json()["accepted"], 3);

    let mut produced = read_events(&reader, 3).await;
    produced.sort_by_key(|p| p.report().provider_time);
    let seen: Vec<_> = produced
        .iter()
        .map(|p| {
            let r = p.report();
            (
                p.key.strip_prefix(&format!("{ACCOUNT}/")).unwrap(),
                r.status,
                r.provider_time.unix_millis(),
                r.error_code,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "wamid.A",
                DeliveryStatus::Delivered,
                1_750_263_773_000,
                None
            ),
            (
                "wamid.B",
                DeliveryStatus::Failed,
                1_750_263_774_000,
                Some(131_049)
            ),
            ("wamid.A", DeliveryStatus::Read, 1_750_263_800_000, None),
        ]
    );
    assert!(
        produced
            .iter()
            .all(|p| p.report().source == StatusSource::WhatsappCloud)
    );
    let mut ids = response.event_ids();
    let mut produced_ids: Vec<_> = produced.iter().map(|p| p.event.event_id.clone()).collect();
    ids.sort();
    produced_ids.sort();
    assert_eq!(ids, produced_ids);
    harness.stop().await;
}

/// A bad signature is 403 and writes nothing. One unknown status among good ones is skipped and
/// named, and the good ones are stored: the answer is 200, since Meta would resend the same body
/// for days after anything else, and the unknown status would never become readable.
#[tokio::test]
async fn bad_signatures_write_nothing_and_bad_statuses_are_skipped() {
    let harness = Harness::start().await;
    let reader = harness.reader();
    let good = statuses(&[("wamid.A", "delivered", "1750263773")]);
    for signature in [
        hub_signature("another-secret", good.as_bytes()),
        hub_signature(APP_SECRET, b"another body"),
        String::new(),
    ] {
        let response = harness
            .post(
                PATH,
                &[("x-hub-signature-256", &signature)],
                good.as_bytes(),
            )
            .await;
        assert_eq!(response.status, 403);
        assert_eq!(response.error_field(), "X-Hub-Signature-256");
    }
    let mixed = statuses(&[
        ("wamid.A", "delivered", "1750263773"),
        ("wamid.B", "deleted", "1750263774"),
        ("wamid.C", "read", "1750263775"),
    ]);
    let response = harness
        .post(
            PATH,
            &[(
                "x-hub-signature-256",
                &hub_signature(APP_SECRET, mixed.as_bytes()),
            )],
            mixed.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    let body = response.json();
    assert_eq!(body["accepted"], 2);
    assert_eq!(
        body["skipped"][0]["field"],
        "entry[0].changes[0].value.statuses[1].status"
    );
    let stored = read_events(&reader, 2).await;
    let ids: Vec<&str> = stored
        .iter()
        .map(|p| p.report().channel_message_id.as_str())
        .collect();
    assert_eq!(ids, ["wamid.A", "wamid.C"]);
    assert!(
        harness.metrics.render().contains(
            "receipts_ingest_reports_skipped_total{format=\"whatsapp\",reason=\"unknown_status\"} 1"
        ),
        "{}",
        harness.metrics.render()
    );

    let bad_time = statuses(&[("wamid.A", "delivered", "yesterday")]);
    let response = harness
        .post(
            PATH,
            &[(
                "x-hub-signature-256",
                &hub_signature(APP_SECRET, bad_time.as_bytes()),
            )],
            bad_time.as_bytes(),
        )
        .await;
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["accepted"], 0);
    assert_eq!(
        body["skipped"][0]["field"],
        "entry[0].changes[0].value.statuses[0].timestamp"
    );
    assert_nothing_written(&harness, &reader).await;
    harness.stop().await;
}
