//! The SSRF guard against hostile names and environments: a name that rebinds from an allowed
//! address to a refused one, proxies set in the environment, and the URL the signature covers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use receipts_proto::v1;
use receipts_webhook::reqwest_dns::{Addrs, Name, Resolve, Resolving};
use receipts_webhook::{
    AddressPolicy, AttemptOutcome, DeliveryPayload, Method, WebhookClient, WebhookRequest,
};

/// Answers each lookup with the next address of its list (the last one from then on), the way
/// a rebinding DNS server answers a short-TTL name.
struct Rebinding {
    answers: Vec<SocketAddr>,
    calls: AtomicUsize,
}

impl Resolve for Rebinding {
    fn resolve(&self, _name: Name) -> Resolving {
        let i = self.calls.fetch_add(1, Ordering::SeqCst);
        let addr = self.answers[i.min(self.answers.len() - 1)];
        Box::pin(async move {
            let addrs: Addrs = Box::new(std::iter::once(addr));
            Ok(addrs)
        })
    }
}

type Seen = Arc<Mutex<Vec<(HeaderMap, String, String)>>>;

/// A receiver that closes every connection after answering, so each attempt connects anew.
async fn receiver() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let kept = seen.clone();
    let app = Router::new().fallback(any(move |uri: Uri, headers: HeaderMap, body: String| {
        let kept = kept.clone();
        async move {
            kept.lock().unwrap().push((headers, uri.to_string(), body));
            (StatusCode::NO_CONTENT, [("connection", "close")]).into_response()
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, seen)
}

fn request(url: String) -> WebhookRequest {
    let receipt = v1::Receipt {
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
        date_created: Some(pbjson_types::Timestamp {
            seconds: 1_584_989_117,
            nanos: 0,
        }),
        date_updated: Some(pbjson_types::Timestamp {
            seconds: 1_584_989_120,
            nanos: 0,
        }),
        version: 2,
        ..Default::default()
    };
    WebhookRequest {
        url,
        method: Method::Post,
        payload: DeliveryPayload::of(&receipts_domain::Receipt::try_from(&receipt).unwrap())
            .unwrap(),
        auth_token: "secret-token".into(),
        idempotency_token: "token-1".into(),
        signing_secrets: Vec::new(),
        receipt_version: 2,
    }
}

/// Only the receiver's own address stands for "public" here: the tests reach nothing beyond
/// 127.0.0.1, and 127.0.0.2 stands for a private address the tenant must not reach.
fn receiver_only() -> AddressPolicy {
    AddressPolicy::allowing(vec!["127.0.0.1/32".parse().unwrap()])
}

#[tokio::test]
async fn a_name_that_rebinds_to_a_refused_address_is_refused_at_connect() {
    let (address, seen) = receiver().await;
    let private: SocketAddr = format!("127.0.0.2:{}", address.port()).parse().unwrap();
    let resolver = Arc::new(Rebinding {
        answers: vec![address, private],
        calls: AtomicUsize::new(0),
    });
    let client =
        WebhookClient::with_resolver(receiver_only(), Duration::from_secs(5), resolver.clone())
            .unwrap();
    let url = format!("http://hooks.tenant.example:{}/ok", address.port());
    let first = client.send(&request(url.clone())).await;
    assert_eq!(first.outcome, AttemptOutcome::Delivered { status: 204 });
    let second = client.send(&request(url)).await;
    match second.outcome {
        AttemptOutcome::Reject { reason } => {
            assert!(reason.contains("127.0.0.2"), "{reason}");
            assert!(reason.contains("not allow-listed"), "{reason}");
        }
        other => panic!("the rebound name must be refused, got {other:?}"),
    }
    assert_eq!(
        resolver.calls.load(Ordering::SeqCst),
        2,
        "resolved at each connect"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the first attempt arrived"
    );
}

#[tokio::test]
async fn the_signature_covers_the_url_as_sent() {
    let (address, seen) = receiver().await;
    let resolver = Arc::new(Rebinding {
        answers: vec![address],
        calls: AtomicUsize::new(0),
    });
    let client =
        WebhookClient::with_resolver(receiver_only(), Duration::from_secs(5), resolver).unwrap();
    // Mixed-case host and no path: sent as `http://hooks.tenant.example:PORT/`.
    let configured = format!("http://Hooks.Tenant.EXAMPLE:{}", address.port());
    let attempt = client.send(&request(configured)).await;
    assert_eq!(attempt.outcome, AttemptOutcome::Delivered { status: 204 });
    let seen = seen.lock().unwrap();
    let (headers, uri, body) = &seen[0];
    let host = headers["host"].to_str().unwrap();
    let called = format!("http://{host}{uri}");
    assert_eq!(
        called,
        format!("http://hooks.tenant.example:{}/", address.port())
    );
    let params: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let expected = receipts_webhook::twilio::signature("secret-token", &called, &params);
    assert_eq!(headers["x-twilio-signature"].to_str().unwrap(), expected);
}

const PROXY_CHILD: &str = "guard::with_proxies_in_the_environment_the_guard_still_decides";

/// Proxies come from the environment when the client is built, so the check runs in a child
/// process of this test binary with `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` pointing at a
/// listener of this test: it must never be connected to.
#[test]
fn environment_proxies_are_not_used() {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", PROXY_CHILD, "--ignored", "--nocapture"])
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("HTTPS_PROXY", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        proxy.accept().is_err(),
        "the webhook went through the environment's proxy"
    );
}

#[tokio::test]
#[ignore = "run by environment_proxies_are_not_used, in a child process with proxies set"]
async fn with_proxies_in_the_environment_the_guard_still_decides() {
    assert!(std::env::var("HTTP_PROXY").is_ok(), "run with a proxy set");
    let resolver = Arc::new(Rebinding {
        answers: vec!["127.0.0.2:80".parse().unwrap()],
        calls: AtomicUsize::new(0),
    });
    // The proxy's own address is allowed: only the guard, judging the target, refuses.
    let client =
        WebhookClient::with_resolver(receiver_only(), Duration::from_secs(5), resolver).unwrap();
    let attempt = client
        .send(&request("http://metadata.internal/latest".to_owned()))
        .await;
    match attempt.outcome {
        AttemptOutcome::Reject { reason } => assert!(reason.contains("127.0.0.2"), "{reason}"),
        other => panic!("the target must be judged by the guard, got {other:?}"),
    }
}

#[test]
fn a_request_prints_no_token_secret_or_credentials() {
    let mut request =
        request("https://user:url-password@hooks.example.com/in?key=url-token".into());
    request.auth_token = "the-auth-token".into();
    request.signing_secrets = vec!["whsec_the-signing-secret".into()];
    let printed = format!("{request:?}");
    for secret in [
        "the-auth-token",
        "the-signing-secret",
        "url-password",
        "url-token",
    ] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
    assert!(printed.contains("hooks.example.com/in"), "{printed}");
}

#[tokio::test]
async fn failure_reasons_do_not_name_the_url() {
    // A port nothing listens on: the connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let client = WebhookClient::new(receiver_only(), Duration::from_secs(5)).unwrap();
    let attempt = client
        .send(&request(format!(
            "http://user:url-password@127.0.0.1:{port}/in?token=url-token"
        )))
        .await;
    match attempt.outcome {
        AttemptOutcome::Retry { reason, .. } => {
            assert!(!reason.contains("url-password"), "{reason}");
            assert!(!reason.contains("url-token"), "{reason}");
        }
        other => panic!("a refused connection is retried, got {other:?}"),
    }
}
