//! The RPC server span of every gRPC call, named and attributed as the semantic conventions'
//! RPC spans: [`server_span`] makes it (for tonic's `Server::trace_fn`), [`GrpcStatusLayer`]
//! records the call's `rpc.grpc.status_code` — from the response headers of a trailers-only
//! answer (how an error is sent), or from the trailers at the end of the body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::propagation::extract_headers;

/// The span of one call: `{service}/{method}`, continuing the caller's trace when the call's
/// metadata carries one.
pub fn server_span<B>(request: &Request<B>) -> tracing::Span {
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc request",
        otel.name = path,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        network.protocol.version = "2",
    );
    let parent = extract_headers(request.headers());
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// Records the `grpc-status` in `headers`, if any, on `span`. Server errors by the conventions'
/// table (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS) also mark
/// the span as failed.
fn record_status(span: &tracing::Span, headers: &HeaderMap) -> bool {
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return false;
    };
    span.record("rpc.grpc.status_code", code);
    if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
        span.record("error.type", code);
        span.record("otel.status_code", "error");
    }
    true
}

/// A tower layer for tonic's `Server::layer` that records each call's status on its span.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcStatusLayer;

impl<S> tower::Layer<S> for GrpcStatusLayer {
    type Service = GrpcStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcStatus(inner)
    }
}

/// The service [`GrpcStatusLayer`] makes.
#[derive(Debug, Clone)]
pub struct GrpcStatus<S>(S);

impl<S, B, R> tower::Service<Request<B>> for GrpcStatus<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<StatusBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let call = self.0.call(request);
        Box::pin(async move {
            // Polled inside the call's span (tonic enters it around the whole call).
            let span = tracing::Span::current();
            let response = call.await?;
            let recorded = record_status(&span, response.headers());
            Ok(response.map(|inner| StatusBody {
                inner,
                span: (!recorded).then_some(span),
            }))
        })
    }
}

/// A response body that records the status of the trailers ending it.
#[derive(Debug)]
pub struct StatusBody<B> {
    inner: B,
    /// `None` once a status is recorded.
    span: Option<tracing::Span>,
}

impl<B: Body + Unpin> Body for StatusBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let (Some(trailers), Some(span)) = (frame.trailers_ref(), &this.span)
            && record_status(span, trailers)
        {
            this.span = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
