//! The HTTP server of the public endpoints (ingest, the REST facade): an axum router behind the
//! limits a server facing the internet needs, so slow and abusive clients cannot exhaust it.
//!
//! - **Header read timeout** (`header_read_timeout_ms`): a connection must deliver a request's
//!   headers within it, counted from the connection's start or the end of its previous response,
//!   so an idle keep-alive connection and a slowloris client trickling header bytes are closed
//!   alike.
//! - **Body read timeout** (`body_read_timeout_ms`): the whole body must arrive within it,
//!   counted from the headers — a total deadline, not one per chunk, so a body dripped a byte at a
//!   time cannot hold a request open either. A body that misses it fails with [`BodyTimedOut`]
//!   in the handler's extractor; whatever the handler answers then, the client gets the
//!   service's 408 ([`ErrorAnswers::body_timed_out`]) and the connection is closed.
//! - **Connections** (`max_connections`): beyond the cap a new connection is answered
//!   `503 Service Unavailable` with `Retry-After` and closed at once.
//! - **Requests in flight** (`max_requests_in_flight`): beyond the cap a request is shed with
//!   the service's own 503 body and `Retry-After` before its body is read, so memory is bounded
//!   by the cap times the body limit, never by the offered load.
//!
//! Shutdown stops accepting, closes idle connections, and lets requests in flight finish.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use axum::response::Response;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::load_shed::error::Overloaded;
use tracing::{debug, warn};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::{ConfigError, Validate};
use crate::metrics::Metrics;

/// The limits of one public HTTP server; embedded in a service's configuration as `http`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpLimits {
    /// A request's headers must arrive within this, from the connection's start or the end of
    /// its previous response; otherwise the connection is closed.
    pub header_read_timeout_ms: u64,
    /// A request's whole body must arrive within this, from its headers.
    pub body_read_timeout_ms: u64,
    /// Open connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// Requests being handled at once; more are answered 503 before their body is read.
    pub max_requests_in_flight: usize,
    /// `Retry-After` of those 503 answers.
    pub retry_after_secs: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            max_connections: 4_096,
            max_requests_in_flight: 512,
            retry_after_secs: 1,
        }
    }
}

impl Validate for HttpLimits {
    fn validate(&self) -> Result<(), ConfigError> {
        let day = 86_400_000;
        if !(1..=day).contains(&self.header_read_timeout_ms) {
            return Err(ConfigError::invalid(
                "header_read_timeout_ms",
                "must be between 1 and 86400000",
            ));
        }
        if !(1..=day).contains(&self.body_read_timeout_ms) {
            return Err(ConfigError::invalid(
                "body_read_timeout_ms",
                "must be between 1 and 86400000",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "max_connections",
                "must be at least 1",
            ));
        }
        if self.max_requests_in_flight == 0 {
            return Err(ConfigError::invalid(
                "max_requests_in_flight",
                "must be at least 1",
            ));
        }
        if self.retry_after_secs > 86_400 {
            return Err(ConfigError::invalid(
                "retry_after_secs",
                "must be at most 86400",
            ));
        }
        Ok(())
    }
}

/// The body of a request did not arrive within `body_read_timeout_ms`. Handlers find it in the
/// source chain of their body extractor's rejection (see [`is_body_timeout`]).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// Whether `error`, or one of its sources, is a [`BodyTimedOut`].
pub fn is_body_timeout(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A request body with a total deadline; `timed_out` tells the server it fired.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    timed_out: Arc<AtomicBool>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.limit)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the server counts, registered under a prefix of the caller's (`ingest_http`,
/// `rest_http`), so several servers can share one registry.
#[derive(Debug, Clone, Default)]
pub struct ServerMetrics {
    connections_open: Gauge,
    connections_refused: Counter,
    header_timeouts: Counter,
    requests_shed: Counter,
}

impl ServerMetrics {
    pub fn register(metrics: &Metrics, prefix: &str) -> Self {
        let this = ServerMetrics::default();
        metrics.register(
            format!("{prefix}_connections_open"),
            "open HTTP connections",
            this.connections_open.clone(),
        );
        metrics.register(
            format!("{prefix}_connections_refused"),
            "connections answered 503 and closed because max_connections were open",
            this.connections_refused.clone(),
        );
        metrics.register(
            format!("{prefix}_header_timeouts"),
            "connections closed because a request's headers did not arrive within header_read_timeout_ms",
            this.header_timeouts.clone(),
        );
        metrics.register(
            format!("{prefix}_requests_shed"),
            "requests answered 503 because max_requests_in_flight were being handled",
            this.requests_shed.clone(),
        );
        this
    }
}

/// The answers the server itself gives, in the service's error format.
#[derive(Debug, Clone, Copy)]
pub struct ErrorAnswers {
    /// A request shed because too many are in flight: a 503 (the server adds `Retry-After`).
    pub overloaded: fn() -> Response,
    /// A request whose body did not arrive within the body read timeout: a 408.
    pub body_timed_out: fn() -> Response,
}

/// Serves `router` on `listener` under `limits` until `shutdown` is cancelled, then lets
/// requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &HttpLimits,
    answers: ErrorAnswers,
    metrics: ServerMetrics,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let in_flight = Arc::new(Semaphore::new(limits.max_requests_in_flight));
    let retry_after = HeaderValue::from(limits.retry_after_secs);
    let body_limit = Duration::from_millis(limits.body_read_timeout_ms);
    // Every routed request gets its HTTP server span (and continues a trace it carries).
    let router = router.route_layer(axum::middleware::from_fn(
        crate::telemetry::propagation::server_span,
    ));
    let service = tower::ServiceBuilder::new()
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(in_flight))
        .service(router);
    let handle = {
        let retry_after = retry_after.clone();
        let shed_count = metrics.requests_shed.clone();
        move |request: Request<Incoming>| {
            let service = service.clone();
            let retry_after = retry_after.clone();
            let shed_count = shed_count.clone();
            async move {
                let timed_out = Arc::new(AtomicBool::new(false));
                let request = request.map(|inner| {
                    Body::new(DeadlineBody {
                        inner,
                        deadline: Box::pin(tokio::time::sleep(body_limit)),
                        limit: body_limit,
                        timed_out: timed_out.clone(),
                    })
                });
                let response = match service.oneshot(request).await {
                    // The handler saw its body fail, and answered as it answers a bad body.
                    Ok(_) if timed_out.load(Ordering::Relaxed) => (answers.body_timed_out)(),
                    Ok(response) => response,
                    Err(error) => {
                        if !error.is::<Overloaded>() {
                            warn!(error = %error, "request failed in the server stack");
                        }
                        debug!("request shed: too many in flight");
                        shed_count.inc();
                        let mut response = (answers.overloaded)();
                        response
                            .headers_mut()
                            .insert(header::RETRY_AFTER, retry_after);
                        response
                    }
                };
                Ok::<_, Infallible>(response)
            }
        }
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let refusal = Arc::new(format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: {}\r\nconnection: close\r\ncontent-length: 22\r\n\r\ntoo many connections\r\n",
        limits.retry_after_secs
    ));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener itself is fine, so wait a moment and go on.
                    warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            debug!(%peer, "connection refused: too many open");
            metrics.connections_refused.inc();
            let refusal = refusal.clone();
            tokio::spawn(async move {
                let mut stream = stream;
                let write = stream.write_all(refusal.as_bytes());
                let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper::service::service_fn(handle.clone());
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        let metrics = metrics.clone();
        metrics.connections_open.inc();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                if error.is_timeout() {
                    metrics.header_timeouts.inc();
                }
                debug!(%peer, %error, "connection closed with an error");
            }
            metrics.connections_open.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

impl fmt::Debug for DeadlineBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineBody")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_mistakes_name_their_key() {
        assert!(HttpLimits::default().validate().is_ok());
        let limits = HttpLimits {
            header_read_timeout_ms: 0,
            ..HttpLimits::default()
        };
        assert_eq!(
            limits.validate().unwrap_err().within("http").key(),
            Some("http.header_read_timeout_ms")
        );
        let limits = HttpLimits {
            max_requests_in_flight: 0,
            ..HttpLimits::default()
        };
        assert_eq!(
            limits.validate().unwrap_err().key(),
            Some("max_requests_in_flight")
        );
    }
}
