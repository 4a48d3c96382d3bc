use std::io::Write;

use receipts_runtime::config::{
    ConfigError, Loader, LogFormat, OtlpProtocol, Secret, TelemetryConfig, Validate, load,
};
use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;

/// A Kafka section shaped like the services' own (`receipts_bus::KafkaSettings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct KafkaConfig {
    bootstrap_servers: String,
    client_id_prefix: String,
    properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".to_owned(),
            client_id_prefix: "receipts".to_owned(),
            properties: Default::default(),
        }
    }
}

impl Validate for KafkaConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "bootstrap_servers",
                "must name at least one broker",
            ));
        }
        Ok(())
    }
}

/// A service configuration as services write them: embedded common sections plus their own.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct ServiceConfig {
    kafka: KafkaConfig,
    telemetry: TelemetryConfig,
    http: HttpConfig,
    admin_token: Secret,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
struct HttpConfig {
    port: u16,
    compress: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            port: 8080,
            compress: false,
        }
    }
}

impl Validate for ServiceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate().map_err(|e| e.within("kafka"))?;
        self.telemetry.validate().map_err(|e| e.within("telemetry"))
    }
}

fn toml_file(contents: &str) -> NamedTempFile {
    let mut file = NamedTempFile::new().unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    file
}

/// A loader that never looks at the process environment.
fn loader(env: &[(&str, &str)]) -> Loader {
    Loader::new().env_from(env.iter().copied())
}

#[test]
fn defaults_apply_without_file_or_environment() {
    let config: ServiceConfig = loader(&[]).load().unwrap();
    assert_eq!(config.kafka, KafkaConfig::default());
    assert_eq!(config.kafka.bootstrap_servers, "127.0.0.1:9092");
    assert_eq!(config.telemetry.log_filter, "info");
    assert_eq!(config.http.port, 8080);
}

#[test]
fn file_overrides_defaults_and_environment_overrides_file() {
    let file = toml_file(
        r#"
        [kafka]
        bootstrap_servers = "kafka-1:9092,kafka-2:9092"
        properties = { "security.protocol" = "SASL_SSL" }

        [http]
        port = 9000
        "#,
    );
    let config: ServiceConfig = loader(&[("RECEIPTS_HTTP__PORT", "9100")])
        .file(file.path())
        .load()
        .unwrap();

    assert_eq!(config.kafka.client_id_prefix, "receipts", "default kept");
    assert_eq!(config.kafka.bootstrap_servers, "kafka-1:9092,kafka-2:9092");
    assert_eq!(config.kafka.properties["security.protocol"], "SASL_SSL");
    assert_eq!(config.http.port, 9100, "environment wins over the file");
}

#[test]
fn nested_environment_keys_reach_their_section() {
    let config: ServiceConfig = loader(&[
        ("RECEIPTS_KAFKA__BOOTSTRAP_SERVERS", "broker:29092"),
        ("RECEIPTS_TELEMETRY__LOG_FORMAT", "json"),
        ("RECEIPTS_HTTP__COMPRESS", "true"),
    ])
    .load()
    .unwrap();

    assert_eq!(config.kafka.bootstrap_servers, "broker:29092");
    assert_eq!(config.telemetry.log_format, LogFormat::Json);
    assert!(config.http.compress);
}

#[test]
fn environment_values_stay_strings_where_strings_are_expected() {
    let config: ServiceConfig = loader(&[
        ("RECEIPTS_ADMIN_TOKEN", "12345"),
        ("RECEIPTS_KAFKA__CLIENT_ID_PREFIX", "true"),
    ])
    .load()
    .unwrap();

    assert_eq!(config.admin_token.expose(), "12345");
    assert_eq!(config.kafka.client_id_prefix, "true");
}

#[test]
fn only_variables_with_the_prefix_are_read() {
    let config: ServiceConfig = loader(&[("OTHER_HTTP__PORT", "1"), ("HTTP__PORT", "2")])
        .load()
        .unwrap();
    assert_eq!(config.http.port, 8080);

    let config: ServiceConfig = Loader::new()
        .env_prefix("ACME_")
        .env_from([("ACME_HTTP__PORT", "3")])
        .load()
        .unwrap();
    assert_eq!(config.http.port, 3);
}

#[test]
fn a_bad_environment_value_names_its_key_and_variable() {
    let err = loader(&[("RECEIPTS_HTTP__PORT", "eighty")])
        .load::<ServiceConfig>()
        .unwrap_err();

    assert_eq!(err.key(), Some("http.port"));
    let message = err.to_string();
    assert!(
        message.starts_with("invalid value for `http.port`: "),
        "{message}"
    );
    assert!(message.contains("RECEIPTS_HTTP__PORT"), "{message}");
}

#[test]
fn a_bad_file_value_names_its_key_and_file() {
    let file = toml_file("[telemetry]\nlog_format = \"xml\"\n");
    let err = loader(&[])
        .file(file.path())
        .load::<ServiceConfig>()
        .unwrap_err();

    assert_eq!(err.key(), Some("telemetry.log_format"));
    let message = err.to_string();
    assert!(
        message.contains(&file.path().display().to_string()),
        "{message}"
    );
}

#[test]
fn a_malformed_file_is_an_error() {
    let file = toml_file("[kafka\n");
    let err = loader(&[])
        .file(file.path())
        .load::<ServiceConfig>()
        .unwrap_err();
    assert!(matches!(err, ConfigError::Malformed(_)), "{err:?}");
}

#[test]
fn a_missing_explicit_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receipts.toml");

    // Through the public entry point too: the file check comes before the environment is read.
    let err = load::<ServiceConfig>(Some(&path)).unwrap_err();

    let ConfigError::Unreadable {
        path: reported,
        source,
    } = &err
    else {
        panic!("expected Unreadable, got {err:?}");
    };
    assert_eq!(reported, &path);
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn validation_runs_after_loading_and_names_the_qualified_key() {
    let err = loader(&[("RECEIPTS_KAFKA__BOOTSTRAP_SERVERS", " ")])
        .load::<ServiceConfig>()
        .unwrap_err();
    assert_eq!(err.key(), Some("kafka.bootstrap_servers"));
    assert!(
        err.to_string()
            .starts_with("invalid value for `kafka.bootstrap_servers`: "),
        "{err}"
    );

    let err = loader(&[("RECEIPTS_TELEMETRY__LOG_FILTER", "receipts=loud")])
        .load::<ServiceConfig>()
        .unwrap_err();
    assert_eq!(err.key(), Some("telemetry.log_filter"));
}

#[test]
fn secrets_never_print() {
    let config: ServiceConfig = loader(&[("RECEIPTS_ADMIN_TOKEN", "s3cr3t-token")])
        .load()
        .unwrap();

    assert_eq!(config.admin_token.expose(), "s3cr3t-token");
    assert_eq!(config.admin_token.to_string(), "[redacted]");
    let debug = format!("{config:?} {config:#?}");
    assert!(!debug.contains("s3cr3t-token"), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
}

#[test]
fn the_trace_export_is_configured_by_file_and_environment() {
    let file = toml_file(
        "[telemetry.traces]\nendpoint = \"http://collector:4317\"\nprotocol = \"grpc\"\n\
         headers = { authorization = \"Bearer s3cret\" }\n",
    );
    let config: ServiceConfig = loader(&[("RECEIPTS_TELEMETRY__TRACES__SAMPLING_RATIO", "0.25")])
        .file(file.path())
        .load()
        .unwrap();
    let traces = &config.telemetry.traces;
    assert_eq!(traces.endpoint, "http://collector:4317");
    assert_eq!(traces.protocol, OtlpProtocol::Grpc);
    assert_eq!(traces.sampling_ratio, 0.25);
    assert_eq!(traces.headers["authorization"].expose(), "Bearer s3cret");
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "headers never print"
    );
    assert!(
        TelemetryConfig::default().traces.endpoint.is_empty(),
        "off by default"
    );
}

#[test]
fn an_impossible_sampling_ratio_names_its_key() {
    let err = loader(&[("RECEIPTS_TELEMETRY__TRACES__SAMPLING_RATIO", "1.5")])
        .load::<ServiceConfig>()
        .unwrap_err();
    assert_eq!(err.key(), Some("telemetry.traces.sampling_ratio"), "{err}");
}
