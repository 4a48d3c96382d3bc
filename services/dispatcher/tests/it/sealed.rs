//! Signing secrets sealed under `webhook_secrets_key`: the dispatcher opens the unexpired ones
//! and signs with them beside the plain-text ones of older records; an expired one no longer
//! signs; without the key a delivery that should be signed is dead-lettered, never sent
//! unsigned.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use receipts_proto::v1::{self, DeliveryStatus};
use receipts_runtime::config::Secret;
use receipts_webhook::sealed::SecretsKey;

use crate::support::*;

const KEY: [u8; 32] = [7; 32];

fn sealed(key: &str, id: &str, secret: &str, expires_secs: Option<i64>) -> v1::SealedSigningSecret {
    let secrets_key = SecretsKey::from_base64(&STANDARD.encode(KEY)).unwrap();
    v1::SealedSigningSecret {
        id: id.into(),
        created: None,
        expires: expires_secs.map(|seconds| pbjson_types::Timestamp { seconds, nanos: 0 }),
        ciphertext: secrets_key.seal(key, id, secret),
    }
}

fn signed_account_webhook(url: &str) -> v1::WebhookConfig {
    let mut config = account_webhook(url);
    let key = receipts_proto::webhooks::webhook_key(&config);
    config.signing_secrets = vec![SECRET_A.into()];
    config.sealed_secrets = vec![
        sealed(&key, &sid("WS", 1), SECRET_B, None),
        // Expired long ago: it must not sign.
        sealed(
            &key,
            &sid("WS", 2),
            "whsec_ZXhwaXJlZC1zZWNyZXQ=",
            Some(1_000),
        ),
    ];
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexpired_sealed_secrets_sign_beside_plain_ones() {
    let harness = Harness::new().await;
    let sink = Sink::start(|_, _| Answer::Status(200)).await;
    harness
        .configure(&signed_account_webhook(&sink.url()))
        .await;
    harness
        .publish(&update(
            receipt(1, 2, DeliveryStatus::Delivered),
            DeliveryStatus::Sent,
        ))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = harness.config(dir.path());
    config.webhook_secrets_key = Secret::new(STANDARD.encode(KEY));
    let running = harness.spawn(config);
    let received = sink.wait_for(1).await;
    let request = &received[0];
    assert!(standard_signatures_are_valid(
        request,
        &[SECRET_A, SECRET_B]
    ));
    assert!(!standard_signatures_are_valid(
        request,
        &["whsec_ZXhwaXJlZC1zZWNyZXQ="]
    ));
    assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_key_a_delivery_to_sign_is_dead_lettered() {
    let harness = Harness::new().await;
    let sink = Sink::start(|_, _| Answer::Status(200)).await;
    harness
        .configure(&signed_account_webhook(&sink.url()))
        .await;
    let dlq = harness.reader(&harness.topics.webhook_dlq);
    harness
        .publish(&update(
            receipt(1, 2, DeliveryStatus::Delivered),
            DeliveryStatus::Sent,
        ))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.spawn(harness.config(dir.path()));
    let entries = dead_letters(&dlq, 1).await;
    let reason = entries[0]["last_error"].as_str().unwrap();
    assert!(reason.contains("webhook_secrets_key"), "{reason}");
    assert_eq!(sink.count(), 0);
    running.stop().await;
}
