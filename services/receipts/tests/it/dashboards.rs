//! The shipped dashboard (`deploy/grafana/receipts.json`), alerting rules
//! (`deploy/prometheus/alerts.yml` and their promtool tests) and the metric names the READMEs
//! give all name metrics the services really export: every service runs in one process under
//! `receipts dev`, registering every family it exports in one registry.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use receipts::dev::DevArgs;
use receipts_runtime::metrics::Metrics;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::yaml;

/// Every sample name a scrape can show for `families`: a counter `x` is sampled as `x_total`, a
/// histogram as `x_bucket`, `x_sum` and `x_count`.
fn sample_names(families: &[receipts_runtime::metrics::Family]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for family in families {
        let suffixes: &[&str] = match family.kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "gauge" | "unknown" => &[""],
            other => panic!("unexpected metric type {other} of {}", family.name),
        };
        names.extend(
            suffixes
                .iter()
                .map(|suffix| format!("{}{suffix}", family.name)),
        );
    }
    names
}

/// What every service of `receipts dev` (on the embedded broker) registers, listed once all of
/// their consumers are current, so every service has finished starting.
async fn exported() -> BTreeSet<String> {
    let data_dir = tempfile::tempdir().unwrap();
    let args = DevArgs::on_free_ports(data_dir.path().to_owned());
    let registry = Metrics::new();
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let dev = tokio::spawn(receipts::dev::run_with_metrics(
        args,
        registry.clone(),
        shutdown.clone(),
        move |addresses| {
            let _ = ready_tx.send(addresses.clone());
        },
    ));
    tokio::time::timeout(Duration::from_secs(60), ready_rx)
        .await
        .expect("receipts dev starts within a minute")
        .expect("receipts dev reports its addresses");
    // Each service registers its families as it starts, and its consumers' readiness before
    // them: once every service has registered some and every consumer is current, all are in.
    let services = [
        "receipts_ingest_",
        "receipts_projector_",
        "receipts_query_",
        "receipts_rest_http_",
        "receipts_dispatcher_",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let families = registry.families();
        let started = services
            .iter()
            .all(|service| families.iter().any(|f| f.name.starts_with(service)));
        if started && registry.readiness().is_ready() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "receipts dev did not start within a minute: {:?}, registered {:?}",
            registry.readiness().report().reasons,
            families.iter().map(|f| &f.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names = sample_names(&registry.families());
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), dev)
        .await
        .expect("receipts dev stops within a minute")
        .unwrap()
        .unwrap();
    names
}

/// The `receipts_…` names in a PromQL expression, outside string literals (label values).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    for c in expr.chars().chain([' ']) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c.is_ascii_alphanumeric() || c == '_' || c == ':' => word.push(c),
            None => {
                if word.starts_with("receipts_") {
                    names.push(std::mem::take(&mut word));
                }
                word.clear();
                if c == '"' || c == '\'' || c == '`' {
                    quote = Some(c);
                }
            }
        }
    }
    names
}

/// Every `expr` string anywhere in `value` (dashboard targets, alerting rules).
fn expressions(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => found.push(expr.clone()),
                    _ => expressions(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| expressions(item, found)),
        _ => {}
    }
}

/// What each shipped file names: file → the metric names it uses.
fn referenced() -> BTreeMap<String, BTreeSet<String>> {
    let mut references = BTreeMap::new();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(yaml::repo().join("deploy/grafana/receipts.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    for (file, document) in [
        ("deploy/grafana/receipts.json", dashboard),
        (
            "deploy/prometheus/alerts.yml",
            yaml::load("deploy/prometheus/alerts.yml"),
        ),
    ] {
        let mut exprs = Vec::new();
        expressions(&document, &mut exprs);
        assert!(
            exprs.len() >= 7,
            "{file} has only {} expressions",
            exprs.len()
        );
        let mut names = BTreeSet::new();
        for expr in exprs {
            let used = metric_names(&expr);
            assert!(
                !used.is_empty(),
                "{file}: {expr:?} names no receipts_ metric"
            );
            names.extend(used);
        }
        references.insert(file.to_owned(), names);
    }
    // The promtool tests must feed the series the services export, or they test nothing real.
    let tests = yaml::load("deploy/prometheus/alerts.test.yml");
    let mut series = BTreeSet::new();
    for case in tests["tests"].as_array().unwrap() {
        for input in case["input_series"].as_array().unwrap() {
            let selector = input["series"].as_str().unwrap();
            series.insert(selector.split('{').next().unwrap().to_owned());
        }
    }
    references.insert("deploy/prometheus/alerts.test.yml".into(), series);
    // The READMEs name metrics in backticks: `receipts_x_total{label}`, or `receipts_x_*`.
    for file in [
        "README.md",
        "services/dispatcher/README.md",
        "services/ingest/README.md",
    ] {
        let text = std::fs::read_to_string(yaml::repo().join(file)).unwrap();
        let mut names = BTreeSet::new();
        for piece in text.split('`').skip(1).step_by(2) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '*')
                .collect();
            let whole = piece.len() == name.len() || piece[name.len()..].starts_with('{');
            // `receipts_` alone is the prefix itself.
            if name.starts_with("receipts_") && name != "receipts_" && whole {
                names.insert(name);
            }
        }
        assert!(!names.is_empty(), "{file} names no metric");
        references.insert(file.to_owned(), names);
    }
    references
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_alerts_and_docs_name_only_exported_metrics() {
    let exported = exported().await;
    // The families every panel group draws on are there at all, under the prefix.
    for family in [
        "receipts_ingest_reports_accepted_total",
        "receipts_consumer_lag",
        "receipts_projector_records_total",
        "receipts_dispatcher_attempt_seconds_bucket",
        "receipts_dispatcher_breakers_open",
        "receipts_rest_http_requests_shed_total",
    ] {
        assert!(
            exported.contains(family),
            "{family} is not exported: {exported:#?}"
        );
    }
    assert!(
        exported.iter().all(|name| name.starts_with("receipts_")),
        "every metric has the receipts_ prefix: {exported:#?}"
    );

    let mut unknown = Vec::new();
    for (file, names) in referenced() {
        for name in names {
            let known = match name.strip_suffix('*') {
                Some(prefix) => exported.iter().any(|e| e.starts_with(prefix)),
                // A README may name a histogram by its family.
                None => exported.contains(&name) || exported.contains(&format!("{name}_bucket")),
            };
            if !known {
                unknown.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "named but not exported:\n{}\nexported: {exported:#?}",
        unknown.join("\n")
    );
}

#[test]
fn metric_names_are_read_out_of_promql() {
    assert_eq!(
        metric_names(
            "sum by (le) (rate(receipts_a_bucket{x=\"receipts_no\"}[5m])) / my_receipts_b + receipts_c"
        ),
        ["receipts_a_bucket", "receipts_c"]
    );
}
