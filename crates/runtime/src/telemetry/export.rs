//! Where traces go: the OTLP collector, its transport and headers, the sampler and the service
//! name, resolved from the `telemetry.traces` section with the standard `OTEL_*` variables over
//! it, and the tracer provider that exports to it.
//!
//! Resolution takes the environment as a lookup function, so tests exercise it without touching
//! the process environment.

use std::collections::HashMap;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use super::TelemetryError;
use crate::config::{OtlpProtocol, TracesConfig};

/// The version of the OpenTelemetry semantic conventions that span names and attributes follow.
pub const SEMCONV_VERSION: &str = "1.36.0";
/// Its schema URL, announced by the tracer.
pub const SEMCONV_SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.36.0";

/// Which new traces are kept. A span whose parent came from upstream keeps the parent's decision
/// unless the sampler says otherwise (`always_on`, `always_off`, `traceidratio`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl SamplerChoice {
    /// Parses `OTEL_TRACES_SAMPLER` with its `OTEL_TRACES_SAMPLER_ARG`.
    fn parse(name: &str, arg: Option<&str>) -> Result<Self, TelemetryError> {
        let ratio = || -> Result<f64, TelemetryError> {
            let Some(arg) = arg.map(str::trim).filter(|a| !a.is_empty()) else {
                return Ok(1.0);
            };
            match arg.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(TelemetryError::Env {
                    name: "OTEL_TRACES_SAMPLER_ARG",
                    message: format!("{arg:?} is not a ratio between 0 and 1"),
                }),
            }
        };
        Ok(match name.trim() {
            "always_on" => SamplerChoice::AlwaysOn,
            "always_off" => SamplerChoice::AlwaysOff,
            "traceidratio" => SamplerChoice::Ratio(ratio()?),
            "parentbased_always_on" => SamplerChoice::ParentBasedAlwaysOn,
            "parentbased_always_off" => SamplerChoice::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => SamplerChoice::ParentBasedRatio(ratio()?),
            other => {
                return Err(TelemetryError::Env {
                    name: "OTEL_TRACES_SAMPLER",
                    message: format!("unsupported sampler {other:?}"),
                });
            }
        })
    }

    pub(crate) fn sampler(self) -> Sampler {
        let based = |root: Sampler| Sampler::ParentBased(Box::new(root));
        match self {
            SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::Ratio(r) => Sampler::TraceIdRatioBased(r),
            SamplerChoice::ParentBasedAlwaysOn => based(Sampler::AlwaysOn),
            SamplerChoice::ParentBasedAlwaysOff => based(Sampler::AlwaysOff),
            SamplerChoice::ParentBasedRatio(r) => based(Sampler::TraceIdRatioBased(r)),
        }
    }
}

/// A resolved trace export: everything needed to build the exporter.
#[derive(Clone)]
pub struct TraceExport {
    pub protocol: OtlpProtocol,
    /// For gRPC the collector's base URL; for HTTP the full URL of the traces resource.
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub sampler: SamplerChoice,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, service name excluded.
    pub resource: Vec<(String, String)>,
}

impl std::fmt::Debug for TraceExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values are credentials.
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("TraceExport")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field("headers", &header_names)
            .field("sampler", &self.sampler)
            .field("service_name", &self.service_name)
            .field("resource", &self.resource)
            .finish()
    }
}

impl TraceExport {
    /// An export to `endpoint` (a collector's base URL) with every span of new traces kept.
    pub fn to(protocol: OtlpProtocol, endpoint: &str, service_name: &str) -> Self {
        TraceExport {
            protocol,
            endpoint: signal_url(protocol, endpoint),
            headers: Vec::new(),
            sampler: SamplerChoice::ParentBasedRatio(1.0),
            service_name: service_name.to_owned(),
            resource: Vec::new(),
        }
    }

    /// The same export, keeping `ratio` of the new traces.
    pub fn sampled(mut self, ratio: f64) -> Self {
        self.sampler = SamplerChoice::ParentBasedRatio(ratio);
        self
    }

    /// Resolves the export from `config` and the `OTEL_*` variables `env` returns; `None` when
    /// traces are off (no endpoint, `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`).
    pub fn resolve(
        config: &TracesConfig,
        default_service: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TelemetryError> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match var("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(TelemetryError::Env {
                    name: "OTEL_TRACES_EXPORTER",
                    message: format!("unsupported exporter {other:?} (otlp or none)"),
                });
            }
        }
        let protocol = match (
            var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
            var("OTEL_EXPORTER_OTLP_PROTOCOL"),
        ) {
            (Some(value), _) => parse_protocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", &value)?,
            (None, Some(value)) => parse_protocol("OTEL_EXPORTER_OTLP_PROTOCOL", &value)?,
            (None, None) => config.protocol,
        };
        // A signal-specific endpoint is used as it is; a base endpoint gets the signal's path.
        let endpoint = if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            url.trim().to_owned()
        } else if let Some(base) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            signal_url(protocol, &base)
        } else if !config.endpoint.trim().is_empty() {
            signal_url(protocol, &config.endpoint)
        } else {
            return Ok(None);
        };

        let mut headers: Vec<(String, String)> = config
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect();
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(list) = var(name) {
                for (key, value) in parse_pairs(name, &list)? {
                    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
                    headers.push((key, value));
                }
            }
        }

        let sampler = match var("OTEL_TRACES_SAMPLER") {
            Some(name) => SamplerChoice::parse(&name, var("OTEL_TRACES_SAMPLER_ARG").as_deref())?,
            None => SamplerChoice::ParentBasedRatio(config.sampling_ratio),
        };

        let mut resource = match var("OTEL_RESOURCE_ATTRIBUTES") {
            Some(list) => parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &list)?,
            None => Vec::new(),
        };
        let from_resource = resource
            .iter()
            .position(|(k, _)| k == "service.name")
            .map(|at| resource.remove(at).1);
        let service_name = var("OTEL_SERVICE_NAME")
            .map(|name| name.trim().to_owned())
            .or(from_resource)
            .or_else(|| Some(config.service_name.trim().to_owned()).filter(|n| !n.is_empty()))
            .unwrap_or_else(|| default_service.to_owned());

        Ok(Some(TraceExport {
            protocol,
            endpoint,
            headers,
            sampler,
            service_name,
            resource,
        }))
    }

    /// Builds the exporter and a provider that batches spans to it off the hot path. gRPC needs
    /// a Tokio runtime to be current (its connection is driven by a task of that runtime).
    pub fn provider(&self) -> Result<SdkTracerProvider, TelemetryError> {
        let exporter = match self.protocol {
            OtlpProtocol::Grpc => {
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (key, value) in &self.headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes())
                        .map_err(|_| TelemetryError::Header(key.clone()))?;
                    let value = value
                        .parse()
                        .map_err(|_| TelemetryError::Header(key.to_string()))?;
                    metadata.insert(key, value);
                }
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(&self.endpoint)
                    .with_metadata(metadata)
                    .build()
            }
            OtlpProtocol::HttpProtobuf => {
                let headers: HashMap<String, String> = self.headers.iter().cloned().collect();
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(&self.endpoint)
                    .with_headers(headers)
                    .build()
            }
        }
        .map_err(TelemetryError::Exporter)?;
        let resource = Resource::builder_empty()
            .with_service_name(self.service_name.clone())
            .with_attributes(
                self.resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(self.sampler.sampler())
            .with_resource(resource)
            .build())
    }
}

fn parse_protocol(name: &'static str, value: &str) -> Result<OtlpProtocol, TelemetryError> {
    value
        .parse()
        .map_err(|message| TelemetryError::Env { name, message })
}

/// The URL an exporter posts to: gRPC takes the base URL, HTTP the `/v1/traces` resource under it.
fn signal_url(protocol: OtlpProtocol, base: &str) -> String {
    let base = base.trim();
    match protocol {
        OtlpProtocol::Grpc => base.to_owned(),
        OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
    }
}

/// `key=value,key2=value2` with percent-encoded values (the `OTEL_*_HEADERS` and
/// `OTEL_RESOURCE_ATTRIBUTES` format).
fn parse_pairs(name: &'static str, list: &str) -> Result<Vec<(String, String)>, TelemetryError> {
    let mut pairs = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(TelemetryError::Env {
                name,
                message: format!("{item:?} is not key=value"),
            });
        };
        pairs.push((key.trim().to_owned(), percent_decode(value.trim())));
    }
    Ok(pairs)
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn without_an_endpoint_nothing_is_exported() {
        let off = TraceExport::resolve(&TracesConfig::default(), "svc", &env(&[])).unwrap();
        assert!(off.is_none());
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let config = TracesConfig {
            endpoint: "http://file:4318".into(),
            sampling_ratio: 0.5,
            service_name: "from-file".into(),
            headers: [("authorization".to_owned(), Secret::new("file"))].into(),
            ..TracesConfig::default()
        };
        let export = TraceExport::resolve(
            &config,
            "svc",
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "Authorization=Bearer%20t,x-team=ops",
                ),
                ("OTEL_SERVICE_NAME", "from-env"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment.name=test",
                ),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(export.protocol, OtlpProtocol::Grpc);
        assert_eq!(export.endpoint, "http://collector:4317");
        assert_eq!(
            export.headers,
            vec![
                ("Authorization".to_owned(), "Bearer t".to_owned()),
                ("x-team".to_owned(), "ops".to_owned())
            ]
        );
        assert_eq!(export.service_name, "from-env");
        assert_eq!(export.sampler, SamplerChoice::Ratio(0.25));
        assert_eq!(
            export.resource,
            vec![("deployment.environment.name".to_owned(), "test".to_owned())]
        );
    }

    #[test]
    fn the_file_alone_configures_an_http_export() {
        let config = TracesConfig {
            endpoint: "http://127.0.0.1:4318/".into(),
            sampling_ratio: 0.01,
            ..TracesConfig::default()
        };
        let export = TraceExport::resolve(&config, "receipts-ingest", &env(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(export.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(export.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(export.service_name, "receipts-ingest");
        assert_eq!(export.sampler, SamplerChoice::ParentBasedRatio(0.01));
    }

    #[test]
    fn a_signal_endpoint_is_taken_as_it_is_and_resource_names_the_service() {
        let export = TraceExport::resolve(
            &TracesConfig::default(),
            "svc",
            &env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=billing,team=a"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(export.endpoint, "http://c:4318/custom");
        assert_eq!(export.service_name, "billing");
        assert_eq!(export.resource, vec![("team".to_owned(), "a".to_owned())]);
    }

    #[test]
    fn disabling_variables_turn_export_off() {
        let config = TracesConfig {
            endpoint: "http://c:4318".into(),
            ..TracesConfig::default()
        };
        for vars in [
            [("OTEL_SDK_DISABLED", "true")],
            [("OTEL_TRACES_EXPORTER", "none")],
        ] {
            assert!(
                TraceExport::resolve(&config, "svc", &env(&vars))
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        for vars in [
            [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
            [("OTEL_TRACES_SAMPLER", "sometimes")],
            [("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
        ] {
            let config = TracesConfig {
                endpoint: "http://c:4318".into(),
                ..TracesConfig::default()
            };
            let err = TraceExport::resolve(&config, "svc", &env(&vars)).unwrap_err();
            assert!(err.to_string().contains(vars[0].0), "{err}");
        }
    }
}
