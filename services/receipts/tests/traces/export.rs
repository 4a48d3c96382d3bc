use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Tracer as _};
use receipts_runtime::config::OtlpProtocol;
use receipts_runtime::telemetry::{self, TraceExport};

use crate::jaeger;

/// The HTTP/protobuf transport (the pipeline test uses gRPC): a span exported to Jaeger's
/// `:4318` is found under its service with its attributes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_exported_over_http_protobuf_reach_jaeger() {
    let query = crate::required_env("RECEIPTS_TEST_JAEGER");
    let otlp = crate::required_env("RECEIPTS_TEST_JAEGER_OTLP_HTTP");
    let service = crate::unique_service("http");
    let export = TraceExport::to(OtlpProtocol::HttpProtobuf, &otlp, &service);
    assert!(export.endpoint.ends_with("/v1/traces"), "{export:?}");
    let provider = export.provider().expect("an HTTP exporter");
    let tracer = telemetry::tracer(&provider);
    let mut span = tracer.start("export check");
    span.set_attribute(KeyValue::new("receipts.check", "http"));
    span.end();
    let flushed = tokio::task::spawn_blocking(move || {
        let flushed = provider.force_flush();
        let _ = provider.shutdown();
        flushed
    })
    .await
    .unwrap();
    flushed.expect("Jaeger accepts the export");

    let spans = jaeger::search(
        &query,
        &service,
        "export check",
        Duration::from_secs(20),
        |spans| !spans.is_empty(),
    )
    .await;
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].tag_text("receipts.check").as_deref(), Some("http"));
    assert_eq!(
        spans[0].tag_text("otel.scope.name").as_deref(),
        Some("receipts"),
        "{spans:?}"
    );
}
