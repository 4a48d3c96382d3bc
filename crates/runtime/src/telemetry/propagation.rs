//! W3C trace context (`traceparent`, `tracestate`) over HTTP, and the server span of every
//! request to a public HTTP endpoint.
//!
//! The propagator is W3C Trace Context itself, not a process-global one: every hop of receipts
//! speaks it, and nothing has to be installed first. Without an OpenTelemetry layer (traces off)
//! spans have no context, so nothing is injected and an incoming context is ignored.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C Trace Context propagator.
pub fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The remote context in request or response `headers` (an empty one if they carry none).
pub fn extract_headers(headers: &HeaderMap) -> Context {
    propagator().extract(&HeaderExtractor(headers))
}

/// The `traceparent` and `tracestate` headers that continue `span`'s trace: empty when the span
/// has no OpenTelemetry context (traces are off).
pub fn trace_headers(span: &tracing::Span) -> Vec<(String, String)> {
    struct Pairs(Vec<(String, String)>);
    impl Injector for Pairs {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_owned(), value));
        }
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut pairs = Pairs(Vec::new());
    propagator().inject_context(&cx, &mut pairs);
    pairs.0
}

/// Middleware (an axum `route_layer`) that makes the HTTP server span of a request, named and
/// attributed as the semantic conventions' HTTP server spans, continuing the caller's trace when
/// the request carries one.
pub async fn server_span(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    let version = match request.version() {
        axum::http::Version::HTTP_10 => "1.0",
        axum::http::Version::HTTP_11 => "1.1",
        axum::http::Version::HTTP_2 => "2",
        _ => "",
    };
    let user_agent = request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "http request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route.as_deref().unwrap_or_default(),
        url.path = request.uri().path(),
        url.scheme = "http",
        network.protocol.version = version,
        user_agent.original = %user_agent,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let parent = extract_headers(request.headers());
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("error.type", status.as_str());
        span.record("otel.status_code", "error");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_header_becomes_the_remote_parent() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = extract_headers(&headers);
        let span = cx.span();
        let parent = span.span_context();
        assert!(parent.is_remote() && parent.is_sampled());
        assert_eq!(
            parent.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn without_traces_nothing_is_injected() {
        let span = tracing::info_span!("no layer");
        assert!(trace_headers(&span).is_empty());
    }
}
