//! `receipts bench all` with tiny sizes on the embedded broker: every stage runs and the JSON
//! says what the table says, with positive rates. Nothing here judges the figures themselves;
//! that is what BENCHMARKS.md and a release build on a quiet machine are for.

use std::process::Command;

use serde_json::Value;

fn metric(stage: &Value, name: &str) -> f64 {
    stage["metrics"]
        .as_array()
        .expect("metrics is a list")
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{} has no metric {name:?}: {stage}", stage["stage"]))["value"]
        .as_f64()
        .expect("a metric's value is a number")
}

#[test]
fn every_stage_reports_positive_rates_and_its_goals_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let json_out = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_receipts"))
        .args([
            "bench",
            "all",
            "--partitions",
            "4",
            "--reports",
            "3000",
            "--updates",
            "3000",
        ])
        .args([
            "--grpc-updates",
            "500",
            "--concurrency",
            "4",
            "--warmup-secs",
            "0.2",
        ])
        .args(["--secs", "0.5", "--receipts", "300", "--webhooks", "1000"])
        .args(["--rate", "200", "--e2e-secs", "1", "--json-out"])
        .arg(&json_out)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("the receipts binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();

    assert!(report["machine"]["cpus"].as_u64().unwrap() >= 1);
    assert!(report["machine"]["load_before"].is_string());
    let stages = report["stages"].as_array().unwrap();
    let stage = |name: &str| {
        stages
            .iter()
            .find(|s| s["stage"] == name)
            .unwrap_or_else(|| panic!("no stage {name} in {report}"))
    };
    assert_eq!(stages.len(), 6, "{report}");

    let projector = stage("projector");
    assert!(metric(projector, "projector applied end to end") > 0.0);
    assert!(metric(projector, "raw consume + decode (bare consumer)") > 0.0);
    assert!(metric(projector, "projector / raw consume") > 0.0);
    assert_eq!(
        metric(projector, "receipt updates published"),
        metric(projector, "updates the input yields"),
        "the projector published what the merge predicts"
    );

    let read_model = stage("read-model");
    assert!(metric(read_model, "read model applied") > 0.0);

    let grpc = stage("grpc");
    assert!(metric(grpc, "GetMessageDelivery") > 0.0);
    assert!(metric(grpc, "no-op handler (health Check)") > 0.0);
    assert!(metric(grpc, "GetMessageDelivery p99") > 0.0);
    assert_eq!(metric(grpc, "failed calls"), 0.0);

    let storage = stage("storage");
    assert_eq!(metric(storage, "receipts stored"), 300.0);
    assert!(metric(storage, "projector sled per receipt") > 0.0);
    assert!(metric(storage, "process RSS with both databases open") > 0.0);

    let dispatcher = stage("dispatcher");
    assert!(metric(dispatcher, "dispatcher webhooks delivered") > 0.0);
    assert!(metric(dispatcher, "bare POST loop, same sink and body") > 0.0);
    assert!(metric(dispatcher, "webhooks delivered to the sink") > 0.0);

    let end_to_end = stage("end-to-end");
    assert_eq!(metric(end_to_end, "reports offered"), 200.0);
    assert_eq!(metric(end_to_end, "webhooks received for them"), 200.0);
    assert!(metric(end_to_end, "latency p99") > 0.0);

    for name in [
        "projector",
        "read-model",
        "grpc",
        "dispatcher",
        "end-to-end",
        "storage",
    ] {
        let s = stage(name);
        let goals = s["goals"].as_array().unwrap();
        assert!(!goals.is_empty(), "{name} prints its goals");
        for goal in goals {
            assert!(goal["met"].is_boolean() && goal["target"].as_f64().unwrap() > 0.0);
            assert!(goal["measured"].as_f64().unwrap() >= 0.0);
        }
        assert!(stdout.contains(&format!("== {name}")), "{stdout}");
    }
    assert!(stdout.contains("met") || stdout.contains("MISSED"));
}

/// `receipts bench tracing` with tiny sizes: both stages run with traces off, sampled at 0.01
/// and at 1.0 (each in a child process exporting to a sink of its own), and every rate and ratio
/// is there.
#[test]
fn the_tracing_comparison_reports_every_mode_of_both_stages() {
    let dir = tempfile::tempdir().unwrap();
    let json_out = dir.path().join("tracing.json");
    let output = Command::new(env!("CARGO_BIN_EXE_receipts"))
        .args(["bench", "tracing", "--partitions", "2", "--reports", "2000"])
        .args(["--webhooks", "300", "--json-out"])
        .arg(&json_out)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("the receipts binary runs");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    let stage = &report["stages"][0];
    assert_eq!(stage["stage"], "tracing", "{report}");
    for name in ["projector", "dispatcher"] {
        assert!(metric(stage, &format!("{name}, traces off")) > 0.0);
        for ratio in ["0.01", "1.0"] {
            assert!(metric(stage, &format!("{name}, sampling {ratio}")) > 0.0);
            assert!(metric(stage, &format!("{name}, sampling {ratio} / off")) > 0.0);
        }
    }
}
