//! JSON log lines that name the trace and span they were written in.
//!
//! One object per line: `timestamp`, `level`, `target`, the event's `fields`, the current
//! `span` and the whole `spans` scope (each with its fields), and — when the event happens inside
//! a span that OpenTelemetry knows — `trace_id` and `span_id` as lowercase hex, the same ids a
//! trace backend shows, so a log line leads to its trace and back.

use std::fmt;

use opentelemetry::trace::{SpanId, TraceId};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OtelData;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter of JSON logs; pair it with [`JsonFields`] for span fields.
#[derive(Debug, Default, Clone, Copy)]
pub struct TraceJson;

impl<S> FormatEvent<S, JsonFields> for TraceJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), Value::String(timestamp));
        let meta = event.metadata();
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        let mut fields = FieldsVisitor::default();
        event.record(&mut fields);
        line.insert("fields".into(), Value::Object(fields.0));

        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            let mut spans = Vec::new();
            for ancestor in span.scope().from_root() {
                let mut entry = match ancestor
                    .extensions()
                    .get::<FormattedFields<JsonFields>>()
                    .and_then(|f| serde_json::from_str::<Value>(f).ok())
                {
                    Some(Value::Object(fields)) => fields,
                    _ => Map::new(),
                };
                entry.insert("name".into(), Value::String(ancestor.name().to_owned()));
                spans.push(Value::Object(entry));
            }
            if let Some(current) = spans.last().cloned() {
                line.insert("span".into(), current);
            }
            line.insert("spans".into(), Value::Array(spans));
            // The nearest span with an OpenTelemetry context (all of them, once it is on).
            let ids = span.scope().find_map(|s| {
                let extensions = s.extensions();
                let data = extensions.get::<OtelData>()?;
                Some((data.trace_id()?, data.span_id()?))
            });
            if let Some((trace_id, span_id)) = ids
                && trace_id != TraceId::INVALID
                && span_id != SpanId::INVALID
            {
                line.insert("trace_id".into(), Value::String(trace_id.to_string()));
                line.insert("span_id".into(), Value::String(span_id.to_string()));
            }
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Collects an event's fields as JSON values.
#[derive(Default)]
struct FieldsVisitor(Map<String, Value>);

impl Visit for FieldsVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.0.insert(field.name().into(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
