//! The webhook subscriber: a local HTTP endpoint that records every `onDeliveryUpdated` request
//! (idempotency token, receipt sid, version header, status) and what it answered, counts the
//! requests in flight, and can go down (its port closed), answer 500 and 429 in turn, or 200.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const ANSWER_OK: u8 = 0;
const ANSWER_FAILING: u8 = 1;
/// How long each answer takes.
const ANSWER_DELAY: Duration = Duration::from_millis(5);

/// One receipt version as the receiver saw it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Delivered {
    pub(crate) receipt_sid: String,
    pub(crate) version: u64,
}

#[derive(Default)]
pub(crate) struct Record {
    pub(crate) requests: usize,
    in_flight: usize,
    peak_in_flight: usize,
    /// 2xx answers per idempotency token.
    pub(crate) ok_by_token: HashMap<String, u32>,
    /// When each token was answered 2xx.
    pub(crate) ok_answers: HashMap<String, Vec<Instant>>,
    /// Versions answered 2xx, per receipt sid.
    pub(crate) ok_versions: HashMap<String, BTreeSet<u64>>,
    /// Status words answered 2xx, per (receipt, version).
    pub(crate) ok_status: HashMap<Delivered, String>,
    /// Requests without the headers or parameters every delivery carries.
    pub(crate) malformed: usize,
    /// The same token seen for two different (receipt, version) pairs.
    pub(crate) token_clashes: usize,
    token_owner: HashMap<String, Delivered>,
    failing_answers: u64,
}

impl Record {
    /// Deliveries answered 2xx more than once (by token), in all.
    pub(crate) fn repeated(&self) -> u64 {
        self.ok_by_token
            .values()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum()
    }
}

pub(crate) struct Receiver {
    address: SocketAddr,
    record: Arc<Mutex<Record>>,
    answer: Arc<AtomicU8>,
    server: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Receiver {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let mut receiver = Receiver {
            address: "127.0.0.1:0".parse()?,
            record: Arc::default(),
            answer: Arc::new(AtomicU8::new(ANSWER_OK)),
            server: None,
        };
        receiver.up().await?;
        Ok(receiver)
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hooks/delivery", self.address)
    }

    pub(crate) fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.record().in_flight
    }

    /// Requests received so far.
    pub(crate) fn requests(&self) -> usize {
        self.record().requests
    }

    /// Starts a new window for [`Receiver::peak_in_flight`].
    pub(crate) fn reset_peak(&self) {
        let mut record = self.record();
        record.peak_in_flight = record.in_flight;
    }

    /// The most requests in flight at once since the last [`Receiver::reset_peak`].
    pub(crate) fn peak_in_flight(&self) -> usize {
        self.record().peak_in_flight
    }

    /// Answers 200 from now on.
    pub(crate) fn answer_ok(&self) {
        self.answer.store(ANSWER_OK, Ordering::SeqCst);
    }

    /// Answers 500 and 429 (`Retry-After: 1`) in turn from now on.
    pub(crate) fn answer_failing(&self) {
        self.answer.store(ANSWER_FAILING, Ordering::SeqCst);
    }

    /// Closes the port: connections are refused until [`Receiver::up`].
    pub(crate) async fn down(&mut self) {
        if let Some((stop, server)) = self.server.take() {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }

    /// Listens again, on the same port once it had one.
    pub(crate) async fn up(&mut self) -> anyhow::Result<()> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(self.address)?;
        let listener = socket.listen(1024)?;
        self.address = listener.local_addr()?;
        let (record, answer) = (self.record.clone(), self.answer.clone());
        let app = Router::new().fallback(any(move |headers: HeaderMap, body: String| {
            let (record, answer) = (record.clone(), answer.clone());
            async move {
                let _in_flight = InFlight::arrive(record.clone());
                // A receiver takes a moment to answer, so attempts are really in flight.
                tokio::time::sleep(ANSWER_DELAY).await;
                receive(&record, &answer, &headers, &body)
            }
        }));
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
        self.server = Some((stop, server));
        Ok(())
    }
}

/// Counts a request in flight from its arrival until its handler ends, answered or dropped with
/// its connection.
struct InFlight(Arc<Mutex<Record>>);

impl InFlight {
    fn arrive(record: Arc<Mutex<Record>>) -> Self {
        {
            let mut r = record.lock().unwrap_or_else(PoisonError::into_inner);
            r.requests += 1;
            r.in_flight += 1;
            r.peak_in_flight = r.peak_in_flight.max(r.in_flight);
        }
        InFlight(record)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .in_flight -= 1;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some((stop, server)) = self.server.take() {
            stop.cancel();
            server.abort();
        }
    }
}

fn receive(record: &Mutex<Record>, answer: &AtomicU8, headers: &HeaderMap, body: &str) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let params: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let token = header("i-twilio-idempotency-token");
    let version = header("x-receipts-receipt-version").and_then(|v| v.parse::<u64>().ok());
    let sid = params.get("DeliveryReceiptSid").cloned();
    let status = params.get("Status").cloned().unwrap_or_default();

    let mut record = record.lock().unwrap_or_else(PoisonError::into_inner);
    let (Some(token), Some(version), Some(receipt_sid)) = (token, version, sid) else {
        record.malformed += 1;
        return StatusCode::BAD_REQUEST.into_response();
    };
    if answer.load(Ordering::SeqCst) == ANSWER_FAILING {
        record.failing_answers += 1;
        return if record.failing_answers.is_multiple_of(2) {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        } else {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
        };
    }
    let delivered = Delivered {
        receipt_sid,
        version,
    };
    match record.token_owner.get(&token) {
        Some(owner) if *owner != delivered => record.token_clashes += 1,
        Some(_) => {}
        None => {
            record.token_owner.insert(token.clone(), delivered.clone());
        }
    }
    record
        .ok_answers
        .entry(token.clone())
        .or_default()
        .push(Instant::now());
    *record.ok_by_token.entry(token).or_default() += 1;
    record
        .ok_versions
        .entry(delivered.receipt_sid.clone())
        .or_default()
        .insert(version);
    record.ok_status.insert(delivered, status);
    StatusCode::OK.into_response()
}
