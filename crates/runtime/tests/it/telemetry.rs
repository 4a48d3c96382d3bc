use receipts_runtime::config::{LogFormat, TelemetryConfig};
use receipts_runtime::telemetry::{TelemetryError, init_tracing};

#[test]
fn initialising_twice_reports_instead_of_panicking() {
    let config = TelemetryConfig {
        log_format: LogFormat::Json,
        ..TelemetryConfig::default()
    };
    // The first call may already fail if RUST_LOG holds an invalid filter; the second must not panic.
    let _ = init_tracing(&config);
    let err = init_tracing(&config).unwrap_err();
    assert!(
        matches!(
            err,
            TelemetryError::AlreadyInitialized(_) | TelemetryError::Filter { .. }
        ),
        "{err:?}"
    );
}
