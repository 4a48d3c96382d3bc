//! A local webhook receiver ([`Sink`]) that records every request and answers as a test tells it
//! (a status, `Retry-After`, a hang until released, a pause), and independent checks of the two
//! signatures webhooks carry, written from the specifications rather than from the sender's code.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use tokio::sync::watch;

/// One request a sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Scheme, host, path and query, as a verifier rebuilds the URL that was signed.
    pub url: String,
    pub headers: HeaderMap,
    pub body: String,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing"))
            .to_str()
            .unwrap()
    }

    /// The webhook parameters: the form body, or the query string of a GET.
    pub fn params(&self) -> Vec<(String, String)> {
        let source = if self.method == "GET" {
            self.url.split_once('?').map_or("", |(_, q)| q).to_owned()
        } else {
            self.body.clone()
        };
        form_urlencoded::parse(source.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    pub fn param(&self, name: &str) -> String {
        self.params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("parameter {name} is missing"))
    }

    pub fn token(&self) -> String {
        self.header("i-twilio-idempotency-token").to_owned()
    }
}

/// What a sink answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    RetryAfter(u16, u64),
    /// Never answers until the sink is released, then 200.
    Hang,
    /// Never answers until the sink is released, then this status.
    HangThen(u16),
    /// This status after a pause.
    After(Duration, u16),
}

type Policy = Arc<dyn Fn(&Received, usize) -> Answer + Send + Sync>;

/// A local webhook receiver.
pub struct Sink {
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    count: watch::Receiver<usize>,
    policy: Arc<Mutex<Policy>>,
    released: watch::Sender<bool>,
    /// The most requests received and not answered yet there ever were at once.
    max_in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("address", &self.address)
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

impl Sink {
    pub async fn start(
        policy: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Sink::serve(listener, policy)
    }

    /// A sink on `port`, which must be free.
    pub async fn start_on(
        port: u16,
        policy: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        Sink::serve(listener, policy)
    }

    fn serve(
        listener: tokio::net::TcpListener,
        policy: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let address = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let (count_tx, count) = watch::channel(0);
        let policy: Arc<Mutex<Policy>> = Arc::new(Mutex::new(Arc::new(policy)));
        let (released, released_rx) = watch::channel(false);
        let (kept, rules) = (received.clone(), policy.clone());
        let count_tx = Arc::new(count_tx);
        let in_flight: Arc<AtomicUsize> = Arc::default();
        let max_in_flight: Arc<AtomicUsize> = Arc::default();
        let (busy, most) = (in_flight.clone(), max_in_flight.clone());
        let app = Router::new().fallback(any(
            move |method: HttpMethod, uri: Uri, headers: HeaderMap, body: String| {
                let (kept, rules, count_tx) = (kept.clone(), rules.clone(), count_tx.clone());
                let (busy, most) = (busy.clone(), most.clone());
                let mut released = released_rx.clone();
                async move {
                    let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let host = headers
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let request = Received {
                        method: method.to_string(),
                        url: format!("http://{host}{uri}"),
                        headers,
                        body,
                        at: Instant::now(),
                    };
                    let answer = {
                        let mut kept = kept.lock().unwrap();
                        let policy = rules.lock().unwrap().clone();
                        let answer = policy(&request, kept.len());
                        kept.push(request);
                        count_tx.send_replace(kept.len());
                        answer
                    };
                    let response = respond(answer, &mut released).await;
                    busy.fetch_sub(1, Ordering::SeqCst);
                    response
                }
            },
        ));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Sink {
            address,
            received,
            count,
            policy,
            released,
            max_in_flight,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.address.port())
    }

    pub fn answer_with(&self, policy: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static) {
        *self.policy.lock().unwrap() = Arc::new(policy);
    }

    /// Lets every hanging request answer 200.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The most requests the sink held unanswered at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until `n` requests arrived (a minute at most) and returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let mut count = self.count.clone();
        tokio::time::timeout(Duration::from_secs(60), count.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} requests arrived", self.count()))
            .unwrap();
        self.received()
    }

    /// Waits until the requests answered 2xx carry `n` distinct idempotency tokens.
    pub async fn wait_for_delivered(
        &self,
        n: usize,
        delivered: impl Fn(&Received) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut tokens: Vec<String> = self
                .received()
                .iter()
                .filter(|r| delivered(r))
                .map(Received::token)
                .collect();
            tokens.sort();
            tokens.dedup();
            if tokens.len() >= n {
                return tokens;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} deliveries got through",
                tokens.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn respond(answer: Answer, released: &mut watch::Receiver<bool>) -> Response {
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Answer::RetryAfter(code, secs) => (
            StatusCode::from_u16(code).unwrap(),
            [("retry-after", secs.to_string())],
        )
            .into_response(),
        Answer::Hang => {
            let _ = released.wait_for(|r| *r).await;
            StatusCode::OK.into_response()
        }
        Answer::After(pause, code) => {
            tokio::time::sleep(pause).await;
            StatusCode::from_u16(code).unwrap().into_response()
        }
        Answer::HangThen(code) => {
            let _ = released.wait_for(|r| *r).await;
            StatusCode::from_u16(code).unwrap().into_response()
        }
    }
}

/// An independent `X-Twilio-Signature` check, written from contract §6a: the URL, then every
/// parameter as name + value in sorted order, HMAC-SHA1 with the auth token, base64.
pub fn twilio_signature_is_valid(request: &Received, auth_token: &str) -> bool {
    let mut signed = request.url.clone();
    if request.method != "GET" {
        let mut params = request.params();
        params.sort();
        params.dedup();
        for (name, value) in params {
            signed.push_str(&name);
            signed.push_str(&value);
        }
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    expected == request.header("x-twilio-signature")
}

/// An independent Standard Webhooks check: each secret's HMAC-SHA256 of `id.timestamp.body`
/// appears among the `v1,` signatures.
pub fn standard_signatures_are_valid(request: &Received, secrets: &[&str]) -> bool {
    let id = request.header("webhook-id");
    let timestamp = request.header("webhook-timestamp");
    let offered: Vec<&str> = request.header("webhook-signature").split(' ').collect();
    secrets.iter().all(|secret| {
        let key = STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{timestamp}.{}", request.body).as_bytes());
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        offered.contains(&expected.as_str())
    })
}
