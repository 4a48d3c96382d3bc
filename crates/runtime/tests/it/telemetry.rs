use std::io::Write;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SdkTracerProvider;
use receipts_runtime::config::{LogFormat, TelemetryConfig};
use receipts_runtime::telemetry::{self, TelemetryError};
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[tokio::test]
async fn initialising_twice_reports_instead_of_panicking() {
    let config = TelemetryConfig {
        log_format: LogFormat::Json,
        ..TelemetryConfig::default()
    };
    // The first call may already fail if RUST_LOG holds an invalid filter; the second must not panic.
    let _first = telemetry::init_with(&config, None);
    let err = telemetry::init_with(&config, None).unwrap_err();
    assert!(
        matches!(
            err,
            TelemetryError::AlreadyInitialized(_) | TelemetryError::Filter { .. }
        ),
        "{err:?}"
    );
}

/// A writer the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }
}

#[test]
fn json_lines_name_the_trace_and_span_they_were_written_in() {
    let config = TelemetryConfig {
        log_format: LogFormat::Json,
        log_filter: "info".into(),
        ..TelemetryConfig::default()
    };
    // No exporter: the spans only need their ids.
    let provider = SdkTracerProvider::builder().build();
    let captured = Captured::default();
    let writer = {
        let captured = captured.clone();
        move || captured.clone()
    };
    let subscriber =
        telemetry::subscriber(&config, Some(telemetry::tracer(&provider)), writer, false).unwrap();
    let (outer_ids, inner_ids) = tracing::subscriber::with_default(subscriber, || {
        tracing::info!("before any span");
        let outer = tracing::info_span!("apply", records = 3);
        let _outer = outer.enter();
        tracing::info!(partition = 2, "in the outer span");
        let inner = tracing::info_span!("attempt", attempt = 1);
        let inner_ids = {
            let _inner = inner.enter();
            tracing::warn!(reason = "HTTP 500", "in the inner span");
            ids(&inner)
        };
        (ids(&outer), inner_ids)
    });

    let lines = captured.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
    assert_eq!(lines[0]["fields"]["message"], "before any span");

    assert_eq!(lines[1]["trace_id"], outer_ids.0, "{}", lines[1]);
    assert_eq!(lines[1]["span_id"], outer_ids.1, "{}", lines[1]);
    assert_eq!(lines[1]["fields"]["partition"], 2);
    assert_eq!(lines[1]["span"]["name"], "apply");
    assert_eq!(lines[1]["span"]["records"], 3);

    // One trace, the inner span's own id.
    assert_eq!(lines[2]["trace_id"], outer_ids.0, "{}", lines[2]);
    assert_eq!(lines[2]["span_id"], inner_ids.1, "{}", lines[2]);
    assert_ne!(inner_ids.1, outer_ids.1);
    assert_eq!(lines[2]["level"], "WARN");
    assert_eq!(lines[2]["spans"].as_array().unwrap().len(), 2);
    assert_eq!(lines[2]["fields"]["reason"], "HTTP 500");
}

fn ids(span: &tracing::Span) -> (String, String) {
    let cx = span.context();
    let span = cx.span();
    let context = span.span_context();
    assert!(context.is_valid());
    (
        context.trace_id().to_string(),
        context.span_id().to_string(),
    )
}
