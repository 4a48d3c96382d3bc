//! Slow and abusive clients over real sockets: slowloris connections do not keep a correct
//! report out and are closed by the timeouts; beyond the caps, connections and requests are
//! answered 503 with `Retry-After`.

use std::time::{Duration, Instant};

use receipts_testkit::slow_clients::{self, Slowness};

use crate::support::{Harness, SMPP_CONNECTION, SMPP_TOKEN, fresh_config};

const SLOW_CONNECTIONS: usize = 2_000;

fn receipt(id: &str) -> String {
    format!("id:{id} done date:2403011234 stat:DELIVRD err:000")
}

async fn post_receipt(harness: &Harness, id: &str) -> crate::support::HttpResponse {
    harness
        .post(
            &format!("/v1/smpp/{SMPP_CONNECTION}/receipts"),
            &[("authorization", &format!("Bearer {SMPP_TOKEN}"))],
            receipt(id).as_bytes(),
        )
        .await
}

fn slow_body_head() -> String {
    format!(
        "POST /v1/smpp/{SMPP_CONNECTION}/receipts HTTP/1.1\r\nhost: receipts\r\nauthorization: Bearer {SMPP_TOKEN}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_neither_block_a_report_nor_stay_open() {
    let mut config = fresh_config().await;
    config.http.header_read_timeout_ms = 2_000;
    config.http.body_read_timeout_ms = 2_000;
    let harness = Harness::start_with(config).await;
    let started = Instant::now();
    assert_eq!(post_receipt(&harness, "warm-up").await.status, 200);
    let unloaded = started.elapsed();

    let count = slow_clients::connection_budget(SLOW_CONNECTIONS);
    // Slow bodies each hold a request slot until their deadline, so they stay well under
    // `max_requests_in_flight` (512): beyond it the gateway sheds, which another test shows.
    let bodies = (count / 20).min(100);
    let heads = (count - bodies) / 2;
    let silent = count - bodies - heads;
    let mut slow = slow_clients::open(harness.addr, silent, Slowness::Silent, "").await;
    slow.extend(slow_clients::open(harness.addr, heads, Slowness::PartialHead, "").await);
    slow.extend(
        slow_clients::open(
            harness.addr,
            bodies,
            Slowness::PartialBody,
            &slow_body_head(),
        )
        .await,
    );

    let started = Instant::now();
    let response = post_receipt(&harness, "while-slowloris").await;
    let loaded = started.elapsed();
    assert_eq!(response.status, 200, "{:?}", response.json());
    eprintln!("{count} slow connections open: a report took {loaded:?} (alone: {unloaded:?})");
    // Generous: the produce timeout is 15 s; a report is normally answered in milliseconds.
    assert!(loaded < Duration::from_secs(10), "{loaded:?}");

    let closed = slow_clients::wait_closed(slow, Duration::from_secs(60)).await;
    // Slow bodies are answered 408; slow heads and silent connections are closed unanswered
    // (or, by hyper, with 408 too).
    let timed_out_bodies = closed.answered.iter().filter(|s| **s == 408).count();
    assert!(timed_out_bodies >= bodies, "{closed:?}");
    assert_eq!(closed.silently + closed.answered.len(), count);
    assert!(
        closed.answered.iter().all(|s| *s == 408),
        "only timeouts are answered: {:?}",
        closed.answered
    );
    assert_eq!(post_receipt(&harness, "after").await.status, 200);
    let metrics = harness.metrics.render();
    let timeouts = metric(&metrics, "receipts_ingest_http_header_timeouts_total");
    assert!(
        timeouts >= heads as f64,
        "{timeouts} header timeouts for {heads} slow heads"
    );
    harness.stop().await;
}

fn metric(rendered: &str, name: &str) -> f64 {
    rendered
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{rendered}"))
}

#[tokio::test]
async fn beyond_the_caps_connections_and_requests_get_503_with_retry_after() {
    let mut config = fresh_config().await;
    config.http.header_read_timeout_ms = 1_500;
    config.http.body_read_timeout_ms = 1_500;
    config.http.max_connections = 4;
    config.http.max_requests_in_flight = 2;
    config.http.retry_after_secs = 3;
    let harness = Harness::start_with(config).await;

    // Two requests whose bodies never arrive hold both request slots.
    let held = slow_clients::open(harness.addr, 2, Slowness::PartialBody, &slow_body_head()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shed = post_receipt(&harness, "shed").await;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.header("retry-after"), Some("3"));
    assert!(
        shed.json()["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("in flight")
    );

    // Two silent connections fill the connection cap with the held ones: the next is refused.
    let idle = slow_clients::open(harness.addr, 2, Slowness::Silent, "").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = slow_clients::open(harness.addr, 1, Slowness::Silent, "").await;
    let refused = slow_clients::wait_closed(refused, Duration::from_secs(5)).await;
    assert_eq!(refused.answered, vec![503]);

    let closed = slow_clients::wait_closed(held, Duration::from_secs(30)).await;
    assert_eq!(closed.answered, vec![408, 408]);
    slow_clients::wait_closed(idle, Duration::from_secs(30)).await;
    assert_eq!(post_receipt(&harness, "after").await.status, 200);
    let metrics = harness.metrics.render();
    assert_eq!(
        metric(&metrics, "receipts_ingest_http_requests_shed_total"),
        1.0
    );
    assert_eq!(
        metric(&metrics, "receipts_ingest_http_connections_refused_total"),
        1.0
    );
    harness.stop().await;
}
