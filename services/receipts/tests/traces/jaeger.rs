//! Jaeger's query API (`/api/traces`), as the UI reads it: traces with their spans, each span
//! with its operation name, references (parent and links) and tags.

use std::time::Duration;

use serde_json::Value;

/// One span as Jaeger shows it.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    pub(crate) operation: String,
    /// `(refType, traceID, spanID)`: `CHILD_OF` for the parent, `FOLLOWS_FROM` for links.
    pub(crate) references: Vec<(String, String, String)>,
    pub(crate) tags: Vec<(String, Value)>,
    pub(crate) start_micros: u64,
}

impl Span {
    pub(crate) fn tag(&self, key: &str) -> Option<&Value> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tag as text, whatever its type.
    pub(crate) fn tag_text(&self, key: &str) -> Option<String> {
        self.tag(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    pub(crate) fn parent(&self) -> Option<&str> {
        self.references
            .iter()
            .find(|(kind, trace, _)| kind == "CHILD_OF" && same_id(trace, &self.trace_id))
            .map(|(_, _, span)| span.as_str())
    }
}

/// Jaeger prints ids without leading zeros in places; compare them as numbers.
pub(crate) fn same_id(a: &str, b: &str) -> bool {
    a.trim_start_matches('0')
        .eq_ignore_ascii_case(b.trim_start_matches('0'))
}

fn spans_of(trace: &Value) -> Vec<Span> {
    let mut spans = Vec::new();
    for span in trace["spans"].as_array().into_iter().flatten() {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        spans.push(Span {
            trace_id: text(&span["traceID"]),
            span_id: text(&span["spanID"]),
            operation: text(&span["operationName"]),
            references: span["references"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| (text(&r["refType"]), text(&r["traceID"]), text(&r["spanID"])))
                .collect(),
            tags: span["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| (text(&t["key"]), t["value"].clone()))
                .collect(),
            start_micros: span["startTime"].as_u64().unwrap_or_default(),
        });
    }
    spans
}

async fn get(url: &str) -> Option<Value> {
    let response = reqwest::get(url).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = response.bytes().await.ok()?;
    serde_json::from_slice(&body).ok()
}

/// The spans of trace `trace_id` once `done` accepts them, or whatever arrived when `within`
/// has passed (spans reach the store a moment after they are exported).
pub(crate) async fn trace(
    query: &str,
    trace_id: &str,
    within: Duration,
    done: impl Fn(&[Span]) -> bool,
) -> Vec<Span> {
    let url = format!("{}/api/traces/{trace_id}", query.trim_end_matches('/'));
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let spans: Vec<Span> = get(&url)
            .await
            .map(|body| {
                body["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(spans_of)
                    .collect()
            })
            .unwrap_or_default();
        if done(&spans) || tokio::time::Instant::now() >= deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The spans of every trace of `service` that has a span named `operation`, once `done` accepts
/// them (or when `within` has passed).
pub(crate) async fn search(
    query: &str,
    service: &str,
    operation: &str,
    within: Duration,
    done: impl Fn(&[Span]) -> bool,
) -> Vec<Span> {
    let mut url = reqwest::Url::parse(&format!("{}/api/traces", query.trim_end_matches('/')))
        .expect("the Jaeger query URL is a URL");
    url.query_pairs_mut()
        .append_pair("service", service)
        .append_pair("operation", operation)
        .append_pair("limit", "100")
        .append_pair("lookback", "1h");
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let spans: Vec<Span> = get(url.as_str())
            .await
            .map(|body| {
                body["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(spans_of)
                    .collect()
            })
            .unwrap_or_default();
        if done(&spans) || tokio::time::Instant::now() >= deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
