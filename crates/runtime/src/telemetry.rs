//! The process-wide `tracing` subscriber: one fmt layer writing text or JSON to stderr, filtered by
//! `RUST_LOG` when set and by the configured filter otherwise. Layers are composed on a registry so that
//! further ones (OpenTelemetry export) can be added beside the fmt layer.

use std::io::IsTerminal;

use tracing_subscriber::filter::ParseError;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};

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
}

/// Installs the global subscriber described by `cfg`. Calling it again returns
/// [`TelemetryError::AlreadyInitialized`] and leaves the first subscriber in place.
pub fn init_tracing(cfg: &TelemetryConfig) -> Result<(), TelemetryError> {
    let filter = filter(std::env::var(FILTER_ENV).ok(), &cfg.log_filter)?;
    let fmt = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .try_init()
        .map_err(TelemetryError::AlreadyInitialized)
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
