use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use receipts::dev::{DEMO_ACCOUNT, DEMO_TOKEN, DevArgs};
use receipts_proto::v1;
use receipts_runtime::config::{OtlpProtocol, TelemetryConfig};
use receipts_runtime::telemetry::{self, TraceExport};
use receipts_webhook::RetrySchedule;
use tokio_util::sync::CancellationToken;

use crate::jaeger::{self, Span, same_id};

/// What the test's webhook receiver was sent.
#[derive(Debug, Clone)]
struct Received {
    traceparent: Option<String>,
    token: Option<String>,
}

/// Answers 500 to the first `failures` requests and 200 afterwards.
#[derive(Default)]
struct Receiver {
    failures: usize,
    received: Mutex<Vec<Received>>,
}

async fn receive(State(receiver): State<Arc<Receiver>>, headers: HeaderMap) -> StatusCode {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut received = receiver.received.lock().unwrap();
    received.push(Received {
        traceparent: text("traceparent"),
        token: text("i-twilio-idempotency-token"),
    });
    if received.len() <= receiver.failures {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

fn hex_id(seed: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:016x}{:016x}", nanos, seed)
}

/// The trace id of a `traceparent` header: `00-<trace id>-<parent span id>-<flags>`.
fn traceparent_ids(header: &str) -> (String, String) {
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "malformed traceparent {header:?}");
    (parts[1].to_owned(), parts[2].to_owned())
}

fn named<'a>(spans: &'a [Span], operation: &str) -> Vec<&'a Span> {
    let mut found: Vec<&Span> = spans.iter().filter(|s| s.operation == operation).collect();
    found.sort_by_key(|s| s.start_micros);
    found
}

/// One Twilio status callback → one trace: the ingest request, the projector's apply, the read
/// model's apply, the dispatcher's attempts and the outgoing webhook requests, whose
/// `traceparent` names that trace; the receiver fails the delivery twice, so the trace holds three
/// attempts, each request a child of its attempt. The batch spans are in traces of their own and
/// link to the report's trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_callback_is_one_trace_to_its_webhook_and_its_retries() {
    let query = crate::required_env("RECEIPTS_TEST_JAEGER");
    let otlp = crate::required_env("RECEIPTS_TEST_JAEGER_OTLP_GRPC");
    let service = crate::unique_service("pipeline");
    let logs = TelemetryConfig {
        log_filter: "warn".into(),
        ..TelemetryConfig::default()
    };
    let export = TraceExport::to(OtlpProtocol::Grpc, &otlp, &service);
    let telemetry = Arc::new(telemetry::init_with(&logs, Some(&export)).expect("telemetry"));

    // The subscriber's endpoint, failing twice.
    let receiver = Arc::new(Receiver {
        failures: 2,
        ..Receiver::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks = format!("http://{}/hooks", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hooks", post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let data_dir = tempfile::tempdir().unwrap();
    let args = DevArgs {
        webhook_url: Some(hooks),
        webhook_retry: Some(RetrySchedule {
            delays_ms: vec![0, 300, 300, 300],
            jitter: 0.0,
            ..RetrySchedule::default()
        }),
        ..DevArgs::on_free_ports(data_dir.path().to_owned())
    };
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let dev = tokio::spawn(receipts::dev::run(
        args,
        shutdown.clone(),
        move |addresses| {
            let _ = ready_tx.send(addresses.clone());
        },
    ));
    let addresses = tokio::time::timeout(Duration::from_secs(60), ready_rx)
        .await
        .expect("receipts dev starts within a minute")
        .expect("receipts dev reports its addresses");
    let ingest = format!("http://{}", addresses.ingest);
    let http = reqwest::Client::new();

    // The recipient is registered first and its receipt served, so that the status report is
    // applied, not parked: then the report's own trace is the one that reaches the webhook.
    let (conversation, message) = (format!("CH{}", hex_id(1)), format!("IM{}", hex_id(2)));
    let sms = format!("SM{}", hex_id(3));
    let registration = serde_json::json!({ "events": [{
        "eventId": format!("reg-{sms}"),
        "occurredAt": "2026-12-01T10:00:00Z",
        "receiptRegistered": {
            "accountSid": DEMO_ACCOUNT, "conversationSid": conversation, "messageSid": message,
            "messageIndex": 0, "participantSid": format!("MB{}", hex_id(4)),
            "channel": "CHANNEL_SMS", "channelMessageId": sms, "expectedReceipts": 1,
        }
    }]});
    let registered = http
        .post(format!("{ingest}/v1/events"))
        .basic_auth(DEMO_ACCOUNT, Some(DEMO_TOKEN))
        .header("content-type", "application/json")
        .body(registration.to_string())
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success(), "{registered:?}");
    let connection = receipts::get::Connection {
        grpc: addresses.grpc.to_string(),
        account: DEMO_ACCOUNT.into(),
        token: DEMO_TOKEN.into(),
        json: false,
    };
    let mut client = receipts::get::connect(&connection).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let receipts = client
            .list_receipts(v1::ListReceiptsRequest {
                conversation_sid: conversation.clone(),
                message_sid: message.clone(),
                page_size: 10,
                page_token: String::new(),
            })
            .await
            .map(|r| r.into_inner().receipts)
            .unwrap_or_default();
        if !receipts.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the registration is served within a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The provider's status callback.
    let url = format!("{ingest}/v1/twilio/status");
    let form = vec![
        ("AccountSid".to_owned(), DEMO_ACCOUNT.to_owned()),
        ("MessageSid".to_owned(), sms.clone()),
        ("MessageStatus".to_owned(), "delivered".to_owned()),
    ];
    let signature = receipts_ingest::twilio::twilio_signature(DEMO_TOKEN, &url, &form);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&form)
        .finish();
    let reported = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(reported.status().is_success(), "{reported:?}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let received = loop {
        let received = receiver.received.lock().unwrap().clone();
        if received.len() >= 3 || tokio::time::Instant::now() >= deadline {
            break received;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        received.len(),
        3,
        "two failures and a success: {received:?}"
    );
    assert!(
        received.iter().all(|r| r.token == received[0].token),
        "one delivery: {received:?}"
    );
    let parents: Vec<(String, String)> = received
        .iter()
        .map(|r| traceparent_ids(r.traceparent.as_deref().expect("a traceparent header")))
        .collect();
    let trace_id = parents[0].0.clone();
    assert!(
        parents.iter().all(|(trace, _)| *trace == trace_id),
        "every attempt is in one trace: {parents:?}"
    );

    // Everything still batched goes to Jaeger now.
    {
        let telemetry = telemetry.clone();
        tokio::task::spawn_blocking(move || telemetry.flush())
            .await
            .unwrap();
    }
    let spans = jaeger::trace(&query, &trace_id, Duration::from_secs(30), |spans| {
        named(spans, "POST").len() >= 3 && named(spans, "deliver webhook").len() >= 3
    })
    .await;
    let names: Vec<&str> = spans.iter().map(|s| s.operation.as_str()).collect();
    let topics = receipts_bus::TopicNames::default();
    let (events, updates) = (&topics.delivery_events, &topics.receipt_updates);
    let by_id = |id: &str| spans.iter().find(|s| same_id(&s.span_id, id));
    let one = |operation: &str| -> &Span {
        let found = named(&spans, operation);
        assert_eq!(found.len(), 1, "one {operation:?} span in {names:?}");
        found[0]
    };

    // The ingest request is the root of the trace.
    let request = one("POST /v1/twilio/status");
    assert_eq!(request.parent(), None, "{request:?}");
    assert_eq!(request.tag_text("span.kind").as_deref(), Some("server"));
    assert_eq!(
        request.tag_text("http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        request.tag_text("http.route").as_deref(),
        Some("/v1/twilio/status")
    );
    assert_eq!(
        request.tag_text("http.response.status_code").as_deref(),
        Some("200")
    );
    let send = one(&format!("send {events}"));
    assert_eq!(send.parent(), Some(request.span_id.as_str()));
    assert_eq!(send.tag_text("span.kind").as_deref(), Some("producer"));

    // The projector continues the report's trace; the read model continues the update's.
    let projector = one(&format!("apply {events}"));
    assert_eq!(projector.parent(), Some(send.span_id.as_str()));
    // Records are keyed by the receipt: the account and the channel message id.
    let record_key = format!("{DEMO_ACCOUNT}/{sms}");
    assert_eq!(projector.tag_text("span.kind").as_deref(), Some("consumer"));
    for (key, value) in [
        ("messaging.system", "kafka"),
        ("messaging.operation.type", "process"),
        ("messaging.operation.name", "apply"),
        ("messaging.destination.name", events.as_str()),
        ("messaging.consumer.group.name", "receipts-projector"),
        ("messaging.kafka.message.key", record_key.as_str()),
    ] {
        assert_eq!(
            projector.tag_text(key).as_deref(),
            Some(value),
            "{key} of {projector:?}"
        );
    }
    assert!(projector.tag("messaging.kafka.offset").is_some());
    assert!(
        projector
            .tag("messaging.destination.partition.id")
            .is_some()
    );
    let read_model = one(&format!("apply {updates}"));
    assert_eq!(read_model.parent(), Some(projector.span_id.as_str()));
    assert_eq!(
        read_model
            .tag_text("messaging.kafka.message.key")
            .as_deref(),
        Some(conversation.as_str())
    );

    // Three attempts, the first a child of the projector's apply (the update it published),
    // each retry a child of the attempt before it; each webhook request a child of its attempt,
    // and the traceparent the receiver got names that request.
    let attempts = named(&spans, "deliver webhook");
    assert_eq!(attempts.len(), 3, "three attempts in {names:?}");
    assert_eq!(attempts[0].parent(), Some(projector.span_id.as_str()));
    assert_eq!(attempts[1].parent(), Some(attempts[0].span_id.as_str()));
    assert_eq!(attempts[2].parent(), Some(attempts[1].span_id.as_str()));
    let requests = named(&spans, "POST");
    assert_eq!(requests.len(), 3, "three webhook requests in {names:?}");
    for (n, (attempt, webhook)) in attempts.iter().zip(&requests).enumerate() {
        assert_eq!(
            attempt.tag_text("receipts.delivery.attempt"),
            Some(n.to_string())
        );
        assert_eq!(webhook.parent(), Some(attempt.span_id.as_str()));
        assert_eq!(webhook.tag_text("span.kind").as_deref(), Some("client"));
        let expected_status = if n < 2 { "500" } else { "200" };
        let expected_outcome = if n < 2 { "retry" } else { "delivered" };
        assert_eq!(
            attempt.tag_text("receipts.delivery.outcome").as_deref(),
            Some(expected_outcome),
            "{attempt:?}"
        );
        assert_eq!(
            webhook.tag_text("http.response.status_code").as_deref(),
            Some(expected_status),
            "{webhook:?}"
        );
        assert!(
            same_id(&parents[n].1, &webhook.span_id),
            "the traceparent of request {n} names its span: {parents:?} {webhook:?}"
        );
        assert!(by_id(&parents[n].1).is_some());
    }

    // The batch spans adopt no record's trace: the projector's batch is a trace of its own that
    // links to the report's.
    let batch = format!("process {events}");
    let batches = jaeger::search(&query, &service, &batch, Duration::from_secs(20), |spans| {
        links_to(spans, &batch, &trace_id)
    })
    .await;
    assert!(
        links_to(&batches, &batch, &trace_id),
        "a projector batch span links to the report's trace: {batches:?}"
    );
    assert!(
        batches.iter().all(|b| !same_id(&b.trace_id, &trace_id)),
        "no batch span is in the report's trace"
    );

    // The test's own gRPC calls are RPC server spans with their status: the served ones OK (0),
    // one with a wrong token UNAUTHENTICATED (16).
    let intruder = receipts::get::Connection {
        token: "not-the-token".into(),
        ..connection.clone()
    };
    let refused = receipts::get::connect(&intruder)
        .await
        .unwrap()
        .list_receipts(v1::ListReceiptsRequest {
            conversation_sid: conversation.clone(),
            message_sid: message.clone(),
            page_size: 10,
            page_token: String::new(),
        })
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
    {
        let telemetry = telemetry.clone();
        tokio::task::spawn_blocking(move || telemetry.flush())
            .await
            .unwrap();
    }
    let method = "receipts.v1.DeliveryQuery/ListReceipts";
    let status = |span: &Span| span.tag_text("rpc.grpc.status_code");
    let calls = jaeger::search(&query, &service, method, Duration::from_secs(20), |spans| {
        spans.iter().any(|s| status(s).as_deref() == Some("16"))
    })
    .await;
    let served = calls
        .iter()
        .find(|s| s.operation == method && status(s).as_deref() == Some("0"))
        .unwrap_or_else(|| panic!("a served {method} span: {calls:?}"));
    for (key, value) in [
        ("span.kind", "server"),
        ("rpc.system", "grpc"),
        ("rpc.service", "receipts.v1.DeliveryQuery"),
        ("rpc.method", "ListReceipts"),
    ] {
        assert_eq!(
            served.tag_text(key).as_deref(),
            Some(value),
            "{key} of {served:?}"
        );
    }
    assert!(
        calls.iter().any(|s| status(s).as_deref() == Some("16")),
        "the refused call's span says UNAUTHENTICATED: {calls:?}"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), dev)
        .await
        .expect("receipts dev stops within a minute")
        .unwrap()
        .unwrap();
}

fn links_to(spans: &[Span], operation: &str, trace_id: &str) -> bool {
    spans.iter().any(|span| {
        span.operation == operation
            && span
                .references
                .iter()
                .any(|(kind, trace, _)| kind == "FOLLOWS_FROM" && same_id(trace, trace_id))
    })
}
