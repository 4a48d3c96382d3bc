//! The dispatcher's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use receipts_runtime::metrics::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub(crate) outcome: &'static str,
}

/// The kind of configuration a webhook belongs to: `account`, `service` or `conversation`.
/// Metrics are labelled by it, never by webhook key or URL, so the number of series stays fixed
/// however many webhooks tenants configure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ScopeLabel {
    pub(crate) scope: &'static str,
}

impl ScopeLabel {
    /// The scope of a `webhook-configs` key (`account/…`, `service/…`, `conversation/…`).
    pub(crate) fn of_key(key: &str) -> Self {
        let scope = match key.split('/').next() {
            Some("account") => "account",
            Some("service") => "service",
            Some("conversation") => "conversation",
            _ => "other",
        };
        ScopeLabel { scope }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct DispatcherMetrics {
    /// Attempts by outcome: delivered, retry, rejected, gone.
    pub(crate) attempts: Family<OutcomeLabel, Counter>,
    /// Deliveries that ended without an attempt: stale, unconfigured, disabled.
    pub(crate) dropped: Family<OutcomeLabel, Counter>,
    /// Receipt updates by outcome: fired, unchanged, duplicate, undecodable.
    pub(crate) updates: Family<OutcomeLabel, Counter>,
    pub(crate) latency: Family<ScopeLabel, Histogram>,
    pub(crate) backlog: Gauge,
    pub(crate) paged_out: Gauge,
    pub(crate) dead_lettered: Counter,
    pub(crate) dlq_records: Gauge,
    pub(crate) endpoints_disabled: Counter,
    pub(crate) breaker_opened: Family<ScopeLabel, Counter>,
    /// Endpoints whose circuit is not closed, so that an alert can say one is open now.
    pub(crate) breakers_open: Family<ScopeLabel, Gauge>,
}

impl DispatcherMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Self {
        let this = DispatcherMetrics {
            attempts: Family::default(),
            dropped: Family::default(),
            updates: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 12))
            }),
            backlog: Gauge::default(),
            paged_out: Gauge::default(),
            dead_lettered: Counter::default(),
            dlq_records: Gauge::default(),
            endpoints_disabled: Counter::default(),
            breaker_opened: Family::default(),
            breakers_open: Family::default(),
        };
        metrics.register(
            "dispatcher_attempts",
            "webhook attempts by outcome: delivered, retry, rejected, gone",
            this.attempts.clone(),
        );
        metrics.register(
            "dispatcher_dropped",
            "deliveries ended without an attempt: stale, unconfigured, no_status",
            this.dropped.clone(),
        );
        metrics.register(
            "dispatcher_updates",
            "receipt updates by outcome: fired, unchanged, duplicate, undecodable",
            this.updates.clone(),
        );
        metrics.register(
            "dispatcher_attempt_seconds",
            "webhook attempt latency by configuration scope (account, service, conversation)",
            this.latency.clone(),
        );
        metrics.register(
            "dispatcher_retry_backlog",
            "pending deliveries (due or waiting for their next attempt) held by this instance",
            this.backlog.clone(),
        );
        metrics.register(
            "dispatcher_queue_paged_out",
            "pending deliveries waiting in the database rather than memory (beyond queue_in_memory)",
            this.paged_out.clone(),
        );
        metrics.register(
            "dispatcher_dead_lettered",
            "deliveries sent to the dead-letter topic",
            this.dead_lettered.clone(),
        );
        metrics.register(
            "dispatcher_dlq_records",
            "records in the dead-letter topic (high minus low watermark, replay markers included)",
            this.dlq_records.clone(),
        );
        metrics.register(
            "dispatcher_endpoints_disabled",
            "endpoints disabled after answering 410 Gone",
            this.endpoints_disabled.clone(),
        );
        metrics.register(
            "dispatcher_breaker_opened",
            "times an endpoint's circuit breaker opened, by configuration scope",
            this.breaker_opened.clone(),
        );
        metrics.register(
            "dispatcher_breakers_open",
            "endpoints whose circuit is open, or half-open until a probe answers, by configuration scope",
            this.breakers_open.clone(),
        );
        this
    }

    pub(crate) fn attempt(&self, outcome: &'static str) {
        self.attempts.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(crate) fn dropped(&self, outcome: &'static str) {
        self.dropped.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(crate) fn update(&self, outcome: &'static str) {
        self.updates.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}
