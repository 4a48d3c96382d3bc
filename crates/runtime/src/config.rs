//! Layered configuration: compiled defaults < TOML file < environment.
//!
//! A service describes its whole configuration as one struct. Its `Default` is the compiled-in layer, so
//! the defaults live in code next to the fields; a TOML file overrides them; `RECEIPTS_*` environment
//! variables override the file, with `__` separating nested keys (`RECEIPTS_KAFKA__BOOTSTRAP_SERVERS` sets
//! `kafka.bootstrap_servers`). Environment values are taken as strings and converted to the field's type
//! (`"8080"` into a `u16`, `"true"` into a `bool`), so a token that happens to look like a number stays a
//! string; lists and maps come from the file. After loading, [`Validate`] checks what the types cannot.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// Prefix of the environment variables that [`load`] reads.
pub const ENV_PREFIX: &str = "RECEIPTS_";

/// Separates nested keys in environment variable names.
const ENV_KEY_SEPARATOR: &str = "__";

/// Loads `T` from its defaults, the optional TOML `file` and the `RECEIPTS_*` process environment, then
/// validates it.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    let loader = Loader::new();
    match file {
        Some(path) => loader.file(path),
        None => loader,
    }
    .load()
}

/// Builder behind [`load`] that can take its environment from a list instead of the process, so tests
/// exercise the same layering without touching the (process-global) environment.
#[derive(Clone, Debug)]
pub struct Loader {
    file: Option<PathBuf>,
    env_prefix: String,
    /// `None` reads the process environment when loading.
    env: Option<Vec<(String, String)>>,
}

impl Default for Loader {
    fn default() -> Self {
        Self::new()
    }
}

impl Loader {
    /// No file, the process environment, prefix [`ENV_PREFIX`].
    pub fn new() -> Self {
        Self {
            file: None,
            env_prefix: ENV_PREFIX.to_owned(),
            env: None,
        }
    }

    /// Reads this TOML file between the defaults and the environment. It must exist.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Reads only environment variables whose names start with `prefix` (case-sensitive).
    pub fn env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.env_prefix = prefix.into();
        self
    }

    /// Takes the environment from `vars` instead of the process.
    pub fn env_from<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars.into_iter().map(|(k, v)| (k.into(), v.into()));
        self.env = Some(vars.collect());
        self
    }

    /// Merges the layers into a `T` and validates it.
    pub fn load<T>(&self) -> Result<T, ConfigError>
    where
        T: DeserializeOwned + Serialize + Default + Validate,
    {
        let mut figment = Figment::from(Serialized::defaults(T::default()));
        if let Some(path) = &self.file {
            // Figment treats a missing file as an empty one; a file named explicitly must be there.
            std::fs::metadata(path).map_err(|source| ConfigError::Unreadable {
                path: path.clone(),
                source,
            })?;
            figment = figment.merge(Toml::file_exact(path));
        }
        for var in self.env_vars() {
            figment = figment.merge(var);
        }
        // Lossy: environment values are strings, and "8080" should fill a `u16`.
        let config: T = figment.extract_lossy().map_err(ConfigError::from_figment)?;
        config.validate()?;
        Ok(config)
    }

    fn env_vars(&self) -> Vec<EnvVar> {
        let vars = self.env.clone().unwrap_or_else(|| {
            // Like figment's own `Env`, names or values that are not UTF-8 are skipped.
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect()
        });
        vars.into_iter()
            .filter_map(|(name, value)| EnvVar::parse(&self.env_prefix, name, value))
            .collect()
    }
}

/// One `PREFIX_A__B=value` variable, provided as the string `value` at key `a.b`. Each variable is its
/// own provider so that an error names the exact variable the value came from.
#[derive(Debug)]
struct EnvVar {
    name: String,
    key: String,
    value: String,
}

impl EnvVar {
    fn parse(prefix: &str, name: String, value: String) -> Option<Self> {
        let key = name
            .strip_prefix(prefix)?
            .to_ascii_lowercase()
            .replace(ENV_KEY_SEPARATOR, ".");
        // `RECEIPTS_` alone or `RECEIPTS_A____B` name no key.
        if key.split('.').any(str::is_empty) {
            return None;
        }
        Some(Self { name, key, value })
    }
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable `{}`", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let nested = figment::util::nest(&self.key, Value::from(self.value.clone()));
        let dict = nested
            .into_dict()
            .expect("a key without empty segments nests into a dict");
        Ok(Profile::Default.collect(dict))
    }
}

/// Checks a loaded configuration for what its types cannot express. [`load`] calls it, so a service never
/// starts on a configuration it would reject later.
pub trait Validate {
    /// Returns the first problem found, naming its key. Embedded sections are checked by delegating and
    /// qualifying the key: `self.kafka.validate().map_err(|e| e.within("kafka"))`.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named explicitly is missing or cannot be read.
    #[error("cannot read config file `{}`", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A key holds a value of the wrong type or one that failed validation.
    #[error("invalid value for `{key}`: {message}")]
    Invalid {
        /// Dotted path of the key, as written in the TOML file (`kafka.bootstrap_servers`).
        key: String,
        /// What is wrong and, for loading errors, which file or variable the value came from.
        message: String,
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
    /// A layer cannot be read as a whole (a TOML syntax error, say), so no single key is to blame.
    #[error(transparent)]
    Malformed(Box<figment::Error>),
}

impl ConfigError {
    /// A validation failure of `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
            source: None,
        }
    }

    /// Qualifies the key of an error found in an embedded section: `bootstrap_servers` becomes
    /// `kafka.bootstrap_servers`.
    pub fn within(self, section: &str) -> Self {
        match self {
            Self::Invalid {
                key,
                message,
                source,
            } => Self::Invalid {
                key: format!("{section}.{key}"),
                message,
                source,
            },
            other => other,
        }
    }

    /// The dotted key at fault, when one is known.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            Self::Unreadable { .. } | Self::Malformed(_) => None,
        }
    }

    fn from_figment(error: figment::Error) -> Self {
        let mut path = error.path.clone();
        if let figment::error::Kind::MissingField(field) = &error.kind {
            path.push(field.to_string());
        }
        if path.is_empty() {
            return Self::Malformed(Box::new(error));
        }
        let message = match &error.metadata {
            Some(Metadata {
                name,
                source: Some(source),
                ..
            }) => format!("{} (from {name} {source})", error.kind),
            Some(Metadata { name, .. }) => format!("{} (from {name})", error.kind),
            None => error.kind.to_string(),
        };
        Self::Invalid {
            key: path.join("."),
            message,
            source: Some(Box::new(error)),
        }
    }
}

/// A credential read from configuration. It prints as `[redacted]` in `Debug` and `Display`, so a config
/// struct holding one can be logged whole; [`Secret::expose`] is the one way to read it.
///
/// It deliberately does not implement `PartialEq`: comparing credentials needs a constant-time comparison.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value; keep it out of logs and error messages.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Redacted, f)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Redacted, f)
    }
}

/// Stands in for a value that must not be printed.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How a service logs and traces; embed it as the `telemetry` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// `tracing` filter directives (`info`, `receipts_bus=debug,info`); `RUST_LOG` overrides it.
    pub log_filter: String,
    /// OpenTelemetry trace export; the standard `OTEL_*` variables override it.
    pub traces: TracesConfig,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            log_filter: "info".to_owned(),
            traces: TracesConfig::default(),
        }
    }
}

impl Validate for TelemetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Err(source) = EnvFilter::try_new(&self.log_filter) {
            return Err(ConfigError::Invalid {
                key: "log_filter".to_owned(),
                message: format!("{:?} is not a tracing filter", self.log_filter),
                source: Some(Box::new(source)),
            });
        }
        self.traces.validate().map_err(|e| e.within("traces"))
    }
}

/// Where and how traces go over OTLP. Nothing is exported, and no exporter runs, while
/// `endpoint` is empty (and `OTEL_EXPORTER_OTLP_ENDPOINT` is not set).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct TracesConfig {
    /// The collector, e.g. `http://127.0.0.1:4318` (HTTP) or `http://127.0.0.1:4317` (gRPC).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Sent with every export (`authorization = "Bearer …"`); never logged.
    pub headers: BTreeMap<String, Secret>,
    /// The fraction of new traces kept (0.0 to 1.0); a trace begun upstream keeps the upstream
    /// decision.
    pub sampling_ratio: f64,
    /// `service.name` of the spans; empty: the binary's own name.
    pub service_name: String,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            protocol: OtlpProtocol::default(),
            headers: BTreeMap::new(),
            sampling_ratio: 1.0,
            service_name: String::new(),
        }
    }
}

impl Validate for TracesConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(ConfigError::invalid(
                "sampling_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        let endpoint = self.endpoint.trim();
        let is_url = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !endpoint.is_empty() && !is_url {
            return Err(ConfigError::invalid(
                "endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }
}

/// The OTLP transport, named as `OTEL_EXPORTER_OTLP_PROTOCOL` names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP over gRPC, usually port 4317.
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies, usually port 4318 (the specification's default).
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl std::str::FromStr for OtlpProtocol {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim() {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            other => Err(format!(
                "unsupported OTLP protocol {other:?} (grpc or http/protobuf)"
            )),
        }
    }
}

/// Shape of log lines on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_map_to_nested_lowercase_keys() {
        let var = |name: &str| EnvVar::parse("RECEIPTS_", name.to_owned(), String::new());
        assert_eq!(
            var("RECEIPTS_KAFKA__BOOTSTRAP_SERVERS").map(|v| v.key),
            Some("kafka.bootstrap_servers".to_owned())
        );
        assert_eq!(var("RECEIPTS_PORT").map(|v| v.key), Some("port".to_owned()));
        assert!(var("OTHER_PORT").is_none());
        assert!(var("RECEIPTS_").is_none());
        assert!(var("RECEIPTS_KAFKA____PORT").is_none());
        assert!(var("RECEIPTS___PORT").is_none());
    }

    #[test]
    fn within_qualifies_only_keyed_errors() {
        let err = ConfigError::invalid("bootstrap_servers", "empty").within("kafka");
        assert_eq!(err.key(), Some("kafka.bootstrap_servers"));
    }
}
