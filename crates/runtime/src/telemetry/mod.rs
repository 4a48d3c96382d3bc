//! The process-wide `tracing` subscriber and OpenTelemetry trace export.
//!
//! One fmt layer writes text or JSON to stderr, filtered by `RUST_LOG` when set and by the
//! configured filter otherwise; JSON lines carry the `trace_id` and `span_id` of the span they
//! were written in ([`json`]). When an OTLP endpoint is configured ([`export`]: the
//! `telemetry.traces` section, or the standard `OTEL_*` variables), an OpenTelemetry layer turns
//! the `tracing` spans at `info` and above into OpenTelemetry spans, batched and exported off the
//! hot path; otherwise no OpenTelemetry layer and no exporter exist at all. [`propagation`]
//! carries W3C trace context across HTTP (Kafka headers are `receipts-bus`'s) and makes HTTP server
//! spans, [`grpc`] the spans of gRPC calls. The [`Telemetry`]
//! handle flushes and shuts the exporter down when the service exits.
//!
//! Span names and attributes follow the OpenTelemetry semantic conventions
//! [`SEMCONV_VERSION`](export::SEMCONV_VERSION).

pub mod export;
pub mod grpc;
pub mod json;
pub mod propagation;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, ParseError};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};
use tracing_subscriber::{EnvFilter, Layer};

pub use self::export::{SEMCONV_SCHEMA_URL, SEMCONV_VERSION, SamplerChoice, TraceExport};
use crate::config::{LogFormat, TelemetryConfig};

/// Set once a subscriber with an OpenTelemetry layer exists.
static TRACING: AtomicBool = AtomicBool::new(false);

/// Whether spans become OpenTelemetry spans in this process. Code that would make a span per
/// record asks first: with traces off such spans are only cost.
pub fn is_tracing() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Environment variable whose filter directives override the configured ones.
const FILTER_ENV: &str = "RUST_LOG";

/// Why telemetry could not be initialised.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}")]
    Filter {
        filter: String,
        #[source]
        source: ParseError,
    },
    /// A global subscriber was installed before, by an earlier call or by someone else. Code that may
    /// run more than once in a process (tests, `receipts dev`) can ignore this one.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized(#[source] TryInitError),
    #[error("{name}: {message}")]
    Env { name: &'static str, message: String },
    #[error("OTLP header {0:?} is not a valid header")]
    Header(String),
    #[error("creating the OTLP trace exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// The running telemetry of a process: shut it down (or drop it) on exit so that the spans still
/// in the batch are exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is batched so far, waiting for the collector's answer (blocking).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            tracing::warn!(%error, "cannot export the batched spans");
        }
    }

    /// Exports what is still batched and stops the exporter. Blocks for up to the export timeout;
    /// call it from a blocking context (or let [`Telemetry::shutdown_async`] do so).
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// [`Telemetry::shutdown`] off the async executor.
    pub async fn shutdown_async(mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = tokio::task::spawn_blocking(move || stop(provider)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take() {
            stop(provider);
        }
    }
}

fn stop(provider: SdkTracerProvider) {
    if let Err(error) = provider.force_flush() {
        tracing::warn!(%error, "cannot export the last spans");
    }
    if let Err(error) = provider.shutdown() {
        tracing::warn!(%error, "cannot shut the trace exporter down");
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs the global subscriber described by `cfg`, exporting traces when `cfg` or the `OTEL_*`
/// environment names a collector; `service` is the default `service.name`. Needs a Tokio runtime
/// when the export is gRPC. Calling it again returns [`TelemetryError::AlreadyInitialized`] and
/// leaves the first subscriber in place.
pub fn init(cfg: &TelemetryConfig, service: &str) -> Result<Telemetry, TelemetryError> {
    let export = TraceExport::resolve(&cfg.traces, service, &|name| std::env::var(name).ok())?;
    init_with(cfg, export.as_ref())
}

/// [`init`] with the trace export given instead of resolved (`None`: no traces).
pub fn init_with(
    cfg: &TelemetryConfig,
    export: Option<&TraceExport>,
) -> Result<Telemetry, TelemetryError> {
    let provider = export.map(TraceExport::provider).transpose()?;
    let tracer = provider.as_ref().map(tracer);
    let ansi = std::io::stderr().is_terminal();
    subscriber(cfg, tracer, std::io::stderr, ansi)?
        .try_init()
        .map_err(TelemetryError::AlreadyInitialized)?;
    if let Some(export) = export {
        tracing::info!(endpoint = %export.endpoint, protocol = ?export.protocol, service = %export.service_name, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

/// The tracer receipts' spans are made with, naming the semantic conventions they follow.
pub fn tracer(provider: &SdkTracerProvider) -> SdkTracer {
    let scope = InstrumentationScope::builder("receipts")
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(SEMCONV_SCHEMA_URL)
        .build();
    provider.tracer_with_scope(scope)
}

/// The subscriber [`init`] installs, writing to `writer` and making OpenTelemetry spans with
/// `tracer` when given; for tests that capture what it writes.
pub fn subscriber<W>(
    cfg: &TelemetryConfig,
    tracer: Option<SdkTracer>,
    writer: W,
    ansi: bool,
) -> Result<impl Subscriber + Send + Sync + 'static, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter(std::env::var(FILTER_ENV).ok(), &cfg.log_filter)?;
    let fmt = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(json::TraceJson)
            .with_writer(writer)
            .boxed(),
    };
    // Spans of receipts and of every library at info and above; the libraries' debug spans
    // (h2, hyper, tonic internals) would only be noise in a trace.
    if tracer.is_some() {
        TRACING.store(true, Ordering::Relaxed);
    }
    let otel = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(LevelFilter::INFO)
    });
    Ok(tracing_subscriber::registry()
        .with(otel)
        .with(fmt.with_filter(filter)))
}

/// `RUST_LOG` (when set and non-empty) wins over the configured directives.
fn filter(rust_log: Option<String>, configured: &str) -> Result<EnvFilter, TelemetryError> {
    let directives = rust_log
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| configured.to_owned());
    EnvFilter::try_new(&directives).map_err(|source| TelemetryError::Filter {
        filter: directives,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_overrides_the_configured_filter() {
        let filter = filter(Some("receipts=debug".to_owned()), "info").unwrap();
        assert_eq!(filter.to_string(), "receipts=debug");
    }

    #[test]
    fn empty_rust_log_falls_back_to_the_configured_filter() {
        let filter = filter(Some(" ".to_owned()), "warn").unwrap();
        assert_eq!(filter.to_string(), "warn");
    }

    #[test]
    fn invalid_filter_is_reported_with_its_text() {
        let err = filter(None, "receipts=loud").unwrap_err();
        assert!(err.to_string().contains("receipts=loud"), "{err}");
    }
}
