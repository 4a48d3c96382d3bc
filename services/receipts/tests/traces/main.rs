//! Traces against a real Jaeger v2 (issue 14): what `receipts` exports over OTLP is read back
//! through Jaeger's query API.
//!
//! A binary of its own: it installs the process-wide subscriber with an OTLP exporter, which
//! no other test should share. It needs a running Jaeger, named by `RECEIPTS_TEST_JAEGER` (the
//! query URL), `RECEIPTS_TEST_JAEGER_OTLP_GRPC` and `RECEIPTS_TEST_JAEGER_OTLP_HTTP`;
//! `scripts/test.sh` builds, starts and names one (`scripts/jaeger.sh`). Without them the tests
//! fail and say so — they never skip.
//!
//! Layout: [`jaeger`] reads traces back; [`pipeline`] follows one status report to its webhook;
//! [`export`] checks the HTTP/protobuf transport on its own.

mod export;
mod jaeger;
mod pipeline;

/// The value of a variable `scripts/test.sh` exports, or a failure that says how to get it.
pub(crate) fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value.trim().to_owned(),
        _ => panic!(
            "{name} is not set: these tests need a running Jaeger v2. Run scripts/test.sh, or \
             `scripts/jaeger.sh start` and export RECEIPTS_TEST_JAEGER=http://127.0.0.1:16686 \
             RECEIPTS_TEST_JAEGER_OTLP_GRPC=http://127.0.0.1:4317 \
             RECEIPTS_TEST_JAEGER_OTLP_HTTP=http://127.0.0.1:4318"
        ),
    }
}

/// A service name no other run has used, so a search finds only this run's traces.
pub(crate) fn unique_service(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("receipts-test-{what}-{}-{nanos}", std::process::id())
}
