//! Slow and abusive clients: slowloris connections against the REST facade, and what one gRPC
//! client or account can take of the server (message sizes, `WatchUpdates` streams).

use std::time::{Duration, Instant};

use receipts_proto::v1;
use receipts_testkit::slow_clients::{self, Slowness};
use tonic::Code;

use crate::support::{
    ACCOUNT, Harness, OTHER_ACCOUNT, OTHER_TOKEN, TOKEN, client, eventually, http, sid,
};

const SLOW_CONNECTIONS: usize = 2_000;

async fn list_webhooks(rest: std::net::SocketAddr) -> crate::support::HttpResponse {
    let url = format!("http://{rest}/v1/Conversations/{}/Webhooks", sid("CH", 1));
    http("GET", &url, Some((ACCOUNT, TOKEN)), &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_neither_block_a_rest_call_nor_stay_open() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness
        .start_with(dir.path(), |config| {
            config.http.header_read_timeout_ms = 2_000;
            config.http.body_read_timeout_ms = 2_000;
        })
        .await;
    let rest = running.rest_address;
    let answered = eventually("the REST facade to answer", || async {
        let response = list_webhooks(rest).await;
        (response.status == 200).then_some(response)
    })
    .await;
    assert_eq!(answered.status, 200);

    let count = slow_clients::connection_budget(SLOW_CONNECTIONS);
    let bodies = (count / 20).min(100);
    let heads = (count - bodies) / 2;
    let silent = count - bodies - heads;
    let body_head = format!(
        "POST /v1/Conversations/{}/Webhooks HTTP/1.1\r\nhost: receipts\r\ncontent-type: application/x-www-form-urlencoded\r\nauthorization: {}",
        sid("CH", 1),
        receipts_query::auth::basic_authorization(ACCOUNT, TOKEN)
    );
    let mut slow = slow_clients::open(rest, silent, Slowness::Silent, "").await;
    slow.extend(slow_clients::open(rest, heads, Slowness::PartialHead, "").await);
    slow.extend(slow_clients::open(rest, bodies, Slowness::PartialBody, &body_head).await);

    let started = Instant::now();
    let response = list_webhooks(rest).await;
    let took = started.elapsed();
    assert_eq!(response.status, 200, "{}", response.body);
    eprintln!("{count} slow connections open: a REST call took {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    let closed = slow_clients::wait_closed(slow, Duration::from_secs(60)).await;
    assert_eq!(closed.silently + closed.answered.len(), count);
    // A body that never arrives is answered 408; slow heads and silent connections are closed.
    assert!(
        closed.answered.iter().all(|s| *s == 408),
        "{:?}",
        closed.answered
    );
    assert!(closed.answered.len() >= bodies, "{closed:?}");
    assert_eq!(list_webhooks(rest).await.status, 200);
    running.stop().await;
}

#[tokio::test]
async fn rest_calls_beyond_the_caps_get_twilios_503_with_retry_after() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness
        .start_with(dir.path(), |config| {
            config.http.body_read_timeout_ms = 1_500;
            config.http.max_requests_in_flight = 1;
            config.http.retry_after_secs = 4;
        })
        .await;
    let rest = running.rest_address;
    eventually("the REST facade to answer", || async {
        (list_webhooks(rest).await.status == 200).then_some(())
    })
    .await;
    let body_head = format!(
        "POST /v1/Conversations/{}/Webhooks HTTP/1.1\r\nhost: receipts\r\ncontent-type: application/x-www-form-urlencoded\r\nauthorization: {}",
        sid("CH", 1),
        receipts_query::auth::basic_authorization(ACCOUNT, TOKEN)
    );
    let held = slow_clients::open(rest, 1, Slowness::PartialBody, &body_head).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shed = list_webhooks(rest).await;
    assert_eq!(shed.status, 503, "{}", shed.body);
    assert_eq!(shed.header("retry-after"), Some("4"));
    assert_eq!(shed.json()["code"], 20503);
    let held = slow_clients::wait_closed(held, Duration::from_secs(30)).await;
    assert_eq!(held.answered, vec![408]);
    assert_eq!(list_webhooks(rest).await.status, 200);
    running.stop().await;
}

#[tokio::test]
async fn watch_streams_are_capped_per_account() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness
        .start_with(dir.path(), |config| {
            config.grpc.max_watch_streams_per_account = 2;
        })
        .await;
    let mut client = client(running.address, ACCOUNT, TOKEN).await;
    let watch = |n: u64| v1::WatchUpdatesRequest {
        conversation_sid: sid("CH", n),
    };
    let first = client.watch_updates(watch(1)).await.unwrap().into_inner();
    let _second = client.watch_updates(watch(2)).await.unwrap().into_inner();
    let refused = client.watch_updates(watch(3)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("WatchUpdates"), "{refused:?}");

    // Another account's streams are counted apart.
    let mut other = crate::support::client(running.address, OTHER_ACCOUNT, OTHER_TOKEN).await;
    let _theirs = other.watch_updates(watch(1)).await.unwrap();

    // A stream the client closes frees its slot.
    drop(first);
    eventually("the closed stream's slot to be freed", || {
        let mut client = client.clone();
        async move { client.watch_updates(watch(4)).await.ok() }
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn requests_over_the_message_size_limit_are_refused() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness
        .start_with(dir.path(), |config| {
            config.grpc.max_message_bytes = 4 * 1024;
        })
        .await;
    let mut client = client(running.address, ACCOUNT, TOKEN).await;
    let status = client
        .get_message_delivery(v1::GetMessageDeliveryRequest {
            conversation_sid: "CH".to_owned() + &"0".repeat(8 * 1024),
            message_sid: sid("IM", 1),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    running.stop().await;
}

#[tokio::test]
async fn paging_parameters_are_bounded() {
    let seeded = crate::rest::start_seeded().await;
    let receipts = format!(
        "/v1/Conversations/{}/Messages/{}/Receipts",
        sid("CH", 1),
        sid("IM", 10)
    );
    for query in [
        "Page=18446744073709551615",
        "Page=18446744073709551615&PageToken=anything",
        "PageSize=50&Page=1000",
    ] {
        let response = seeded.get(&format!("{receipts}?{query}")).await;
        assert_eq!(response.status, 400, "{query}: {}", response.body);
        let body = response.json();
        assert_eq!(body["code"], 20001, "{query}");
        assert!(
            body["message"].as_str().unwrap().contains("Page"),
            "{query}: {body}"
        );
    }
    // Far beyond this short list, within the walk bound: an empty page, found by a short walk.
    let beyond = seeded
        .get(&format!("{receipts}?PageSize=50&Page=150"))
        .await;
    assert_eq!(beyond.status, 200, "{}", beyond.body);
    let body = beyond.json();
    assert_eq!(body["meta"]["page"], 150);
    assert_eq!(body["delivery_receipts"].as_array().unwrap().len(), 0);
    seeded.running.stop().await;
}

#[tokio::test]
async fn webhook_fields_are_size_capped_and_named() {
    let seeded = crate::rest::start_seeded().await;
    let hooks = seeded.url(&format!("/v1/Conversations/{}/Webhooks", sid("CH", 1)));
    let account_hooks = seeded.url("/v1/Configuration/Webhooks");
    let long_url = format!("https://hooks.example.com/{}", "a".repeat(3_000));
    let many: Vec<String> = (0..65).map(|i| format!("onEvent{i}")).collect();
    let long_trigger = "t".repeat(300);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            &hooks,
            vec![("Target", "webhook"), ("Configuration.Url", &long_url)],
            "Configuration.Url",
        ),
        (
            &hooks,
            [
                ("Target", "webhook"),
                ("Configuration.Url", "https://h.example.com/"),
            ]
            .into_iter()
            .chain(many.iter().map(|f| ("Configuration.Filters", f.as_str())))
            .collect(),
            "Configuration.Filters",
        ),
        (
            &hooks,
            vec![
                ("Target", "trigger"),
                ("Configuration.Url", "https://h.example.com/"),
                ("Configuration.Triggers", &long_trigger),
            ],
            "Configuration.Triggers",
        ),
        (
            &hooks,
            [
                ("Target", "trigger"),
                ("Configuration.Url", "https://h.example.com/"),
            ]
            .into_iter()
            .chain(many.iter().map(|t| ("Configuration.Triggers", t.as_str())))
            .collect(),
            "Configuration.Triggers",
        ),
        (
            &account_hooks,
            vec![("PostWebhookUrl", &long_url)],
            "PostWebhookUrl",
        ),
        (
            &account_hooks,
            vec![("PreWebhookUrl", &long_url)],
            "PreWebhookUrl",
        ),
        (
            &account_hooks,
            many.iter().map(|f| ("Filters", f.as_str())).collect(),
            "Filters",
        ),
    ];
    for (url, form, field) in cases {
        let response = http("POST", url, Some((ACCOUNT, TOKEN)), &form).await;
        assert_eq!(response.status, 400, "{field}: {}", response.body);
        let body = response.json();
        assert_eq!(body["code"], 20001, "{field}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("Invalid parameter {field}:")),
            "{field}: {message}"
        );
        assert!(message.len() < 300, "the message quotes little: {message}");
    }
    seeded.running.stop().await;
}
