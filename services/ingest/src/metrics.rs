//! The gateway's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use receipts_runtime::metrics::Metrics;

use crate::report::Format;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormatLabel {
    format: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabel {
    format: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug)]
pub(crate) struct IngestMetrics {
    accepted: Family<FormatLabel, Counter>,
    rejected: Family<RejectionLabel, Counter>,
    skipped: Family<RejectionLabel, Counter>,
    pub(crate) produce_seconds: Histogram,
}

impl IngestMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Self {
        let this = IngestMetrics {
            accepted: Family::default(),
            rejected: Family::default(),
            skipped: Family::default(),
            produce_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        };
        metrics.register(
            "ingest_reports_accepted",
            "events acknowledged by Kafka, by format (twilio, whatsapp, smpp, canonical)",
            this.accepted.clone(),
        );
        metrics.register(
            "ingest_requests_rejected",
            "requests answered with an error, by format and reason",
            this.rejected.clone(),
        );
        metrics.register(
            "ingest_reports_skipped",
            "reports left out of an accepted request (a WhatsApp status Meta would resend unchanged), by format and reason",
            this.skipped.clone(),
        );
        metrics.register(
            "ingest_produce_seconds",
            "time from producing a request's events to Kafka's last acknowledgement or the failure",
            this.produce_seconds.clone(),
        );
        this
    }

    pub(crate) fn accepted(&self, format: Format, events: usize) {
        self.accepted
            .get_or_create(&FormatLabel {
                format: format.as_str(),
            })
            .inc_by(events as u64);
    }

    pub(crate) fn skipped(&self, format: Format, reason: &'static str) {
        self.skipped
            .get_or_create(&RejectionLabel {
                format: format.as_str(),
                reason,
            })
            .inc();
    }

    pub(crate) fn rejected(&self, format: Format, reason: &'static str) {
        self.rejected
            .get_or_create(&RejectionLabel {
                format: format.as_str(),
                reason,
            })
            .inc();
    }
}
