use std::net::SocketAddr;

use prometheus_client::metrics::counter::Counter;
use receipts_runtime::metrics::{self, Metrics, OPENMETRICS_CONTENT_TYPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A response read off the wire: status code, lowercased header block, body.
struct Response {
    status: u16,
    headers: String,
    body: String,
}

/// Minimal HTTP/1.1 GET over a fresh connection the server closes after answering.
async fn get(addr: SocketAddr, path: &str) -> Response {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();

    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let (status_line, headers) = head.split_once("\r\n").unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    Response {
        status,
        headers: headers.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn metrics_endpoint_serves_registered_counters() {
    let metrics = Metrics::new();
    let applied = Counter::<u64>::default();
    metrics.register(
        "receipts_events_applied",
        "Events applied to the state",
        applied.clone(),
    );
    applied.inc_by(3);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(metrics::serve(
        listener,
        metrics::router(metrics.clone()),
        shutdown.clone(),
    ));

    let response = get(addr, "/metrics").await;
    assert_eq!(response.status, 200);
    let content_type = format!("content-type: {OPENMETRICS_CONTENT_TYPE}");
    assert!(
        response.headers.contains(&content_type),
        "{}",
        response.headers
    );
    assert!(
        response.body.contains("receipts_events_applied_total 3\n"),
        "{}",
        response.body
    );
    assert!(response.body.ends_with("# EOF\n"), "{}", response.body);

    // Registered after the server started: the next scrape sees it.
    let late = Counter::<u64>::default();
    metrics.register(
        "receipts_webhook_attempts",
        "Webhook delivery attempts",
        late.clone(),
    );
    late.inc();
    assert!(
        get(addr, "/metrics")
            .await
            .body
            .contains("receipts_webhook_attempts_total 1\n")
    );

    let health = get(addr, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    assert_eq!(get(addr, "/nowhere").await.status, 404);

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[test]
fn render_is_openmetrics_text() {
    let metrics = Metrics::new();
    assert_eq!(metrics.render(), "# EOF\n");
}

/// `/healthz` tells the truth: 503 with the reason while a consumer is not current, and the
/// `receipts_consumer_ready` gauge says which one; `/livez` answers regardless.
#[tokio::test]
async fn healthz_is_503_with_the_reason_while_a_consumer_is_not_current() {
    use receipts_runtime::health::ComponentState;

    let metrics = Metrics::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(metrics::serve(
        listener,
        metrics::router(metrics.clone()),
        shutdown.clone(),
    ));
    let read_model = metrics.readiness().component("read-model");
    read_model.set(ComponentState::Restoring { partitions: 3 });

    let health = get(addr, "/healthz").await;
    assert_eq!(health.status, 503);
    assert!(
        health
            .body
            .contains("read-model: restoring the state of 3 partition(s)"),
        "{}",
        health.body
    );
    assert!(
        get(addr, "/metrics")
            .await
            .body
            .contains("receipts_consumer_ready{consumer=\"read-model\"} 0\n")
    );
    assert_eq!(get(addr, "/livez").await.status, 200);

    read_model.set(ComponentState::Ready);
    assert_eq!(get(addr, "/healthz").await.status, 200);
    assert!(
        get(addr, "/metrics")
            .await
            .body
            .contains("receipts_consumer_ready{consumer=\"read-model\"} 1\n")
    );

    read_model.set(ComponentState::Unreachable { seconds: 42 });
    let health = get(addr, "/healthz").await;
    assert_eq!(health.status, 503);
    assert!(
        health
            .body
            .contains("read-model: cannot reach the Kafka broker for 42 s"),
        "{}",
        health.body
    );

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// Every name is exported under `receipts_`, and `families` lists each registered family, also
/// one without any series yet (which a scrape leaves out).
#[test]
fn families_are_prefixed_and_listed_before_their_first_series() {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::histogram::Histogram;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Outcome {
        outcome: &'static str,
    }

    let metrics = Metrics::new();
    let attempts = Family::<Outcome, Counter>::default();
    metrics.register("webhook_attempts", "attempts by outcome", attempts.clone());
    metrics.register("attempt_seconds", "latency", Histogram::new([0.1, 1.0]));
    let listed: Vec<(String, String)> = metrics
        .families()
        .into_iter()
        .map(|f| (f.name, f.kind))
        .collect();
    let expected = [
        ("receipts_consumer_ready", "gauge"),
        ("receipts_consumer_lag", "gauge"),
        ("receipts_webhook_attempts", "counter"),
        ("receipts_attempt_seconds", "histogram"),
    ]
    .map(|(name, kind)| (name.to_owned(), kind.to_owned()));
    assert_eq!(listed, expected);

    let text = metrics.render();
    assert!(!text.contains("webhook_attempts"), "no series yet: {text}");
    assert!(
        text.contains("# TYPE receipts_attempt_seconds histogram"),
        "{text}"
    );
    attempts
        .get_or_create(&Outcome {
            outcome: "delivered",
        })
        .inc();
    assert!(
        metrics
            .render()
            .contains("receipts_webhook_attempts_total{outcome=\"delivered\"} 1\n")
    );
}
