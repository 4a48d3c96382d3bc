//! One attempt against a real socket: what is sent, and how answers, redirects, hangs and
//! private addresses end.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use receipts_proto::v1;
use receipts_webhook::{
    AddressPolicy, AttemptOutcome, DeliveryPayload, Method, WebhookClient, WebhookRequest,
};

type Seen = Arc<Mutex<Vec<(HeaderMap, String, String)>>>;

async fn receiver(answer: fn(&str) -> axum::response::Response) -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let kept = seen.clone();
    let app = Router::new().fallback(any(move |uri: Uri, headers: HeaderMap, body: String| {
        let kept = kept.clone();
        async move {
            let path = uri.path().to_owned();
            kept.lock().unwrap().push((headers, uri.to_string(), body));
            answer(&path)
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, seen)
}

fn answer(path: &str) -> axum::response::Response {
    match path {
        "/ok" => StatusCode::NO_CONTENT.into_response(),
        "/redirect" => (StatusCode::FOUND, [("location", "/ok")]).into_response(),
        "/busy" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "3")]).into_response(),
        "/gone" => StatusCode::GONE.into_response(),
        "/bad" => StatusCode::BAD_REQUEST.into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn receipt() -> v1::Receipt {
    v1::Receipt {
        sid: format!("DY{:032x}", 1),
        account_sid: format!("AC{:032x}", 1),
        conversation_sid: format!("CH{:032x}", 1),
        message_sid: format!("IM{:032x}", 1),
        participant_sid: format!("MB{:032x}", 1),
        channel: v1::Channel::Sms.into(),
        channel_message_id: format!("SM{:032x}", 1),
        channel_message_sid: format!("SM{:032x}", 1),
        status: v1::DeliveryStatus::Delivered.into(),
        raw_status: "delivered".into(),
        source: v1::StatusSource::TwilioMessaging.into(),
        provider_timestamp: Some(pbjson_types::Timestamp {
            seconds: 1_584_989_120,
            nanos: 0,
        }),
        date_created: Some(pbjson_types_timestamp(1_584_989_117)),
        date_updated: Some(pbjson_types_timestamp(1_584_989_120)),
        version: 2,
        ..Default::default()
    }
}

fn pbjson_types_timestamp(seconds: i64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp { seconds, nanos: 0 }
}

fn request(url: String, method: Method) -> WebhookRequest {
    WebhookRequest {
        url,
        method,
        payload: DeliveryPayload::of(&receipts_domain::Receipt::try_from(&receipt()).unwrap())
            .unwrap(),
        auth_token: "secret-token".into(),
        idempotency_token: "token-1".into(),
        signing_secrets: vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()],
        receipt_version: 2,
    }
}

fn loopback_client(timeout: Duration) -> WebhookClient {
    let policy = AddressPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]);
    WebhookClient::new(policy, timeout).unwrap()
}

#[tokio::test]
async fn a_post_carries_the_form_and_the_headers() {
    let (address, seen) = receiver(answer).await;
    let attempt = loopback_client(Duration::from_secs(5))
        .send(&request(format!("http://{address}/ok"), Method::Post))
        .await;
    assert_eq!(attempt.outcome, AttemptOutcome::Delivered { status: 204 });
    let seen = seen.lock().unwrap();
    let (headers, _, body) = &seen[0];
    assert!(
        body.starts_with("EventType=onDeliveryUpdated&AccountSid=AC"),
        "{body}"
    );
    assert!(body.contains("&Status=delivered&ErrorCode=0&DateCreated=2020-03-23T18%3A45%3A17Z"));
    assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(headers["i-twilio-idempotency-token"], "token-1");
    assert_eq!(headers["webhook-id"], "token-1");
    assert!(
        headers["webhook-signature"]
            .to_str()
            .unwrap()
            .starts_with("v1,")
    );
    assert!(headers.contains_key("x-twilio-signature"));
}

#[tokio::test]
async fn a_get_puts_the_params_in_the_query() {
    let (address, seen) = receiver(answer).await;
    let attempt = loopback_client(Duration::from_secs(5))
        .send(&request(format!("http://{address}/ok?x=1"), Method::Get))
        .await;
    assert_eq!(attempt.outcome.label(), "delivered");
    let seen = seen.lock().unwrap();
    let (_, uri, body) = &seen[0];
    assert!(
        uri.starts_with("/ok?x=1&EventType=onDeliveryUpdated&"),
        "{uri}"
    );
    assert!(body.is_empty());
}

#[tokio::test]
async fn answers_are_classified_and_redirects_not_followed() {
    let (address, seen) = receiver(answer).await;
    let client = loopback_client(Duration::from_secs(5));
    let outcome = |path: &'static str| {
        let client = client.clone();
        async move {
            client
                .send(&request(format!("http://{address}{path}"), Method::Post))
                .await
                .outcome
        }
    };
    assert_eq!(outcome("/redirect").await.label(), "rejected");
    assert_eq!(
        outcome("/busy").await,
        AttemptOutcome::Retry {
            reason: "HTTP 429".into(),
            retry_after: Some(Duration::from_secs(3))
        }
    );
    assert_eq!(outcome("/gone").await, AttemptOutcome::Gone);
    assert_eq!(outcome("/bad").await.label(), "rejected");
    assert_eq!(outcome("/fail").await.label(), "retry");
    // The redirect's target was never requested.
    let paths: Vec<String> = seen.lock().unwrap().iter().map(|s| s.1.clone()).collect();
    assert_eq!(paths, ["/redirect", "/busy", "/gone", "/bad", "/fail"]);
}

#[tokio::test]
async fn hangs_time_out_and_dead_ports_are_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging = listener.local_addr().unwrap();
    // Accepts, never answers.
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            held.push(listener.accept().await.unwrap());
        }
    });
    let client = loopback_client(Duration::from_millis(300));
    let attempt = client
        .send(&request(format!("http://{hanging}/"), Method::Post))
        .await;
    match attempt.outcome {
        AttemptOutcome::Retry { reason, .. } => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let attempt = client
        .send(&request(format!("http://{closed}/"), Method::Post))
        .await;
    assert_eq!(attempt.outcome.label(), "retry");
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allow_listed() {
    let (address, seen) = receiver(answer).await;
    let strict = WebhookClient::new(AddressPolicy::default(), Duration::from_secs(5)).unwrap();
    for url in [
        format!("http://{address}/ok"),
        format!("http://localhost:{}/ok", address.port()),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[::1]/".to_owned(),
        "http://10.0.0.1/".to_owned(),
    ] {
        match strict
            .send(&request(url.clone(), Method::Post))
            .await
            .outcome
        {
            AttemptOutcome::Reject { reason } => {
                assert!(reason.contains("not allow-listed"), "{url}: {reason}")
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the receiver"
    );
    let allowed = loopback_client(Duration::from_secs(5));
    let attempt = allowed
        .send(&request(
            format!("http://localhost:{}/ok", address.port()),
            Method::Post,
        ))
        .await;
    assert_eq!(attempt.outcome.label(), "delivered");
}
