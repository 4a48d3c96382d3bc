//! Plumbing every receipts service shares, so that each `main.rs` stays a few dozen lines: load the
//! configuration, initialise telemetry, install the signal handler, serve metrics, call `run`.
//!
//! - [`config`]: layered configuration (compiled defaults < TOML file < `RECEIPTS_*` environment), the
//!   [`Validate`](config::Validate) hook run after loading, the [`Secret`](config::Secret) type that never
//!   prints, and the [`TelemetryConfig`](config::TelemetryConfig) section services embed (the Kafka
//!   section is `receipts_bus::KafkaSettings`).
//! - [`telemetry`]: the `tracing` subscriber (text or JSON on stderr).
//! - [`shutdown`]: SIGINT/SIGTERM cancel a [`CancellationToken`](tokio_util::sync::CancellationToken) the
//!   caller owns; nothing here is global.
//! - [`metrics`]: a shared `prometheus-client` registry and the HTTP endpoint (`/metrics`, `/healthz`) that
//!   serves it on a listener the caller binds.
//! - [`http`]: the server of the public HTTP endpoints, with header and body read timeouts, a
//!   connection cap and load shedding.
//! - [`health`]: readiness, component by component, behind `/healthz` and gRPC health.
//! - [`clock`]: the system clock and a clock following tokio's time, given to whatever needs "now".
//! - [`auth`]: constant-time comparison of credentials and HTTP Basic credentials, for every
//!   surface that checks them.
//! - [`process`]: stopping a child service process as an orchestrator does (SIGTERM, then kill).
//! - [`demo`]: the credentials of the demo setup, shared by `receipts dev` and its tools.

pub mod auth;
pub mod clock;
pub mod config;
pub mod demo;
pub mod health;
pub mod http;
pub mod metrics;
pub mod process;
pub mod shutdown;
pub mod telemetry;
