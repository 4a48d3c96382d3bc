//! Signing secrets over REST and gRPC: the secret is in the answer to create and rotate only,
//! never in a list or a configuration read; another account's secrets are not found; rotation
//! sets the old secret's expiry; without a `webhook_secrets_key` nothing is created; the
//! records on the topic hold ciphertext only.

use std::time::Duration;

use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use receipts_proto::v1;
use receipts_runtime::config::Secret;
use serde_json::Value;
use tonic::Code;

use crate::contract::assert_twilio_error;
use crate::support::{
    ACCOUNT, Harness, HttpResponse, OTHER_ACCOUNT, OTHER_TOKEN, Running, TOKEN, client, http, sid,
};

const SECRETS: &str = "/v1/Webhooks/SigningSecrets";
/// The base64 of 32 bytes, as `webhook_secrets_key` must be.
const KEY: &str = "c2lnbmluZy1zZWNyZXRzLWtleS1mb3ItdGhlLXRlc3Q=";

async fn call(
    running: &Running,
    who: (&str, &str),
    method: &str,
    path: &str,
    form: &[(&str, &str)],
) -> HttpResponse {
    let url = format!("http://{}{path}", running.rest_address);
    http(method, &url, Some(who), form).await
}

fn body(response: &HttpResponse, expected: u16) -> Value {
    assert_eq!(response.status, expected, "{}", response.body);
    if response.body.is_empty() {
        Value::Null
    } else {
        response.json()
    }
}

/// The raw payloads of the webhook-configs topic (one partition, like every compacted
/// configuration topic here).
async fn raw_payloads(harness: &Harness) -> Vec<Vec<u8>> {
    let consumer: StreamConsumer = harness
        .kafka
        .consumer_config("secrets-test", &receipts_testkit::unique("secrets-test"))
        .create()
        .unwrap();
    let topic = harness.topics.webhook_configs.clone();
    let (low, high) = consumer
        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut payloads = Vec::new();
    for _ in low..high {
        let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("the topic's records")
            .unwrap();
        payloads.extend(message.payload().map(<[u8]>::to_vec));
    }
    payloads
}

#[tokio::test]
async fn secrets_are_shown_once_listed_without_the_secret_and_scoped_to_their_account() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness
        .start_with(dir.path(), |config| {
            config.webhook_secrets_key = Secret::new(KEY)
        })
        .await;
    let me = (ACCOUNT, TOKEN);
    let other = (OTHER_ACCOUNT, OTHER_TOKEN);

    // Unauthenticated calls are refused like every other path.
    let url = format!("http://{}{SECRETS}", running.rest_address);
    let anonymous = http("GET", &url, None, &[]).await;
    assert_twilio_error(&anonymous.body, 401, 20003);

    let created = body(&call(&running, me, "POST", SECRETS, &[]).await, 201);
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["sid"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && id.starts_with("WS"),
        "{created}"
    );
    assert_eq!(created["account_sid"], ACCOUNT);
    assert_eq!(created["date_expires"], Value::Null);
    assert_eq!(
        created["url"],
        format!("http://{}{SECRETS}/{id}", running.rest_address)
    );

    let listed = body(&call(&running, me, "GET", SECRETS, &[]).await, 200);
    assert_eq!(listed["signing_secrets"].as_array().unwrap().len(), 1);
    assert_eq!(listed["signing_secrets"][0]["sid"], id.as_str());
    assert!(listed["signing_secrets"][0].get("secret").is_none());
    assert!(!listed.to_string().contains(&secret[6..]), "{listed}");
    let config = call(&running, me, "GET", "/v1/Configuration/Webhooks", &[]).await;
    assert!(!config.body.contains(&secret[6..]), "{}", config.body);

    // Another account sees none of it, and cannot rotate or revoke it.
    let theirs = body(&call(&running, other, "GET", SECRETS, &[]).await, 200);
    assert_eq!(theirs["signing_secrets"], serde_json::json!([]));
    let rotation = format!("{SECRETS}/{id}/Rotation");
    let revocation = format!("{SECRETS}/{id}");
    let response = call(&running, other, "POST", &rotation, &[]).await;
    assert_twilio_error(&response.body, 404, 20404);
    let response = call(&running, other, "DELETE", &revocation, &[]).await;
    assert_twilio_error(&response.body, 404, 20404);
    let response = call(&running, me, "DELETE", &format!("{SECRETS}/not-a-sid"), &[]).await;
    assert_twilio_error(&response.body, 400, 20001);

    // gRPC: the same resource. Rotation answers the new secret and the old one's expiry.
    let mut grpc = client(running.address, ACCOUNT, TOKEN).await;
    let rotated = grpc
        .rotate_signing_secret(v1::RotateSigningSecretRequest {
            id: id.clone(),
            grace_period_seconds: Some(3600),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let new = rotated.signing_secret.unwrap();
    let old = rotated.rotated.unwrap();
    assert_eq!(old.id, id);
    let expires = old.expires.unwrap().seconds - new.created.unwrap().seconds;
    assert!((3599..=3601).contains(&expires), "{expires}");
    assert!(rotated.secret.starts_with("whsec_") && rotated.secret != secret);
    let listed = grpc
        .list_signing_secrets(v1::ListSigningSecretsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .signing_secrets;
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [id.as_str(), new.id.as_str()]
    );
    let shown = grpc
        .get_webhook_config(v1::GetWebhookConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(shown.sealed_secrets.is_empty() && shown.signing_secrets.is_empty());
    let too_long = grpc
        .rotate_signing_secret(v1::RotateSigningSecretRequest {
            id: new.id.clone(),
            grace_period_seconds: Some(31 * 24 * 3600),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), Code::InvalidArgument);

    let mut theirs = client(running.address, OTHER_ACCOUNT, OTHER_TOKEN).await;
    let refused = theirs
        .revoke_signing_secret(v1::RevokeSigningSecretRequest {
            id: new.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);

    // Revoked over REST: gone from the list, and a second revocation is not found.
    body(
        &call(
            &running,
            me,
            "DELETE",
            &format!("{SECRETS}/{}", new.id),
            &[],
        )
        .await,
        204,
    );
    let response = call(
        &running,
        me,
        "DELETE",
        &format!("{SECRETS}/{}", new.id),
        &[],
    )
    .await;
    assert_twilio_error(&response.body, 404, 20404);
    let listed = body(&call(&running, me, "GET", SECRETS, &[]).await, 200);
    assert_eq!(listed["signing_secrets"].as_array().unwrap().len(), 1);

    // The records hold ids and ciphertext, never a secret.
    let payloads = raw_payloads(&harness).await;
    assert!(payloads.iter().any(|p| {
        v1::WebhookConfig::decode(p.as_slice()).is_ok_and(|c| !c.sealed_secrets.is_empty())
    }));
    for plain in [&secret, &rotated.secret] {
        for payload in &payloads {
            let found = payload
                .windows(plain.len() - 6)
                .any(|w| w == &plain.as_bytes()[6..]);
            assert!(!found, "a secret is on the topic");
        }
    }
    running.stop().await;
}

#[tokio::test]
async fn without_a_key_secrets_are_refused_with_the_reason() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    let response = call(&running, (ACCOUNT, TOKEN), "POST", SECRETS, &[]).await;
    assert_twilio_error(&response.body, 409, 20409);
    let service = format!(
        "/v1/Services/{}/Configuration/Webhooks/SigningSecrets",
        sid("IS", 1)
    );
    let response = call(&running, (ACCOUNT, TOKEN), "POST", &service, &[]).await;
    assert_twilio_error(&response.body, 409, 20409);
    assert!(
        response.body.contains("webhook_secrets_key"),
        "{}",
        response.body
    );
    let mut grpc = client(running.address, ACCOUNT, TOKEN).await;
    let refused = grpc
        .create_signing_secret(v1::CreateSigningSecretRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("webhook_secrets_key"));
    running.stop().await;
}

/// The same resource under a conversation webhook (which must exist) and a chat service: each
/// configuration has its own secrets, and another account reaches none of them.
#[tokio::test]
async fn conversation_webhooks_and_services_have_secrets_of_their_own() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness
        .start_with(dir.path(), |config| {
            config.webhook_secrets_key = Secret::new(KEY)
        })
        .await;
    let me = (ACCOUNT, TOKEN);
    let conversation = sid("CH", 4);
    let missing = format!(
        "/v1/Conversations/{conversation}/Webhooks/{}/SigningSecrets",
        sid("WH", 9)
    );
    let response = call(&running, me, "POST", &missing, &[]).await;
    assert_twilio_error(&response.body, 404, 20404);
    let response = call(&running, me, "GET", &missing, &[]).await;
    assert_twilio_error(&response.body, 404, 20404);

    let webhook = body(
        &call(
            &running,
            me,
            "POST",
            &format!("/v1/Conversations/{conversation}/Webhooks"),
            &[
                ("Target", "webhook"),
                (
                    "Configuration.Url",
                    "https://hooks.example.com/conversation",
                ),
                ("Configuration.Filters", "onDeliveryUpdated"),
            ],
        )
        .await,
        201,
    );
    let webhook_sid = webhook["sid"].as_str().unwrap();
    let collection =
        format!("/v1/Conversations/{conversation}/Webhooks/{webhook_sid}/SigningSecrets");
    let created = body(&call(&running, me, "POST", &collection, &[]).await, 201);
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let id = created["sid"].as_str().unwrap();
    assert_eq!(
        created["url"],
        format!("http://{}{collection}/{id}", running.rest_address)
    );
    let listed = body(&call(&running, me, "GET", &collection, &[]).await, 200);
    assert_eq!(listed["signing_secrets"][0]["sid"], id);
    // The account's collection is another one.
    let account = body(&call(&running, me, "GET", SECRETS, &[]).await, 200);
    assert_eq!(account["signing_secrets"], serde_json::json!([]));
    let response = call(
        &running,
        (OTHER_ACCOUNT, OTHER_TOKEN),
        "GET",
        &collection,
        &[],
    )
    .await;
    assert_twilio_error(&response.body, 404, 20404);

    // gRPC names the conversation webhook in `scope`.
    let mut grpc = client(running.address, ACCOUNT, TOKEN).await;
    let scope = Some(v1::SigningSecretScope {
        conversation_sid: conversation.clone(),
        webhook_sid: webhook_sid.to_owned(),
        ..Default::default()
    });
    let listed = grpc
        .list_signing_secrets(v1::ListSigningSecretsRequest {
            scope: scope.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .signing_secrets;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    grpc.revoke_signing_secret(v1::RevokeSigningSecretRequest {
        id: id.to_owned(),
        scope,
    })
    .await
    .unwrap();
    let listed = body(&call(&running, me, "GET", &collection, &[]).await, 200);
    assert_eq!(listed["signing_secrets"], serde_json::json!([]));

    // A chat service's configuration is made by its first secret.
    let service = format!(
        "/v1/Services/{}/Configuration/Webhooks/SigningSecrets",
        sid("IS", 1)
    );
    let created = body(&call(&running, me, "POST", &service, &[]).await, 201);
    let listed = grpc
        .list_signing_secrets(v1::ListSigningSecretsRequest {
            scope: Some(v1::SigningSecretScope {
                chat_service_sid: sid("IS", 1),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .signing_secrets;
    assert_eq!(listed[0].id, created["sid"].as_str().unwrap());
    running.stop().await;
}
