//! The projector's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use receipts_runtime::metrics::Metrics;

use crate::apply::BatchStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug)]
pub(crate) struct ProjectorMetrics {
    records: Family<OutcomeLabel, Counter>,
    pub(crate) updates_published: Counter,
    pub(crate) batch_seconds: Histogram,
    pub(crate) parked: Gauge,
    pub(crate) parked_expired: Gauge,
}

impl ProjectorMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Self {
        let this = ProjectorMetrics {
            records: Family::default(),
            updates_published: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            parked: Gauge::default(),
            parked_expired: Gauge::default(),
        };
        metrics.register(
            "projector_records",
            "delivery-events records by outcome: changed, parked, recorded (history only), unchanged, dead_lettered",
            this.records.clone(),
        );
        metrics.register(
            "projector_updates_published",
            "receipt updates acknowledged by Kafka",
            this.updates_published.clone(),
        );
        metrics.register(
            "projector_batch_seconds",
            "time to apply, publish and store one batch",
            this.batch_seconds.clone(),
        );
        metrics.register(
            "projector_parked",
            "status reports waiting for their registration",
            this.parked.clone(),
        );
        metrics.register(
            "projector_parked_expired",
            "parked status reports older than the parked TTL",
            this.parked_expired.clone(),
        );
        this
    }

    pub(crate) fn record(&self, stats: &BatchStats) {
        for (outcome, n) in [
            ("changed", stats.changed),
            ("parked", stats.parked),
            ("recorded", stats.recorded),
            ("unchanged", stats.unchanged),
            ("dead_lettered", stats.dead_lettered),
        ] {
            self.records
                .get_or_create(&OutcomeLabel { outcome })
                .inc_by(n);
        }
    }
}
