//! Integration tests of receipts-runtime, one module per area.

mod config;
mod metrics;
mod shutdown;
mod telemetry;
