//! Prometheus metrics: a registry shared by handle rather than held in a static, and the HTTP endpoint
//! that serves it (`GET /metrics` in OpenMetrics text, `GET /healthz` for readiness: 503 with the
//! reasons while a consumer is not current, see [`crate::health`]; `GET /livez` for liveness).
//!
//! Services register their families at start-up through a clone of the same [`Metrics`], so one scrape
//! covers everything running in the process, including all services at once under `receipts dev`.
//! Every name is exported under the prefix `receipts_` (registered `projector_records` is scraped
//! as `receipts_projector_records_total`), so the dashboards and alerts in `deploy/` find the
//! family whatever else the Prometheus server collects.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::{Metric, Registry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Readiness;

/// Content type of an OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Shared handle to one metrics registry and the process's readiness; clones share both.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    readiness: Readiness,
    /// What [`Metrics::register`] registered, in order: a family with no series yet is left out
    /// of a scrape, so this is the one complete list of what the process exports.
    families: Arc<Mutex<Vec<Family>>>,
    /// The registry's prefix, with its `_`, as it is put before every name.
    prefix: String,
}

/// A registered metric family as a scrape names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// The family name with the prefix: `receipts_projector_records` (sampled as
    /// `receipts_projector_records_total`).
    pub name: String,
    /// The OpenMetrics type: `counter`, `gauge`, `histogram`, …
    pub kind: String,
}

/// The prefix of every exported metric name.
pub const PREFIX: &str = "receipts";

impl Default for Metrics {
    fn default() -> Self {
        Self::build(Registry::with_prefix(PREFIX), format!("{PREFIX}_"))
    }
}

impl Metrics {
    /// An empty registry whose names all start with [`PREFIX`]`_`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps a registry built beforehand. [`Metrics::families`] names what is registered
    /// through this handle as registered, without any prefix that registry adds.
    pub fn from_registry(registry: Registry) -> Self {
        Self::build(registry, String::new())
    }

    fn build(registry: Registry, prefix: String) -> Self {
        let readiness = Readiness::default();
        let this = Self {
            registry: Arc::new(Mutex::new(registry)),
            readiness: readiness.clone(),
            families: Arc::default(),
            prefix,
        };
        this.register(
            "consumer_ready",
            "1 while the consumer is current, 0 while it starts, restores, cannot reach the broker or stopped",
            readiness.gauge(),
        );
        this.register(
            "consumer_lag",
            "records behind the high watermark, per consumer and partition",
            readiness.lag_gauge(),
        );
        this
    }

    /// The readiness of the process these metrics describe.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Registers `metric` under `name`. The caller keeps its own clone of the metric (they are handles
    /// around shared atomics) to update it.
    pub fn register(&self, name: impl Into<String>, help: impl Into<String>, metric: impl Metric) {
        let name = name.into();
        let family = Family {
            name: format!("{}{name}", self.prefix),
            kind: metric.metric_type().as_str().to_owned(),
        };
        self.registry_mut().register(name, help, metric);
        self.families
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(family);
    }

    /// Every family registered through [`Metrics::register`], whether or not it has a series
    /// yet.
    pub fn families(&self) -> Vec<Family> {
        self.families
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The registry itself, for what [`Metrics::register`] does not cover: units, sub-registries with a
    /// prefix or labels, collectors (which [`Metrics::families`] does not list). Do not hold the
    /// guard across an `.await`.
    pub fn registry_mut(&self) -> MutexGuard<'_, Registry> {
        // The registry is only appended to; one left by a panicking registration is still consistent.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every registered metric in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry_mut())
            .expect("encoding into a String fails only if a metric's own encoder does");
        text
    }
}

/// Routes `GET /metrics`, `GET /healthz` (readiness) and `GET /livez`. Services with an HTTP API
/// of their own can `merge` it.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(readiness))
        .route("/livez", get(|| async { "ok" }))
        .with_state(metrics)
}

/// 200 `ok` while every consumer is current; 503 with one line per component that is not.
async fn readiness(State(metrics): State<Metrics>) -> impl IntoResponse {
    let report = metrics.readiness.report();
    if report.ready {
        (StatusCode::OK, "ok".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\n", report.reasons.join("\n")),
        )
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn render_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        metrics.render(),
    )
}

/// Binds `address` and serves [`router`] of `metrics` there until `shutdown`; an empty address
/// disables the endpoint. The error names the address that could not be bound.
pub async fn spawn_endpoint(
    address: &str,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> io::Result<()> {
    if address.is_empty() {
        return Ok(());
    }
    let listener = TcpListener::bind(address).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("binding the metrics endpoint {address}: {e}"),
        )
    })?;
    tokio::spawn(serve(listener, router(metrics.clone()), shutdown));
    Ok(())
}
