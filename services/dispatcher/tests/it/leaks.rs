//! Nothing the dispatcher prints carries a secret: its configuration (auth tokens, the broker's
//! SASL password) and the webhook requests it builds (auth token, signing secrets, credentials
//! and tokens in the URL).

use receipts_dispatcher::DispatcherConfig;
use receipts_runtime::config::Secret;

const SECRET: &str = "known-secret-value";

#[test]
fn configuration_and_requests_print_no_secret() {
    let mut config = DispatcherConfig::default();
    config
        .accounts
        .insert(crate::support::ACCOUNT.to_owned(), Secret::new(SECRET));
    config
        .kafka
        .properties
        .insert("sasl.password".into(), SECRET.into());
    config.webhook_secrets_key = Secret::new(SECRET);
    let printed = format!("{config:?}");
    assert!(!printed.contains(SECRET), "{printed}");

    let request = receipts_webhook::WebhookRequest {
        url: format!("https://user:{SECRET}@hooks.example.com/in?token={SECRET}"),
        method: receipts_webhook::Method::Post,
        payload: receipts_webhook::DeliveryPayload::of(
            &receipts_domain::Receipt::try_from(&crate::support::receipt(
                1,
                2,
                receipts_proto::v1::DeliveryStatus::Delivered,
            ))
            .unwrap(),
        )
        .unwrap(),
        auth_token: SECRET.into(),
        idempotency_token: "token".into(),
        signing_secrets: vec![format!("whsec_{SECRET}")],
        receipt_version: 2,
    };
    let printed = format!("{request:?}");
    assert!(!printed.contains(SECRET), "{printed}");
    assert_eq!(
        receipts_webhook::redacted_url(&request.url),
        "https://***@hooks.example.com/in?***"
    );
}
