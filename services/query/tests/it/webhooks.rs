//! Webhook configuration over REST: Twilio's form writes, answers that already show the write,
//! records on the compacted `webhook-configs` topic (tombstones for deletes), at most five
//! webhooks per conversation. The gRPC side is in `webhooks_grpc`, on the helpers here.

use std::time::Duration;

use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use receipts_proto::v1;
use serde_json::Value;

use crate::contract::{
    ACCOUNT_WEBHOOK_KEYS, SCOPED_WEBHOOK_KEYS, SERVICE_WEBHOOK_KEYS, assert_keys,
    assert_twilio_error, assert_valid, with_service,
};
use crate::support::{
    ACCOUNT, Harness, HttpResponse, OTHER_ACCOUNT, OTHER_TOKEN, Running, TOKEN, http, sid,
};

pub(crate) const ACCOUNT_CONFIG: &str = "/v1/Configuration/Webhooks";
const SERVICE_CONFIG: &str = "/v1/Services/{ChatServiceSid}/Configuration/Webhooks";
const SCOPED_LIST: &str = "/v1/Conversations/{ConversationSid}/Webhooks";
const SCOPED_ONE: &str = "/v1/Conversations/{ConversationSid}/Webhooks/{Sid}";
const S_SCOPED_LIST: &str =
    "/v1/Services/{ChatServiceSid}/Conversations/{ConversationSid}/Webhooks";

pub(crate) fn url(running: &Running, path: &str) -> String {
    format!("http://{}{path}", running.rest_address)
}

pub(crate) async fn call(
    running: &Running,
    method: &str,
    path: &str,
    form: &[(&str, &str)],
) -> HttpResponse {
    http(method, &url(running, path), Some((ACCOUNT, TOKEN)), form).await
}

pub(crate) fn status(response: &HttpResponse, expected: u16) -> Value {
    assert_eq!(response.status, expected, "{}", response.body);
    if response.body.is_empty() {
        Value::Null
    } else {
        response.json()
    }
}

/// Every record of the webhook-configs topic so far: (key, payload).
pub(crate) async fn topic_records(harness: &Harness) -> Vec<(String, Option<v1::WebhookConfig>)> {
    let consumer: StreamConsumer = harness
        .kafka
        .consumer_config("webhooks-test", &receipts_testkit::unique("webhooks-test"))
        .create()
        .unwrap();
    let topic = harness.topics.webhook_configs.clone();
    let (_, high) = consumer
        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    while records.len() < high as usize {
        let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("the topic's records")
            .unwrap();
        records.push((
            String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
            message
                .payload()
                .map(|p| v1::WebhookConfig::decode(p).unwrap()),
        ));
    }
    records
}

#[tokio::test]
async fn account_and_service_configuration_answer_with_their_writes() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;

    // Nothing configured: Twilio's shape with nulls, POST and target webhook.
    let empty = status(&call(&running, "GET", ACCOUNT_CONFIG, &[]).await, 200);
    assert_valid(ACCOUNT_CONFIG, "get", 200, &empty);
    assert_keys(&empty, ACCOUNT_WEBHOOK_KEYS);
    assert_eq!(empty["post_webhook_url"], Value::Null);
    assert_eq!(empty["method"], "POST");
    assert_eq!(empty["url"], url(&running, ACCOUNT_CONFIG));

    // A form write, answered with the write; the next read shows it too.
    let written = status(
        &call(
            &running,
            "POST",
            ACCOUNT_CONFIG,
            &[
                ("PostWebhookUrl", "https://hooks.example.com/post"),
                ("Method", "get"),
                ("Filters", "onDeliveryUpdated"),
                ("Filters", "onMessageAdded"),
                ("Target", "webhook"),
            ],
        )
        .await,
        200,
    );
    assert_valid(ACCOUNT_CONFIG, "post", 200, &written);
    assert_keys(&written, ACCOUNT_WEBHOOK_KEYS);
    assert_eq!(written["account_sid"], ACCOUNT);
    assert_eq!(
        written["post_webhook_url"],
        "https://hooks.example.com/post"
    );
    assert_eq!(written["method"], "GET");
    assert_eq!(
        written["filters"],
        serde_json::json!(["onDeliveryUpdated", "onMessageAdded"])
    );
    let read = status(&call(&running, "GET", ACCOUNT_CONFIG, &[]).await, 200);
    assert_eq!(read, written);

    // The older path serves the same resource and echoes itself in `url`.
    let legacy = status(
        &call(&running, "GET", "/v1/Conversations/Webhooks", &[]).await,
        200,
    );
    assert_valid(ACCOUNT_CONFIG, "get", 200, &legacy);
    assert_eq!(legacy["url"], url(&running, "/v1/Conversations/Webhooks"));
    assert_eq!(legacy["filters"], written["filters"]);

    // A partial update changes only what it names.
    let partial = status(
        &call(
            &running,
            "POST",
            "/v1/Conversations/Webhooks",
            &[("Method", "POST")],
        )
        .await,
        200,
    );
    assert_eq!(partial["method"], "POST");
    assert_eq!(partial["filters"], written["filters"]);
    assert_eq!(partial["post_webhook_url"], written["post_webhook_url"]);

    // Bad values are Twilio 400s and change nothing.
    for form in [
        [("Method", "PUT")],
        [("PostWebhookUrl", "ftp://nope")],
        [("Target", "elsewhere")],
    ] {
        let refused = call(&running, "POST", ACCOUNT_CONFIG, &form).await;
        assert_twilio_error(&refused.body, 400, 20001);
    }

    // A service's configuration, on its own key.
    let service = sid("IS", 7);
    let path = format!("/v1/Services/{service}/Configuration/Webhooks");
    let empty = status(&call(&running, "GET", &path, &[]).await, 200);
    assert_valid(SERVICE_CONFIG, "get", 200, &empty);
    assert_keys(&empty, SERVICE_WEBHOOK_KEYS);
    assert_eq!(empty["filters"], Value::Null);
    let written = status(
        &call(
            &running,
            "POST",
            &path,
            &[
                ("PreWebhookUrl", "https://hooks.example.com/pre"),
                ("PostWebhookUrl", "https://hooks.example.com/service"),
                ("Filters", "onDeliveryUpdated"),
            ],
        )
        .await,
        200,
    );
    assert_valid(SERVICE_CONFIG, "post", 200, &written);
    assert_keys(&written, SERVICE_WEBHOOK_KEYS);
    assert_eq!(written["chat_service_sid"], service);
    assert_eq!(written["url"], url(&running, &path));
    assert_eq!(
        status(&call(&running, "GET", &path, &[]).await, 200),
        written
    );
    let bad_service = call(
        &running,
        "GET",
        "/v1/Services/IS1/Configuration/Webhooks",
        &[],
    )
    .await;
    assert_twilio_error(&bad_service.body, 400, 20001);

    // Another account has its own configuration and never sees this one.
    let other = http(
        "GET",
        &url(&running, ACCOUNT_CONFIG),
        Some((OTHER_ACCOUNT, OTHER_TOKEN)),
        &[],
    )
    .await;
    let other = status(&other, 200);
    assert_eq!(other["account_sid"], OTHER_ACCOUNT);
    assert_eq!(other["post_webhook_url"], Value::Null);
    let anonymous = http(
        "POST",
        &url(&running, ACCOUNT_CONFIG),
        None,
        &[("Method", "GET")],
    )
    .await;
    assert_twilio_error(&anonymous.body, 401, 20003);

    // The writes are records of the compacted topic, keyed per scope.
    let records = topic_records(&harness).await;
    let keys: Vec<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            format!("account/{ACCOUNT}"),
            format!("account/{ACCOUNT}"),
            format!("service/{ACCOUNT}/{service}"),
        ]
    );
    let last = records[2].1.as_ref().unwrap();
    assert_eq!(last.scope(), v1::WebhookScope::Service);
    assert_eq!(last.post_webhook_url, "https://hooks.example.com/service");
    assert_eq!(last.filters, ["onDeliveryUpdated"]);

    // A new instance reads the topic before it answers.
    running.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let restarted = harness.start(dir.path()).await;
    let read = status(&call(&restarted, "GET", ACCOUNT_CONFIG, &[]).await, 200);
    assert_eq!(
        read["filters"],
        serde_json::json!(["onDeliveryUpdated", "onMessageAdded"])
    );
    assert_eq!(read["url"], url(&restarted, ACCOUNT_CONFIG));
    restarted.stop().await;
}

#[tokio::test]
async fn conversation_webhooks_are_at_most_five_and_deletable() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    let conversation = sid("CH", 3);
    let list_path = format!("/v1/Conversations/{conversation}/Webhooks");

    let empty = status(&call(&running, "GET", &list_path, &[]).await, 200);
    assert_valid(SCOPED_LIST, "get", 200, &empty);
    assert_eq!(empty["meta"]["key"], "webhooks");
    assert_eq!(empty["meta"]["page_size"], 5);
    assert_eq!(empty["webhooks"], serde_json::json!([]));

    let mut sids = Vec::new();
    for n in 0..5 {
        let hook = format!("https://hooks.example.com/{n}");
        let created = status(
            &call(
                &running,
                "POST",
                &list_path,
                &[
                    ("Target", "webhook"),
                    ("Configuration.Url", &hook),
                    ("Configuration.Method", "POST"),
                    ("Configuration.Filters", "onDeliveryUpdated"),
                ],
            )
            .await,
            201,
        );
        assert_valid(SCOPED_LIST, "post", 201, &created);
        assert_keys(&created, SCOPED_WEBHOOK_KEYS);
        assert_eq!(created["configuration"]["url"], hook);
        assert_eq!(created["configuration"]["method"], "post");
        assert_eq!(
            created["configuration"]["filters"],
            serde_json::json!(["onDeliveryUpdated"])
        );
        let sid = created["sid"].as_str().unwrap().to_owned();
        assert_eq!(created["url"], url(&running, &format!("{list_path}/{sid}")));
        sids.push(sid);
    }
    let sixth = call(
        &running,
        "POST",
        &list_path,
        &[
            ("Target", "webhook"),
            ("Configuration.Url", "https://hooks.example.com/6"),
        ],
    )
    .await;
    assert_twilio_error(&sixth.body, 400, 20001);
    for form in [
        &[("Configuration.Url", "https://hooks.example.com/x")][..],
        &[("Target", "studio")][..],
        &[("Target", "webhook"), ("Configuration.Url", "nowhere")][..],
    ] {
        let refused = call(
            &running,
            "POST",
            &format!("/v1/Conversations/{}/Webhooks", sid("CH", 4)),
            form,
        )
        .await;
        assert_twilio_error(&refused.body, 400, 20001);
    }

    let list = status(&call(&running, "GET", &list_path, &[]).await, 200);
    assert_valid(SCOPED_LIST, "get", 200, &list);
    let listed: Vec<&str> = list["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["sid"].as_str().unwrap())
        .collect();
    assert_eq!(listed, sids, "oldest first");
    // Two per page, by Page.
    let first = status(
        &call(&running, "GET", &format!("{list_path}?PageSize=2"), &[]).await,
        200,
    );
    assert_valid(SCOPED_LIST, "get", 200, &first);
    let next = first["meta"]["next_page_url"].as_str().unwrap();
    let second = status(&http("GET", next, Some((ACCOUNT, TOKEN)), &[]).await, 200);
    assert_eq!(second["webhooks"][0]["sid"], listed[2]);

    // Fetch, update, delete one.
    let one = format!("{list_path}/{}", sids[0]);
    let fetched = status(&call(&running, "GET", &one, &[]).await, 200);
    assert_valid(SCOPED_ONE, "get", 200, &fetched);
    let updated = status(
        &call(
            &running,
            "POST",
            &one,
            &[
                ("Configuration.Method", "get"),
                ("Configuration.Filters", "onMessageAdded"),
            ],
        )
        .await,
        200,
    );
    assert_valid(SCOPED_ONE, "post", 200, &updated);
    assert_eq!(updated["configuration"]["method"], "get");
    assert_eq!(
        updated["configuration"]["filters"],
        serde_json::json!(["onMessageAdded"])
    );
    assert_eq!(updated["date_created"], fetched["date_created"]);
    // Another account cannot touch it.
    let foreign = http(
        "DELETE",
        &url(&running, &one),
        Some((OTHER_ACCOUNT, OTHER_TOKEN)),
        &[],
    )
    .await;
    assert_twilio_error(&foreign.body, 404, 20404);
    let deleted = call(&running, "DELETE", &one, &[]).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert_twilio_error(&call(&running, "GET", &one, &[]).await.body, 404, 20404);
    assert_twilio_error(&call(&running, "DELETE", &one, &[]).await.body, 404, 20404);
    let list = status(&call(&running, "GET", &list_path, &[]).await, 200);
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 4);

    // The service-scoped copy of the same conversation.
    let service = sid("IS", 7);
    let service_list = format!("/v1/Services/{service}/Conversations/{conversation}/Webhooks");
    let list = status(&call(&running, "GET", &service_list, &[]).await, 200);
    assert_valid(S_SCOPED_LIST, "get", 200, &list);
    assert_keys(&list["webhooks"][0], &with_service(SCOPED_WEBHOOK_KEYS));
    assert_eq!(list["webhooks"][0]["chat_service_sid"], service);

    // On the topic: five creations, one update, one tombstone.
    let records = topic_records(&harness).await;
    assert_eq!(records.len(), 7);
    let key = format!("conversation/{ACCOUNT}/{conversation}/{}", sids[0]);
    assert_eq!(records[6].0, key);
    assert!(records[6].1.is_none(), "a delete is a tombstone");
    running.stop().await;
}

#[tokio::test]
async fn a_missing_configuration_topic_is_waited_for() {
    let mut harness = Harness::new().await;
    harness.topics = receipts_testkit::unique_topics();
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    receipts_bus::topics::ensure_topics(&harness.kafka, &harness.topics.specs(2))
        .await
        .unwrap();
    let written = status(
        &call(
            &running,
            "POST",
            ACCOUNT_CONFIG,
            &[("PostWebhookUrl", "https://hooks.example.com/late")],
        )
        .await,
        200,
    );
    assert_eq!(
        written["post_webhook_url"],
        "https://hooks.example.com/late"
    );
    assert_eq!(topic_records(&harness).await.len(), 1);
    running.stop().await;
}

/// A create retried with the same parameters (its first answer lost, say a 503 after the write
/// was durable) finds the webhook it made instead of making a second one; a webhook updated
/// since is not mistaken for it.
#[tokio::test]
async fn a_retried_conversation_webhook_create_makes_one_webhook() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    let list_path = format!("/v1/Conversations/{}/Webhooks", sid("CH", 7));
    let form = [
        ("Target", "webhook"),
        ("Configuration.Url", "https://hooks.example.com/retried"),
        ("Configuration.Filters", "onDeliveryUpdated"),
    ];
    let first = status(&call(&running, "POST", &list_path, &form).await, 201);
    let again = status(&call(&running, "POST", &list_path, &form).await, 201);
    assert_eq!(first["sid"], again["sid"]);
    assert_eq!(first["date_created"], again["date_created"]);
    let list = status(&call(&running, "GET", &list_path, &[]).await, 200);
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);

    // The webhook moves to another URL; a create with the old parameters is a new webhook.
    let sid_path = format!("{list_path}/{}", first["sid"].as_str().unwrap());
    status(
        &call(
            &running,
            "POST",
            &sid_path,
            &[("Configuration.Url", "https://hooks.example.com/moved")],
        )
        .await,
        200,
    );
    let another = status(&call(&running, "POST", &list_path, &form).await, 201);
    assert_ne!(another["sid"], first["sid"]);
    let list = status(&call(&running, "GET", &list_path, &[]).await, 200);
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 2);
    running.stop().await;
}
