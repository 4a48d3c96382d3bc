//! Webhook configuration over gRPC: the same code path as the REST writes in `webhooks`, so a
//! write over one API is read back over the other, with the same validation and scoping.

use receipts_proto::v1;
use tonic::Code;

use crate::support::{ACCOUNT, Harness, OTHER_ACCOUNT, OTHER_TOKEN, TOKEN, client, sid};
use crate::webhooks::{ACCOUNT_CONFIG, call, status};

#[tokio::test]
async fn grpc_configuration_shares_the_rest_code_path() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    let mut grpc = client(running.address, ACCOUNT, TOKEN).await;

    let missing = grpc
        .get_webhook_config(v1::GetWebhookConfigRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // gRPC writes, REST reads.
    let written = grpc
        .update_webhook_config(v1::UpdateWebhookConfigRequest {
            post_webhook_url: Some("https://hooks.example.com/grpc".into()),
            filters: Some(v1::WebhookFilters {
                names: vec!["onDeliveryUpdated".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.scope(), v1::WebhookScope::Account);
    assert_eq!(written.account_sid, ACCOUNT);
    let rest = status(&call(&running, "GET", ACCOUNT_CONFIG, &[]).await, 200);
    assert_eq!(rest["post_webhook_url"], "https://hooks.example.com/grpc");
    assert_eq!(rest["filters"], serde_json::json!(["onDeliveryUpdated"]));
    let bad = grpc
        .update_webhook_config(v1::UpdateWebhookConfigRequest {
            method: Some("PATCH".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("Method"), "{}", bad.message());

    // REST writes a service's, gRPC reads it.
    let service = sid("IS", 9);
    status(
        &call(
            &running,
            "POST",
            &format!("/v1/Services/{service}/Configuration/Webhooks"),
            &[
                ("PostWebhookUrl", "https://hooks.example.com/service"),
                ("Method", "GET"),
            ],
        )
        .await,
        200,
    );
    let read = grpc
        .get_webhook_config(v1::GetWebhookConfigRequest {
            chat_service_sid: service.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (read.method.as_str(), read.post_webhook_url.as_str()),
        ("GET", "https://hooks.example.com/service")
    );

    // Conversation webhooks: created over gRPC, listed over REST, deleted over gRPC.
    let conversation = sid("CH", 5);
    let created = grpc
        .create_conversation_webhook(v1::CreateConversationWebhookRequest {
            conversation_sid: conversation.clone(),
            target: "webhook".into(),
            url: "https://hooks.example.com/conversation".into(),
            filters: vec!["onDeliveryUpdated".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.webhook_sid.starts_with("WH"));
    let listed = status(
        &call(
            &running,
            "GET",
            &format!("/v1/Conversations/{conversation}/Webhooks"),
            &[],
        )
        .await,
        200,
    );
    assert_eq!(listed["webhooks"][0]["sid"], created.webhook_sid);
    let over_grpc = grpc
        .list_conversation_webhooks(v1::ListConversationWebhooksRequest {
            conversation_sid: conversation.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(over_grpc.webhooks, std::slice::from_ref(&created));
    grpc.delete_conversation_webhook(v1::DeleteConversationWebhookRequest {
        conversation_sid: conversation.clone(),
        webhook_sid: created.webhook_sid.clone(),
    })
    .await
    .unwrap();
    let gone = grpc
        .delete_conversation_webhook(v1::DeleteConversationWebhookRequest {
            conversation_sid: conversation.clone(),
            webhook_sid: created.webhook_sid.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let listed = status(
        &call(
            &running,
            "GET",
            &format!("/v1/Conversations/{conversation}/Webhooks"),
            &[],
        )
        .await,
        200,
    );
    assert_eq!(listed["webhooks"], serde_json::json!([]));

    // Another account's gRPC calls see none of it.
    let mut other = client(running.address, OTHER_ACCOUNT, OTHER_TOKEN).await;
    let none = other
        .get_webhook_config(v1::GetWebhookConfigRequest::default())
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound);
    running.stop().await;
}
