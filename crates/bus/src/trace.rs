//! W3C trace context in Kafka record headers, and the spans of consuming records.
//!
//! A record carries the context of the span that caused it in `traceparent` (and `tracestate`),
//! so a status report can be followed from the ingest request through the projector, the read
//! model and the dispatcher to the webhook. Spans follow the messaging semantic conventions
//! (`receipts_runtime::telemetry::SEMCONV_VERSION`): a consumer makes one `process` span per
//! batch that *links* to every record's trace (a batch mixes many traces, so it adopts none as
//! parent), and a handler makes one span per record whose parent is the record's context.
//!
//! With traces off (no OpenTelemetry layer) records get no trace headers and per-record spans
//! are not made at all.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use receipts_runtime::telemetry::{self, propagation};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::publish::Outgoing;
use crate::record::Record;

/// The W3C header with the trace and parent span ids.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The W3C header with vendor-specific trace state.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// A batch span links to at most this many records (the SDK's default link limit).
const MAX_LINKS: usize = 128;

/// Reads the trace headers of a consumed record.
struct RecordExtractor<'a>(&'a Record);

impl Extractor for RecordExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .header(key)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.headers().into_iter().map(|(key, _)| key).collect()
    }
}

/// Writes trace headers onto a record to produce, replacing any it carried.
struct OutgoingInjector<'a>(&'a mut Outgoing);

impl Injector for OutgoingInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case(key));
        self.0.headers.push((key.to_owned(), value.into_bytes()));
    }
}

impl Record {
    /// The trace context the record carries (empty when it has none or traces are off).
    pub fn trace_context(&self) -> Context {
        propagation::propagator().extract(&RecordExtractor(self))
    }

    /// The span context of the record's cause, when it carries a valid one.
    pub fn linked_span(&self) -> Option<SpanContext> {
        self.header(TRACEPARENT_HEADER)?;
        let cx = self.trace_context();
        let span = cx.span().span_context().clone();
        span.is_valid().then_some(span)
    }
}

impl Outgoing {
    /// Carries `span`'s context in the record's trace headers, so whoever consumes the record
    /// continues the trace. Nothing changes when the span has no context (traces off).
    pub fn traced(mut self, span: &Span) -> Self {
        self.set_trace_context(&span.context());
        self
    }

    /// Carries `carrier`'s context (one read from another record earlier).
    pub fn traced_by(mut self, carrier: &TraceCarrier) -> Self {
        for (key, value) in &carrier.0 {
            OutgoingInjector(&mut self).set(key, value.clone());
        }
        self
    }

    fn set_trace_context(&mut self, cx: &Context) {
        if cx.span().span_context().is_valid() {
            propagation::propagator().inject_context(cx, &mut OutgoingInjector(self));
        }
    }
}

/// The trace headers of a record or span, kept to carry a trace further later: a delivery keeps
/// the context of the update that caused it through all its attempts and retries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceCarrier(Vec<(String, String)>);

impl TraceCarrier {
    /// The trace headers `record` carries.
    pub fn of_record(record: &Record) -> Self {
        let mut headers = Vec::new();
        for name in [TRACEPARENT_HEADER, TRACESTATE_HEADER] {
            if let Some(value) = record
                .header(name)
                .and_then(|v| std::str::from_utf8(v).ok())
            {
                headers.push((name.to_owned(), value.to_owned()));
            }
        }
        TraceCarrier(headers)
    }

    /// The context of `span` (empty when it has none).
    pub fn of_span(span: &Span) -> Self {
        TraceCarrier(propagation::trace_headers(span))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The remote context carried.
    pub fn context(&self) -> Context {
        struct Pairs<'a>(&'a [(String, String)]);
        impl Extractor for Pairs<'_> {
            fn get(&self, key: &str) -> Option<&str> {
                self.0
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v.as_str())
            }
            fn keys(&self) -> Vec<&str> {
                self.0.iter().map(|(k, _)| k.as_str()).collect()
            }
        }
        propagation::propagator().extract(&Pairs(&self.0))
    }

    /// Makes `span` a child of the carried context, if there is one. Call before entering it.
    pub fn adopt(&self, span: &Span) {
        if !self.is_empty() {
            let cx = self.context();
            if cx.span().span_context().is_valid() {
                let _ = span.set_parent(cx);
            }
        }
    }
}

/// The span of one record's processing: `{operation} {topic}`, a consumer span of the
/// `process` type whose parent is the record's context. `Span::none()` with traces off.
pub fn record_span(record: &Record, operation: &str, group: Option<&str>) -> Span {
    if !telemetry::is_tracing() {
        return Span::none();
    }
    let key = record.key().and_then(|k| std::str::from_utf8(k).ok());
    let span = tracing::info_span!(
        "process record",
        otel.name = %format_args!("{operation} {}", record.topic()),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = operation,
        messaging.destination.name = record.topic(),
        messaging.destination.partition.id = %record.partition(),
        messaging.kafka.offset = record.offset(),
        messaging.consumer.group.name = group,
        messaging.kafka.message.key = key,
    );
    if record.header(TRACEPARENT_HEADER).is_some() {
        let cx = record.trace_context();
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }
    span
}

/// The span of producing `count` records to `topic`: `send {topic}`, a producer span. Records
/// made inside it carry its context ([`Outgoing::traced`]).
pub fn send_span(topic: &str, count: usize) -> Span {
    tracing::info_span!(
        "send records",
        otel.name = %format_args!("send {topic}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = topic,
        messaging.batch.message_count = count,
    )
}

/// The span of one batch handed to a handler: `process {topic}`, linked to the traces of its
/// records (up to the link limit) rather than a child of any of them.
pub(crate) fn batch_span(records: &[Record], group: Option<&str>, consumer: &str) -> Span {
    if !telemetry::is_tracing() {
        return Span::none();
    }
    let topic = records.first().map(Record::topic).unwrap_or_default();
    let one_topic = records.iter().all(|r| r.topic() == topic);
    let destination = one_topic.then_some(topic);
    let name = match destination {
        Some(topic) => format!("process {topic}"),
        None => "process".to_owned(),
    };
    let span = tracing::info_span!(
        "process batch",
        otel.name = %name,
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = destination,
        messaging.consumer.group.name = group,
        messaging.batch.message_count = records.len(),
        receipts.consumer = consumer,
    );
    for linked in records
        .iter()
        .filter_map(Record::linked_span)
        .take(MAX_LINKS)
    {
        span.add_link(linked);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn record_with(headers: &[(&str, &str)]) -> Record {
        let mut outgoing = Outgoing::new("t", "k", Vec::new());
        for (k, v) in headers {
            outgoing = outgoing.header(k, *v);
        }
        Record::read_back(&outgoing, 0, 7)
    }

    #[test]
    fn a_record_yields_the_context_of_its_traceparent() {
        let record = record_with(&[(TRACEPARENT_HEADER, PARENT), (TRACESTATE_HEADER, "a=1")]);
        let linked = record.linked_span().expect("a valid context");
        assert_eq!(
            linked.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(linked.is_remote());
        assert_eq!(linked.trace_state().header(), "a=1");
        let carrier = TraceCarrier::of_record(&record);
        assert_eq!(
            carrier.context().span().span_context().span_id(),
            linked.span_id()
        );
    }

    #[test]
    fn records_without_or_with_broken_headers_have_no_context() {
        assert!(record_with(&[]).linked_span().is_none());
        assert!(
            record_with(&[(TRACEPARENT_HEADER, "00-zz-00-01")])
                .linked_span()
                .is_none()
        );
    }

    #[test]
    fn a_dead_letter_keeps_the_trace_of_its_record() {
        let record = record_with(&[(TRACEPARENT_HEADER, PARENT), (TRACESTATE_HEADER, "a=1")]);
        let dead = Outgoing::dead_letter("dlq", &record, "undecodable");
        let back = Record::read_back(&dead, 0, 0);
        assert_eq!(back.header(TRACEPARENT_HEADER), Some(PARENT.as_bytes()));
        assert_eq!(
            TraceCarrier::of_record(&back),
            TraceCarrier::of_record(&record)
        );
    }

    #[test]
    fn a_carrier_replaces_the_trace_headers_of_an_outgoing_record() {
        let record = record_with(&[(TRACEPARENT_HEADER, PARENT)]);
        let outgoing = Outgoing::new("t", "k", Vec::new())
            .header(TRACEPARENT_HEADER, "00-old")
            .traced_by(&TraceCarrier::of_record(&record));
        let traceparents: Vec<_> = outgoing
            .headers
            .iter()
            .filter(|(k, _)| k == TRACEPARENT_HEADER)
            .collect();
        assert_eq!(traceparents.len(), 1);
        assert_eq!(traceparents[0].1, PARENT.as_bytes());
    }
}
